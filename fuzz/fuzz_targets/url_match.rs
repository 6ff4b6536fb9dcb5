//! The egress URL matcher: a URL (or a bare path) and a set of `[http]`
//! rules from the same input. The text before the first NUL byte is up to
//! eight rule patterns, one a line (fixed rules with literal prefixes are
//! always added after them); the rest is the URL. A rest starting with `/`
//! or `\` is a path on `https://example.com`, normalized directly as well.
//!
//! Asserted, beyond not panicking:
//! - normalizing is idempotent: the path that is sent normalizes to itself;
//! - the sent path has the shape the matcher relies on (no dot segment, no
//!   `\`, no empty segment, canonical escapes, no escaped escape);
//! - a rule `scheme://host/PREFIX/**` with a literal prefix allows a path
//!   only if a server resolves it under `PREFIX`, whether the server
//!   decodes escapes once or twice before resolving dot segments and
//!   dropping `;` parameters;
//! - the decision on a URL equals the decision on its normalized form, and
//!   does not change with the case of the scheme and host.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use warden::capability::http::{normalize_path, target};
use warden::policy::{Decision, HttpTarget, Policy, Request};

/// Rules with literal prefixes, present in every policy.
const FIXED: &[&str] = &[
    "https://example.com/pub/**",
    "https://example.com/a/b/**",
    "http://*.example.com/api/v1/**",
    "https://[::1]:8443/x/**",
];

fn policy_text(rules: &[&str]) -> String {
    let allow: Vec<String> = rules
        .iter()
        .map(|r| serde_json::to_string(r).unwrap_or_default())
        .collect();
    format!(
        "[tools.t]\ncomponent = \"builtin:fetch\"\nhttp = {{ allow = [{}], methods = [\"GET\"] }}\n",
        allow.join(", ")
    )
}

fn fixed_policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        Policy::parse("fuzz.toml", &policy_text(FIXED)).expect("the fixed rules parse")
    })
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// Percent-decode once, leaving invalid escapes as they are.
fn decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Where a lenient server resolves `path`: escapes decoded `decodes`
/// times, `\` read as `/`, `;parameters` dropped from each segment (as Java
/// servers do), empty and `.` segments skipped, `..` removed (clamped at
/// the root). Written independently of warden's normalizer.
fn server_view(path: &str, decodes: usize) -> String {
    let mut bytes = path.as_bytes().to_vec();
    for _ in 0..decodes {
        bytes = decode(&bytes);
    }
    let text = String::from_utf8_lossy(&bytes).replace('\\', "/");
    let mut kept: Vec<&str> = Vec::new();
    for segment in text.split('/') {
        let stem = segment.split(';').next().unwrap_or(segment);
        match stem {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            other => kept.push(other),
        }
    }
    format!("/{}", kept.join("/"))
}

/// The shape of a normalized path the matcher relies on.
fn assert_normalized_shape(raw: &str, path: &str) {
    assert!(
        path.starts_with('/'),
        "{raw:?} -> {path:?}: no leading slash"
    );
    assert!(
        !path.contains('\\'),
        "{raw:?} -> {path:?}: a backslash is left"
    );
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        assert!(
            !segment.is_empty() || last,
            "{raw:?} -> {path:?}: an empty segment"
        );
        let stem = segment.split(';').next().unwrap_or(segment);
        let stem = stem.split("%3B").next().unwrap_or(stem);
        assert!(
            !matches!(stem, "." | ".."),
            "{raw:?} -> {path:?}: a dot segment"
        );
    }
    let bytes = path.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b != b'%' {
            continue;
        }
        let (Some(h), Some(l)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
            panic!("{raw:?} -> {path:?}: a truncated escape");
        };
        assert!(
            h.is_ascii_hexdigit()
                && l.is_ascii_hexdigit()
                && !h.is_ascii_lowercase()
                && !l.is_ascii_lowercase(),
            "{raw:?} -> {path:?}: an escape not in uppercase hex"
        );
        let byte = hex(*h).unwrap_or(0) * 16 + hex(*l).unwrap_or(0);
        assert!(
            !(byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')),
            "{raw:?} -> {path:?}: an escaped unreserved character"
        );
        if byte == b'%' {
            let next = (bytes.get(i + 3), bytes.get(i + 4));
            assert!(
                !matches!(next, (Some(a), Some(b)) if a.is_ascii_hexdigit() && b.is_ascii_hexdigit()),
                "{raw:?} -> {path:?}: an escaped escape (a server that decodes twice reads another path)"
            );
        }
    }
    assert!(
        std::str::from_utf8(&decode(bytes)).is_ok(),
        "{raw:?} -> {path:?}: escapes that are not UTF-8"
    );
}

