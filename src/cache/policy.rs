//! RFC 9111 (HTTP caching) for a shared cache, as pure functions over header maps and times:
//! what may be stored, how long it stays fresh, how old it is, which stored variant a request
//! may use, and what an unsafe request invalidates. No I/O; the store and the proxy call this.
//!
//! Besides RFC 9111 this covers the pieces of RFC 9110 a cache answers itself — conditional
//! requests (§13) and byte ranges (§14) — targeted cache control (RFC 9213), stale content
//! extensions (RFC 5861), and the reasons behind Cache-Status `detail=` (RFC 9211).
//!
//! Field values are parsed leniently (unknown directives, bad numbers and malformed list
//! members are skipped rather than failing the whole field), but wherever leniency and safety
//! pull apart, this errs towards not storing and towards revalidating. In particular:
//! - qualified `no-cache="field"` and `private="field"` are treated as their unqualified forms,
//!   as RFC 9111 §5.2.2.4 and §5.2.2.7 note most caches do; storing less is always allowed;
//! - a response setting a cookie is not stored unless it is explicitly shareable (see
//!   [`storability`]);
//! - `Pragma` is ignored: RFC 9111 §5.4 deprecates it, and a Cache-Control field always
//!   overrides it.

use http::header::{
    AGE, AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, CONTENT_LOCATION, DATE, ETAG,
    EXPIRES, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, LAST_MODIFIED, LOCATION,
    PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, RANGE, SET_COOKIE, TE, TRAILER, TRANSFER_ENCODING,
    UPGRADE, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use std::fmt;
use std::ops::RangeInclusive;
use std::time::{Duration, SystemTime};

/// RFC 9213 §3.1: the targeted field every CDN-style cache reads after its own.
pub const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// RFC 9111 §1.2.2: a delta-seconds value too large to represent is taken as 2^31. Clamping
/// every value there (about 68 years) also keeps `SystemTime` arithmetic far from overflow.
const DELTA_SECONDS_MAX: u64 = 1 << 31;

/// Cache directives (RFC 9111 §5.2), parsed leniently: unknown directives ignored, bad
/// numbers ignored, quoted values allowed, duplicates: first wins (§4.2.1), commas across
/// several header lines combined.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directives {
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub immutable: bool,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
    // request-only:
    /// `Some(None)` = max-stale without a value: any staleness is acceptable (§5.2.1.2).
    pub max_stale: Option<Option<u64>>,
    pub min_fresh: Option<u64>,
    pub only_if_cached: bool,
}

impl Directives {
    /// Parses Cache-Control field lines, e.g. `headers.get_all(CACHE_CONTROL)`.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> Self {
        let mut directives = Directives::default();
        for value in values {
            for member in list_members(value.as_bytes()) {
                let (name, argument) = match member.iter().position(|&b| b == b'=') {
                    Some(eq) => {
                        let (name, rest) = member.split_at(eq);
                        (name.trim_ascii(), Argument::Value(unquote(&rest[1..])))
                    }
                    None => (member, Argument::Absent),
                };
                directives.apply(name, argument, Merge::FirstWins);
            }
        }
        directives
    }

    fn apply(&mut self, name: &[u8], argument: Argument<'_>, merge: Merge) {
        // Directive names are case-insensitive (§5.2); none we know is longer than this.
        let mut lower = [0u8; 24];
        let Some(lower) = lower.get_mut(..name.len()) else {
            return;
        };
        lower.copy_from_slice(name);
        lower.make_ascii_lowercase();
        match &*lower {
            b"max-age" => set_seconds(&mut self.max_age, argument, merge),
            b"s-maxage" => set_seconds(&mut self.s_maxage, argument, merge),
            b"stale-while-revalidate" => {
                set_seconds(&mut self.stale_while_revalidate, argument, merge)
            }
            b"stale-if-error" => set_seconds(&mut self.stale_if_error, argument, merge),
            b"min-fresh" => set_seconds(&mut self.min_fresh, argument, merge),
            // A field-name argument narrows no-cache/private to those fields (§5.2.2.4,
            // §5.2.2.7); honouring them for the whole response is the permitted, safer reading.
            b"no-cache" => set_flag(&mut self.no_cache, argument, merge),
            b"private" => set_flag(&mut self.private, argument, merge),
            b"no-store" => set_flag(&mut self.no_store, argument, merge),
            b"public" => set_flag(&mut self.public, argument, merge),
            b"must-revalidate" => set_flag(&mut self.must_revalidate, argument, merge),
            b"proxy-revalidate" => set_flag(&mut self.proxy_revalidate, argument, merge),
            b"immutable" => set_flag(&mut self.immutable, argument, merge),
            b"only-if-cached" => set_flag(&mut self.only_if_cached, argument, merge),
            b"max-stale" => {
                let value = match argument {
                    Argument::Absent => Some(None),
                    Argument::Value(v) => match delta_seconds(v) {
                        Some(seconds) => Some(Some(seconds)),
                        None => return,
                    },
                    Argument::False => None,
                };
                if merge == Merge::LastWins || self.max_stale.is_none() {
                    self.max_stale = value;
                }
            }
            _ => {}
        }
    }
}

/// How repeated directives combine: Cache-Control keeps the first (RFC 9111 §4.2.1), while
/// targeted fields are Structured Fields Dictionaries, where the last wins (RFC 8941 §4.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Merge {
    FirstWins,
    LastWins,
}

/// A directive's argument as written.
#[derive(Clone, Copy, Debug)]
enum Argument<'a> {
    /// `name` alone (or `name=?1` in a targeted field).
    Absent,
    Value(&'a [u8]),
    /// `name=?0` in a targeted field: the directive is explicitly off.
    False,
}

fn set_flag(slot: &mut bool, argument: Argument<'_>, merge: Merge) {
    let on = !matches!(argument, Argument::False);
    match merge {
        Merge::FirstWins => *slot |= on,
        Merge::LastWins => *slot = on,
    }
}

fn set_seconds(slot: &mut Option<u64>, argument: Argument<'_>, merge: Merge) {
    if let Argument::Value(value) = argument
        && let Some(seconds) = delta_seconds(value)
        && (merge == Merge::LastWins || slot.is_none())
    {
        *slot = Some(seconds);
    }
}

/// RFC 9111 §1.2.2 delta-seconds: digits only, clamped at 2^31.
fn delta_seconds(digits: &[u8]) -> Option<u64> {
    digits_saturating(digits).map(|n| n.min(DELTA_SECONDS_MAX))
}

/// A non-empty run of ASCII digits, saturating rather than overflowing.
fn digits_saturating(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// The inside of a quoted-string (escapes left as they are: no directive value we read needs
/// them, and a backslash simply makes a number invalid); other values as they are.
fn unquote(value: &[u8]) -> &[u8] {
    let value = value.trim_ascii();
    match value {
        [b'"', inside @ .., b'"'] => inside,
        _ => value,
    }
}

/// The members of a comma-separated list field value (RFC 9110 §5.6.1): surrounding whitespace
/// trimmed, empty members dropped, commas inside quoted strings (`no-cache="a, b"`, entity
/// tags may contain commas) not splitting.
fn list_members(value: &[u8]) -> ListMembers<'_> {
    ListMembers { rest: value }
}

struct ListMembers<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for ListMembers<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        while !self.rest.is_empty() {
            let mut in_quotes = false;
            let mut escaped = false;
            let mut end = self.rest.len();
            for (i, &b) in self.rest.iter().enumerate() {
                if escaped {
                    escaped = false;
                } else if in_quotes {
                    match b {
                        b'\\' => escaped = true,
                        b'"' => in_quotes = false,
                        _ => {}
                    }
                } else if b == b'"' {
                    in_quotes = true;
                } else if b == b',' {
                    end = i;
                    break;
                }
            }
            let member = self.rest[..end].trim_ascii();
            self.rest = self.rest.get(end + 1..).unwrap_or_default();
            if !member.is_empty() {
                return Some(member);
            }
        }
        None
    }
}

/// The list members of every line of a field, in order (RFC 9110 §5.3: lines combine).
fn field_members<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a [u8]> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| list_members(value.as_bytes()))
}

/// An HTTP-date (RFC 9110 §5.6.7), in any of its three accepted formats.
fn http_date(value: &HeaderValue) -> Option<SystemTime> {
    date_bytes(value.as_bytes())
}

fn date_bytes(value: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(value).ok()?;
    httpdate::parse_http_date(text.trim()).ok()
}

/// The first line of a date-valued field. Dates contain commas, so their lines cannot be
/// combined; §4.2.1 allows using the first occurrence.
fn header_date(headers: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    headers.get(name).and_then(http_date)
}

/// The settings of one `[cache.NAME]` the policy needs.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyConfig {
    /// Freshness when the origin gives none (no max-age/s-maxage/Expires); zero = such responses are not stored (no heuristic freshness unless configured).
    pub default_ttl: Duration,
    /// Defaults used when the response does not say; the response's own directives win.
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    /// A gatehouse-specific targeted field (RFC 9213), e.g. "gatehouse-cache-control"; checked before CDN-Cache-Control, which is checked before Cache-Control.
    pub targeted_field: Option<HeaderName>,
}

/// The directives gatehouse obeys on a response: the first targeted field present (the configured one, then CDN-Cache-Control) replaces Cache-Control entirely (RFC 9213 §2.1); otherwise Cache-Control.
///
/// Targeted fields are Structured Fields Dictionaries (RFC 9213 §2.1, RFC 8941 §3.2); one that
/// is empty or does not parse as such is ignored as if absent, and the next one is tried. When a
/// targeted field is used, Expires is ignored too (see [`freshness`]).
pub fn response_directives(headers: &HeaderMap, config: &PolicyConfig) -> Directives {
    selected_directives(headers, config).0
}

/// The obeyed directives, and whether they came from a targeted field (which also silences
/// Expires: RFC 9213 §2.1 has the cache ignore "the Cache-Control and Expires header fields").
fn selected_directives(headers: &HeaderMap, config: &PolicyConfig) -> (Directives, bool) {
    let cdn_cache_control = CDN_CACHE_CONTROL;
    let targeted = config.targeted_field.iter().chain([&cdn_cache_control]);
    for name in targeted {
        if let Some(directives) = targeted_directives(headers, name) {
            return (directives, true);
        }
    }
    (Directives::parse(headers.get_all(CACHE_CONTROL)), false)
}

/// A targeted field's directives, or None when it is absent, empty or not a valid Dictionary.
fn targeted_directives(headers: &HeaderMap, name: &HeaderName) -> Option<Directives> {
    let mut directives = Directives::default();
    let mut members = 0usize;
    // RFC 8941 §4.2 parses the lines joined by commas; a Dictionary member never spans a
    // comma, so parsing line by line is the same.
    for line in headers.get_all(name) {
        let mut cursor = SfCursor {
            input: line.as_bytes().trim_ascii(),
            pos: 0,
        };
        while !cursor.at_end() {
            let key = cursor.key()?;
            let argument = if cursor.eat(b'=') {
                if cursor.peek() == Some(b'(') {
                    // No cache directive takes a list: present, with no usable value.
                    cursor.inner_list()?;
                    Argument::Value(b"")
                } else {
                    let argument = cursor.bare_item()?;
                    cursor.parameters()?;
                    argument
                }
            } else {
                cursor.parameters()?;
                Argument::Absent
            };
            directives.apply(key, argument, Merge::LastWins);
            members += 1;
            cursor.skip_ows();
            if cursor.at_end() {
                break;
            }
            if !cursor.eat(b',') {
                return None;
            }
            cursor.skip_ows();
            if cursor.at_end() {
                return None; // a trailing comma is a parse error (RFC 8941 §4.2.2)
            }
        }
    }
    (members > 0).then_some(directives)
}

