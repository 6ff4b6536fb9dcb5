//! A run's records, read from its audit file as they are written: the
//! Server-Sent Events of `GET /runs/{id}/events` and the JSON Lines of
//! `GET /runs/{id}/audit`.
//!
//! Nothing is buffered per run: a reader reads the file from its own
//! offset, a chunk at a time, opening and closing it for each chunk (so a
//! reader holds no descriptor while it waits), and waits on the run's
//! [`Progress`] for more. What it sends goes through a channel of
//! [`CHANNEL`] events; a reader that takes none for the server's
//! `slow_reader` time is dropped. Records are sent as the log holds them:
//! already redacted and bounded by the gate.

use super::runs::{Progress, RunEntry};
use bytes::Bytes;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};

/// Bytes read from the file at a time.
const CHUNK: usize = 64 << 10;
/// Events queued for one reader.
const CHANNEL: usize = 16;
/// A comment is sent this often while nothing happens, so a reader that
/// went away is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The longest record line sent whole; a longer one (which the gate's
/// bounds make impossible) ends the stream with an error event.
const MAX_LINE: usize = 8 << 20;

/// The complete lines of `path` from byte `offset`, at most about
/// [`CHUNK`] bytes of them (a longer line is returned whole, up to
/// [`MAX_LINE`]); a torn last line is left for the next read.
async fn read_lines(path: PathBuf, offset: u64) -> std::io::Result<Vec<u8>> {
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let mut file = std::fs::File::open(&path)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut out = Vec::with_capacity(CHUNK);
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buffer[..n]);
            if out.contains(&b'\n') || out.len() > MAX_LINE {
                break;
            }
        }
        match out.iter().rposition(|b| *b == b'\n') {
            Some(end) => out.truncate(end + 1),
            None if out.len() > MAX_LINE => {
                return Err(std::io::Error::other("a record line is too long to send"));
            }
            None => out.clear(),
        }
        Ok(out)
    })
    .await;
    read.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}

/// The slots a stream holds (the server's and its token's) for as long as
/// it feeds its body.
pub struct Slot(pub Vec<OwnedSemaphorePermit>);

