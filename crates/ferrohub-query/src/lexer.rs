//! The lexer: query text to tokens, each with the byte offset it starts at.

use crate::error::ParseErrorKind;
use crate::names::{is_word_char, is_word_start};

/// A token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// A keyword or a name, as written.
    Word(String),
    /// A string literal, escapes resolved.
    Str(String),
    /// A number literal (never negative: the parser folds a leading minus).
    Num(serde_json::Number),
    Star,
    Comma,
    Dot,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Slash,
    Percent,
    Eof,
}

impl Tok {
    /// How the token is described in "expected … but found …".
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("'{w}'"),
            Tok::Str(_) => "a string".to_owned(),
            Tok::Num(n) => format!("the number {n}"),
            Tok::Eof => "the end of the query".to_owned(),
            other => format!("'{}'", other.symbol()),
        }
    }

    fn symbol(&self) -> &'static str {
        match self {
            Tok::Star => "*",
            Tok::Comma => ",",
            Tok::Dot => ".",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Eq => "=",
            Tok::Ne => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Slash => "/",
            Tok::Percent => "%",
            Tok::Word(_) | Tok::Str(_) | Tok::Num(_) | Tok::Eof => "",
        }
    }
}

/// A token and the byte offset of its first character.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) at: usize,
}

/// Splits `text` into tokens ending with [`Tok::Eof`]; on error, the error and its offset.
pub(crate) fn lex(text: &str) -> Result<Vec<Token>, (ParseErrorKind, usize)> {
    let mut out: Vec<Token> = Vec::new();
    let mut it = text.char_indices().peekable();
    while let Some(&(at, c)) = it.peek() {
        if c.is_whitespace() {
            it.next();
            continue;
        }
        let after_dot = matches!(out.last(), Some(Token { tok: Tok::Dot, .. }));
        let tok = if is_word_start(c) || (after_dot && is_word_char(c)) {
            // After a dot a segment may start with a digit (`tags.2fa`).
            let mut w = String::new();
            while let Some(&(_, c)) = it.peek() {
                if !is_word_char(c) {
                    break;
                }
                w.push(c);
                it.next();
            }
            Tok::Word(w)
        } else if c.is_ascii_digit() {
            lex_number(text, at, &mut it)?
        } else if c == '\'' || c == '"' {
            it.next();
            Tok::Str(lex_string(c, at, &mut it)?)
        } else {
            it.next();
            let next = it.peek().map(|&(_, c)| c);
            let mut two = |t: Tok| {
                it.next();
                t
            };
            match (c, next) {
                ('!', Some('=')) => two(Tok::Ne),
                ('<', Some('>')) => two(Tok::Ne),
                ('<', Some('=')) => two(Tok::Le),
                ('>', Some('=')) => two(Tok::Ge),
                ('|', Some('|')) => {
                    return Err((
                        ParseErrorKind::unsupported(
                            "String concatenation (||)",
                            Some("Compare the parts separately."),
                        ),
                        at,
                    ));
                }
                ('*', _) => Tok::Star,
                (',', _) => Tok::Comma,
                ('.', _) => Tok::Dot,
                ('(', _) => Tok::LParen,
                (')', _) => Tok::RParen,
                ('[', _) => Tok::LBracket,
                (']', _) => Tok::RBracket,
                ('=', _) => Tok::Eq,
                ('<', _) => Tok::Lt,
                ('>', _) => Tok::Gt,
                ('+', _) => Tok::Plus,
                ('-', _) => Tok::Minus,
                ('/', _) => Tok::Slash,
                ('%', _) => Tok::Percent,
                ('@', _) => {
                    return Err((
                        ParseErrorKind::unsupported(
                            "A query parameter (@name)",
                            Some("Write the value into the query as a constant."),
                        ),
                        at,
                    ));
                }
                ('{', _) => {
                    return Err((
                        ParseErrorKind::unsupported("An object literal ({…})", None),
                        at,
                    ));
                }
                (c, _) => return Err((ParseErrorKind::UnexpectedCharacter(c), at)),
            }
        };
        out.push(Token { tok, at });
    }
    out.push(Token {
        tok: Tok::Eof,
        at: text.len(),
    });
    Ok(out)
}

type Chars<'a> = std::iter::Peekable<std::str::CharIndices<'a>>;

