//! Errors and warnings about a file a user wrote (a policy, a model script)
//! that point at the text: file, line, column, the offending line and a hint
//! on how to fix it. Pure: callers read the file and pass its text.

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};
use std::fmt;
use std::ops::Range;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The file is refused.
    Error,
    /// The file loads, but probably does not say what its author meant.
    Warning,
}

/// One finding about a source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Which of the [`SourceError`]'s files it is about (0 for the first).
    pub file: usize,
    /// What is wrong, in one line.
    pub message: String,
    /// Byte range in the source the finding is about, if any.
    pub span: Option<Range<usize>>,
    /// How to fix it.
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error at `span`.
    pub fn error(message: impl Into<String>, span: Option<Range<usize>>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: 0,
            message: message.into(),
            span,
            help: None,
        }
    }

    /// A warning at `span`.
    pub fn warning(message: impl Into<String>, span: Option<Range<usize>>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(message, span)
        }
    }

    /// Say which file it is about.
    pub fn in_file(mut self, file: usize) -> Self {
        self.file = file;
        self
    }

    /// Add a hint on how to fix it.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// 1-based line and column (in characters) of the start of the span.
    pub fn line_col(&self, text: &str) -> Option<(usize, usize)> {
        let start = visible_span(text, self.span.as_ref()?).start;
        let before = text.get(..start)?;
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Some((line, column))
    }

    /// Render as a compiler does: the message, `--> file:line:col`, the line
    /// with the span underlined, then the hint.
    pub fn render(&self, file: &str, text: &str) -> String {
        let level = match self.severity {
            Severity::Error => Level::ERROR,
            Severity::Warning => Level::WARNING,
        };
        let title = level.primary_title(self.message.as_str());
        let mut group: Group<'_> = match &self.span {
            Some(span) => {
                let span = visible_span(text, span);
                title.element(
                    Snippet::source(text)
                        .path(file)
                        .annotation(AnnotationKind::Primary.span(span)),
                )
            }
            None => Group::with_title(title),
        };
        if let Some(help) = &self.help {
            group = group.element(Level::HELP.message(help.as_str()));
        }
        let rendered = Renderer::plain().render(&[group]);
        match &self.span {
            Some(_) => rendered,
            // No span: still say which file.
            None => format!("{rendered}\n --> {file}"),
        }
    }
}

/// A file a user wrote: its name as given, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The file as the user named it.
    pub name: String,
    /// Its text (empty when it could not be read).
    pub text: String,
}

/// `span` inside `text`, on character boundaries (a span from a parser, or
/// one computed here, may fall inside a multi-byte character; the renderer
/// must never slice there), and visible: an empty span at the end of the
/// text widens to its last character.
fn visible_span(text: &str, span: &Range<usize>) -> Range<usize> {
    let mut start = span.start.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = span.end.clamp(start, text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    if start == end && start == text.len() && start > 0 {
        start = text[..start]
            .char_indices()
            .next_back()
            .map_or(0, |(i, _)| i);
    }
    start..end
}

/// Files that could not be loaded, with every finding about them.
#[derive(Debug, Clone)]
pub struct SourceError {
    /// The files the diagnostics point into (`Diagnostic::file` indexes it).
    pub files: Vec<SourceFile>,
    /// Errors (at least one) and warnings.
    pub diagnostics: Vec<Diagnostic>,
}

impl SourceError {
    /// Findings about one file.
    pub fn single(file: &str, text: &str, diagnostics: Vec<Diagnostic>) -> Self {
        SourceError {
            files: vec![SourceFile {
                name: file.to_string(),
                text: text.to_string(),
            }],
            diagnostics,
        }
    }

    /// The errors and warnings rendered one after another.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (i, diagnostic) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                out.push_str("\n\n");
            }
            let (name, text) = self
                .files
                .get(diagnostic.file)
                .map_or(("?", ""), |f| (f.name.as_str(), f.text.as_str()));
            out.push_str(&diagnostic.render(name, text));
        }
        out
    }

    /// The number of errors (as opposed to warnings).
    pub fn error_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

impl std::error::Error for SourceError {}

/// The most errors reported from one file; the rest are counted.
pub const MAX_REPORTED: usize = 20;

/// How many parts of one file are tried on their own, at most: each try
/// copies and reads its part, so a large file with many mistakes is
/// searched for a bounded time; past it, what is left is reported whole.
const MAX_ATTEMPTS: usize = 4000;

/// How deep into nested tables errors are looked for one by one.
const MAX_DEPTH: usize = 8;

