//! Trace context as it travels in request fields: W3C `traceparent` and B3 read from bytes
//! the client chose (never trusted, never an error: a malformed field is as good as none), and
//! `traceparent` written for the upstream.

use http::HeaderValue;

/// A trace id: 16 bytes, never all zero.
pub type TraceId = [u8; 16];
/// A span id: 8 bytes, never all zero.
pub type SpanId = [u8; 8];

/// The caller's span, as its trace context field names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The caller's sampling decision; `None` when it left it to gatehouse (B3 may).
    pub sampled: Option<bool>,
}

/// Reads a W3C `traceparent` value (Trace Context §3.2): `00-<32 hex>-<16 hex>-<2 hex>`,
/// lowercase. A later version is read by its first four fields, as the spec asks, if what
/// follows them starts with `-`. `None` for anything else, including version `ff` and
/// all-zero ids.
pub fn parse_traceparent(value: &[u8]) -> Option<Parent> {
    if value.len() < 55 {
        return None;
    }
    let version = hex_byte(&value[0..2])?;
    if version == 0xff {
        return None;
    }
    if version == 0 && value.len() != 55 {
        return None;
    }
    if value.len() > 55 && value[55] != b'-' {
        return None;
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let trace_id: TraceId = hex_array(&value[3..35])?;
    let span_id: SpanId = hex_array(&value[36..52])?;
    let flags = hex_byte(&value[53..55])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled: Some(flags & 1 == 1),
    })
}

/// Reads a B3 single field: `<trace id>-<span id>[-<sampled>[-<parent span id>]]`, the trace
/// id of 16 or 32 hex digits. A field with only a sampling decision carries no parent.
pub fn parse_b3_single(value: &[u8]) -> Option<Parent> {
    let mut fields = value.split(|&b| b == b'-');
    let trace_id = b3_trace_id(fields.next()?)?;
    let span_id: SpanId = lower_hex_array(fields.next()?)?;
    let sampled = match fields.next() {
        None => None,
        Some(flag) => Some(b3_sampled(flag)?),
    };
    if let Some(parent) = fields.next() {
        let _: SpanId = lower_hex_array(parent)?;
    }
    if fields.next().is_some() || span_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled,
    })
}

/// Reads B3's multiple fields (`X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled`, `X-B3-Flags`).
pub fn parse_b3_multi(
    trace_id: &[u8],
    span_id: &[u8],
    sampled: Option<&[u8]>,
    flags: Option<&[u8]>,
) -> Option<Parent> {
    let trace_id = b3_trace_id(trace_id)?;
    let span_id: SpanId = lower_hex_array(span_id)?;
    if span_id == [0; 8] {
        return None;
    }
    let debug = flags == Some(b"1");
    let sampled = match sampled {
        _ if debug => Some(true),
        None => None,
        Some(b"1" | b"true") => Some(true),
        Some(b"0" | b"false") => Some(false),
        Some(_) => return None,
    };
    Some(Parent {
        trace_id,
        span_id,
        sampled,
    })
}

fn b3_trace_id(text: &[u8]) -> Option<TraceId> {
    let trace_id = match text.len() {
        32 => lower_hex_array::<16>(text)?,
        // A 64-bit trace id is the low half of a 128-bit one.
        16 => {
            let low: [u8; 8] = lower_hex_array(text)?;
            let mut id = [0; 16];
            id[8..].copy_from_slice(&low);
            id
        }
        _ => return None,
    };
    (trace_id != [0; 16]).then_some(trace_id)
}

fn b3_sampled(flag: &[u8]) -> Option<bool> {
    match flag {
        b"1" | b"d" => Some(true),
        b"0" => Some(false),
        _ => None,
    }
}

/// `traceparent` for a request sent as span `span_id` of trace `trace_id`.
pub fn traceparent(trace_id: &TraceId, span_id: &SpanId, sampled: bool) -> HeaderValue {
    let mut text = [0u8; 55];
    text[..3].copy_from_slice(b"00-");
    write_hex(&mut text[3..35], trace_id);
    text[35] = b'-';
    write_hex(&mut text[36..52], span_id);
    text[52] = b'-';
    text[53] = b'0';
    text[54] = if sampled { b'1' } else { b'0' };
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `b3` (single field) for a request sent as span `span_id` of trace `trace_id`.
pub fn b3_single(trace_id: &TraceId, span_id: &SpanId, sampled: bool) -> HeaderValue {
    let mut text = [0u8; 51];
    write_hex(&mut text[..32], trace_id);
    text[32] = b'-';
    write_hex(&mut text[33..49], span_id);
    text[49] = b'-';
    text[50] = if sampled { b'1' } else { b'0' };
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Lowercase hex of `bytes` into `out` (twice as long).
pub fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

/// `id` as lowercase hex.
pub fn to_hex(id: &[u8]) -> String {
    let mut out = vec![0u8; id.len() * 2];
    write_hex(&mut out, id);
    String::from_utf8(out).unwrap_or_default()
}

fn lower_hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    match pair {
        [high, low] => Some(lower_hex_digit(*high)? << 4 | lower_hex_digit(*low)?),
        _ => None,
    }
}

fn hex_array<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = hex_byte(pair)?;
    }
    Some(out)
}

