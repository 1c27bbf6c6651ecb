//! A single byte range of a stored full response (RFC 9110 §14), honouring If-Range; every
//! other Range request is answered with the full representation. Also the piece a stored 206
//! holds (its Content-Range, §14.4) and the ranges it can answer alone (RFC 9111 §3.3).

use super::directives::{date_bytes, digits_saturating, header_date, list_members};
use super::validation::{EntityTag, stored_etag};
use http::HeaderMap;
use http::header::{CONTENT_RANGE, DATE, IF_RANGE, LAST_MODIFIED, RANGE};
use std::ops::RangeInclusive;
use std::time::Duration;

/// A single byte range as written, before the representation's length is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RangeSpec {
    /// `first-` or `first-last` (RFC 9110 §14.1.1 int-range).
    From { first: u64, last: Option<u64> },
    /// `-length` (suffix-range).
    Suffix(u64),
}

/// The range-set of a Range header with the `bytes` unit, or None (absent, sent more than
/// once, another unit, no `=`).
fn byte_range_set(request_headers: &HeaderMap) -> Option<&[u8]> {
    let mut lines = request_headers.get_all(RANGE).iter();
    let (Some(range), None) = (lines.next(), lines.next()) else {
        return None;
    };
    let (unit, set) = range.to_str().ok()?.split_once('=')?;
    // §14.1: range units are case-insensitive.
    unit.trim()
        .eq_ignore_ascii_case("bytes")
        .then_some(set.as_bytes())
}

/// One member of a range-set, or None when it is invalid.
fn range_spec(spec: &[u8]) -> Option<RangeSpec> {
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

/// A Range header asking for exactly one byte range, or None (absent, several ranges, other
/// units, or invalid syntax, all of which a server answers with the full representation).
fn single_byte_range(request_headers: &HeaderMap) -> Option<RangeSpec> {
    let mut specs = list_members(byte_range_set(request_headers)?);
    let spec = specs.next()?;
    if specs.next().is_some() {
        return None;
    }
    range_spec(spec)
}

/// `spec` placed in a representation of `len` bytes, or None when it is unsatisfiable: a
/// last position past the end is clamped, as is a suffix longer than the representation
/// (§14.1.2); a first position at or past the end, a zero-length suffix, or any range of an
/// empty representation is unsatisfiable (§14.1.1).
fn satisfiable(spec: RangeSpec, len: u64) -> Option<RangeInclusive<u64>> {
    let end = len.checked_sub(1)?;
    match spec {
        RangeSpec::From { first, last } if first <= end => {
            Some(first..=last.map_or(end, |last| last.min(end)))
        }
        RangeSpec::Suffix(length) if length > 0 => Some(len - length.min(len)..=end),
        _ => None,
    }
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
    Some(satisfiable(spec, len).ok_or(()))
}

/// RFC 9110 §14: the byte ranges of a representation of `len` bytes that a Range header asks
/// for, one or several, honouring If-Range like [`byte_range`]. None → serve 200 full
/// (absent, any invalid member, other units, more than `max_ranges` members, a false
/// If-Range); Some(Err(())) → 416 (no member satisfiable); Some(Ok(ranges)) → 206, the
/// satisfiable members in ascending order with overlapping or touching ones merged.
///
/// §14.3 lets a server coalesce ranges in any order, and ignore a set of many ranges: both
/// keep a request for thousands of one-byte pieces from costing a part header each.
pub fn byte_ranges(
    request_headers: &HeaderMap,
    stored_headers: &HeaderMap,
    len: u64,
    max_ranges: usize,
) -> Option<Result<Vec<RangeInclusive<u64>>, ()>> {
    let set = byte_range_set(request_headers)?;
    let mut ranges = Vec::new();
    let mut members = 0;
    for member in list_members(set) {
        members += 1;
        if members > max_ranges {
            return None;
        }
        if let Some(range) = satisfiable(range_spec(member)?, len) {
            ranges.push(range);
        }
    }
    if members == 0 || !if_range_holds(request_headers, stored_headers) {
        return None;
    }
    if ranges.is_empty() {
        return Some(Err(()));
    }
    ranges.sort_by_key(|range| *range.start());
    let mut merged: Vec<RangeInclusive<u64>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if *range.start() <= last.end().saturating_add(1) => {
                *last = *last.start()..=(*last.end()).max(*range.end());
            }
            _ => merged.push(range),
        }
    }
    Some(Ok(merged))
}

