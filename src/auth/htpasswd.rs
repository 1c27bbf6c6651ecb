//! htpasswd files as Apache's `htpasswd` and `openssl passwd` write them: one `user:hash` a
//! line, the hash bcrypt (`$2y$`, `$2a$`, `$2b$`), Apache MD5 (`$apr1$`) or `{SHA}` (base64 of
//! SHA-1). Blank lines and lines starting with `#` are skipped. A line in any other format
//! (crypt DES, plaintext, SHA-crypt `$5$`/`$6$`, a line without `:`) is reported with its line
//! number and its user is left out: nobody logs in with a hash gatehouse cannot check.
//! Passwords are compared in constant time.

use base64::Engine as _;
use md5::{Digest as _, Md5};
use sha1::Sha1;
use std::collections::HashMap;
use subtle::ConstantTimeEq;

/// One user's stored hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordHash {
    /// The whole `$2y$cost$salthash` string, as the bcrypt crate reads it.
    Bcrypt(String),
    /// `$apr1$salt$hash`: the salt (at most 8 characters) and the 22-character hash.
    Apr1 { salt: String, hash: String },
    /// `{SHA}base64`: the SHA-1 digest.
    Sha1([u8; 20]),
}

impl PasswordHash {
    /// Reads the hash part of a line; the error says which format it is not.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(rest) = text.strip_prefix("$apr1$") {
            let (salt, hash) = rest
                .split_once('$')
                .ok_or("an $apr1$ hash needs $salt$hash")?;
            if salt.is_empty() || salt.len() > 8 || !salt.bytes().all(is_crypt64) {
                return Err("an $apr1$ salt has 1 to 8 characters of ./0-9A-Za-z".into());
            }
            if hash.len() != 22 || !hash.bytes().all(is_crypt64) {
                return Err("an $apr1$ hash has 22 characters of ./0-9A-Za-z".into());
            }
            return Ok(Self::Apr1 {
                salt: salt.to_owned(),
                hash: hash.to_owned(),
            });
        }
        if let Some(encoded) = text.strip_prefix("{SHA}") {
            let digest = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| "a {SHA} hash is base64")?;
            let digest: [u8; 20] = digest
                .try_into()
                .map_err(|_| "a {SHA} hash is 20 bytes in base64")?;
            return Ok(Self::Sha1(digest));
        }
        if ["$2y$", "$2a$", "$2b$"].iter().any(|p| text.starts_with(p)) {
            return text
                .parse::<bcrypt::HashParts>()
                .map(|_| Self::Bcrypt(text.to_owned()))
                .map_err(|e| format!("not a valid bcrypt hash: {e}"));
        }
        let what = if text.starts_with("$1$") {
            "MD5-crypt $1$ (use htpasswd -m for $apr1$, or -B for bcrypt)"
        } else if text.starts_with("$5$") || text.starts_with("$6$") {
            "SHA-crypt $5$/$6$ (use htpasswd -B for bcrypt)"
        } else if text.len() == 13 && text.bytes().all(is_crypt64) {
            "crypt DES (use htpasswd -B for bcrypt)"
        } else {
            "plaintext or unknown (use htpasswd -B for bcrypt)"
        };
        Err(format!("unsupported password hash: {what}"))
    }

    /// Whether `password` matches. Slow for bcrypt (its cost) and apr1 (1000 MD5 rounds).
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            Self::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            Self::Apr1 { salt, hash } => {
                let computed = apr1(password, salt.as_bytes());
                computed.as_bytes().ct_eq(hash.as_bytes()).into()
            }
            Self::Sha1(digest) => {
                let computed = Sha1::digest(password);
                computed.as_slice().ct_eq(digest.as_slice()).into()
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Bcrypt(_) => "bcrypt",
            Self::Apr1 { .. } => "apr1",
            Self::Sha1(_) => "sha1",
        }
    }
}