/// Just enough of an RFC 8941 parser to validate a Dictionary and read cache directives
/// from it; it borrows the field bytes and never allocates.
struct SfCursor<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> SfCursor<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let hit = self.peek() == Some(byte);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn take_while(&mut self, mut accept: impl FnMut(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(&mut accept) {
            self.pos += 1;
        }
        &self.input[start..self.pos]
    }

    fn skip_ows(&mut self) {
        self.take_while(|b| b == b' ' || b == b'\t');
    }

    /// §4.2.3.3.
    fn key(&mut self) -> Option<&'a [u8]> {
        if !self
            .peek()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'*')
        {
            return None;
        }
        Some(self.take_while(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.' | b'*')
        }))
    }

    /// §4.2.3.1 (plus RFC 9651 Dates), as the argument it gives a directive.
    fn bare_item(&mut self) -> Option<Argument<'a>> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number().map(Argument::Value),
            b'"' => self.string().map(Argument::Value),
            b'?' => {
                self.pos += 1;
                if self.eat(b'0') {
                    Some(Argument::False)
                } else if self.eat(b'1') {
                    Some(Argument::Absent)
                } else {
                    None
                }
            }
            b':' => {
                self.pos += 1;
                let bytes = self.take_while(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
                self.eat(b':').then_some(Argument::Value(bytes))
            }
            b'@' => {
                self.pos += 1;
                self.number().map(Argument::Value)
            }
            b if b.is_ascii_alphabetic() || b == b'*' => Some(Argument::Value(
                self.take_while(|b| is_tchar(b) || b == b':' || b == b'/'),
            )),
            _ => None,
        }
    }

    /// §4.2.4: an Integer (at most 15 digits) or a Decimal (12.3 digits at most).
    fn number(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        self.eat(b'-');
        let integer = self.take_while(|b| b.is_ascii_digit()).len();
        let valid = if self.eat(b'.') {
            let fraction = self.take_while(|b| b.is_ascii_digit()).len();
            (1..=12).contains(&integer) && (1..=3).contains(&fraction)
        } else {
            (1..=15).contains(&integer)
        };
        valid.then(|| &self.input[start..self.pos])
    }

    /// §4.2.5: the inside of a String, escapes left in place.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.pos += 1;
        let start = self.pos;
        loop {
            match self.peek()? {
                b'"' => {
                    let inside = &self.input[start..self.pos];
                    self.pos += 1;
                    return Some(inside);
                }
                b'\\' => {
                    self.pos += 1;
                    if !matches!(self.peek()?, b'"' | b'\\') {
                        return None;
                    }
                    self.pos += 1;
                }
                0x20..=0x7e => self.pos += 1,
                _ => return None,
            }
        }
    }

    /// §4.2.3.2: parameters are valid but mean nothing to a cache directive.
    fn parameters(&mut self) -> Option<()> {
        while self.eat(b';') {
            self.take_while(|b| b == b' ');
            self.key()?;
            if self.eat(b'=') {
                self.bare_item()?;
            }
        }
        Some(())
    }

    /// §4.2.1.2.
    fn inner_list(&mut self) -> Option<()> {
        self.pos += 1;
        loop {
            self.take_while(|b| b == b' ');
            if self.eat(b')') {
                return self.parameters();
            }
            self.bare_item()?;
            self.parameters()?;
            if !matches!(self.peek()?, b' ' | b')') {
                return None;
            }
        }
    }
}

/// RFC 9110 §5.6.2 tchar.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Why a response is not stored (for Cache-Status `fwd=...; detail=...` and logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotStored {
    /// Only responses to GET are stored.
    Method,
    /// An interim status, a 304, or a status that is not heuristically cacheable without
    /// explicit freshness.
    Status,
    /// `no-store` in the request or the response.
    NoStore,
    /// `private`: for the user's own cache, never a shared one.
    Private,
    /// The request carried credentials and the response did not say it may be shared.
    Authorization,
    /// Nothing says how long it stays fresh, and it cannot be revalidated.
    NoFreshness,
    /// `Vary: *`: no later request can be known to match.
    VaryStar,
    /// It sets a cookie and is not explicitly shareable.
    SetCookie,
    /// A 206: only full responses are stored.
    PartialContent,
}

impl NotStored {
    /// A token for Cache-Status `detail=` (RFC 9211 §2.8) and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::Method => "method",
            NotStored::Status => "status",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::Authorization => "authorization",
            NotStored::NoFreshness => "no-freshness",
            NotStored::VaryStar => "vary-star",
            NotStored::SetCookie => "set-cookie",
            NotStored::PartialContent => "partial-content",
        }
    }
}

impl fmt::Display for NotStored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RFC 9110 §15.1: statuses a cache may store with heuristic freshness.
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Whether the stored response can be revalidated: a well-formed ETag or Last-Modified.
fn has_validator(headers: &HeaderMap) -> bool {
    headers
        .get(ETAG)
        .is_some_and(|etag| EntityTag::parse(etag.as_bytes()).is_some())
        || header_date(headers, &LAST_MODIFIED).is_some()
}

/// RFC 9111 §3: may this response to this request be stored by a shared cache?
/// - only GET (HEAD responses are not stored; HEAD is answered from a stored GET);
/// - final status that is heuristically cacheable (200, 203, 204, 206 → NotStored::PartialContent since we store only full responses, 300, 301, 308, 404, 405, 410, 414, 501) or any status with explicit freshness (max-age/s-maxage/Expires) — 1xx never;
/// - request or response no-store; response private (shared cache); request Authorization unless the response has public, s-maxage or must-revalidate (§3.5);
/// - freshness: explicit freshness, or config.default_ttl > 0 (heuristic), or no-cache/must-revalidate with a validator (stored, always revalidated); else NoFreshness;
/// - Vary: * → VaryStar;
/// - Set-Cookie: a response carrying Set-Cookie is not stored unless it is explicitly `public` or has s-maxage.
///
/// Set-Cookie is a deliberate choice beyond RFC 9111, which lets a shared cache store such a
/// response: storing one user's session cookie and replaying it to everyone else is the classic
/// shared-cache leak, and origins that forget `private` on a login response are common. An
/// origin that really means to share the response says so with `public` or `s-maxage`.
///
/// Also: a 304 is never stored (it is not a representation, only an update to one, §4.3.4);
/// `public` alone does not make a non-heuristically-cacheable status storable (a shared error
/// page needs explicit freshness); and a `no-cache` response without a validator is not stored,
/// since it could only ever be "revalidated" by fetching it again. The first reason found is
/// returned, in the order of the list above.
pub fn storability(
    method: &Method,
    request_headers: &HeaderMap,
    status: StatusCode,
    response_headers: &HeaderMap,
    config: &PolicyConfig,
) -> Result<(), NotStored> {
    if method != Method::GET {
        return Err(NotStored::Method);
    }
    let (directives, targeted) = selected_directives(response_headers, config);
    // §5.3: any Expires, even an invalid one (which means "already expired"), is explicit.
    let explicit = directives.s_maxage.is_some()
        || directives.max_age.is_some()
        || (!targeted && response_headers.contains_key(EXPIRES));
    if status == StatusCode::PARTIAL_CONTENT {
        return Err(NotStored::PartialContent);
    }
    if status.is_informational()
        || status == StatusCode::NOT_MODIFIED
        || !(heuristically_cacheable(status) || explicit)
    {
        return Err(NotStored::Status);
    }
    // §5.2.1.5: a request's no-store covers the response to it too.
    if directives.no_store || Directives::parse(request_headers.get_all(CACHE_CONTROL)).no_store {
        return Err(NotStored::NoStore);
    }
    if directives.private {
        return Err(NotStored::Private);
    }
    let shareable = directives.public || directives.s_maxage.is_some();
    if request_headers.contains_key(AUTHORIZATION) && !(shareable || directives.must_revalidate) {
        return Err(NotStored::Authorization);
    }
    if response_headers.contains_key(SET_COOKIE) && !shareable {
        return Err(NotStored::SetCookie);
    }
    if vary(response_headers) == Vary::Any {
        return Err(NotStored::VaryStar);
    }
    let validator = has_validator(response_headers);
    if directives.no_cache && !validator {
        return Err(NotStored::NoFreshness);
    }
    let fresh_for_a_while = explicit || !config.default_ttl.is_zero();
    let always_revalidated = (directives.no_cache || directives.must_revalidate) && validator;
    if fresh_for_a_while || always_revalidated {
        Ok(())
    } else {
        Err(NotStored::NoFreshness)
    }
}

/// When and how a stored response was received (RFC 9111 §4.2.3 inputs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    pub request_time: SystemTime,
    pub response_time: SystemTime,
}

/// Freshness facts fixed when a response is stored (or refreshed by a 304).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freshness {
    /// §4.2.1: s-maxage, else max-age, else Expires − Date, else config.default_ttl (heuristic); zero when no-cache.
    pub lifetime: Duration,
    /// §4.2.3 corrected_initial_age (apparent age vs Age header + response delay; the upstream's Age is added, never ignored).
    pub initial_age: Duration,
    pub response_time: SystemTime,
    /// From the response's stale-while-revalidate / stale-if-error (RFC 5861), else the config defaults.
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    /// must-revalidate or proxy-revalidate or s-maxage (§5.2.2.10): never served stale, not even with stale-if-error/while-revalidate.
    pub must_revalidate: bool,
    /// no-cache (response): stored but revalidated before every use.
    pub no_cache: bool,
}

/// The freshness facts of a response received now (or of a stored response whose headers a
/// 304 has just refreshed: pass the refreshed headers and the revalidation's times).
pub fn freshness(
    response_headers: &HeaderMap,
    received: Received,
    config: &PolicyConfig,
) -> Freshness {
    let (directives, targeted) = selected_directives(response_headers, config);
    // RFC 9110 §6.6.1: a response without a (valid) Date is dated when it was received.
    let date = header_date(response_headers, &DATE).unwrap_or(received.response_time);
    let seconds = Duration::from_secs;

    let lifetime = if directives.no_cache {
        Duration::ZERO
    } else if let Some(s_maxage) = directives.s_maxage {
        seconds(s_maxage)
    } else if let Some(max_age) = directives.max_age {
        seconds(max_age)
    } else if let Some(expires) = response_headers.get(EXPIRES).filter(|_| !targeted) {
        // §5.3: an invalid Expires (such as "0") is a time in the past; Expires before Date
        // is likewise already stale.
        http_date(expires)
            .and_then(|expires| expires.duration_since(date).ok())
            .unwrap_or(Duration::ZERO)
    } else {
        config.default_ttl
    };

    // §4.2.3. A clock running backwards makes a difference zero, never negative.
    let apparent_age = received
        .response_time
        .duration_since(date)
        .unwrap_or(Duration::ZERO);
    let response_delay = received
        .response_time
        .duration_since(received.request_time)
        .unwrap_or(Duration::ZERO);
    // §5.1: of a list-valued Age use the first member; an invalid one is ignored.
    let age_value = response_headers
        .get(AGE)
        .and_then(|age| list_members(age.as_bytes()).next())
        .and_then(delta_seconds)
        .map_or(Duration::ZERO, seconds);
    let corrected_age_value = age_value.saturating_add(response_delay);
    let initial_age = apparent_age.max(corrected_age_value);

    Freshness {
        lifetime,
        initial_age,
        response_time: received.response_time,
        stale_while_revalidate: directives
            .stale_while_revalidate
            .map_or(config.stale_while_revalidate, seconds),
        stale_if_error: directives
            .stale_if_error
            .map_or(config.stale_if_error, seconds),
        must_revalidate: directives.must_revalidate
            || directives.proxy_revalidate
            || directives.s_maxage.is_some(),
        no_cache: directives.no_cache,
    }
}

