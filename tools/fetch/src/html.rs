//! HTML to readable text, for a model to read.
//!
//! Not a full HTML parser: a single linear pass that drops what a reader
//! never sees (`<head>`, `<script>`, `<style>`, `<noscript>`, `<template>`,
//! `<svg>`, comments), turns block elements into line breaks (list items
//! into `- ` lines, table cells into ` | `), keeps the text of everything
//! else (links included), decodes entities and collapses whitespace, except
//! inside `<pre>`.

/// Elements whose content is dropped along with the tags.
const DROPPED: &[&str] = &["script", "style", "noscript", "template", "svg", "head"];

/// Elements that start and end a paragraph (a blank line around them).
const PARAGRAPHS: &[&str] = &[
    "p",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "table",
    "ul",
    "ol",
    "dl",
    "pre",
    "blockquote",
    "figure",
    "hr",
];

/// Elements that start and end a line.
const LINES: &[&str] = &[
    "br",
    "div",
    "li",
    "tr",
    "section",
    "article",
    "header",
    "footer",
    "nav",
    "main",
    "aside",
    "dt",
    "dd",
    "form",
    "figcaption",
    "address",
    "caption",
    "summary",
    "details",
    "fieldset",
    "legend",
    "body",
    "html",
    "option",
];

/// The readable text of an HTML document.
pub fn html_to_text(html: &str) -> String {
    let mut out = Output::default();
    let bytes = html.as_bytes();
    let mut pos = 0;
    let mut pre_depth = 0usize;
    // Once a `<head>` is found without `</head>`, later ones are not looked
    // for again: a document of `<head>` tags stays linear.
    let mut head_unclosed = false;
    while pos < bytes.len() {
        let Some(lt) = memchr(b'<', bytes, pos) else {
            out.text(&decode_entities(&html[pos..]), pre_depth > 0);
            break;
        };
        if lt > pos {
            out.text(&decode_entities(&html[pos..lt]), pre_depth > 0);
        }
        let rest = &bytes[lt..];
        if rest.starts_with(b"<!--") {
            pos = find(bytes, b"-->", lt + 4).map_or(bytes.len(), |i| i + 3);
            continue;
        }
        if rest.starts_with(b"<!") || rest.starts_with(b"<?") {
            pos = memchr(b'>', bytes, lt).map_or(bytes.len(), |i| i + 1);
            continue;
        }
        let Some(tag) = Tag::parse(bytes, lt) else {
            // A `<` that does not open a tag is text.
            out.text("<", pre_depth > 0);
            pos = lt + 1;
            continue;
        };
        pos = tag.end;
        let name = tag.name.as_str();
        let dropped = DROPPED.contains(&name) && (name != "head" || !head_unclosed);
        if dropped && !tag.closing && !tag.self_closing {
            match skip_element(bytes, name, pos) {
                Some(end) => pos = end,
                None if name == "head" => {
                    head_unclosed = true;
                    pos = find_ci(bytes, b"<body", pos).unwrap_or(pos);
                }
                None => pos = bytes.len(),
            }
            continue;
        }
        if name == "pre" {
            if tag.closing {
                pre_depth = pre_depth.saturating_sub(1);
            } else if !tag.self_closing {
                pre_depth += 1;
            }
        }
        if PARAGRAPHS.contains(&name) {
            out.paragraph();
        } else if LINES.contains(&name) {
            out.line();
        }
        if !tag.closing {
            match name {
                "li" => out.text_raw("- "),
                "td" | "th" => out.cell(),
                "img" => {
                    if let Some(alt) = tag.alt.as_deref().map(decode_entities) {
                        let alt = alt.trim();
                        if !alt.is_empty() {
                            out.text(&format!("[{alt}]"), false);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out.finish()
}

/// The document's `<title>`, entities decoded and whitespace collapsed.
pub fn title(html: &str) -> Option<String> {
    let bytes = html.as_bytes();
    let mut from = 0;
    while let Some(start) = find_ci(bytes, b"<title", from) {
        // `<titles...`: not a title (checked before parsing the tag, which
        // may run to the end of the document).
        let after = bytes.get(start + b"<title".len());
        if after.is_some_and(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b':')) {
            from = start + 1;
            continue;
        }
        let tag = Tag::parse(bytes, start)?;
        let end = find_ci(bytes, b"</title", tag.end)?;
        let text = collapse_whitespace(&decode_entities(&html[tag.end..end]));
        return (!text.is_empty()).then_some(text);
    }
    None
}

/// Decode character references: the common named ones and `&#NN;` /
/// `&#xHH;`. Anything else is left as written.
pub fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        // The longest reference we decode is `&#x10FFFF;` (10 bytes).
        let semi = rest.as_bytes()[1..rest.len().min(12)]
            .iter()
            .position(|&b| b == b';')
            .map(|i| i + 1);
        let decoded = semi.and_then(|semi| decode_reference(&rest[1..semi]).map(|c| (c, semi)));
        match decoded {
            Some((c, semi)) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The character `&name;` stands for (`name` without `&` and `;`).
fn decode_reference(name: &str) -> Option<char> {
    if let Some(number) = name.strip_prefix('#') {
        let code = match number.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => number.parse::<u32>().ok()?,
        };
        return Some(match code {
            0 => '\u{FFFD}',
            // Windows-1252 numbers that pages use for quotes and dashes.
            0x80..=0x9F => windows_1252_c1(code as u8),
            _ => char::from_u32(code).unwrap_or('\u{FFFD}'),
        });
    }
    Some(match name {
        "amp" | "AMP" => '&',
        "lt" | "LT" => '<',
        "gt" | "GT" => '>',
        "quot" | "QUOT" => '"',
        "apos" => '\'',
        "nbsp" => '\u{A0}',
        "ndash" => '–',
        "mdash" => '—',
        "hellip" => '…',
        "lsquo" => '‘',
        "rsquo" => '’',
        "sbquo" => '‚',
        "ldquo" => '“',
        "rdquo" => '”',
        "bdquo" => '„',
        "laquo" => '«',
        "raquo" => '»',
        "bull" => '•',
        "middot" => '·',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "deg" => '°',
        "plusmn" => '±',
        "times" => '×',
        "divide" => '÷',
        "micro" => 'µ',
        "para" => '¶',
        "sect" => '§',
        "euro" => '€',
        "pound" => '£',
        "yen" => '¥',
        "cent" => '¢',
        "larr" => '←',
        "rarr" => '→',
        "uarr" => '↑',
        "darr" => '↓',
        "shy" => '\u{AD}',
        "zwj" => '\u{200D}',
        "zwnj" => '\u{200C}',
        "thinsp" => '\u{2009}',
        "ensp" => '\u{2002}',
        "emsp" => '\u{2003}',
        _ => return None,
    })
}

/// The character Windows-1252 puts at `byte` (0x80 to 0x9F), where
/// ISO-8859-1 has control characters.
pub fn windows_1252_c1(byte: u8) -> char {
    const TABLE: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8D}', 'Ž',
        '\u{8F}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9D}',
        'ž', 'Ÿ',
    ];
    match byte {
        0x80..=0x9F => TABLE[usize::from(byte - 0x80)],
        _ => char::from(byte),
    }
}

/// Runs of whitespace as one space, no leading or trailing whitespace.
fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A start or end tag.
struct Tag {
    /// Lower-cased.
    name: String,
    closing: bool,
    self_closing: bool,
    /// The `alt` attribute, for `<img>`.
    alt: Option<String>,
    /// Just past the `>`.
    end: usize,
}

impl Tag {
    /// The tag starting at `bytes[lt] == b'<'`, if one does.
    fn parse(bytes: &[u8], lt: usize) -> Option<Tag> {
        let mut i = lt + 1;
        let closing = bytes.get(i) == Some(&b'/');
        if closing {
            i += 1;
        }
        if !bytes.get(i)?.is_ascii_alphabetic() {
            return None;
        }
        let name_start = i;
        while i < bytes.len()
            && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'-' | b':'))
        {
            i += 1;
        }
        let name = String::from_utf8_lossy(&bytes[name_start..i]).to_ascii_lowercase();
        // Attributes, up to the `>` that is not inside quotes.
        let attributes_start = i;
        let mut quote = None;
        while i < bytes.len() {
            match (quote, bytes[i]) {
                (None, b'>') => break,
                (None, q @ (b'"' | b'\'')) => quote = Some(q),
                (Some(q), b) if b == q => quote = None,
                _ => {}
            }
            i += 1;
        }
        // An unterminated tag runs to the end of the document.
        let gt = i.min(bytes.len());
        let attributes = &bytes[attributes_start..gt];
        let self_closing = attributes.last() == Some(&b'/');
        let alt = if name == "img" {
            attribute(attributes, "alt")
        } else {
            None
        };
        Some(Tag {
            name,
            closing,
            self_closing,
            alt,
            end: (gt + 1).min(bytes.len()),
        })
    }
}

/// The value of attribute `name` in the attribute text of a tag.
fn attribute(attributes: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(attributes);
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(at) = find_ci(bytes, name.as_bytes(), from) {
        from = at + 1;
        let before_ok = at == 0 || bytes[at - 1].is_ascii_whitespace();
        let mut i = at + name.len();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if !before_ok || bytes.get(i) != Some(&b'=') {
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let value = match bytes.get(i) {
            Some(&q @ (b'"' | b'\'')) => {
                let end = memchr(q, bytes, i + 1).unwrap_or(bytes.len());
                &text[i + 1..end]
            }
            _ => {
                let end = bytes[i..]
                    .iter()
                    .position(|b| b.is_ascii_whitespace() || *b == b'/')
                    .map_or(bytes.len(), |p| i + p);
                &text[i..end]
            }
        };
        return Some(value.to_string());
    }
    None
}

/// Where the element `name` whose start tag ends at `from` ends: just past
/// its end tag, if it has one. (A `<head>` without `</head>` ends where
/// `<body>` starts, or nowhere.)
fn skip_element(bytes: &[u8], name: &str, from: usize) -> Option<usize> {
    let end_tag = format!("</{name}");
    let at = find_ci(bytes, end_tag.as_bytes(), from)?;
    Some(memchr(b'>', bytes, at).map_or(bytes.len(), |i| i + 1))
}

fn memchr(needle: u8, haystack: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .iter()
        .position(|&b| b == needle)
        .map(|i| i + from)
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// Like [`find`], ignoring ASCII case; `needle` is lower-case.
fn find_ci(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
        .map(|i| i + from)
}

/// Text being assembled: lines of collapsed whitespace, at most one blank
/// line in a row.
#[derive(Default)]
struct Output {
    text: String,
    /// A space is owed before the next word on this line.
    space: bool,
    /// Line breaks owed before the next text (1 = new line, 2 = blank line).
    breaks: usize,
}

impl Output {
    fn at_line_start(&self) -> bool {
        self.text.is_empty() || self.text.ends_with('\n')
    }

    /// Pay the owed line breaks, if there is text before them.
    fn flush_breaks(&mut self) {
        if self.breaks > 0 && !self.text.is_empty() {
            let have = self.text.len() - self.text.trim_end_matches('\n').len();
            for _ in have..self.breaks {
                self.text.push('\n');
            }
        }
        self.breaks = 0;
    }

    /// Text from the document; whitespace is collapsed unless `preformatted`.
    fn text(&mut self, text: &str, preformatted: bool) {
        if preformatted {
            if !text.is_empty() {
                self.flush_breaks();
                self.space = false;
                self.text.push_str(&text.replace('\u{A0}', " "));
            }
            return;
        }
        for (i, word) in text.split(|c: char| c.is_whitespace()).enumerate() {
            if i > 0 {
                self.space = true;
            }
            if word.is_empty() {
                continue;
            }
            self.flush_breaks();
            if self.space && !self.at_line_start() && !self.text.ends_with(' ') {
                self.text.push(' ');
            }
            self.space = false;
            self.text.push_str(word);
        }
    }

    /// Text of our own (a list bullet), on the current line.
    fn text_raw(&mut self, text: &str) {
        self.flush_breaks();
        self.space = false;
        self.text.push_str(text);
    }

    /// A table cell: ` | ` between cells of a row.
    fn cell(&mut self) {
        if self.breaks == 0 && !self.at_line_start() {
            self.text.push_str(" | ");
            self.space = false;
        }
    }

    fn line(&mut self) {
        self.breaks = self.breaks.max(1);
        self.space = false;
    }

    fn paragraph(&mut self) {
        self.breaks = 2;
        self.space = false;
    }

    fn finish(self) -> String {
        let mut out = String::with_capacity(self.text.len());
        let mut blank = 0;
        for line in self.text.lines() {
            let line = line.trim_end();
            if line.is_empty() {
                blank += 1;
                continue;
            }
            if !out.is_empty() {
                out.push_str(if blank > 0 { "\n\n" } else { "\n" });
            }
            blank = 0;
            out.push_str(line);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_what_a_reader_never_sees() {
        let html = r#"<!DOCTYPE html>
<html><head><title>T</title><style>body { color: red }</style>
<script>var x = "<p>not text</p>";</script></head>
<body><!-- a comment <p>hidden</p> -->
<noscript>Enable JavaScript</noscript>
<p>Hello, <b>world</b>!</p>
<SCRIPT type="text/javascript">if (a < b) { alert(1) }</SCRIPT>
<svg><text>chart</text></svg>
<template><p>later</p></template>
</body></html>"#;
        assert_eq!(html_to_text(html), "Hello, world!");
    }

    #[test]
    fn blocks_become_lines() {
        let html = "<h1>Title</h1><p>First paragraph\n   spans\tlines.</p>\
                    <p>Second<br>line two<br/>line three</p>\
                    <div>a div</div><div>another</div>\
                    <ul><li>one</li><li>two <a href=\"/x\">link text</a></li></ul>\
                    <p>after</p>";
        assert_eq!(
            html_to_text(html),
            "Title\n\nFirst paragraph spans lines.\n\nSecond\nline two\nline three\n\n\
             a div\nanother\n\n- one\n- two link text\n\nafter"
        );
    }

    #[test]
    fn tables_and_preformatted_text() {
        let html = "<table><tr><th>Name</th><th>Age</th></tr>\
                    <tr><td>Ann</td><td>41</td></tr></table>\
                    <pre>fn main() {\n    println!(\"&lt;hi&gt;\");\n}</pre><p>done</p>";
        assert_eq!(
            html_to_text(html),
            "Name | Age\nAnn | 41\n\nfn main() {\n    println!(\"<hi>\");\n}\n\ndone"
        );
    }

    #[test]
    fn inline_elements_keep_spacing() {
        assert_eq!(
            html_to_text("<span>a</span><span>b</span> <em>c</em>\n<a href='x'>d</a>"),
            "ab c d"
        );
        assert_eq!(
            html_to_text("x <img src=a.png alt=\"a cat\"> y"),
            "x [a cat] y"
        );
        assert_eq!(html_to_text("1 < 2 and 3 > 2"), "1 < 2 and 3 > 2");
        assert_eq!(
            html_to_text("<a title=\"a > b\" href=x>quoted</a>"),
            "quoted"
        );
    }

    #[test]
    fn head_without_end_tag() {
        assert_eq!(
            html_to_text("<html><head><meta charset=utf-8><title>x</title><body><p>text"),
            "text"
        );
        assert_eq!(html_to_text("<head><p>odd but kept"), "odd but kept");
    }

    #[test]
    fn entities() {
        assert_eq!(
            decode_entities("&amp; &lt; &gt; &quot; &#39; &apos;&nbsp;&#65;&#x42;&#X43;"),
            "& < > \" ' '\u{A0}ABC"
        );
        assert_eq!(decode_entities("&mdash;&hellip;&copy;&#150;"), "—…©–");
        assert_eq!(
            decode_entities("AT&T &unknown; &#xZZ; &#0; &"),
            "AT&T &unknown; &#xZZ; \u{FFFD} &"
        );
        assert_eq!(decode_entities("&#1114112;&#xD800;"), "\u{FFFD}\u{FFFD}");
        assert_eq!(html_to_text("a&nbsp;&nbsp;b &amp;amp;"), "a b &amp;");
    }

    #[test]
    fn titles() {
        assert_eq!(
            title("<html><head><TITLE>\n  A &amp; B\n</TITLE></head>").as_deref(),
            Some("A & B")
        );
        assert_eq!(
            title("<titles>no</titles><title>yes</title>").as_deref(),
            Some("yes")
        );
        assert_eq!(title("<p>no title</p>"), None);
        assert_eq!(title("<title>   </title>"), None);
        assert_eq!(title("<title>unterminated"), None);
    }

    #[test]
    fn hostile_input_is_linear_and_safe() {
        assert_eq!(html_to_text(""), "");
        assert_eq!(html_to_text("<"), "<");
        assert_eq!(html_to_text("<p"), "");
        assert_eq!(html_to_text("<!--"), "");
        assert_eq!(html_to_text("<script>never closed"), "");
        assert_eq!(html_to_text("<a href=\"unterminated>text"), "");
        assert_eq!(html_to_text("ü<b>ö</b>&#x1F600;"), "üö😀");
        let big = "<div>x</div>".repeat(100_000);
        assert_eq!(html_to_text(&big).lines().count(), 100_000);
        let nested = "<div>".repeat(100_000);
        assert_eq!(html_to_text(&nested), "");
        // Unclosed `<head>`s are looked past once, not once each.
        let heads = format!("<body>{}", "<head>".repeat(200_000));
        let start = std::time::Instant::now();
        assert_eq!(html_to_text(&heads), "");
        assert!(start.elapsed().as_secs() < 5);
        let titles = "<titles".repeat(300_000);
        let start = std::time::Instant::now();
        assert_eq!(title(&titles), None);
        assert!(start.elapsed().as_secs() < 5);
    }

    #[test]
    fn whitespace_around_markers() {
        let html = "<ul>\n  <li>\n    one\n  </li>\n</ul>\n<table>\n<tr>\n  <td> a </td>\n  <td>\n b </td>\n</tr>\n</table>";
        assert_eq!(html_to_text(html), "- one\n\na | b");
    }
}
