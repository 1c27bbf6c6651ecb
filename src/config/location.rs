//! What a route says beyond its host and prefix, as an nginx `location` says it: exact and
//! regex paths, method / header / query / client matchers, rewrites, `return`, error pages.
//! Each part is compiled here, once: `validate` reports what fails with its place, and the
//! snapshot builds the same values from the same functions.

use super::RouteConfig;
use crate::connection::client_address::IpRange;
use crate::route::rewrite::{Rewrite, RewriteError};
use crate::route::template::{CaptureNames, Template};
use crate::route::{PathPattern, ValueMatch};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use regex::Regex;
use serde::Deserialize;
use std::ops::Range;
use toml::Spanned;

/// `[[route.match_header]]` / `[[route.match_query]]`: a field by name, and one condition on it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMatchConfig {
    pub name: Spanned<String>,
    #[serde(default)]
    pub exact: Option<Spanned<String>>,
    #[serde(default)]
    pub regex: Option<Spanned<String>>,
    /// `true`: the field is there (any value); `false`: it is not.
    #[serde(default)]
    pub present: Option<Spanned<bool>>,
}

/// `[[route.rewrite]]` (nginx `rewrite REGEX TO [flag]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteConfig {
    pub regex: Spanned<String>,
    pub to: Spanned<String>,
    #[serde(default)]
    pub flag: Option<Spanned<String>>,
}

/// `[route.return]` (nginx `return`): a fixed answer, or a redirect.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReturnConfig {
    pub status: Spanned<u16>,
    /// For 301, 302, 303, 307 and 308: where to (a template).
    #[serde(default)]
    pub location: Option<Spanned<String>>,
    /// The body (a template); none by default.
    #[serde(default)]
    pub body: Option<Spanned<String>>,
    #[serde(default)]
    pub content_type: Option<Spanned<String>>,
}

/// `[[error_page]]` / `[[route.error_page]]` (nginx `error_page`): the body of the answers
/// gatehouse makes itself with these statuses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorPageConfig {
    pub status: Spanned<Vec<u16>>,
    #[serde(default)]
    pub body: Option<Spanned<String>>,
    /// A file whose content is the body, read when the config is loaded.
    #[serde(default)]
    pub file: Option<Spanned<String>>,
    #[serde(default)]
    pub content_type: Option<Spanned<String>>,
}

/// A problem with a place: the span, the key under the route, the message.
pub type Located = (Range<usize>, String, String);

fn located(span: Range<usize>, key: impl Into<String>, message: impl Into<String>) -> Located {
    (span, key.into(), message.into())
}

/// The route's path pattern. Only one of `path_exact`, `path_regex` and an explicit
/// `path_prefix` may be given.
pub fn path_pattern(route: &RouteConfig) -> Result<PathPattern, Located> {
    let prefix_given = route.path_prefix.span() != (0..0);
    let given = [
        route.path_exact.is_some(),
        route.path_regex.is_some(),
        prefix_given,
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        let span = route
            .path_regex
            .as_ref()
            .or(route.path_exact.as_ref())
            .map_or(0..0, Spanned::span);
        return Err(located(
            span,
            "path_regex",
            "give one of path_prefix, path_exact and path_regex",
        ));
    }
    if let Some(exact) = &route.path_exact {
        if !exact.get_ref().starts_with('/') {
            return Err(located(exact.span(), "path_exact", "must start with '/'"));
        }
        return Ok(PathPattern::Exact(exact.get_ref().clone()));
    }
    if let Some(regex) = &route.path_regex {
        return Regex::new(regex.get_ref())
            .map(PathPattern::Regex)
            .map_err(|e| located(regex.span(), "path_regex", regex_error(&e)));
    }
    let prefix = route.path_prefix.get_ref();
    if !prefix.starts_with('/') {
        return Err(located(
            route.path_prefix.span(),
            "path_prefix",
            "must start with '/'",
        ));
    }
    Ok(PathPattern::Prefix {
        prefix: prefix.clone(),
        stops_regex: route.prefix_stops_regex,
    })
}

fn regex_error(error: &regex::Error) -> String {
    one_line(&error.to_string())
}

