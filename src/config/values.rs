//! Pure parsers of config values that other modules also use at run time: name servers and
//! lists of accepted statuses. They live with the config so that checking a config needs
//! nothing above it.

use http::StatusCode;
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
}