impl Freshness {
    /// §4.2.3 current_age = initial_age + (now − response_time).
    pub fn current_age(&self, now: SystemTime) -> Duration {
        let resident_time = now
            .duration_since(self.response_time)
            .unwrap_or(Duration::ZERO);
        self.initial_age.saturating_add(resident_time)
    }

    /// Remaining freshness at `now` (zero if stale) — for Cache-Status `ttl=`.
    pub fn ttl(&self, now: SystemTime) -> Duration {
        self.lifetime.saturating_sub(self.current_age(now))
    }

    /// §4.2: fresh while the lifetime exceeds the age.
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.lifetime > self.current_age(now)
    }

    /// How far past its lifetime the response is at `now` (zero while fresh).
    pub fn staleness(&self, now: SystemTime) -> Duration {
        self.current_age(now).saturating_sub(self.lifetime)
    }
}

/// What a cache may do with a stored response for this request, now (RFC 9111 §4, §4.2.4, RFC 5861).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usability {
    Fresh,
    /// Stale but within stale-while-revalidate: serve it and revalidate in the background.
    /// Also given when the request's max-stale accepts the staleness: the client is served what
    /// it agreed to, and the refresh spares the next one.
    StaleWhileRevalidate,
    /// Must be revalidated (stale, no-cache, or the request's no-cache / max-age=0 / min-fresh).
    Revalidate,
}

/// Takes the request's directives into account: request no-cache or max-age=N (age > N) or min-fresh → Revalidate; max-stale allows serving stale (unless must_revalidate). Pragma: no-cache and unknown request directives do NOT bypass (treat Pragma as ignored when Cache-Control is present; document).
///
/// Pragma is ignored whether or not Cache-Control is present: RFC 9111 §5.4 deprecates it, and
/// honouring `Pragma: no-cache` would let any client force a trip to the origin through a
/// header nothing modern sends on purpose. Request `no-store` does not affect reuse
/// (§5.2.1.5 is about storing), and `only-if-cached` is the caller's to act on when nothing is
/// stored. Stale responses are never served when the response said no-cache, must-revalidate,
/// proxy-revalidate or s-maxage (§4.2.4).
pub fn usability(freshness: &Freshness, request_headers: &HeaderMap, now: SystemTime) -> Usability {
    let request = Directives::parse(request_headers.get_all(CACHE_CONTROL));
    if freshness.no_cache || request.no_cache {
        return Usability::Revalidate;
    }
    let age = freshness.current_age(now);
    // §5.2.1.1: max-age bounds the age itself; no max-stale can extend it.
    if request
        .max_age
        .is_some_and(|max_age| age > Duration::from_secs(max_age))
    {
        return Usability::Revalidate;
    }
    // §5.2.1.3: the response must stay fresh for at least min-fresh more seconds.
    if request
        .min_fresh
        .is_some_and(|min_fresh| freshness.ttl(now) < Duration::from_secs(min_fresh))
    {
        return Usability::Revalidate;
    }
    if freshness.lifetime > age {
        return Usability::Fresh;
    }
    if freshness.must_revalidate {
        return Usability::Revalidate;
    }
    let staleness = age - freshness.lifetime;
    // §5.2.1.2: max-stale without a value accepts any staleness.
    let accepted_by_client = match request.max_stale {
        Some(None) => true,
        Some(Some(max_stale)) => staleness <= Duration::from_secs(max_stale),
        None => false,
    };
    // RFC 5861 §3: "up to the indicated number of seconds" — a zero window allows nothing.
    if accepted_by_client || staleness < freshness.stale_while_revalidate {
        Usability::StaleWhileRevalidate
    } else {
        Usability::Revalidate
    }
}

/// May a stale stored response be served because the origin failed (stale-if-error window, not must_revalidate)?
///
/// A still-fresh response is usable too (serving it is not serving stale), unless it is
/// no-cache: that demands a successful validation before any use (§5.2.2.4), and §4.2.4 counts
/// no-cache among the directives that forbid stale responses.
pub fn usable_on_error(freshness: &Freshness, now: SystemTime) -> bool {
    if freshness.no_cache {
        return false;
    }
    if freshness.is_fresh(now) {
        return true;
    }
    !freshness.must_revalidate && freshness.staleness(now) < freshness.stale_if_error
}

/// §4.1 Vary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Vary {
    None,
    Any,
    Names(Vec<HeaderName>),
}

/// The response's Vary: field names lower-cased, combined across lines, in order and without
/// repeats; `*` anywhere → Any. Members that are not field names are skipped: no request can
/// carry such a field, so they could never tell two requests apart.
pub fn vary(response_headers: &HeaderMap) -> Vary {
    let mut names: Vec<HeaderName> = Vec::new();
    for member in field_members(response_headers, &VARY) {
        if member == b"*" {
            return Vary::Any;
        }
        if let Ok(name) = HeaderName::from_bytes(member)
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    if names.is_empty() {
        Vary::None
    } else {
        Vary::Names(names)
    }
}

/// The request's values for the Vary names, normalized (§4.1: combined lines, whitespace trimmed), to store with a variant and compare later; None for Vary::Any.
///
/// Normal form: every line's list members, trimmed, empty ones dropped, joined by ", ". An
/// absent field stays `None` and is distinct from an empty one (§4.1: absent only matches
/// absent). A single line already in normal form is shared, not copied.
pub fn vary_values(vary: &Vary, request_headers: &HeaderMap) -> Option<Vec<Option<HeaderValue>>> {
    match vary {
        Vary::None => Some(Vec::new()),
        Vary::Any => None,
        Vary::Names(names) => Some(
            names
                .iter()
                .map(|name| normalized_field(request_headers, name))
                .collect(),
        ),
    }
}

/// Whether a request selects the variant stored with `stored_values` (from [`vary_values`]),
/// comparing without building the request's normal form.
pub fn vary_matches(
    vary: &Vary,
    stored_values: &[Option<HeaderValue>],
    request_headers: &HeaderMap,
) -> bool {
    match vary {
        Vary::None => true,
        Vary::Any => false,
        Vary::Names(names) => {
            names.len() == stored_values.len()
                && names.iter().zip(stored_values).all(|(name, stored)| {
                    match (stored, request_headers.contains_key(name)) {
                        (None, present) => !present,
                        (Some(_), false) => false,
                        (Some(stored), true) => {
                            list_members(stored.as_bytes()).eq(field_members(request_headers, name))
                        }
                    }
                })
        }
    }
}

fn normalized_field(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut lines = headers.get_all(name).iter();
    let first = lines.next()?;
    if lines.next().is_none() && is_normal_list(first.as_bytes()) {
        return Some(first.clone());
    }
    let mut normal = Vec::new();
    for member in field_members(headers, name) {
        if !normal.is_empty() {
            normal.extend_from_slice(b", ");
        }
        normal.extend_from_slice(member);
    }
    // Members of valid values joined by ", " are valid; the fallback is unreachable in practice.
    Some(HeaderValue::from_bytes(&normal).unwrap_or_else(|_| first.clone()))
}

/// Whether a value is already its members joined by ", ".
fn is_normal_list(value: &[u8]) -> bool {
    let mut rest = value;
    for (i, member) in list_members(value).enumerate() {
        if i > 0 {
            match rest.strip_prefix(b", ") {
                Some(after) => rest = after,
                None => return false,
            }
        }
        match rest.strip_prefix(member) {
            Some(after) => rest = after,
            None => return false,
        }
    }
    rest.is_empty()
}

/// An entity tag (RFC 9110 §8.8.3), borrowed from its field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EntityTag<'a> {
    weak: bool,
    /// The opaque-tag without its quotes.
    opaque: &'a [u8],
}

impl<'a> EntityTag<'a> {
    fn parse(value: &'a [u8]) -> Option<Self> {
        let value = value.trim_ascii();
        // `W/` is case-sensitive (§8.8.3: %s"W/").
        let (weak, quoted) = match value.strip_prefix(b"W/") {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        let [b'"', opaque @ .., b'"'] = quoted else {
            return None;
        };
        // etagc = %x21 / %x23-7E / obs-text
        opaque
            .iter()
            .all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
            .then_some(EntityTag { weak, opaque })
    }

    /// §8.8.3.2: weak comparison ignores weakness.
    fn weak_eq(self, other: EntityTag<'_>) -> bool {
        self.opaque == other.opaque
    }

    /// §8.8.3.2: strong comparison needs both strong.
    fn strong_eq(self, other: EntityTag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }
}

fn stored_etag(stored_headers: &HeaderMap) -> Option<EntityTag<'_>> {
    stored_headers
        .get(ETAG)
        .and_then(|etag| EntityTag::parse(etag.as_bytes()))
}

/// §4.3.2: does the client's own conditional request match the stored response, so that 304 can be answered from the cache? If-None-Match (weak comparison, lists, `*`) takes precedence over If-Modified-Since (compared with the stored Last-Modified, else Date).
///
/// `stored_headers` are those of a stored successful response: `*` matches because a current
/// representation exists. The caller evaluates this only for GET and HEAD (RFC 9110 §13.1.3
/// ignores If-Modified-Since otherwise). Malformed members of If-None-Match match nothing; an
/// invalid If-Modified-Since, or one sent more than once, is ignored (§13.1.3).
pub fn not_modified(request_headers: &HeaderMap, stored_headers: &HeaderMap) -> bool {
    // RFC 9110 §13.1.3: If-Modified-Since is ignored when If-None-Match is present.
    if request_headers.contains_key(IF_NONE_MATCH) {
        let current = stored_etag(stored_headers);
        return field_members(request_headers, &IF_NONE_MATCH).any(|member| {
            member == b"*"
                || EntityTag::parse(member)
                    .zip(current)
                    .is_some_and(|(tag, current)| tag.weak_eq(current))
        });
    }
    let mut since_lines = request_headers.get_all(IF_MODIFIED_SINCE).iter();
    let (Some(since), None) = (since_lines.next(), since_lines.next()) else {
        return false;
    };
    let Some(since) = http_date(since) else {
        return false;
    };
    header_date(stored_headers, &LAST_MODIFIED)
        .or_else(|| header_date(stored_headers, &DATE))
        .is_some_and(|modified| modified <= since)
}

/// The headers for revalidating a stored response with the origin (§4.3.1): If-None-Match with its ETag(s), else If-Modified-Since with its Last-Modified; empty if it has no validator.
///
/// An ETag is sent as stored (a weak one too: If-None-Match compares weakly); a malformed
/// ETag or Last-Modified is no validator.
pub fn validators(stored_headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    if let Some(etag) = stored_headers.get(ETAG)
        && EntityTag::parse(etag.as_bytes()).is_some()
    {
        return vec![(IF_NONE_MATCH, etag.clone())];
    }
    if let Some(last_modified) = stored_headers.get(LAST_MODIFIED)
        && http_date(last_modified).is_some()
    {
        return vec![(IF_MODIFIED_SINCE, last_modified.clone())];
    }
    Vec::new()
}

/// Fields a stored response never takes from a 304: the framing (a 304 has no body, so its
/// Content-Length, if any, is not the stored body's), and the hop-by-hop fields of RFC 9110
/// §7.6.1 which §3.1 has caches drop before storing.
fn kept_from_304(name: &HeaderName, not_modified: &HeaderMap) -> bool {
    const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
    let excluded = [
        CONTENT_LENGTH,
        TRANSFER_ENCODING,
        CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        TE,
        TRAILER,
        UPGRADE,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
        SET_COOKIE,
    ];
    !excluded.contains(name)
        && !field_members(not_modified, &CONNECTION)
            .any(|listed| listed.eq_ignore_ascii_case(name.as_str().as_bytes()))
}

