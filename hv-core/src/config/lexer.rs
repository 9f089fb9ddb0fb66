//! The `xl.cfg` lexer: turns the text into tokens with their positions, decoding string escapes
//! and numbers (`tools/libs/util/libxlu_cfg_l.l`).
//!
//! It is not the grammar: which token may follow which is the parser's business.

use alloc::string::String;
use alloc::vec::Vec;
use core::iter::Peekable;
use core::str::Chars;

use super::error::{truncated, ConfigError, ErrorKind, Found, Position};
use super::MAX_STRING_LEN;

/// One token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Token {
    /// `[a-z][._0-9a-z]*`: a key (or an unquoted word where a value belongs).
    Word(String),
    Str(String),
    Num {
        value: u64,
        text: String,
    },
    Equals,
    PlusEquals,
    Semicolon,
    Comma,
    OpenBracket,
    CloseBracket,
    Newline,
    Eof,
}

impl Token {
    /// How the token reads in an error message.
    pub(crate) fn found(&self) -> Found {
        match self {
            Token::Word(w) => Found::Word(truncated(w)),
            Token::Str(_) => Found::Str,
            Token::Num { .. } => Found::Num,
            Token::Equals => Found::Equals,
            Token::PlusEquals => Found::PlusEquals,
            Token::Semicolon => Found::Semicolon,
            Token::Comma => Found::Comma,
            Token::OpenBracket => Found::OpenBracket,
            Token::CloseBracket => Found::CloseBracket,
            Token::Newline => Found::EndOfLine,
            Token::Eof => Found::EndOfFile,
        }
    }
}

/// Why a number's text is not a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NumberError {
    Invalid,
    Overflow,
}

/// Reads a number as `strtoul(text, NULL, 0)` would, but strictly: `0x` hex, `0`-prefixed
/// octal or decimal, the whole text, no sign, no spaces.
pub(crate) fn parse_number(text: &str) -> Result<u64, NumberError> {
    let (digits, radix) = match text.as_bytes() {
        [b'0', b'x' | b'X', ..] => (&text[2..], 16),
        [b'0', _, ..] => (&text[1..], 8),
        _ => (text, 10),
    };
    if digits.is_empty() {
        return Err(NumberError::Invalid);
    }
    digits.chars().try_fold(0u64, |acc, c| {
        let d = c.to_digit(radix).ok_or(NumberError::Invalid)?;
        acc.checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(u64::from(d)))
            .ok_or(NumberError::Overflow)
    })
}

