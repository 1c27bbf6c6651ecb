//! A response head's fields kept as the upstream wrote them, for a proxy that passes them on
//! unchanged: the head's bytes and where each field sits, with its hop-by-hop fields marked.
//! nginx and haproxy forward a response head this way. Building a `HeaderMap` instead costs
//! a hashed insert per field on the way in and a walk of the map on the way out; on a plain
//! proxied request that was about a tenth of all its work. A caller that needs to read or
//! edit the fields asks for the map at parse time instead (`parse_response_keeping`).

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};

/// What a response field's name means to a head kept as bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawName {
    /// Passed on as it is.
    EndToEnd,
    /// Hop-by-hop (RFC 9110 §7.6.1, and the older ones proxies remove too): not passed on.
    HopByHop,
    Connection,
    ContentLength,
    TransferEncoding,
    Date,
    /// A field whose rules need the map (Host, which the codec checks in every head).
    NeedsMap,
}

/// Classifies a field name (compared without case). Most names are told by their length
/// alone, with no byte compared: this runs for every field of every proxied response.
pub(crate) fn classify(name: &[u8]) -> RawName {
    let is = |known: &[u8]| known.eq_ignore_ascii_case(name);
    match name.len() {
        2 if is(b"te") => RawName::HopByHop,
        4 if is(b"date") => RawName::Date,
        4 if is(b"host") => RawName::NeedsMap,
        7 if is(b"trailer") || is(b"upgrade") => RawName::HopByHop,
        10 if is(b"connection") => RawName::Connection,
        10 if is(b"keep-alive") => RawName::HopByHop,
        14 if is(b"content-length") => RawName::ContentLength,
        16 if is(b"proxy-connection") => RawName::HopByHop,
        17 if is(b"transfer-encoding") => RawName::TransferEncoding,
        18 if is(b"proxy-authenticate") => RawName::HopByHop,
        19 if is(b"proxy-authorization") => RawName::HopByHop,
        _ => RawName::EndToEnd,
    }
}

/// Whether a field of this name is hop-by-hop.
#[cfg(test)]
pub(crate) fn is_hop_by_hop(name: &[u8]) -> bool {
    matches!(
        classify(name),
        RawName::HopByHop | RawName::Connection | RawName::TransferEncoding
    )
}

/// One field line of a kept head.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawField {
    /// Where the name and the value sit in the head, as byte ranges.
    name: (u32, u32),
    value: (u32, u32),
    /// Left out when the head is passed on.
    hop_by_hop: bool,
    content_length: bool,
    /// The line is exactly `name: value CRLF`, so it can be copied whole with its neighbours.
    canonical: bool,
}

impl RawField {
    pub(crate) fn new(head: &[u8], name: (u32, u32), value: (u32, u32), kind: RawName) -> Self {
        let at = |start: u32, len: u32| head.get(start as usize..start as usize + len as usize);
        let canonical = at(name.1, 2) == Some(b": ")
            && value.0 == name.1 + 2
            && at(value.1, 2) == Some(b"\r\n");
        Self {
            canonical,
            name,
            value,
            hop_by_hop: matches!(
                kind,
                RawName::HopByHop | RawName::Connection | RawName::TransferEncoding
            ),
            content_length: kind == RawName::ContentLength,
        }
    }
}

/// The fields of a response head, as bytes. Framing facts the codec read from them (the
/// Content-Length, whether a Date is there) are kept beside them, so a writer need not look
/// the fields up again.
#[derive(Debug)]
pub struct RawFields {
    head: Bytes,
    fields: Vec<RawField>,
    content_length: Option<u64>,
    date: bool,
    /// Fields the proxy adds, written after the upstream's (see [`RawFields::add`]).
    added: Vec<AddedField>,
}

/// A field added to a kept head: a short list beside the bytes costs less than the map a
/// proxy would otherwise build for two or three fields.
#[derive(Debug)]
struct AddedField {
    name: &'static HeaderName,
    value: HeaderValue,
    /// The upstream's fields of this name are left out.
    replaces: bool,
}

impl RawFields {
    pub(crate) fn new(
        head: Bytes,
        fields: Vec<RawField>,
        content_length: Option<u64>,
        date: bool,
    ) -> Self {
        Self {
            head,
            fields,
            content_length,
            date,
            added: Vec::new(),
        }
    }

