//! A readable transcript of a run, rendered from its audit records as they
//! are written: the model's turns, each tool call with its decision and
//! rule, limits that stopped a guest, and the answer.
//!
//! What a person reads cannot be forged. The rule: **a line that starts
//! with `  │` quotes text from outside warden (a guest, a model, a tool, a
//! provider, the task); no line of warden's own starts that way, and every
//! line of outside text does.** Outside text reaches a person only through
//! [`field`] (after warden's words on one short line) or [`quote`] (a
//! block below them): control, bidi and invisible characters escaped,
//! every line, CR-LF and wrapped piece prefixed, no line wider than
//! [`WIDTH`] columns (so a terminal never wraps outside text onto a line of
//! its own). Names on warden's lines go through [`name`]. Guest
//! stdout/stderr is never echoed (only counted).
//!
//! Colour ([`Transcript::with_color`]) marks warden's own words only (the
//! kind of a line and the decision); outside text is never coloured, and
//! cannot colour anything: the escape character is among what [`clean`]
//! and [`quote`] escape. Machine output goes through [`json_line`], which
//! escapes the same characters inside JSON strings.

use crate::audit::{AuditSink, Event, Kind, Outcome, Record};
use crate::policy::Verdict;
use serde_json::Value;
use std::io::{self, Write};
use unicode_width::UnicodeWidthChar;

/// What starts every line of outside text, and no line of warden's.
pub const QUOTE: &str = "  │";

/// The most columns a line carrying outside text takes.
pub const WIDTH: usize = 80;

/// Said once, on the first line of a run's transcript.
pub const LEGEND: &str =
    "(lines starting with \"  │\" quote the agent, model, tools and providers)";

/// The longest name shown on one of warden's lines.
const NAME_MAX: usize = 40;

/// Renders audit records for people.
pub struct Transcript<W> {
    out: W,
    /// Arguments of allowed tool calls whose outcome is pending.
    pending: Vec<(String, String)>,
    counts: Counts,
    color: bool,
}

/// What a word of warden's is, for its colour.
#[derive(Debug, Clone, Copy)]
enum Style {
    /// The kind of a line: `[tool]`, `[model]`, `warden run`.
    Kind,
    /// An allowed request.
    Allow,
    /// A refused one, or a guest stopped.
    Deny,
    /// A request a person decides.
    Ask,
    /// Allowed, but the effect failed.
    Failed,
    /// The run's answer.
    Answer,
}

impl Style {
    /// The SGR parameters: bold, green, bold red, yellow, magenta, bold
    /// green. Every sequence a transcript writes is one of [`PALETTE`].
    fn sgr(self) -> &'static str {
        match self {
            Style::Kind => "\x1b[1m",
            Style::Allow => "\x1b[32m",
            Style::Deny => "\x1b[1;31m",
            Style::Ask => "\x1b[33m",
            Style::Failed => "\x1b[35m",
            Style::Answer => "\x1b[1;32m",
        }
    }
}

/// Every escape sequence a coloured transcript may hold: the styles and
/// the reset after each word.
pub const PALETTE: &[&str] = &[
    "\x1b[1m",
    "\x1b[32m",
    "\x1b[1;31m",
    "\x1b[33m",
    "\x1b[35m",
    "\x1b[1;32m",
    RESET,
];

