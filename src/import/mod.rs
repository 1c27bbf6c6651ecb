//! `gatehouse import nginx FILE`: an nginx config translated into a gatehouse config.
//!
//! `lexer` and `parser` read nginx's syntax (with `include`), `translate` maps directives to
//! gatehouse keys and reports what has no equivalent, `emit` writes the TOML. A tool at the
//! top, beside `main`: it depends only on `config`, for its vocabulary (sizes, durations).

pub mod emit;
pub mod lexer;
pub mod parser;
pub mod translate;

pub use parser::{Loc, ParseError};
pub use translate::{Report, Translation};

use std::path::Path;

/// Reads `path` (and what it includes) and translates it.
pub fn nginx(path: &Path) -> Result<Translation, ParseError> {
    let tree = parser::parse_file(&parser::Disk, path)?;
    Ok(translate::Translator::new(path).translate(&tree))
}

/// Translates nginx config text held in memory (`path` names it in reports and anchors
/// relative paths).
pub fn nginx_str(path: &Path, text: &str) -> Result<Translation, ParseError> {
    struct One<'a>(&'a Path, &'a str);
    impl parser::Source for One<'_> {
        fn read(&self, p: &Path) -> Result<String, String> {
            if p == self.0 {
                Ok(self.1.to_owned())
            } else {
                parser::Disk.read(p)
            }
        }
        fn glob(&self, pattern: &Path) -> Result<Vec<std::path::PathBuf>, String> {
            parser::Disk.glob(pattern)
        }
    }
    let tree = parser::parse_file(&One(path, text), path)?;
    Ok(translate::Translator::new(path).translate(&tree))
}
