//! VM configuration files in Xen's `xl.cfg` syntax (`docs/man/xl.cfg.5.pod.in`, grammar in
//! `tools/libs/util/libxlu_cfg_{l.l,y.y}`): the generic layer (`parse` gives an ordered
//! [`Config`] of settings) and the typed layer ([`VmConfig`], the settings this monitor uses).
//!
//! It is not a Python evaluator (Python-isms are rejected, as in xl) and it does not know every
//! xl key: unknown keys are kept so the caller can warn about them ([`Config::unknown_keys`]).
//!
//! Grammar decisions, all following xl unless stated:
//! - the last assignment of a key wins; settings keep the order of their first assignment;
//! - `KEY += VALUE` concatenates two single values (as strings) or appends a list to a list;
//!   mixing a list and a single value is an error. On a key not yet set it behaves like `=`
//!   (Xen's `xlu__cfg_set_store` does the same). A value built with `+=` cannot be read as a
//!   number ("can't use += with numbers", as `xlu_cfg_get_bounded_long`);
//! - atoms are strings: a quoted `"512"` reads as a number and an unquoted `512` as a string;
//! - limits against hostile input: [`MAX_FILE_LEN`], [`MAX_STRING_LEN`], [`MAX_DEPTH`].

pub mod cpulist;
mod devices;
mod error;
mod lexer;
mod lifecycle;
mod parser;
mod vm;

#[cfg(test)]
mod tests;

pub use devices::{DiskSpec, DiskTarget, VifSpec};
pub use error::{ConfigError, ErrorKind, Found, Position};
pub use lifecycle::{Action, Lifecycle};
pub use parser::parse;
pub use vm::{parse_vm, KernelType, VmConfig};

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

/// Largest accepted configuration file, in bytes.
pub const MAX_FILE_LEN: usize = 1 << 20;
/// Longest accepted string value, in bytes after escapes are decoded and `+=` is applied.
pub const MAX_STRING_LEN: usize = 16 * 1024;
/// Deepest accepted nesting of lists (`[[...]]` is depth 2).
pub const MAX_DEPTH: usize = 16;

/// One value: xl's atoms (strings and numbers) and lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A quoted string, escapes decoded.
    Str(String),
    /// An unquoted number, with its text as written (xl stores atoms as strings).
    Num { value: u64, text: String },
    /// A list, possibly nested or heterogeneous.
    List(Vec<Value>),
}

impl Value {
    /// The text of an atom (a number as written); `None` for a list.
    pub fn as_atom(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Num { text, .. } => Some(text),
            Value::List(_) => None,
        }
    }

    /// The numeric value of an atom, a string included if it reads as a number.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Num { value, .. } => Some(*value),
            Value::Str(s) => lexer::parse_number(s).ok(),
            Value::List(_) => None,
        }
    }
}

/// One effective setting: the key, its value and where both were written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    /// Position of the key in its latest `=` or `+=` statement.
    pub key_pos: Position,
    pub value: Value,
    /// Position of the value in its latest `=` or `+=` statement.
    pub pos: Position,
    /// The latest statement for this key was `+=`.
    pub appended: bool,
}

/// How a statement combines its value with an earlier setting of the same key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Assign,
    Append,
}

/// A parsed configuration file: the effective settings, in order of first assignment.
#[derive(Clone, Debug)]
pub struct Config {
    file: String,
    settings: Vec<Setting>,
    index: BTreeMap<String, usize>,
    end: Position,
}

impl Config {
    pub(crate) fn new(file: &str) -> Self {
        Self {
            file: String::from(file),
            settings: Vec::new(),
            index: BTreeMap::new(),
            end: Position::START,
        }
    }

    /// The file name given to [`parse`], used in every error.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Every effective setting, in order of first assignment.
    pub fn settings(&self) -> &[Setting] {
        &self.settings
    }

    /// The setting of `key`, if any.
    pub fn setting(&self, key: &str) -> Option<&Setting> {
        self.index.get(key).and_then(|&i| self.settings.get(i))
    }