/// A decimal (`12`, `1.5`, `2e-3`) or hexadecimal (`0x1F`) number starting at `start`.
fn lex_number(
    text: &str,
    start: usize,
    it: &mut Chars<'_>,
) -> Result<Tok, (ParseErrorKind, usize)> {
    let invalid = |end: usize| {
        (
            ParseErrorKind::InvalidNumber(text[start..end].to_owned()),
            start,
        )
    };
    let end_of = |it: &mut Chars<'_>| it.peek().map_or(text.len(), |&(i, _)| i);
    let rest = &text[start..];
    if rest.starts_with("0x") || rest.starts_with("0X") {
        it.next();
        it.next();
        while it.peek().is_some_and(|&(_, c)| is_word_char(c)) {
            it.next();
        }
        let end = end_of(it);
        let digits = &text[start + 2..end];
        return u64::from_str_radix(digits, 16)
            .map(|n| Tok::Num(n.into()))
            .map_err(|_| invalid(end));
    }
    let mut is_float = false;
    while it.peek().is_some_and(|&(_, c)| c.is_ascii_digit()) {
        it.next();
    }
    // A fraction only when a digit follows the dot.
    let mut look = it.clone();
    if look.next().is_some_and(|(_, c)| c == '.')
        && look.peek().is_some_and(|&(_, c)| c.is_ascii_digit())
    {
        is_float = true;
        it.next();
        while it.peek().is_some_and(|&(_, c)| c.is_ascii_digit()) {
            it.next();
        }
    }
    if it.peek().is_some_and(|&(_, c)| c == 'e' || c == 'E') {
        is_float = true;
        it.next();
        if it.peek().is_some_and(|&(_, c)| c == '+' || c == '-') {
            it.next();
        }
        if !it.peek().is_some_and(|&(_, c)| c.is_ascii_digit()) {
            return Err(invalid(end_of(it)));
        }
        while it.peek().is_some_and(|&(_, c)| c.is_ascii_digit()) {
            it.next();
        }
    }
    // Letters glued to a number (`12abc`) are a malformed number, not two tokens.
    if it.peek().is_some_and(|&(_, c)| is_word_char(c)) {
        while it.peek().is_some_and(|&(_, c)| is_word_char(c)) {
            it.next();
        }
        return Err(invalid(end_of(it)));
    }
    let end = end_of(it);
    let lexeme = &text[start..end];
    if !is_float && let Ok(n) = lexeme.parse::<u64>() {
        return Ok(Tok::Num(n.into()));
    }
    lexeme
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Tok::Num)
        .ok_or_else(|| invalid(end))
}

/// The rest of a string literal opened by `quote` at `start`.
fn lex_string(
    quote: char,
    start: usize,
    it: &mut Chars<'_>,
) -> Result<String, (ParseErrorKind, usize)> {
    let mut s = String::new();
    loop {
        let Some((at, c)) = it.next() else {
            return Err((ParseErrorKind::UnterminatedString, start));
        };
        if c == quote {
            return Ok(s);
        }
        if c != '\\' {
            s.push(c);
            continue;
        }
        let Some((_, e)) = it.next() else {
            return Err((ParseErrorKind::UnterminatedString, start));
        };
        let plain = match e {
            '\'' => '\'',
            '"' => '"',
            '\\' => '\\',
            '/' => '/',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => {
                s.push(lex_unicode_escape(at, it)?);
                continue;
            }
            other => return Err((ParseErrorKind::InvalidEscape(format!("\\{other}")), at)),
        };
        s.push(plain);
    }
}

/// The character of a `\uXXXX` escape (whose backslash is at `at`), including a UTF-16
/// surrogate pair written as two escapes.
fn lex_unicode_escape(at: usize, it: &mut Chars<'_>) -> Result<char, (ParseErrorKind, usize)> {
    fn four_hex(it: &mut Chars<'_>) -> Result<u32, String> {
        let mut text = String::new();
        for _ in 0..4 {
            match it.peek() {
                Some(&(_, c)) if c.is_ascii_hexdigit() => {
                    text.push(c);
                    it.next();
                }
                _ => return Err(text),
            }
        }
        u32::from_str_radix(&text, 16).map_err(|_| text)
    }
    let bad = |text: String| (ParseErrorKind::InvalidEscape(format!("\\u{text}")), at);
    let hi = four_hex(it).map_err(bad)?;
    if !(0xD800..0xDC00).contains(&hi) {
        return char::from_u32(hi).ok_or_else(|| bad(format!("{hi:04x}")));
    }
    // A high surrogate must be followed by `\u` and a low surrogate.
    let mut look = it.clone();
    if look.next().map(|(_, c)| c) == Some('\\') && look.next().map(|(_, c)| c) == Some('u') {
        *it = look;
        let lo = four_hex(it).map_err(bad)?;
        if (0xDC00..0xE000).contains(&lo) {
            let code = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
            return char::from_u32(code).ok_or_else(|| bad(format!("{hi:04x}")));
        }
    }
    Err(bad(format!("{hi:04x}")))
}
