//! Asks reach a person through `warden serve`: the approvals API, and the
//! page driven in a real headless Chromium over WebDriver (Debian's
//! `chromium` and `chromium-driver`, installed by `make setup`), including
//! a guest that tries to inject markup and script into the page.

use crate::harness::*;
use serde_json::{Value, json};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "wdn-test-token-alice-0123456789abcdef";
const OTHER_TOKEN: &str = "wdn-test-token-mallory-0123456789abcd";

/// `calc` asks whenever its expression did not come from `word_count`'s
/// results, so each ask explains where the value was seen.
fn policy(timeout: &str) -> String {
    format!(
        r#"
[model]
allow = ["scripted"]
provider = "scripted:unused.toml"

[tools.calc]
component = "builtin:calc"
args.expression = {{ from = ["tool:word_count"], decision = "ask" }}

[tools.word_count]
component = "builtin:text"

[approvals]
timeout = "{timeout}"
"#
    )
}

/// A `warden serve` on loopback with two tokens (alice, mallory), the
/// attacker agent and the policies `asks` (60 s to answer) and `quick`
/// (5 s); killed when dropped.
struct Serve {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Serve {
    fn start() -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["policies", "agents", "audit"] {
            std::fs::create_dir(root.join(sub)).unwrap();
        }
        std::fs::write(root.join("policies/asks.toml"), policy("60s")).unwrap();
        std::fs::write(root.join("policies/quick.toml"), policy("5s")).unwrap();
        std::fs::write(
            root.join("policies/unused.toml"),
            "[[turn]]\ntext = \"unused\"\n",
        )
        .unwrap();
        std::fs::copy(guests::ATTACKER, root.join("agents/attacker.wasm")).unwrap();
        let hash = |t: &str| {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(t.as_bytes()))
        };
        std::fs::write(
            root.join("tokens.toml"),
            format!(
                "[[token]]\nname = \"alice\"\nsha256 = \"{}\"\npolicies = [\"*\"]\nrate = 200\n\n[[token]]\nname = \"mallory\"\nsha256 = \"{}\"\npolicies = [\"*\"]\nrate = 200\n",
                hash(TOKEN),
                hash(OTHER_TOKEN)
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
            .arg("serve")
            .arg("--policies")
            .arg(root.join("policies"))
            .arg("--agents")
            .arg(root.join("agents"))
            .arg("--audit-dir")
            .arg(root.join("audit"))
            .arg("--tokens")
            .arg(root.join("tokens.toml"))
            .args(["--listen", "127.0.0.1:0", "--max-runs", "16"])
            .arg("--cache-dir")
            .arg(cache_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let address = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(address);
                }
            }
        });
        let address = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("warden serve did not say where it listens");
        Serve {
            child,
            base: format!("http://{address}"),
            _dir: dir,
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, token: &str, body: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Submit the attacker agent calling `calc` with `expression` under
    /// `policy`; the run's id.
    async fn submit(&self, policy: &str, expression: &str) -> String {
        let ops =
            json!([{ "tool": "calc", "args": json!({ "expression": expression }).to_string() }]);
        let request =
            json!({ "agent": "attacker", "policy": policy, "task": format!("calls:{ops}") });
        let (status, view) = self.post("/runs", TOKEN, &request.to_string()).await;
        assert_eq!(status, 202, "{view}");
        view["id"].as_str().unwrap().to_string()
    }

    /// Wait until `run` has `n` asks pending; they are returned.
    async fn asks_of(&self, run: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (status, body) = self.get("/approvals", TOKEN).await;
            assert_eq!(status, 200, "{body}");
            let asks: Vec<Value> = body["pending"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["run"] == run)
                .cloned()
                .collect();
            if asks.len() >= n {
                return asks;
            }
            assert!(Instant::now() < deadline, "no ask of {run} appeared");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait for `run` to end; its view.
    async fn finished(&self, run: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (_, view) = self.get(&format!("/runs/{run}"), TOKEN).await;
            if view.get("finished").is_some() {
                return view;
            }
            assert!(Instant::now() < deadline, "{run} did not end: {view}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The run's audit records.
    async fn records(&self, run: &str) -> Vec<Value> {
        let text = self
            .http
            .get(format!("{}/runs/{run}/audit", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The attacker's report of its one call.
fn report(view: &Value) -> Value {
    serde_json::from_str::<Value>(view["answer"].as_str().unwrap_or("null")).unwrap_or(Value::Null)
        [0]
    .clone()
}

/// A headless Chromium driven over the W3C WebDriver protocol.
struct Browser {
    driver: Child,
    url: String,
    http: reqwest::Client,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn chromedriver() -> PathBuf {
    let path = PathBuf::from("/usr/bin/chromedriver");
    assert!(
        path.exists() && Path::new("/usr/bin/chromium").exists(),
        "the approvals page tests need Debian's chromium and chromium-driver: run `make setup`"
    );
    path
}

impl Browser {
    async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let http = reqwest::Client::new();
        let root = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = match http.get(format!("{root}/status")).send().await {
                Ok(r) => r.json::<Value>().await.ok(),
                Err(_) => None,
            };
            if ready.is_some_and(|s| s["value"]["ready"] == true) {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
            },
        }}});
        let session: Value = http
            .post(format!("{root}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = session["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {session}"));
        Browser {
            driver,
            url: format!("{root}/session/{id}"),
            http,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let request = self.http.request(method, format!("{}{path}", self.url));
        let request = if body.is_null() {
            request
        } else {
            request.json(&body)
        };
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    /// The first element matching `css`, waiting up to 20 s for it.
    async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self
                .call(
                    reqwest::Method::POST,
                    "/element",
                    json!({ "using": "css selector", "value": css }),
                )
                .await;
            if let Some(id) = found[ELEMENT].as_str() {
                return id.to_string();
            }
            assert!(Instant::now() < deadline, "no element {css}: {found}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&self, element: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            json!({}),
        )
        .await;
    }

    async fn type_into(&self, element: &str, text: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// `script`'s value (a function body: `return ...`).
    async fn eval(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// Wait until `script` returns true.
    async fn until(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.eval(script).await != json!(true) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Open the page and give it the token.
    async fn open(&self, serve: &Serve) {
        self.goto(&format!("{}/ui", serve.base)).await;
        let input = self.find("#token").await;
        self.type_into(&input, TOKEN).await;
        let use_it = self.find("#token-use").await;
        self.click(&use_it).await;
    }

    /// The card of ask `id` on the page.
    async fn card(&self, id: &str) -> String {
        self.find(&format!("article.ask[data-id=\"{id}\"]")).await
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The text of the card of ask `id`.
async fn card_text(browser: &Browser, id: &str) -> String {
    browser
        .eval(&format!(
            "return document.querySelector('article.ask[data-id=\"{id}\"]').textContent"
        ))
        .await
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_approves_once_on_the_page_and_reads_the_runs_audit_log() {
    let serve = Serve::start();
    let run = serve.submit("asks", "6 * 7").await;
    let asks = serve.asks_of(&run, 1).await;
    let id = asks[0]["id"].as_str().unwrap().to_string();
    let browser = Browser::start().await;
    browser.open(&serve).await;
    browser.card(&id).await;
    let shown = card_text(&browser, &id).await;
    assert!(shown.contains("calc"), "{shown}");
    assert!(shown.contains("\"expression\": \"6 * 7\""), "{shown}");
    assert!(shown.contains("tools.calc.args.expression"), "{shown}");
    assert!(shown.contains(&run), "{shown}");
    // Where the value was seen, in warden's words.
    assert!(shown.contains("seen: it appears in the task"), "{shown}");
    let approve = browser
        .find(&format!(
            "article.ask[data-id=\"{id}\"] button.approve-once"
        ))
        .await;
    browser.click(&approve).await;
    let view = serve.finished(&run).await;
    assert_eq!(report(&view), json!({ "ok": "42" }), "{view}");
    let records = serve.records(&run).await;
    let decision = records
        .iter()
        .find(|r| r["subject"] == "calc" && r["event"] == "decision")
        .unwrap();
    assert_eq!(decision["decision"], "ask");
    assert_eq!(decision["data"]["approved_by"], "a person (alice), once");
    browser
        .until(
            "the answered ask to leave the page",
            &format!("return !document.querySelector('article.ask[data-id=\"{id}\"]')"),
        )
        .await;
    // The run's audit log, on the same page: a timeline with filters and
    // the chain's verify status.
    let field = browser.find("#audit-run").await;
    browser.type_into(&field, &run).await;
    let show = browser.find("#audit-show").await;
    browser.click(&show).await;
    browser
        .until(
            "the audit log to be shown",
            "return document.querySelectorAll('#audit-rows tr').length > 3",
        )
        .await;
    browser
        .until(
            "the verify status",
            "return document.getElementById('audit-verify').textContent.includes('hash chain intact')",
        )
        .await;
    let all = browser
        .eval("return document.querySelectorAll('#audit-rows tr').length")
        .await;
    assert_eq!(all, json!(records.len()));
    browser
        .eval("const s = document.getElementById('audit-decision'); s.value = 'ask'; s.dispatchEvent(new Event('change')); return true")
        .await;
    let asked = browser
        .eval("return [...document.querySelectorAll('#audit-rows tr')].map(r => r.textContent)")
        .await;
    let asked = asked.as_array().unwrap();
    let expected = records.iter().filter(|r| r["decision"] == "ask").count();
    assert!(expected >= 2, "{records:?}");
    assert_eq!(asked.len(), expected, "{asked:?}");
    assert!(asked.iter().all(|r| r.as_str().unwrap().contains("ask")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_on_the_page_refuses_the_call_and_the_record_says_a_person_refused() {
    let serve = Serve::start();
    let run = serve.submit("asks", "1 + 1").await;
    let id = serve.asks_of(&run, 1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let browser = Browser::start().await;
    browser.open(&serve).await;
    let deny = browser
        .find(&format!("article.ask[data-id=\"{id}\"] button.deny"))
        .await;
    browser.click(&deny).await;
    let view = serve.finished(&run).await;
    let report = report(&view);
    assert_eq!(report["error"]["kind"], "denied", "{view}");
    let reason = report["error"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("a person (alice) refused this call"),
        "{reason}"
    );
    let records = serve.records(&run).await;
    let outcome = records
        .iter()
        .find(|r| r["subject"] == "calc" && r["event"] == "outcome")
        .unwrap();
    assert_eq!(outcome["outcome"], "denied");
    assert!(
        outcome["detail"]
            .as_str()
            .unwrap()
            .contains("a person (alice) refused")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ask_nobody_answers_times_out_into_a_denial_and_leaves_the_page() {
    let serve = Serve::start();
    // The page is open first: the ask has only 5 s to be seen.
    let browser = Browser::start().await;
    browser.open(&serve).await;
    browser
        .until(
            "the page to list asks",
            "return document.getElementById('pending-count').textContent === '(0)'",
        )
        .await;
    let run = serve.submit("quick", "2 + 2").await;
    let id = serve.asks_of(&run, 1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    browser.card(&id).await;
    let view = serve.finished(&run).await;
    let reason = report(&view)["error"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("none was given: nobody answered within 5s (approvals.timeout)"),
        "{view}"
    );
    browser
        .until(
            "the timed-out ask to leave the page",
            &format!("return !document.querySelector('article.ask[data-id=\"{id}\"]')"),
        )
        .await;
    // Too late: the answer is not taken.
    let (status, body) = serve
        .post(&format!("/approvals/{id}"), TOKEN, r#"{"answer": "once"}"#)
        .await;
    assert_eq!(status, 404, "{body}");
}

/// What a guest might write to take over the page of the person who
/// approves its calls.
const PAYLOADS: &[&str] = &[
    "<img src=x onerror=\"window.pwned=1\">",
    "</script><script>window.pwned=2</script>",
    "\"><svg onload=\"window.pwned=3\">",
    "<iframe srcdoc=\"<script>parent.pwned=4</script>\"></iframe>",
    "javascript:window.pwned=5",
    "' onmouseover='window.pwned=6' x='",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markup_and_script_in_an_ask_are_shown_as_text_and_never_run() {
    let serve = Serve::start();
    let mut runs = Vec::new();
    for payload in PAYLOADS {
        let run = serve.submit("asks", payload).await;
        runs.push((run.clone(), serve.asks_of(&run, 1).await[0].clone()));
    }
    let browser = Browser::start().await;
    browser.open(&serve).await;
    for (_, ask) in &runs {
        browser.card(ask["id"].as_str().unwrap()).await;
    }
    // Rendered twice at least (the page refreshes every second).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for ((_, ask), payload) in runs.iter().zip(PAYLOADS) {
        let shown = card_text(&browser, ask["id"].as_str().unwrap()).await;
        // As text: in the arguments (JSON-quoted) and as the value seen.
        assert!(
            shown.contains(payload),
            "{payload} not shown as text: {shown}"
        );
    }
    // Only the page's own script, no injected element, nothing ran.
    let injected = browser
        .eval("return document.querySelectorAll('img,svg,iframe,script,object,embed').length")
        .await;
    assert_eq!(injected, json!(1), "an element was injected");
    let own = browser
        .eval("return document.querySelector('script').getAttribute('src')")
        .await;
    assert_eq!(own, json!("/ui/app.js"));
    assert_eq!(
        browser.eval("return typeof window.pwned").await,
        json!("undefined")
    );
    let with_handlers = browser
        .eval("return [...document.querySelectorAll('*')].filter(e => [...e.attributes].some(a => a.name.startsWith('on'))).length")
        .await;
    assert_eq!(with_handlers, json!(0));
    // Deny them all through the page; each run is refused.
    for (run, ask) in &runs {
        let id = ask["id"].as_str().unwrap();
        let deny = browser
            .find(&format!("article.ask[data-id=\"{id}\"] button.deny"))
            .await;
        browser.click(&deny).await;
        let view = serve.finished(run).await;
        assert_eq!(report(&view)["error"]["kind"], "denied", "{view}");
    }
    assert_eq!(
        browser.eval("return typeof window.pwned").await,
        json!("undefined")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_only_its_owners_asks_refuses_bad_answers_and_sets_safe_headers() {
    let serve = Serve::start();
    let run = serve.submit("asks", "3 * 3").await;
    let ask = serve.asks_of(&run, 1).await[0].clone();
    let id = ask["id"].as_str().unwrap();
    assert_eq!(ask["owner"], "alice");
    assert_eq!(ask["subject"], "calc");
    assert_eq!(ask["explained"]["values"][0]["field"], "expression");
    // Another token sees none of alice's asks and cannot answer them.
    let (status, theirs) = serve.get("/approvals", OTHER_TOKEN).await;
    assert_eq!(status, 200);
    assert_eq!(theirs["pending"], json!([]));
    let (status, _) = serve
        .post(
            &format!("/approvals/{id}"),
            OTHER_TOKEN,
            r#"{"answer":"once"}"#,
        )
        .await;
    assert_eq!(status, 404);
    // No token: refused.
    let response = serve
        .http
        .get(format!("{}/approvals", serve.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    // Malformed answers are refused with what to send.
    for (body, says) in [
        ("not json", "not JSON"),
        (
            r#"{"answer": "yes"}"#,
            "must be \"once\", \"run\" or \"deny\"",
        ),
        (r#"{"answer": 1}"#, "a string field `answer`"),
        (r#"[]"#, "a string field `answer`"),
    ] {
        let (status, error) = serve.post(&format!("/approvals/{id}"), TOKEN, body).await;
        assert_eq!(status, 400, "{body}: {error}");
        assert!(
            error["error"]["message"].as_str().unwrap().contains(says),
            "{body}: {error}"
        );
    }
    let huge = format!(r#"{{"answer": "once", "pad": "{}"}}"#, "x".repeat(100_000));
    let (status, _) = serve.post(&format!("/approvals/{id}"), TOKEN, &huge).await;
    assert_eq!(status, 413);
    // Still pending after all that; "run" approves it.
    assert_eq!(serve.asks_of(&run, 1).await[0]["id"], ask["id"]);
    let (status, answered) = serve
        .post(&format!("/approvals/{id}"), TOKEN, r#"{"answer":"run"}"#)
        .await;
    assert_eq!(status, 200, "{answered}");
    let view = serve.finished(&run).await;
    assert_eq!(report(&view), json!({ "ok": "9" }));
    // The page and the API forbid inline script, framing and sniffing.
    for path in ["/ui", "/ui/app.js", "/approvals"] {
        let response = serve
            .http
            .get(format!("{}{path}", serve.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
        let headers = response.headers();
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert!(headers.get("set-cookie").is_none());
    }
    // The page's script inserts no markup: no innerHTML, no inline script.
    let js = include_str!("../../host/src/approvals/page/app.js");
    for forbidden in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!js.contains(forbidden), "app.js uses {forbidden}");
    }
    let html = include_str!("../../host/src/approvals/page/index.html");
    assert!(!html.contains("<script>"), "inline script in index.html");
    let handler = regex::Regex::new(r"\son[a-z]+\s*=").unwrap();
    assert!(!handler.is_match(html), "an inline handler in index.html");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_runs_asks_disappear() {
    let serve = Serve::start();
    let run = serve.submit("asks", "5 - 1").await;
    let id = serve.asks_of(&run, 1).await[0]["id"].clone();
    let (status, _) = serve.post(&format!("/runs/{run}/cancel"), TOKEN, "").await;
    assert_eq!(status, 202);
    let view = serve.finished(&run).await;
    assert_eq!(view["status"], "cancelled", "{view}");
    let (_, body) = serve.get("/approvals", TOKEN).await;
    assert!(
        !body["pending"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == id),
        "{body}"
    );
}
