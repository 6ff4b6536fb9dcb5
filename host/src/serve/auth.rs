//! Who is calling: bearer tokens, each known only by its SHA-256 hash, with
//! the policies it may use and its rate and concurrency limits.
//!
//! A presented token is hashed once and compared with every known hash in
//! constant time (no early exit on the first differing byte, and no early
//! exit on the first matching entry), so timing says nothing of how close a
//! guess was. The file never holds a token, only hashes: reading it does
//! not let anyone call the server. Nothing here grows with what clients
//! send: the buckets are one per configured token.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most tokens a file may hold.
pub const MAX_TOKENS: usize = 10_000;
/// The largest tokens file read.
pub const MAX_TOKENS_FILE: u64 = 4 << 20;
/// The longest `Authorization` header value looked at.
const MAX_PRESENTED: usize = 1024;

/// One configured token.
#[derive(Debug, Clone)]
pub struct Token {
    /// Who it is (runs are listed, and limited, per name).
    pub name: String,
    sha256: [u8; 32],
    /// Policy names it may run; `*` means every policy.
    pub policies: Vec<String>,
    /// Requests per second (every request of the token counts); the burst
    /// is one second's worth, at least one.
    pub rate: f64,
    /// Most runs of this token live at once.
    pub max_runs: usize,
    /// Whose runs' asks it sees on `/approvals` and may answer: token
    /// names, `*` for every token's. By default its own name only; a token
    /// held by automation gets `[]`, so that what it starts waits for a
    /// person holding another token.
    pub approves: Vec<String>,
}

impl Token {
    /// Whether this token may run policy `name`.
    pub fn may_use(&self, name: &str) -> bool {
        self.policies.iter().any(|p| p == "*" || p == name)
    }

    /// Whether this token may see and answer the asks of runs of `owner`.
    pub fn may_answer(&self, owner: &str) -> bool {
        self.approves.iter().any(|a| a == "*" || a == owner)
    }
}

/// The caller of a request, once authenticated: handlers (this module's and
/// any mounted with [`super::router_with`]) read it as
/// `axum::Extension<Caller>`.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token that authenticated the request.
    pub token: Arc<Token>,
}

impl Caller {
    /// The token's name: runs belong to it.
    pub fn name(&self) -> &str {
        &self.token.name
    }
}

