//! A readable transcript of a run, rendered from its audit records as they
//! are written: the model's turns, each tool call with its decision and
//! rule, limits that stopped a guest, and the answer.
//!
//! Everything a guest or model wrote is shown with control characters
//! escaped, and guest stdout/stderr is never echoed (only counted), so a
//! guest cannot paint text on the terminal that looks like warden's own.

use crate::audit::{AuditSink, Event, Kind, Outcome, Record};
use crate::policy::Verdict;
use serde_json::Value;
use std::io::{self, Write};

/// Renders audit records for people.
pub struct Transcript<W> {
    out: W,
    /// Arguments of allowed tool calls whose outcome is pending.
    pending: Vec<(String, String)>,
    counts: Counts,
}

/// What a transcript has seen, for the closing summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Model calls allowed.
    pub model_calls: u32,
    /// Tool calls allowed.
    pub tool_calls: u32,
    /// Requests refused.
    pub denied: u32,
    /// Input and output tokens reported.
    pub tokens: (u64, u64),
}

impl<W: Write + Send> Transcript<W> {
    /// A transcript written to `out`.
    pub fn new(out: W) -> Self {
        Transcript {
            out,
            pending: Vec::new(),
            counts: Counts::default(),
        }
    }

    fn render(&mut self, r: &Record) -> io::Result<()> {
        let data = r.data.as_ref().unwrap_or(&Value::Null);
        match (r.kind, r.event) {
            (Kind::Run, Event::Decision) if r.subject == "tools" => {
                writeln!(self.out, "  tools   {}", clean(&r.detail))?;
            }
            (Kind::Run, Event::Decision) if r.decision == Verdict::Allow => {
                writeln!(self.out, "warden run {}", r.run)?;
                writeln!(self.out, "  agent   {}", str_at(data, &["agent", "source"]))?;
                writeln!(self.out, "  policy  {}", str_at(data, &["policy", "file"]))?;
                writeln!(self.out, "  model   {}", str_at(data, &["model"]))?;
                writeln!(
                    self.out,
                    "  task    {}",
                    indent(&clean(str_at(data, &["task"])), 10)
                )?;
            }
            (Kind::Run, Event::Decision) => {
                writeln!(
                    self.out,
                    "[stop]  {}: {} ({})",
                    r.subject,
                    clean(&r.detail),
                    r.rule
                )?;
            }
            (Kind::Run, Event::Outcome) => {
                writeln!(self.out)?;
                match r.outcome {
                    Some(Outcome::Ok) => {
                        writeln!(self.out, "answer:\n{}", clean(str_at(data, &["answer"])))?
                    }
                    _ => writeln!(self.out, "no answer: {}", clean(&r.detail))?,
                }
                let c = self.counts;
                writeln!(
                    self.out,
                    "\n{} model call(s), {} tool call(s), {} refused; {} tokens in, {} out; {} ms",
                    c.model_calls,
                    c.tool_calls,
                    c.denied,
                    c.tokens.0,
                    c.tokens.1,
                    data.get("elapsed_ms").and_then(Value::as_u64).unwrap_or(0)
                )?;
                self.summary(data)?;
            }
            (Kind::Model, Event::Decision) => {
                if r.decision == Verdict::Allow {
                    self.counts.model_calls += 1;
                }
                let mut removed = Vec::new();
                if let Some(secrets) = data["secrets_redacted"].as_object() {
                    for (name, count) in secrets {
                        removed.push(format!("secret {name} x{}", count.as_u64().unwrap_or(0)));
                    }
                }
                if let Some(n) = data["redactions"].as_u64().filter(|n| *n > 0) {
                    removed.push(format!("{n} match(es) of [model] redact"));
                }
                if !removed.is_empty() {
                    writeln!(
                        self.out,
                        "[redact] removed from the prompt before it left: {}",
                        clean(&removed.join(", "))
                    )?;
                }
            }
            (Kind::Model, Event::Outcome) => match r.outcome {
                Some(Outcome::Ok) => {
                    let usage = &data["usage"];
                    let input = usage["input_tokens"].as_u64().unwrap_or(0);
                    let output = usage["output_tokens"].as_u64().unwrap_or(0);
                    self.counts.tokens.0 += input;
                    self.counts.tokens.1 += output;
                    writeln!(
                        self.out,
                        "\n[model] {}  allow ({})  {input} tokens in, {output} out{}",
                        r.subject,
                        r.rule,
                        if data["usage_reported"] == Value::Bool(false) {
                            " (estimated)"
                        } else {
                            ""
                        }
                    )?;
                    let text = str_at(data, &["text"]);
                    if !text.is_empty() {
                        writeln!(self.out, "        \"{}\"", indent(&clean(text), 9))?;
                    }
                    self.labels(data)?;
                }
                _ => self.refusal("model", r)?,
            },
            (Kind::Tool, Event::Decision) => {
                let approved = data.get("approved_by").and_then(Value::as_str);
                if r.decision == Verdict::Allow || approved.is_some() {
                    self.counts.tool_calls += 1;
                }
                if let Some(by) = approved {
                    writeln!(self.out, "[ask]   {} approved by {}", r.subject, clean(by))?;
                }
                let args = match data.get("arguments") {
                    Some(Value::String(raw)) => raw.clone(),
                    Some(value) => value.to_string(),
                    None => String::new(),
                };
                self.pending.push((r.subject.clone(), args));
            }
            (Kind::Tool, Event::Outcome) => match r.decision {
                Verdict::Allow | Verdict::Ask
                    if !matches!(
                        r.outcome,
                        Some(Outcome::Denied | Outcome::BudgetExhausted | Outcome::Invalid)
                    ) =>
                {
                    let args = self.take_pending(&r.subject);
                    let verdict = if r.decision == Verdict::Ask {
                        "approved"
                    } else {
                        "allow"
                    };
                    writeln!(
                        self.out,
                        "[tool]  {} {}  {verdict} ({})",
                        r.subject,
                        clean(&short(&args, 120)),
                        r.rule
                    )?;
                    let arrow = if r.outcome == Some(Outcome::Ok) {
                        "->"
                    } else {
                        "-> failed:"
                    };
                    writeln!(
                        self.out,
                        "        {arrow} {}",
                        indent(&clean(&short(&r.detail, 300)), 11)
                    )?;
                }
                _ => self.refusal("tool", r)?,
            },
            (Kind::Log, Event::Outcome) if r.decision == Verdict::Allow => {
                writeln!(
                    self.out,
                    "[log]   {}: {}",
                    r.subject,
                    clean(&short(&r.detail, 300))
                )?;
            }
            (Kind::Log, Event::Outcome) => {
                writeln!(
                    self.out,
                    "[log]   {}: the log budget is spent; later lines are dropped ({})",
                    r.subject, r.rule
                )?;
            }
            (Kind::Limit, _) => {
                writeln!(
                    self.out,
                    "[limit] {} stopped: {} ({})",
                    r.subject,
                    clean(&r.detail),
                    r.rule
                )?;
            }
            (Kind::Stdio, _) => {
                let bytes = data.get("bytes").and_then(Value::as_u64).unwrap_or(0);
                writeln!(
                    self.out,
                    "[stdio] {} wrote {bytes} bytes (kept in the audit log, not shown)",
                    r.subject
                )?;
            }
            (Kind::Log, Event::Decision) => {}
            (Kind::Http, Event::Decision) => {
                let request = format!("{} {}", str_at(data, &["method"]), str_at(data, &["url"]));
                self.pending.push((format!("http:{}", r.subject), request));
            }
            (Kind::Http, Event::Outcome) => {
                let request = self.take_pending(&format!("http:{}", r.subject));
                let verdict = match (r.decision, r.outcome) {
                    (Verdict::Allow, Some(Outcome::Ok)) => "allow".to_string(),
                    (Verdict::Allow, _) => "allow, then REFUSED".to_string(),
                    _ => {
                        self.counts.denied += 1;
                        "DENY".to_string()
                    }
                };
                writeln!(
                    self.out,
                    "[http]  {} {}  {verdict} ({})\n        -> {}",
                    r.subject,
                    clean(&short(&request, 160)),
                    r.rule,
                    clean(&short(&r.detail, 300))
                )?;
            }
        }
        self.out.flush()
    }

