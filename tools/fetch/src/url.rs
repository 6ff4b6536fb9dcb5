//! A small parser for the absolute `http`/`https` URLs `fetch` accepts, and
//! resolution of redirect targets against them.
//!
//! It splits a URL into what a wasi:http request needs (scheme, authority,
//! path with query), percent-encodes characters a request line cannot carry,
//! and rejects everything else with a message that says how to fix the URL.

use std::fmt;

/// Longest URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 8192;

/// The schemes `fetch` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `http://`
    Http,
    /// `https://`
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// An absolute `http` or `https` URL, split as a request needs it. The
/// fragment is dropped: it is never sent to a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// The scheme.
    pub scheme: Scheme,
    /// `host` or `host:port`, the host lower-cased (`[v6]` for IPv6).
    pub authority: String,
    /// The path and query, starting with `/`, percent-encoded where needed.
    pub path_and_query: String,
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme.as_str(),
            self.authority,
            self.path_and_query
        )
    }
}

/// Parse an absolute `http://` or `https://` URL.
pub fn parse(input: &str) -> Result<Url, String> {
    let input = input.trim();
    if input.is_empty() {
        return Err("`url` is empty: give a full URL such as https://example.com/page".to_string());
    }
    if input.len() > MAX_URL_LEN {
        return Err(format!(
            "the URL is {} bytes long; the limit is {MAX_URL_LEN}",
            input.len()
        ));
    }
    let Some((scheme, rest)) = split_scheme(input) else {
        return Err(format!(
            "`{input}` has no scheme: write it in full, e.g. https://{}",
            input.trim_start_matches('/')
        ));
    };
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => {
            return Err(format!(
                "only http:// and https:// URLs can be fetched, not `{other}:` URLs"
            ));
        }
    };
    let Some(rest) = rest.strip_prefix("//") else {
        return Err(format!(
            "`{input}` is not an absolute URL: write it as {}://host/path",
            scheme.as_str()
        ));
    };
    // The fragment is for the reader, not the server.
    let rest = rest.split('#').next().unwrap_or_default();
    let end = rest.find(['/', '?', '\\']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let authority = parse_authority(authority, input)?;
    Ok(Url {
        scheme,
        authority,
        path_and_query: encode_path(path),
    })
}

/// Resolve `location` (a redirect's `Location` header: absolute, scheme
/// relative, absolute path, query or relative path) against `base`.
pub fn resolve(base: &Url, location: &str) -> Result<Url, String> {
    let location = location.trim();
    if split_scheme(location).is_some() {
        return parse(location);
    }
    if location.starts_with("//") {
        return parse(&format!("{}:{location}", base.scheme.as_str()));
    }
    let location = location.split('#').next().unwrap_or_default();
    let base_path = base
        .path_and_query
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    let path_and_query = if location.is_empty() {
        base.path_and_query.clone()
    } else if location.starts_with('/') {
        location.to_string()
    } else if location.starts_with('?') {
        format!("{base_path}{location}")
    } else {
        let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
        format!("{dir}{location}")
    };
    let (path, query) = match path_and_query.find('?') {
        Some(i) => path_and_query.split_at(i),
        None => (path_and_query.as_str(), ""),
    };
    Ok(Url {
        scheme: base.scheme,
        authority: base.authority.clone(),
        path_and_query: encode_path(&format!("{}{query}", remove_dot_segments(path))),
    })
}

/// `scheme:` at the start of `input` (RFC 3986: a letter, then letters,
/// digits, `+`, `-`, `.`), and what follows the colon.
fn split_scheme(input: &str) -> Option<(&str, &str)> {
    let colon = input.find(':')?;
    let scheme = &input[..colon];
    let mut chars = scheme.chars();
    let first = chars.next()?;
    if !first.is_ascii_alphabetic()
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    let rest = &input[colon + 1..];
    // `localhost:8080/x` or `example.com:80` is a host and port, not a scheme.
    if !rest.starts_with("//") && rest.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some((scheme, rest))
}

fn parse_authority(authority: &str, input: &str) -> Result<String, String> {
    if authority.contains('@') {
        return Err(format!(
            "`{input}` contains credentials (`user@host`); they are not supported: \
             remove the part before `@`"
        ));
    }
    if authority.is_empty() {
        return Err(format!(
            "`{input}` has no host: write it as https://host/path"
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some(close) = v6.find(']') else {
            return Err(format!("the IPv6 address in `{input}` is missing its `]`"));
        };
        let address = &v6[..close];
        if address.is_empty()
            || !address
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err(format!("`[{address}]` in `{input}` is not an IPv6 address"));
        }
        let after = &v6[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port),
            None if after.is_empty() => None,
            None => {
                return Err(format!(
                    "unexpected `{after}` after the IPv6 address in `{input}`"
                ));
            }
        };
        (&authority[..close + 2], port)
    } else {
        match authority.split_once(':') {
            Some((_, port)) if port.contains(':') => {
                return Err(format!(
                    "the host in `{input}` has several `:`; write an IPv6 address in brackets, \
                     e.g. http://[::1]:8080/"
                ));
            }
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if !host.starts_with('[') {
        if host.is_empty() {
            return Err(format!(
                "`{input}` has no host: write it as https://host/path"
            ));
        }
        if !host.is_ascii() {
            return Err(format!(
                "the host `{host}` has non-ASCII characters: write it in its punycode form \
                 (xn--...)"
            ));
        }
        if let Some(bad) = host
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
        {
            return Err(format!(
                "the host `{host}` contains `{bad}`, which a host name cannot contain"
            ));
        }
    }
    let mut authority = host.to_ascii_lowercase();
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(0) | Err(_) if !port.is_empty() => {
                return Err(format!(
                    "the port `{port}` in `{input}` is not a port number (1 to 65535)"
                ));
            }
            Ok(number) => {
                authority.push(':');
                authority.push_str(&number.to_string());
            }
            // `http://host:/` means the default port.
            Err(_) => {}
        }
    }
    Ok(authority)
}