/// The regex crate's message on one line: it spans several, with a caret under the fault.
fn one_line(message: &str) -> String {
    format!(
        "invalid regex: {}",
        message.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

/// The names of the path regex's groups, for templates that refer to them.
pub fn capture_names(pattern: &PathPattern) -> Vec<Option<String>> {
    match pattern {
        PathPattern::Regex(regex) => regex
            .capture_names()
            .map(|n| n.map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn captures_of(names: &[Option<String>]) -> CaptureNames<'_> {
    CaptureNames {
        count: names.len(),
        names,
    }
}

pub fn methods(route: &RouteConfig) -> Result<Vec<Method>, Located> {
    route
        .methods
        .iter()
        .enumerate()
        .map(|(i, method)| {
            let text = method.get_ref();
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(located(
                    method.span(),
                    format!("methods[{i}]"),
                    format!("{text:?} is not a method; write it in capitals, e.g. \"GET\""),
                ));
            }
            Method::from_bytes(text.as_bytes())
                .map_err(|_| located(method.span(), format!("methods[{i}]"), "not a method"))
        })
        .collect()
}

pub fn clients(route: &RouteConfig) -> Result<Vec<IpRange>, Located> {
    route
        .clients
        .iter()
        .enumerate()
        .map(|(i, range)| {
            IpRange::parse(range.get_ref())
                .map_err(|message| located(range.span(), format!("clients[{i}]"), message))
        })
        .collect()
}

fn value_match(field: &FieldMatchConfig, key: &str) -> Result<ValueMatch, Located> {
    match (&field.exact, &field.regex, &field.present) {
        (Some(exact), None, None) => Ok(ValueMatch::Exact(exact.get_ref().clone())),
        (None, Some(regex), None) => Regex::new(regex.get_ref())
            .map(ValueMatch::Regex)
            .map_err(|e| located(regex.span(), format!("{key}.regex"), regex_error(&e))),
        (None, None, Some(present)) => Ok(ValueMatch::Present(*present.get_ref())),
        _ => Err(located(
            field.name.span(),
            key,
            "give exactly one of exact, regex and present",
        )),
    }
}

pub fn header_matches(route: &RouteConfig) -> Result<Vec<(HeaderName, ValueMatch)>, Located> {
    route
        .match_header
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let key = format!("match_header[{i}]");
            let name = HeaderName::from_bytes(field.name.get_ref().as_bytes()).map_err(|_| {
                located(
                    field.name.span(),
                    format!("{key}.name"),
                    "not a valid header name",
                )
            })?;
            Ok((name, value_match(field, &key)?))
        })
        .collect()
}

pub fn query_matches(route: &RouteConfig) -> Result<Vec<(String, ValueMatch)>, Located> {
    route
        .match_query
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let key = format!("match_query[{i}]");
            if field.name.get_ref().is_empty() {
                return Err(located(field.name.span(), format!("{key}.name"), "empty"));
            }
            Ok((field.name.get_ref().clone(), value_match(field, &key)?))
        })
        .collect()
}

pub fn rewrites(route: &RouteConfig) -> Result<Vec<Rewrite>, Located> {
    route
        .rewrite
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let key = |field: &str| format!("rewrite[{i}].{field}");
            Rewrite::compile(
                rule.regex.get_ref(),
                rule.to.get_ref(),
                rule.flag.as_ref().map(|f| f.get_ref().as_str()),
            )
            .map_err(|e| match e {
                RewriteError::Regex(m) => located(rule.regex.span(), key("regex"), one_line(&m)),
                RewriteError::To(m) => located(rule.to.span(), key("to"), m),
                RewriteError::Flag(m) => located(
                    rule.flag.as_ref().map_or(0..0, Spanned::span),
                    key("flag"),
                    m,
                ),
            })
        })
        .collect()
}

/// A compiled `return`.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub location: Option<Template>,
    pub body: Option<Template>,
    pub content_type: HeaderValue,
}

pub fn answer(route: &RouteConfig, names: &[Option<String>]) -> Result<Option<Answer>, Located> {
    let Some(answer) = &route.answer else {
        return Ok(None);
    };
    let status = StatusCode::from_u16(*answer.status.get_ref())
        .ok()
        .filter(|s| (200..=599).contains(&s.as_u16()))
        .ok_or_else(|| {
            located(
                answer.status.span(),
                "return.status",
                "expected a status from 200 to 599",
            )
        })?;
    let redirect = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
    let location = match (&answer.location, redirect) {
        (Some(location), true) => Some(
            Template::compile(location.get_ref(), captures_of(names))
                .map_err(|m| located(location.span(), "return.location", m))?,
        ),
        (Some(location), false) => {
            return Err(located(
                location.span(),
                "return.location",
                "only a redirect (301, 302, 303, 307, 308) has a location",
            ));
        }
        (None, true) => {
            return Err(located(
                answer.status.span(),
                "return.location",
                "a redirect needs a location",
            ));
        }
        (None, false) => None,
    };
    let body = match &answer.body {
        Some(body) => Some(
            Template::compile(body.get_ref(), captures_of(names))
                .map_err(|m| located(body.span(), "return.body", m))?,
        ),
        None => None,
    };
    let content_type = content_type(answer.content_type.as_ref(), "return.content_type")?;
    Ok(Some(Answer {
        status,
        location,
        body,
        content_type,
    }))
}

