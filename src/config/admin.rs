//! `[admin]` write protection: the token file is read and the admin bind checked here, so
//! `gatehouse check` and a reload refuse an admin listener that anyone on the network could
//! use to reload or purge.

use super::Config;
use super::errors::{ConfigError, Locator};

/// The most bytes a token file may hold.
const MAX_TOKEN_BYTES: u64 = 4096;

/// The bearer token in `path`: its text with trailing line breaks and spaces trimmed.
pub fn read_admin_token(path: &str) -> Result<Vec<u8>, String> {
    let metadata =
        std::fs::metadata(path).map_err(|e| format!("cannot read token file {path:?}: {e}"))?;
    if metadata.len() > MAX_TOKEN_BYTES {
        return Err(format!(
            "token file {path:?} holds {} bytes; a token is at most {MAX_TOKEN_BYTES}",
            metadata.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read token file {path:?}: {e}"))?;
    token_of(&bytes).map_err(|why| format!("token file {path:?} {why}"))
}

/// The token a file's bytes hold, if they hold a usable one.
pub fn token_of(bytes: &[u8]) -> Result<Vec<u8>, &'static str> {
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b'\n' | b'\r' | b' ' | b'\t'))
        .map_or(0, |i| i + 1);
    let token = &bytes[..end];
    if token.is_empty() {
        return Err("is empty");
    }
    // What a client can send in `Authorization: Bearer <token>` (RFC 6750's token68 and
    // whatever else is a visible header character).
    if !token.iter().all(|b| b.is_ascii_graphic()) {
        return Err("holds characters a header value cannot carry (spaces or control bytes)");
    }
    Ok(token.to_vec())
}

/// Whether the admin bind is a loopback address (only local processes can reach it).
pub fn admin_bind_is_loopback(bind: &str) -> bool {
    super::parse_bind(bind).is_ok_and(|addr| addr.ip().is_loopback())
}

pub(super) fn validate(config: &Config, at: &Locator<'_>, errors: &mut Vec<ConfigError>) {
    let admin = &config.admin;
    if let Some(file) = &admin.token_file
        && let Err(message) = read_admin_token(file.get_ref())
    {
        errors.push(at.error(file.span(), "admin.token_file", message));
    }
    let bind = admin.bind.get_ref();
    if bind.is_empty() || super::parse_bind(bind).is_err() {
        return;
    }
    if *admin.writes.get_ref() && admin.token_file.is_none() && !admin_bind_is_loopback(bind) {
        errors.push(at.error(
            admin.bind.span(),
            "admin.bind",
            format!(
                "the admin listener on {bind} is reachable from the network, and its write \
                 endpoints (POST /reload, POST /cache/purge) would be open to anyone: set \
                 [admin] token_file = \"/path/to/token\", or writes = false, or bind to \
                 127.0.0.1"
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn trailing_line_breaks_are_trimmed_and_empty_is_refused() {
        assert_eq!(token_of(b"s3cret\n"), Ok(b"s3cret".to_vec()));
        assert_eq!(token_of(b"s3cret\r\n\n"), Ok(b"s3cret".to_vec()));
        assert_eq!(token_of(b"abc.def-_~+/="), Ok(b"abc.def-_~+/=".to_vec()));
        assert!(token_of(b"").is_err());
        assert!(token_of(b"\n\n").is_err());
        assert!(token_of(b"two words").is_err());
        assert!(token_of(b"nul\0").is_err());
    }

    #[test]
    fn loopback_binds() {
        assert!(admin_bind_is_loopback("127.0.0.1:9090"));
        assert!(admin_bind_is_loopback("[::1]:9090"));
        assert!(!admin_bind_is_loopback("0.0.0.0:9090"));
        assert!(!admin_bind_is_loopback("[::]:9090"));
        assert!(!admin_bind_is_loopback("10.1.2.3:9090"));
    }

    proptest! {
        #[test]
        fn no_file_bytes_panic_the_token_reader(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(token) = token_of(&bytes) {
                prop_assert!(!token.is_empty());
            }
        }
    }
}