/// The configured tokens.
pub struct Tokens {
    tokens: Vec<Arc<Token>>,
    /// `--insecure-no-auth`: every request is this caller.
    anonymous: Option<Arc<Token>>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Why a request is refused before it is handled.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// No usable `Authorization: Bearer` header, or an unknown token.
    Unauthenticated(&'static str),
    /// The token's rate is spent: retry after `wait`.
    RateLimited {
        /// How long until a request would pass.
        wait: Duration,
        /// The token's rate, requests per second.
        rate: f64,
    },
}

#[derive(Debug)]
struct Bucket {
    level: f64,
    at: Instant,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    token: Vec<RawToken>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    sha256: String,
    policies: Vec<String>,
    #[serde(default = "default_rate")]
    rate: f64,
    #[serde(default = "default_max_runs")]
    max_runs: usize,
    #[serde(default)]
    approves: Option<Vec<String>>,
}

fn default_rate() -> f64 {
    10.0
}
fn default_max_runs() -> usize {
    16
}

impl Tokens {
    /// Parse a tokens file (TOML, or JSON when it starts with `{`) named
    /// `name` in errors:
    ///
    /// ```toml
    /// [[token]]
    /// name = "ci"
    /// sha256 = "…"            # warden serve hash-token
    /// policies = ["demo"]      # or ["*"]
    /// rate = 10                # requests per second (default 10)
    /// max_runs = 16            # live at once (default 16)
    /// approves = []            # whose asks it answers (default: its own)
    /// ```
    pub fn parse(name: &str, text: &str) -> Result<Self, String> {
        let raw: RawFile = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| format!("{name}: {e}"))?
        } else {
            crate::diagnostic::parse_toml(name, text).map_err(|e| e.to_string())?
        };
        if raw.token.is_empty() {
            return Err(format!(
                "{name}: no tokens: add a `[[token]]` with `name`, `sha256` (from `warden serve hash-token`) and `policies`"
            ));
        }
        if raw.token.len() > MAX_TOKENS {
            return Err(format!(
                "{name}: {} tokens, more than {MAX_TOKENS}",
                raw.token.len()
            ));
        }
        let mut tokens: Vec<Arc<Token>> = Vec::with_capacity(raw.token.len());
        for (i, t) in raw.token.into_iter().enumerate() {
            let at = format!("{name}: token {} (`{}`)", i + 1, short(&t.name));
            if t.name.is_empty() || t.name.len() > 64 || t.name.chars().any(char::is_control) {
                return Err(format!("{at}: `name` must be 1 to 64 printable characters"));
            }
            if tokens.iter().any(|o| o.name == t.name) {
                return Err(format!("{at}: another token has the same `name`"));
            }
            let mut sha256 = [0u8; 32];
            if hex::decode_to_slice(t.sha256.trim(), &mut sha256).is_err() {
                return Err(format!(
                    "{at}: `sha256` is not 64 hex digits: put the hash `warden serve hash-token` prints, never the token itself"
                ));
            }
            if tokens.iter().any(|o| o.sha256 == sha256) {
                return Err(format!("{at}: another token has the same `sha256`"));
            }
            if t.policies.is_empty() {
                return Err(format!(
                    "{at}: `policies` is empty: name the policies it may run, or `[\"*\"]` for all"
                ));
            }
            if !(t.rate.is_finite() && t.rate > 0.0) {
                return Err(format!(
                    "{at}: `rate` must be a number of requests per second above 0"
                ));
            }
            if t.max_runs == 0 {
                return Err(format!("{at}: `max_runs` must be at least 1"));
            }
            let approves = t.approves.unwrap_or_else(|| vec![t.name.clone()]);
            if approves.len() > MAX_TOKENS {
                return Err(format!(
                    "{at}: `approves` names more than {MAX_TOKENS} tokens"
                ));
            }
            tokens.push(Arc::new(Token {
                name: t.name,
                sha256,
                policies: t.policies,
                rate: t.rate,
                max_runs: t.max_runs,
                approves,
            }));
        }
        // A name in `approves` that is no token is a typo that would leave
        // asks with nobody to answer them.
        for (i, t) in tokens.iter().enumerate() {
            if let Some(unknown) = t
                .approves
                .iter()
                .find(|a| *a != "*" && !tokens.iter().any(|o| o.name == **a))
            {
                return Err(format!(
                    "{name}: token {} (`{}`): `approves` names `{}`, which is no token's `name`: name tokens whose runs' asks it answers, or `[\"*\"]` for all",
                    i + 1,
                    short(&t.name),
                    short(unknown)
                ));
            }
        }
        Ok(Tokens {
            tokens,
            anonymous: None,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Read a tokens file.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = crate::load::read_text(path, MAX_TOKENS_FILE)
            .map_err(|e| format!("cannot read the tokens file {}: {e}", path.display()))?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// No authentication (`--insecure-no-auth`, loopback only): every
    /// request is the caller `anonymous`, which may run every policy, at
    /// `rate` requests per second and `max_runs` at once.
    pub fn insecure(rate: f64, max_runs: usize) -> Self {
        Tokens {
            tokens: Vec::new(),
            anonymous: Some(Arc::new(Token {
                name: "anonymous".into(),
                sha256: [0; 32],
                policies: vec!["*".into()],
                rate,
                max_runs: max_runs.max(1),
                approves: vec!["anonymous".into()],
            })),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether requests are not authenticated.
    pub fn is_insecure(&self) -> bool {
        self.anonymous.is_some()
    }

    /// How many tokens are configured.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// The names of the callers there can be.
    pub fn names(&self) -> Vec<String> {
        self.tokens
            .iter()
            .chain(self.anonymous.iter())
            .map(|t| t.name.clone())
            .collect()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.anonymous.is_none()
    }

    /// The caller of a request with this `Authorization` header value, if
    /// its token is known and within its rate.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        now: Instant,
    ) -> Result<Caller, Refusal> {
        let token = match &self.anonymous {
            Some(anonymous) => anonymous.clone(),
            None => self.find(authorization)?,
        };
        self.spend(&token, now)?;
        Ok(Caller { token })
    }

    fn find(&self, authorization: Option<&[u8]>) -> Result<Arc<Token>, Refusal> {
        let Some(value) = authorization else {
            return Err(Refusal::Unauthenticated(
                "no credentials: send `Authorization: Bearer TOKEN`",
            ));
        };
        if value.len() > MAX_PRESENTED {
            return Err(Refusal::Unauthenticated(
                "the Authorization header is too long",
            ));
        }
        let presented = match value.strip_prefix(b"Bearer ") {
            Some(token) => token.trim_ascii(),
            None => {
                return Err(Refusal::Unauthenticated(
                    "the Authorization header is not `Bearer TOKEN`",
                ));
            }
        };
        let hash: [u8; 32] = Sha256::digest(presented).into();
        // Every entry is compared, whatever matched: the time taken does
        // not depend on which entry (if any) holds the token.
        let mut found: Option<&Arc<Token>> = None;
        for token in &self.tokens {
            if constant_time_eq(&token.sha256, &hash) {
                found = Some(token);
            }
        }
        found
            .cloned()
            .ok_or(Refusal::Unauthenticated("unknown token"))
    }

    /// Take one request from the token's bucket.
    fn spend(&self, token: &Token, now: Instant) -> Result<(), Refusal> {
        let burst = token.rate.max(1.0);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(token.name.clone()).or_insert(Bucket {
            level: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.level = (bucket.level + elapsed * token.rate).min(burst);
        bucket.at = now;
        if bucket.level >= 1.0 {
            bucket.level -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - bucket.level) / token.rate;
        Err(Refusal::RateLimited {
            wait: Duration::from_secs_f64(wait.min(3600.0)),
            rate: token.rate,
        })
    }
}

/// Whether `a` and `b` are equal, looking at every byte whatever differs.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// The hash a tokens file holds for `token` (hex SHA-256 of its bytes,
/// surrounding whitespace removed).
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

/// A new token: `wdn_` and 32 random bytes, hex (256 bits).
pub fn new_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("the OS random source failed: {e}"))?;
    Ok(format!("wdn_{}", hex::encode(bytes)))
}

fn short(text: &str) -> String {
    crate::transcript::clean(&crate::capability::brief(text, 64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(entries: &[(&str, &str, &str)]) -> String {
        entries
            .iter()
            .map(|(name, token, policies)| {
                format!(
                    "[[token]]\nname = \"{name}\"\nsha256 = \"{}\"\npolicies = {policies}\nrate = 2\nmax_runs = 1\n",
                    hash_token(token)
                )
            })
            .collect()
    }

    #[test]
    fn a_token_answers_its_own_asks_unless_approves_says_whose() {
        let text = format!(
            "{}approves = []\n{}approves = [\"ci\"]\n{}",
            file(&[("ci", "secret-ci", "[\"*\"]")]),
            file(&[("person", "secret-p", "[\"demo\"]")]),
            file(&[("solo", "secret-s", "[\"demo\"]")]),
        );
        let tokens = Tokens::parse("tokens.toml", &text).unwrap();
        let now = Instant::now();
        let who = |secret: &str| {
            tokens
                .authenticate(Some(format!("Bearer {secret}").as_bytes()), now)
                .unwrap()
                .token
        };
        assert!(!who("secret-ci").may_answer("ci"));
        assert!(who("secret-p").may_answer("ci") && !who("secret-p").may_answer("person"));
        assert!(who("secret-s").may_answer("solo") && !who("secret-s").may_answer("ci"));
        let typo = format!(
            "{}approves = [\"c1\"]\n",
            file(&[("person", "secret-p", "[\"demo\"]")])
        );
        let error = Tokens::parse("tokens.toml", &typo).err().unwrap();
        assert!(
            error.contains(
                "tokens.toml: token 1 (`person`): `approves` names `c1`, which is no token's `name`"
            ),
            "{error}"
        );
    }

    #[test]
    fn only_known_tokens_authenticate_and_the_file_holds_no_token() {
        let text = file(&[
            ("a", "secret-a", "[\"demo\"]"),
            ("b", "secret-b", "[\"*\"]"),
        ]);
        assert!(!text.contains("secret-a"));
        let tokens = Tokens::parse("tokens.toml", &text).unwrap();
        let now = Instant::now();
        let caller = tokens.authenticate(Some(b"Bearer secret-a"), now).unwrap();
        assert_eq!(caller.name(), "a");
        assert!(caller.token.may_use("demo") && !caller.token.may_use("other"));
        assert!(
            tokens
                .authenticate(Some(b"Bearer secret-b"), now)
                .unwrap()
                .token
                .may_use("x")
        );
        for bad in [
            None,
            Some(&b"Bearer secret-c"[..]),
            Some(b"secret-a"),
            Some(b"Basic c2VjcmV0LWE="),
            Some(b"Bearer "),
        ] {
            assert!(
                matches!(
                    tokens.authenticate(bad, now),
                    Err(Refusal::Unauthenticated(_))
                ),
                "{bad:?}"
            );
        }
        let long = format!("Bearer {}", "x".repeat(5000));
        assert!(tokens.authenticate(Some(long.as_bytes()), now).is_err());
    }

    #[test]
    fn a_token_past_its_rate_waits() {
        let tokens = Tokens::parse("t", &file(&[("a", "s", "[\"*\"]")])).unwrap();
        let now = Instant::now();
        assert!(tokens.authenticate(Some(b"Bearer s"), now).is_ok());
        assert!(tokens.authenticate(Some(b"Bearer s"), now).is_ok());
        let Err(Refusal::RateLimited { wait, .. }) = tokens.authenticate(Some(b"Bearer s"), now)
        else {
            panic!("the third request in the same instant passed a rate of 2/s");
        };
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(tokens.authenticate(Some(b"Bearer s"), now + wait).is_ok());
    }

    #[test]
    fn bad_files_say_what_to_fix() {
        let cases = [
            ("", "no tokens"),
            (
                "[[token]]\nname = \"a\"\nsha256 = \"secret\"\npolicies = [\"*\"]\n",
                "not 64 hex digits",
            ),
            (
                &format!(
                    "[[token]]\nname = \"a\"\nsha256 = \"{}\"\npolicies = []\n",
                    hash_token("x")
                ),
                "`policies` is empty",
            ),
            (
                &format!(
                    "[[token]]\nname = \"a\"\nsha256 = \"{}\"\npolicies = [\"*\"]\nrate = 0\n",
                    hash_token("x")
                ),
                "`rate`",
            ),
            (
                &format!(
                    "[[token]]\nname = \"a\"\nsha256 = \"{}\"\npolicies = [\"*\"]\ntoken = \"x\"\n",
                    hash_token("x")
                ),
                "unknown field",
            ),
            (
                &file(&[("a", "x", "[\"*\"]"), ("a", "y", "[\"*\"]")]),
                "same `name`",
            ),
            (
                &file(&[("a", "x", "[\"*\"]"), ("b", "x", "[\"*\"]")]),
                "same `sha256`",
            ),
        ];
        for (text, expected) in cases {
            let error = Tokens::parse("tokens.toml", text).err().unwrap_or_default();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
        let json = format!(
            "{{\"token\": [{{\"name\": \"j\", \"sha256\": \"{}\", \"policies\": [\"*\"]}}]}}",
            hash_token("t")
        );
        assert_eq!(Tokens::parse("t.json", &json).unwrap().len(), 1);
    }

    #[test]
    fn new_tokens_differ_and_hash_as_the_file_expects() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 64);
        assert_eq!(hash_token(&format!("{a}\n")), hash_token(&a));
    }
}
