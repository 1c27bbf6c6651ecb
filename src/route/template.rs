//! Templates with nginx's variables (`$host`, `$request_uri`, `$arg_page`, `$1`, …), as they
//! appear in header values, redirect targets, `return` bodies and rewrites. A template is
//! compiled once, when the snapshot is built; a request only walks its parts.

use super::query_arg;
use http::HeaderMap;
use std::fmt::Write as _;
use std::net::IpAddr;

/// One variable of the supported subset.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Variable {
    /// `$host`: the request's host, without port, in lower case.
    Host,
    /// `$request_uri`: the target as the client sent it, query included.
    RequestUri,
    /// `$uri`: the current path (normal form, after rewrites), without query.
    Uri,
    /// `$args` / `$query_string`: the current query, without `?`.
    Args,
    /// `$is_args`: `?` when there is a query, else nothing.
    IsArgs,
    /// `$arg_NAME`: the first query parameter NAME (as sent, not decoded).
    Arg(String),
    /// `$scheme`: `http` or `https`.
    Scheme,
    /// `$remote_addr`: the client's address.
    RemoteAddr,
    /// `$request_method`.
    Method,
    /// `$http_NAME`: request header NAME (`_` for `-`), its first value.
    Header(http::HeaderName),
    /// `$cookie_NAME`.
    Cookie(String),
    /// `$1` … `$9`, or a named capture: a group of the regex the template belongs to.
    Capture(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Variable(Variable),
}

/// A compiled template: literal text and variables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// The capture groups a template may refer to: how many there are and their names.
#[derive(Clone, Copy, Default)]
pub struct CaptureNames<'a> {
    pub count: usize,
    pub names: &'a [Option<String>],
}

impl<'a> CaptureNames<'a> {
    /// The groups of `regex` (group 0, the whole match, included in `count`).
    pub fn of(regex: &regex::Regex, names: &'a mut Vec<Option<String>>) -> Self {
        *names = regex
            .capture_names()
            .map(|n| n.map(str::to_owned))
            .collect();
        Self {
            count: regex.captures_len(),
            names,
        }
    }
}

/// What of a request stays the same while its path is rewritten.
pub struct RequestView<'a> {
    pub method: &'a http::Method,
    /// The request target as the client sent it.
    pub request_uri: &'a str,
    /// The host, without port.
    pub host: &'a str,
    pub https: bool,
    pub client: IpAddr,
    pub headers: &'a HeaderMap,
}

/// What a template reads its variables from: one request, at one moment.
pub struct Context<'a> {
    pub request: &'a RequestView<'a>,
    /// The current path, without query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// Group texts of the regex match the template belongs to (index 0, the whole match).
    pub captures: &'a [Option<String>],
}

impl Template {
    /// Compiles `text`. `$name` and `${name}` name a variable; `$$` is a literal `$`. An
    /// unknown variable, or a capture the regex does not have, is an error.
    pub fn compile(text: &str, captures: CaptureNames<'_>) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            literal.push_str(&rest[..at]);
            rest = &rest[at + 1..];
            if let Some(after) = rest.strip_prefix('$') {
                literal.push('$');
                rest = after;
                continue;
            }
            let (name, after) = if let Some(braced) = rest.strip_prefix('{') {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("unclosed \"${{\" in {text:?}"))?;
                (&braced[..end], &braced[end + 1..])
            } else if rest.as_bytes().first().is_some_and(u8::is_ascii_digit) {
                // nginx reads one digit: `$12` is `$1` then "2".
                rest.split_at(1)
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                rest.split_at(end)
            };
            if name.is_empty() {
                return Err(format!(
                    "a \"$\" with no variable name in {text:?}; write \"$$\" for a literal \"$\""
                ));
            }
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(Part::Variable(variable(name, captures)?));
            rest = after;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Self { parts })
    }

    /// Text with no variables in it.
    pub fn literal(text: &str) -> Self {
        Self {
            parts: vec![Part::Literal(text.to_owned())],
        }
    }

    /// A template of literal text only.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// Whether it reads capture groups.
    pub fn uses_captures(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Variable(Variable::Capture(_))))
    }

    pub fn expand(&self, context: &Context<'_>) -> String {
        let mut out = String::new();
        self.expand_into(context, &mut out);
        out
    }

    pub fn expand_into(&self, context: &Context<'_>, out: &mut String) {
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Variable(variable) => push_variable(variable, context, out),
            }
        }
    }
}