fn is_crypt64(b: u8) -> bool {
    b == b'.' || b == b'/' || b.is_ascii_alphanumeric()
}

const CRYPT64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Apache's MD5 password hash (`$apr1$`, the MD5-crypt algorithm with its own magic): the
/// 22-character hash of `password` with `salt` (at most its first 8 bytes count).
pub fn apr1(password: &[u8], salt: &[u8]) -> String {
    const MAGIC: &[u8] = b"$apr1$";
    let salt = &salt[..salt.len().min(8)];
    let mut alternate = Md5::new();
    alternate.update(password);
    alternate.update(salt);
    alternate.update(password);
    let alternate = alternate.finalize();

    let mut context = Md5::new();
    context.update(password);
    context.update(MAGIC);
    context.update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        context.update(&alternate[..n]);
        left -= n;
    }
    let mut bits = password.len();
    while bits != 0 {
        if bits & 1 == 1 {
            context.update([0u8]);
        } else {
            context.update(&password[..1]);
        }
        bits >>= 1;
    }
    let mut digest: [u8; 16] = context.finalize().into();

    for round in 0..1000 {
        let mut step = Md5::new();
        if round & 1 == 1 {
            step.update(password);
        } else {
            step.update(digest);
        }
        if round % 3 != 0 {
            step.update(salt);
        }
        if round % 7 != 0 {
            step.update(password);
        }
        if round & 1 == 1 {
            step.update(digest);
        } else {
            step.update(password);
        }
        digest = step.finalize().into();
    }

    let mut out = String::with_capacity(22);
    let mut put = |value: u32, count: usize| {
        let mut value = value;
        for _ in 0..count {
            out.push(CRYPT64[(value & 0x3f) as usize] as char);
            value >>= 6;
        }
    };
    let d = |i: usize| u32::from(digest[i]);
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        put((d(a) << 16) | (d(b) << 8) | d(c), 4);
    }
    put(d(11), 2);
    out
}

/// A line that was left out, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedLine {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

/// The users of one htpasswd file.
#[derive(Clone, Debug, Default)]
pub struct Htpasswd {
    pub users: HashMap<String, PasswordHash>,
    pub skipped: Vec<SkippedLine>,
}

impl Htpasswd {
    /// Reads the text of an htpasswd file. Never fails: bad lines are listed in `skipped`.
    /// When a user is listed twice, the first line counts (as Apache's lookup).
    pub fn parse(text: &str) -> Self {
        let mut parsed = Self::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r');
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let mut skip = |message: String| {
                parsed.skipped.push(SkippedLine {
                    line: i + 1,
                    message,
                })
            };
            let Some((user, hash)) = line.split_once(':') else {
                skip("expected user:hash".into());
                continue;
            };
            if user.is_empty() {
                skip("the user name is empty".into());
                continue;
            }
            match PasswordHash::parse(hash.trim_end()) {
                Ok(hash) => {
                    if parsed.users.contains_key(user) {
                        skip(format!(
                            "user {user:?} is listed again; the first line counts"
                        ));
                    } else {
                        parsed.users.insert(user.to_owned(), hash);
                    }
                }
                Err(message) => skip(format!("user {user:?}: {message}; the user is left out")),
            }
        }
        parsed
    }

    /// Whether checking `user`'s password costs real time (bcrypt, apr1-MD5's 1000 rounds),
    /// so that it belongs off the threads serving requests.
    pub fn is_slow(&self, user: &str) -> bool {
        matches!(
            self.users.get(user),
            Some(PasswordHash::Bcrypt(_) | PasswordHash::Apr1 { .. })
        )
    }

    /// Whether `user` with `password` is let in.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(hash) => hash.verify(password),
            None => false,
        }
    }
}