const RESET: &str = "\x1b[0m";

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
            color: false,
        }
    }

    /// Colour warden's own words (kinds and decisions) when `on`; the
    /// caller decides (a terminal, `NO_COLOR`, `--color`).
    pub fn with_color(mut self, on: bool) -> Self {
        self.color = on;
        self
    }

    /// `word` (warden's own, never outside text) in `style`.
    fn paint(&self, style: Style, word: &str) -> String {
        if self.color {
            format!("{}{word}{RESET}", style.sgr())
        } else {
            word.to_string()
        }
    }

    fn render(&mut self, r: &Record) -> io::Result<()> {
        let data = r.data.as_ref().unwrap_or(&Value::Null);
        let subject = name(&r.subject);
        let rule = rule(&r.rule);
        match (r.kind, r.event) {
            (Kind::Run, Event::Decision) if r.subject == "tools" => {
                writeln!(self.out, "{}", field("  tools  ", &r.detail))?;
            }
            (Kind::Run, Event::Decision) if r.decision == Verdict::Allow => {
                writeln!(
                    self.out,
                    "{} {}  {LEGEND}",
                    self.paint(Style::Kind, "warden run"),
                    name(&r.run)
                )?;
                for (lead, path) in [
                    ("  agent  ", &["agent", "source"][..]),
                    ("  policy ", &["policy", "file"][..]),
                    ("  model  ", &["model"][..]),
                    ("  task   ", &["task"][..]),
                ] {
                    let (text, cut) = text_at(data, path);
                    writeln!(self.out, "{}", field(lead, &text))?;
                    self.cut(cut)?;
                }
            }
            (Kind::Run, Event::Decision) => {
                writeln!(
                    self.out,
                    "{}",
                    field(
                        &format!("{}  {subject} ({rule}):", self.paint(Style::Deny, "[stop]")),
                        &r.detail
                    )
                )?;
            }
            (Kind::Run, Event::Outcome) => {
                writeln!(self.out)?;
                match r.outcome {
                    Some(Outcome::Ok) => {
                        let (answer, cut) = text_at(data, &["answer"]);
                        let lead = self.paint(Style::Answer, "answer:");
                        writeln!(self.out, "{lead}\n{}", quote(&answer))?;
                        self.cut(cut)?;
                    }
                    _ => {
                        let lead = self.paint(Style::Deny, "no answer:");
                        writeln!(self.out, "{}", field(&lead, &r.detail))?
                    }
                }
                let c = self.counts;
                // How long warden took to start the agent, when the run
                // knew when the process started.
                let started = data
                    .get("first_instruction_us")
                    .and_then(Value::as_u64)
                    .map(|us| format!("; agent started {:.1} ms after warden", us as f64 / 1000.0))
                    .unwrap_or_default();
                writeln!(
                    self.out,
                    "\n{} model call(s), {} tool call(s), {} refused; {} tokens in, {} out; {} ms{started}",
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
                        "{}",
                        field(
                            &format!(
                                "{} removed from the prompt before it left:",
                                self.paint(Style::Kind, "[redact]")
                            ),
                            &removed.join(", ")
                        )
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
                        "\n{} {subject}  {} ({rule})  {input} tokens in, {output} out{}",
                        self.paint(Style::Kind, "[model]"),
                        self.paint(Style::Allow, "allow"),
                        if data["usage_reported"] == Value::Bool(false) {
                            " (estimated)"
                        } else {
                            ""
                        }
                    )?;
                    let (text, cut) = text_at(data, &["text"]);
                    if !text.is_empty() {
                        writeln!(self.out, "{}", quote(&text))?;
                    }
                    self.cut(cut)?;
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
                    writeln!(
                        self.out,
                        "{}",
                        field(
                            &format!(
                                "{}   {subject}  approved by",
                                self.paint(Style::Ask, "[ask]")
                            ),
                            by
                        )
                    )?;
                }
                let args = match data.get("arguments") {
                    Some(Value::String(raw)) => raw.clone(),
                    Some(value) if truncated(value).is_some() => {
                        format!("{}…", text_at(value, &[]).0)
                    }
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
                        self.paint(Style::Ask, "approved")
                    } else {
                        self.paint(Style::Allow, "allow")
                    };
                    self.head(
                        &format!(
                            "{}  {subject}  {verdict} ({rule})",
                            self.paint(Style::Kind, "[tool]")
                        ),
                        &args,
                        120,
                    )?;
                    let arrow = if r.outcome == Some(Outcome::Ok) {
                        "        ->".to_string()
                    } else {
                        format!("        -> {}", self.paint(Style::Failed, "failed:"))
                    };
                    writeln!(self.out, "{}", field(&arrow, &short(&r.detail, 300)))?;
                }
                _ => self.refusal("tool", r)?,
            },
            (Kind::Log, Event::Outcome) if r.decision == Verdict::Allow => {
                writeln!(
                    self.out,
                    "{}",
                    field(
                        &format!("{}   {subject}:", self.paint(Style::Kind, "[log]")),
                        &short(&r.detail, 300)
                    )
                )?;
            }
            (Kind::Log, Event::Outcome) => {
                writeln!(
                    self.out,
                    "{}   {subject}: the log budget is spent; later lines are dropped ({rule})",
                    self.paint(Style::Kind, "[log]")
                )?;
            }
            (Kind::Limit, _) => {
                writeln!(
                    self.out,
                    "{}",
                    field(
                        &format!(
                            "{} {subject} stopped ({rule}):",
                            self.paint(Style::Deny, "[limit]")
                        ),
                        &r.detail
                    )
                )?;
            }
            (Kind::Stdio, _) => {
                let bytes = data.get("bytes").and_then(Value::as_u64).unwrap_or(0);
                writeln!(
                    self.out,
                    "{} {subject} wrote {bytes} bytes (kept in the audit log, not shown)",
                    self.paint(Style::Kind, "[stdio]")
                )?;
            }
            (Kind::Log, Event::Decision) => {}
            (Kind::Plan, Event::Decision) => {}
            (Kind::Plan, Event::Outcome) if r.outcome == Some(Outcome::Ok) => {
                writeln!(
                    self.out,
                    "{}",
                    field(
                        &format!(
                            "{}  {subject}  declared ({rule}):",
                            self.paint(Style::Kind, "[plan]")
                        ),
                        &short(&r.detail, 300)
                    )
                )?;
            }
            (Kind::Plan, Event::Outcome) => self.refusal("plan", r)?,
            (Kind::Http, Event::Decision) => {
                let request = format!("{} {}", str_at(data, &["method"]), str_at(data, &["url"]));
                self.pending.push((format!("http:{}", r.subject), request));
            }
            (Kind::Http, Event::Outcome) => {
                let request = self.take_pending(&format!("http:{}", r.subject));
                let verdict = match (r.decision, r.outcome) {
                    (Verdict::Allow, Some(Outcome::Ok)) => self.paint(Style::Allow, "allow"),
                    (Verdict::Allow, _) => format!(
                        "{}, then {}",
                        self.paint(Style::Allow, "allow"),
                        self.paint(Style::Deny, "REFUSED")
                    ),
                    _ => {
                        self.counts.denied += 1;
                        self.paint(Style::Deny, "DENY")
                    }
                };
                self.head(
                    &format!(
                        "{}  {subject}  {verdict} ({rule})",
                        self.paint(Style::Kind, "[http]")
                    ),
                    &request,
                    160,
                )?;
                writeln!(self.out, "{}", field("        ->", &short(&r.detail, 300)))?;
            }
        }
        self.out.flush()
    }

    /// Says that the text just shown is the start of a longer one.
    fn cut(&mut self, cut: Option<String>) -> io::Result<()> {
        match cut {
            Some(note) => writeln!(self.out, "        ({note})"),
            None => Ok(()),
        }
    }

    /// One of warden's lines, `head`, then what it is about (`what`, cut
    /// at `max` characters) after it or quoted below it.
    fn head(&mut self, head: &str, what: &str, max: usize) -> io::Result<()> {
        if what.is_empty() {
            writeln!(self.out, "{head}")
        } else {
            writeln!(
                self.out,
                "{}",
                field(&format!("{head} "), &short(what, max))
            )
        }
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
            writeln!(self.out, "decisions: {}", clean_line(&kinds.join("; ")))?;
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
            writeln!(self.out, "{}", field("labels:", &names.join(", ")))?;
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
            "{}",
            field("        the session is now labeled", &added.join(", "))
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
            _ if r.decision == Verdict::Ask => self.paint(Style::Ask, "ASK"),
            Some(Outcome::BudgetExhausted) => self.paint(Style::Deny, "BUDGET"),
            Some(Outcome::Invalid) => self.paint(Style::Deny, "INVALID"),
            Some(Outcome::Failed) => self.paint(Style::Failed, "FAILED"),
            _ => self.paint(Style::Deny, "DENY"),
        };
        let args = if what == "tool" {
            self.take_pending(&r.subject)
        } else {
            String::new()
        };
        let pad = " ".repeat(6usize.saturating_sub(what.len()));
        self.head(
            &format!(
                "{}{pad}{}  {label} ({})",
                self.paint(Style::Kind, &format!("[{what}]")),
                name(&r.subject),
                rule(&r.rule)
            ),
            &args,
            120,
        )?;
        writeln!(self.out, "{}", field("        ->", &r.detail))
    }
}

