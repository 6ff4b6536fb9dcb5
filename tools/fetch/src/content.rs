//! What a response body is (HTML, other text, binary) and how to decode it.

use crate::html::windows_1252_c1;

/// How `fetch` treats a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Reduced to readable text.
    Html,
    /// Returned as it is.
    Text,
    /// Not returned; only its size is.
    Binary,
}

/// The media type of a `Content-Type` value, lower-cased, without
/// parameters: `text/html; charset=utf-8` is `text/html`.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The `charset` parameter of a `Content-Type` value, lower-cased.
pub fn charset(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches(['"', '\'']).to_ascii_lowercase())
    })
}

/// Classify a body by its `Content-Type`, or, when there is none (or a
/// generic one), by sniffing its first bytes.
pub fn classify(content_type: Option<&str>, body: &[u8]) -> Kind {
    declared(content_type).unwrap_or_else(|| sniff(body))
}

/// The kind a `Content-Type` declares; `None` when there is none, or a
/// generic one, and the body must be sniffed.
pub fn declared(content_type: Option<&str>) -> Option<Kind> {
    let media = content_type.map(media_type).unwrap_or_default();
    match media.as_str() {
        "text/html" | "application/xhtml+xml" => return Some(Kind::Html),
        "" | "application/octet-stream" | "binary/octet-stream" | "unknown/unknown" => {
            return None;
        }
        _ => {}
    }
    let textual = media.starts_with("text/")
        || media.ends_with("+json")
        || media.ends_with("+xml")
        || matches!(
            media.as_str(),
            "application/json"
                | "application/xml"
                | "application/javascript"
                | "application/ecmascript"
                | "application/x-javascript"
                | "application/x-www-form-urlencoded"
                | "application/x-ndjson"
                | "application/jsonl"
                | "application/yaml"
                | "application/x-yaml"
                | "application/toml"
                | "application/x-sh"
                | "application/x-httpd-php"
                | "application/sql"
                | "application/graphql"
                | "application/csv"
                | "application/x-tex"
                | "application/x-latex"
                | "application/rtf"
                | "application/x-subrip"
                | "image/svg+xml"
        );
    Some(if textual { Kind::Text } else { Kind::Binary })
}

/// A body with no useful type: text if its start is text, HTML if that text
/// starts like an HTML document.
fn sniff(body: &[u8]) -> Kind {
    let head = &body[..body.len().min(1024)];
    if head.contains(&0) || !is_utf8_prefix(head) {
        return Kind::Binary;
    }
    let start = String::from_utf8_lossy(head);
    let start = start
        .trim_start_matches('\u{FEFF}')
        .trim_start()
        .to_ascii_lowercase();
    if start.starts_with("<!doctype html") || start.starts_with("<html") {
        Kind::Html
    } else {
        Kind::Text
    }
}

/// Whether `bytes` is UTF-8, allowing a character cut off at the end.
fn is_utf8_prefix(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

/// Decode a body as text. `charset` is the declared one (from the header,
/// or for HTML from a `<meta>` in the first bytes); ISO-8859-1 and its
/// relatives decode as Windows-1252 (as browsers do), anything else as
/// UTF-8 with invalid bytes replaced. A character cut off by truncation at
/// the end is dropped.
pub fn decode(body: &[u8], charset: Option<&str>) -> String {
    let single_byte = matches!(
        charset,
        Some(
            "iso-8859-1"
                | "iso8859-1"
                | "latin1"
                | "latin-1"
                | "l1"
                | "windows-1252"
                | "cp1252"
                | "us-ascii"
                | "ascii"
        )
    );
    if single_byte {
        return body.iter().map(|&b| windows_1252_c1(b)).collect();
    }
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let body = match std::str::from_utf8(body) {
        Ok(text) => return text.to_string(),
        // A character cut off at the end.
        Err(e) if e.error_len().is_none() => &body[..e.valid_up_to()],
        Err(_) => body,
    };
    String::from_utf8_lossy(body).into_owned()
}

/// The charset an HTML document declares in a `<meta charset=...>` or
/// `<meta http-equiv="Content-Type" content="...; charset=...">` among its
/// first 2048 bytes.
pub fn meta_charset(body: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(&body[..body.len().min(2048)]).to_ascii_lowercase();
    let at = head.find("charset=")? + "charset=".len();
    let value: String = head[at..]
        .trim_start_matches(['"', '\''])
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
        .collect();
    (!value.is_empty()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(media_type("Text/HTML; charset=UTF-8"), "text/html");
        assert_eq!(
            charset("text/html; Charset=\"UTF-8\"").as_deref(),
            Some("utf-8")
        );
        assert_eq!(charset("text/html"), None);
        let kind = |ct: &str| classify(Some(ct), b"");
        assert_eq!(kind("text/html; charset=utf-8"), Kind::Html);
        assert_eq!(kind("application/xhtml+xml"), Kind::Html);
        assert_eq!(kind("text/plain"), Kind::Text);
        assert_eq!(kind("text/markdown"), Kind::Text);
        assert_eq!(kind("application/json"), Kind::Text);
        assert_eq!(kind("application/ld+json"), Kind::Text);
        assert_eq!(kind("application/rss+xml"), Kind::Text);
        assert_eq!(kind("image/png"), Kind::Binary);
        assert_eq!(kind("application/pdf"), Kind::Binary);
        assert_eq!(kind("application/zip"), Kind::Binary);
    }

    #[test]
    fn sniffs_untyped_bodies() {
        assert_eq!(classify(None, b"  <!DOCTYPE html><html>"), Kind::Html);
        assert_eq!(classify(Some(""), b"<HTML><body>"), Kind::Html);
        assert_eq!(classify(None, b"plain words"), Kind::Text);
        assert_eq!(
            classify(Some("application/octet-stream"), b"a,b\n1,2\n"),
            Kind::Text
        );
        assert_eq!(classify(None, b"\x89PNG\r\n\x1a\n\0\0"), Kind::Binary);
        assert_eq!(classify(None, b"\xff\xfe\xfd"), Kind::Binary);
        // A character cut in two by the 1024-byte window is still text.
        let mut cut = vec![b'a'; 1023];
        cut.extend_from_slice("é".as_bytes());
        assert_eq!(classify(None, &cut), Kind::Text);
    }

    #[test]
    fn decodes() {
        assert_eq!(decode("héllo".as_bytes(), None), "héllo");
        assert_eq!(decode(b"\xEF\xBB\xBFbom", Some("utf-8")), "bom");
        assert_eq!(decode(b"caf\xE9 \x93q\x94", Some("iso-8859-1")), "café “q”");
        // Truncation in the middle of a character drops the partial one.
        let text = "ab€".as_bytes();
        assert_eq!(decode(&text[..text.len() - 1], None), "ab");
        assert_eq!(decode(b"a\xFFb", None), "a\u{FFFD}b");
    }

    #[test]
    fn meta_charsets() {
        assert_eq!(
            meta_charset(b"<html><head><meta charset=\"windows-1252\">").as_deref(),
            Some("windows-1252")
        );
        assert_eq!(
            meta_charset(b"<meta http-equiv=Content-Type content='text/html; charset=ISO-8859-1'>")
                .as_deref(),
            Some("iso-8859-1")
        );
        assert_eq!(meta_charset(b"<html><body>no charset"), None);
    }
}
