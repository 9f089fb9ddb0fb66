//! The `xl.cfg` grammar (`tools/libs/util/libxlu_cfg_y.y`): statements `KEY = VALUE` and
//! `KEY += VALUE` ended by a newline, `;` or the end of the file; values are atoms or lists,
//! newlines allowed inside lists, trailing comma allowed.
//!
//! It is not error recovery: parsing stops at the first error, which names what was expected.

use alloc::vec::Vec;

use super::error::{ConfigError, ErrorKind, Position};
use super::lexer::{Lexer, Token};
use super::{Config, Op, Value, MAX_DEPTH, MAX_FILE_LEN};

/// Parses the text of the configuration file `file` (the name is only used in errors).
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    let mut config = Config::new(file);
    if text.len() > MAX_FILE_LEN {
        let kind = ErrorKind::FileTooLarge { len: text.len() };
        return Err(config.error(Position::START, kind));
    }
    let mut parser = Parser {
        lexer: Lexer::new(file, text),
    };
    loop {
        let (pos, token) = parser.lexer.next_token()?;
        match token {
            Token::Eof => break,
            Token::Newline | Token::Semicolon => {}
            Token::Word(key) => parser.statement(&mut config, key, pos)?,
            other => return Err(parser.expected(pos, "a key", &other)),
        }
    }
    config.set_end(parser.lexer.pos());
    Ok(config)
}

struct Parser<'a> {
    lexer: Lexer<'a>,
}

impl Parser<'_> {
    fn expected(&self, pos: Position, expected: &'static str, found: &Token) -> ConfigError {
        let kind = ErrorKind::Expected {
            expected,
            found: found.found(),
        };
        self.lexer.error(pos, kind)
    }

    /// The rest of a statement whose key was just read.
    fn statement(
        &mut self,
        config: &mut Config,
        key: alloc::string::String,
        key_pos: Position,
    ) -> Result<(), ConfigError> {
        let (pos, token) = self.lexer.next_token()?;
        let (op, after) = match token {
            Token::Equals => (Op::Assign, "a value after '='"),
            Token::PlusEquals => (Op::Append, "a value after '+='"),
            other => return Err(self.expected(pos, "'=' or '+=' after the key", &other)),
        };
        let (pos, token) = self.lexer.next_token()?;
        let value = self.value(pos, token, 0, after)?;
        let (end_pos, end) = self.lexer.next_token()?;
        match end {
            Token::Newline | Token::Semicolon | Token::Eof => {}
            other => {
                return Err(self.expected(end_pos, "end of line or ';' after the value", &other))
            }
        }
        config.store(key, key_pos, op, value, pos)
    }

    /// The value that starts with `token`, inside `depth` lists.
    fn value(
        &mut self,
        pos: Position,
        token: Token,
        depth: usize,
        expected: &'static str,
    ) -> Result<Value, ConfigError> {
        match token {
            Token::Str(s) => Ok(Value::Str(s)),
            Token::Num { value, text } => Ok(Value::Num { value, text }),
            Token::OpenBracket if depth >= MAX_DEPTH => {
                Err(self.lexer.error(pos, ErrorKind::TooDeep))
            }
            Token::OpenBracket => self.list(depth + 1),
            other => Err(self.expected(pos, expected, &other)),
        }
    }

    /// The rest of a list whose `[` was just read.
    fn list(&mut self, depth: usize) -> Result<Value, ConfigError> {
        let mut items = Vec::new();
        loop {
            let (pos, token) = self.skip_newlines()?;
            if token == Token::CloseBracket {
                break;
            }
            items.push(self.value(pos, token, depth, "a value or ']' in the list")?);
            let (pos, token) = self.skip_newlines()?;
            match token {
                Token::Comma => {}
                Token::CloseBracket => break,
                other => return Err(self.expected(pos, "',' or ']' after a list element", &other)),
            }
        }
        Ok(Value::List(items))
    }

    fn skip_newlines(&mut self) -> Result<(Position, Token), ConfigError> {
        loop {
            let (pos, token) = self.lexer.next_token()?;
            if token != Token::Newline {
                return Ok((pos, token));
            }
        }
    }
}
