//! Guests written in Python (componentize-py) and JavaScript
//! (componentize-js), built from source by host/build.rs, run and mediated
//! exactly like Rust ones.

use crate::harness::{Recording, guests, run_agent, run_calls, runtime};
use serde_json::json;
use std::path::Path;

pub(crate) fn built(path: &str) -> &str {
    assert!(
        Path::new(path).exists(),
        "{path} was not built: the Python and JavaScript guests need componentize-py and componentize-js; run `make setup`, then build again"
    );
    path
}

fn policy(entries: &[(&str, &str)]) -> String {
    let mut text =
        String::from("[model]\nallow = [\"scripted\"]\n\n[limits]\nmemory = \"128MiB\"\n");
    for (name, component) in entries {
        text.push_str(&format!(
            "\n[tools.{name}]\ncomponent = {:?}\n",
            built(component)
        ));
    }
    text
}

#[tokio::test]
async fn a_python_tool_is_described_called_and_its_errors_are_values() {
    let policy = policy(&[
        ("word_frequencies", guests::WORDFREQ_PY),
        ("slugify", guests::WORDFREQ_PY),
    ]);
    let (results, _) = run_calls(
        &policy,
        &[
            (
                "word_frequencies",
                json!({ "text": "The cat and the hat. THE END", "top": 2 }),
            ),
            ("slugify", json!({ "text": "Héllo, World!" })),
            // Inside the schema, refused by the tool itself.
            ("slugify", json!({ "text": "!!!" })),
            // Outside the schema: refused by the host, the tool never runs.
            ("slugify", json!({ "title": "x" })),
        ],
    )
    .await;
    let counts: serde_json::Value = serde_json::from_str(results[0].as_ref().unwrap()).unwrap();
    assert_eq!(
        counts,
        json!({ "total_words": 7, "distinct_words": 5,
            "top": [{ "word": "the", "count": 3 }, { "word": "and", "count": 1 }] })
    );
    assert_eq!(results[1].as_ref().unwrap(), "hello-world");
    assert!(
        results[2]
            .as_ref()
            .unwrap_err()
            .contains("the text has no letters or digits"),
        "{results:?}"
    );
    assert!(
        results[3]
            .as_ref()
            .unwrap_err()
            .contains("(rule: tools.slugify.schema)"),
        "the host refuses arguments outside the schema: {results:?}"
    );
}

#[tokio::test]
async fn a_javascript_tool_is_described_called_and_its_errors_are_values() {
    let policy = policy(&[
        ("json_query", guests::JSONPATH_JS),
        ("json_format", guests::JSONPATH_JS),
    ]);
    let document = json!({ "store": { "book": [
        { "title": "Sayings of the Century", "price": 8.95 },
        { "title": "Sword of Honour", "price": 12.99 },
        { "title": "Moby Dick", "price": 8.99 } ] } })
    .to_string();
    let (results, _) = run_calls(
        &policy,
        &[
            (
                "json_query",
                json!({ "document": document, "path": "$.store.book[?(@.price < 10)].title" }),
            ),
            (
                "json_format",
                json!({ "document": "{\"b\":1,\"a\":2}", "sort_keys": true, "indent": 0 }),
            ),
            (
                "json_query",
                json!({ "document": document, "path": "$.store.book[" }),
            ),
            (
                "json_query",
                json!({ "document": "{not json", "path": "$" }),
            ),
        ],
    )
    .await;
    let matches: serde_json::Value = serde_json::from_str(results[0].as_ref().unwrap()).unwrap();
    let titles: Vec<&str> = matches["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Sayings of the Century", "Moby Dick"]);
    assert_eq!(results[1].as_ref().unwrap(), r#"{"a":2,"b":1}"#);
    assert!(
        results[2].as_ref().unwrap_err().contains("bad path"),
        "{results:?}"
    );
    assert!(
        results[3].as_ref().unwrap_err().contains("not valid JSON"),
        "{results:?}"
    );
}