/// The bytes a stored 206 holds: `first..=last` of a representation of `complete_length`
/// bytes (None when the origin wrote `*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub first: u64,
    pub last: u64,
    pub complete_length: Option<u64>,
}

/// RFC 9110 §14.4: a 206's one `Content-Range: bytes first-last/complete` (or `/*`), or None
/// (absent, repeated, another unit, an unsatisfied-range form, last before first, or last past
/// the complete length). A multipart/byteranges 206 has none and is not a piece.
pub fn content_range(response_headers: &HeaderMap) -> Option<Piece> {
    let mut lines = response_headers.get_all(CONTENT_RANGE).iter();
    let (Some(value), None) = (lines.next(), lines.next()) else {
        return None;
    };
    let value = value.to_str().ok()?.trim();
    let (unit, rest) = value.split_once(' ')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let (range, complete) = rest.trim_start().split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let first = digits_saturating(first.as_bytes())?;
    let last = digits_saturating(last.as_bytes())?;
    let complete_length = match complete {
        "*" => None,
        length => Some(digits_saturating(length.as_bytes())?),
    };
    let fits = complete_length.is_none_or(|length| last < length);
    (first <= last && fits).then_some(Piece {
        first,
        last,
        complete_length,
    })
}

/// RFC 9111 §3.4: the piece two stored pieces of one variant make together, when they may be
/// combined: both with the same strong ETag (a weak one, or none, could stand for different
/// bytes), the same known complete length, and touching or overlapping. None otherwise.
pub fn combined(
    old: Piece,
    old_headers: &HeaderMap,
    new: Piece,
    new_headers: &HeaderMap,
) -> Option<Piece> {
    let (old_tag, new_tag) = (stored_etag(old_headers)?, stored_etag(new_headers)?);
    let length = old.complete_length?;
    let apart = old.first > new.last.saturating_add(1) || new.first > old.last.saturating_add(1);
    (old_tag.strong_eq(new_tag) && new.complete_length == Some(length) && !apart).then_some(Piece {
        first: old.first.min(new.first),
        last: old.last.max(new.last),
        complete_length: Some(length),
    })
}

impl Piece {
    /// Whether the piece is the whole representation.
    pub fn is_whole(&self) -> bool {
        self.first == 0
            && self
                .complete_length
                .is_some_and(|length| self.last.checked_add(1) == Some(length))
    }
}

