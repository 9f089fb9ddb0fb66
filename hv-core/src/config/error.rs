//! Configuration errors: where in which file, and what was expected. Displayed as
//! `FILE:LINE:COL: MESSAGE`, the form compilers and xl use.
//!
//! It is not a warning channel: unknown keys are reported through `Config::unknown_keys`.

use alloc::string::String;
use core::fmt;

use super::{MAX_DEPTH, MAX_FILE_LEN, MAX_STRING_LEN};

/// A 1-based line and column (columns count characters; a tab is one column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub line: u32,
    pub column: u32,
}

impl Position {
    pub const START: Position = Position { line: 1, column: 1 };
}

/// The longest quoted text kept in an error, so that messages stay one readable line.
const QUOTE_MAX: usize = 32;

/// What the parser found where something else was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// An unquoted word (a key, or a string someone forgot to quote); truncated.
    Word(String),
    Str,
    Num,
    Equals,
    PlusEquals,
    Semicolon,
    Comma,
    OpenBracket,
    CloseBracket,
    EndOfLine,
    EndOfFile,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Word(w) => write!(f, "unquoted word '{w}'"),
            Found::Str => f.write_str("a string"),
            Found::Num => f.write_str("a number"),
            Found::Equals => f.write_str("'='"),
            Found::PlusEquals => f.write_str("'+='"),
            Found::Semicolon => f.write_str("';'"),
            Found::Comma => f.write_str("','"),
            Found::OpenBracket => f.write_str("'['"),
            Found::CloseBracket => f.write_str("']'"),
            Found::EndOfLine => f.write_str("end of line"),
            Found::EndOfFile => f.write_str("end of file"),
        }
    }
}

/// What went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file is longer than `MAX_FILE_LEN` bytes.
    FileTooLarge { len: usize },
    /// A character that starts no token (control characters included).
    UnexpectedChar(char),
    /// One of `+ - . ( ) :` outside a string: xl rejects Python expressions.
    Python(char),
    /// A string without its closing quote on the same line.
    UnterminatedString,
    /// A raw control character (other than tab) inside a string.
    ControlInString(char),
    /// `\` followed by something that is not an escape.
    UnknownEscape(char),
    /// `\x` without a hex digit.
    EmptyHexEscape,
    /// An octal escape above `\377`.
    OctalEscapeRange,
    /// An escape that gives a NUL byte.
    NulInString,
    /// Escapes whose bytes are not UTF-8.
    InvalidUtf8,
    /// A string longer than `MAX_STRING_LEN` bytes.
    StringTooLong,
    /// A malformed number (text truncated).
    InvalidNumber(String),
    /// A number above `u64::MAX`.
    NumberOverflow,
    /// A syntax error.
    Expected {
        expected: &'static str,
        found: Found,
    },
    /// Lists nested deeper than `MAX_DEPTH`.
    TooDeep,
    /// `+=` of a list to a single value or the reverse.
    AppendMismatch { key: String },
    /// A mandatory setting is missing.
    Missing { key: &'static str },
    /// A list where a single value is expected.
    NotSingle { key: String },
    /// A single value where a list is expected.
    NotList { key: String },
    /// Not a number where one is expected (text truncated).
    NotANumber { key: String, found: String },
    /// A number built with `+=`.
    AppendedNumber { key: String },
    /// A number outside its bounds.
    OutOfRange {
        key: &'static str,
        min: u64,
        max: u64,
        found: u64,
    },
    /// An empty string where a name is needed.
    Empty { key: &'static str },
    /// A malformed device specification (DISKSPEC, VIFSPEC) in list `key`.
    BadSpec { key: &'static str, message: String },
    /// A word that is not one of the values `key` takes (text truncated).
    NotAChoice {
        key: &'static str,
        found: String,
        choices: &'static str,
    },
}

impl ErrorKind {
    pub(crate) fn not_a_number(key: &str, text: &str) -> Self {
        ErrorKind::NotANumber {
            key: key.into(),
            found: truncated(text),
        }
    }
}

/// `text` cut to at most `QUOTE_MAX` characters.
pub(crate) fn truncated(text: &str) -> String {
    text.chars().take(QUOTE_MAX).collect()
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::FileTooLarge { len } => {
                write!(
                    f,
                    "file is too large ({len} bytes, the limit is {MAX_FILE_LEN})"
                )
            }
            ErrorKind::UnexpectedChar(c) if c.is_ascii_uppercase() => {
                write!(f, "unexpected character '{c}' (keys are lowercase)")
            }
            ErrorKind::UnexpectedChar(c) => {
                write!(f, "unexpected character '{}'", c.escape_debug())
            }
            ErrorKind::Python(c) => {
                write!(f, "unexpected '{c}' (xl.cfg is not Python: no expressions)")
            }
            ErrorKind::UnterminatedString => {
                f.write_str("unterminated string (strings cannot span lines)")
            }
            ErrorKind::ControlInString(c) => {
                write!(f, "control character '{}' in string", c.escape_debug())
            }
            ErrorKind::UnknownEscape(c) => {
                write!(f, "unknown escape sequence '\\{}'", c.escape_debug())
            }
            ErrorKind::EmptyHexEscape => f.write_str("'\\x' escape without hex digits"),
            ErrorKind::OctalEscapeRange => f.write_str("octal escape above '\\377'"),
            ErrorKind::NulInString => f.write_str("escape gives a NUL byte"),
            ErrorKind::InvalidUtf8 => f.write_str("string escapes do not form valid UTF-8"),
            ErrorKind::StringTooLong => {
                write!(f, "string is longer than {MAX_STRING_LEN} bytes")
            }
            ErrorKind::InvalidNumber(t) => write!(f, "invalid number '{t}'"),
            ErrorKind::NumberOverflow => f.write_str("number does not fit in 64 bits"),
            ErrorKind::Expected { expected, found } => {
                write!(f, "expected {expected}, found {found}")
            }
            ErrorKind::TooDeep => write!(f, "lists nested deeper than {MAX_DEPTH}"),
            ErrorKind::AppendMismatch { key } => {
                write!(
                    f,
                    "can't '+=' a list to a single value or the reverse for '{key}'"
                )
            }
            ErrorKind::Missing { key } => write!(f, "missing mandatory setting '{key}'"),
            ErrorKind::NotSingle { key } => {
                write!(f, "'{key}' is a list but should be a single value")
            }
            ErrorKind::NotList { key } => {
                write!(f, "'{key}' is a single value but should be a list")
            }
            ErrorKind::NotANumber { key, found } => {
                write!(f, "'{key}' should be a number, found {found:?}")
            }
            ErrorKind::AppendedNumber { key } => {
                write!(f, "can't use '+=' with numbers for '{key}'")
            }
            ErrorKind::OutOfRange {
                key,
                min,
                max,
                found,
            } => {
                write!(f, "'{key}' must be between {min} and {max}, found {found}")
            }
            ErrorKind::Empty { key } => write!(f, "'{key}' must not be empty"),
            ErrorKind::BadSpec { key, message } => write!(f, "'{key}': {message}"),
            ErrorKind::NotAChoice {
                key,
                found,
                choices,
            } => write!(f, "'{key}' is '{found}', expected one of {choices}"),
        }
    }
}

/// An error in a configuration file, with its file name and position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub pos: Position,
    pub kind: ErrorKind,
}

impl ConfigError {
    pub(crate) fn new(file: &str, pos: Position, kind: ErrorKind) -> Self {
        Self {
            file: file.into(),
            pos,
            kind,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Position { line, column } = self.pos;
        write!(f, "{}:{line}:{column}: {}", self.file, self.kind)
    }
}