/// The Python react agent behaves like the Rust one: driven by the same
/// model script under the same policy, it sends the model the same
/// requests, makes the same tool calls, and gives the same answer.
#[tokio::test]
async fn the_python_agent_runs_like_the_rust_one() {
    let policy = format!(
        "{}\n[tools.calc]\ncomponent = \"builtin:calc\"\n\n[tools.regex_search]\ncomponent = \"builtin:text\"\ndecision = \"deny\"\n",
        policy(&[("word_frequencies", guests::WORDFREQ_PY)])
    );
    let script = r#"
[[turn]]
text = "Let me compute and count."
calls = [
    { tool = "calc", arguments = { expression = "6 * 7" } },
    { tool = "word_frequencies", arguments = { text = "to be or not to be", top = 1 } },
]
[[turn]]
calls = [{ tool = "regex_search", arguments = { text = "x", pattern = "x" } }]
[[turn]]
text = "6 * 7 = 42; the most frequent word is 'be' (tied with 'to')."
"#;
    let mut runs = Vec::new();
    for agent in ["builtin:react", built(guests::REACT_PY)] {
        let model = Recording::new(script);
        let ran = run_agent(agent, &policy, model.clone(), "compute and count").await;
        let requests = model.requests.lock().unwrap().clone();
        runs.push((ran, requests));
    }
    let (rust, python) = (&runs[0], &runs[1]);
    assert_eq!(python.0.answer(), rust.0.answer());
    let calls = |ran: &crate::harness::Ran| -> Vec<(String, String)> {
        ran.find("tool", "decision")
            .iter()
            .map(|r| (r.subject.clone(), r.rule.clone()))
            .collect()
    };
    assert_eq!(calls(&python.0), calls(&rust.0));
    assert_eq!(python.1.len(), 3);
    for (p, r) in python.1.iter().zip(&rust.1) {
        assert_eq!(
            serde_json::to_value(&p.messages).unwrap(),
            serde_json::to_value(&r.messages).unwrap(),
            "the Python agent sends the model what the Rust one does"
        );
        assert_eq!(p.tools.len(), r.tools.len());
    }
}

#[tokio::test]
async fn python_and_javascript_components_load_from_the_compile_cache() {
    for path in [guests::WORDFREQ_PY, guests::JSONPATH_JS] {
        let bytes = std::fs::read(built(path)).unwrap();
        // The first load may come from an earlier test in this process.
        runtime().load(path, &bytes).unwrap();
        let again = runtime().load(path, &bytes).unwrap();
        assert!(again.cache_hit, "{path} was compiled twice");
    }
}

/// `tools/python-exec`: model-written Python runs in the tool's own
/// instance. It computes and prints; it finds no host files, no sockets,
/// no processes and no native code; an endless loop is stopped by the
/// CPU limit; nothing one call defines is there in the next.
#[tokio::test]
async fn python_exec_runs_code_with_no_authority_of_its_own() {
    let mut text = policy(&[("python", guests::PYTHON_EXEC)]);
    text = text.replace("[limits]\n", "[limits]\ncpu = \"2s\"\n");
    let run = |code: &str| ("python", json!({ "code": code }));
    let (results, _) = run_calls(
        &text,
        &[
            run("total = sum(i * i for i in range(10))\nprint('squares', total)\ntotal * 2"),
            run("open('/etc/passwd').read()"),
            run("import os\nos.listdir('/')"),
            run("import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)"),
            run("import subprocess\nsubprocess.run(['ls'])"),
            run("import ctypes\nctypes.CDLL(None)"),
            run("total"),
            run("while True:\n    pass"),
            run("hoard = bytearray(1 << 30)"),
            run("for _ in range(100):\n    print('x' * 1_000_000)"),
        ],
    )
    .await;
    let report = |i: usize| -> serde_json::Value {
        serde_json::from_str(results[i].as_ref().unwrap()).unwrap()
    };
    assert_eq!(
        report(0),
        json!({ "stdout": "squares 285\n", "value": "570", "error": null })
    );
    for (i, what) in [
        (1, "a host file"),
        (3, "a socket"),
        (4, "a process"),
        (5, "native code"),
    ] {
        let report = report(i);
        assert!(
            report["error"].is_string() && report["value"].is_null(),
            "{what}: {report}"
        );
    }
    // The root it lists is its own (empty: no directory is granted).
    let root = report(2);
    assert!(root["error"].is_string() || root["value"] == "[]", "{root}");
    assert!(
        report(6)["error"].as_str().unwrap().contains("NameError"),
        "a variable survived into the next call: {}",
        report(6)
    );
    let spun = results[7].as_ref().unwrap_err();
    assert!(spun.contains("CPU limit"), "{spun}");
    // A gigabyte is refused by the memory limit (CPython sees a failed
    // allocation); 100 MB printed is stopped before it reaches the host.
    match &results[8] {
        Ok(text) => assert!(text.contains("MemoryError"), "{text}"),
        Err(stopped) => assert!(stopped.contains("memory"), "{stopped}"),
    }
    match &results[9] {
        Ok(text) => assert!(text.contains("MemoryError"), "{text}"),
        Err(stopped) => assert!(
            stopped.contains("memory") || stopped.contains("output"),
            "{stopped}"
        ),
    }
}