fn variable(name: &str, captures: CaptureNames<'_>) -> Result<Variable, String> {
    if let Ok(index) = name.parse::<usize>() {
        return if index < captures.count {
            Ok(Variable::Capture(index))
        } else if captures.count == 0 {
            Err(format!(
                "${index} refers to a capture, but there is no regex here to capture from"
            ))
        } else {
            Err(format!(
                "${index} refers to a capture group the regex does not have (it has {})",
                captures.count - 1
            ))
        };
    }
    if let Some(index) = captures
        .names
        .iter()
        .position(|n| n.as_deref() == Some(name))
    {
        return Ok(Variable::Capture(index));
    }
    Ok(match name {
        "host" => Variable::Host,
        "request_uri" => Variable::RequestUri,
        "uri" | "document_uri" => Variable::Uri,
        "args" | "query_string" => Variable::Args,
        "is_args" => Variable::IsArgs,
        "scheme" => Variable::Scheme,
        "remote_addr" => Variable::RemoteAddr,
        "request_method" => Variable::Method,
        _ => {
            if let Some(arg) = name.strip_prefix("arg_").filter(|a| !a.is_empty()) {
                Variable::Arg(arg.to_owned())
            } else if let Some(header) = name.strip_prefix("http_").filter(|h| !h.is_empty()) {
                let header = header.replace('_', "-").to_ascii_lowercase();
                Variable::Header(
                    http::HeaderName::from_bytes(header.as_bytes())
                        .map_err(|_| format!("${name}: not a valid header name"))?,
                )
            } else if let Some(cookie) = name.strip_prefix("cookie_").filter(|c| !c.is_empty()) {
                Variable::Cookie(cookie.to_owned())
            } else {
                return Err(format!(
                    "unknown variable ${name}; known: $host, $request_uri, $uri, $args, $is_args, \
                     $arg_NAME, $scheme, $remote_addr, $request_method, $http_NAME, $cookie_NAME, \
                     $1..$9 and the regex's named captures"
                ));
            }
        }
    })
}

