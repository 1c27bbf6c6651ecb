//! Bearer JWT verification (Envoy's `jwt_authn`, RFC 7519 / RFC 6750): the signature with a key
//! of the JWKS (picked by `kid` when the token names one) or the HS256 shared secret, then
//! `exp` and `nbf` with leeway, `iss` and `aud`. Chosen claims become request headers.
//! The key set is swapped whole when its file or URL gives a new one.

use super::basic::{quote, split_scheme};
use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::{Map, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The algorithms gatehouse verifies.
pub const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::RS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
    Algorithm::HS256,
];

/// An algorithm by its JOSE name, among those gatehouse verifies.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    ALGORITHMS
        .iter()
        .copied()
        .find(|a| algorithm_name(*a) == name)
        .ok_or_else(|| format!("unsupported algorithm {name:?}; use RS256, ES256, EdDSA or HS256"))
}

pub fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        Algorithm::EdDSA => "EdDSA",
        Algorithm::HS256 => "HS256",
        _ => "other",
    }
}

/// Where the key set comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    None,
    File(String),
    Url {
        url: String,
        ca_file: Option<String>,
        refresh: Duration,
    },
}

/// A `[jwt.NAME]`'s settings, compiled (equal settings keep the keys in force on a reload).
#[derive(Clone, Debug, PartialEq)]
pub struct JwtSettings {
    pub issuer: Option<String>,
    pub audiences: Option<Vec<String>>,
    pub source: KeySource,
    /// The HS256 shared secret, read from `secret_file`.
    pub secret: Option<Vec<u8>>,
    /// Those allowed; empty means every one of `ALGORITHMS` that has a key.
    pub algorithms: Vec<Algorithm>,
    pub leeway: Duration,
    pub claims_to_headers: Vec<(String, HeaderName)>,
    pub header: HeaderName,
}

/// One verification key.
#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    pub algorithm: Algorithm,
    key: DecodingKey,
}

/// Why a token was refused (the RFC 6750 `error_description`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    Malformed,
    Algorithm,
    UnknownKey,
    Signature,
    Expired,
    NotYetValid,
    Issuer,
    Audience,
    MissingClaim,
}

impl Invalid {
    pub fn description(self) -> &'static str {
        match self {
            Self::Malformed => "the token is malformed",
            Self::Algorithm => "the token's algorithm is not accepted",
            Self::UnknownKey => "no key for the token",
            Self::Signature => "the token's signature is invalid",
            Self::Expired => "the token has expired",
            Self::NotYetValid => "the token is not valid yet",
            Self::Issuer => "the token's issuer is not accepted",
            Self::Audience => "the token's audience is not accepted",
            Self::MissingClaim => "the token lacks a required claim",
        }
    }

    fn from_kind(kind: &ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidSignature => Self::Signature,
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidIssuer => Self::Issuer,
            ErrorKind::InvalidAudience => Self::Audience,
            ErrorKind::MissingRequiredClaim(_) => Self::MissingClaim,
            ErrorKind::InvalidAlgorithm => Self::Algorithm,
            _ => Self::Malformed,
        }
    }
}

/// What one check found.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Valid: the headers to set from its claims.
    Allowed(Vec<(HeaderName, HeaderValue)>),
    Missing,
    Denied(Invalid),
}

/// The key set in force and how its last refresh went (for /status).
pub struct KeyState {
    pub keys: Vec<Key>,
    pub loaded_at: Option<SystemTime>,
    /// Tokens verified with these keys (by a keyed hash of the token), so a client sending
    /// the same token again does not pay for the signature; it goes with the keys.
    verified: quick_cache::sync::Cache<[u8; 32], Arc<Verified>>,
}

/// Tokens remembered per key set.
const VERIFIED_ENTRIES: usize = 4096;

/// What a verified token let in, and for how long.
struct Verified {
    headers: Vec<(HeaderName, HeaderValue)>,
    /// `nbf` less the leeway and `exp` plus it, in seconds since the epoch.
    from: u64,
    until: u64,
}

