//! The prompt's line discipline: printable characters are echoed and collected, Backspace and
//! Delete erase one, Ctrl-U the whole line, Ctrl-C abandons it, and CR, LF or CR LF end it.
//! ANSI escape sequences (arrow keys) are swallowed. Lines are bounded; excess is dropped.
//!
//! It is not the command parser and it writes to no device: echo goes to a callback.

use alloc::string::String;

/// The longest line kept, in bytes.
pub const MAX_LINE: usize = 256;

const BACKSPACE: u8 = 0x08;
const DELETE: u8 = 0x7f;
const CTRL_C: u8 = 0x03;
const CTRL_U: u8 = 0x15;
const ESC: u8 = 0x1b;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Text,
    /// After CR: a following LF belongs to the same line end.
    AfterCr,
    /// After ESC.
    Escape,
    /// Inside `ESC [ ...` until its final byte.
    Csi,
}

pub struct LineEditor {
    line: String,
    state: State,
}

impl Default for LineEditor {
    fn default() -> Self {
        Self::new()
    }
}

impl LineEditor {
    pub const fn new() -> Self {
        Self {
            line: String::new(),
            state: State::Text,
        }
    }

    /// The text typed so far.
    pub fn pending(&self) -> &str {
        &self.line
    }

    /// Forgets the current line (when the console is handed to a guest).
    pub fn clear(&mut self) {
        self.line.clear();
        self.state = State::Text;
    }

    /// Takes one input byte, echoing through `echo`; returns the line when it ends.
    pub fn feed(&mut self, byte: u8, echo: &mut impl FnMut(&[u8])) -> Option<String> {
        match (self.state, byte) {
            (State::Escape, b'[') => {
                self.state = State::Csi;
                return None;
            }
            (State::Escape, _) => {
                self.state = State::Text;
                return None;
            }
            (State::Csi, 0x40..=0x7e) => {
                self.state = State::Text;
                return None;
            }
            (State::Csi, _) => return None,
            (State::AfterCr, b'\n') => {
                self.state = State::Text;
                return None;
            }
            _ => self.state = State::Text,
        }
        match byte {
            b'\r' | b'\n' => {
                if byte == b'\r' {
                    self.state = State::AfterCr;
                }
                echo(b"\r\n");
                Some(core::mem::take(&mut self.line))
            }
            BACKSPACE | DELETE => {
                if self.line.pop().is_some() {
                    echo(b"\x08 \x08");
                }
                None
            }
            CTRL_U => {
                for _ in 0..self.line.len() {
                    echo(b"\x08 \x08");
                }
                self.line.clear();
                None
            }
            CTRL_C => {
                echo(b"^C\r\n");
                self.line.clear();
                Some(String::new())
            }
            ESC => {
                self.state = State::Escape;
                None
            }
            0x20..=0x7e => {
                if self.line.len() < MAX_LINE {
                    self.line.push(char::from(byte));
                    echo(&[byte]);
                }
                None
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// Feeds `input`; returns the finished lines and everything echoed.
    fn run(ed: &mut LineEditor, input: &[u8]) -> (Vec<String>, Vec<u8>) {
        let mut echoed = Vec::new();
        let mut lines = Vec::new();
        for &b in input {
            if let Some(l) = ed.feed(b, &mut |e: &[u8]| echoed.extend_from_slice(e)) {
                lines.push(l);
            }
        }
        (lines, echoed)
    }

    #[test]
    fn collects_and_echoes_a_line() {
        let mut ed = LineEditor::new();
        let (lines, echo) = run(&mut ed, b"list\r");
        assert_eq!(lines, ["list"]);
        assert_eq!(echo, b"list\r\n");
        assert_eq!(ed.pending(), "");
    }

    #[test]
    fn crlf_is_one_line_end_and_lf_alone_is_one_too() {
        let mut ed = LineEditor::new();
        let (lines, _) = run(&mut ed, b"a\r\nb\n\nc\r\r");
        assert_eq!(lines, ["a", "b", "", "c", ""]);
    }

    #[test]
    fn erasing() {
        let mut ed = LineEditor::new();
        let (lines, echo) = run(&mut ed, b"lisx\x7ft\r");
        assert_eq!(lines, ["list"]);
        assert_eq!(echo, b"lisx\x08 \x08t\r\n");
        let (lines, _) = run(&mut ed, b"\x08\x08abc\x15top\x08p\r");
        assert_eq!(lines, ["top"]);
        let (lines, echo) = run(&mut ed, b"destroy\x03");
        assert_eq!(lines, [""]);
        assert!(echo.ends_with(b"^C\r\n"));
    }

    #[test]
    fn escape_sequences_and_control_bytes_are_swallowed() {
        let mut ed = LineEditor::new();
        let (lines, echo) = run(&mut ed, b"li\x1b[A\x1b[1;5Cst\x00\x07\r");
        assert_eq!(lines, ["list"]);
        assert_eq!(echo, b"list\r\n");
    }

    #[test]
    fn lines_are_bounded() {
        let mut ed = LineEditor::new();
        let long = [b'x'; MAX_LINE + 50];
        let (_, echo) = run(&mut ed, &long);
        assert_eq!(ed.pending().len(), MAX_LINE);
        assert_eq!(echo.len(), MAX_LINE);
        ed.clear();
        assert_eq!(ed.pending(), "");
    }
}