/// The literal prefix of a rule path `PREFIX/**`, if it has one a server
/// view can be compared with.
fn literal_prefix(rule_path: &str) -> Option<&str> {
    let prefix = rule_path.strip_suffix("/**")?;
    let plain = !prefix.is_empty()
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'.' | b'_' | b'~'));
    (plain && normalize_path(prefix).as_deref() == Ok(prefix)).then_some(prefix)
}

fn decide(policy: &Policy, target: &HttpTarget) -> Decision {
    policy.decide(
        &Request::Http {
            tool: Some("t"),
            method: "GET",
            target,
        },
        &Default::default(),
    )
}

/// Every invariant of one normalized target.
fn check_target(policy: &Policy, raw: &str, target: &HttpTarget) {
    let path = &target.path;
    assert_normalized_shape(raw, path);
    assert_eq!(
        normalize_path(path).as_deref(),
        Ok(path.as_str()),
        "normalizing {raw:?} is not idempotent"
    );
    let decision = decide(policy, target);
    let Some((index, rule)) = policy.http_rule(Some("t"), target) else {
        assert!(
            matches!(decision, Decision::Deny { .. }),
            "{raw:?}: allowed with no matching rule"
        );
        return;
    };
    assert!(
        matches!(&decision, Decision::Allow { rule } if rule.to_string().ends_with(&format!("allow[{index}]"))),
        "{raw:?}: rule {index} matches but the decision is {decision:?}"
    );
    if let Some(prefix) = literal_prefix(&rule.path) {
        for decodes in 1..=2 {
            let view = server_view(path, decodes);
            assert!(
                view == prefix || view.starts_with(&format!("{prefix}/")),
                "{raw:?} is sent as {path:?}, allowed by `{}`, but a server decoding {decodes}x resolves it to {view:?}",
                rule.text
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == 0);
    let (rules_text, url) = match split {
        Some(at) => (
            String::from_utf8_lossy(&data[..at]).into_owned(),
            &data[at + 1..],
        ),
        None => (String::new(), data),
    };
    let url = String::from_utf8_lossy(url);
    let rules: Vec<&str> = rules_text
        .lines()
        .take(8)
        .chain(FIXED.iter().copied())
        .collect();
    let own;
    let policy = if rules.len() == FIXED.len() {
        fixed_policy()
    } else {
        match Policy::parse("fuzz.toml", &policy_text(&rules)) {
            Ok(policy) => {
                own = policy;
                &own
            }
            Err(_) => fixed_policy(),
        }
    };

    // A bare path: normalized directly, then decided on example.com.
    if url.starts_with(['/', '\\']) {
        if let Ok(path) = normalize_path(&url) {
            let target = HttpTarget {
                scheme: "https".into(),
                host: "example.com".into(),
                port: 443,
                path,
            };
            check_target(policy, &url, &target);
        }
    }
    let full = if url.starts_with(['/', '\\']) {
        format!("https://example.com{url}")
    } else {
        url.into_owned()
    };
    let Ok(uri) = full.parse::<http::Uri>() else {
        return;
    };
    let Ok(parsed) = target(&uri) else {
        return;
    };
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        panic!("{full:?}: a URL with userinfo was accepted");
    }
    check_target(policy, &full, &parsed);
    // The normalized URL is a fixed point, so it is decided the same.
    let again = format!(
        "{}://{}:{}{}",
        parsed.scheme, parsed.host, parsed.port, parsed.path
    );
    let reparsed = again
        .parse::<http::Uri>()
        .map_err(|e| e.to_string())
        .and_then(|uri| target(&uri));
    assert_eq!(
        reparsed.as_ref(),
        Ok(&parsed),
        "{full:?} normalizes to {again:?}, which does not"
    );
    if let Ok(reparsed) = &reparsed {
        assert_eq!(decide(policy, reparsed), decide(policy, &parsed));
    }
    // Case of scheme and host does not matter.
    if let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) {
        let upper = format!(
            "{}://{}{}",
            scheme.to_ascii_uppercase(),
            authority.as_str().to_ascii_uppercase(),
            uri.path_and_query().map_or("", |p| p.as_str())
        );
        if let Ok(upper_uri) = upper.parse::<http::Uri>() {
            let upper_target = target(&upper_uri);
            assert_eq!(
                upper_target.as_ref(),
                Ok(&parsed),
                "{full:?} and {upper:?} differ"
            );
        }
    }
});