impl KeyState {
    fn new(keys: Vec<Key>, loaded_at: Option<SystemTime>) -> Self {
        Self {
            keys,
            loaded_at,
            verified: quick_cache::sync::Cache::new(VERIFIED_ENTRIES),
        }
    }
}

/// One `[jwt.NAME]`, shared by the routes that name it and kept across reloads.
pub struct JwtAuth {
    pub name: String,
    pub settings: JwtSettings,
    /// `Bearer realm="NAME"`.
    pub challenge: HeaderValue,
    keys: ArcSwap<KeyState>,
    secret: Option<Key>,
    /// One validation per algorithm (jsonwebtoken checks the header's alg against its list).
    validations: Vec<(Algorithm, Validation)>,
    /// The last refresh error, if the last refresh failed.
    pub last_error: Mutex<Option<String>>,
}

impl JwtAuth {
    pub fn new(name: &str, settings: JwtSettings) -> Result<Self, String> {
        let challenge = HeaderValue::try_from(format!("Bearer realm={}", quote(name)))
            .map_err(|_| format!("jwt {name}: the name is not a valid header value"))?;
        let secret = match &settings.secret {
            Some(bytes) => Some(Key {
                kid: None,
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(bytes)
                    .map_err(|e| format!("jwt {name}: secret: {e}"))?,
            }),
            None => None,
        };
        let validations = ALGORITHMS
            .iter()
            .map(|&algorithm| {
                let mut validation = Validation::new(algorithm);
                validation.leeway = settings.leeway.as_secs();
                validation.validate_nbf = true;
                let mut required = vec!["exp"];
                if let Some(issuer) = &settings.issuer {
                    validation.set_issuer(&[issuer]);
                    required.push("iss");
                }
                match &settings.audiences {
                    Some(audiences) => {
                        validation.set_audience(audiences);
                        required.push("aud");
                    }
                    None => validation.validate_aud = false,
                }
                validation.set_required_spec_claims(&required);
                (algorithm, validation)
            })
            .collect();
        let auth = Self {
            name: name.to_owned(),
            challenge,
            keys: ArcSwap::from_pointee(KeyState::new(Vec::new(), None)),
            secret,
            validations,
            last_error: Mutex::new(None),
            settings,
        };
        if let KeySource::File(path) = &auth.settings.source {
            auth.reload_file(path)?;
        }
        Ok(auth)
    }

    /// Reads the JWKS file again; on an error the keys in force stay.
    pub fn reload_file(&self, path: &str) -> Result<usize, String> {
        let result = std::fs::read(path)
            .map_err(|e| format!("{path}: cannot read: {e}"))
            .and_then(|bytes| {
                parse_jwks(&bytes, &self.settings.algorithms).map_err(|e| format!("{path}: {e}"))
            });
        self.install(result)
    }

    /// Installs a key set fetched or read; an error keeps the keys in force and is kept for
    /// /status.
    pub fn install(&self, keys: Result<Vec<Key>, String>) -> Result<usize, String> {
        let mut last_error = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        match keys {
            Ok(keys) => {
                let count = keys.len();
                self.keys
                    .store(Arc::new(KeyState::new(keys, Some(SystemTime::now()))));
                *last_error = None;
                Ok(count)
            }
            Err(error) => {
                *last_error = Some(error.clone());
                Err(error)
            }
        }
    }

    /// Keys in force (the shared secret included), and when the key set was loaded.
    pub fn key_count(&self) -> (usize, Option<SystemTime>) {
        let state = self.keys.load();
        (
            state.keys.len() + usize::from(self.secret.is_some()),
            state.loaded_at,
        )
    }