/// A TOML or serde error, with a hint for the mistakes people make most;
/// `text` is the file it is about.
pub fn toml_diagnostic(error: &toml::de::Error, text: &str) -> Diagnostic {
    let message = error.message().trim().to_string();
    let span = error.span();
    let help = if let Some(suggestion) = did_you_mean(&message) {
        Some(suggestion)
    } else if message.starts_with("unknown field") || message.starts_with("unknown rule key") {
        Some("remove the key or fix its spelling; the expected keys are listed above".into())
    } else if message.starts_with("unknown variant") {
        Some("use one of the values listed above".into())
    } else if message.contains("duplicate key") {
        Some("each key may appear once in a table".into())
    } else if message.starts_with("invalid type: string")
        && message.ends_with("expected a sequence")
    {
        Some(list_form(text, span.as_ref()))
    } else {
        None
    };
    let diagnostic = Diagnostic::error(message, span);
    match help {
        Some(help) => diagnostic.with_help(help),
        None => diagnostic,
    }
}

/// Diagnostics for every error in a file, in the order they occur, at most
/// [`MAX_REPORTED`] of them (then one line counting the rest).
pub fn toml_diagnostics(errors: &[toml::de::Error], text: &str) -> Vec<Diagnostic> {
    let mut diagnostics: Vec<Diagnostic> =
        errors.iter().map(|e| toml_diagnostic(e, text)).collect();
    diagnostics.sort_by_key(|d| {
        d.span
            .as_ref()
            .map_or((usize::MAX, 0), |s| (s.start, s.end))
    });
    diagnostics.dedup_by(|a, b| a.span == b.span && a.message == b.message);
    if diagnostics.len() > MAX_REPORTED {
        let more = diagnostics.len() - MAX_REPORTED;
        diagnostics.truncate(MAX_REPORTED);
        diagnostics.push(
            Diagnostic::error(
                format!("and {more} more error(s) in this file, not shown"),
                None,
            )
            .with_help("fix the errors above and check again"),
        );
    }
    diagnostics
}

/// For `allow = "x"` where a list is expected: the list form of the
/// value, with its key when the line shows it.
fn list_form(text: &str, span: Option<&Range<usize>>) -> String {
    let Some(value) = span
        .and_then(|s| text.get(s.clone()))
        .filter(|v| !v.contains('\n'))
    else {
        return "a list is written in brackets: `[\"...\"]`".into();
    };
    let start = span.map_or(0, |s| s.start);
    let line = &text[text[..start].rfind('\n').map_or(0, |i| i + 1)..start];
    let key = line
        .trim_end()
        .strip_suffix('=')
        .map(|before| {
            let before = before.trim_end();
            let from = before
                .rfind(|c: char| !(c.is_alphanumeric() || "_-.\"'".contains(c)))
                .map_or(0, |i| i + 1);
            &before[from..]
        })
        .filter(|key| !key.is_empty());
    match key {
        Some(key) => format!("a list is written in brackets: `{key} = [{value}]`"),
        None => format!("a list is written in brackets: `[{value}]`"),
    }
}

/// For "unknown field `max_cals`, expected one of `a`, `max_calls`": the
/// expected name closest to the unknown one, if it is close. The expected
/// names are the backquoted words after "expected", up to a `;`.
fn did_you_mean(message: &str) -> Option<String> {
    let rest = ["unknown field `", "unknown variant `", "unknown rule key `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))?;
    let (unknown, rest) = rest.split_once('`')?;
    let expected = rest.split_once("expected")?.1;
    let expected = expected.split(';').next().unwrap_or_default();
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    closest(unknown, candidates).map(|best| format!("did you mean `{best}`?"))
}

/// The candidate closest to `word`, if it is close enough to be what was
/// meant: at most two edits away (a swap of two neighbours is one edit),
/// or `word` starts with all of it but its last letter (`denied` for
/// `deny`). The one function behind every "did you mean".
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_lowercase();
    candidates
        .into_iter()
        .filter(|candidate| *candidate != word)
        .filter_map(|candidate| {
            let distance = edit_distance(&lower, &candidate.to_lowercase());
            let stem = candidate
                .char_indices()
                .next_back()
                .map_or("", |(i, _)| &candidate[..i]);
            let close = (distance <= 2 && distance < word.chars().count())
                || (stem.chars().count() >= 3 && lower.starts_with(&stem.to_lowercase()));
            close.then_some((distance, candidate))
        })
        .min()
        .map(|(_, candidate)| candidate)
}

