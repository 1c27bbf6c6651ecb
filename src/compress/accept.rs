//! Accept-Encoding (RFC 9110 §12.5.3): the codings a client takes, each with its q-value,
//! and the choice among the codings a route offers. Pure, allocation-free, total on any
//! bytes (a malformed member is skipped, as if the client had not sent it).

use super::Encoding;

/// q-values in thousandths: `q=1` is 1000, `q=0` is 0 (not acceptable).
type Weight = u16;

const FULL: Weight = 1000;

/// What an Accept-Encoding field says about the codings gatehouse knows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Accepted {
    by_encoding: [Option<Weight>; 3],
    identity: Option<Weight>,
    any: Option<Weight>,
}

impl Accepted {
    fn parse<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Self {
        let mut accepted = Accepted::default();
        for line in lines {
            for member in line.split(|&b| b == b',') {
                let Some((coding, weight)) = member_of(member) else {
                    continue;
                };
                let slot = if coding.eq_ignore_ascii_case(b"identity") {
                    &mut accepted.identity
                } else if coding == b"*" {
                    &mut accepted.any
                } else if coding.eq_ignore_ascii_case(b"x-gzip") {
                    // RFC 9110 §8.4.1.3: a recipient should treat x-gzip as gzip.
                    &mut accepted.by_encoding[Encoding::Gzip.index()]
                } else {
                    match std::str::from_utf8(coding)
                        .ok()
                        .and_then(Encoding::from_token)
                    {
                        Some(encoding) => &mut accepted.by_encoding[encoding.index()],
                        None => continue,
                    }
                };
                // Said twice, the higher counts: a client never means less by repeating.
                *slot = Some(slot.map_or(weight, |w| w.max(weight)));
            }
        }
        accepted
    }

    /// A coding's weight: its own, else the wildcard's, else not acceptable.
    fn weight(&self, encoding: Encoding) -> Weight {
        self.by_encoding[encoding.index()].or(self.any).unwrap_or(0)
    }

    /// Identity's weight when the client gave one. Identity is always acceptable unless
    /// excluded (§12.5.3), but a coding the client names is taken as wanted more than
    /// identity it leaves unweighted: `gzip;q=0.5` alone asks for gzip.
    fn identity_weight(&self) -> Weight {
        self.identity.unwrap_or(0)
    }
}

