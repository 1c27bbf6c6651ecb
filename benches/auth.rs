//! What a route's authentication costs per request: a Basic check answered from the cache of
//! accepted credentials, uncached checks per hash (the cost a new client or a cache miss
//! pays), JWT verification per algorithm, and a JWT check answered from the tokens already
//! verified.

use base64::Engine as _;
use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse::auth::basic::Outcome;
use gatehouse::auth::{BasicAuth, JwtAuth, JwtSettings, KeySource};
use http::{HeaderMap, HeaderValue, header};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use std::hint::black_box;
use std::time::Duration;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/auth/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn basic_headers(user: &str) -> HeaderMap {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{user}-pass"));
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Basic {encoded}")).expect("header"),
    );
    headers
}

fn basic(c: &mut Criterion) {
    let auth = BasicAuth::new("bench", "bench", &fixture("htpasswd")).expect("fixture");
    let mut group = c.benchmark_group("basic_auth");
    // alice: bcrypt cost 5; bob: apr1; carol: {SHA}.
    let alice = basic_headers("alice");
    assert_eq!(auth.check(&alice), Outcome::Allowed);
    group.bench_function("cached_bcrypt", |b| {
        b.iter(|| assert_eq!(auth.check(black_box(&alice)), Outcome::Allowed))
    });
    for (user, label) in [
        ("bob", "uncached_apr1"),
        ("carol", "uncached_sha1"),
        ("alice", "uncached_bcrypt_cost5"),
    ] {
        let headers = basic_headers(user);
        group.bench_function(label, |b| {
            b.iter(|| assert_eq!(auth.check_uncached(black_box(&headers)), Outcome::Allowed))
        });
    }
    group.finish();
}

fn jwt(c: &mut Criterion) {
    let secret = b"shared-secret-of-32-bytes-or-so!".to_vec();
    let settings = JwtSettings {
        issuer: Some("https://issuer.test".into()),
        audiences: Some(vec!["api".into()]),
        source: KeySource::File(fixture("jwks.json")),
        secret: Some(secret.clone()),
        algorithms: Vec::new(),
        leeway: Duration::from_secs(60),
        claims_to_headers: vec![("sub".into(), http::HeaderName::from_static("x-user"))],
        header: header::AUTHORIZATION,
    };
    let auth = JwtAuth::new("bench", settings).expect("fixture");
    let read = |name: &str| std::fs::read(fixture(name)).expect("fixture key");
    let claims = serde_json::json!({
        "iss": "https://issuer.test", "aud": "api", "sub": "user-1",
        "exp": jsonwebtoken::get_current_timestamp() + 3600,
    });
    let signers = [
        (
            Algorithm::RS256,
            Some("rsa-1"),
            EncodingKey::from_rsa_pem(&read("rsa.pem")).expect("rsa"),
        ),
        (
            Algorithm::ES256,
            Some("ec-1"),
            EncodingKey::from_ec_pem(&read("ec.pem")).expect("ec"),
        ),
        (
            Algorithm::EdDSA,
            Some("ed-1"),
            EncodingKey::from_ed_pem(&read("ed25519.pem")).expect("ed"),
        ),
        (
            Algorithm::HS256,
            None,
            EncodingKey::from_secret(&secret).expect("secret"),
        ),
    ];
    let mut group = c.benchmark_group("jwt");
    for (algorithm, kid, key) in signers {
        let mut jwt_header = Header::new(algorithm);
        jwt_header.kid = kid.map(str::to_owned);
        let token = encode(&jwt_header, &claims, &key).expect("token");
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        group.bench_function(format!("verify_{algorithm:?}"), |b| {
            b.iter(|| assert!(auth.verify(black_box(token.as_bytes())).is_ok()))
        });
        if algorithm == Algorithm::ES256 {
            // The same token again: answered from the tokens already verified.
            group.bench_function("cached_check", |b| {
                b.iter(|| {
                    assert!(matches!(
                        auth.check(black_box(&headers)),
                        gatehouse::auth::jwt::Outcome::Allowed(_)
                    ))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, basic, jwt);
criterion_main!(benches);
