//! Directories granted per tool: preopens, read-only or read-write, and
//! nothing outside them, whatever path tricks the guest or a planted link
//! tries.

use crate::harness::*;
use serde_json::{Value, json};

/// Run the probe with `fs` grants and `args`; what it reported.
async fn probe_fs(fs: &str, args: Value) -> Value {
    run_probe(&probe_policy(&format!("fs = {fs}")), args)
        .await
        .0
}

fn mount(dir: &std::path::Path, mode: &str) -> String {
    format!(
        "{{ \"/work\" = {{ dir = {:?}, mode = \"{mode}\" }} }}",
        dir.display().to_string()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_directory_is_all_a_tool_sees() {
    let root = tempfile::tempdir().unwrap();
    let inside = root.path().join("inside");
    std::fs::create_dir(&inside).unwrap();
    std::fs::write(inside.join("notes.txt"), "granted").unwrap();
    std::fs::write(root.path().join("secret.txt"), "outside the grant").unwrap();
    // Planted by someone else: links pointing out of the directory.
    std::os::unix::fs::symlink(root.path().join("secret.txt"), inside.join("link")).unwrap();
    std::os::unix::fs::symlink(root.path(), inside.join("parent")).unwrap();
    let ro = mount(&inside, "ro");

    let read = |path: &str| json!({ "op": "read", "path": path });
    assert_eq!(
        probe_fs(&ro, read("/work/notes.txt")).await,
        json!({ "ok": "granted" })
    );
    for path in [
        "/work/../secret.txt",
        "/work/link",
        "/work/parent/secret.txt",
        "/secret.txt",
        "secret.txt",
        "/etc/passwd",
        &root.path().join("secret.txt").display().to_string(),
    ] {
        let result = probe_fs(&ro, read(path)).await;
        assert!(result["error"].is_string(), "{path}: {result}");
        assert!(!result.to_string().contains("outside the grant"), "{path}");
    }
    // Listing shows the directory's own entries only.
    let listed = probe_fs(&ro, json!({ "op": "list", "path": "/work" })).await;
    let mut names: Vec<String> = serde_json::from_value(listed["ok"].clone()).unwrap();
    names.sort();
    assert_eq!(names, ["link", "notes.txt", "parent"]);
    let result = probe_fs(&ro, json!({ "op": "list", "path": "/" })).await;
    assert!(
        result["error"].is_string() || result["ok"] == json!(["work"]),
        "{result}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_means_no_writes_and_read_write_stays_inside() {
    let root = tempfile::tempdir().unwrap();
    let inside = root.path().join("inside");
    std::fs::create_dir(&inside).unwrap();
    std::fs::write(inside.join("keep.txt"), "original").unwrap();
    std::fs::write(root.path().join("target.txt"), "outside").unwrap();

    let write = |path: &str| json!({ "op": "write", "path": path, "content": "changed" });
    let result = probe_fs(&mount(&inside, "ro"), write("/work/keep.txt")).await;
    assert!(result["error"].is_string(), "{result}");
    let result = probe_fs(&mount(&inside, "ro"), write("/work/new.txt")).await;
    assert!(result["error"].is_string(), "{result}");
    assert_eq!(
        std::fs::read_to_string(inside.join("keep.txt")).unwrap(),
        "original"
    );
    assert!(!inside.join("new.txt").exists());

    let rw = mount(&inside, "rw");
    assert_eq!(
        probe_fs(&rw, write("/work/new.txt")).await,
        json!({ "ok": true })
    );
    assert_eq!(
        std::fs::read_to_string(inside.join("new.txt")).unwrap(),
        "changed"
    );
    for path in ["/work/../target.txt", "/target.txt"] {
        let result = probe_fs(&rw, write(path)).await;
        assert!(result["error"].is_string(), "{path}: {result}");
    }
    // A hard link to a file outside cannot be made from inside.
    let link = json!({ "op": "hardlink", "target": "/work/../target.txt", "link": "/work/stolen" });
    let result = probe_fs(&rw, link).await;
    assert!(result["error"].is_string(), "{result}");
    assert_eq!(
        std::fs::read_to_string(root.path().join("target.txt")).unwrap(),
        "outside"
    );
    assert!(!inside.join("stolen").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_grants_are_exactly_the_listed_variables() {
    let policy = probe_policy(
        "env = { LANG = \"C.UTF-8\" }\ninherit_env = [\"PATH\", \"WARDEN_SURELY_UNSET\"]",
    );
    let (result, _) = run_probe(&policy, json!({ "op": "env" })).await;
    let result: Vec<(String, String)> = serde_json::from_value(result).unwrap();
    let mut names: Vec<&str> = result.iter().map(|(k, _)| k.as_str()).collect();
    names.sort();
    assert_eq!(names, ["LANG", "PATH"]);
    assert_eq!(
        result.iter().find(|(k, _)| k == "PATH").unwrap().1,
        std::env::var("PATH").unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reproducible_policy_fixes_the_clock_and_seeds_randomness() {
    let entropy = |reproducible: &'static str| async move {
        let policy = format!("{reproducible}\n{}", probe_policy(""));
        run_probe(&policy, json!({ "op": "entropy" })).await.0
    };
    let fixed = "[reproducible]\ntime = \"2026-01-01T00:00:00Z\"\nrandom_seed = 7\n";
    let (a, b) = (entropy(fixed).await, entropy(fixed).await);
    assert_eq!(a, b, "the same policy gives the same time and random bytes");
    assert_eq!(a["now"], 1_767_225_600u64);
    let (c, d) = (entropy("").await, entropy("").await);
    assert_ne!(c["random"], d["random"], "without it, randomness is fresh");
    assert_ne!(c["random"], a["random"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reproducible_run_seeds_each_call_apart_and_fixes_the_servers_date() {
    use crate::boundary::{RawServer, response};
    let run = || async {
        let date: &[u8] = b"date: Wed, 02 Dec 2026 03:00:00 GMT";
        let server = RawServer::start(vec![response(&[date], b"ok")]).await;
        let port = server.url.rsplit(':').next().unwrap().to_string();
        let policy = format!(
            "[reproducible]\ntime = \"2026-01-01T00:00:00Z\"\nrandom_seed = 7\n{}",
            probe_policy(&format!(
                "http = {{ allow = [{{ url = \"http://127.0.0.1:{port}/**\", private = true }}] }}"
            ))
        );
        let (results, _) = run_calls(
            &policy,
            &[
                ("probe", json!({ "op": "entropy" })),
                ("probe", json!({ "op": "entropy" })),
                (
                    "probe",
                    json!({ "op": "http", "url": format!("{}/now", server.url) }),
                ),
            ],
        )
        .await;
        results
            .into_iter()
            .map(|r| serde_json::from_str::<Value>(&r.unwrap()).unwrap())
            .collect::<Vec<_>>()
    };
    let (a, b) = (run().await, run().await);
    assert_ne!(
        a[0]["random"], a[1]["random"],
        "a tool's second call does not repeat the first one's random bytes"
    );
    assert_ne!(a[0]["insecure"], a[1]["insecure"]);
    assert_eq!(
        a[..2],
        b[..2],
        "and each call's bytes are the same in every run"
    );
    // (The probe answers an `http` op with the chain of responses.)
    let headers = a[2][0]["headers"].as_array().unwrap();
    let date = headers
        .iter()
        .find(|h| h[0].as_str().unwrap().eq_ignore_ascii_case("date"))
        .unwrap();
    assert_eq!(date[1], "Thu, 01 Jan 2026 00:00:00 GMT", "{headers:?}");
}
