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
/// Held by automation: may start runs, may not answer their asks.
const CI_TOKEN: &str = "wdn-test-token-ci-0123456789abcdef0123";
/// Held by the person who answers ci's asks.
const APPROVER_TOKEN: &str = "wdn-test-token-approver-0123456789abcd";

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

# The run waits on its asks: give it as long (a loaded CI machine drives
# the page slowly; the default wall limit of 2 min ended a run mid-test).
[limits]
wall = "15m"
"#
    )
}

/// A `warden serve` on loopback with two tokens (alice, mallory), the
/// attacker agent and the policies `asks` (10 min to answer, longer than any test waits under load) and `quick`
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
        std::fs::write(root.join("policies/asks.toml"), policy("10m")).unwrap();
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
                "[[token]]\nname = \"alice\"\nsha256 = \"{}\"\npolicies = [\"*\"]\nrate = 200\n\n[[token]]\nname = \"mallory\"\nsha256 = \"{}\"\npolicies = [\"*\"]\nrate = 200\n\n[[token]]\nname = \"ci\"\nsha256 = \"{}\"\npolicies = [\"*\"]\nrate = 200\napproves = []\n\n[[token]]\nname = \"approver\"\nsha256 = \"{}\"\npolicies = [\"quick\"]\nrate = 200\napproves = [\"ci\"]\n",
                hash(TOKEN),
                hash(OTHER_TOKEN),
                hash(CI_TOKEN),
                hash(APPROVER_TOKEN)
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
        self.submit_as(TOKEN, policy, expression).await
    }

    /// [`Serve::submit`] with `token`.
    async fn submit_as(&self, token: &str, policy: &str, expression: &str) -> String {
        let ops =
            json!([{ "tool": "calc", "args": json!({ "expression": expression }).to_string() }]);
        let request =
            json!({ "agent": "attacker", "policy": policy, "task": format!("calls:{ops}") });
        let (status, view) = self.post("/runs", token, &request.to_string()).await;
        assert_eq!(status, 202, "{view}");
        view["id"].as_str().unwrap().to_string()
    }

    /// Wait until `run` has `n` asks pending; they are returned.
    async fn asks_of(&self, run: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (status, body) = self.get("/approvals", TOKEN).await;
            assert_eq!(status, 200, "{body}");
            crate::serve::openapi_check("ApprovalList", &body);
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

    /// Click `element`; a click that does not land (the element left the
    /// page, or another covers it) fails the test here, not 120 s later.
    async fn click(&self, element: &str) {
        let answer = self
            .call(
                reqwest::Method::POST,
                &format!("/element/{element}/click"),
                json!({}),
            )
            .await;
        assert!(answer.get("error").is_none(), "click failed: {answer}");
    }

    /// Whether `element` is still the one on the page (not replaced).
    async fn attached(&self, element: &str) -> bool {
        let answer = self
            .call(
                reqwest::Method::GET,
                &format!("/element/{element}/name"),
                Value::Null,
            )
            .await;
        answer.get("error").is_none()
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
    let mut cards = Vec::new();
    for (_, ask) in &runs {
        cards.push(browser.card(ask["id"].as_str().unwrap()).await);
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
    // Deny them all through the page; each run is refused. A refresh
    // leaves the cards still waiting as they were: the button a person
    // is about to press is never swapped under the pointer.
    for (i, (run, ask)) in runs.iter().enumerate() {
        let id = ask["id"].as_str().unwrap();
        let deny = browser
            .find(&format!("article.ask[data-id=\"{id}\"] button.deny"))
            .await;
        browser.click(&deny).await;
        let view = serve.finished(run).await;
        assert_eq!(report(&view)["error"]["kind"], "denied", "{view}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!browser.attached(&cards[i]).await, "{id} still shown");
        for card in &cards[i + 1..] {
            assert!(browser.attached(card).await, "a waiting card was replaced");
        }
    }
    assert_eq!(
        browser.eval("return typeof window.pwned").await,
        json!("undefined")
    );
}

/// The attack: automation holding a token starts a run and answers its
/// asks itself, so no person ever decides. A token with `approves = []`
/// cannot; the person's token that `approves = ["ci"]` sees and answers
/// them, and is recorded as who answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_may_not_approve_cannot_answer_its_own_runs_asks() {
    let serve = Serve::start();
    let run = serve.submit_as(CI_TOKEN, "asks", "6 * 7").await;
    let mut pending;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, body) = serve.get("/approvals", APPROVER_TOKEN).await;
        assert_eq!(status, 200, "{body}");
        pending = body["pending"].as_array().cloned().unwrap_or_default();
        if !pending.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ci's ask never reached its approver"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = pending[0]["id"].as_str().unwrap().to_string();
    assert_eq!(pending[0]["run"], run.as_str());
    assert_eq!(pending[0]["owner"], "ci");
    // ci sees none of its asks, and its answer is refused as for no ask.
    let (status, mine) = serve.get("/approvals", CI_TOKEN).await;
    assert_eq!((status, &mine["pending"]), (200, &json!([])), "{mine}");
    let (status, body) = serve
        .post(
            &format!("/approvals/{id}"),
            CI_TOKEN,
            r#"{"answer":"once"}"#,
        )
        .await;
    assert_eq!(status, 404, "{body}");
    // alice approves only her own.
    let (status, _) = serve
        .post(&format!("/approvals/{id}"), TOKEN, r#"{"answer":"once"}"#)
        .await;
    assert_eq!(status, 404);
    // The approver answers; the run goes on, the log says who.
    let (status, body) = serve
        .post(
            &format!("/approvals/{id}"),
            APPROVER_TOKEN,
            r#"{"answer":"once"}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let view = loop {
        let (_, view) = serve.get(&format!("/runs/{run}"), CI_TOKEN).await;
        if view.get("finished").is_some() {
            break view;
        }
        assert!(Instant::now() < deadline, "{run} did not end: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(view["status"], "succeeded", "{view}");
    let text = serve
        .http
        .get(format!("{}/runs/{run}/audit", serve.base))
        .bearer_auth(CI_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("approved by a person (approver), once"),
        "who answered is not recorded: {text}"
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

// MCP elicitation: the client's person answers asks of `warden mcp`.

/// `calc` asks on every call; `word_count` never does.
fn mcp_policy(timeout: &str) -> String {
    format!(
        "[tools.calc]\ncomponent = \"builtin:calc\"\ndecision = \"ask\"\n\n[tools.word_count]\ncomponent = \"builtin:text\"\n\n[approvals]\ntimeout = \"{timeout}\"\n"
    )
}

#[test]
fn mcp_elicitation_with_the_official_sdk_lets_the_clients_person_decide() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, mcp_policy("10m")).unwrap();
    let audit = dir.path().join("audit.jsonl");
    let python = std::env::var_os("WARDEN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/venv/bin/python"));
    assert!(python.exists(), "run `make setup` for the MCP SDK");
    // once, deny, decline, then "for the run": the fifth call is not asked
    // (the client's callback would fail: it has no answer left).
    let out = Command::new(python)
        .arg(repo().join("tests/mcp/elicit_client.py"))
        .arg(env!("CARGO_BIN_EXE_warden"))
        .arg(&policy)
        .arg(&audit)
        .args(["once", "deny", "decline", "run", "-"])
        .env("WARDEN_CACHE_DIR", cache_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let asked: Vec<&Value> = seen.iter().filter(|s| s["what"] == "asked").collect();
    let calls: Vec<&Value> = seen.iter().filter(|s| s["what"] == "call").collect();
    assert_eq!(asked.len(), 4, "{stdout}");
    assert_eq!(calls.len(), 5, "{stdout}");
    let message = asked[0]["message"].as_str().unwrap();
    assert!(message.contains("the tool \"calc\""), "{message}");
    assert!(message.contains("rule: tools.calc"), "{message}");
    assert!(
        message.contains(r#"value "expression" = "1 * 7": it appears nowhere"#),
        "{message}"
    );
    assert_eq!(
        asked[0]["schema"]["properties"]["answer"]["enum"],
        json!(["once", "run", "deny"])
    );
    assert_eq!(calls[0]["text"], "7");
    assert_eq!(calls[1]["is_error"], true);
    assert!(
        calls[1]["text"]
            .as_str()
            .unwrap()
            .contains("refused this call"),
        "{stdout}"
    );
    assert_eq!(calls[2]["is_error"], true);
    assert_eq!(calls[3]["text"], "28");
    assert_eq!(calls[4]["text"], "35");
    let by: Vec<String> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let r: Value = serde_json::from_str(l).ok()?;
            Some(r["data"]["approved_by"].as_str()?.to_string())
        })
        .collect();
    assert_eq!(by.len(), 3, "{by:?}");
    assert!(
        by[0].starts_with("a person (via the MCP client `"),
        "{by:?}"
    );
    assert!(by[0].ends_with("), once"), "{by:?}");
    assert!(by[1].ends_with("), for the rest of the run"), "{by:?}");
}

/// `warden mcp` over stdio, spoken to line by line.
struct Mcp {
    child: Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<Value>,
    _dir: tempfile::TempDir,
}

impl Mcp {
    fn start(policy: &str, args: &[&str]) -> Mcp {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
            .arg("mcp")
            .arg("--policy")
            .arg(dir.path().join("policy.toml"))
            .arg("--audit")
            .arg(dir.path().join("audit.jsonl"))
            .args(args)
            .env("WARDEN_CACHE_DIR", cache_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(value) = serde_json::from_str(&line) else {
                    break;
                };
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Mcp {
            child,
            stdin,
            lines,
            _dir: dir,
        }
    }

    fn send(&mut self, message: Value) {
        use std::io::Write;
        let mut line = serde_json::to_vec(&message).unwrap();
        line.push(b'\n');
        self.stdin.write_all(&line).unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next message (within 30 s).
    fn next(&self) -> Value {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .expect("warden mcp sent nothing")
    }

    /// The next message with `id` (skipping notifications).
    fn answer_to(&self, id: Value) -> Value {
        loop {
            let message = self.next();
            if message["id"] == id && message.get("method").is_none() {
                return message;
            }
        }
    }

    /// The next `elicitation/create` request.
    fn elicitation(&self) -> Value {
        loop {
            let message = self.next();
            if message["method"] == "elicitation/create" {
                return message;
            }
        }
    }

    fn initialize(&mut self, capabilities: Value) {
        self.send(
            json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": capabilities,
            "clientInfo": { "name": "raw-client", "version": "1" } } }),
        );
        self.answer_to(json!(0));
        self.send(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }));
    }

    fn call(&mut self, id: u64, tool: &str, arguments: Value) {
        self.send(json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": { "name": tool, "arguments": arguments } }));
    }
}

impl Drop for Mcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn result_text(answer: &Value) -> String {
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn mcp_elicitation_takes_only_a_well_formed_answer_to_its_own_request() {
    // One call at a time and no queue: the answer to an ask must still be
    // read while the only slot is held by the call waiting for it.
    let mut mcp = Mcp::start(&mcp_policy("60s"), &["--concurrency", "1", "--queue", "0"]);
    mcp.initialize(json!({ "elicitation": {} }));
    let malformed = [
        json!({ "action": "accept", "content": { "answer": "yes" } }),
        json!({ "action": "accept", "content": { "answer": ["once"] } }),
        json!({ "action": "accept" }),
        json!({ "action": "ACCEPT", "content": { "answer": "once" } }),
        json!("accept"),
    ];
    for (n, bad) in malformed.iter().enumerate() {
        let id = 10 + n as u64;
        mcp.call(id, "calc", json!({ "expression": "1 + 1" }));
        let request = mcp.elicitation();
        // An answer to an id warden never sent changes nothing.
        mcp.send(json!({ "jsonrpc": "2.0", "id": "warden-elicit-999", "result": { "action": "accept", "content": { "answer": "once" } } }));
        mcp.send(json!({ "jsonrpc": "2.0", "id": request["id"], "result": bad }));
        // A second answer to the same id is not taken either.
        mcp.send(json!({ "jsonrpc": "2.0", "id": request["id"], "result": { "action": "accept", "content": { "answer": "once" } } }));
        let answer = mcp.answer_to(json!(id));
        assert_eq!(answer["result"]["isError"], true, "{bad}: {answer}");
        let text = result_text(&answer);
        assert!(
            text.contains("none was given: the MCP client's answer to elicitation/create"),
            "{bad}: {text}"
        );
    }
    // A JSON-RPC error from the client: refused, its message quoted.
    mcp.call(20, "calc", json!({ "expression": "2 + 2" }));
    let request = mcp.elicitation();
    mcp.send(json!({ "jsonrpc": "2.0", "id": request["id"], "error": { "code": -1, "message": "no person here" } }));
    let text = result_text(&mcp.answer_to(json!(20)));
    assert!(
        text.contains("the MCP client refused to ask its person: no person here"),
        "{text}"
    );
    // And a well-formed answer is taken.
    mcp.call(21, "calc", json!({ "expression": "3 + 3" }));
    let request = mcp.elicitation();
    mcp.send(json!({ "jsonrpc": "2.0", "id": request["id"], "result": { "action": "accept", "content": { "answer": "once" } } }));
    assert_eq!(result_text(&mcp.answer_to(json!(21))), "6");
}

#[test]
fn an_mcp_client_that_never_answers_stalls_only_the_call_it_was_asked_about() {
    let mut mcp = Mcp::start(&mcp_policy("2s"), &["--concurrency", "2"]);
    mcp.initialize(json!({ "elicitation": {} }));
    mcp.call(1, "calc", json!({ "expression": "1 + 1" }));
    mcp.elicitation();
    let started = Instant::now();
    // Meanwhile another call is answered at once.
    mcp.call(2, "word_count", json!({ "text": "one two" }));
    let other = mcp.answer_to(json!(2));
    assert_eq!(other["result"]["isError"], false, "{other}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the other call waited {:?}",
        started.elapsed()
    );
    let refused = mcp.answer_to(json!(1));
    let text = result_text(&refused);
    assert!(
        text.contains("nobody answered within 2s (approvals.timeout)"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn an_mcp_client_without_elicitation_is_never_asked() {
    let mut mcp = Mcp::start(&mcp_policy("60s"), &[]);
    mcp.initialize(json!({}));
    mcp.call(1, "calc", json!({ "expression": "1 + 1" }));
    let answer = mcp.answer_to(json!(1));
    let text = result_text(&answer);
    assert!(
        text.contains("needs a person's approval and none was given"),
        "{text}"
    );
    // Listing modes without `form` (warden asks only with a form) is no
    // capability either.
    let mut mcp = Mcp::start(&mcp_policy("60s"), &[]);
    mcp.initialize(json!({ "elicitation": { "url": {} } }));
    mcp.call(1, "calc", json!({ "expression": "1 + 1" }));
    let text = result_text(&mcp.answer_to(json!(1)));
    assert!(text.contains("none was given"), "{text}");
}

#[test]
fn asks_past_the_policys_max_pending_are_refused_at_once() {
    let policy = mcp_policy("60s") + "max_pending = 1\n";
    let mut mcp = Mcp::start(&policy, &["--concurrency", "4"]);
    mcp.initialize(json!({ "elicitation": {} }));
    mcp.call(1, "calc", json!({ "expression": "1 + 1" }));
    let first = mcp.elicitation();
    // The first ask waits; the second is refused without being asked.
    mcp.call(2, "calc", json!({ "expression": "2 + 2" }));
    let text = result_text(&mcp.answer_to(json!(2)));
    assert!(
        text.contains("1 asks of this run are already waiting for a person, the most the policy allows (approvals.max_pending)"),
        "{text}"
    );
    mcp.send(json!({ "jsonrpc": "2.0", "id": first["id"], "result": { "action": "accept", "content": { "answer": "once" } } }));
    assert_eq!(result_text(&mcp.answer_to(json!(1))), "2");
}
