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

/// A TOML or serde error, with a hint for the mistakes people make most.
pub fn toml_diagnostic(error: &toml::de::Error) -> Diagnostic {
    let message = error.message().trim().to_string();
    if let Some(suggestion) = did_you_mean(&message) {
        return Diagnostic::error(message, error.span()).with_help(suggestion);
    }
    let help = if message.starts_with("unknown field") {
        Some("remove the key or fix its spelling; the expected keys are listed above")
    } else if message.starts_with("unknown variant") {
        Some("use one of the values listed above")
    } else if message.contains("duplicate key") {
        Some("each key may appear once in a table")
    } else {
        None
    };
    let diagnostic = Diagnostic::error(message, error.span());
    match help {
        Some(help) => diagnostic.with_help(help),
        None => diagnostic,
    }
}

/// For "unknown field `max_cals`, expected one of `a`, `max_calls`": the
/// expected name closest to the unknown one, if it is close.
fn did_you_mean(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (unknown, expected) = rest.split_once('`')?;
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|candidate| (edit_distance(unknown, candidate), candidate))
        .min()?;
    (best.0 <= 2 && best.0 < unknown.len()).then(|| format!("did you mean `{}`?", best.1))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// Deserialize TOML `text` from `file`, with a diagnostic on failure.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    file: &str,
    text: &str,
) -> Result<T, SourceError> {
    toml::from_str(text).map_err(|e| SourceError::single(file, text, vec![toml_diagnostic(&e)]))
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
}
