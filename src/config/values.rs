//! Pure parsers of config values that other modules also use at run time: name servers, lists
//! of accepted statuses and what consistent hashing hashes a request by. They live with the config so that checking a config needs
//! nothing above it.

use http::{HeaderName, StatusCode};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

const DNS_PORT: u16 = 53;

/// A name server as written in `[resolver] nameservers`: `"10.0.0.2"` (port 53),
/// `"127.0.0.1:5353"` or `"[::1]:5353"`.
pub fn parse_nameserver(text: &str) -> Option<SocketAddr> {
    text.parse::<SocketAddr>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(|ip| (ip, DNS_PORT).into()))
}

/// The statuses a check accepts, e.g. `"200-399"` or `"200,204,300-308"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusMatcher(Vec<RangeInclusive<u16>>);

impl StatusMatcher {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid status list {text:?}; expected codes and ranges such as \"200-399\" or \"200,204\""
            )
        };
        let mut ranges = Vec::new();
        for part in text.split(',').map(str::trim) {
            let (low, high) = part.split_once('-').unwrap_or((part, part));
            let low: u16 = low.trim().parse().map_err(|_| bad())?;
            let high: u16 = high.trim().parse().map_err(|_| bad())?;
            if !(100..=599).contains(&low) || !(100..=599).contains(&high) || low > high {
                return Err(bad());
            }
            ranges.push(low..=high);
        }
        Ok(Self(ranges))
    }

    pub fn accepts(&self, status: StatusCode) -> bool {
        self.0.iter().any(|range| range.contains(&status.as_u16()))
    }
}

/// What consistent hashing hashes a request by (`hash_key`), nginx's `hash $key consistent`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashKey {
    /// The client's address (nginx: `$remote_addr`).
    ClientIp,
    /// `header:NAME`: the first value of a request header (nginx: `$http_name`).
    Header(HeaderName),
    /// `cookie:NAME`: the value of a cookie (nginx: `$cookie_name`).
    Cookie(String),
    /// `path`: the path without the query (nginx: `$uri`).
    Path,
    /// `uri`: the path with the query (nginx: `$request_uri`).
    Uri,
}

impl HashKey {
    pub fn parse(text: &str) -> Result<Self, String> {
        let expected =
            "expected \"client_ip\", \"header:NAME\", \"cookie:NAME\", \"path\" or \"uri\"";
        match text.split_once(':') {
            None => match text {
                "client_ip" => Ok(Self::ClientIp),
                "path" => Ok(Self::Path),
                "uri" => Ok(Self::Uri),
                _ => Err(format!("unknown hash key {text:?}; {expected}")),
            },
            Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
                .map(Self::Header)
                .map_err(|_| format!("{name:?} is not a header name")),
            Some(("cookie", name)) if is_token(name) => Ok(Self::Cookie(name.to_owned())),
            Some(("cookie", name)) => Err(format!("{name:?} is not a cookie name")),
            Some(_) => Err(format!("unknown hash key {text:?}; {expected}")),
        }
    }
}

/// Written back as in the config (a header name in lower case), for `/status`.
impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientIp => f.write_str("client_ip"),
            Self::Header(name) => write!(f, "header:{name}"),
            Self::Cookie(name) => write!(f, "cookie:{name}"),
            Self::Path => f.write_str("path"),
            Self::Uri => f.write_str("uri"),
        }
    }
}

/// An RFC 9110 token, which a cookie name is (RFC 6265 §4.1.1).
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lists_and_ranges() {
        let m = StatusMatcher::parse("200-399").unwrap();
        assert!(m.accepts(StatusCode::OK));
        assert!(m.accepts(StatusCode::PERMANENT_REDIRECT));
        assert!(!m.accepts(StatusCode::NOT_FOUND));
        let m = StatusMatcher::parse("200, 204,300-308").unwrap();
        assert!(m.accepts(StatusCode::NO_CONTENT));
        assert!(!m.accepts(StatusCode::CREATED));
        assert!(StatusMatcher::parse("2xx").is_err());
        assert!(StatusMatcher::parse("399-200").is_err());
        assert!(StatusMatcher::parse("99").is_err());
    }

    #[test]
    fn nameservers_take_port_53_unless_given() {
        assert_eq!(
            parse_nameserver("10.0.0.2"),
            Some("10.0.0.2:53".parse().unwrap())
        );
        assert_eq!(
            parse_nameserver("127.0.0.1:5353"),
            Some("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(
            parse_nameserver("[::1]:5353"),
            Some("[::1]:5353".parse().unwrap())
        );
        assert_eq!(parse_nameserver("::1"), Some("[::1]:53".parse().unwrap()));
        assert_eq!(parse_nameserver("dns.example"), None);
    }

    #[test]
    fn hash_keys_parse_and_print_back() {
        for text in [
            "client_ip",
            "path",
            "uri",
            "header:x-user",
            "cookie:session",
        ] {
            assert_eq!(HashKey::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            HashKey::parse("header:X-User"),
            Ok(HashKey::Header(HeaderName::from_static("x-user")))
        );
        assert_eq!(
            HashKey::parse("cookie:Session_ID"),
            Ok(HashKey::Cookie("Session_ID".into()))
        );
        for bad in [
            "",
            "ip",
            "header:",
            "header:a b",
            "cookie:",
            "cookie:a=b",
            "query:id",
            "URI",
        ] {
            assert!(HashKey::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