/// The path and query of a request: `/` when empty, with characters a
/// request line cannot carry (spaces, controls, non-ASCII, `"<>\^`{|}`)
/// percent-encoded. `%` is kept: the URL is taken to be encoded already.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 1);
    if !path.starts_with('/') {
        out.push('/');
    }
    for c in path.chars() {
        let keep = c.is_ascii_graphic()
            && !matches!(c, '"' | '<' | '>' | '\\' | '^' | '`' | '{' | '|' | '}');
        if keep {
            out.push(c);
        } else if c == '\\' {
            // Browsers read a backslash in a path as a slash.
            out.push('/');
        } else {
            let mut bytes = [0; 4];
            for byte in c.encode_utf8(&mut bytes).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    out
}

/// RFC 3986 section 5.2.4, for an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = path.split('/').skip(1).peekable();
    let mut trailing_slash = false;
    while let Some(part) = parts.next() {
        let last = parts.peek().is_none();
        match part {
            "." => trailing_slash = last,
            ".." => {
                segments.pop();
                trailing_slash = last;
            }
            _ => {
                segments.push(part);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::new();
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> String {
        match parse(s) {
            Ok(u) => u.to_string(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn splits_and_normalises() {
        let u = parse("HTTPS://Example.COM:8443/a/b?q=1#frag").unwrap();
        assert_eq!(u.scheme, Scheme::Https);
        assert_eq!(u.authority, "example.com:8443");
        assert_eq!(u.path_and_query, "/a/b?q=1");
        assert_eq!(url("http://example.com"), "http://example.com/");
        assert_eq!(url("http://example.com?x=1"), "http://example.com/?x=1");
        assert_eq!(url("  https://example.com/  "), "https://example.com/");
        assert_eq!(url("http://[::1]:8080/x"), "http://[::1]:8080/x");
        assert_eq!(url("http://[2001:db8::1]/"), "http://[2001:db8::1]/");
        assert_eq!(url("http://example.com:/x"), "http://example.com/x");
        assert_eq!(url("http://my_host.local/"), "http://my_host.local/");
    }

    #[test]
    fn encodes_what_a_request_line_cannot_carry() {
        assert_eq!(
            url("https://example.com/a b/ü?q=\"x\"|y"),
            "https://example.com/a%20b/%C3%BC?q=%22x%22%7Cy"
        );
        assert_eq!(
            url("https://example.com/already%20encoded"),
            "https://example.com/already%20encoded"
        );
    }

    #[test]
    fn rejects_with_a_fix() {
        assert_eq!(
            url("example.com/page"),
            "error: `example.com/page` has no scheme: write it in full, e.g. https://example.com/page"
        );
        assert_eq!(
            url("localhost:8080/x"),
            "error: `localhost:8080/x` has no scheme: write it in full, e.g. https://localhost:8080/x"
        );
        assert_eq!(
            url("ftp://example.com/"),
            "error: only http:// and https:// URLs can be fetched, not `ftp:` URLs"
        );
        assert_eq!(
            url("file:///etc/passwd"),
            "error: only http:// and https:// URLs can be fetched, not `file:` URLs"
        );
        assert!(url("https://user:pw@example.com/").contains("credentials"));
        assert!(url("https:///path").contains("has no host"));
        assert!(url("https://bücher.de/").contains("punycode"));
        assert!(url("https://exa mple.com/").contains("contains ` `"));
        assert!(url("https://example.com:99999/").contains("is not a port number"));
        assert!(url("https://example.com:0/").contains("is not a port number"));
        assert!(url("http://::1/").contains("IPv6 address in brackets"));
        assert!(url("http://[::1/").contains("missing its `]`"));
        assert!(url("mailto:someone@example.com").contains("not `mailto:`"));
        assert!(url("").contains("is empty"));
        assert!(url(&format!("https://example.com/{}", "a".repeat(MAX_URL_LEN))).contains("limit"));
    }

    #[test]
    fn resolves_redirects() {
        let base = parse("https://example.com/docs/guide/intro.html?x=1").unwrap();
        let r = |loc: &str| resolve(&base, loc).unwrap().to_string();
        assert_eq!(r("https://other.org/"), "https://other.org/");
        assert_eq!(r("//cdn.example.com/a"), "https://cdn.example.com/a");
        assert_eq!(r("/root"), "https://example.com/root");
        assert_eq!(r("?y=2"), "https://example.com/docs/guide/intro.html?y=2");
        assert_eq!(r("next.html"), "https://example.com/docs/guide/next.html");
        assert_eq!(r("../api/"), "https://example.com/docs/api/");
        assert_eq!(r("./"), "https://example.com/docs/guide/");
        assert_eq!(r("../../../../x?q"), "https://example.com/x?q");
        assert_eq!(r(""), "https://example.com/docs/guide/intro.html?x=1");
        assert_eq!(r("a b#frag"), "https://example.com/docs/guide/a%20b");
        assert!(resolve(&base, "ftp://example.com/").is_err());
    }
}