pub(crate) struct Lexer<'a> {
    file: &'a str,
    chars: Peekable<Chars<'a>>,
    pos: Position,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(file: &'a str, text: &'a str) -> Self {
        Self {
            file,
            chars: text.chars().peekable(),
            pos: Position::START,
        }
    }

    /// The position of the next character.
    pub(crate) fn pos(&self) -> Position {
        self.pos
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.pos.line = self.pos.line.saturating_add(1);
            self.pos.column = 1;
        } else {
            self.pos.column = self.pos.column.saturating_add(1);
        }
        Some(c)
    }

    pub(crate) fn error(&self, pos: Position, kind: ErrorKind) -> ConfigError {
        ConfigError::new(self.file, pos, kind)
    }

    /// Skips blanks and a comment, up to (not including) the end of the line.
    fn skip_blanks(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' | '\r' => {}
                '#' => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                    return;
                }
                _ => return,
            }
            self.bump();
        }
    }

    /// The next token and where it starts.
    pub(crate) fn next_token(&mut self) -> Result<(Position, Token), ConfigError> {
        self.skip_blanks();
        let start = self.pos;
        let Some(c) = self.peek() else {
            return Ok((start, Token::Eof));
        };
        let token = match c {
            '"' | '\'' => Token::Str(self.string()?),
            '0'..='9' => self.number()?,
            'a'..='z' => Token::Word(self.word()),
            '+' => {
                self.bump();
                if self.peek() != Some('=') {
                    return Err(self.error(start, ErrorKind::Python('+')));
                }
                self.bump();
                Token::PlusEquals
            }
            _ => {
                let token = match c {
                    '\n' => Token::Newline,
                    '=' => Token::Equals,
                    ';' => Token::Semicolon,
                    ',' => Token::Comma,
                    '[' => Token::OpenBracket,
                    ']' => Token::CloseBracket,
                    '-' | '.' | '(' | ')' | ':' => {
                        return Err(self.error(start, ErrorKind::Python(c)))
                    }
                    _ => return Err(self.error(start, ErrorKind::UnexpectedChar(c))),
                };
                self.bump();
                token
            }
        };
        Ok((start, token))
    }

    fn word(&mut self) -> String {
        let mut w = String::new();
        while let Some(c) = self.peek() {
            if !matches!(c, 'a'..='z' | '0'..='9' | '.' | '_') {
                break;
            }
            w.push(c);
            self.bump();
        }
        w
    }

    /// A number token. Letters glued to the digits belong to it, so `512M` is one bad number
    /// rather than a number followed by a stray word.
    fn number(&mut self) -> Result<Token, ConfigError> {
        let start = self.pos;
        let mut text = String::new();
        while let Some(c) = self
            .peek()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        {
            text.push(c);
            self.bump();
        }
        match parse_number(&text) {
            Ok(value) => Ok(Token::Num { value, text }),
            Err(NumberError::Overflow) => Err(self.error(start, ErrorKind::NumberOverflow)),
            Err(NumberError::Invalid) => {
                Err(self.error(start, ErrorKind::InvalidNumber(truncated(&text))))
            }
        }
    }

    /// A quoted string, escapes decoded; the opening quote is next.
    fn string(&mut self) -> Result<String, ConfigError> {
        let start = self.pos;
        let quote = self.bump();
        let mut bytes = Vec::new();
        loop {
            let here = self.pos;
            match self.bump() {
                None | Some('\n') => return Err(self.error(start, ErrorKind::UnterminatedString)),
                Some(c) if Some(c) == quote => break,
                Some('\\') => bytes.push(self.escape(start, here)?),
                Some(c) if c.is_control() && c != '\t' => {
                    return Err(self.error(here, ErrorKind::ControlInString(c)))
                }
                Some(c) => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
            if bytes.len() > MAX_STRING_LEN {
                return Err(self.error(start, ErrorKind::StringTooLong));
            }
        }
        String::from_utf8(bytes).map_err(|_| self.error(start, ErrorKind::InvalidUtf8))
    }

    /// The byte of one escape sequence whose `\` (at `at`) was just read, in a string that
    /// starts at `start`. The C escapes, 1 to 3 octal digits, or `\x` and 1 or 2 hex digits.
    fn escape(&mut self, start: Position, at: Position) -> Result<u8, ConfigError> {
        let byte = match self.bump() {
            None | Some('\n') => return Err(self.error(start, ErrorKind::UnterminatedString)),
            Some(c @ ('"' | '\'' | '\\')) => c as u8,
            Some('a') => 0x07,
            Some('b') => 0x08,
            Some('f') => 0x0c,
            Some('n') => b'\n',
            Some('r') => b'\r',
            Some('t') => b'\t',
            Some('v') => 0x0b,
            Some(c @ '0'..='7') => {
                let value = self.digits(c.to_digit(8).unwrap_or(0), 8, 2);
                u8::try_from(value).map_err(|_| self.error(at, ErrorKind::OctalEscapeRange))?
            }
            Some('x') => {
                if !self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                    return Err(self.error(at, ErrorKind::EmptyHexEscape));
                }
                // Two hex digits at most, so the value fits in a byte.
                self.digits(0, 16, 2) as u8
            }
            Some(c) => return Err(self.error(at, ErrorKind::UnknownEscape(c))),
        };
        if byte == 0 {
            return Err(self.error(at, ErrorKind::NulInString));
        }
        Ok(byte)
    }

    /// Accumulates up to `max` more digits of `radix` onto `value`.
    fn digits(&mut self, mut value: u32, radix: u32, max: usize) -> u32 {
        for _ in 0..max {
            let Some(d) = self.peek().and_then(|c| c.to_digit(radix)) else {
                break;
            };
            value = value * radix + d;
            self.bump();
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn tokens(text: &str) -> Result<Vec<Token>, ConfigError> {
        let mut lexer = Lexer::new("t.cfg", text);
        let mut out = vec![];
        loop {
            let (_, t) = lexer.next_token()?;
            if t == Token::Eof {
                return Ok(out);
            }
            out.push(t);
        }
    }

    fn num(value: u64, text: &str) -> Token {
        Token::Num {
            value,
            text: text.into(),
        }
    }

    #[test]
    fn numbers_in_three_bases() {
        assert_eq!(parse_number("0"), Ok(0));
        assert_eq!(parse_number("512"), Ok(512));
        assert_eq!(parse_number("0777"), Ok(0o777));
        assert_eq!(parse_number("0x1F"), Ok(0x1f));
        assert_eq!(parse_number("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(
            parse_number("18446744073709551616"),
            Err(NumberError::Overflow)
        );
        assert_eq!(
            parse_number("0x10000000000000000"),
            Err(NumberError::Overflow)
        );
        for bad in ["", "0x", "08", "12a", "-1", " 1", "1 ", "+1"] {
            assert_eq!(parse_number(bad), Err(NumberError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn punctuation_and_words() {
        let t = tokens("a.b_9 = [1, 0x2];x+=\n").unwrap();
        assert_eq!(
            t,
            vec![
                Token::Word("a.b_9".into()),
                Token::Equals,
                Token::OpenBracket,
                num(1, "1"),
                Token::Comma,
                num(2, "0x2"),
                Token::CloseBracket,
                Token::Semicolon,
                Token::Word("x".into()),
                Token::PlusEquals,
                Token::Newline,
            ]
        );
    }

    #[test]
    fn comments_and_blanks_are_skipped() {
        let t = tokens(" \t# c \"'[ \0\n\r\n# last").unwrap();
        assert_eq!(t, vec![Token::Newline, Token::Newline]);
    }

    #[test]
    fn escapes_decode() {
        let t = tokens(r#""\"\'\\\a\b\f\n\r\t\v" '\101\60x\x41\x4aZ\xc3\xa9' "#).unwrap();
        assert_eq!(
            t,
            vec![
                Token::Str("\"'\\\x07\x08\x0c\n\r\t\x0b".into()),
                Token::Str("A0xAJZ\u{e9}".into()),
            ]
        );
    }

    #[test]
    fn quotes_of_the_other_kind_are_plain() {
        assert_eq!(
            tokens(r#"'a"b' "a'b""#).unwrap(),
            vec![Token::Str("a\"b".into()), Token::Str("a'b".into())]
        );
    }

    #[test]
    fn positions_count_characters() {
        let mut lexer = Lexer::new("t.cfg", "é = 'ü'\n  x");
        assert_eq!(
            lexer.next_token().unwrap_err().pos,
            Position { line: 1, column: 1 }
        );
        let mut lexer = Lexer::new("t.cfg", "'ü' x\n\tyy");
        let mut pos = vec![];
        for _ in 0..4 {
            pos.push(lexer.next_token().unwrap().0);
        }
        let at = |line, column| Position { line, column };
        assert_eq!(pos, vec![at(1, 1), at(1, 5), at(1, 6), at(2, 2)]);
    }
}
