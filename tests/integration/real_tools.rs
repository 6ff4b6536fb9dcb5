//! The bundled side-effect tools, `builtin:fetch` and `builtin:files`, run
//! by an agent under a policy: what they can do with their grants, and what
//! the agent hears when a grant says no.

use crate::harness::*;
use crate::mock_model::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_reads_a_granted_page_as_text_and_labels_it() {
    let page = "<html><head><title>Warden &amp; friends</title><style>p{}</style></head>\
        <body><script>steal()</script><h1>Hello</h1><p>A <b>sandbox</b> for agents.</p>\
        <ul><li>one</li><li>two</li></ul></body></html>";
    let server = MockModel::start(vec![
        Reply::raw(200, page).header("content-type", "text/html; charset=utf-8"),
    ])
    .await;
    let policy = format!(
        "[model]\nallow = [\"scripted\"]\n\n[tools.fetch]\ncomponent = \"builtin:fetch\"\nhttp = {{ allow = [{{ url = \"{}/**\", private = true, labels = [\"untrusted\"] }}] }}\n",
        server.url
    );
    let (results, ran) = run_calls(
        &policy,
        &[
            ("fetch", json!({ "url": format!("{}/page", server.url) })),
            ("fetch", json!({ "url": "https://example.com/" })),
        ],
    )
    .await;
    let page: Value = serde_json::from_str(results[0].as_ref().unwrap()).unwrap();
    assert_eq!(page["status"], 200);
    assert_eq!(page["title"], "Warden & friends");
    let text = page["text"].as_str().unwrap();
    assert!(
        text.contains("Hello") && text.contains("A sandbox for agents."),
        "{text}"
    );
    assert!(text.contains("- one") && text.contains("- two"), "{text}");
    assert!(!text.contains("steal") && !text.contains("p{}"), "{text}");
    assert!(ran.report.session.labels.contains(&"untrusted".to_string()));
    let refused = results[1].as_ref().unwrap_err();
    assert!(
        refused.contains("policy does not allow this URL"),
        "{refused}"
    );
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_work_inside_their_grants_only() {
    let root = tempfile::tempdir().unwrap();
    let work = root.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(work.join("todo.md"), "- write tests\n- ship it\n").unwrap();
    let dir = work.display().to_string();
    let policy = format!(
        r#"[model]
allow = ["scripted"]

[tools.read_file]
component = "builtin:files"
fs = {{ "/workspace" = {{ dir = {dir:?}, mode = "ro" }} }}

[tools.search_files]
component = "builtin:files"
fs = {{ "/workspace" = {{ dir = {dir:?}, mode = "ro" }} }}

[tools.write_file]
component = "builtin:files"
fs = {{ "/workspace" = {{ dir = {dir:?}, mode = "rw" }} }}
args.path = {{ prefix = "/workspace/" }}
"#
    );
    let (results, _) = run_calls(
        &policy,
        &[
            ("read_file", json!({ "path": "/workspace/todo.md" })),
            (
                "write_file",
                json!({ "path": "/workspace/notes.md", "content": "ship it today" }),
            ),
            (
                "search_files",
                json!({ "path": "/workspace", "pattern": "SHIP", "ignore_case": true }),
            ),
            (
                "read_file",
                json!({ "path": "/workspace/../../etc/passwd" }),
            ),
            (
                "write_file",
                json!({ "path": "/etc/cron.d/evil", "content": "x" }),
            ),
        ],
    )
    .await;
    assert_eq!(results[0].as_deref(), Ok("- write tests\n- ship it\n"));
    assert!(results[1].is_ok(), "{:?}", results[1]);
    assert_eq!(
        std::fs::read_to_string(work.join("notes.md")).unwrap(),
        "ship it today"
    );
    let found = results[2].as_ref().unwrap();
    assert!(
        found.contains("todo.md:2: - ship it") && found.contains("notes.md:1: ship it today"),
        "{found}"
    );
    assert!(results[3].is_err(), "{:?}", results[3]);
    // The argument rule refuses before the tool runs.
    let refused = results[4].as_ref().unwrap_err();
    assert!(refused.contains("tools.write_file.args.path"), "{refused}");
    assert!(!std::path::Path::new("/etc/cron.d/evil").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_learned_from_a_fetch_run_grants_that_page_labels_it_and_nothing_more() {
    let page = "<html><body><p>Rates are up.</p></body></html>";
    let server = MockModel::start(vec![
        Reply::raw(200, page).header("content-type", "text/html"),
        Reply::raw(200, page).header("content-type", "text/html"),
    ])
    .await;
    // A permissive run: any path on the test server.
    let permissive = format!(
        "[model]\nallow = [\"scripted\"]\n\n[tools.fetch]\ncomponent = \"builtin:fetch\"\nhttp = {{ allow = [{{ url = \"{}/**\", private = true }}] }}\n",
        server.url
    );
    let url = format!("{}/news/today", server.url);
    let (results, ran) = run_calls(&permissive, &[("fetch", json!({ "url": url }))]).await;
    assert!(results[0].is_ok(), "{results:?}");
    let mut learner = warden::policy::learn::Learner::new();
    for record in &ran.records {
        learner.observe(record);
    }
    let learned = learner.policy("the fetch run");
    assert!(
        learned.contains(&format!(
            "http = {{ allow = [{{ url = \"{url}\", private = true }}, {{ url = \"{url}/**\", private = true }}], methods = [\"GET\"] }}"
        )),
        "{learned}"
    );
    assert!(
        learned.contains("labels = [\"untrusted\"]  # its results came from outside (HTTP)"),
        "{learned}"
    );
    // Under the learned policy the same call runs, and labels the session;
    // another page of the same server is refused.
    let other = format!("{}/admin", server.url);
    let (results, ran) = run_calls(
        &learned,
        &[
            ("fetch", json!({ "url": url })),
            ("fetch", json!({ "url": other })),
        ],
    )
    .await;
    assert!(results[0].is_ok(), "{results:?}\n{learned}");
    assert!(results[1].is_err(), "{results:?}");
    assert!(ran.report.session.labels.contains(&"untrusted".to_string()));
    assert_eq!(server.seen().len(), 2);
}
