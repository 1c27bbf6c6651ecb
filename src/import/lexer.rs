//! nginx's config syntax as tokens: words (bare or quoted, with `\` escapes and `${var}`
//! forms), `;`, `{`, `}`, with `#` comments skipped. Every token carries its line.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// A directive name or argument, escapes resolved. `quoted` says it was in quotes (an
    /// empty or space-holding argument is only possible quoted).
    Word {
        text: String,
        quoted: bool,
    },
    Semicolon,
    Open,
    Close,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub token: Token,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for LexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.line, self.message)
    }
}

/// Splits `text` into tokens, or names the line of the first thing nginx would refuse
/// (an unterminated quote or `${`).
pub fn lex(text: &str) -> Result<Vec<Located>, LexError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut line = 1;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            ';' => {
                tokens.push(Located {
                    token: Token::Semicolon,
                    line,
                });
                i += 1;
            }
            '{' => {
                tokens.push(Located {
                    token: Token::Open,
                    line,
                });
                i += 1;
            }
            '}' => {
                tokens.push(Located {
                    token: Token::Close,
                    line,
                });
                i += 1;
            }
            '"' | '\'' => {
                let start_line = line;
                let quote = c;
                i += 1;
                let mut text = String::new();
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err(LexError {
                            line: start_line,
                            message: format!("unterminated {quote} string"),
                        });
                    };
                    i += 1;
                    match c {
                        '\\' => match chars.get(i) {
                            Some(&next) => {
                                i += 1;
                                if next == '\n' {
                                    line += 1;
                                }
                                text.push_str(&unescape(next, quote));
                            }
                            None => continue,
                        },
                        c if c == quote => break,
                        '\n' => {
                            line += 1;
                            text.push('\n');
                        }
                        c => text.push(c),
                    }
                }
                // nginx wants a separator after a closing quote.
                if let Some(&next) = chars.get(i)
                    && !(next.is_whitespace() || matches!(next, ';' | '{' | '}'))
                {
                    return Err(LexError {
                        line,
                        message: format!("unexpected {next:?} after a quoted string"),
                    });
                }
                tokens.push(Located {
                    token: Token::Word { text, quoted: true },
                    line: start_line,
                });
            }
            _ => {
                let start_line = line;
                let mut text = String::new();
                while let Some(&c) = chars.get(i) {
                    if c.is_whitespace() || matches!(c, ';' | '{' | '}') {
                        break;
                    }
                    if c == '\\' {
                        i += 1;
                        if let Some(&next) = chars.get(i) {
                            if next == '\n' {
                                line += 1;
                            }
                            // Outside quotes nginx keeps the backslash except before a quote,
                            // a backslash or a separator (regexes keep their escapes).
                            if matches!(next, '"' | '\'' | '\\' | ';' | '{' | '}' | ' ') {
                                text.push(next);
                            } else {
                                text.push('\\');
                                text.push(next);
                            }
                            i += 1;
                        }
                        continue;
                    }
                    if c == '$' && chars.get(i + 1) == Some(&'{') {
                        // `${name}` stays in the word, braces and all.
                        let Some(close) = chars[i..].iter().position(|&c| c == '}') else {
                            return Err(LexError {
                                line,
                                message: "unterminated \"${\"".into(),
                            });
                        };
                        if chars[i..i + close].contains(&'\n') {
                            return Err(LexError {
                                line,
                                message: "unterminated \"${\"".into(),
                            });
                        }
                        text.extend(&chars[i..=i + close]);
                        i += close + 1;
                        continue;
                    }
                    text.push(c);
                    i += 1;
                }
                tokens.push(Located {
                    token: Token::Word {
                        text,
                        quoted: false,
                    },
                    line: start_line,
                });
            }
        }
    }
    Ok(tokens)
}

/// A backslash escape inside quotes, as nginx reads it.
fn unescape(next: char, quote: char) -> String {
    match next {
        'n' => "\n".into(),
        't' => "\t".into(),
        'r' => "\r".into(),
        '\\' => "\\".into(),
        c if c == quote => c.to_string(),
        '"' | '\'' => next.to_string(),
        // Anything else keeps its backslash (regexes such as "\.php$").
        c => format!("\\{c}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        lex(text)
            .unwrap()
            .into_iter()
            .map(|t| match t.token {
                Token::Word { text, .. } => text,
                Token::Semicolon => ";".into(),
                Token::Open => "{".into(),
                Token::Close => "}".into(),
            })
            .collect()
    }

    #[test]
    fn directives_blocks_and_comments() {
        assert_eq!(
            words("server { # a comment\n listen 80; }\n"),
            ["server", "{", "listen", "80", ";", "}"]
        );
    }

    #[test]
    fn quoted_strings_with_escapes() {
        assert_eq!(
            words(r#"add_header X "a \"b\" c" ; return 200 'it\'s\n';"#),
            [
                "add_header",
                "X",
                "a \"b\" c",
                ";",
                "return",
                "200",
                "it's\n",
                ";"
            ]
        );
        assert_eq!(words(r#"x "";"#), ["x", "", ";"]);
    }

    #[test]
    fn regex_escapes_and_variables_kept() {
        assert_eq!(
            words(r"location ~ \.php$ { set $a ${host}x; }"),
            [
                "location", "~", r"\.php$", "{", "set", "$a", "${host}x", ";", "}"
            ]
        );
        // A regex with braces must be quoted in nginx; quoted it stays whole.
        assert_eq!(
            words(r#"location ~ "^/a{2}$" {}"#),
            ["location", "~", "^/a{2}$", "{", "}"]
        );
    }

    #[test]
    fn lines_are_counted() {
        let tokens = lex("a;\n\n b \"x\ny\";\nc;").unwrap();
        let lines: Vec<usize> = tokens.iter().map(|t| t.line).collect();
        assert_eq!(lines, [1, 1, 3, 3, 4, 5, 5]);
    }

    #[test]
    fn unterminated_quote_names_its_line() {
        let err = lex("a;\nb \"open;\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("unterminated"));
        assert!(lex("x ${host").is_err());
    }
}