/// Reads and parses an htpasswd file; the error names the file.
pub fn read(path: &str) -> Result<Htpasswd, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: cannot read: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{path}: not UTF-8 text"))?;
    Ok(Htpasswd::parse(&text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Written by `openssl passwd -apr1 -salt ... secret` / `htpasswd -nbB` / `htpasswd -nbs`
    /// (tests/fixtures/auth/htpasswd).
    const FIXTURE: &str = include_str!("../../tests/fixtures/auth/htpasswd");

    #[test]
    fn apr1_matches_openssl() {
        for line in include_str!("../../tests/fixtures/auth/apr1-vectors.txt").lines() {
            let Some((password, hash)) = line.split_once('\t') else {
                continue;
            };
            let PasswordHash::Apr1 { salt, hash: digest } = PasswordHash::parse(hash).unwrap()
            else {
                panic!("not apr1: {hash}")
            };
            assert_eq!(apr1(password.as_bytes(), salt.as_bytes()), digest, "{line}");
        }
    }

    #[test]
    fn fixture_users_verify_with_their_passwords_only() {
        let file = Htpasswd::parse(FIXTURE);
        let kinds: Vec<_> = ["alice", "bob", "carol", "dave"]
            .iter()
            .map(|u| file.users[*u].kind())
            .collect();
        assert_eq!(kinds, ["bcrypt", "apr1", "sha1", "bcrypt"]);
        for user in ["alice", "bob", "carol", "dave"] {
            let password = format!("{user}-pass");
            assert!(file.verify(user, password.as_bytes()), "{user}");
            assert!(!file.verify(user, b"wrong"), "{user}");
            assert!(!file.verify(user, b""), "{user}");
        }
        assert!(!file.verify("nobody", b"nobody-pass"));
        // crypt DES and plaintext lines are reported at their line and left out.
        let lines: Vec<usize> = file.skipped.iter().map(|s| s.line).collect();
        assert_eq!(lines.len(), 3, "{:?}", file.skipped);
        assert!(!file.users.contains_key("erin"));
        assert!(!file.users.contains_key("frank"));
        assert!(file.skipped.iter().any(|s| s.message.contains("crypt DES")));
        assert!(file.skipped.iter().any(|s| s.message.contains("plaintext")));
    }

    #[test]
    fn bad_hashes_say_why() {
        for (hash, says) in [
            ("$apr1$toolongsalt$abc", "salt"),
            ("$apr1$salt$short", "22 characters"),
            ("{SHA}not base64!", "base64"),
            ("{SHA}c2hvcnQ=", "20 bytes"),
            ("$2y$05$short", "bcrypt"),
            ("$6$salt$hash", "SHA-crypt"),
            ("$1$salt$hash", "MD5-crypt"),
        ] {
            let error = PasswordHash::parse(hash).unwrap_err();
            assert!(error.contains(says), "{hash}: {error}");
        }
    }

    #[test]
    fn duplicates_keep_the_first_and_crlf_is_read() {
        let file = Htpasswd::parse(
            "# comment\r\n\r\ncarol:{SHA}cOCGGs60OasSaxetg905pbDY2Zs=\r\ncarol:{SHA}AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n",
        );
        assert!(file.verify("carol", b"carol-pass"));
        assert_eq!(file.skipped.len(), 1);
        assert_eq!(file.skipped[0].line, 4);
    }

    proptest! {
        #[test]
        fn no_line_panics(text in ".{0,200}", bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let file = Htpasswd::parse(&text);
            for (user, hash) in &file.users {
                let _ = hash.verify(&bytes);
                let _ = file.verify(user, &bytes);
            }
        }

        #[test]
        fn no_hash_text_panics(tail in "[./0-9A-Za-z$]{0,70}", prefix in prop::sample::select(vec!["$apr1$", "{SHA}", "$2y$", "$2a$", "$2b$", "$2y$05$", ""])) {
            if let Ok(hash) = PasswordHash::parse(&format!("{prefix}{tail}")) {
                let _ = hash.verify(b"x");
            }
        }
    }
}
