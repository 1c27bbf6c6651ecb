//! `[limit.NAME]`: request rate and concurrency limits (nginx's `limit_req` and `limit_conn`),
//! and the pure
//! parsers of their values (`"100/s"`, `"header:X-Api-Key"`), which the compiled limiter
//! uses too.

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::time::Duration;
use toml::Spanned;

/// One named rate limit; routes name it in `limits = [...]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The sustained rate: `"100/s"`, `"600/m"` or `"10000/h"`; none for a limit of
    /// `concurrency` only.
    #[serde(default)]
    pub rate: Option<Spanned<String>>,
    /// Requests of one key in flight at once (nginx's `limit_conn`); 0 for none.
    #[serde(default)]
    pub concurrency: u32,
    /// Requests allowed above the rate at once (nginx's `burst`).
    #[serde(default)]
    pub burst: u32,
    /// Answer requests over the rate at once (within the burst) rather than delaying them to
    /// the rate (nginx's `nodelay`; without it, excess requests wait their turn).
    #[serde(default)]
    pub nodelay: bool,
    /// What requests are counted by: `"client_ip"`, `"header:NAME"`, `"cookie:NAME"`,
    /// `"route"`, or a list of these counted together. A request whose key is empty (the
    /// header or cookie missing) is not limited, as in nginx.
    #[serde(default = "default_key")]
    pub key: Spanned<KeyList>,
    /// Count and log requests over the limit, but let them through (nginx's
    /// `limit_req_dry_run`).
    #[serde(default)]
    pub dry_run: bool,
    /// IPv6 client addresses are counted by this prefix length (64: one key per /64).
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
    /// The most keys remembered; past it, keys that are back to a full allowance are forgotten
    /// first. Each takes about 20 bytes.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// Send the `RateLimit-Policy` and `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers)
    /// on the responses of the routes that use this limit.
    #[serde(default = "default_true")]
    pub headers: bool,
    /// Count this limit across every replica of gatehouse, in `[redis]`, rather than per
    /// process.
    #[serde(default = "super::spanned_false")]
    pub shared: Spanned<bool>,
    /// What a shared limit does while Redis cannot be reached or does not answer in time.
    #[serde(default)]
    pub on_redis_error: OnRedisError,
}

/// `on_redis_error`: a shared limit's decision while Redis is unavailable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    /// Count in this process alone, at the same rate (the cluster then admits up to the
    /// rate times the number of replicas).
    #[default]
    Local,
    /// Let every request through.
    Allow,
    /// Refuse every request (429).
    Deny,
}

fn default_key() -> Spanned<KeyList> {
    Spanned::new(0..0, KeyList(vec!["client_ip".into()]))
}

fn default_ipv6_prefix() -> u8 {
    128
}

fn default_max_keys() -> usize {
    100_000
}

fn default_true() -> bool {
    true
}

/// `key = "client_ip"` or `key = ["client_ip", "header:X-User"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyList(pub Vec<String>);

impl<'de> Deserialize<'de> for KeyList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = KeyList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key such as \"client_ip\" or a list of keys")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<KeyList, E> {
                Ok(KeyList(vec![key.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeyList, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = seq.next_element::<String>()? {
                    keys.push(key);
                }
                Ok(KeyList(keys))
            }
        }
        d.deserialize_any(ListVisitor)
    }
}

/// A rate as written: `count` requests per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub period: Duration,
}

impl Rate {
    /// `"100/s"`, `"600/m"`, `"10000/h"` (also `"100r/s"`, nginx's spelling).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid rate {text:?}; expected requests per second, minute or hour such as \"100/s\" or \"600/m\""
            )
        };
        let (count, unit) = text.trim().split_once('/').ok_or_else(bad)?;
        let count = count.trim();
        let count = count.strip_suffix('r').unwrap_or(count);
        let count: u32 = count.parse().map_err(|_| bad())?;
        if count == 0 {
            return Err(format!(
                "invalid rate {text:?}: must allow at least one request"
            ));
        }
        let period = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        Ok(Self { count, period })
    }

    /// The time one request takes of the allowance.
    pub fn interval(&self) -> Duration {
        self.period / self.count
    }
}

/// One part of a limit's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    ClientIp,
    Header(http::HeaderName),
    Cookie(String),
    Route,
}

impl KeyPart {
    /// A hash key's grammar (`client_ip`, `header:NAME`, `cookie:NAME`) plus `route`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: String| {
            format!(
                "invalid key {text:?}; expected \"client_ip\", \"header:NAME\", \"cookie:NAME\" or \"route\" ({why})"
            )
        };
        if text == "route" {
            return Ok(Self::Route);
        }
        match super::HashKey::parse(text) {
            Ok(super::HashKey::ClientIp) => Ok(Self::ClientIp),
            Ok(super::HashKey::Header(name)) => Ok(Self::Header(name)),
            Ok(super::HashKey::Cookie(name)) => Ok(Self::Cookie(name)),
            Ok(other) => Err(bad(format!("{other} is not a limit key"))),
            Err(why) => Err(bad(why)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_per_second_minute_and_hour() {
        let rate = Rate::parse("100/s").unwrap();
        assert_eq!(rate.interval(), Duration::from_millis(10));
        assert_eq!(
            Rate::parse("600r/m").unwrap().interval(),
            Duration::from_millis(100)
        );
        assert_eq!(
            Rate::parse(" 3600 / h ").unwrap().interval(),
            Duration::from_secs(1)
        );
        for bad in ["", "100", "0/s", "-1/s", "1/d", "x/s", "1.5/s", "/s"] {
            assert!(Rate::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn key_parts() {
        assert_eq!(KeyPart::parse("client_ip"), Ok(KeyPart::ClientIp));
        assert_eq!(KeyPart::parse("route"), Ok(KeyPart::Route));
        assert_eq!(
            KeyPart::parse("header:X-Api-Key"),
            Ok(KeyPart::Header(http::HeaderName::from_static("x-api-key")))
        );
        assert_eq!(
            KeyPart::parse("cookie:session"),
            Ok(KeyPart::Cookie("session".into()))
        );
        for bad in [
            "ip",
            "header:",
            "header:a b",
            "cookie:",
            "cookie:a=b",
            "path:x",
        ] {
            assert!(KeyPart::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_key_is_one_name_or_a_list() {
        #[derive(Deserialize)]
        struct T {
            key: KeyList,
        }
        let one: T = toml::from_str("key = \"client_ip\"").unwrap();
        assert_eq!(one.key, KeyList(vec!["client_ip".into()]));
        let many: T = toml::from_str("key = [\"client_ip\", \"route\"]").unwrap();
        assert_eq!(many.key, KeyList(vec!["client_ip".into(), "route".into()]));
        assert!(toml::from_str::<T>("key = 5").is_err());
    }
}
