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
