//! What a config lacks where part of its file did not parse, so that checks of what did parse
//! do not report references to those parts as errors of their own.

use std::collections::BTreeSet;

/// What `Config` lacks because part of the file did not parse: entries that failed are left
/// out, yet they are in the file, so what refers to them is not an error of its own, and the
/// entries that did parse keep their place in the file.
#[derive(Default)]
pub(super) struct Gaps {
    pub listeners: Unparsed,
    pub upstreams: Unparsed,
    pub caches: Unparsed,
    pub rate_limits: Unparsed,
    pub compressions: Unparsed,
    pub cors: Unparsed,
    pub forward_auths: Unparsed,
    pub basic_auths: Unparsed,
    pub jwts: Unparsed,
    /// The file position of each parsed `[[listener]]`, in order.
    pub listener_at: Vec<usize>,
    /// The file position of each parsed `[[route]]`, in order.
    pub route_at: Vec<usize>,
}

/// The names of the entries of one kind that did not parse.
#[derive(Default)]
pub(super) struct Unparsed {
    pub names: BTreeSet<String>,
    /// Some entry failed without a name that can be read (or the whole section is malformed):
    /// any name may be meant, so references are not checked.
    pub unnamed: bool,
}

impl Unparsed {
    /// Whether a reference to `name` may point at an entry that did not parse.
    pub fn may_be(&self, name: &str) -> bool {
        self.unnamed || self.names.contains(name)
    }

    pub fn any(&self) -> bool {
        self.unnamed || !self.names.is_empty()
    }
}
