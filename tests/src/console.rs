//! What an emulator prints: a byte stream filled by a reader thread, searched while it grows.
//! Not here: the emulator process itself (see `machine`).

use std::io::Read;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Instant;

/// A growing copy of one output stream of a child process.
pub(crate) struct Stream {
    state: Mutex<State>,
    grown: Condvar,
}

struct State {
    bytes: Vec<u8>,
    /// End of file (or a read error): the process has exited or closed the stream.
    closed: bool,
}

/// Why a wait on a stream ended without a match.
pub(crate) enum Missed {
    TimedOut,
    Closed,
}

impl Stream {
    /// Starts a thread copying `source` into a new stream until end of file.
    pub(crate) fn capture(mut source: impl Read + Send + 'static) -> (Arc<Stream>, JoinHandle<()>) {
        let stream = Arc::new(Stream {
            state: Mutex::new(State {
                bytes: Vec::new(),
                closed: false,
            }),
            grown: Condvar::new(),
        });
        let writer = Arc::clone(&stream);
        let reader = thread::spawn(move || {
            let mut buffer = [0; 4096];
            loop {
                let read = source.read(&mut buffer);
                let mut state = writer.lock();
                match read {
                    Ok(0) | Err(_) => state.closed = true,
                    Ok(n) => state.bytes.extend_from_slice(&buffer[..n]),
                }
                let closed = state.closed;
                drop(state);
                writer.grown.notify_all();
                if closed {
                    break;
                }
            }
        });
        (stream, reader)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the bytes intact; keep using them.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The bytes in `from..to` read so far, as text (invalid UTF-8 replaced).
    pub(crate) fn text_between(&self, from: usize, to: usize) -> String {
        let state = self.lock();
        let to = to.min(state.bytes.len());
        String::from_utf8_lossy(&state.bytes[from.min(to)..to]).into_owned()
    }

    /// The source has ended (end of file or a read error).
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Everything read so far, as text (invalid UTF-8 replaced).
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.lock().bytes).into_owned()
    }

    /// Waits until `matcher` finds something in the bytes read so far, or the deadline passes,
    /// or the stream closes without a match.
    pub(crate) fn wait<T>(
        &self,
        deadline: Instant,
        mut matcher: impl FnMut(&[u8]) -> Option<T>,
    ) -> Result<T, Missed> {
        let mut state = self.lock();
        loop {
            if let Some(found) = matcher(&state.bytes) {
                return Ok(found);
            }
            if state.closed {
                return Err(Missed::Closed);
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Err(Missed::TimedOut);
            };
            state = self
                .grown
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

/// Position of the first `needle` in `haystack` at or after `from`.
pub(crate) fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let rest = haystack.get(from..)?;
    if needle.is_empty() {
        return Some(from);
    }
    rest.windows(needle.len())
        .position(|window| window == needle)
        .map(|at| from + at)
}

/// The complete line (ended by `\n`) holding the first `needle` at or after `from`: its text
/// without the line break, and the position just after the `\n`. None while that line is
/// still incomplete.
pub(crate) fn find_line(haystack: &[u8], needle: &[u8], from: usize) -> Option<(String, usize)> {
    let at = find(haystack, needle, from)?;
    let start = haystack[..at]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |nl| nl + 1);
    let end = at + haystack[at..].iter().position(|&b| b == b'\n')?;
    let line = String::from_utf8_lossy(&haystack[start..end]);
    Some((line.trim_end_matches('\r').to_owned(), end + 1))
}

/// The last `count` lines of `text`, each prefixed by two spaces, for error messages.
pub fn tail_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let first = lines.len().saturating_sub(count);
    lines[first..]
        .iter()
        .map(|line| format!("  {}\n", line.trim_end_matches('\r')))
        .collect()
}

/// The probe's result lines in `text`: each line's part from `PROBE: ` on, without trailing
/// white space (the monitor may put its own text before a guest's line on the same row).
pub fn probe_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|line| line.find("PROBE: ").map(|at| line[at..].trim_end()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::time::Duration;

    #[test]
    fn tail_keeps_the_last_lines_without_carriage_returns() {
        assert_eq!(tail_lines("a\r\nb\r\nc\r\n", 2), "  b\n  c\n");
        assert_eq!(tail_lines("only", 40), "  only\n");
        assert_eq!(tail_lines("", 3), "");
        assert_eq!(tail_lines("x\ny", 0), "");
    }

    #[test]
    fn find_starts_at_the_cursor() {
        let text = b"ab ab ab";
        assert_eq!(find(text, b"ab", 0), Some(0));
        assert_eq!(find(text, b"ab", 1), Some(3));
        assert_eq!(find(text, b"ab", 7), None);
        assert_eq!(find(text, b"ab", 100), None);
        assert_eq!(find(text, b"", 8), Some(8));
    }

    #[test]
    fn find_line_returns_whole_complete_lines() {
        let text = b"hv: x\r\nHVTEST: flags\t: fpu hypervisor\r\nnext";
        let (line, after) = find_line(text, b"HVTEST: flags", 0).unwrap();
        assert_eq!(line, "HVTEST: flags\t: fpu hypervisor");
        assert_eq!(&text[after..], b"next");
        assert_eq!(
            find_line(text, b"next", 0),
            None,
            "an unterminated line is not complete"
        );
        assert_eq!(find_line(text, b"hv: x", after), None);
    }

    #[test]
    fn probe_lines_are_cut_at_the_prefix() {
        let text = "boot\nPROBE: a: fine ok \r\nhv: note PROBE: b: FAIL (x)\nPROBE: done\n";
        assert_eq!(
            probe_lines(text),
            ["PROBE: a: fine ok", "PROBE: b: FAIL (x)", "PROBE: done"]
        );
    }

    #[test]
    fn wait_sees_data_then_end_of_file() {
        let (stream, reader) = Stream::capture(Cursor::new(b"hello world".to_vec()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let found = stream.wait(deadline, |bytes| find(bytes, b"world", 0));
        assert_eq!(found.ok(), Some(6));
        let missing = stream.wait(deadline, |bytes| find(bytes, b"absent", 0));
        assert!(matches!(missing, Err(Missed::Closed)));
        reader.join().unwrap();
        assert_eq!(stream.text(), "hello world");
    }

    #[test]
    fn wait_times_out_on_an_open_stream() {
        let (reader_end, _writer_end) = std::os::unix::net::UnixStream::pair().unwrap();
        let (stream, _reader) = Stream::capture(reader_end);
        let result = stream.wait(Instant::now() + Duration::from_millis(50), |_| None::<()>);
        assert!(matches!(result, Err(Missed::TimedOut)));
    }
}