/// Edits (insert, delete, substitute, swap two neighbours) from `a` to
/// `b`: the optimal string alignment distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Rows i-2, i-1 and i of the table.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut row: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        row[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            row[j] = (previous[j] + 1)
                .min(row[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                row[j] = row[j].min(before[j - 2] + 1);
            }
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut row);
    }
    previous[b.len()]
}

/// Deserialize TOML `text` from `file`, with a diagnostic for every error
/// found (see [`from_toml_all`]).
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    file: &str,
    text: &str,
) -> Result<T, SourceError> {
    from_toml_all(text)
        .map_err(|errors| SourceError::single(file, text, toml_diagnostics(&errors, text)))
}

/// Deserialize TOML `text`, finding every error rather than the first:
/// every syntax error the parser recovers from; else, when the text is
/// TOML but not what `T` expects, each table's keys, array's items and
/// the rest of the table are tried on their own (down to [`MAX_DEPTH`]),
/// so that a mistake in one section does not hide one in another. An error
/// of a key tried alone counts only if it lies within that key (a missing
/// field is the table's, and is found when the rest is tried).
pub fn from_toml_all<T: serde::de::DeserializeOwned>(
    text: &str,
) -> Result<T, Vec<toml::de::Error>> {
    use toml::de::{DeTable, DeValue, Deserializer};
    let (root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        return Err(syntax);
    }
    // The whole first: most files are fine, and are read once.
    let whole = match T::deserialize(Deserializer::from(root)) {
        Ok(parsed) => return Ok(parsed),
        Err(error) => error,
    };
    // Read again (the first reading was consumed), to try it in parts.
    let (root, _) = DeTable::parse_recoverable(text);
    let span = root.span();
    let value = toml::Spanned::new(span, DeValue::Table(root.into_inner()));
    let budget = std::cell::Cell::new(MAX_ATTEMPTS);
    let attempt = |value: &toml::Spanned<DeValue<'_>>, path: &[Step<'_>]| {
        let left = budget.get().checked_sub(1)?;
        budget.set(left);
        let document = wrap(value.clone(), path);
        Some(T::deserialize(Deserializer::from(document)).map(|_| ()))
    };
    let mut errors = Vec::new();
    find_errors(&value, &mut Vec::new(), whole, &attempt, &mut errors);
    Err(errors)
}

/// One step from the document's root down to a value tried alone: a key
/// of a table, or an item of an array (each with the span of the table or
/// array it is in).
enum Step<'i> {
    Key(toml::Spanned<std::borrow::Cow<'i, str>>, Range<usize>),
    Item(Range<usize>),
}

/// A document holding only `value`, where `path` leads to it.
fn wrap<'i>(
    value: toml::Spanned<toml::de::DeValue<'i>>,
    path: &[Step<'i>],
) -> toml::Spanned<toml::de::DeTable<'i>> {
    use toml::de::{DeArray, DeTable, DeValue};
    let mut value = value;
    for step in path.iter().rev() {
        value = match step {
            Step::Key(key, span) => {
                let mut table = DeTable::new();
                table.insert(key.clone(), value);
                toml::Spanned::new(span.clone(), DeValue::Table(table))
            }
            Step::Item(span) => {
                let mut array = DeArray::new();
                array.push(value);
                toml::Spanned::new(span.clone(), DeValue::Array(array))
            }
        };
    }
    let span = value.span();
    match value.into_inner() {
        DeValue::Table(table) => toml::Spanned::new(span, table),
        // `path` is empty only for the root, which is a table.
        _ => toml::Spanned::new(span, DeTable::new()),
    }
}

/// The bytes `value` and everything in it take in the file, with `from`
/// (its key): a table's own span is only its header.
fn extent(value: &toml::Spanned<toml::de::DeValue<'_>>, from: Range<usize>) -> Range<usize> {
    use toml::de::DeValue;
    let span = value.span();
    let mut out = from.start.min(span.start)..from.end.max(span.end);
    let mut grow = |inner: Range<usize>| {
        out = out.start.min(inner.start)..out.end.max(inner.end);
    };
    match value.get_ref() {
        DeValue::Table(table) => {
            for (key, item) in table.iter() {
                grow(extent(item, key.span()));
            }
        }
        DeValue::Array(array) => {
            for item in array.iter() {
                grow(extent(item, item.span()));
            }
        }
        _ => {}
    }
    out
}