fn push_variable(variable: &Variable, context: &Context<'_>, out: &mut String) {
    match variable {
        Variable::Host => out.push_str(context.request.host),
        Variable::RequestUri => out.push_str(context.request.request_uri),
        Variable::Uri => out.push_str(context.path),
        Variable::Args => out.push_str(context.query.unwrap_or("")),
        Variable::IsArgs => {
            if context.query.is_some_and(|q| !q.is_empty()) {
                out.push('?');
            }
        }
        Variable::Arg(name) => {
            if let Some(value) = context.query.and_then(|q| query_arg(q, name)) {
                out.push_str(value);
            }
        }
        Variable::Scheme => out.push_str(if context.request.https {
            "https"
        } else {
            "http"
        }),
        Variable::RemoteAddr => {
            let _ = write!(out, "{}", context.request.client);
        }
        Variable::Method => out.push_str(context.request.method.as_str()),
        Variable::Header(name) => {
            if let Some(value) = context
                .request
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
            {
                out.push_str(value);
            }
        }
        Variable::Cookie(name) => {
            if let Some(value) = crate::http1::cookie(context.request.headers, name)
                .and_then(|v| std::str::from_utf8(v).ok())
            {
                out.push_str(value);
            }
        }
        Variable::Capture(index) => {
            if let Some(Some(text)) = context.captures.get(*index) {
                out.push_str(text);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Method};

    pub(crate) fn view(headers: &HeaderMap) -> RequestView<'_> {
        RequestView {
            method: &Method::GET,
            request_uri: "/users/42/orders?page=2&sort=asc",
            host: "api.example.com",
            https: true,
            client: "10.1.2.3".parse().unwrap(),
            headers,
        }
    }

    fn context<'a>(request: &'a RequestView<'a>, captures: &'a [Option<String>]) -> Context<'a> {
        Context {
            request,
            path: "/users/42/orders",
            query: Some("page=2&sort=asc"),
            captures,
        }
    }

    fn expand(text: &str, names: &[Option<String>], captures: &[Option<String>]) -> String {
        let mut headers = HeaderMap::new();
        headers.insert("x-user", HeaderValue::from_static("ann"));
        headers.insert("cookie", HeaderValue::from_static("a=1; session=s3"));
        let names = CaptureNames {
            count: names.len(),
            names,
        };
        Template::compile(text, names)
            .unwrap()
            .expand(&context(&view(&headers), captures))
    }

    #[test]
    fn variables_expand() {
        assert_eq!(
            expand("https://$host$request_uri", &[], &[]),
            "https://api.example.com/users/42/orders?page=2&sort=asc"
        );
        assert_eq!(
            expand("$uri$is_args$args", &[], &[]),
            "/users/42/orders?page=2&sort=asc"
        );
        assert_eq!(expand("p=$arg_page,x=$arg_missing.", &[], &[]), "p=2,x=.");
        assert_eq!(
            expand("$scheme $remote_addr $request_method", &[], &[]),
            "https 10.1.2.3 GET"
        );
        assert_eq!(expand("$http_x_user/$cookie_session", &[], &[]), "ann/s3");
        assert_eq!(expand("cost: $$5", &[], &[]), "cost: $5");
        assert_eq!(expand("${host}x", &[], &[]), "api.example.comx");
    }

    #[test]
    fn captures_by_number_and_name() {
        let names = [None, Some("id".to_owned())];
        let captures = [Some("/users/42".to_owned()), Some("42".to_owned())];
        assert_eq!(
            expand("/orders?user=$1", &names, &captures),
            "/orders?user=42"
        );
        assert_eq!(expand("/o/$id/${id}x", &names, &captures), "/o/42/42x");
        // One digit, as nginx reads it.
        assert_eq!(expand("$12", &names, &captures), "422");
    }

    #[test]
    fn errors_name_the_problem() {
        let none = CaptureNames::default();
        assert!(
            Template::compile("$nope", none)
                .unwrap_err()
                .contains("unknown variable $nope")
        );
        assert!(
            Template::compile("$1", none)
                .unwrap_err()
                .contains("no regex")
        );
        let names = [None, None];
        let two = CaptureNames {
            count: 2,
            names: &names,
        };
        assert!(Template::compile("$2", two).unwrap_err().contains("has 1"));
        assert!(Template::compile("a $ b", none).is_err());
        assert!(Template::compile("${host", none).is_err());
        assert!(Template::compile("$http_bad\u{7f}", none).is_ok());
    }

    #[test]
    fn literal_templates_are_known() {
        let none = CaptureNames::default();
        assert!(Template::compile("plain", none).unwrap().is_literal());
        assert!(!Template::compile("$host", none).unwrap().is_literal());
        assert!(Template::compile("", none).unwrap().is_literal());
    }

    proptest::proptest! {
        #[test]
        fn compile_never_panics(text in "\\PC{0,40}") {
            let names = [None, Some("id".to_owned())];
            let captures = CaptureNames { count: 2, names: &names };
            if let Ok(template) = Template::compile(&text, captures) {
                let headers = HeaderMap::new();
                let _ = template.expand(&context(&view(&headers), &[]));
            }
        }
    }
}
