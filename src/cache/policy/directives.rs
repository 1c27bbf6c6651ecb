//! Cache directives as gatehouse obeys them: Cache-Control (RFC 9111 §5.2), or in its place a
//! targeted field such as CDN-Cache-Control (RFC 9213), with the field-value pieces the rest of
//! the policy reads with (list members, delta-seconds, HTTP dates).

use http::header::CACHE_CONTROL;
use http::{HeaderMap, HeaderName, HeaderValue};
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
    /// §5.2.2.3: store only if the cache understands the status's caching requirements, and
    /// then regardless of no-store.
    pub must_understand: bool,
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
            b"must-understand" => set_flag(&mut self.must_understand, argument, merge),
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
pub(super) fn delta_seconds(digits: &[u8]) -> Option<u64> {
    digits_saturating(digits).map(|n| n.min(DELTA_SECONDS_MAX))
}

/// A non-empty run of ASCII digits, saturating rather than overflowing.
pub(super) fn digits_saturating(digits: &[u8]) -> Option<u64> {
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
pub(super) fn list_members(value: &[u8]) -> ListMembers<'_> {
    ListMembers { rest: value }
}

pub(super) struct ListMembers<'a> {
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
pub(super) fn field_members<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> impl Iterator<Item = &'a [u8]> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| list_members(value.as_bytes()))
}

/// An HTTP-date (RFC 9110 §5.6.7), in any of its three accepted formats (see `date`).
pub(super) fn http_date(value: &HeaderValue) -> Option<SystemTime> {
    date_bytes(value.as_bytes())
}

pub(super) fn date_bytes(value: &[u8]) -> Option<SystemTime> {
    super::date::parse(value)
}

/// The first line of a date-valued field. Dates contain commas, so their lines cannot be
/// combined; §4.2.1 allows using the first occurrence.
pub(super) fn header_date(headers: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
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
    /// Responses with Set-Cookie may be stored (with their cookies); see `storability`.
    pub store_set_cookie: bool,
    /// POST responses may be stored for GETs of their target; see `post_storability`.
    pub store_post_responses: bool,
}

/// The directives gatehouse obeys on a response: the first targeted field present (the configured one, then CDN-Cache-Control) replaces Cache-Control entirely (RFC 9213 §2.1); otherwise Cache-Control.
///
/// Targeted fields are Structured Fields Dictionaries (RFC 9213 §2.1, RFC 8941 §3.2); one that
/// is empty or does not parse as such is ignored as if absent, and the next one is tried. When a
/// targeted field is used, Expires is ignored too (see `freshness`).
pub fn response_directives(headers: &HeaderMap, config: &PolicyConfig) -> Directives {
    selected_directives(headers, config).0
}

/// The obeyed directives, and whether they came from a targeted field (which also silences
/// Expires: RFC 9213 §2.1 has the cache ignore "the Cache-Control and Expires header fields").
pub(super) fn selected_directives(
    headers: &HeaderMap,
    config: &PolicyConfig,
) -> (Directives, bool) {
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
            let (argument, item) = if cursor.eat(b'=') {
                if cursor.peek() == Some(b'(') {
                    cursor.inner_list()?;
                    (Argument::Value(b""), Item::InnerList)
                } else {
                    let argument = cursor.bare_item()?;
                    cursor.parameters()?;
                    argument
                }
            } else {
                cursor.parameters()?;
                (Argument::Absent, Item::Boolean)
            };
            if !value_fits(key, argument, item) {
                return None;
            }
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

/// The type of a Dictionary member's value (RFC 8941 §3.3, RFC 9651 Dates).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Item {
    Integer,
    Decimal,
    String,
    Token,
    ByteSequence,
    Boolean,
    Date,
    InnerList,
}