fn lower_hex_array<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    hex_array(text)
}

/// A new trace id (random, never zero).
pub fn new_trace_id() -> TraceId {
    loop {
        let id = fastrand::u128(..).to_be_bytes();
        if id != [0; 16] {
            return id;
        }
    }
}

/// A new span id (random, never zero).
pub fn new_span_id() -> SpanId {
    loop {
        let id = fastrand::u64(..).to_be_bytes();
        if id != [0; 8] {
            return id;
        }
    }
}

/// Whether a new trace is sampled at `ratio`: decided by the trace id, so that every hop that
/// samples by ratio alike keeps or drops the same traces.
pub fn sampled_by_ratio(trace_id: &TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 || ratio.is_nan() {
        return false;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    // The cast saturates: a ratio just under 1 is just under u64::MAX.
    let threshold = (ratio * u64::MAX as f64) as u64;
    u64::from_be_bytes(low) < threshold
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXAMPLE: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_the_spec_example() {
        let parent = parse_traceparent(EXAMPLE).unwrap();
        assert_eq!(to_hex(&parent.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(to_hex(&parent.span_id), "00f067aa0ba902b7");
        assert_eq!(parent.sampled, Some(true));
        let unsampled =
            parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert_eq!(unsampled.sampled, Some(false));
    }

    #[test]
    fn writes_what_it_reads() {
        let parent = parse_traceparent(EXAMPLE).unwrap();
        let written = traceparent(&parent.trace_id, &parent.span_id, true);
        assert_eq!(written.as_bytes(), EXAMPLE);
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in [
            &b""[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            b"0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(
                parse_traceparent(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn reads_a_later_version_by_its_first_fields() {
        let later = b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
        assert!(parse_traceparent(later).is_some());
        let glued = b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x";
        assert_eq!(parse_traceparent(glued), None);
    }

    #[test]
    fn reads_b3() {
        let single = parse_b3_single(
            b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        )
        .unwrap();
        assert_eq!(to_hex(&single.trace_id), "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(to_hex(&single.span_id), "e457b5a2e4d86bd1");
        assert_eq!(single.sampled, Some(true));
        let short = parse_b3_single(b"64fe8b2a57d3eff7-e457b5a2e4d86bd1").unwrap();
        assert_eq!(to_hex(&short.trace_id), "000000000000000064fe8b2a57d3eff7");
        assert_eq!(short.sampled, None);
        assert_eq!(parse_b3_single(b"0"), None);
        assert_eq!(
            parse_b3_single(b"64fe8b2a57d3eff7-e457b5a2e4d86bd1-x"),
            None
        );
        let multi = parse_b3_multi(
            b"80f198ee56343ba864fe8b2a57d3eff7",
            b"e457b5a2e4d86bd1",
            Some(b"0"),
            None,
        )
        .unwrap();
        assert_eq!(multi.sampled, Some(false));
        assert_eq!(parse_b3_multi(b"zz", b"e457b5a2e4d86bd1", None, None), None);
    }

    #[test]
    fn ratio_sampling_is_by_trace_id() {
        let mut low = [0u8; 16];
        low[15] = 1;
        let mut high = [0xffu8; 16];
        high[0] = 1;
        assert!(sampled_by_ratio(&low, 0.5));
        assert!(!sampled_by_ratio(&high, 0.5));
        assert!(!sampled_by_ratio(&low, 0.0));
        assert!(sampled_by_ratio(&high, 1.0));
        let kept = (0..10_000)
            .filter(|_| sampled_by_ratio(&new_trace_id(), 0.25))
            .count();
        assert!((2_000..3_000).contains(&kept), "{kept}");
    }

    proptest! {
        #[test]
        fn traceparent_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse_traceparent(&bytes);
            let _ = parse_b3_single(&bytes);
            let _ = parse_b3_multi(&bytes, &bytes, Some(&bytes), Some(&bytes));
        }

        #[test]
        fn near_valid_traceparents_never_panic(
            mut bytes in proptest::collection::vec(
                proptest::sample::select(b"0123456789abcdefF-x".to_vec()), 50..70),
        ) {
            if bytes.len() > 2 { bytes[2] = b'-'; }
            if let Some(parent) = parse_traceparent(&bytes) {
                let again = traceparent(&parent.trace_id, &parent.span_id, parent.sampled == Some(true));
                prop_assert_eq!(parse_traceparent(again.as_bytes()).map(|p| p.trace_id), Some(parent.trace_id));
            }
        }

        #[test]
        fn written_traceparents_read_back(trace in any::<u128>(), span in any::<u64>(), sampled: bool) {
            let (trace_id, span_id) = (trace.to_be_bytes(), span.to_be_bytes());
            let written = traceparent(&trace_id, &span_id, sampled);
            let read = parse_traceparent(written.as_bytes());
            if trace == 0 || span == 0 {
                prop_assert_eq!(read, None);
            } else {
                prop_assert_eq!(read, Some(Parent { trace_id, span_id, sampled: Some(sampled) }));
            }
        }
    }
}