/// One member: its coding, trimmed, and its weight (1 when no `q` is given); `None` for an
/// empty or malformed member.
fn member_of(member: &[u8]) -> Option<(&[u8], Weight)> {
    let mut parts = member.split(|&b| b == b';');
    let coding = trim(parts.next()?);
    if coding.is_empty() || !coding.iter().all(|&b| is_token_byte(b)) {
        return None;
    }
    let mut weight = FULL;
    for parameter in parts {
        let parameter = trim(parameter);
        let (name, value) = match parameter.iter().position(|&b| b == b'=') {
            Some(at) => (trim(&parameter[..at]), trim(&parameter[at + 1..])),
            None => return None,
        };
        if name.eq_ignore_ascii_case(b"q") {
            weight = parse_qvalue(value)?;
        }
    }
    Some((coding, weight))
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )` (RFC 9110 §12.4.2).
fn parse_qvalue(value: &[u8]) -> Option<Weight> {
    let (whole, fraction) = match value.iter().position(|&b| b == b'.') {
        Some(at) => (&value[..at], &value[at + 1..]),
        None => (value, &[][..]),
    };
    if fraction.len() > 3 || !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths: Weight = 0;
    for position in 0..3 {
        let digit = fraction.get(position).map_or(0, |d| Weight::from(d - b'0'));
        thousandths = thousandths * 10 + digit;
    }
    match whole {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(FULL),
        _ => None,
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes
        .iter()
        .position(|b| !is_space(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |at| at + 1);
    &bytes[start..end]
}

/// RFC 9110 §5.6.2 tchar.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The coding to send, from the client's Accept-Encoding lines and the codings offered in
/// order of preference: the one with the highest q-value above zero, ties going to the
/// earlier offered, and only if the client does not weigh identity higher. No field at all
/// means no compression: RFC 9110 allows any coding then, but old clients that send nothing
/// may not decode one (nginx does the same).
pub fn negotiate<'a>(
    lines: impl Iterator<Item = &'a [u8]>,
    offered: &[Option<Encoding>],
) -> Option<Encoding> {
    let mut lines = lines.peekable();
    lines.peek()?;
    let accepted = Accepted::parse(lines);
    let mut best: Option<(Encoding, Weight)> = None;
    for encoding in offered.iter().flatten() {
        let weight = accepted.weight(*encoding);
        if weight > 0 && best.is_none_or(|(_, w)| weight > w) {
            best = Some((*encoding, weight));
        }
    }
    let (encoding, weight) = best?;
    (weight >= accepted.identity_weight()).then_some(encoding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [Option<Encoding>; 3] = [
        Some(Encoding::Zstd),
        Some(Encoding::Brotli),
        Some(Encoding::Gzip),
    ];

    fn pick(value: &str, offered: &[Option<Encoding>]) -> Option<Encoding> {
        negotiate(std::iter::once(value.as_bytes()), offered)
    }

    #[test]
    fn the_preferred_offered_coding_wins_among_equals() {
        assert_eq!(pick("gzip, deflate, br, zstd", &ALL), Some(Encoding::Zstd));
        assert_eq!(pick("gzip, deflate, br", &ALL), Some(Encoding::Brotli));
        assert_eq!(pick("gzip", &ALL), Some(Encoding::Gzip));
        let gzip_first = [Some(Encoding::Gzip), Some(Encoding::Brotli), None];
        assert_eq!(pick("br, gzip", &gzip_first), Some(Encoding::Gzip));
    }

    #[test]
    fn q_values_choose() {
        assert_eq!(
            pick("zstd;q=0.5, br;q=0.9, gzip;q=0.1", &ALL),
            Some(Encoding::Brotli)
        );
        assert_eq!(pick("zstd;q=0, gzip", &ALL), Some(Encoding::Gzip));
        assert_eq!(pick("br;Q=0.999, gzip;q=1.000", &ALL), Some(Encoding::Gzip));
        assert_eq!(
            pick("gzip ; q = 0.5 , br;q=0.4", &ALL),
            Some(Encoding::Gzip)
        );
    }

    #[test]
    fn identity_only_or_nothing_known_is_not_compressed() {
        assert_eq!(pick("identity", &ALL), None);
        assert_eq!(pick("", &ALL), None);
        assert_eq!(pick("deflate, compress", &ALL), None);
        assert_eq!(negotiate(std::iter::empty(), &ALL), None);
        assert_eq!(pick("gzip", &[Some(Encoding::Brotli), None, None]), None);
    }

    #[test]
    fn the_wildcard_stands_for_codings_not_named() {
        assert_eq!(pick("*", &ALL), Some(Encoding::Zstd));
        assert_eq!(pick("zstd;q=0, *", &ALL), Some(Encoding::Brotli));
        assert_eq!(pick("*;q=0", &ALL), None);
        assert_eq!(pick("*;q=0, gzip", &ALL), Some(Encoding::Gzip));
    }

    #[test]
    fn identity_preferred_to_every_offered_coding_is_kept() {
        assert_eq!(pick("gzip;q=0.5, identity", &ALL), None);
        assert_eq!(
            pick("gzip;q=0.5, identity;q=0.5", &ALL),
            Some(Encoding::Gzip)
        );
        assert_eq!(pick("gzip, identity;q=0", &ALL), Some(Encoding::Gzip));
    }

    #[test]
    fn x_gzip_is_gzip_and_case_does_not_matter() {
        assert_eq!(pick("x-gzip", &ALL), Some(Encoding::Gzip));
        assert_eq!(pick("GZIP, BR", &ALL), Some(Encoding::Brotli));
    }

    #[test]
    fn several_lines_are_one_list() {
        let lines = [&b"gzip;q=0.2"[..], &b"br;q=0.7"[..]];
        assert_eq!(negotiate(lines.into_iter(), &ALL), Some(Encoding::Brotli));
    }

    #[test]
    fn malformed_members_are_skipped() {
        assert_eq!(pick("br;q=2, gzip", &ALL), Some(Encoding::Gzip));
        assert_eq!(pick("br;q=0.1234, gzip;q=0.1", &ALL), Some(Encoding::Gzip));
        assert_eq!(pick("br;q, gzip;q=0.1", &ALL), Some(Encoding::Gzip));
        assert_eq!(pick("b r, gzip;q=0.1", &ALL), Some(Encoding::Gzip));
        assert_eq!(pick(",,, ;q=1, gzip", &ALL), Some(Encoding::Gzip));
        assert_eq!(pick("br;level=5", &ALL), Some(Encoding::Brotli));
    }

    #[test]
    fn qvalues_parse_to_thousandths() {
        assert_eq!(parse_qvalue(b"0"), Some(0));
        assert_eq!(parse_qvalue(b"0."), Some(0));
        assert_eq!(parse_qvalue(b"0.5"), Some(500));
        assert_eq!(parse_qvalue(b"0.005"), Some(5));
        assert_eq!(parse_qvalue(b"1"), Some(1000));
        assert_eq!(parse_qvalue(b"1.000"), Some(1000));
        assert_eq!(parse_qvalue(b"1.001"), None);
        assert_eq!(parse_qvalue(b"-0"), None);
        assert_eq!(parse_qvalue(b""), None);
        assert_eq!(parse_qvalue(b".5"), None);
    }

    proptest! {
        #[test]
        fn no_input_panics_and_the_choice_is_offered(
            lines in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..4),
            nearly in prop::collection::vec(
                prop::sample::select(vec![
                    "gzip", "br", "zstd", "identity", "*", ";", ",", "q=", "0.", "1", "0.9",
                    " ", "\t", "x-gzip", "=", ".",
                ]),
                0..16,
            ),
        ) {
            let near = nearly.concat();
            let mut all: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
            all.push(near.as_bytes());
            let offered = [Some(Encoding::Gzip), None, Some(Encoding::Zstd)];
            if let Some(chosen) = negotiate(all.into_iter(), &offered) {
                prop_assert!(chosen != Encoding::Brotli);
            }
        }
    }
}