/// The absolute byte range of the request's single Range that lies wholly inside `piece`
/// (a stored 206 with `stored_headers`), honouring If-Range; None when it cannot be answered
/// from the piece alone (no or several ranges, a range reaching outside it, an open or suffix
/// range whose end the piece cannot place, a false If-Range, an unsatisfiable range — the
/// origin answers all of those).
pub fn range_in_piece(
    request_headers: &HeaderMap,
    stored_headers: &HeaderMap,
    piece: Piece,
) -> Option<RangeInclusive<u64>> {
    let spec = single_byte_range(request_headers)?;
    if !if_range_holds(request_headers, stored_headers) {
        return None;
    }
    let end = piece.complete_length.map(|length| length.checked_sub(1));
    let (first, last) = match spec {
        RangeSpec::From { first, last } => {
            let last = match (last, end) {
                (Some(last), Some(Some(end))) => last.min(end),
                (Some(last), None) => last,
                (None, Some(Some(end))) => end,
                _ => return None,
            };
            (first, last)
        }
        RangeSpec::Suffix(length) => {
            let complete = piece.complete_length?;
            if length == 0 || complete == 0 {
                return None;
            }
            (complete - length.min(complete), complete - 1)
        }
    };
    (piece.first <= first && first <= last && last <= piece.last).then_some(first..=last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::directives::fixtures::{T, date, headers};

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

    proptest::proptest! {
        /// Content-Range and Range come from outside: any shape of them neither panics nor
        /// yields a range reaching outside the stored piece.
        #[test]
        fn pieces_never_answer_outside_themselves(
            content_range_value in "[Bb]ytes [0-9]{1,21}-[0-9]{1,21}/([0-9]{1,21}|\\*)",
            range in "bytes=[0-9]{0,21}-[0-9]{0,21}",
        ) {
            let response = headers(&[("content-range", &content_range_value)]);
            if let Some(piece) = content_range(&response) {
                let request = headers(&[("range", &range)]);
                if let Some(answer) = range_in_piece(&request, &response, piece) {
                    proptest::prop_assert!(piece.first <= *answer.start());
                    proptest::prop_assert!(answer.start() <= answer.end());
                    proptest::prop_assert!(*answer.end() <= piece.last);
                }
            }
        }
    }

    #[test]
    fn content_range_of_a_206() {
        let piece = |value: &str| content_range(&headers(&[("content-range", value)]));
        assert_eq!(
            piece("bytes 0-99/1000"),
            Some(Piece {
                first: 0,
                last: 99,
                complete_length: Some(1000)
            })
        );
        assert_eq!(
            piece("Bytes 10-10/*"),
            Some(Piece {
                first: 10,
                last: 10,
                complete_length: None
            })
        );
        for invalid in [
            "bytes */1000",
            "bytes 5-4/1000",
            "bytes 0-1000/1000",
            "items 0-1/2",
            "bytes 0-1",
            "bytes -1-2/3",
            "bytes 0-99/lots",
            "bytes=0-99/1000",
            "",
        ] {
            assert_eq!(piece(invalid), None, "{invalid:?}");
        }
        assert_eq!(content_range(&HeaderMap::new()), None);
        assert_eq!(
            content_range(&headers(&[
                ("content-range", "bytes 0-1/2"),
                ("content-range", "bytes 0-1/2")
            ])),
            None
        );
    }

    #[test]
    fn pieces_with_one_strong_etag_that_touch_combine() {
        let piece = |first, last| Piece {
            first,
            last,
            complete_length: Some(100),
        };
        let strong = headers(&[("etag", "\"v1\"")]);
        assert_eq!(
            combined(piece(0, 9), &strong, piece(10, 19), &strong),
            Some(piece(0, 19))
        );
        assert_eq!(
            combined(piece(10, 49), &strong, piece(0, 19), &strong),
            Some(piece(0, 49))
        );
        assert_eq!(
            combined(piece(0, 99), &strong, piece(10, 19), &strong),
            Some(piece(0, 99))
        );
        assert!(piece(0, 99).is_whole() && !piece(0, 98).is_whole());
        assert_eq!(
            combined(piece(0, 9), &strong, piece(11, 19), &strong),
            None,
            "a gap"
        );
        let other = headers(&[("etag", "\"v2\"")]);
        let weak = headers(&[("etag", "W/\"v1\"")]);
        assert_eq!(combined(piece(0, 9), &strong, piece(10, 19), &other), None);
        assert_eq!(combined(piece(0, 9), &weak, piece(10, 19), &weak), None);
        assert_eq!(
            combined(
                piece(0, 9),
                &HeaderMap::new(),
                piece(10, 19),
                &HeaderMap::new()
            ),
            None
        );
        let unknown = Piece {
            complete_length: None,
            ..piece(10, 19)
        };
        assert_eq!(combined(piece(0, 9), &strong, unknown, &strong), None);
        assert_eq!(combined(unknown, &strong, piece(0, 9), &strong), None);
        let longer = Piece {
            complete_length: Some(200),
            ..piece(10, 19)
        };
        assert_eq!(combined(piece(0, 9), &strong, longer, &strong), None);
    }

    #[test]
    fn ranges_inside_a_piece() {
        let piece = Piece {
            first: 100,
            last: 199,
            complete_length: Some(1000),
        };
        let within = |spec: &str, piece| {
            range_in_piece(&headers(&[("range", spec)]), &HeaderMap::new(), piece)
        };
        assert_eq!(within("bytes=100-199", piece), Some(100..=199));
        assert_eq!(within("bytes=150-160", piece), Some(150..=160));
        assert_eq!(within("bytes=99-150", piece), None);
        assert_eq!(within("bytes=150-200", piece), None);
        assert_eq!(within("bytes=150-", piece), None, "runs to byte 999");
        assert_eq!(within("bytes=-10", piece), None, "the last ten bytes");
        assert_eq!(within("bytes=0-1,150-160", piece), None);
        let tail = Piece {
            first: 900,
            last: 999,
            complete_length: Some(1000),
        };
        assert_eq!(within("bytes=950-", tail), Some(950..=999));
        assert_eq!(within("bytes=-10", tail), Some(990..=999));
        assert_eq!(within("bytes=950-5000", tail), Some(950..=999));
        assert_eq!(
            within("bytes=1000-", tail),
            None,
            "unsatisfiable: the origin says so"
        );
        assert_eq!(within("bytes=-0", tail), None);
        let unknown_length = Piece {
            complete_length: None,
            ..tail
        };
        assert_eq!(within("bytes=950-960", unknown_length), Some(950..=960));
        assert_eq!(within("bytes=950-", unknown_length), None);
        assert_eq!(within("bytes=-10", unknown_length), None);
        assert_eq!(
            range_in_piece(&HeaderMap::new(), &HeaderMap::new(), piece),
            None
        );
        // If-Range against the piece's own validator.
        let stored = headers(&[("etag", "\"p1\"")]);
        let request = |tag: &str| headers(&[("range", "bytes=150-160"), ("if-range", tag)]);
        assert_eq!(
            range_in_piece(&request("\"p1\""), &stored, piece),
            Some(150..=160)
        );
        assert_eq!(range_in_piece(&request("\"p2\""), &stored, piece), None);
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

    fn ranges(spec: &str, len: u64) -> Option<Result<Vec<RangeInclusive<u64>>, ()>> {
        byte_ranges(&headers(&[("range", spec)]), &headers(&[]), len, 16)
    }

    #[test]
    fn several_byte_ranges() {
        assert_eq!(ranges("bytes=0-1,5-6", 10), Some(Ok(vec![0..=1, 5..=6])));
        assert_eq!(ranges("bytes=-2, 0-0", 10), Some(Ok(vec![0..=0, 8..=9])));
        assert_eq!(ranges("bytes=0-99", 1000), Some(Ok(vec![0..=99])));
        // Overlapping and touching ranges merge; unsatisfiable members drop out.
        assert_eq!(ranges("bytes=0-4,2-6,7-8", 10), Some(Ok(vec![0..=8])));
        assert_eq!(ranges("bytes=0-1,50-60", 10), Some(Ok(vec![0..=1])));
        assert_eq!(ranges("bytes=50-60,70-", 10), Some(Err(())));
        assert_eq!(ranges("bytes=0-1", 0), Some(Err(())));
    }

    #[test]
    fn several_ranges_served_in_full() {
        for spec in [
            "bytes=0-1,x",
            "bytes=5-1,0-0",
            "items=0-1,2-3",
            "bytes=",
            "bytes=,",
        ] {
            assert_eq!(ranges(spec, 10), None, "{spec}");
        }
        let many = format!("bytes={}", vec!["0-0"; 17].join(","));
        assert_eq!(ranges(&many, 10), None, "more members than allowed");
        let stored = headers(&[("etag", "\"v1\"")]);
        let request = headers(&[("range", "bytes=0-1,4-5"), ("if-range", "\"v2\"")]);
        assert_eq!(byte_ranges(&request, &stored, 10, 16), None);
        let request = headers(&[("range", "bytes=0-1,4-5"), ("if-range", "\"v1\"")]);
        assert_eq!(
            byte_ranges(&request, &stored, 10, 16),
            Some(Ok(vec![0..=1, 4..=5]))
        );
    }

    proptest::proptest! {
        #[test]
        fn several_ranges_stay_inside_sorted_and_apart(
            value in "(bytes|BYTES|x)=[-0-9, ]{0,40}",
            len in 0u64..50,
        ) {
            let Ok(value) = http::HeaderValue::from_str(&value) else {
                return Ok(());
            };
            let mut request = HeaderMap::new();
            request.insert(RANGE, value);
            if let Some(Ok(ranges)) = byte_ranges(&request, &HeaderMap::new(), len, 8) {
                proptest::prop_assert!(!ranges.is_empty());
                for pair in ranges.windows(2) {
                    proptest::prop_assert!(pair[0].end().saturating_add(1) < *pair[1].start());
                }
                for range in &ranges {
                    proptest::prop_assert!(range.start() <= range.end() && *range.end() < len);
                }
            }
        }
    }
}