    /// Checks a request's token.
    pub fn check(&self, headers: &HeaderMap) -> Outcome {
        let Some(value) = headers.get(&self.settings.header) else {
            return Outcome::Missing;
        };
        let token = match split_scheme(value.as_bytes()) {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case(b"bearer") => token,
            Some(_) if self.settings.header == http::header::AUTHORIZATION => {
                return Outcome::Missing;
            }
            // A header of its own may carry the bare token.
            _ => value.as_bytes().trim_ascii(),
        };
        if token.is_empty() {
            return Outcome::Missing;
        }
        let state = self.keys.load();
        let tag = ring::hmac::sign(super::basic::secret(), token);
        let Ok(key) = <[u8; 32]>::try_from(tag.as_ref()) else {
            return Outcome::Denied(Invalid::Malformed);
        };
        if let Some(verified) = state.verified.get(&key) {
            let now = jsonwebtoken::get_current_timestamp();
            if now < verified.from {
                return Outcome::Denied(Invalid::NotYetValid);
            }
            if now <= verified.until {
                return Outcome::Allowed(verified.headers.clone());
            }
            return Outcome::Denied(Invalid::Expired);
        }
        match self.verify_with(&state, token) {
            Ok(claims) => {
                let headers = self.claim_headers(&claims);
                let leeway = self.settings.leeway.as_secs();
                let seconds = |claim: &str| claims.get(claim).and_then(Value::as_f64);
                if let Some(exp) = seconds("exp") {
                    let from = seconds("nbf").map_or(0, |nbf| (nbf as u64).saturating_sub(leeway));
                    let until = (exp as u64).saturating_add(leeway);
                    let verified = Verified {
                        headers: headers.clone(),
                        from,
                        until,
                    };
                    state.verified.insert(key, Arc::new(verified));
                }
                Outcome::Allowed(headers)
            }
            Err(invalid) => Outcome::Denied(invalid),
        }
    }

    /// The token's claims if it is valid now.
    pub fn verify(&self, token: &[u8]) -> Result<Map<String, Value>, Invalid> {
        self.verify_with(&self.keys.load(), token)
    }

    fn verify_with(&self, state: &KeyState, token: &[u8]) -> Result<Map<String, Value>, Invalid> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Invalid::Malformed)?;
        let algorithm = header.alg;
        if !ALGORITHMS.contains(&algorithm)
            || !(self.settings.algorithms.is_empty()
                || self.settings.algorithms.contains(&algorithm))
        {
            return Err(Invalid::Algorithm);
        }
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == algorithm) else {
            return Err(Invalid::Algorithm);
        };
        let usable = |key: &&Key| key.algorithm == algorithm;
        let all = state.keys.iter().chain(self.secret.as_ref());
        let mut candidates: Vec<&Key> = match &header.kid {
            Some(kid) => all
                .clone()
                .filter(usable)
                .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
                .collect(),
            None => Vec::new(),
        };
        if candidates.is_empty() {
            candidates = all
                .filter(usable)
                .filter(|k| header.kid.is_none() || k.kid.is_none())
                .collect();
        }
        if candidates.is_empty() {
            return Err(Invalid::UnknownKey);
        }
        let mut refused = Invalid::Signature;
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation) {
                Ok(data) => return Ok(data.claims),
                Err(error) => {
                    refused = Invalid::from_kind(error.kind());
                    // A claim is wrong once a signature holds: no other key changes that.
                    if !matches!(
                        error.kind(),
                        ErrorKind::InvalidSignature
                            | ErrorKind::InvalidAlgorithm
                            | ErrorKind::InvalidKeyFormat
                            | ErrorKind::InvalidEcdsaKey
                            | ErrorKind::InvalidEddsaKey
                            | ErrorKind::InvalidRsaKey(_)
                    ) {
                        return Err(refused);
                    }
                }
            }
        }
        Err(refused)
    }

    fn claim_headers(&self, claims: &Map<String, Value>) -> Vec<(HeaderName, HeaderValue)> {
        self.settings
            .claims_to_headers
            .iter()
            .filter_map(|(claim, name)| {
                let text = match claims.get(claim)? {
                    Value::String(s) => s.clone(),
                    Value::Null => return None,
                    other => other.to_string(),
                };
                Some((name.clone(), HeaderValue::try_from(text).ok()?))
            })
            .collect()
    }
}

