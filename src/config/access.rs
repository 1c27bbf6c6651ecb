//! A route's `access` rules (nginx's `allow` / `deny`): checked in the order written, the first
//! that matches the client's address decides; a client no rule matches is let in, as in nginx.
//! Pure, and used at run time as compiled here.

use crate::connection::client_address::IpRange;
use std::net::IpAddr;

/// One rule: `allow` or `deny`, for a range or for every address (`all`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    allow: bool,
    range: Option<IpRange>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessRules(Vec<Rule>);

impl AccessRules {
    /// Parses `["allow 10.0.0.0/8", "deny all"]`; the error names the rule at fault.
    pub fn parse<'a>(rules: impl IntoIterator<Item = &'a str>) -> Result<Self, (usize, String)> {
        rules
            .into_iter()
            .enumerate()
            .map(|(i, text)| parse_rule(text).map_err(|message| (i, message)))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a client at `ip` may pass.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.0
            .iter()
            .find(|rule| rule.range.is_none_or(|range| range.contains(ip)))
            .is_none_or(|rule| rule.allow)
    }
}

fn parse_rule(text: &str) -> Result<Rule, String> {
    let bad = || {
        format!(
            "invalid access rule {text:?}; write \"allow RANGE\" or \"deny RANGE\", RANGE an address, a CIDR block or \"all\""
        )
    };
    let (verb, target) = text
        .trim()
        .split_once(char::is_whitespace)
        .ok_or_else(bad)?;
    let allow = match verb {
        "allow" => true,
        "deny" => false,
        _ => return Err(bad()),
    };
    let target = target.trim();
    let range = if target == "all" {
        None
    } else {
        Some(IpRange::parse(target)?)
    };
    Ok(Rule { allow, range })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[&str]) -> AccessRules {
        AccessRules::parse(list.iter().copied()).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_first_rule_that_matches_decides() {
        let only_inside = rules(&["allow 10.0.0.0/8", "allow ::1", "deny all"]);
        assert!(only_inside.permits(ip("10.1.2.3")));
        assert!(only_inside.permits(ip("::1")));
        assert!(only_inside.permits(ip("::ffff:10.0.0.9")));
        assert!(!only_inside.permits(ip("192.0.2.1")));
        // nginx's order matters: a deny before the allow wins for its range.
        let carve_out = rules(&["deny 10.9.0.0/16", "allow 10.0.0.0/8", "deny all"]);
        assert!(!carve_out.permits(ip("10.9.1.1")));
        assert!(carve_out.permits(ip("10.8.1.1")));
    }

    #[test]
    fn no_matching_rule_lets_in() {
        let deny_one = rules(&["deny 192.0.2.1"]);
        assert!(!deny_one.permits(ip("192.0.2.1")));
        assert!(deny_one.permits(ip("192.0.2.2")));
        assert!(AccessRules::default().permits(ip("192.0.2.2")));
    }

    #[test]
    fn bad_rules_are_named() {
        for (list, at) in [
            (&["allow all", "permit 10.0.0.0/8"][..], 1),
            (&["deny"][..], 0),
            (&["allow 10.0.0.1/8"][..], 0),
            (&["allow everyone"][..], 0),
        ] {
            let error = AccessRules::parse(list.iter().copied()).unwrap_err();
            assert_eq!(error.0, at, "{list:?}: {}", error.1);
        }
    }
}