/// A response body fed by a channel. The server's stream slot is held by
/// the task feeding it, so a reader dropped for being slow gives its slot
/// back even though its connection (and this body) lingers.
pub struct ChannelBody {
    receiver: mpsc::Receiver<Bytes>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match this.receiver.poll_recv(cx) {
            Poll::Ready(Some(bytes)) => Poll::Ready(Some(Ok(http_body::Frame::data(bytes)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// How a stream is sent.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// A reader that takes nothing for this long is dropped.
    pub slow_reader: Duration,
}

/// The run's records as Server-Sent Events, from line `skip` + 1 (a
/// `Last-Event-ID` resumes after that line): one `record` event per line
/// (its id the line's number), then one `end` event with the run's final
/// view. A reader slower than `limits.slow_reader` gets a `dropped` event
/// if there is room, and the stream ends.
pub fn events(entry: Arc<RunEntry>, skip: u64, permit: Slot, limits: StreamLimits) -> ChannelBody {
    let (sender, receiver) = mpsc::channel(CHANNEL);
    let progress = entry.watch();
    tokio::spawn(async move {
        feed_events(entry, skip, sender, progress, limits).await;
        drop(permit);
    });
    ChannelBody { receiver }
}

async fn feed_events(
    entry: Arc<RunEntry>,
    skip: u64,
    sender: mpsc::Sender<Bytes>,
    mut progress: watch::Receiver<Progress>,
    limits: StreamLimits,
) {
    let send = |bytes: Bytes| {
        let sender = sender.clone();
        async move {
            match sender.send_timeout(bytes, limits.slow_reader).await {
                Ok(()) => true,
                Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                    // Room for one more event is not waited for.
                    let _ = sender.try_send(Bytes::from_static(
                        b"event: dropped\ndata: {\"reason\":\"the reader was too slow\"}\n\n",
                    ));
                    false
                }
                Err(mpsc::error::SendTimeoutError::Closed(_)) => false,
            }
        }
    };
    let mut offset = 0u64;
    let mut line_number = 0u64;
    loop {
        // What the run has written, and whether it is over, before reading:
        // a run over before the read has all its lines in the file.
        let seen = *progress.borrow_and_update();
        let chunk = match read_lines(entry.audit_path.clone(), offset).await {
            Ok(chunk) => chunk,
            Err(error) => {
                let data = serde_json::json!({ "error": format!("the audit log cannot be read: {error}") });
                let _ = send(Bytes::from(format!("event: error\ndata: {data}\n\n"))).await;
                return;
            }
        };
        offset += chunk.len() as u64;
        let read_something = !chunk.is_empty();
        for line in chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            line_number += 1;
            if line_number <= skip {
                continue;
            }
            let mut event = Vec::with_capacity(line.len() + 40);
            event.extend_from_slice(format!("event: record\nid: {line_number}\ndata: ").as_bytes());
            event.extend_from_slice(line);
            event.extend_from_slice(b"\n\n");
            if !send(Bytes::from(event)).await {
                return;
            }
        }
        if read_something {
            continue;
        }
        if seen.done {
            let data = entry.view();
            let _ = send(Bytes::from(format!("event: end\ndata: {data}\n\n"))).await;
            return;
        }
        // Nothing new in the file: wait for the run to write, or a while.
        tokio::select! {
            // The reader went away: give its slot back now.
            () = sender.closed() => return,
            changed = progress.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(KEEP_ALIVE) => {
                if !send(Bytes::from_static(b": keep-alive\n\n")).await {
                    return;
                }
            }
        }
    }
}

/// The run's audit file as it is now: its complete lines, read a chunk at
/// a time as the client takes them.
pub fn audit_file(path: PathBuf, permit: Slot, limits: StreamLimits) -> ChannelBody {
    let (sender, receiver) = mpsc::channel(4);
    tokio::spawn(async move {
        let _permit = permit;
        let mut offset = 0u64;
        loop {
            let chunk = match read_lines(path.clone(), offset).await {
                Ok(chunk) if !chunk.is_empty() => chunk,
                _ => return,
            };
            offset += chunk.len() as u64;
            if sender
                .send_timeout(Bytes::from(chunk), limits.slow_reader)
                .await
                .is_err()
            {
                return;
            }
        }
    });
    ChannelBody { receiver }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_complete_lines_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        std::fs::write(&path, b"{\"a\":1}\n{\"b\":2}\n{\"c\"").unwrap();
        let lines = read_lines(path.clone(), 0).await.unwrap();
        assert_eq!(lines, b"{\"a\":1}\n{\"b\":2}\n");
        let rest = read_lines(path.clone(), lines.len() as u64).await.unwrap();
        assert!(rest.is_empty(), "the torn line waits");
        assert!(read_lines(dir.path().join("none"), 0).await.is_err());
    }

    #[tokio::test]
    async fn a_reader_that_takes_nothing_is_dropped_and_gives_its_slot_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let lines: String = (1..=100).map(|i| format!("{{\"seq\":{i}}}\n")).collect();
        std::fs::write(&path, lines).unwrap();
        let entry = Arc::new(RunEntry::new(
            "r-1".into(),
            "a".into(),
            ("p".into(), "builtin:react".into(), "m".into()),
            path,
        ));
        entry.fail("over".into());
        let slots = Arc::new(tokio::sync::Semaphore::new(1));
        let permit = slots.clone().try_acquire_owned().unwrap();
        let limits = StreamLimits {
            slow_reader: Duration::from_millis(100),
        };
        // Never polled: a reader that reads nothing.
        let mut body = events(entry, 0, Slot(vec![permit]), limits);
        let started = std::time::Instant::now();
        while slots.available_permits() == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the stalled stream kept its slot"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // What it was sent is bounded by the channel: 16 records and the
        // note that it was dropped, never the 100 records.
        let mut received = Vec::new();
        while let Some(bytes) = body.receiver.recv().await {
            received.push(bytes);
        }
        assert_eq!(received.len(), CHANNEL, "{received:?}");
        let last = String::from_utf8(received.last().unwrap().to_vec()).unwrap();
        assert!(last.contains("id: 16"), "{last}");
    }
}