    /// The value of `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.setting(key).map(|s| &s.value)
    }

    /// `key` as a single value (a number gives its text); an error if it is a list.
    pub fn get_string(&self, key: &str) -> Result<Option<&str>, ConfigError> {
        let Some(set) = self.setting(key) else {
            return Ok(None);
        };
        match set.value.as_atom() {
            Some(s) => Ok(Some(s)),
            None => Err(self.error(set.pos, ErrorKind::NotSingle { key: key.into() })),
        }
    }

    /// `key` as a number (decimal, `0` octal or `0x` hex, quoted or not).
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        let Some(set) = self.setting(key) else {
            return Ok(None);
        };
        if set.appended {
            return Err(self.error(set.pos, ErrorKind::AppendedNumber { key: key.into() }));
        }
        let Some(text) = set.value.as_atom() else {
            return Err(self.error(set.pos, ErrorKind::NotSingle { key: key.into() }));
        };
        match set.value.as_u64() {
            Some(n) => Ok(Some(n)),
            None => Err(self.error(set.pos, ErrorKind::not_a_number(key, text))),
        }
    }

    /// `key` as a list; an error if it is a single value.
    pub fn get_list(&self, key: &str) -> Result<Option<&[Value]>, ConfigError> {
        let Some(set) = self.setting(key) else {
            return Ok(None);
        };
        match &set.value {
            Value::List(items) => Ok(Some(items)),
            _ => Err(self.error(set.pos, ErrorKind::NotList { key: key.into() })),
        }
    }

    /// The settings whose key is not in `known`, for the caller to warn about (xl ignores
    /// unknown keys).
    pub fn unknown_keys<'a>(&'a self, known: &'a [&'a str]) -> impl Iterator<Item = &'a Setting> {
        self.settings
            .iter()
            .filter(move |s| !known.contains(&s.key.as_str()))
    }

    /// The position just past the last character of the file.
    pub fn end(&self) -> Position {
        self.end
    }

    pub(crate) fn error(&self, pos: Position, kind: ErrorKind) -> ConfigError {
        ConfigError::new(&self.file, pos, kind)
    }

    pub(crate) fn set_end(&mut self, end: Position) {
        self.end = end;
    }

    /// Records one `KEY = VALUE` or `KEY += VALUE` statement.
    pub(crate) fn store(
        &mut self,
        key: String,
        key_pos: Position,
        op: Op,
        value: Value,
        pos: Position,
    ) -> Result<(), ConfigError> {
        let appended = op == Op::Append;
        let Some(set) = self.index.get(&key).and_then(|&i| self.settings.get_mut(i)) else {
            self.index.insert(key.clone(), self.settings.len());
            self.settings.push(Setting {
                key,
                key_pos,
                value,
                pos,
                appended,
            });
            return Ok(());
        };
        let value = match op {
            Op::Assign => value,
            // Taking the old value makes a run of appends linear, not quadratic.
            Op::Append => append(
                &key,
                core::mem::replace(&mut set.value, Value::List(Vec::new())),
                value,
            )
            .map_err(|kind| ConfigError::new(&self.file, pos, kind))?,
        };
        *set = Setting {
            key,
            key_pos,
            value,
            pos,
            appended,
        };
        Ok(())
    }
}

/// `old` with `new` appended: two atoms concatenate as strings, two lists join.
fn append(key: &str, old: Value, new: Value) -> Result<Value, ErrorKind> {
    match (old, new) {
        (Value::List(mut items), Value::List(more)) => {
            items.extend(more);
            Ok(Value::List(items))
        }
        (
            Value::Str(mut s) | Value::Num { text: mut s, .. },
            Value::Str(more) | Value::Num { text: more, .. },
        ) => {
            s.push_str(&more);
            if s.len() > MAX_STRING_LEN {
                return Err(ErrorKind::StringTooLong);
            }
            Ok(Value::Str(s))
        }
        _ => Err(ErrorKind::AppendMismatch { key: key.into() }),
    }
}