    /// Decisions by kind, budgets against their limits, labels.
    fn summary(&mut self, data: &Value) -> io::Result<()> {
        if let Some(decisions) = data["decisions"].as_object() {
            let kinds: Vec<String> = decisions
                .iter()
                .map(|(kind, verdicts)| {
                    let parts: Vec<String> = verdicts
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(verdict, n)| format!("{} {verdict}", n.as_u64().unwrap_or(0)))
                        .collect();
                    format!("{kind} {}", parts.join(" / "))
                })
                .collect();
            writeln!(self.out, "decisions: {}", kinds.join("; "))?;
        }
        if data.get("tokens").is_some() {
            let of = |key: &str| {
                data["budgets"][key]
                    .as_f64()
                    .map(|max| format!(" of {max}"))
                    .unwrap_or_default()
            };
            writeln!(
                self.out,
                "budgets: {} tokens{}, ${:.4}{}",
                data["tokens"].as_u64().unwrap_or(0),
                of("max_tokens"),
                data["cost_usd"].as_f64().unwrap_or(0.0),
                of("max_cost_usd"),
            )?;
        }
        if let Some(labels) = data["labels"].as_array().filter(|l| !l.is_empty()) {
            let names: Vec<&str> = labels.iter().filter_map(Value::as_str).collect();
            writeln!(self.out, "labels: {}", clean(&names.join(", ")))?;
        }
        Ok(())
    }

    fn labels(&mut self, data: &Value) -> io::Result<()> {
        let added: Vec<&str> = data
            .get("labels_added")
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if added.is_empty() {
            return Ok(());
        }
        writeln!(
            self.out,
            "        (the session is now labeled {})",
            clean(&added.join(", "))
        )
    }

    fn take_pending(&mut self, subject: &str) -> String {
        self.pending
            .iter()
            .position(|(name, _)| name == subject)
            .map(|i| self.pending.remove(i).1)
            .unwrap_or_default()
    }

    fn refusal(&mut self, what: &str, r: &Record) -> io::Result<()> {
        if r.decision != Verdict::Allow {
            self.counts.denied += 1;
        }
        let label = match r.outcome {
            _ if r.decision == Verdict::Ask => "ASK",
            Some(Outcome::BudgetExhausted) => "BUDGET",
            Some(Outcome::Invalid) => "INVALID",
            Some(Outcome::Failed) => "FAILED",
            _ => "DENY",
        };
        let args = if what == "tool" {
            self.take_pending(&r.subject)
        } else {
            String::new()
        };
        let pad = " ".repeat(6usize.saturating_sub(what.len()));
        writeln!(
            self.out,
            "[{what}]{pad}{} {}  {label} ({})",
            r.subject,
            clean(&short(&args, 120)),
            r.rule
        )?;
        writeln!(self.out, "        -> {}", clean(&r.detail))
    }
}