/// The python tool's report for each call, parsed (`Err` when the call
/// itself was refused or failed).
fn reports(results: &[Result<String, String>]) -> Vec<serde_json::Value> {
    results
        .iter()
        .map(|r| match r {
            Ok(text) => serde_json::from_str(text).unwrap(),
            Err(e) => json!({ "call_failed": e }),
        })
        .collect()
}

/// With an `http` grant, model-written code in the python tool reaches the
/// granted URLs through `wasi:http`, each request decided by the host; any
/// other URL or method, a body past `max_response`, sockets and urllib
/// fail; a secret bound to the server is injected and the echo of it is
/// redacted. Without a grant, nothing leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_exec_reaches_the_network_only_through_its_http_grant() {
    use crate::mock_model::{MockModel, Reply, ReplyBody};
    let server = MockModel::start(vec![
        Reply::json(200, json!({ "items": [1, 2] })),
        Reply::json(201, json!({ "ok": true })),
        Reply::raw(200, vec![b'x'; 10_000]),
        Reply {
            status: 200,
            headers: vec![],
            body: ReplyBody::EchoHeaders,
            delay: std::time::Duration::ZERO,
        },
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tok-9e1c55d0a7b3\n").unwrap();
    let url = &server.url;
    let mut text = policy(&[("python", guests::PYTHON_EXEC)]);
    text = text.replace("[limits]\n", "[limits]\ncpu = \"5s\"\n");
    text.push_str(&format!(
        "secrets = [\"TOKEN\"]\nhttp = {{ allow = [{{ url = \"{url}/api/**\", private = true }}], methods = [\"GET\", \"POST\"], max_response = \"4KiB\" }}\n\n[secrets.TOKEN]\nfrom_file = {:?}\ninject = {{ host = \"127.0.0.1\", header = \"Authorization\", format = \"Bearer {{}}\" }}\n",
        token.display().to_string()
    ));
    let refused = |call: &str| {
        format!(
            "code = None\ntry:\n    {call}\nexcept HttpError as refused:\n    print(refused)\n    code = refused.code\ncode"
        )
    };
    let run = |code: String| ("python", json!({ "code": code }));
    let (results, ran) = run_calls(
        &text,
        &[
            run(format!("r = http_request('{url}/api/items')\n(r.status, r.json())")),
            run(format!(
                "import json\nr = http_request('{url}/api/up', method='POST', headers={{'content-type': 'application/json'}}, body=json.dumps({{'n': 7, 'pad': 'y' * 10000}}))\nr.status"
            )),
            run(refused(&format!("http_request('{url}/api/big')"))),
            run(format!("http_request('{url}/api/echo').text()")),
            run(refused(&format!("http_request('{url}/admin')"))),
            run(refused(&format!("http_request('{url}/api/items', method='DELETE')"))),
            run(refused("http_request('https://example.com/')")),
            run(format!("import urllib.request\nurllib.request.urlopen('{url}/api/items')")),
        ],
    )
    .await;
    let r = reports(&results);
    assert_eq!(r[0]["value"], "(200, {'items': [1, 2]})", "{}", r[0]);
    assert_eq!(r[1]["value"], "201", "{}", r[1]);
    let seen = server.seen();
    assert_eq!(seen[1].path, "/api/up");
    // Whole, though it is written 4096 bytes at a time (wasi:io's bound).
    assert_eq!(
        seen[1].body,
        json!({ "n": 7, "pad": "y".repeat(10000) }),
        "the POST body arrived"
    );
    assert_eq!(r[2]["value"], "'HTTP-response-body-size'", "{}", r[2]);
    assert!(
        r[2]["stdout"].as_str().unwrap().contains("max_response"),
        "{}",
        r[2]
    );
    // The server got the token; the code saw only its redaction.
    assert_eq!(
        seen[3].header("authorization"),
        Some("Bearer tok-9e1c55d0a7b3")
    );
    let echoed = r[3]["value"].as_str().unwrap();
    assert!(echoed.contains("[REDACTED:TOKEN]"), "{echoed}");
    for i in [4, 5, 6] {
        assert_eq!(r[i]["value"], "'HTTP-request-denied'", "call {i}: {}", r[i]);
        assert!(
            r[i]["stdout"].as_str().unwrap().contains("`http` grant"),
            "{}",
            r[i]
        );
    }
    assert!(r[7]["error"].is_string(), "urllib found a socket: {}", r[7]);
    assert_eq!(server.seen().len(), 4, "only the granted requests arrived");
    // Each request is decided and recorded under the tool's own rule.
    let decisions: Vec<(String, String)> = ran
        .records
        .iter()
        .filter(|r| serde_json::to_value(r.kind).unwrap() == "http" && r.outcome.is_none())
        .map(|r| (format!("{:?}", r.decision), r.rule.clone()))
        .collect();
    assert_eq!(decisions.len(), 7, "{decisions:?}");
    assert_eq!(
        decisions[0],
        ("Allow".into(), "tools.python.http.allow[0]".into())
    );
    assert_eq!(
        decisions[4],
        ("Deny".into(), "tools.python.http.allow".into())
    );
    assert_eq!(
        decisions[5],
        ("Deny".into(), "tools.python.http.methods".into())
    );
    let all: String = ran
        .records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    assert!(
        !all.contains("tok-9e1c55d0a7b3"),
        "a record holds the secret"
    );

    // No grant: the same request is refused, and nothing arrives.
    let bare = MockModel::start(vec![Reply::json(200, json!({}))]).await;
    let (results, _) = run_calls(
        &policy(&[("python", guests::PYTHON_EXEC)]),
        &[run(refused(&format!(
            "http_request('{}/api/items')",
            bare.url
        )))],
    )
    .await;
    assert_eq!(reports(&results)[0]["value"], "'HTTP-request-denied'");
    assert!(bare.seen().is_empty());
}

/// With an `fs` grant the python tool reads and writes the granted
/// directory and nothing else: a read-only grant refuses writes, `..` and
/// absolute host paths do not leave it, and a symlink planted inside that
/// points out is not followed out.
#[tokio::test]
async fn python_exec_sees_only_its_fs_grant() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("notes.txt"), "the notes").unwrap();
    std::fs::write(dir.path().join("outside.txt"), "outside the grant").unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside.txt"), work.join("escape")).unwrap();
    let mut text = policy(&[("python", guests::PYTHON_EXEC)]);
    text.push_str(&format!(
        "fs = {{ \"/work\" = {{ dir = {:?}, mode = \"rw\" }}, \"/docs\" = {{ dir = {:?}, mode = \"ro\" }} }}\n",
        work.display().to_string(),
        docs.display().to_string()
    ));
    let run = |code: &str| ("python", json!({ "code": code }));
    let (results, _) = run_calls(
        &text,
        &[
            run("open('/work/out.txt', 'w').write('written inside')\nopen('/docs/notes.txt').read()"),
            run("open('/docs/new.txt', 'w').write('x')"),
            run("open('/work/../outside.txt').read()"),
            run(&format!("open({:?}).read()", dir.path().join("outside.txt").display().to_string())),
            run("open('/work/escape').read()"),
            run("import os\nsorted(os.listdir('/'))"),
        ],
    )
    .await;
    let r = reports(&results);
    assert_eq!(r[0]["value"], "'the notes'", "{}", r[0]);
    assert_eq!(
        std::fs::read_to_string(work.join("out.txt")).unwrap(),
        "written inside"
    );
    assert!(
        r[1]["error"].is_string(),
        "wrote under a read-only grant: {}",
        r[1]
    );
    assert!(!docs.join("new.txt").exists());
    for i in [2, 3, 4] {
        assert!(
            r[i]["error"].is_string(),
            "call {i} left the grant: {}",
            r[i]
        );
        assert!(!r[i].to_string().contains("outside the grant"), "{}", r[i]);
    }
    let root = &r[5];
    assert!(
        root["value"] == "['docs', 'work']" || root["error"].is_string(),
        "{root}"
    );
}
