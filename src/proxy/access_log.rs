//! The access log line in nginx's `combined` format, so that log tooling written for nginx
//! (goaccess, fail2ban, awstats, ...) reads gatehouse's too. Pure formatting, no I/O.

use http::header::HeaderValue;
use http::{Method, Version};
use std::fmt::Write;
use std::net::IpAddr;
use std::time::SystemTime;

/// What one combined line says about a request.
pub(crate) struct CombinedLine<'a> {
    pub client: IpAddr,
    pub time: SystemTime,
    /// The request line's parts, or `None` for a request head that could not be read (the
    /// line then shows `"-"`).
    pub request: Option<(&'a Method, &'a str, Version)>,
    pub status: u16,
    pub body_bytes_sent: u64,
    pub referer: Option<&'a HeaderValue>,
    pub user_agent: Option<&'a HeaderValue>,
    pub request_id: &'a HeaderValue,
    /// The request's trace id, when it has a trace: quoted after the request id.
    pub trace_id: Option<&'a str>,
}

impl CombinedLine<'_> {
    /// `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
    /// "$http_referer" "$http_user_agent"`, then the request id in quotes (as nginx's
    /// `log_format` with `"$request_id"` appended: parsers of `combined` read the first nine
    /// fields and ignore the rest). Times are in UTC.
    pub(crate) fn render(&self) -> String {
        let target_len = self.request.map_or(0, |(_, target, _)| target.len());
        let mut line = String::with_capacity(160 + target_len);
        let _ = write!(line, "{} - - [{}] \"", self.client, time_local(self.time));
        match self.request {
            Some((method, target, version)) => {
                let _ = write!(line, "{method} ");
                escape_into(&mut line, target.as_bytes());
                let _ = write!(line, " {version:?}");
            }
            None => line.push('-'),
        }
        let _ = write!(line, "\" {} {} \"", self.status, self.body_bytes_sent);
        header_into(&mut line, self.referer);
        line.push_str("\" \"");
        header_into(&mut line, self.user_agent);
        line.push_str("\" \"");
        escape_into(&mut line, self.request_id.as_bytes());
        line.push('"');
        if let Some(trace_id) = self.trace_id {
            line.push_str(" \"");
            escape_into(&mut line, trace_id.as_bytes());
            line.push('"');
        }
        line
    }
}

/// nginx's `$time_local` (`27/Nov/2026:23:09:41 +0000`), rearranged from the fixed-width
/// IMF-fixdate (`Fri, 27 Nov 2026 23:09:41 GMT`) that `httpdate` writes.
fn time_local(time: SystemTime) -> String {
    let date = httpdate::fmt_http_date(time);
    match (
        date.get(5..7),
        date.get(8..11),
        date.get(12..16),
        date.get(17..25),
    ) {
        (Some(day), Some(month), Some(year), Some(clock)) => {
            format!("{day}/{month}/{year}:{clock} +0000")
        }
        _ => date,
    }
}

fn header_into(line: &mut String, value: Option<&HeaderValue>) {
    match value {
        Some(value) if !value.is_empty() => escape_into(line, value.as_bytes()),
        _ => line.push('-'),
    }
}

/// nginx's escaping of logged strings: `"`, `\`, control and non-ASCII bytes as `\xHH`, so a
/// client cannot forge a field or a line.
fn escape_into(line: &mut String, bytes: &[u8]) {
    for &byte in bytes {
        if byte == b'"' || byte == b'\\' || !(0x20..0x7f).contains(&byte) {
            let _ = write!(line, "\\x{byte:02X}");
        } else {
            line.push(char::from(byte));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn line(referer: Option<&HeaderValue>, user_agent: Option<&HeaderValue>) -> String {
        CombinedLine {
            client: "192.0.2.7".parse().unwrap(),
            // 2026-11-27 23:09:41 UTC
            time: UNIX_EPOCH + Duration::from_secs(1_795_820_981),
            request: Some((&Method::GET, "/orders?limit=2", Version::HTTP_11)),
            status: 200,
            body_bytes_sent: 612,
            referer,
            user_agent,
            request_id: &HeaderValue::from_static("3f2a"),
            trace_id: None,
        }
        .render()
    }

    #[test]
    fn renders_nginx_combined_with_the_request_id_last() {
        let ua = HeaderValue::from_static("curl/8.5.0");
        assert_eq!(
            line(None, Some(&ua)),
            "192.0.2.7 - - [27/Nov/2026:23:09:41 +0000] \"GET /orders?limit=2 HTTP/1.1\" 200 612 \"-\" \"curl/8.5.0\" \"3f2a\""
        );
    }

    #[test]
    fn escapes_quotes_backslashes_and_control_bytes_like_nginx() {
        let referer = HeaderValue::from_bytes(b"http://x/\"a\\b\t\xc3\xa9").unwrap();
        let ua = HeaderValue::from_static("");
        let rendered = line(Some(&referer), Some(&ua));
        assert!(
            rendered.ends_with(" \"http://x/\\x22a\\x5Cb\\x09\\xC3\\xA9\" \"-\" \"3f2a\""),
            "{rendered}"
        );
    }

    #[test]
    fn an_unreadable_request_line_is_a_dash() {
        let rendered = CombinedLine {
            client: "192.0.2.7".parse().unwrap(),
            time: UNIX_EPOCH,
            request: None,
            status: 400,
            body_bytes_sent: 0,
            referer: None,
            user_agent: None,
            request_id: &HeaderValue::from_static("-"),
            trace_id: None,
        }
        .render();
        assert_eq!(
            rendered,
            "192.0.2.7 - - [01/Jan/1970:00:00:00 +0000] \"-\" 400 0 \"-\" \"-\" \"-\""
        );
    }

    #[test]
    fn a_trace_id_follows_the_request_id() {
        let rendered = CombinedLine {
            client: "192.0.2.7".parse().unwrap(),
            time: UNIX_EPOCH,
            request: None,
            status: 400,
            body_bytes_sent: 0,
            referer: None,
            user_agent: None,
            request_id: &HeaderValue::from_static("3f2a"),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
        }
        .render();
        assert!(
            rendered.ends_with(" \"3f2a\" \"4bf92f3577b34da6a3ce929d0e0e4736\""),
            "{rendered}"
        );
    }

    #[test]
    fn time_local_is_day_month_year_clock_and_offset() {
        assert_eq!(
            time_local(UNIX_EPOCH + Duration::from_secs(86_400 * 3 + 5)),
            "04/Jan/1970:00:00:05 +0000"
        );
    }
}