/// Whether `error` is "missing field `expect`" in a table where an
/// unknown key among `found` looks like `expect`: one mistake, told once.
fn misspelled(error: &toml::de::Error, found: &[toml::de::Error]) -> bool {
    let Some(missing) = error
        .message()
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    else {
        return false;
    };
    found.iter().any(|e| {
        ["unknown field `", "unknown rule key `"]
            .iter()
            .find_map(|prefix| e.message().strip_prefix(prefix))
            .and_then(|rest| rest.split('`').next())
            .is_some_and(|unknown| closest(unknown, [missing]).is_some())
    })
}

/// What a value tried alone is checked with: `None` once the tries are
/// spent.
type Attempt<'a, 'i> = &'a dyn Fn(
    &toml::Spanned<toml::de::DeValue<'i>>,
    &[Step<'i>],
) -> Option<Result<(), toml::de::Error>>;

/// The errors in `value` (at `path`, which failed as a whole with
/// `whole`), found part by part, into `errors`: the errors of each part
/// that fails alone, then the error of the rest without them, if any; or
/// `whole` when no part fails alone.
fn find_errors<'i>(
    value: &toml::Spanned<toml::de::DeValue<'i>>,
    path: &mut Vec<Step<'i>>,
    whole: toml::de::Error,
    attempt: Attempt<'_, 'i>,
    errors: &mut Vec<toml::de::Error>,
) {
    use toml::de::{DeArray, DeTable, DeValue};
    let found = errors.len();
    if path.len() >= MAX_DEPTH {
        errors.push(whole);
        return;
    }
    let span = value.span();
    // A part's own errors lie within it; any other is the table's (a key
    // it misses when the part stands alone) and is found with the rest.
    let part = |item: &toml::Spanned<DeValue<'i>>,
                step: Step<'i>,
                within: Range<usize>,
                path: &mut Vec<Step<'i>>,
                errors: &mut Vec<toml::de::Error>| {
        path.push(step);
        let mut mine = Vec::new();
        // Not tried (the tries are spent): its errors are the rest's.
        if let Some(Err(error)) = attempt(item, path) {
            find_errors(item, path, error, attempt, &mut mine);
        }
        path.pop();
        mine.retain(|e| {
            e.span()
                .is_some_and(|s| s.start >= within.start && s.end <= within.end)
        });
        let fine = mine.is_empty();
        errors.extend(mine);
        fine
    };
    let rest = match value.get_ref() {
        DeValue::Table(table) => {
            let mut rest = DeTable::new();
            let mut left_out = Vec::new();
            for (key, item) in table.iter() {
                let within = extent(item, key.span());
                let step = Step::Key(key.clone(), span.clone());
                if part(item, step, within, path, errors) {
                    rest.insert(key.clone(), item.clone());
                } else {
                    left_out.push(format!("`{}`", key.get_ref()));
                }
            }
            (rest.len() < table.len()).then_some((DeValue::Table(rest), left_out))
        }
        DeValue::Array(array) if array.len() > 1 => {
            let mut rest = DeArray::new();
            for item in array.iter() {
                let within = extent(item, item.span());
                if part(item, Step::Item(span.clone()), within, path, errors) {
                    rest.push(item.clone());
                }
            }
            (rest.len() < array.len()).then(|| (DeValue::Array(rest), Vec::new()))
        }
        _ => None,
    };
    // What is wrong with the table itself, once its failing parts are
    // left out: a key it needs, or keys that do not go together (but not
    // the keys left out, which it now misses).
    if let Some((rest, left_out)) = rest
        && let Some(Err(error)) = attempt(&toml::Spanned::new(span, rest), path)
        && !left_out
            .iter()
            .any(|key| error.message().contains(key.as_str()))
        && !misspelled(&error, &errors[found..])
    {
        errors.push(error);
    }
    // No part fails alone: the parts do not go together.
    if errors.len() == found {
        errors.push(whole);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        let text = "a = 1\nbé = 2\n";
        let d = Diagnostic::error("x", Some(9..10));
        assert_eq!(d.line_col(text), Some((2, 3)));
        assert_eq!(Diagnostic::error("x", None).line_col(text), None);
    }

    #[test]
    fn spans_inside_characters_render() {
        // Found by fuzzing: a span ending inside a multi-byte character.
        let text = "a = \"\u{fffd}\u{fffd}";
        for span in [0..5, 5..6, 6..8, 9..9, 10..10, 100..200] {
            let d = Diagnostic::error("x", Some(span));
            let _ = d.render("f.toml", text);
            let _ = d.line_col(text);
        }
        let d = Diagnostic::error("x", Some(text.len()..text.len()));
        assert!(d.render("f.toml", text).contains("f.toml:1:7"));
    }

    #[test]
    fn renders_location_line_and_help() {
        let text = "[model]\nmax_cals = 3\n";
        let d = Diagnostic::error("unknown field `max_cals`", Some(8..16))
            .with_help("did you mean `max_calls`?");
        let out = d.render("p.toml", text);
        assert!(out.starts_with("error: unknown field `max_cals`"), "{out}");
        assert!(out.contains("--> p.toml:2:1"), "{out}");
        assert!(out.contains("2 | max_cals = 3"), "{out}");
        assert!(out.contains("^^^^^^^^"), "{out}");
        assert!(out.contains("help: did you mean `max_calls`?"), "{out}");
    }

    #[test]
    fn did_you_mean_finds_typos_swaps_and_stems() {
        let keys = ["equals", "one_of", "matches", "max_len", "decision"];
        assert_eq!(closest("mathces", keys), Some("matches"));
        assert_eq!(closest("max_lne", keys), Some("max_len"));
        assert_eq!(closest("denied", ["allow", "ask", "deny"]), Some("deny"));
        assert_eq!(closest("allowed", ["allow", "ask", "deny"]), Some("allow"));
        assert_eq!(closest("DENY", ["allow", "ask", "deny"]), Some("deny"));
        assert_eq!(closest("domain", keys), None);
        assert_eq!(
            closest("x", ["y"]),
            None,
            "one letter is not a typo of another"
        );
        assert_eq!(edit_distance("ab", "ba"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        a: Option<Section>,
        b: Option<Section>,
        #[serde(default)]
        item: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Section {
        size: Option<u32>,
        name: Option<String>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        name: String,
        mode: Option<Verdict>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Verdict {
        Allow,
        Deny,
    }

    fn errors(text: &str) -> Vec<(String, usize)> {
        let errors = from_toml_all::<Doc>(text).unwrap_err();
        toml_diagnostics(&errors, text)
            .iter()
            .map(|d| {
                (
                    d.message.clone(),
                    d.line_col(text).map_or(0, |(line, _)| line),
                )
            })
            .collect()
    }

    #[test]
    fn every_section_reports_its_own_errors() {
        let text = "[b]\nsize = \"big\"\nnmae = \"x\"\n[a]\nsize = 1\n[[item]]\nname = \"i\"\nmode = \"denied\"\n[[item]]\nmode = \"allow\"\n[[item]]\nnam = \"k\"\n";
        let found = errors(text);
        let lines: Vec<usize> = found.iter().map(|(_, line)| *line).collect();
        assert_eq!(lines, [2, 3, 8, 9, 12], "{found:#?}");
        assert!(
            found[0].0.starts_with("invalid type: string \"big\""),
            "{found:?}"
        );
        assert!(found[1].0.starts_with("unknown field `nmae`"), "{found:?}");
        assert!(
            found[2].0.starts_with("unknown variant `denied`"),
            "{found:?}"
        );
        // The second item misses its name; the third misspells it, which
        // is told once.
        assert_eq!(found[3].0, "missing field `name`", "{found:?}");
        assert!(found[4].0.starts_with("unknown field `nam`"), "{found:?}");
        // A file without mistakes parses as a whole.
        assert!(from_toml_all::<Doc>("[a]\nsize = 1\n[[item]]\nname = \"i\"\n").is_ok());
    }

    #[test]
    fn syntax_errors_are_all_reported_and_many_errors_are_counted() {
        let found = errors("[a\nsize = 1\n[b]\nname = \n");
        assert_eq!(found.len(), 2, "{found:?}");
        let keys: String = (0..30).map(|i| format!("size{i} = 1\n")).collect();
        let text = format!("[a]\n{keys}");
        let found = errors(&text);
        assert_eq!(found.len(), MAX_REPORTED + 1, "{found:?}");
        assert_eq!(
            found[MAX_REPORTED].0,
            "and 10 more error(s) in this file, not shown"
        );
    }

    #[test]
    fn a_string_where_a_list_goes_shows_the_list() {
        let text = "[model]\nallow = \"scripted\"\n";
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Model {
            allow: Vec<String>,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct File {
            model: Model,
        }
        let error = toml::from_str::<File>(text).map(|_| ());
        let diagnostic = toml_diagnostic(&error.unwrap_err(), text);
        assert_eq!(
            diagnostic.help.as_deref(),
            Some("a list is written in brackets: `allow = [\"scripted\"]`")
        );
    }
}
