//! What a person sees while a component compiles for the first time.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;
use warden::runtime::CompileProgress;

/// Components smaller than this compile in about a second (the built-ins,
/// most Rust tools): no line for them.
const SHOWN_FROM: usize = 1024 * 1024;

/// On stderr: a spinner with the time taken on a terminal, one line
/// otherwise (a log, CI), so that a 30-second first compile never looks
/// like a hang. Names come from the command line and the policy, which are
/// the user's own text.
pub(crate) struct StderrProgress;

impl CompileProgress for StderrProgress {
    fn compiling(&self, name: &str, size: usize, cached: bool) -> Box<dyn Send> {
        if size < SHOWN_FROM {
            return Box::new(());
        }
        let what = format!(
            "compiling {} ({}), {}",
            warden::transcript::clean_line(name),
            size_text(size),
            if cached {
                "first time only"
            } else {
                "every run (no compile cache)"
            }
        );
        if !std::io::stderr().is_terminal() {
            eprintln!("{what}");
            return Box::new(());
        }
        let bar = ProgressBar::new_spinner().with_message(what);
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        Box::new(Spinner(bar))
    }
}

/// Leaves the line on screen with the time it took.
struct Spinner(ProgressBar);

impl Drop for Spinner {
    fn drop(&mut self) {
        let took = self.0.elapsed();
        let message = self.0.message().replacen("compiling", "compiled", 1);
        let message = message
            .rsplit_once(", ")
            .map_or(message.as_str(), |(start, _)| start)
            .to_string();
        self.0.set_style(ProgressStyle::default_spinner());
        self.0
            .finish_with_message(format!("{message} in {:.1}s", took.as_secs_f64()));
    }
}

/// `17.9 MiB`, `912 KiB`, `300 B`.
pub(crate) fn size_text(size: usize) -> String {
    const KIB: f64 = 1024.0;
    let bytes = size as f64;
    if bytes >= KIB * KIB {
        format!("{:.1} MiB", bytes / (KIB * KIB))
    } else if bytes >= KIB {
        format!("{:.0} KiB", bytes / KIB)
    } else {
        format!("{size} B")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(super::size_text(300), "300 B");
        assert_eq!(super::size_text(912 * 1024), "912 KiB");
        assert_eq!(super::size_text(18_769_510), "17.9 MiB");
    }
}