impl<W: Write + Send> AuditSink for Transcript<W> {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        self.render(record)
    }
}

/// The text at `path`. A field the audit log bounded
/// ([`crate::audit::bound`]) gives its start, and a note of warden's own
/// saying how long the whole was.
fn text_at<'a>(value: &'a Value, path: &[&str]) -> (std::borrow::Cow<'a, str>, Option<String>) {
    let Some(at) = path.iter().try_fold(value, |v, key| v.get(key)) else {
        return ("".into(), None);
    };
    match truncated(at) {
        Some((head, bytes, sha256)) => (
            head.into(),
            Some(format!(
                "cut: {bytes} bytes in all, sha256 {}; the audit log keeps this start",
                short(&clean_line(sha256), 16)
            )),
        ),
        None => (at.as_str().unwrap_or("").into(), None),
    }
}

/// A bounded field's start, whole size and hash.
fn truncated(value: &Value) -> Option<(&str, u64, &str)> {
    if value.get("truncated") != Some(&Value::Bool(true)) {
        return None;
    }
    Some((
        value.get("head")?.as_str()?,
        value.get("bytes")?.as_u64()?,
        value.get("sha256")?.as_str()?,
    ))
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
        // Printable ASCII, the common case, needs no look-up.
        if (' '..='~').contains(&c) || keep(c) || !hides(c) {
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

/// Outside text after `lead` (warden's own words, never empty): on the
/// same line when it is one line that fits within [`WIDTH`] columns there,
/// else on the lines below as a [`quote`]d block.
pub fn field(lead: &str, text: &str) -> String {
    debug_assert!(!lead.is_empty() && !lead.starts_with(QUOTE));
    let text = text.trim_end_matches(['\n', '\r']);
    // Longer text goes below unexamined: it almost never fits, and a
    // megabyte on one line need not be escaped twice.
    if text.len() <= 4 * WIDTH && !text.contains('\n') {
        let one = clean_line(text);
        if columns(lead) + 1 + columns(&one) <= WIDTH {
            return format!("{lead} {one}");
        }
    }
    format!("{}\n{}", lead.trim_end(), quote(text))
}

/// Outside text as a block: every line starts with [`QUOTE`] and a space,
/// whatever the text holds. Lines end at `\n` (a `\r` before it is part of
/// the line end); a line wider than [`WIDTH`] is wrapped (at a space near
/// the end when there is one), each piece quoted; tabs become spaces;
/// other characters that [`hides`] are escaped; trailing line ends are
/// dropped. Empty text is one empty quoted line.
pub fn quote(text: &str) -> String {
    const ROOM: usize = WIDTH - 4;
    /// How far back a wrap looks for a space to break at.
    const BREAK: usize = 24;
    let text = text.trim_end_matches(['\n', '\r']);
    let mut out = String::with_capacity(text.len() + text.len() / 8 + 8);
    let mut push = |row: &str| {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(QUOTE);
        if !row.is_empty() {
            out.push(' ');
            out.push_str(row);
        }
    };
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let mut row = String::new();
        let mut used = 0;
        // Just after the row's last space: byte offset and column.
        let mut space: Option<(usize, usize)> = None;
        for c in line.chars() {
            // Printable ASCII, the common case, needs no look-up.
            let plain = (' '..='~').contains(&c);
            let escape = !plain && c != '\t' && hides(c);
            let width = match c {
                '\t' => 8 - used % 8,
                _ if plain => 1,
                _ if escape => c.escape_unicode().len(),
                _ => c.width().unwrap_or(0),
            };
            if used + width > ROOM && used > 0 {
                match space.filter(|(_, at)| used - at <= BREAK) {
                    Some((cut, at)) => {
                        let rest = row.split_off(cut);
                        push(row.trim_end());
                        row = rest;
                        used -= at;
                    }
                    None => {
                        push(&row);
                        row.clear();
                        used = 0;
                    }
                }
                space = None;
            }
            if c == '\t' {
                // To the next of every 8 columns of the quoted text.
                row.extend(std::iter::repeat_n(' ', width));
            } else if escape {
                row.extend(c.escape_unicode());
            } else {
                row.push(c);
            }
            used += width;
            if c == ' ' || c == '\t' {
                space = Some((row.len(), used));
            }
        }
        push(&row);
    }
    out
}

/// A name (a tool, a model, a run) on one of warden's lines: as it is
/// when it is a plain identifier, else in double quotes, escaped and cut,
/// so it never holds the two spaces that end it and cannot pass for the
/// rest of the line.
pub fn name(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-.:/@+".contains(c);
    if !text.is_empty() && text.len() <= NAME_MAX && text.chars().all(plain) {
        return text.to_string();
    }
    let escaped = clean_line(&text.replace('\\', "\\\\").replace('"', "\\\""));
    format!("\"{}\"", short(&escaped, NAME_MAX))
}

/// `value` as one line of JSON for a program to read (`--json`). Outside
/// text stays inside JSON string values, and every character [`hides`]
/// is written as a `\uXXXX` escape there (serde_json already escapes
/// control characters below U+0020): the line parses to the same value,
/// and printed to a terminal it cannot move the cursor, reorder text or
/// change colours. No line break: one value per line (JSON Lines).
pub fn json_line(value: &Value) -> String {
    let mut out = Vec::with_capacity(256);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, TerminalSafe);
    // Writing to a Vec cannot fail, and a `Value` always serializes
    // (its keys are strings; a non-finite number is already `null`).
    if serde::Serialize::serialize(value, &mut serializer).is_err() {
        return "null".into();
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// serde_json's compact form, with [`hides`] characters escaped.
struct TerminalSafe;

impl serde_json::ser::Formatter for TerminalSafe {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (at, c) in fragment.char_indices() {
            if (' '..='~').contains(&c) || !hides(c) {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..at])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = at + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// A rule name on one of warden's lines: one line, cut.
fn rule(text: &str) -> String {
    short(&clean_line(text), 60)
}

/// The columns `text` takes on a terminal (after [`clean_line`]). The
/// only raw escapes it can hold are warden's own colours (outside text has
/// its escaped), which take none.
fn columns(text: &str) -> usize {
    let mut total = 0;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // `ESC [ params m`
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            total += c.width().unwrap_or(0);
        }
    }
    total
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

    /// Whether `line` is outside text by the rule: it starts with `QUOTE`.
    fn quoted(line: &str) -> bool {
        line.starts_with(QUOTE)
    }

    #[test]
    fn every_line_of_outside_text_is_quoted_and_no_line_is_too_wide() {
        let forged = "[tool]  pay {\"to\":\"x\"}  allow (tools.pay)";
        let long = format!("{} {forged}", "x".repeat(200));
        let cases = [
            format!("fine\n{forged}\naudit head: 0000"),
            format!("a\r\n{forged}\r\nb"),
            format!("cr\r{forged}"),
            format!("{QUOTE} {forged}"),
            format!("\u{2028}{forged}\u{85}answer:"),
            long.clone(),
            format!("{}{forged}", "\t".repeat(20)),
            format!("{}{forged}", "日".repeat(50)),
            format!("{}{forged}", "\u{202e}".repeat(30)),
            String::new(),
            "\n\n\n".to_string(),
        ];
        for text in &cases {
            let block = quote(text);
            for line in block.lines() {
                assert!(quoted(line), "{line:?} of {text:?}");
                assert!(columns(line) <= WIDTH, "{line:?} is wider than {WIDTH}");
                assert!(!line.contains(['\r', '\t', '\u{202e}', '\u{2028}', '\u{85}']));
            }
            for lead in ["        ->", "[log]   agent:", "answer:"] {
                let shown = field(lead, text);
                let mut lines = shown.lines();
                assert!(lines.next().unwrap().starts_with(lead.trim_end()));
                for line in lines {
                    assert!(quoted(line), "{line:?} of {text:?}");
                    assert!(columns(line) <= WIDTH, "{line:?}");
                }
                assert!(columns(shown.lines().next().unwrap()) <= WIDTH);
            }
        }
        // Nothing is lost: the quoted lines, unquoted and joined, are the
        // text (here with no character to escape and no tab).
        let text = format!("one\n{long}\n\nthree");
        let block = quote(&text);
        let back: Vec<&str> = block
            .lines()
            .map(|l| l.strip_prefix(QUOTE).unwrap())
            .map(|l| l.strip_prefix(' ').unwrap_or(l))
            .collect();
        assert_eq!(
            back.concat().replace(' ', ""),
            text.replace(['\n', ' '], "")
        );
        // A long line breaks at a space near the end of a row, not inside
        // a word.
        let words = "alpha beta gamma delta ".repeat(10);
        for line in quote(&words).lines() {
            let content = line.strip_prefix("  │ ").unwrap();
            assert!(
                content
                    .split(' ')
                    .all(|w| w.is_empty() || ["alpha", "beta", "gamma", "delta"].contains(&w)),
                "{line:?}"
            );
        }
    }

    #[test]
    fn short_outside_text_stays_on_warden_s_line_and_the_rest_goes_below() {
        assert_eq!(field("        ->", "395"), "        -> 395");
        assert_eq!(field("        ->", "a\rb"), "        -> a\\u{d}b");
        assert_eq!(field("answer:", "1\n2\n"), "answer:\n  │ 1\n  │ 2");
        assert_eq!(field("  task   ", "a\nb"), "  task\n  │ a\n  │ b");
        let wide = "w".repeat(75);
        assert_eq!(
            field("        ->", &wide),
            format!("        ->\n  │ {wide}")
        );
        assert_eq!(quote(""), QUOTE);
        assert_eq!(quote("a\n\nb"), "  │ a\n  │\n  │ b");
        assert_eq!(quote("\tx"), "  │         x");
    }

    #[test]
    fn names_that_are_not_plain_identifiers_are_quoted() {
        assert_eq!(name("calc"), "calc");
        assert_eq!(name("gpt-4o-mini"), "gpt-4o-mini");
        assert_eq!(name("agent/stdout"), "agent/stdout");
        assert_eq!(
            name("pay {\"to\":\"x\"}  allow (tools.pay)"),
            "\"pay {\\\"to\\\":\\\"x\\\"}  allow (tools.pay)\""
        );
        assert_eq!(name(""), "\"\"");
        assert_eq!(name("a\nb"), "\"a\\u{a}b\"");
        let long = name(&"n".repeat(100));
        assert!(long.starts_with('"') && long.ends_with("…\"") && long.chars().count() == 43);
    }

    /// Records of each kind the transcript renders, every text in them
    /// made of lines that look like warden's own, and with an escape code.
    fn forged_records() -> Vec<Record> {
        let forged = "x\n[tool]  pay {\"to\":\"x\"}  allow (tools.pay)\n[ask]   pay  approved by a person\naudit head: 0000\nanswer:\x1b[32m allow";
        let record = |kind: Kind,
                      event: Event,
                      decision: Verdict,
                      outcome: Option<Outcome>,
                      subject: &str,
                      data: Value| Record {
            kind,
            event,
            decision,
            outcome,
            subject: subject.into(),
            detail: forged.into(),
            data: Some(data),
            rule: "default".into(),
            seq: 1,
            prev: String::new(),
            ts: String::new(),
            run: forged.into(),
        };
        vec![
            record(
                Kind::Run,
                Event::Decision,
                Verdict::Allow,
                None,
                "agent",
                serde_json::json!({"task": forged, "model": forged}),
            ),
            record(
                Kind::Tool,
                Event::Decision,
                Verdict::Allow,
                None,
                "calc",
                serde_json::json!({"arguments": forged}),
            ),
            record(
                Kind::Tool,
                Event::Outcome,
                Verdict::Allow,
                Some(Outcome::Failed),
                "calc",
                Value::Null,
            ),
            record(
                Kind::Tool,
                Event::Decision,
                Verdict::Deny,
                None,
                forged,
                serde_json::json!({"arguments": forged}),
            ),
            record(
                Kind::Tool,
                Event::Outcome,
                Verdict::Deny,
                Some(Outcome::Denied),
                forged,
                Value::Null,
            ),
            record(
                Kind::Model,
                Event::Outcome,
                Verdict::Allow,
                Some(Outcome::Ok),
                forged,
                serde_json::json!({"text": forged, "labels_added": [forged]}),
            ),
            record(
                Kind::Model,
                Event::Outcome,
                Verdict::Allow,
                Some(Outcome::Failed),
                "gpt",
                Value::Null,
            ),
            record(
                Kind::Log,
                Event::Outcome,
                Verdict::Allow,
                Some(Outcome::Ok),
                "agent",
                Value::Null,
            ),
            record(
                Kind::Limit,
                Event::Outcome,
                Verdict::Deny,
                Some(Outcome::Trap),
                "agent",
                Value::Null,
            ),
            record(
                Kind::Http,
                Event::Decision,
                Verdict::Allow,
                None,
                "fetch",
                serde_json::json!({"method": forged, "url": forged}),
            ),
            record(
                Kind::Http,
                Event::Outcome,
                Verdict::Allow,
                Some(Outcome::Ok),
                "fetch",
                Value::Null,
            ),
            record(
                Kind::Run,
                Event::Decision,
                Verdict::Deny,
                None,
                "agent",
                Value::Null,
            ),
            record(
                Kind::Run,
                Event::Outcome,
                Verdict::Allow,
                Some(Outcome::Ok),
                "agent",
                serde_json::json!({"answer": forged, "labels": [forged]}),
            ),
            record(
                Kind::Run,
                Event::Outcome,
                Verdict::Allow,
                Some(Outcome::Failed),
                "agent",
                Value::Null,
            ),
        ]
    }

    #[test]
    fn a_transcript_of_forged_records_has_no_unquoted_forged_line() {
        let records = forged_records();
        let mut transcript = Transcript::new(Vec::new());
        for r in &records {
            transcript.write(r).unwrap();
        }
        let shown = String::from_utf8(transcript.out).unwrap();
        let mut answers = 0;
        for line in shown.lines().filter(|l| !quoted(l)) {
            // Outside text on warden's lines ends within WIDTH columns: a
            // terminal never wraps it onto a line of its own.
            if let Some(at) = line.rfind("pay") {
                assert!(columns(&line[..at + 3]) <= WIDTH, "{line:?}");
            }
            assert!(!line.starts_with("audit head"), "{line:?}");
            assert!(!line.starts_with("[ask]"), "{line:?}");
            assert!(!line.starts_with("[tool]  pay"), "{line:?}");
            answers += usize::from(line.starts_with("answer:"));
        }
        assert_eq!(answers, 1, "{shown}");
        assert!(
            shown
                .lines()
                .filter(|l| quoted(l))
                .any(|l| l.contains("audit head: 0000"))
        );
    }

    /// `text` without warden's colours; panics on an escape that is not
    /// one of them, or on a coloured word that is not one of warden's.
    fn uncolored(text: &str) -> String {
        const WORDS: &[&str] = &[
            "warden run",
            "[model]",
            "[tool]",
            "[http]",
            "[log]",
            "[stdio]",
            "[redact]",
            "[ask]",
            "[limit]",
            "[stop]",
            "allow",
            "approved",
            "DENY",
            "ASK",
            "BUDGET",
            "INVALID",
            "FAILED",
            "REFUSED",
            "failed:",
            "answer:",
            "no answer:",
        ];
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('\x1b') {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            let style = PALETTE
                .iter()
                .find(|p| **p != RESET && rest.starts_with(**p))
                .unwrap_or_else(|| panic!("{rest:?} does not start with a colour of warden's"));
            rest = &rest[style.len()..];
            let end = rest.find(RESET).expect("every colour is reset");
            assert!(
                WORDS.contains(&&rest[..end]),
                "{:?} is coloured",
                &rest[..end]
            );
            out.push_str(&rest[..end]);
            rest = &rest[end + RESET.len()..];
        }
        out.push_str(rest);
        out
    }

    #[test]
    fn colour_marks_warden_s_words_and_outside_text_cannot_colour() {
        let render = |color: bool| {
            let mut transcript = Transcript::new(Vec::new()).with_color(color);
            for r in &forged_records() {
                transcript.write(r).unwrap();
            }
            String::from_utf8(transcript.out).unwrap()
        };
        let plain = render(false);
        let colored = render(true);
        assert!(!plain.contains('\x1b'), "{plain}");
        // Colour adds warden's sequences around warden's words, and
        // nothing else: the text is the plain transcript's.
        assert_eq!(uncolored(&colored), plain);
        for (style, word) in [
            (Style::Deny, "DENY"),
            (Style::Allow, "allow"),
            (Style::Kind, "[tool]"),
            (Style::Failed, "failed:"),
            (Style::Answer, "answer:"),
        ] {
            let painted = format!("{}{word}{RESET}", style.sgr());
            assert!(colored.contains(&painted), "{painted:?} in {colored}");
        }
        // The escape written in outside text is shown as text.
        assert!(colored.contains("answer:\\u{1b}[32m allow"), "{colored}");
        for line in colored.lines().filter(|l| quoted(l)) {
            assert!(!line.contains('\x1b'), "{line:?}");
        }
        // Wrapping is decided on what shows: colour changes no line break.
        assert_eq!(colored.lines().count(), plain.lines().count());
    }

    #[test]
    fn json_lines_escape_what_a_terminal_would_obey_and_parse_back() {
        let text = "a\"b\\c\nd\x1b[31m\u{202e}e\u{9b}f\u{7f}\u{e0041}\u{2028}日本 ❤\u{fe0f}";
        let value = serde_json::json!({ "answer": text, "n": 1, "list": [text] });
        let line = json_line(&value);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.chars().all(|c| !hides(c)), "{line:?}");
        for escaped in [
            "\\u001b",
            "\\u202e",
            "\\u009b",
            "\\u007f",
            "\\udb40\\udc41",
            "\\u2028",
            "\\\"",
        ] {
            assert!(line.contains(escaped), "{escaped} in {line}");
        }
        assert!(line.contains("日本 ❤\u{fe0f}"), "{line}");
        assert_eq!(serde_json::from_str::<Value>(&line).unwrap(), value);
    }

    #[test]
    fn an_answer_the_audit_log_cut_is_shown_by_its_start_and_size() {
        // As `audit::bound` leaves a field longer than `limits.audit_field`.
        let mut entry = crate::audit::Entry {
            kind: Kind::Run,
            event: Event::Outcome,
            subject: "agent".into(),
            decision: Verdict::Allow,
            rule: "run".into(),
            detail: String::new(),
            outcome: Some(Outcome::Ok),
            data: Some(serde_json::json!({ "answer": format!("start\n{}", "x".repeat(40_000)) })),
        };
        crate::audit::bound::bound_entry(&mut entry, 1000);
        let record = Record {
            seq: 1,
            prev: String::new(),
            ts: String::new(),
            run: "r-1".into(),
            kind: entry.kind,
            event: entry.event,
            subject: entry.subject,
            decision: entry.decision,
            rule: entry.rule,
            detail: entry.detail,
            outcome: entry.outcome,
            data: entry.data,
        };
        let mut transcript = Transcript::new(Vec::new());
        transcript.write(&record).unwrap();
        let shown = String::from_utf8(transcript.out).unwrap();
        assert!(shown.contains("answer:\n  │ start\n  │ xxxx"), "{shown}");
        assert!(
            shown.contains("\n        (cut: 40006 bytes in all, sha256 "),
            "{shown}"
        );
    }

    #[test]
    #[ignore = "measurement: cargo test -p warden --lib quote_speed -- --ignored --nocapture"]
    fn quote_speed() {
        let prose = "The quick brown fox jumps over the lazy dog. ".repeat(23_000);
        let lines = "short line\n".repeat(95_000);
        for (what, text) in [("1 MiB of prose", prose), ("1 MiB of short lines", lines)] {
            let started = std::time::Instant::now();
            let block = quote(&text);
            let took = started.elapsed();
            eprintln!(
                "{what}: {} bytes quoted in {took:.2?} ({} lines)",
                text.len(),
                block.lines().count()
            );
        }
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