impl<W: Write + Send> AuditSink for Transcript<W> {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        self.render(record)
    }
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Escape what could make guest text display as something it is not,
/// except newlines and tabs: control characters (ANSI escapes, carriage
/// returns, ...), bidi controls and other invisible format characters
/// (see [`hides`]). Each is written as `\u{202e}`.
pub fn clean(text: &str) -> String {
    escape(text, |c| c == '\n' || c == '\t')
}

/// [`clean`] for text quoted on one line: newlines and tabs are escaped
/// too.
pub fn clean_line(text: &str) -> String {
    escape(text, |_| false)
}

fn escape(text: &str, keep: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if keep(c) || !hides(c) {
            out.push(c);
        } else {
            out.extend(c.escape_unicode());
        }
    }
    out
}

/// Whether `c` may not reach a person's terminal as itself: it moves the
/// cursor, reorders or hides the text around it, or is invisible. Control
/// characters (Cc); format characters (Cf: bidi embeddings, overrides and
/// isolates, U+200E/U+200F, U+061C, zero-width space and joiners, U+2060
/// to U+2064, U+FEFF, soft hyphen, U+180E, tags); line and paragraph
/// separators (Zl, Zp); and the invisible fillers that are letters or
/// marks by category (Hangul fillers, U+034F, U+17B4/U+17B5) or not yet
/// assigned in the tag plane. Variation selectors stay: they only pick a
/// glyph (an emoji's style).
pub fn hides(c: char) -> bool {
    use unicode_general_category::{GeneralCategory, get_general_category};
    matches!(
        get_general_category(c),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    ) || matches!(
        c,
        '\u{34f}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}' | '\u{3164}' | '\u{ffa0}'
    ) || (('\u{e0000}'..='\u{e0fff}').contains(&c) && !('\u{e0100}'..='\u{e01ef}').contains(&c))
}

fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max).collect();
        s.push('…');
        s
    }
}

fn indent(text: &str, width: usize) -> String {
    let pad = " ".repeat(width);
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            if i == 0 || line.is_empty() {
                line.to_string()
            } else {
                format!("{pad}{line}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_reach_the_terminal() {
        assert_eq!(
            clean("ok\x1b[2J\rdone\nnext"),
            "ok\\u{1b}[2J\\u{d}done\nnext"
        );
        assert_eq!(clean_line("a\nb\tc"), "a\\u{a}b\\u{9}c");
    }

    #[test]
    fn a_reordered_amount_is_shown_with_its_bidi_controls_escaped() {
        // Displayed as it is, this reads "pay $00001 to alice": U+202E
        // reverses "10000", so the terminal shows one for ten thousand.
        let spoofed = "pay $\u{202e}10000\u{202c} to alice";
        assert_eq!(clean(spoofed), "pay $\\u{202e}10000\\u{202c} to alice");
        let arguments = serde_json::json!({ "amount": spoofed }).to_string();
        assert!(arguments.contains('\u{202e}'), "JSON keeps it as it is");
        assert!(!clean(&arguments).contains('\u{202e}'));
        for hidden in [
            '\u{202a}',
            '\u{202b}',
            '\u{202c}',
            '\u{202d}',
            '\u{202e}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{200e}',
            '\u{200f}',
            '\u{61c}',
            '\u{200b}',
            '\u{200c}',
            '\u{200d}',
            '\u{2060}',
            '\u{2061}',
            '\u{2062}',
            '\u{2063}',
            '\u{2064}',
            '\u{feff}',
            '\u{ad}',
            '\u{180e}',
            '\u{e0001}',
            '\u{e0041}',
            '\u{e007f}',
            '\u{2028}',
            '\u{2029}',
            '\u{3164}',
            '\u{115f}',
            '\u{34f}',
            '\u{85}',
            '\u{9b}',
            '\u{7f}',
        ] {
            let shown = clean(&format!("a{hidden}b"));
            assert_eq!(
                shown,
                format!("a{}b", hidden.escape_unicode()),
                "{hidden:?}"
            );
        }
        // What people write stays as written: accents, scripts, emoji with
        // their variation selectors, right-to-left text itself.
        for kept in [
            "café",
            "日本語",
            "שלום",
            "مرحبا",
            "❤\u{fe0f}",
            "👍🏽",
            "a\tb\nc",
        ] {
            assert_eq!(clean(kept), kept);
        }
    }
}
