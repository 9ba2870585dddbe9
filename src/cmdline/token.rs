//! Splitting the line into whitespace-separated tokens, with shell-like quotes.
use super::*;

/// One whitespace-separated argument.
pub(super) struct Token<'a> {
    /// As written, quotes included.
    pub(super) raw: &'a str,
    /// With quotes removed.
    pub(super) text: String,
    /// The quote still open at the end of the line, if any.
    pub(super) unterminated: Option<char>,
}

pub(super) fn tokens(line: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut chars = line.char_indices().peekable();
    while let Some(&(start, _)) = chars.peek() {
        if chars.next_if(|&(_, c)| c.is_whitespace()).is_some() {
            continue;
        }
        let mut text = String::new();
        let mut quote = None;
        let mut end = line.len();
        while let Some(&(at, c)) = chars.peek() {
            match quote {
                None if c.is_whitespace() => {
                    end = at;
                    break;
                }
                None if c == '"' || c == '\'' => quote = Some(c),
                Some(q) if c == q => quote = None,
                _ => text.push(c),
            }
            chars.next();
        }
        tokens.push(Token {
            raw: line.get(start..end).unwrap_or_default(),
            text,
            unterminated: quote,
        });
    }
    tokens
}