    /// Adds `name: value` after the upstream's fields. With `replaces`, the upstream's fields
    /// of that name are left out (X-Request-Id); without, the new line extends them (Via).
    pub fn add(&mut self, name: &'static HeaderName, value: HeaderValue, replaces: bool) {
        if self.added.capacity() == 0 {
            self.added.reserve_exact(3);
        }
        self.added.push(AddedField {
            name,
            value,
            replaces,
        });
    }

    /// Whether an added field replaces the upstream's fields named `name` (any case).
    pub(crate) fn replaces(&self, name: &[u8]) -> bool {
        self.added.iter().any(|added| {
            added.replaces && added.name.as_str().as_bytes().eq_ignore_ascii_case(name)
        })
    }

    /// Writes the added fields as `name: value CRLF` lines.
    pub(crate) fn write_added(&self, dst: &mut BytesMut) {
        for added in &self.added {
            dst.put_slice(added.name.as_str().as_bytes());
            dst.put_slice(b": ");
            dst.put_slice(added.value.as_bytes());
            dst.put_slice(b"\r\n");
        }
    }

    fn bytes(&self, (start, end): (u32, u32)) -> Option<&[u8]> {
        self.head.get(start as usize..end as usize)
    }

    /// The length the Content-Length field declared, if there was one.
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// Whether the head had a Date field.
    pub fn has_date(&self) -> bool {
        self.date
    }

    /// The end-to-end fields as `(name, value)` in the order received, names in the sender's
    /// case; hop-by-hop fields are left out, and Content-Length too if `content_length` is
    /// false.
    pub fn end_to_end(&self, content_length: bool) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .filter(move |field| !field.hop_by_hop && (content_length || !field.content_length))
            .filter_map(|field| Some((self.bytes(field.name)?, self.bytes(field.value)?)))
    }

    /// Writes the end-to-end fields as `name: value CRLF` lines (see [`RawFields::end_to_end`]),
    /// leaving out those `replaced` says. Neighbouring lines the upstream wrote in that form
    /// are copied as one run of bytes.
    pub fn write_end_to_end(
        &self,
        content_length: bool,
        replaced: impl Fn(&[u8]) -> bool,
        dst: &mut BytesMut,
    ) {
        let mut run: Option<(usize, usize)> = None;
        let flush = |run: Option<(usize, usize)>, dst: &mut BytesMut| {
            if let Some(lines) = run.and_then(|(start, end)| self.head.get(start..end)) {
                dst.put_slice(lines);
            }
        };
        for field in &self.fields {
            if field.hop_by_hop || (field.content_length && !content_length) {
                continue;
            }
            let (Some(name), Some(value)) = (self.bytes(field.name), self.bytes(field.value))
            else {
                continue;
            };
            if replaced(name) {
                continue;
            }
            let start = field.name.0 as usize;
            if field.canonical {
                let end = field.value.1 as usize + 2;
                match &mut run {
                    Some((_, run_end)) if *run_end == start => *run_end = end,
                    _ => {
                        flush(run.take(), dst);
                        run = Some((start, end));
                    }
                }
            } else {
                flush(run.take(), dst);
                dst.put_slice(name);
                dst.put_slice(b": ");
                dst.put_slice(value);
                dst.put_slice(b"\r\n");
            }
        }
        flush(run, dst);
    }

    /// The end-to-end fields as a map, for a caller that turns out to need one.
    pub fn to_map(&self) -> http::HeaderMap {
        let mut map = http::HeaderMap::with_capacity(self.fields.len());
        for field in self.fields.iter().filter(|field| !field.hop_by_hop) {
            let name = self
                .bytes(field.name)
                .and_then(|name| http::HeaderName::from_bytes(name).ok());
            let value = self
                .bytes(field.value)
                .and_then(|value| http::HeaderValue::from_bytes(value).ok());
            if let (Some(name), Some(value)) = (name, value) {
                map.append(name, value);
            }
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_names_in_any_case() {
        for name in [
            &b"Connection"[..],
            b"KEEP-ALIVE",
            b"te",
            b"Transfer-Encoding",
            b"Proxy-Connection",
            b"upgrade",
            b"Trailer",
            b"Proxy-Authenticate",
            b"proxy-authorization",
        ] {
            assert!(is_hop_by_hop(name), "{}", String::from_utf8_lossy(name));
        }
        for name in [
            &b"Content-Length"[..],
            b"tes",
            b"t",
            b"Date",
            b"Connections",
        ] {
            assert!(!is_hop_by_hop(name), "{}", String::from_utf8_lossy(name));
        }
    }
}