/// Whether a known directive's value has the type its Cache-Control meaning implies; unknown
/// directives take any.
///
/// RFC 9213 §2.1 infers the types (delta-seconds are non-negative Integers, argument-less
/// directives Booleans) and asks caches not to consume values that violate them, since coercing
/// one (a decimal max-age read as an integer) is where caches would part ways. The field is
/// then ignored as a whole, like one that does not parse: keeping the rest of it would obey
/// the origin only in part (a `max-age` kept while the malformed `no-store` beside it is
/// dropped), while Cache-Control still says what the origin meant for caches in general.
/// `no-cache` and `private` may also carry field names (a String, a Token or an Inner List),
/// their qualified forms, read as unqualified like Cache-Control's.
fn value_fits(key: &[u8], argument: Argument<'_>, item: Item) -> bool {
    match key {
        b"max-age" | b"s-maxage" | b"stale-while-revalidate" | b"stale-if-error" => {
            item == Item::Integer
                && matches!(argument, Argument::Value(digits) if !digits.starts_with(b"-"))
        }
        b"no-cache" | b"private" => matches!(
            item,
            Item::Boolean | Item::String | Item::Token | Item::InnerList
        ),
        b"no-store" | b"public" | b"must-revalidate" | b"proxy-revalidate" | b"immutable"
        | b"must-understand" | b"no-transform" => item == Item::Boolean,
        _ => true,
    }
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

    /// §4.2.3.1 (plus RFC 9651 Dates), as the argument it gives a directive, and its type.
    fn bare_item(&mut self) -> Option<(Argument<'a>, Item)> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self
                .number()
                .map(|(number, item)| (Argument::Value(number), item)),
            b'"' => self
                .string()
                .map(|string| (Argument::Value(string), Item::String)),
            b'?' => {
                self.pos += 1;
                if self.eat(b'0') {
                    Some((Argument::False, Item::Boolean))
                } else if self.eat(b'1') {
                    Some((Argument::Absent, Item::Boolean))
                } else {
                    None
                }
            }
            b':' => {
                self.pos += 1;
                let bytes = self.take_while(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
                self.eat(b':')
                    .then_some((Argument::Value(bytes), Item::ByteSequence))
            }
            b'@' => {
                self.pos += 1;
                match self.number()? {
                    (seconds, Item::Integer) => Some((Argument::Value(seconds), Item::Date)),
                    _ => None,
                }
            }
            b if b.is_ascii_alphabetic() || b == b'*' => Some((
                Argument::Value(self.take_while(|b| is_tchar(b) || b == b':' || b == b'/')),
                Item::Token,
            )),
            _ => None,
        }
    }

    /// §4.2.4: an Integer (at most 15 digits) or a Decimal (12.3 digits at most).
    fn number(&mut self) -> Option<(&'a [u8], Item)> {
        let start = self.pos;
        self.eat(b'-');
        let integer = self.take_while(|b| b.is_ascii_digit()).len();
        let (valid, item) = if self.eat(b'.') {
            let fraction = self.take_while(|b| b.is_ascii_digit()).len();
            (
                (1..=12).contains(&integer) && (1..=3).contains(&fraction),
                Item::Decimal,
            )
        } else {
            ((1..=15).contains(&integer), Item::Integer)
        };
        valid.then(|| (&self.input[start..self.pos], item))
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

/// What the tests of every policy file build on: header maps, times around `T`, a config
/// without defaults.
#[cfg(test)]
pub(super) mod fixtures {
    use super::*;
    use std::time::UNIX_EPOCH;

    pub const T: u64 = 1_700_000_000;

    pub fn headers(fields: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    pub fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    pub fn date(seconds: u64) -> String {
        httpdate::fmt_http_date(at(seconds))
    }

    pub fn secs(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    pub fn config() -> PolicyConfig {
        PolicyConfig {
            default_ttl: Duration::ZERO,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            targeted_field: None,
            store_set_cookie: false,
            store_post_responses: false,
        }
    }

    pub const MAX_AGE: (&str, &str) = ("cache-control", "max-age=60");
}

#[cfg(test)]
mod tests {
    use super::fixtures::{config, headers};
    use super::*;

    fn cache_control(lines: &[&str]) -> Directives {
        let fields: Vec<_> = lines.iter().map(|line| ("cache-control", *line)).collect();
        Directives::parse(headers(&fields).get_all(CACHE_CONTROL))
    }

    // ---- Directives ----

    #[test]
    fn every_directive_is_read() {
        let parsed = cache_control(&[
            "max-age=60, s-maxage=120, no-store, no-cache, private, public, must-revalidate, \
             proxy-revalidate, immutable, must-understand, stale-while-revalidate=30, \
             stale-if-error=300, max-stale=5, min-fresh=10, only-if-cached",
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
                must_understand: true,
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
            " , foo, bar=\"baz\", a-very-long-unknown-directive-name=1, \
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
    }

    #[test]
    fn a_targeted_field_with_a_value_of_the_wrong_type_is_ignored_whole() {
        for wrong in [
            // Negative and decimal numbers are valid syntax, but no delta-seconds.
            "max-age=-5, must-revalidate",
            "s-maxage=1.5",
            "max-age=60, stale-if-error=-1",
            "max-age=\"60\"",
            "max-age=sixty",
            "max-age=?1",
            "max-age=(60)",
            "max-age=:YQ==:",
            "max-age=@60",
            "max-age=60, no-store=1",
            "max-age=60, no-store=\"yes\"",
            "max-age=60, public=(a)",
            "max-age=60, must-revalidate=tok",
            "max-age=60, must-understand=1",
        ] {
            let response = headers(&[
                ("cdn-cache-control", wrong),
                ("cache-control", "max-age=5, private"),
            ]);
            assert_eq!(
                response_directives(&response, &config()),
                Directives {
                    max_age: Some(5),
                    private: true,
                    ..Directives::default()
                },
                "{wrong:?}: Cache-Control applies"
            );
        }
    }

    proptest::proptest! {
        /// Cache-Control and targeted fields come from origins: no bytes may panic the parsers.
        #[test]
        fn field_parsers_never_panic(
            value in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(b"=,;\"\\()?:@*-. \t0123456789".to_vec()),
                    0x20u8..=0xff,
                ],
                0..48,
            ),
        ) {
            let Ok(value) = HeaderValue::from_bytes(&value) else {
                return Ok(());
            };
            let mut fields = HeaderMap::new();
            fields.insert(CACHE_CONTROL, value.clone());
            fields.insert(CDN_CACHE_CONTROL, value.clone());
            fields.insert(http::header::VARY, value.clone());
            fields.insert(http::header::ACCEPT_LANGUAGE, value.clone());
            fields.insert(http::header::CONTENT_RANGE, value.clone());
            fields.insert(http::header::RANGE, value.clone());
            if let Some(piece) = crate::cache::policy::content_range(&fields) {
                let _ = crate::cache::policy::range_in_piece(&fields, &fields, piece);
            }
            let _ = Directives::parse(fields.get_all(CACHE_CONTROL));
            let _ = response_directives(&fields, &config());
            let vary = crate::cache::policy::vary(&fields);
            let _ = crate::cache::policy::vary_values(&vary, &fields);
            let accept_language = crate::cache::policy::Vary::Names(vec![http::header::ACCEPT_LANGUAGE]);
            if let Some(values) = crate::cache::policy::vary_values(&accept_language, &fields) {
                proptest::prop_assert!(crate::cache::policy::vary_matches(&accept_language, &values, &fields));
            }
        }
    }

    #[test]
    fn values_of_the_right_type_are_used() {
        let directive =
            |value: &str| response_directives(&headers(&[("cdn-cache-control", value)]), &config());
        assert_eq!(directive("max-age=0").max_age, Some(0));
        assert_eq!(
            directive("max-age=999999999999999").max_age,
            Some(1 << 31),
            "clamped like delta-seconds"
        );
        assert!(directive("no-store=?1").no_store);
        assert!(!directive("no-store=?0, max-age=5").no_store);
        // The qualified forms of no-cache and private, read as unqualified.
        assert!(directive("no-cache=(\"set-cookie\" \"x-user\")").no_cache);
        assert!(directive("private=\"set-cookie\"").private);
        assert!(directive("private=set-cookie").private);
        // Unknown directives take any type, request directives too.
        let parsed = directive("x=1.5, y=\"s\", z=(1 2), d=@1, max-stale=?1, max-age=7");
        assert_eq!(parsed.max_age, Some(7));
    }
}
