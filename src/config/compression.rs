//! `[compression.NAME]`: response compression that routes name (nginx's `gzip on;
//! gzip_types ...; gzip_min_length ...; gzip_comp_level ...`, with brotli and zstd beside
//! gzip). The values are checked here; `compress` holds what they compile to.

use serde::Deserialize;
use toml::Spanned;

use super::ByteSize;
use crate::compress::{Encoding, TypeMatcher};

/// One named compression setting; routes name it in `compression = "NAME"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    /// Media types compressed: `"type/subtype"` or `"type/*"` (nginx's `gzip_types`).
    pub types: Spanned<Vec<Spanned<String>>>,
    /// Responses whose Content-Length is below this stay as they are (nginx's
    /// `gzip_min_length`); a streamed response of unknown length is compressed.
    pub min_length: ByteSize,
    /// The codings offered, best first: `"zstd"`, `"br"`, `"gzip"`. Of those a client takes
    /// with the highest q-value, the first listed is sent.
    pub encodings: Spanned<Vec<Spanned<String>>>,
    /// gzip's level, 1-9 (nginx's `gzip_comp_level`, whose default is 1 too).
    pub gzip_level: Spanned<u32>,
    /// brotli's quality, 0-11 (4 is fast enough to do on the fly; 11 is for static files).
    pub brotli_level: Spanned<u32>,
    /// zstd's level, 1-19 (3 is zstd's own default).
    pub zstd_level: Spanned<u32>,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        let strings = |items: &[&str]| {
            Spanned::new(
                0..0,
                items
                    .iter()
                    .map(|s| Spanned::new(0..0, (*s).to_owned()))
                    .collect(),
            )
        };
        Self {
            types: strings(&[
                "text/*",
                "application/json",
                "application/javascript",
                "application/xml",
                "image/svg+xml",
            ]),
            min_length: ByteSize(256),
            encodings: strings(&["zstd", "br", "gzip"]),
            gzip_level: Spanned::new(0..0, 1),
            brotli_level: Spanned::new(0..0, 4),
            zstd_level: Spanned::new(0..0, 3),
        }
    }
}

impl CompressionConfig {
    /// The configured codings in order; unknown names are left out (validation reports them).
    pub fn encodings(&self) -> Vec<Encoding> {
        let mut offered = Vec::new();
        for name in self.encodings.get_ref() {
            if let Some(encoding) = Encoding::from_token(name.get_ref())
                && !offered.contains(&encoding)
            {
                offered.push(encoding);
            }
        }
        offered
    }

    pub fn level(&self, encoding: Encoding) -> u32 {
        *match encoding {
            Encoding::Gzip => &self.gzip_level,
            Encoding::Brotli => &self.brotli_level,
            Encoding::Zstd => &self.zstd_level,
        }
        .get_ref()
    }

    pub fn level_field(encoding: Encoding) -> &'static str {
        match encoding {
            Encoding::Gzip => "gzip_level",
            Encoding::Brotli => "brotli_level",
            Encoding::Zstd => "zstd_level",
        }
    }

    pub fn type_matcher(&self) -> Result<TypeMatcher, String> {
        TypeMatcher::new(self.types.get_ref().iter().map(|t| t.get_ref().as_str()))
    }

    /// Each problem with its place (a span inside the table) and the key it is under.
    pub(super) fn problems(&self) -> Vec<(std::ops::Range<usize>, &'static str, String)> {
        let mut problems = Vec::new();
        if self.types.get_ref().is_empty() {
            problems.push((
                self.types.span(),
                "types",
                "must list at least one type".to_owned(),
            ));
        }
        for pattern in self.types.get_ref() {
            if let Err(message) = TypeMatcher::new([pattern.get_ref().as_str()]) {
                problems.push((pattern.span(), "types", message));
            }
        }
        if self.encodings.get_ref().is_empty() {
            problems.push((
                self.encodings.span(),
                "encodings",
                "must list at least one of \"zstd\", \"br\", \"gzip\"".to_owned(),
            ));
        }
        let mut seen = Vec::new();
        for name in self.encodings.get_ref() {
            match Encoding::from_token(name.get_ref()) {
                None => problems.push((
                    name.span(),
                    "encodings",
                    format!(
                        "unknown encoding {:?}; expected \"zstd\", \"br\" or \"gzip\"",
                        name.get_ref()
                    ),
                )),
                Some(encoding) if seen.contains(&encoding) => problems.push((
                    name.span(),
                    "encodings",
                    format!("{:?} is listed twice", name.get_ref()),
                )),
                Some(encoding) => seen.push(encoding),
            }
        }
        for encoding in Encoding::ALL {
            let field = match encoding {
                Encoding::Gzip => &self.gzip_level,
                Encoding::Brotli => &self.brotli_level,
                Encoding::Zstd => &self.zstd_level,
            };
            let levels = encoding.levels();
            if !levels.contains(field.get_ref()) {
                problems.push((
                    field.span(),
                    Self::level_field(encoding),
                    format!("must be between {} and {}", levels.start(), levels.end()),
                ));
            }
        }
        problems
    }
}
