//! A guest's stdout and stderr: captured in memory up to a cap, never shown
//! raw on the terminal (a guest must not be able to print text that looks
//! like warden's own output), and recorded in the audit log afterwards.
//!
//! Writes past the cap succeed and are counted, so a chatty guest is not
//! killed by a failed `eprintln!`.

use bytes::Bytes;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of each stream kept per instance.
pub const STDIO_CAPTURE: usize = 64 << 10;

/// One captured output stream.
#[derive(Clone)]
pub struct CapturedOutput {
    buffer: Arc<Mutex<Vec<u8>>>,
    dropped: Arc<AtomicU64>,
    capacity: usize,
}

impl CapturedOutput {
    /// Keep at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        CapturedOutput {
            buffer: Arc::default(),
            dropped: Arc::default(),
            capacity,
        }
    }

    /// What was kept, and how many bytes were dropped past the cap.
    pub fn contents(&self) -> (Vec<u8>, u64) {
        let buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        (buffer.clone(), self.dropped.load(Ordering::Relaxed))
    }

    /// [`contents`](Self::contents), emptying the buffer: what a kept
    /// instance wrote during one call, recorded once.
    pub fn drain(&self) -> (Vec<u8>, u64) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        (
            std::mem::take(&mut *buffer),
            self.dropped.swap(0, Ordering::Relaxed),
        )
    }

    fn take(&self, bytes: &[u8]) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let room = self.capacity.saturating_sub(buffer.len());
        let kept = room.min(bytes.len());
        buffer.extend_from_slice(&bytes[..kept]);
        self.dropped
            .fetch_add((bytes.len() - kept) as u64, Ordering::Relaxed);
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    // Write synchronously: the default adapter hands bytes to a background
    // task, and the last of them could still be in flight when the guest
    // returns and its output is recorded.
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

/// What one `check-write` permits: the usual WASI stream size, so a guest
/// cannot make the host allocate much for `write-zeroes`.
const WRITE_PERMIT: usize = 64 << 10;

#[async_trait::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.take(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

impl AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.take(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_the_cap_and_counts_the_rest() {
        let out = CapturedOutput::new(4);
        out.take(b"abc");
        out.take(b"defgh");
        assert_eq!(out.contents(), (b"abcd".to_vec(), 4));
    }
}