fn content_type(value: Option<&Spanned<String>>, key: &str) -> Result<HeaderValue, Located> {
    match value {
        None => Ok(HeaderValue::from_static("text/plain; charset=utf-8")),
        Some(value) => HeaderValue::from_str(value.get_ref())
            .map_err(|_| located(value.span(), key, "not a valid Content-Type value")),
    }
}

/// A compiled error page.
#[derive(Clone, Debug)]
pub struct ErrorPage {
    pub statuses: Vec<StatusCode>,
    pub body: Bytes,
    pub content_type: HeaderValue,
}

/// `error_page` entries; `key` is where they are (`error_page` or `route[i].error_page`).
pub fn error_pages(pages: &[ErrorPageConfig], key: &str) -> Result<Vec<ErrorPage>, Located> {
    pages
        .iter()
        .enumerate()
        .map(|(i, page)| {
            let key = |field: &str| format!("{key}[{i}].{field}");
            let statuses = page
                .status
                .get_ref()
                .iter()
                .map(|code| {
                    StatusCode::from_u16(*code)
                        .ok()
                        .filter(|s| s.is_client_error() || s.is_server_error())
                        .ok_or_else(|| {
                            located(
                                page.status.span(),
                                key("status"),
                                format!("{code} is not an error status (400 to 599)"),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if statuses.is_empty() {
                return Err(located(
                    page.status.span(),
                    key("status"),
                    "no status given",
                ));
            }
            let body = match (&page.body, &page.file) {
                (Some(body), None) => Bytes::from(body.get_ref().clone()),
                (None, Some(file)) => {
                    std::fs::read(file.get_ref())
                        .map(Bytes::from)
                        .map_err(|e| {
                            located(
                                file.span(),
                                key("file"),
                                format!("cannot read {:?}: {e}", file.get_ref()),
                            )
                        })?
                }
                _ => {
                    return Err(located(
                        page.status.span(),
                        key("body"),
                        "give one of body and file",
                    ));
                }
            };
            let content_type = match &page.content_type {
                None => HeaderValue::from_static("text/html; charset=utf-8"),
                Some(_) => content_type(page.content_type.as_ref(), &key("content_type"))?,
            };
            Ok(ErrorPage {
                statuses,
                body,
                content_type,
            })
        })
        .collect()
}

/// Request header values with variables, compiled against the path regex's groups: `(name,
/// template)` for each `request_headers.set` value that has one.
pub fn header_templates(
    route: &RouteConfig,
    names: &[Option<String>],
) -> Result<Vec<(HeaderName, Template)>, Located> {
    let mut templates = Vec::new();
    for (name, value) in &route.request_headers.set {
        if !value.get_ref().contains('$') {
            continue;
        }
        let template = Template::compile(value.get_ref(), captures_of(names))
            .map_err(|m| located(value.span(), format!("request_headers.set.{name}"), m))?;
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            templates.push((name, template));
        }
    }
    Ok(templates)
}

/// Every check of this module on one route, for `validate`.
pub fn check(route: &RouteConfig, errors: &mut Vec<Located>) {
    let pattern = match path_pattern(route) {
        Ok(pattern) => Some(pattern),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let names = pattern.as_ref().map(capture_names).unwrap_or_default();
    if let Err(e) = methods(route) {
        errors.push(e);
    }
    if let Err(e) = clients(route) {
        errors.push(e);
    }
    if let Err(e) = header_matches(route) {
        errors.push(e);
    }
    if let Err(e) = query_matches(route) {
        errors.push(e);
    }
    if let Err(e) = rewrites(route) {
        errors.push(e);
    }
    if let Err(e) = answer(route, &names) {
        errors.push(e);
    }
    if let Err(e) = error_pages(&route.error_page, "error_page") {
        errors.push(e);
    }
    if let Err(e) = header_templates(route, &names) {
        errors.push(e);
    }
    if let Some(replace) = &route.replace_prefix {
        if !matches!(pattern, Some(PathPattern::Prefix { .. })) {
            errors.push(located(
                replace.span(),
                "replace_prefix",
                "only a prefix route can replace its prefix",
            ));
        } else if !replace.get_ref().starts_with('/') {
            errors.push(located(
                replace.span(),
                "replace_prefix",
                "must start with '/'",
            ));
        } else if route.strip_prefix {
            errors.push(located(
                replace.span(),
                "replace_prefix",
                "give one of strip_prefix and replace_prefix",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_statuses_must_be_errors() {
        let page = ErrorPageConfig {
            status: Spanned::new(0..0, vec![200]),
            body: Some(Spanned::new(0..0, "x".into())),
            file: None,
            content_type: None,
        };
        assert!(error_pages(&[page], "error_page").is_err());
    }
}