/// §4.3.4: the stored headers updated by a 304's headers (all fields of the 304 replace stored ones, except Content-Length and the framing fields; hop-by-hop excluded).
///
/// Each field the 304 carries replaces every stored line of that name (§3.2). One more field is
/// kept out: Set-Cookie. A cookie set on one client's revalidation must not be replayed to
/// everyone the refreshed response is served to, for the reason given at [`storability`];
/// the stored response keeps whatever Set-Cookie it was stored with.
pub fn refresh_headers(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    let mut refreshed = stored.clone();
    for name in not_modified.keys() {
        if !kept_from_304(name, not_modified) {
            continue;
        }
        refreshed.remove(name);
        for value in not_modified.get_all(name) {
            refreshed.append(name.clone(), value.clone());
        }
    }
    refreshed
}

/// §4.4: URIs an unsafe request invalidates when its response is 2xx/3xx: the target URI, plus Location and Content-Location when same-origin (same host as the request's; compare authority case-insensitively, relative references resolved against the target). Returned as cache keys built by `cache_key`.
///
/// Keys carry no scheme, so "same origin" compares the authority only (without default ports,
/// as [`cache_key`] does): an `http:` Location on an `https` request names the same key. URIs
/// of any other scheme, or on another host, are never invalidated — that is what stops one
/// origin from flushing another's entries (§4.4). Relative references resolve as in RFC 3986
/// §5.2, dot segments removed; fragments are dropped.
pub fn invalidation_targets(
    method: &Method,
    status: StatusCode,
    request_host: &str,
    request_uri: &Uri,
    response_headers: &HeaderMap,
) -> Vec<String> {
    // §4.4: unsafe includes methods whose safety is unknown; "non-error" is 2xx and 3xx.
    if method.is_safe() || !(status.is_success() || status.is_redirection()) {
        return Vec::new();
    }
    let path = request_uri.path();
    // Authority-form (CONNECT) and asterisk-form targets name no cacheable resource.
    if !path.starts_with('/') {
        return Vec::new();
    }
    let query = request_uri.query();
    let mut targets = vec![key_with_query(request_host, path, query)];
    for name in [LOCATION, CONTENT_LOCATION] {
        let Some(reference) = response_headers
            .get(&name)
            .and_then(|value| value.to_str().ok())
        else {
            continue;
        };
        if let Some(key) = resolve_same_origin(reference, request_host, path, query)
            && !targets.contains(&key)
        {
            targets.push(key);
        }
    }
    targets
}

/// The cache key of `reference` resolved against the target, if it is on the same origin.
fn resolve_same_origin(
    reference: &str,
    request_host: &str,
    base_path: &str,
    base_query: Option<&str>,
) -> Option<String> {
    let reference = reference.trim();
    let reference = reference.split_once('#').map_or(reference, |(r, _)| r);

    // RFC 3986 §3.1: a scheme is ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) before a ':'
    // that comes before any '/', '?' (a colon after them is part of a relative path).
    let scheme_end = reference
        .find([':', '/', '?'])
        .filter(|&i| reference.as_bytes()[i] == b':');
    let after_scheme = match scheme_end {
        Some(colon) => {
            let scheme = &reference[..colon];
            if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
                return None;
            }
            // `http:path` without an authority is not a usable same-origin reference.
            Some(reference[colon + 1..].strip_prefix("//")?)
        }
        None => reference.strip_prefix("//"),
    };
    if let Some(rest) = after_scheme {
        // Network-path reference: authority, then an absolute (or empty) path.
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_and_query) = rest.split_at(end);
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        if !host_key(host).eq_ignore_ascii_case(host_key(request_host)) {
            return None;
        }
        let (path, query) = split_query(path_and_query);
        let path = if path.is_empty() { "/" } else { path };
        return Some(key_with_query(
            request_host,
            &remove_dot_segments(path),
            query,
        ));
    }

    // RFC 3986 §5.2.2, same authority.
    let (path, query) = split_query(reference);
    if path.is_empty() {
        return Some(key_with_query(
            request_host,
            base_path,
            query.or(base_query),
        ));
    }
    let path = if path.starts_with('/') {
        remove_dot_segments(path)
    } else {
        // §5.2.3 merge: the base path up to and including its last '/'.
        let directory = base_path.rfind('/').map_or("", |i| &base_path[..=i]);
        remove_dot_segments(&format!("{directory}{path}"))
    };
    Some(key_with_query(request_host, &path, query))
}

fn split_query(reference: &str) -> (&str, Option<&str>) {
    match reference.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (reference, None),
    }
}

fn key_with_query(host: &str, path: &str, query: Option<&str>) -> String {
    let mut key = cache_key(host, path);
    if let Some(query) = query {
        key.push('?');
        key.push_str(query);
    }
    key
}

/// RFC 3986 §5.2.4.
fn remove_dot_segments(path: &str) -> String {
    let mut input = path;
    let mut output = String::with_capacity(path.len());
    let pop_segment = |output: &mut String| {
        let cut = output.rfind('/').unwrap_or(0);
        output.truncate(cut);
    };
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../") {
            input = rest;
        } else if let Some(rest) = input.strip_prefix("./") {
            input = rest;
        } else if input.starts_with("/./") {
            input = &input[2..];
        } else if input == "/." {
            input = "/";
        } else if input.starts_with("/../") {
            input = &input[3..];
            pop_segment(&mut output);
        } else if input == "/.." {
            input = "/";
            pop_segment(&mut output);
        } else if input == "." || input == ".." {
            input = "";
        } else {
            let skip = usize::from(input.starts_with('/'));
            let end = input[skip..].find('/').map_or(input.len(), |i| i + skip);
            output.push_str(&input[..end]);
            input = &input[end..];
        }
    }
    output
}

/// A host (or authority) without a default or empty port: keys carry no scheme, so both
/// schemes' default ports are dropped.
fn host_key(host: &str) -> &str {
    for default in [":80", ":443", ":"] {
        if let Some(bare) = host.strip_suffix(default)
            && !bare.is_empty()
            && (bare.ends_with(']') || !bare.contains(':'))
        {
            return bare;
        }
    }
    host
}

/// The primary cache key of a request: lower-cased host (no default port) + path-and-query exactly as sent (no normalization beyond that).
///
/// Default ports are 80 and 443 alike, as the key does not say which scheme was used; an IPv6
/// literal keeps its brackets (`[::1]:80` → `[::1]`).
pub fn cache_key(host: &str, path_and_query: &str) -> String {
    let host = host_key(host);
    let mut key = String::with_capacity(host.len() + path_and_query.len());
    key.push_str(host);
    key.make_ascii_lowercase();
    key.push_str(path_and_query);
    key
}

/// A single byte range as written, before the representation's length is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RangeSpec {
    /// `first-` or `first-last` (RFC 9110 §14.1.1 int-range).
    From { first: u64, last: Option<u64> },
    /// `-length` (suffix-range).
    Suffix(u64),
}

/// A Range header asking for exactly one byte range, or None (absent, several ranges, other
/// units, or invalid syntax, all of which a server answers with the full representation).
fn single_byte_range(request_headers: &HeaderMap) -> Option<RangeSpec> {
    let mut lines = request_headers.get_all(RANGE).iter();
    let (Some(range), None) = (lines.next(), lines.next()) else {
        return None;
    };
    let (unit, set) = range.to_str().ok()?.split_once('=')?;
    // §14.1: range units are case-insensitive.
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = list_members(set.as_bytes());
    let spec = specs.next()?;
    if specs.next().is_some() {
        return None;
    }
    let dash = spec.iter().position(|&b| b == b'-')?;
    let (first, last) = (spec[..dash].trim_ascii(), spec[dash + 1..].trim_ascii());
    if first.is_empty() {
        return digits_saturating(last).map(RangeSpec::Suffix);
    }
    let first = digits_saturating(first)?;
    if last.is_empty() {
        return Some(RangeSpec::From { first, last: None });
    }
    let last = digits_saturating(last)?;
    // §14.1.1: last-pos before first-pos makes the range invalid, not unsatisfiable.
    (last >= first).then_some(RangeSpec::From {
        first,
        last: Some(last),
    })
}

/// RFC 9110 §13.1.5: does If-Range (if any) allow a partial response?
fn if_range_holds(request_headers: &HeaderMap, stored_headers: &HeaderMap) -> bool {
    let Some(if_range) = request_headers.get(IF_RANGE) else {
        return true;
    };
    let if_range = if_range.as_bytes().trim_ascii();
    if if_range.starts_with(b"\"") || if_range.starts_with(b"W/") {
        return EntityTag::parse(if_range)
            .zip(stored_etag(stored_headers))
            .is_some_and(|(tag, current)| tag.strong_eq(current));
    }
    let (Some(since), Some(last_modified)) = (
        date_bytes(if_range),
        header_date(stored_headers, &LAST_MODIFIED),
    ) else {
        return false;
    };
    // §8.8.2.2: a cache may treat a stored Last-Modified as strong only when the stored Date
    // is at least a second later; otherwise it could have changed twice within that second.
    let strong = header_date(stored_headers, &DATE).is_some_and(|date| {
        date.duration_since(last_modified)
            .is_ok_and(|gap| gap >= Duration::from_secs(1))
    });
    strong && since == last_modified
}

