//! `redirect_https`: a listener that answers every request with a 308 to a URL built from a
//! template, `{host}` being the request's host without its port and `{path}` its path and query.

/// A parsed `redirect_https` template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedirectTemplate(Vec<Piece>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Host,
    Path,
}

impl RedirectTemplate {
    pub fn parse(template: &str) -> Result<Self, String> {
        if !template.starts_with("https://") && !template.starts_with("http://") {
            return Err(format!(
                "redirect template {template:?} must start with https:// (e.g. \"https://{{host}}:8443{{path}}\")"
            ));
        }
        let mut pieces = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .map(|c| open + c)
                .ok_or_else(|| format!("unclosed '{{' in redirect template {template:?}"))?;
            pieces.push(match &rest[open + 1..close] {
                "host" => Piece::Host,
                "path" => Piece::Path,
                other => {
                    return Err(format!(
                        "unknown placeholder {{{other}}} in redirect template {template:?}; use {{host}} and {{path}}"
                    ));
                }
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Self(pieces))
    }

    /// The Location for a request to `host` (without its port) and `path_and_query`.
    pub fn location(&self, host: &str, path_and_query: &str) -> String {
        let mut location = String::with_capacity(64);
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => location.push_str(text),
                Piece::Host => location.push_str(host),
                Piece::Path => location.push_str(path_and_query),
            }
        }
        location
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_path_fill_the_template_and_the_path_keeps_its_query() {
        let template = RedirectTemplate::parse("https://{host}:8443{path}").unwrap();
        assert_eq!(
            template.location("shop.example", "/a/b?c=1"),
            "https://shop.example:8443/a/b?c=1"
        );
        assert_eq!(template.location("[::1]", "/"), "https://[::1]:8443/");
    }

    #[test]
    fn bad_templates_are_rejected() {
        assert!(RedirectTemplate::parse("{host}{path}").is_err());
        assert!(RedirectTemplate::parse("https://{host").is_err());
        assert!(RedirectTemplate::parse("https://{hostname}/").is_err());
        assert_eq!(
            RedirectTemplate::parse("https://example.com/")
                .unwrap()
                .location("x", "/y"),
            "https://example.com/"
        );
    }
}
