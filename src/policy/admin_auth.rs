//! Who may use the admin listener's state-changing endpoints (`POST /reload`,
//! `POST /cache/purge`): with a token configured, only a request with
//! `Authorization: Bearer <token>` (compared in constant time); without one, only a listener
//! bound to loopback; never with `writes = false`.

use crate::config::AdminConfig;
use http::HeaderValue;
use subtle::ConstantTimeEq;

/// The admin write policy in force (compiled from `[admin]`, the token file read).
#[derive(Clone, Default)]
pub struct AdminWrites {
    /// `writes = true`.
    pub enabled: bool,
    token: Option<Box<[u8]>>,
}

impl std::fmt::Debug for AdminWrites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminWrites")
            .field("enabled", &self.enabled)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// What a write request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteDecision {
    Allow,
    /// 403: `writes = false`.
    Disabled,
    /// 403: no token is configured and the listener is reachable from the network.
    NoToken,
    /// 401 with `WWW-Authenticate`: the token is missing or wrong.
    Unauthorized,
}

impl AdminWrites {
    /// Compiles `[admin]`, reading its token file.
    pub fn compile(admin: &AdminConfig) -> Result<Self, String> {
        let token = match &admin.token_file {
            Some(path) => Some(crate::config::read_admin_token(path.get_ref())?.into()),
            None => None,
        };
        Ok(Self {
            enabled: *admin.writes.get_ref(),
            token,
        })
    }

    /// A policy with `token` (for tests and embedders).
    pub fn with_token(enabled: bool, token: Option<&[u8]>) -> Self {
        Self {
            enabled,
            token: token.map(Into::into),
        }
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The decision for a write request carrying `authorization`, on an admin listener whose
    /// socket is (`loopback`) or is not bound to a loopback address.
    pub fn decide(&self, authorization: Option<&HeaderValue>, loopback: bool) -> WriteDecision {
        if !self.enabled {
            return WriteDecision::Disabled;
        }
        let Some(token) = &self.token else {
            return if loopback {
                WriteDecision::Allow
            } else {
                WriteDecision::NoToken
            };
        };
        let offered = authorization.and_then(|value| bearer(value.as_bytes()));
        match offered {
            // `ct_eq` on slices of different lengths is false at once: the length of the
            // token is not a secret worth hiding, its bytes are.
            Some(offered) if bool::from(offered.ct_eq(token)) => WriteDecision::Allow,
            _ => WriteDecision::Unauthorized,
        }
    }
}

/// The credentials of an `Authorization: Bearer <credentials>` value (scheme case-insensitive,
/// RFC 9110 §11.1).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let start = rest.iter().position(|b| *b != b' ')?;
    if start == 0 {
        return None;
    }
    let credentials = &rest[start..];
    let end = credentials
        .iter()
        .rposition(|b| *b != b' ')
        .map_or(0, |i| i + 1);
    Some(&credentials[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn auth(value: &str) -> HeaderValue {
        HeaderValue::from_str(value).unwrap()
    }

    #[test]
    fn a_token_is_required_when_set_wherever_the_listener_is() {
        let writes = AdminWrites::with_token(true, Some(b"s3cret"));
        for loopback in [true, false] {
            assert_eq!(writes.decide(None, loopback), WriteDecision::Unauthorized);
            assert_eq!(
                writes.decide(Some(&auth("Bearer s3cret")), loopback),
                WriteDecision::Allow
            );
            assert_eq!(
                writes.decide(Some(&auth("bearer   s3cret ")), loopback),
                WriteDecision::Allow
            );
            for wrong in [
                "Bearer s3cre",
                "Bearer s3cretx",
                "Bearer S3CRET",
                "Basic s3cret",
                "Bearers3cret",
                "Bearer",
                "s3cret",
                "",
            ] {
                assert_eq!(
                    writes.decide(Some(&auth(wrong)), loopback),
                    WriteDecision::Unauthorized,
                    "{wrong:?}"
                );
            }
        }
    }

    #[test]
    fn without_a_token_only_loopback_writes() {
        let writes = AdminWrites::with_token(true, None);
        assert_eq!(writes.decide(None, true), WriteDecision::Allow);
        assert_eq!(writes.decide(None, false), WriteDecision::NoToken);
    }

    #[test]
    fn writes_off_refuses_even_the_right_token() {
        let writes = AdminWrites::with_token(false, Some(b"s3cret"));
        assert_eq!(
            writes.decide(Some(&auth("Bearer s3cret")), true),
            WriteDecision::Disabled
        );
        assert_eq!(
            AdminWrites::with_token(false, None).decide(None, true),
            WriteDecision::Disabled
        );
    }

    proptest! {
        #[test]
        fn no_authorization_value_panics_the_check(value in prop::collection::vec(any::<u8>(), 0..40)) {
            let writes = AdminWrites::with_token(true, Some(b"tok"));
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                let decision = writes.decide(Some(&value), false);
                prop_assert!(decision == WriteDecision::Unauthorized || value.as_bytes().windows(3).any(|w| w == b"tok"));
            }
        }
    }
}