/// RFC 9110 §14: a single satisfiable byte range of a representation of `len` bytes, from a Range header (bytes=a-b, a-, -n), honouring If-Range (only if it matches the stored strong ETag or Last-Modified exactly). None → serve 200 full (multiple ranges, syntax errors, non-bytes units, If-Range mismatch); Some(Err(())) → 416.
///
/// The caller evaluates this only for GET, the one method with range semantics (§14.2). A last
/// position past the end is clamped, as is a suffix longer than the representation (§14.1.2);
/// a first position at or past the end, a zero-length suffix, or any range of an empty
/// representation is unsatisfiable (§14.1.1).
pub fn byte_range(
    request_headers: &HeaderMap,
    stored_headers: &HeaderMap,
    len: u64,
) -> Option<Result<RangeInclusive<u64>, ()>> {
    let spec = single_byte_range(request_headers)?;
    // §13.1.5: a false If-Range means the Range field is ignored, unsatisfiable or not.
    if !if_range_holds(request_headers, stored_headers) {
        return None;
    }
    let end = len.checked_sub(1);
    Some(match (spec, end) {
        (RangeSpec::From { first, last }, Some(end)) if first <= end => {
            Ok(first..=last.map_or(end, |last| last.min(end)))
        }
        (RangeSpec::Suffix(length), Some(end)) if length > 0 => Ok(len - length.min(len)..=end),
        _ => Err(()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const T: u64 = 1_700_000_000;

    fn headers(fields: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn cache_control(lines: &[&str]) -> Directives {
        let fields: Vec<_> = lines.iter().map(|line| ("cache-control", *line)).collect();
        Directives::parse(headers(&fields).get_all(CACHE_CONTROL))
    }

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn date(seconds: u64) -> String {
        httpdate::fmt_http_date(at(seconds))
    }

    fn secs(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    fn config() -> PolicyConfig {
        PolicyConfig {
            default_ttl: Duration::ZERO,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            targeted_field: None,
        }
    }

    fn received_at(seconds: u64) -> Received {
        Received {
            request_time: at(seconds),
            response_time: at(seconds),
        }
    }

    /// A stored response with the given lifetime, received at T, with no initial age.
    fn stored_for(lifetime: u64) -> Freshness {
        Freshness {
            lifetime: secs(lifetime),
            initial_age: Duration::ZERO,
            response_time: at(T),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            must_revalidate: false,
            no_cache: false,
        }
    }

    // ---- Directives ----

    #[test]
    fn every_directive_is_read() {
        let parsed = cache_control(&[
            "max-age=60, s-maxage=120, no-store, no-cache, private, public, must-revalidate, \
             proxy-revalidate, immutable, stale-while-revalidate=30, stale-if-error=300, \
             max-stale=5, min-fresh=10, only-if-cached",
        ]);
        assert_eq!(
            parsed,
            Directives {
                max_age: Some(60),
                s_maxage: Some(120),
                no_store: true,
                no_cache: true,
                private: true,
                public: true,
                must_revalidate: true,
                proxy_revalidate: true,
                immutable: true,
                stale_while_revalidate: Some(30),
                stale_if_error: Some(300),
                max_stale: Some(Some(5)),
                min_fresh: Some(10),
                only_if_cached: true,
            }
        );
    }

    #[test]
    fn nothing_parses_to_the_default() {
        assert_eq!(cache_control(&[]), Directives::default());
        assert_eq!(cache_control(&[""]), Directives::default());
        assert_eq!(cache_control(&[" , ,"]), Directives::default());
    }

    #[test]
    fn directive_names_are_case_insensitive() {
        let parsed = cache_control(&["Max-Age=5, NO-STORE, Public"]);
        assert_eq!(parsed.max_age, Some(5));
        assert!(parsed.no_store && parsed.public);
    }

    #[test]
    fn lines_are_combined() {
        let parsed = cache_control(&["max-age=5", "private", "no-cache"]);
        assert_eq!(parsed.max_age, Some(5));
        assert!(parsed.private && parsed.no_cache);
    }

    #[test]
    fn the_first_of_duplicate_directives_wins() {
        assert_eq!(cache_control(&["max-age=10, max-age=20"]).max_age, Some(10));
        assert_eq!(
            cache_control(&["max-age=10", "max-age=20"]).max_age,
            Some(10)
        );
        assert_eq!(
            cache_control(&["max-stale=1, max-stale"]).max_stale,
            Some(Some(1))
        );
    }

    #[test]
    fn bad_numbers_are_ignored() {
        let parsed = cache_control(&["max-age=abc, s-maxage=-1, min-fresh=1.5, max-age=30"]);
        assert_eq!(parsed.max_age, Some(30), "the first valid value is used");
        assert_eq!(parsed.s_maxage, None);
        assert_eq!(parsed.min_fresh, None);
        assert_eq!(cache_control(&["max-age="]).max_age, None);
        assert_eq!(cache_control(&["max-age"]).max_age, None);
        assert_eq!(cache_control(&["max-age=1 0"]).max_age, None);
    }

    #[test]
    fn huge_numbers_are_clamped_to_two_to_the_31() {
        let parsed = cache_control(&["max-age=99999999999999999999999, s-maxage=4294967296"]);
        assert_eq!(parsed.max_age, Some(1 << 31));
        assert_eq!(parsed.s_maxage, Some(1 << 31));
        assert_eq!(
            cache_control(&["max-age=2147483647"]).max_age,
            Some(2147483647)
        );
    }

    #[test]
    fn quoted_values_are_accepted_and_commas_inside_them_do_not_split() {
        assert_eq!(cache_control(&["max-age=\"60\""]).max_age, Some(60));
        let parsed = cache_control(&["no-cache=\"Set-Cookie, max-age=1\", max-age=5"]);
        assert!(parsed.no_cache);
        assert_eq!(parsed.max_age, Some(5));
    }

    #[test]
    fn qualified_no_cache_and_private_count_as_unqualified() {
        assert!(cache_control(&["private=\"Set-Cookie\""]).private);
        assert!(cache_control(&["no-cache=Set-Cookie"]).no_cache);
    }

    #[test]
    fn unknown_directives_and_whitespace_are_tolerated() {
        let parsed = cache_control(&[
            " , foo, bar=\"baz\", must-understand, a-very-long-unknown-directive-name=1, \
             max-age = 7 ,, public ",
        ]);
        assert_eq!(
            parsed,
            Directives {
                max_age: Some(7),
                public: true,
                ..Directives::default()
            }
        );
    }

    #[test]
    fn max_stale_with_and_without_a_value() {
        assert_eq!(cache_control(&["max-stale"]).max_stale, Some(None));
        assert_eq!(cache_control(&["max-stale=30"]).max_stale, Some(Some(30)));
        assert_eq!(cache_control(&["max-stale=soon"]).max_stale, None);
        assert_eq!(cache_control(&[]).max_stale, None);
    }

    // ---- Targeted fields (RFC 9213) ----

    fn gatehouse_config() -> PolicyConfig {
        PolicyConfig {
            targeted_field: Some(HeaderName::from_static("gatehouse-cache-control")),
            ..config()
        }
    }

    #[test]
    fn cdn_cache_control_replaces_cache_control_entirely() {
        let response = headers(&[
            ("cache-control", "no-store, private"),
            ("cdn-cache-control", "max-age=60"),
        ]);
        assert_eq!(
            response_directives(&response, &config()),
            Directives {
                max_age: Some(60),
                ..Directives::default()
            }
        );
    }

    #[test]
    fn the_configured_field_comes_before_cdn_cache_control() {
        let response = headers(&[
            ("cache-control", "max-age=1"),
            ("cdn-cache-control", "max-age=60"),
            ("gatehouse-cache-control", "max-age=5"),
        ]);
        assert_eq!(
            response_directives(&response, &gatehouse_config()).max_age,
            Some(5)
        );
        // Without it configured, the field means nothing.
        assert_eq!(response_directives(&response, &config()).max_age, Some(60));
    }

    #[test]
    fn without_targeted_fields_cache_control_is_obeyed() {
        let response = headers(&[("cache-control", "max-age=1, public")]);
        let directives = response_directives(&response, &gatehouse_config());
        assert_eq!(directives.max_age, Some(1));
        assert!(directives.public);
    }

    #[test]
    fn invalid_or_empty_targeted_fields_are_ignored() {
        for invalid in [
            "Max-Age=5",
            "max-age=5,",
            "max-age=\"5",
            "max-age=5 private",
            "max-age=1234567890123456",
            "",
            "  ",
        ] {
            let response = headers(&[
                ("gatehouse-cache-control", invalid),
                ("cdn-cache-control", "max-age=60"),
            ]);
            assert_eq!(
                response_directives(&response, &gatehouse_config()).max_age,
                Some(60),
                "{invalid:?} should be skipped"
            );
        }
    }

    #[test]
    fn targeted_fields_are_structured_dictionaries() {
        let directive =
            |value: &str| response_directives(&headers(&[("cdn-cache-control", value)]), &config());
        // Booleans: ?0 turns a directive off, ?1 is the same as the bare key.
        let parsed = directive("no-store=?0, private=?1, max-age=10");
        assert!(!parsed.no_store && parsed.private);
        // Dictionaries keep the last value of a repeated key.
        assert_eq!(directive("max-age=10, max-age=20").max_age, Some(20));
        assert_eq!(directive("max-age=10",).max_age, Some(10));
        assert!(!directive("no-cache, no-cache=?0").no_cache);
        // Parameters, inner lists, strings, tokens and byte sequences are valid syntax.
        let parsed = directive(
            "max-age=10;foo=bar;baz, x=(a \"b\" 1);y, s=\"str\", t=tok/en:1, b=:aGk=:, d=1.5",
        );
        assert_eq!(parsed.max_age, Some(10));
        // Negative or decimal numbers are valid syntax but no delta-seconds.
        let parsed = directive("max-age=-5, s-maxage=1.5, must-revalidate");
        assert_eq!((parsed.max_age, parsed.s_maxage), (None, None));
        assert!(parsed.must_revalidate);
    }

    #[test]
    fn a_targeted_field_silences_expires() {
        let response = headers(&[
            ("date", &date(T)),
            ("expires", &date(T + 3600)),
            ("cdn-cache-control", "public"),
        ]);
        assert_eq!(
            freshness(&response, received_at(T), &config()).lifetime,
            Duration::ZERO
        );
        assert_eq!(
            storability(
                &Method::GET,
                &HeaderMap::new(),
                StatusCode::OK,
                &response,
                &config()
            ),
            Err(NotStored::NoFreshness)
        );
        let heuristic = PolicyConfig {
            default_ttl: secs(30),
            ..config()
        };
        assert_eq!(
            freshness(&response, received_at(T), &heuristic).lifetime,
            secs(30)
        );
    }

    // ---- Storability ----

    fn store(
        method: Method,
        request: &[(&str, &str)],
        status: u16,
        response: &[(&str, &str)],
    ) -> Result<(), NotStored> {
        store_with(method, request, status, response, &config())
    }

    fn store_with(
        method: Method,
        request: &[(&str, &str)],
        status: u16,
        response: &[(&str, &str)],
        config: &PolicyConfig,
    ) -> Result<(), NotStored> {
        storability(
            &method,
            &headers(request),
            StatusCode::from_u16(status).unwrap(),
            &headers(response),
            config,
        )
    }

    const MAX_AGE: (&str, &str) = ("cache-control", "max-age=60");

    #[test]
    fn only_get_responses_are_stored() {
        assert_eq!(store(Method::GET, &[], 200, &[MAX_AGE]), Ok(()));
        for method in [Method::HEAD, Method::POST, Method::PUT, Method::OPTIONS] {
            assert_eq!(store(method, &[], 200, &[MAX_AGE]), Err(NotStored::Method));
        }
    }

    #[test]
    fn heuristically_cacheable_statuses_need_no_explicit_freshness() {
        let heuristic = PolicyConfig {
            default_ttl: secs(60),
            ..config()
        };
        for status in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
            assert_eq!(
                store_with(Method::GET, &[], status, &[], &heuristic),
                Ok(()),
                "{status}"
            );
        }
        for status in [201, 302, 303, 307, 400, 403, 500, 502, 503] {
            assert_eq!(
                store_with(Method::GET, &[], status, &[], &heuristic),
                Err(NotStored::Status),
                "{status}"
            );
        }
    }

    #[test]
    fn explicit_freshness_makes_any_final_status_storable() {
        assert_eq!(store(Method::GET, &[], 302, &[MAX_AGE]), Ok(()));
        assert_eq!(
            store(Method::GET, &[], 500, &[("cache-control", "s-maxage=5")]),
            Ok(())
        );
        assert_eq!(
            store(Method::GET, &[], 503, &[("expires", &date(T))]),
            Ok(())
        );
        // `public` alone is not explicit freshness.
        assert_eq!(
            store(Method::GET, &[], 302, &[("cache-control", "public")]),
            Err(NotStored::Status)
        );
    }

    #[test]
    fn interim_not_modified_and_partial_responses_are_not_stored() {
        assert_eq!(
            store(Method::GET, &[], 100, &[MAX_AGE]),
            Err(NotStored::Status)
        );
        assert_eq!(
            store(Method::GET, &[], 103, &[MAX_AGE]),
            Err(NotStored::Status)
        );
        assert_eq!(
            store(Method::GET, &[], 304, &[MAX_AGE]),
            Err(NotStored::Status)
        );
        assert_eq!(
            store(Method::GET, &[], 206, &[MAX_AGE]),
            Err(NotStored::PartialContent)
        );
    }

    #[test]
    fn no_store_in_request_or_response_prevents_storing() {
        assert_eq!(
            store(
                Method::GET,
                &[],
                200,
                &[("cache-control", "max-age=60, no-store")]
            ),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            store(
                Method::GET,
                &[("cache-control", "no-store")],
                200,
                &[MAX_AGE]
            ),
            Err(NotStored::NoStore)
        );
    }

    #[test]
    fn private_responses_are_not_for_a_shared_cache() {
        assert_eq!(
            store(
                Method::GET,
                &[],
                200,
                &[("cache-control", "private, max-age=60")]
            ),
            Err(NotStored::Private)
        );
        assert_eq!(
            store(
                Method::GET,
                &[],
                200,
                &[("cache-control", "private=\"x-user\", max-age=60")]
            ),
            Err(NotStored::Private)
        );
    }

    #[test]
    fn authorized_requests_need_a_response_that_allows_sharing() {
        let authorization = ("authorization", "Bearer secret");
        assert_eq!(
            store(Method::GET, &[authorization], 200, &[MAX_AGE]),
            Err(NotStored::Authorization)
        );
        for allowing in [
            "public, max-age=60",
            "s-maxage=60",
            "must-revalidate, max-age=60",
        ] {
            assert_eq!(
                store(
                    Method::GET,
                    &[authorization],
                    200,
                    &[("cache-control", allowing)]
                ),
                Ok(()),
                "{allowing}"
            );
        }
    }

    #[test]
    fn responses_setting_cookies_are_stored_only_when_explicitly_shared() {
        let cookie = ("set-cookie", "session=abc");
        assert_eq!(
            store(Method::GET, &[], 200, &[MAX_AGE, cookie]),
            Err(NotStored::SetCookie)
        );
        assert_eq!(
            store(
                Method::GET,
                &[],
                200,
                &[("cache-control", "public, max-age=60"), cookie]
            ),
            Ok(())
        );
        assert_eq!(
            store(
                Method::GET,
                &[],
                200,
                &[("cache-control", "s-maxage=60"), cookie]
            ),
            Ok(())
        );
    }

    #[test]
    fn vary_star_is_never_stored() {
        assert_eq!(
            store(Method::GET, &[], 200, &[MAX_AGE, ("vary", "*")]),
            Err(NotStored::VaryStar)
        );
        assert_eq!(
            store(
                Method::GET,
                &[],
                200,
                &[MAX_AGE, ("vary", "accept"), ("vary", "origin, *")]
            ),
            Err(NotStored::VaryStar)
        );
    }

    #[test]
    fn a_response_needs_freshness_or_a_way_to_revalidate() {
        assert_eq!(
            store(Method::GET, &[], 200, &[]),
            Err(NotStored::NoFreshness)
        );
        let heuristic = PolicyConfig {
            default_ttl: secs(1),
            ..config()
        };
        assert_eq!(store_with(Method::GET, &[], 200, &[], &heuristic), Ok(()));
        let etag = ("etag", "\"v1\"");
        let last_modified = ("last-modified", &*date(T));
        assert_eq!(
            store(
                Method::GET,
                &[],
                200,
                &[("cache-control", "no-cache"), etag]
            ),
            Ok(())
        );
        assert_eq!(
            store(
                Method::GET,
                &[],
                200,
                &[("cache-control", "must-revalidate"), last_modified]
            ),
            Ok(())
        );
        assert_eq!(
            store(
                Method::GET,
                &[],
                200,
                &[("cache-control", "must-revalidate")]
            ),
            Err(NotStored::NoFreshness)
        );
        // no-cache without a validator could only ever be fetched again, even with max-age.
        assert_eq!(
            store(
                Method::GET,
                &[],
                200,
                &[("cache-control", "no-cache, max-age=60")]
            ),
            Err(NotStored::NoFreshness)
        );
        // A malformed ETag is no validator.
        assert_eq!(
            store(
                Method::GET,
                &[],
                200,
                &[("cache-control", "no-cache"), ("etag", "v1")]
            ),
            Err(NotStored::NoFreshness)
        );
        // An invalid Expires is explicit freshness, already expired (§5.3).
        assert_eq!(store(Method::GET, &[], 200, &[("expires", "0")]), Ok(()));
    }

    #[test]
    fn not_stored_reasons_have_cache_status_tokens() {
        assert_eq!(NotStored::NoStore.as_str(), "no-store");
        assert_eq!(NotStored::VaryStar.to_string(), "vary-star");
        assert_eq!(NotStored::PartialContent.as_str(), "partial-content");
    }

    // ---- Freshness ----

    fn lifetime(response: &[(&str, &str)]) -> Duration {
        freshness(&headers(response), received_at(T), &config()).lifetime
    }

    #[test]
    fn lifetime_precedence_is_s_maxage_max_age_expires_default() {
        let expires = ("expires", &*date(T + 300));
        let at_t = ("date", &*date(T));
        assert_eq!(
            lifetime(&[("cache-control", "max-age=60, s-maxage=120"), expires, at_t]),
            secs(120)
        );
        assert_eq!(
            lifetime(&[("cache-control", "max-age=60"), expires, at_t]),
            secs(60)
        );
        assert_eq!(lifetime(&[expires, at_t]), secs(300));
        let heuristic = PolicyConfig {
            default_ttl: secs(42),
            ..config()
        };
        assert_eq!(
            freshness(&headers(&[at_t]), received_at(T), &heuristic).lifetime,
            secs(42)
        );
        assert_eq!(lifetime(&[at_t]), Duration::ZERO);
    }

    #[test]
    fn expires_is_measured_from_date_or_else_the_response_time() {
        // Date 100 s behind our clock: Expires − Date, not Expires − now.
        assert_eq!(
            lifetime(&[("date", &date(T - 100)), ("expires", &date(T))]),
            secs(100)
        );
        assert_eq!(lifetime(&[("expires", &date(T + 30))]), secs(30));
        assert_eq!(
            lifetime(&[("date", "garbage"), ("expires", &date(T + 30))]),
            secs(30)
        );
    }

    #[test]
    fn past_or_invalid_expires_means_already_stale() {
        assert_eq!(
            lifetime(&[("date", &date(T)), ("expires", &date(T - 10))]),
            Duration::ZERO
        );
        assert_eq!(lifetime(&[("expires", "0")]), Duration::ZERO);
        let heuristic = PolicyConfig {
            default_ttl: secs(42),
            ..config()
        };
        assert_eq!(
            freshness(&headers(&[("expires", "-1")]), received_at(T), &heuristic).lifetime,
            Duration::ZERO
        );
    }

    #[test]
    fn no_cache_has_no_lifetime() {
        let fresh = freshness(
            &headers(&[("cache-control", "no-cache, max-age=600")]),
            received_at(T),
            &config(),
        );
        assert_eq!(fresh.lifetime, Duration::ZERO);
        assert!(fresh.no_cache);
    }

    fn initial_age(response: &[(&str, &str)], request_time: u64, response_time: u64) -> Duration {
        let received = Received {
            request_time: at(request_time),
            response_time: at(response_time),
        };
        freshness(&headers(response), received, &config()).initial_age
    }

    #[test]
    fn initial_age_is_the_larger_of_apparent_and_corrected_age() {
        // Apparent age: the response was dated 10 s before it arrived.
        assert_eq!(initial_age(&[("date", &date(T - 10))], T, T), secs(10));
        // The upstream's Age plus the time the request took.
        assert_eq!(
            initial_age(&[("date", &date(T)), ("age", "100")], T - 2, T),
            secs(102)
        );
        // Apparent age wins when larger.
        assert_eq!(
            initial_age(&[("date", &date(T - 50)), ("age", "5")], T - 1, T),
            secs(50)
        );
        // No Date and no Age: just the response delay.
        assert_eq!(initial_age(&[], T - 3, T), secs(3));
    }

    #[test]
    fn odd_age_and_date_values_are_handled_safely() {
        // A list-valued Age: the first member is used (§5.1).
        assert_eq!(initial_age(&[("age", "5, 9")], T, T), secs(5));
        // Invalid Age is ignored.
        assert_eq!(initial_age(&[("age", "-3")], T, T), Duration::ZERO);
        assert_eq!(initial_age(&[("age", "soon")], T, T), Duration::ZERO);
        // A Date in the future (clock skew) gives no negative age.
        assert_eq!(
            initial_age(&[("date", &date(T + 60))], T, T),
            Duration::ZERO
        );
        // A response "received" before it was requested gives no negative delay.
        assert_eq!(initial_age(&[], T + 5, T), Duration::ZERO);
        // A huge Age is clamped, not overflowed.
        assert_eq!(
            initial_age(&[("age", "999999999999999999999")], T, T),
            secs(1 << 31)
        );
    }

    #[test]
    fn current_age_and_ttl_advance_with_the_clock() {
        let stored = Freshness {
            initial_age: secs(10),
            ..stored_for(60)
        };
        assert_eq!(stored.current_age(at(T)), secs(10));
        assert_eq!(stored.current_age(at(T + 20)), secs(30));
        assert_eq!(stored.ttl(at(T + 20)), secs(30));
        assert_eq!(stored.ttl(at(T + 50)), Duration::ZERO);
        assert_eq!(stored.ttl(at(T + 500)), Duration::ZERO);
        // A clock stepping backwards does not make it younger than it arrived.
        assert_eq!(stored.current_age(at(T - 100)), secs(10));
        assert!(stored.is_fresh(at(T + 49)) && !stored.is_fresh(at(T + 50)));
        assert_eq!(stored.staleness(at(T + 80)), secs(30));
    }

    #[test]
    fn stale_windows_come_from_the_response_else_the_config() {
        let defaults = PolicyConfig {
            stale_while_revalidate: secs(7),
            stale_if_error: secs(8),
            ..config()
        };
        let from_config = freshness(&headers(&[MAX_AGE]), received_at(T), &defaults);
        assert_eq!(
            (
                from_config.stale_while_revalidate,
                from_config.stale_if_error
            ),
            (secs(7), secs(8))
        );
        let from_response = freshness(
            &headers(&[(
                "cache-control",
                "max-age=60, stale-while-revalidate=30, stale-if-error=0",
            )]),
            received_at(T),
            &defaults,
        );
        assert_eq!(
            (
                from_response.stale_while_revalidate,
                from_response.stale_if_error
            ),
            (secs(30), Duration::ZERO)
        );
    }

    #[test]
    fn must_revalidate_proxy_revalidate_and_s_maxage_forbid_stale() {
        let must = |value: &str| {
            freshness(
                &headers(&[("cache-control", value)]),
                received_at(T),
                &config(),
            )
            .must_revalidate
        };
        assert!(must("max-age=5, must-revalidate"));
        assert!(must("max-age=5, proxy-revalidate"));
        assert!(must("s-maxage=5"));
        assert!(!must("max-age=5, public"));
    }

    #[test]
    fn freshness_records_the_response_time() {
        let received = Received {
            request_time: at(T - 1),
            response_time: at(T),
        };
        assert_eq!(
            freshness(&headers(&[MAX_AGE]), received, &config()).response_time,
            at(T)
        );
    }

    // ---- Usability ----

    fn usable(stored: &Freshness, request: &[(&str, &str)], now: u64) -> Usability {
        usability(stored, &headers(request), at(now))
    }

    #[test]
    fn fresh_then_stale() {
        let stored = stored_for(60);
        assert_eq!(usable(&stored, &[], T + 59), Usability::Fresh);
        assert_eq!(usable(&stored, &[], T + 60), Usability::Revalidate);
    }

    #[test]
    fn stale_while_revalidate_window() {
        let stored = Freshness {
            stale_while_revalidate: secs(30),
            ..stored_for(60)
        };
        assert_eq!(
            usable(&stored, &[], T + 60),
            Usability::StaleWhileRevalidate
        );
        assert_eq!(
            usable(&stored, &[], T + 89),
            Usability::StaleWhileRevalidate
        );
        assert_eq!(usable(&stored, &[], T + 90), Usability::Revalidate);
        let strict = Freshness {
            must_revalidate: true,
            ..stored
        };
        assert_eq!(usable(&strict, &[], T + 61), Usability::Revalidate);
    }

    #[test]
    fn a_no_cache_response_is_always_revalidated() {
        let stored = Freshness {
            no_cache: true,
            stale_while_revalidate: secs(100),
            ..stored_for(60)
        };
        assert_eq!(usable(&stored, &[], T), Usability::Revalidate);
        assert_eq!(
            usable(&stored, &[("cache-control", "max-stale")], T + 70),
            Usability::Revalidate
        );
    }

    #[test]
    fn request_no_cache_and_max_age_force_revalidation() {
        let stored = stored_for(60);
        assert_eq!(
            usable(&stored, &[("cache-control", "no-cache")], T + 1),
            Usability::Revalidate
        );
        assert_eq!(
            usable(&stored, &[("cache-control", "max-age=0")], T + 1),
            Usability::Revalidate
        );
        assert_eq!(
            usable(&stored, &[("cache-control", "max-age=10")], T + 10),
            Usability::Fresh
        );
        assert_eq!(
            usable(&stored, &[("cache-control", "max-age=10")], T + 11),
            Usability::Revalidate
        );
        // max-stale cannot extend a max-age bound.
        assert_eq!(
            usable(
                &stored,
                &[("cache-control", "max-age=100, max-stale")],
                T + 101
            ),
            Usability::Revalidate
        );
    }

    #[test]
    fn request_min_fresh_wants_remaining_freshness() {
        let stored = stored_for(60);
        assert_eq!(
            usable(&stored, &[("cache-control", "min-fresh=20")], T + 30),
            Usability::Fresh
        );
        assert_eq!(
            usable(&stored, &[("cache-control", "min-fresh=30")], T + 30),
            Usability::Fresh
        );
        assert_eq!(
            usable(&stored, &[("cache-control", "min-fresh=31")], T + 30),
            Usability::Revalidate
        );
    }

    #[test]
    fn request_max_stale_accepts_stale_responses() {
        let stored = stored_for(60);
        let with = |directive: &str, now| usable(&stored, &[("cache-control", directive)], now);
        assert_eq!(
            with("max-stale=20", T + 70),
            Usability::StaleWhileRevalidate
        );
        assert_eq!(
            with("max-stale=20", T + 80),
            Usability::StaleWhileRevalidate
        );
        assert_eq!(with("max-stale=20", T + 81), Usability::Revalidate);
        assert_eq!(
            with("max-stale", T + 100_000),
            Usability::StaleWhileRevalidate
        );
        assert_eq!(with("max-stale", T + 10), Usability::Fresh);
        let strict = Freshness {
            must_revalidate: true,
            ..stored
        };
        assert_eq!(
            usable(&strict, &[("cache-control", "max-stale")], T + 61),
            Usability::Revalidate
        );
    }

    #[test]
    fn pragma_and_unknown_request_directives_do_not_force_revalidation() {
        let stored = stored_for(60);
        assert_eq!(
            usable(&stored, &[("pragma", "no-cache")], T + 1),
            Usability::Fresh
        );
        assert_eq!(
            usable(
                &stored,
                &[("pragma", "no-cache"), ("cache-control", "max-stale")],
                T + 1
            ),
            Usability::Fresh
        );
        assert_eq!(
            usable(&stored, &[("cache-control", "no-transform, x-bust")], T + 1),
            Usability::Fresh
        );
    }

    #[test]
    fn usable_on_error_within_stale_if_error() {
        let stored = Freshness {
            stale_if_error: secs(100),
            ..stored_for(60)
        };
        assert!(
            usable_on_error(&stored, at(T + 10)),
            "fresh is always usable"
        );
        assert!(usable_on_error(&stored, at(T + 159)));
        assert!(!usable_on_error(&stored, at(T + 160)));
        let strict = Freshness {
            must_revalidate: true,
            ..stored
        };
        assert!(usable_on_error(&strict, at(T + 10)));
        assert!(!usable_on_error(&strict, at(T + 61)));
        let no_cache = Freshness {
            no_cache: true,
            ..stored
        };
        assert!(!usable_on_error(&no_cache, at(T + 10)));
        assert!(
            !usable_on_error(&stored_for(60), at(T + 60)),
            "no window, no stale"
        );
    }

    // ---- Vary ----

    fn names(list: &[&'static str]) -> Vary {
        Vary::Names(list.iter().map(|n| HeaderName::from_static(n)).collect())
    }

    #[test]
    fn vary_names_are_lower_cased_combined_and_deduplicated() {
        assert_eq!(vary(&HeaderMap::new()), Vary::None);
        assert_eq!(vary(&headers(&[("vary", "")])), Vary::None);
        assert_eq!(
            vary(&headers(&[
                ("vary", "Accept-Encoding, accept-encoding"),
                ("vary", " User-Agent ,"),
            ])),
            names(&["accept-encoding", "user-agent"])
        );
        assert_eq!(vary(&headers(&[("vary", "*")])), Vary::Any);
        assert_eq!(
            vary(&headers(&[("vary", "accept"), ("vary", "*")])),
            Vary::Any
        );
        assert_eq!(
            vary(&headers(&[("vary", "accept, bad name, \"x\"")])),
            names(&["accept"])
        );
    }

    #[test]
    fn vary_values_are_normalized() {
        let vary = names(&["accept-encoding", "accept-language", "origin"]);
        let request = headers(&[
            ("accept-encoding", " gzip,br "),
            ("accept-encoding", "zstd"),
            ("accept-language", ""),
        ]);
        assert_eq!(
            vary_values(&vary, &request),
            Some(vec![
                Some(HeaderValue::from_static("gzip, br, zstd")),
                Some(HeaderValue::from_static("")),
                None,
            ])
        );
        // Written differently, the same request is the same variant.
        let same = headers(&[
            ("accept-encoding", "gzip, br, zstd"),
            ("accept-language", " "),
        ]);
        assert_eq!(vary_values(&vary, &request), vary_values(&vary, &same));
        let other = headers(&[
            ("accept-encoding", "br, gzip, zstd"),
            ("accept-language", ""),
        ]);
        assert_ne!(vary_values(&vary, &request), vary_values(&vary, &other));
    }

    #[test]
    fn vary_values_without_vary_or_with_star() {
        assert_eq!(
            vary_values(&Vary::None, &headers(&[("a", "b")])),
            Some(vec![])
        );
        assert_eq!(vary_values(&Vary::Any, &HeaderMap::new()), None);
    }

    #[test]
    fn vary_matches_compares_in_normal_form() {
        let vary = names(&["accept-encoding", "origin"]);
        let stored = vary_values(&vary, &headers(&[("accept-encoding", "gzip,br")])).unwrap();
        assert!(vary_matches(
            &vary,
            &stored,
            &headers(&[("accept-encoding", "gzip, br")])
        ));
        assert!(vary_matches(
            &vary,
            &stored,
            &headers(&[("accept-encoding", "gzip"), ("accept-encoding", " br")])
        ));
        assert!(!vary_matches(
            &vary,
            &stored,
            &headers(&[("accept-encoding", "gzip")])
        ));
        assert!(!vary_matches(
            &vary,
            &stored,
            &headers(&[("accept-encoding", "gzip, br"), ("origin", "https://a")])
        ));
        assert!(!vary_matches(&vary, &stored, &HeaderMap::new()));
        assert!(!vary_matches(
            &vary,
            &stored[..1],
            &headers(&[("accept-encoding", "gzip, br")])
        ));
        assert!(vary_matches(&Vary::None, &[], &headers(&[("origin", "x")])));
        assert!(!vary_matches(&Vary::Any, &[], &HeaderMap::new()));
    }

    // ---- Conditional requests ----

    fn matches(request: &[(&str, &str)], stored: &[(&str, &str)]) -> bool {
        not_modified(&headers(request), &headers(stored))
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        let strong = [("etag", "\"v1\"")];
        let weak = [("etag", "W/\"v1\"")];
        assert!(matches(&[("if-none-match", "\"v1\"")], &strong));
        assert!(matches(&[("if-none-match", "W/\"v1\"")], &strong));
        assert!(matches(&[("if-none-match", "\"v1\"")], &weak));
        assert!(matches(&[("if-none-match", "W/\"v1\"")], &weak));
        assert!(!matches(&[("if-none-match", "\"v2\"")], &strong));
        assert!(
            !matches(&[("if-none-match", "\"V1\"")], &strong),
            "opaque tags are case-sensitive"
        );
        assert!(
            !matches(&[("if-none-match", "w/\"v1\"")], &strong),
            "W/ is case-sensitive"
        );
        assert!(
            !matches(&[("if-none-match", "v1")], &strong),
            "unquoted is malformed"
        );
        assert!(
            !matches(&[("if-none-match", "\"v1\"")], &[]),
            "nothing to compare with"
        );
    }

    #[test]
    fn if_none_match_lists_and_star() {
        let stored = [("etag", "\"a,b\"")];
        assert!(matches(&[("if-none-match", "\"x\", \"a,b\"")], &stored));
        assert!(matches(
            &[("if-none-match", "\"x\""), ("if-none-match", "W/\"a,b\"")],
            &stored
        ));
        assert!(!matches(
            &[("if-none-match", "\"x\", \"a\", \"b\"")],
            &stored
        ));
        assert!(matches(&[("if-none-match", "*")], &stored));
        assert!(
            matches(&[("if-none-match", "*")], &[]),
            "* matches any current representation"
        );
    }

    #[test]
    fn if_none_match_takes_precedence_over_if_modified_since() {
        let stored = [("etag", "\"v1\""), ("last-modified", &*date(T))];
        assert!(!matches(
            &[("if-none-match", "\"v2\""), ("if-modified-since", &date(T))],
            &stored
        ));
        assert!(matches(
            &[
                ("if-none-match", "\"v1\""),
                ("if-modified-since", &date(T - 100))
            ],
            &stored
        ));
    }

    #[test]
    fn if_modified_since_against_last_modified_else_date() {
        let stored = [("last-modified", &*date(T)), ("date", &*date(T + 100))];
        assert!(matches(&[("if-modified-since", &date(T))], &stored));
        assert!(matches(&[("if-modified-since", &date(T + 10))], &stored));
        assert!(!matches(&[("if-modified-since", &date(T - 1))], &stored));
        // Without Last-Modified, the Date stands in.
        let dated = [("date", &*date(T + 100))];
        assert!(matches(&[("if-modified-since", &date(T + 100))], &dated));
        assert!(!matches(&[("if-modified-since", &date(T + 99))], &dated));
        assert!(!matches(&[("if-modified-since", &date(T))], &[]));
        // The obsolete date formats are accepted too.
        assert!(matches(
            &[("if-modified-since", "Sunday, 06-Nov-94 08:49:37 GMT")],
            &[("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT")]
        ));
    }

    #[test]
    fn invalid_or_repeated_if_modified_since_is_ignored() {
        let stored = [("last-modified", &*date(T))];
        assert!(!matches(&[("if-modified-since", "yesterday")], &stored));
        assert!(!matches(
            &[
                ("if-modified-since", &date(T)),
                ("if-modified-since", &date(T))
            ],
            &stored
        ));
        assert!(
            !matches(&[], &stored),
            "unconditional requests get the full response"
        );
    }

    #[test]
    fn validators_prefer_the_etag() {
        let etag = ("etag", "W/\"v1\"");
        let last_modified = ("last-modified", &*date(T));
        assert_eq!(
            validators(&headers(&[etag, last_modified])),
            vec![(IF_NONE_MATCH, HeaderValue::from_static("W/\"v1\""))]
        );
        assert_eq!(
            validators(&headers(&[last_modified])),
            vec![(IF_MODIFIED_SINCE, HeaderValue::from_str(&date(T)).unwrap())]
        );
        assert_eq!(
            validators(&headers(&[("etag", "unquoted"), last_modified])),
            vec![(IF_MODIFIED_SINCE, HeaderValue::from_str(&date(T)).unwrap())]
        );
        assert!(validators(&headers(&[("last-modified", "whenever")])).is_empty());
        assert!(validators(&HeaderMap::new()).is_empty());
    }

    #[test]
    fn refresh_takes_the_304s_fields_except_framing_and_hop_by_hop() {
        let stored = headers(&[
            ("content-type", "text/html"),
            ("content-length", "1234"),
            ("cache-control", "max-age=60"),
            ("date", &date(T)),
            ("etag", "\"v1\""),
            ("x-tag", "a"),
            ("x-tag", "b"),
            ("set-cookie", "stored=1"),
        ]);
        let not_modified = headers(&[
            ("cache-control", "max-age=600"),
            ("date", &date(T + 100)),
            ("etag", "\"v2\""),
            ("x-tag", "c"),
            ("content-length", "0"),
            ("transfer-encoding", "chunked"),
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("set-cookie", "someone-elses=1"),
        ]);
        let refreshed = refresh_headers(&stored, &not_modified);
        let all = |name: &str| -> Vec<&str> {
            refreshed
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect()
        };
        assert_eq!(all("cache-control"), ["max-age=600"]);
        assert_eq!(all("date"), [date(T + 100)]);
        assert_eq!(all("etag"), ["\"v2\""]);
        assert_eq!(
            all("x-tag"),
            ["c"],
            "every stored line of a field is replaced"
        );
        assert_eq!(all("content-type"), ["text/html"]);
        assert_eq!(all("content-length"), ["1234"]);
        assert_eq!(all("set-cookie"), ["stored=1"]);
        for absent in ["transfer-encoding", "connection", "x-hop", "keep-alive"] {
            assert!(all(absent).is_empty(), "{absent}");
        }
    }

    // ---- Invalidation ----

    fn invalidated(
        method: Method,
        status: u16,
        uri: &str,
        response: &[(&str, &str)],
    ) -> Vec<String> {
        invalidation_targets(
            &method,
            StatusCode::from_u16(status).unwrap(),
            "Example.com",
            &uri.parse().unwrap(),
            &headers(response),
        )
    }

    #[test]
    fn only_successful_unsafe_requests_invalidate() {
        for method in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
            assert!(invalidated(method, 200, "/a", &[]).is_empty());
        }
        for status in [101, 304, 400, 404, 500, 503] {
            if status == 304 {
                // 3xx is "non-error" (§4.4).
                assert_eq!(
                    invalidated(Method::POST, status, "/a", &[]),
                    ["example.com/a"]
                );
            } else {
                assert!(
                    invalidated(Method::POST, status, "/a", &[]).is_empty(),
                    "{status}"
                );
            }
        }
        let purge = Method::from_bytes(b"PURGE").unwrap();
        for method in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            purge,
        ] {
            assert_eq!(
                invalidated(method, 204, "/a?x=1", &[]),
                ["example.com/a?x=1"]
            );
        }
        assert_eq!(invalidated(Method::POST, 303, "/a", &[]), ["example.com/a"]);
    }

    #[test]
    fn the_target_of_an_absolute_form_request() {
        assert_eq!(
            invalidated(Method::POST, 200, "http://example.com/p?q", &[]),
            ["example.com/p?q"]
        );
        assert_eq!(
            invalidated(Method::POST, 200, "http://example.com?q", &[]),
            ["example.com/?q"]
        );
    }

    #[test]
    fn location_and_content_location_on_the_same_origin() {
        let with = |field: &'static str, value: &'static str| {
            invalidated(Method::POST, 201, "/dir/items?x", &[(field, value)])
        };
        for (value, key) in [
            ("/items/7", "example.com/items/7"),
            ("7", "example.com/dir/7"),
            ("./7?v=1", "example.com/dir/7?v=1"),
            ("../up", "example.com/up"),
            ("../../../up", "example.com/up"),
            ("?y", "example.com/dir/items?y"),
            ("/a/b/../c/./d#frag", "example.com/a/c/d"),
            ("http://EXAMPLE.com/abs", "example.com/abs"),
            ("https://example.com:443/abs", "example.com/abs"),
            ("http://example.com:80", "example.com/"),
            ("//example.com/net?q", "example.com/net?q"),
            ("http://user@example.com/who", "example.com/who"),
        ] {
            assert_eq!(
                with("location", value),
                ["example.com/dir/items?x", key],
                "Location: {value}"
            );
            assert_eq!(
                with("content-location", value),
                ["example.com/dir/items?x", key],
                "Content-Location: {value}"
            );
        }
    }

    #[test]
    fn other_origins_are_never_invalidated() {
        for value in [
            "http://other.example/x",
            "//other.example/x",
            "http://example.com:8080/x",
            "http://example.com.evil/x",
            "mailto:someone@example.com",
            "ftp://example.com/x",
            "http:relative",
        ] {
            assert_eq!(
                invalidated(Method::POST, 201, "/a", &[("location", value)]),
                ["example.com/a"],
                "{value}"
            );
        }
    }

    #[test]
    fn invalidation_targets_are_not_repeated() {
        assert_eq!(
            invalidated(
                Method::PUT,
                200,
                "/a",
                &[
                    ("location", "/a"),
                    ("content-location", "http://example.com/a")
                ]
            ),
            ["example.com/a"]
        );
        assert_eq!(
            invalidated(
                Method::PUT,
                200,
                "/a",
                &[("location", "/b"), ("content-location", "/b")]
            ),
            ["example.com/a", "example.com/b"]
        );
        // A bare fragment or empty reference is the target itself.
        assert_eq!(
            invalidated(Method::PUT, 200, "/a?x", &[("location", "#frag")]),
            ["example.com/a?x"]
        );
        assert_eq!(
            invalidated(Method::PUT, 200, "/a?x", &[("content-location", "")]),
            ["example.com/a?x"]
        );
    }

    #[test]
    fn connect_and_asterisk_targets_invalidate_nothing() {
        assert!(invalidated(Method::CONNECT, 200, "example.com:443", &[]).is_empty());
    }

    #[test]
    fn dot_segments_are_removed_as_rfc_3986_says() {
        assert_eq!(remove_dot_segments("/a/b/c/./../../g"), "/a/g");
        assert_eq!(remove_dot_segments("mid/content=5/../6"), "mid/6");
        assert_eq!(remove_dot_segments("/a/.."), "/");
        assert_eq!(remove_dot_segments("/a/."), "/a/");
        assert_eq!(remove_dot_segments("/../x"), "/x");
        assert_eq!(remove_dot_segments("/a/..b/.c"), "/a/..b/.c");
    }

    // ---- Cache keys ----

    #[test]
    fn cache_keys_lower_case_the_host_and_drop_default_ports() {
        assert_eq!(cache_key("Example.COM", "/P?Q=A"), "example.com/P?Q=A");
        assert_eq!(cache_key("example.com:80", "/"), "example.com/");
        assert_eq!(cache_key("example.com:443", "/"), "example.com/");
        assert_eq!(cache_key("example.com:", "/"), "example.com/");
        assert_eq!(cache_key("example.com:8080", "/"), "example.com:8080/");
        assert_eq!(cache_key("[::1]:80", "/x"), "[::1]/x");
        assert_eq!(cache_key("[::1]", "/x"), "[::1]/x");
        assert_eq!(cache_key("[::1]:8443", "/x"), "[::1]:8443/x");
        assert_eq!(
            cache_key("example.com", "/a/../b%2F?x"),
            "example.com/a/../b%2F?x"
        );
    }

    // ---- Ranges ----

    fn range(
        request: &[(&str, &str)],
        stored: &[(&str, &str)],
        len: u64,
    ) -> Option<Result<RangeInclusive<u64>, ()>> {
        byte_range(&headers(request), &headers(stored), len)
    }

    fn bytes(spec: &str, len: u64) -> Option<Result<RangeInclusive<u64>, ()>> {
        range(&[("range", spec)], &[], len)
    }

    #[test]
    fn single_byte_ranges() {
        assert_eq!(bytes("bytes=0-99", 1000), Some(Ok(0..=99)));
        assert_eq!(bytes("bytes=100-", 1000), Some(Ok(100..=999)));
        assert_eq!(bytes("bytes=-100", 1000), Some(Ok(900..=999)));
        assert_eq!(bytes("bytes=-2000", 1000), Some(Ok(0..=999)));
        assert_eq!(bytes("bytes=500-2000", 1000), Some(Ok(500..=999)));
        assert_eq!(bytes("bytes=999-999", 1000), Some(Ok(999..=999)));
        assert_eq!(bytes("Bytes=0-0", 1), Some(Ok(0..=0)));
        assert_eq!(bytes("bytes= 1-2 ,", 10), Some(Ok(1..=2)));
        assert_eq!(
            bytes("bytes=5-99999999999999999999999", 10),
            Some(Ok(5..=9))
        );
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(bytes("bytes=1000-", 1000), Some(Err(())));
        assert_eq!(bytes("bytes=1000-2000", 1000), Some(Err(())));
        assert_eq!(bytes("bytes=-0", 1000), Some(Err(())));
        assert_eq!(bytes("bytes=0-", 0), Some(Err(())));
        assert_eq!(bytes("bytes=-5", 0), Some(Err(())));
        assert_eq!(bytes("bytes=99999999999999999999999-", 10), Some(Err(())));
    }

    #[test]
    fn ranges_served_in_full() {
        assert_eq!(range(&[], &[], 1000), None);
        for spec in [
            "bytes=0-1,5-6",
            "bytes=0-1, -5",
            "items=0-1",
            "bytes=5-1",
            "bytes=abc",
            "bytes=1-2-3",
            "bytes=-",
            "bytes=",
            "bytes",
            "0-1",
        ] {
            assert_eq!(bytes(spec, 1000), None, "{spec}");
        }
        assert_eq!(
            range(&[("range", "bytes=0-1"), ("range", "bytes=2-3")], &[], 10),
            None
        );
    }

    #[test]
    fn if_range_with_an_entity_tag_needs_a_strong_match() {
        let strong = [("etag", "\"v1\"")];
        let weak = [("etag", "W/\"v1\"")];
        let request = |if_range: &'static str| [("range", "bytes=0-1"), ("if-range", if_range)];
        assert_eq!(range(&request("\"v1\""), &strong, 10), Some(Ok(0..=1)));
        assert_eq!(range(&request("\"v2\""), &strong, 10), None);
        assert_eq!(range(&request("W/\"v1\""), &strong, 10), None);
        assert_eq!(range(&request("\"v1\""), &weak, 10), None);
        assert_eq!(range(&request("\"v1\""), &[], 10), None);
        assert_eq!(range(&request("garbage"), &strong, 10), None);
        // A false If-Range means the full response, even for an unsatisfiable range.
        assert_eq!(
            range(
                &[("range", "bytes=50-"), ("if-range", "\"v2\"")],
                &strong,
                10
            ),
            None
        );
        assert_eq!(
            range(
                &[("range", "bytes=50-"), ("if-range", "\"v1\"")],
                &strong,
                10
            ),
            Some(Err(()))
        );
    }

    #[test]
    fn if_range_with_a_date_needs_an_exact_strong_last_modified() {
        let last_modified = date(T);
        let strong = [("last-modified", &*last_modified), ("date", &*date(T + 1))];
        let weak = [("last-modified", &*last_modified), ("date", &*date(T))];
        let request = |if_range: &str| headers(&[("range", "bytes=0-1"), ("if-range", if_range)]);
        let check = |if_range: &str, stored: &[(&str, &str)]| {
            byte_range(&request(if_range), &headers(stored), 10)
        };
        assert_eq!(check(&date(T), &strong), Some(Ok(0..=1)));
        assert_eq!(
            check(&date(T + 1), &strong),
            None,
            "exact, not 'not modified since'"
        );
        assert_eq!(check(&date(T - 1), &strong), None);
        assert_eq!(check(&date(T), &weak), None, "Date within a second: weak");
        assert_eq!(check(&date(T), &[("last-modified", &*last_modified)]), None);
        assert_eq!(check(&date(T), &[("etag", "\"v1\"")]), None);
    }
}