/// The algorithm a JWK is for: its `alg`, or what its key type implies.
fn jwk_algorithm(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    if let Some(alg) = jwk.common.key_algorithm {
        return match alg {
            KeyAlgorithm::RS256 => Some(Algorithm::RS256),
            KeyAlgorithm::ES256 => Some(Algorithm::ES256),
            KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
            KeyAlgorithm::HS256 => Some(Algorithm::HS256),
            _ => None,
        };
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Some(Algorithm::ES256)
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Some(Algorithm::EdDSA)
        }
        AlgorithmParameters::OctetKey(_) => Some(Algorithm::HS256),
        _ => None,
    }
}

/// Reads a JWKS document (`{"keys": [...]}`). Keys for other algorithms, or for other uses
/// than signatures, are left out; a set with no usable key is an error.
pub fn parse_jwks(bytes: &[u8], allowed: &[Algorithm]) -> Result<Vec<Key>, String> {
    let set: JwkSet =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        if matches!(
            jwk.common.public_key_use,
            Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
        ) {
            continue;
        }
        let Some(algorithm) = jwk_algorithm(jwk) else {
            continue;
        };
        if !allowed.is_empty() && !allowed.contains(&algorithm) {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            algorithm,
            key,
        });
    }
    if keys.is_empty() && !set.keys.is_empty() {
        return Err(format!(
            "none of its {} keys is usable (RS256, ES256, EdDSA or HS256 signature keys)",
            set.keys.len()
        ));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode, jwk::Jwk};
    use proptest::prelude::*;
    use serde_json::json;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/auth/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// (algorithm, kid, private key) for each fixture key.
    fn signers() -> Vec<(Algorithm, &'static str, EncodingKey)> {
        vec![
            (
                Algorithm::RS256,
                "rsa-1",
                EncodingKey::from_rsa_pem(&fixture("rsa.pem")).unwrap(),
            ),
            (
                Algorithm::ES256,
                "ec-1",
                EncodingKey::from_ec_pem(&fixture("ec.pem")).unwrap(),
            ),
            (
                Algorithm::EdDSA,
                "ed-1",
                EncodingKey::from_ed_pem(&fixture("ed25519.pem")).unwrap(),
            ),
        ]
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn settings(source: KeySource) -> JwtSettings {
        JwtSettings {
            issuer: Some("https://issuer.test".into()),
            audiences: Some(vec!["api".into()]),
            source,
            secret: Some(b"shared-secret-of-32-bytes-or-so!".to_vec()),
            algorithms: Vec::new(),
            leeway: Duration::from_secs(60),
            claims_to_headers: vec![
                ("sub".into(), HeaderName::from_static("x-user")),
                ("admin".into(), HeaderName::from_static("x-admin")),
            ],
            header: http::header::AUTHORIZATION,
        }
    }

    fn auth() -> JwtAuth {
        let path = format!(
            "{}/tests/fixtures/auth/jwks.json",
            env!("CARGO_MANIFEST_DIR")
        );
        JwtAuth::new("api", settings(KeySource::File(path))).unwrap()
    }

    fn token(algorithm: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: Value) -> String {
        let mut header = Header::new(algorithm);
        header.kid = kid.map(str::to_owned);
        encode(&header, &claims, key).unwrap()
    }

    fn good_claims() -> Value {
        json!({"iss": "https://issuer.test", "aud": "api", "sub": "u-1", "admin": true, "exp": now() + 600})
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        headers
    }

    #[test]
    fn the_fixture_jwks_is_the_fixture_keys() {
        // jwks.json was made from the private keys; it must stay in step with them.
        let made: Vec<Value> = signers()
            .iter()
            .map(|(alg, kid, key)| {
                let mut jwk = Jwk::from_encoding_key(key, *alg).unwrap();
                jwk.common.key_id = Some((*kid).into());
                serde_json::to_value(jwk).unwrap()
            })
            .collect();
        let stored: Value = serde_json::from_slice(&fixture("jwks.json")).unwrap();
        assert_eq!(stored, json!({ "keys": made }));
    }

    #[test]
    fn each_algorithm_verifies_and_claims_become_headers() {
        let auth = auth();
        assert_eq!(auth.key_count().0, 4);
        let secret = EncodingKey::from_secret(b"shared-secret-of-32-bytes-or-so!").unwrap();
        let mut all = signers();
        all.push((Algorithm::HS256, "", secret));
        for (alg, kid, key) in &all {
            for kid in [Some(*kid).filter(|k| !k.is_empty()), None] {
                let t = token(*alg, kid, key, good_claims());
                assert_eq!(
                    auth.check(&bearer(&t)),
                    Outcome::Allowed(vec![
                        (
                            HeaderName::from_static("x-user"),
                            HeaderValue::from_static("u-1")
                        ),
                        (
                            HeaderName::from_static("x-admin"),
                            HeaderValue::from_static("true")
                        ),
                    ]),
                    "{alg:?} kid {kid:?}"
                );
            }
        }
    }

    #[test]
    fn bad_tokens_say_why() {
        let auth = auth();
        let signers = signers();
        let (alg, kid, key) = &signers[0];
        let with = |claims: Value| auth.check(&bearer(&token(*alg, Some(kid), key, claims)));
        let mut claims = good_claims();
        claims["exp"] = json!(now() - 120);
        assert_eq!(with(claims), Outcome::Denied(Invalid::Expired));
        let mut claims = good_claims();
        claims["exp"] = json!(now() - 30);
        assert!(matches!(with(claims), Outcome::Allowed(_)), "within leeway");
        let mut claims = good_claims();
        claims["nbf"] = json!(now() + 300);
        assert_eq!(with(claims), Outcome::Denied(Invalid::NotYetValid));
        let mut claims = good_claims();
        claims["aud"] = json!("other");
        assert_eq!(with(claims), Outcome::Denied(Invalid::Audience));
        let mut claims = good_claims();
        claims["iss"] = json!("https://evil.test");
        assert_eq!(with(claims), Outcome::Denied(Invalid::Issuer));
        let mut claims = good_claims();
        claims.as_object_mut().unwrap().remove("exp");
        assert_eq!(with(claims), Outcome::Denied(Invalid::MissingClaim));
        // Signed by the EC key but claiming the RSA key's kid and algorithm family.
        let forged = token(
            Algorithm::ES256,
            Some("rsa-1"),
            &signers[1].2,
            good_claims(),
        );
        let mut parts: Vec<&str> = forged.split('.').collect();
        let good = token(*alg, Some(kid), key, good_claims());
        let good_parts: Vec<&str> = good.split('.').collect();
        parts[0] = good_parts[0];
        assert_eq!(
            auth.check(&bearer(&parts.join("."))),
            Outcome::Denied(Invalid::Signature)
        );
        // A wrong secret, an unknown kid for an algorithm with no kid-less key.
        let wrong = EncodingKey::from_secret(b"another secret").unwrap();
        let t = token(Algorithm::HS256, None, &wrong, good_claims());
        assert_eq!(auth.check(&bearer(&t)), Outcome::Denied(Invalid::Signature));
        let t = token(*alg, Some("nope"), key, good_claims());
        assert_eq!(
            auth.check(&bearer(&t)),
            Outcome::Denied(Invalid::UnknownKey)
        );
        // `none` and algorithms outside the list.
        let none = format!(
            "{}.{}.",
            base64url(br#"{"alg":"none","typ":"JWT"}"#),
            base64url(good_claims().to_string().as_bytes())
        );
        assert_eq!(
            auth.check(&bearer(&none)),
            Outcome::Denied(Invalid::Malformed)
        );
        let t = token(
            Algorithm::HS384,
            None,
            &EncodingKey::from_secret(b"shared-secret-of-32-bytes-or-so!").unwrap(),
            good_claims(),
        );
        assert_eq!(auth.check(&bearer(&t)), Outcome::Denied(Invalid::Algorithm));
        assert_eq!(auth.check(&HeaderMap::new()), Outcome::Missing);
        assert_eq!(auth.check(&bearer("")), Outcome::Missing);
        assert_eq!(
            auth.check(&bearer("a.b.c")),
            Outcome::Denied(Invalid::Malformed)
        );
    }

    #[test]
    fn an_algorithm_list_narrows_what_is_accepted() {
        let path = format!(
            "{}/tests/fixtures/auth/jwks.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut only_ec = settings(KeySource::File(path));
        only_ec.algorithms = vec![Algorithm::ES256];
        only_ec.secret = None;
        let auth = JwtAuth::new("ec", only_ec).unwrap();
        assert_eq!(auth.key_count().0, 1);
        let signers = signers();
        let rsa = token(
            Algorithm::RS256,
            Some("rsa-1"),
            &signers[0].2,
            good_claims(),
        );
        assert_eq!(
            auth.check(&bearer(&rsa)),
            Outcome::Denied(Invalid::Algorithm)
        );
        let ec = token(Algorithm::ES256, Some("ec-1"), &signers[1].2, good_claims());
        assert!(matches!(auth.check(&bearer(&ec)), Outcome::Allowed(_)));
    }

    #[test]
    fn verified_tokens_are_remembered_until_they_expire_or_the_keys_change() {
        let mut quick = settings(KeySource::None);
        quick.leeway = Duration::ZERO;
        let auth = JwtAuth::new("q", quick).unwrap();
        let secret = EncodingKey::from_secret(b"shared-secret-of-32-bytes-or-so!").unwrap();
        let mut claims = good_claims();
        let exp = now() + 1;
        claims["exp"] = json!(exp);
        let t = bearer(&token(Algorithm::HS256, None, &secret, claims));
        assert!(matches!(auth.check(&t), Outcome::Allowed(_)));
        assert_eq!(auth.keys.load().verified.len(), 1);
        assert!(matches!(auth.check(&t), Outcome::Allowed(_)), "from memory");
        // Past exp, the remembered token is refused as a fresh one would be.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while now() <= exp {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(auth.check(&t), Outcome::Denied(Invalid::Expired));

        // A new key set forgets what the old one verified.
        let path = format!(
            "{}/tests/fixtures/auth/jwks.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut no_secret = settings(KeySource::File(path));
        no_secret.secret = None;
        let auth = JwtAuth::new("r", no_secret).unwrap();
        let signers = signers();
        let t = bearer(&token(
            Algorithm::RS256,
            Some("rsa-1"),
            &signers[0].2,
            good_claims(),
        ));
        assert!(matches!(auth.check(&t), Outcome::Allowed(_)));
        let only_ec = parse_jwks(&fixture("jwks.json"), &[Algorithm::ES256]).unwrap();
        auth.install(Ok(only_ec)).unwrap();
        assert_eq!(auth.check(&t), Outcome::Denied(Invalid::UnknownKey));
    }

    fn base64url(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    proptest! {
        #[test]
        fn no_token_panics(token in "[A-Za-z0-9_\\-.=]{0,200}", bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let auth = auth();
            prop_assert!(auth.verify(token.as_bytes()).is_err());
            let _ = auth.verify(&bytes);
            let _ = parse_jwks(&bytes, &[]);
            // Well-formed base64url parts around random JSON.
            let forged = format!("{}.{}.{}", base64url(&bytes), base64url(token.as_bytes()), base64url(&bytes));
            prop_assert!(auth.verify(forged.as_bytes()).is_err());
        }

        #[test]
        fn no_jwks_panics(kty in prop::sample::select(vec!["RSA", "EC", "OKP", "oct", "x"]), n in "[A-Za-z0-9_\\-]{0,40}", crv in prop::sample::select(vec!["P-256", "Ed25519", "P-384", ""])) {
            let doc = json!({"keys": [{"kty": kty, "n": n, "e": "AQAB", "crv": crv, "x": n, "y": n, "k": n, "kid": "k"}]});
            let _ = parse_jwks(doc.to_string().as_bytes(), &[]);
        }
    }
}
