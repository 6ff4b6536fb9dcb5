//! For the benchmarks: `run("N")` calls the cheapest import, `list-tools`
//! with no tools granted, N times. The time per call is the cost of a
//! guest-to-host import round trip.

use warden_guest::{Agent, tools};

struct Roundtrip;

impl Agent for Roundtrip {
    fn run(task: String) -> Result<String, String> {
        let n: u64 = task.trim().parse().map_err(|_| "run(N)".to_string())?;
        let mut seen = 0;
        for _ in 0..n {
            seen += tools::list().len();
        }
        Ok(seen.to_string())
    }
}

warden_guest::export_agent!(Roundtrip);

fn main() {}
