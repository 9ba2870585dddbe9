//! The line editor: turns the serial console's byte stream into command lines.
//!
//! Owns the line being typed and the little state a terminal's byte stream needs (a pending
//! CR/LF pair, an escape sequence in progress). It echoes through the `core::fmt::Write` it
//! is handed and calls nothing else; it knows nothing about commands.

use core::fmt::{self, Write};

/// Longest line the editor accepts, in bytes; further input is refused with a bell.
pub const MAX_LINE: usize = 256;

/// The most bytes an escape sequence may span before the editor stops swallowing input.
///
/// Real terminal sequences are a handful of bytes; the cap keeps a stray ESC followed by
/// a long run of digits from eating a whole typed line.
const MAX_ESCAPE: usize = 16;

const BELL: char = '\x07';
const BACKSPACE: u8 = 0x08;
const CTRL_C: u8 = 0x03;
const CTRL_U: u8 = 0x15;
const ESC: u8 = 0x1b;
const DEL: u8 = 0x7f;

/// What one byte of input completed, if anything.
// The line travels by value, a few hundred bytes on the stack: that is the point (typing must
// not need the heap), so the size difference to `None` is wanted.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineEvent {
    /// The byte was absorbed; the line is still being typed.
    None,
    /// Enter was pressed; the typed line, without the line ending.
    Line(Line),
    /// Ctrl-C dropped the line being typed.
    Cancelled,
}

/// A typed line: at most [`MAX_LINE`] bytes of printable ASCII, in a fixed buffer (typing
/// must work when the heap is full). Reads as a `&str`.
#[derive(Clone, Copy)]
pub struct Line {
    bytes: [u8; MAX_LINE],
    len: usize,
}

impl Line {
    /// An empty line.
    pub const fn new() -> Self {
        Self {
            bytes: [0; MAX_LINE],
            len: 0,
        }
    }

    /// The line as text.
    pub fn as_str(&self) -> &str {
        // Only printable ASCII is ever stored.
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }

    fn push(&mut self, byte: u8) -> bool {
        if self.len >= MAX_LINE {
            return false;
        }
        self.bytes[self.len] = byte;
        self.len += 1;
        true
    }

    fn pop(&mut self) -> bool {
        let had = self.len > 0;
        self.len = self.len.saturating_sub(1);
        had
    }

    fn clear(&mut self) {
        self.len = 0;
    }
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl From<&str> for Line {
    /// The printable ASCII of `s`, up to [`MAX_LINE`] bytes (for tests and callers that
    /// already have a line).
    fn from(s: &str) -> Self {
        let mut l = Line::new();
        for b in s.bytes().filter(|b| (b' '..=b'~').contains(b)) {
            l.push(b);
        }
        l
    }
}

impl core::ops::Deref for Line {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Line {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Line {}

impl fmt::Debug for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Where the editor is inside an escape sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    /// Not in a sequence.
    Idle,
    /// After ESC: the next byte says what kind of sequence this is.
    Start,
    /// After `ESC [`: parameter and intermediate bytes until a final byte (0x40..=0x7e).
    Csi { len: usize },
    /// After `ESC O` (SS3, e.g. F1-F4 or arrows in application mode): one more byte.
    Ss3,
}

/// A line editor fed one byte at a time from a serial console.
///
/// It keeps printable ASCII only, so every line it returns is plain ASCII of at most
/// [`MAX_LINE`] bytes.
#[derive(Debug, Clone)]
pub struct LineEditor {
    line: Line,
    escape: Escape,
    /// The other half of a CR/LF pair to swallow if it comes next, so that terminals
    /// sending "\r\n" or "\n\r" produce one line, not a line and an empty line.
    pair: Option<u8>,
}

impl Default for LineEditor {
    fn default() -> Self {
        Self::new()
    }
}

impl LineEditor {
    /// An editor with an empty line.
    pub const fn new() -> Self {
        Self {
            line: Line::new(),
            escape: Escape::Idle,
            pair: None,
        }
    }

    /// The line typed so far.
    pub fn current(&self) -> &str {
        &self.line
    }

    /// Takes one byte of input, echoes what the terminal should show, and reports whether a
    /// line was completed or cancelled.
    ///
    /// Echo errors are ignored: the console is the only place they could be reported.
    pub fn feed(&mut self, byte: u8, echo: &mut dyn Write) -> LineEvent {
        let pair = self.pair.take();
        if self.escape != Escape::Idle && self.swallow_escape(byte) {
            return LineEvent::None;
        }
        match byte {
            b'\r' | b'\n' => {
                if pair == Some(byte) {
                    return LineEvent::None;
                }
                self.pair = Some(if byte == b'\r' { b'\n' } else { b'\r' });
                let _ = echo.write_char('\n');
                let line = self.line;
                self.line.clear();
                LineEvent::Line(line)
            }
            CTRL_C => {
                self.line.clear();
                let _ = echo.write_str("^C\n");
                LineEvent::Cancelled
            }
            CTRL_U => {
                for _ in 0..self.line.len() {
                    let _ = echo.write_str("\x08 \x08");
                }
                self.line.clear();
                LineEvent::None
            }
            DEL | BACKSPACE => {
                if self.line.pop() {
                    let _ = echo.write_str("\x08 \x08");
                }
                LineEvent::None
            }
            ESC => {
                self.escape = Escape::Start;
                LineEvent::None
            }
            b' '..=b'~' => {
                if self.line.push(byte) {
                    let _ = echo.write_char(char::from(byte));
                } else {
                    let _ = echo.write_char(BELL);
                }
                LineEvent::None
            }
            // Other control bytes and non-ASCII bytes have no meaning on this console.
            _ => LineEvent::None,
        }
    }

    /// Advances the escape-sequence state by one byte. Returns `false` when the byte is not
    /// part of the sequence (the sequence is abandoned) and must be handled as ordinary
    /// input, so that a broken sequence cannot swallow an Enter or a Ctrl-C.
    fn swallow_escape(&mut self, byte: u8) -> bool {
        let printable = (0x20..=0x7e).contains(&byte);
        self.escape = match self.escape {
            Escape::Idle => return false,
            Escape::Start => match byte {
                b'[' => Escape::Csi { len: 0 },
                b'O' => Escape::Ss3,
                // ESC followed by a key is Alt+key: drop both.
                _ if printable => Escape::Idle,
                _ => {
                    self.escape = Escape::Idle;
                    return false;
                }
            },
            Escape::Csi { len } => match byte {
                0x40..=0x7e => Escape::Idle,
                0x20..=0x3f if len + 1 < MAX_ESCAPE => Escape::Csi { len: len + 1 },
                _ => {
                    self.escape = Escape::Idle;
                    return false;
                }
            },
            Escape::Ss3 if printable => Escape::Idle,
            Escape::Ss3 => {
                self.escape = Escape::Idle;
                return false;
            }
        };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec::Vec;

    /// Feeds every byte, returning the events other than `None` and the echo.
    fn run(editor: &mut LineEditor, bytes: &[u8]) -> (Vec<LineEvent>, String) {
        let mut echo = String::new();
        let events = bytes
            .iter()
            .map(|&b| editor.feed(b, &mut echo))
            .filter(|e| *e != LineEvent::None)
            .collect();
        (events, echo)
    }

    fn line(s: &str) -> LineEvent {
        LineEvent::Line(Line::from(s))
    }

    #[test]
    fn printable_is_appended_and_echoed() {
        let mut ed = LineEditor::new();
        let (events, echo) = run(&mut ed, b"mem");
        assert!(events.is_empty());
        assert_eq!(echo, "mem");
        assert_eq!(ed.current(), "mem");
        let (events, echo) = run(&mut ed, b"\r");
        assert_eq!(events, [line("mem")]);
        assert_eq!(echo, "\n");
        assert_eq!(ed.current(), "");
    }

    #[test]
    fn backspace_erases_one_char() {
        let mut ed = LineEditor::new();
        let (events, echo) = run(&mut ed, b"psx\x7f\x08q\x08\r");
        assert_eq!(events, [line("p")]);
        assert_eq!(echo, "psx\x08 \x08\x08 \x08q\x08 \x08\n");
    }

    #[test]
    fn backspace_on_empty_line_echoes_nothing() {
        let mut ed = LineEditor::new();
        let (events, echo) = run(&mut ed, b"\x7f\x08\x7f");
        assert!(events.is_empty());
        assert_eq!(echo, "");
        let (_, echo) = run(&mut ed, b"a\x7f\x7f");
        assert_eq!(echo, "a\x08 \x08");
    }

    #[test]
    fn ctrl_c_drops_the_line() {
        let mut ed = LineEditor::new();
        let (events, echo) = run(&mut ed, b"spawn 10\x03");
        assert_eq!(events, [LineEvent::Cancelled]);
        assert_eq!(echo, "spawn 10^C\n");
        assert_eq!(ed.current(), "");
        let (events, _) = run(&mut ed, b"\x03mem\n");
        assert_eq!(events, [LineEvent::Cancelled, line("mem")]);
    }

    #[test]
    fn ctrl_u_clears_the_line() {
        let mut ed = LineEditor::new();
        let (events, echo) = run(&mut ed, b"ab\x15cpus\r");
        assert_eq!(events, [line("cpus")]);
        assert_eq!(echo, "ab\x08 \x08\x08 \x08cpus\n");
    }

    #[test]
    fn crlf_and_lfcr_count_once() {
        let mut ed = LineEditor::new();
        let (events, _) = run(&mut ed, b"a\r\nb\n\rc\r\rd\n\n");
        assert_eq!(
            events,
            [
                line("a"),
                line("b"),
                line("c"),
                line(""),
                line("d"),
                line("")
            ]
        );
    }

    #[test]
    fn pair_is_only_swallowed_right_after_enter() {
        let mut ed = LineEditor::new();
        let (events, _) = run(&mut ed, b"a\rx\nb\r\x7f\n");
        assert_eq!(events, [line("a"), line("x"), line("b"), line("")]);
    }

    #[test]
    fn escape_sequences_are_swallowed() {
        let mut ed = LineEditor::new();
        // Up arrow, left arrow, Delete (ESC [ 3 ~), F1 (ESC O P), Alt+x, Ctrl+Right.
        let (events, echo) = run(&mut ed, b"p\x1b[A\x1b[D\x1b[3~\x1bOP\x1bx\x1b[1;5Cs\r");
        assert_eq!(events, [line("ps")]);
        assert_eq!(echo, "ps\n");
    }

    #[test]
    fn broken_escape_does_not_eat_enter_or_ctrl_c() {
        let mut ed = LineEditor::new();
        let (events, _) = run(&mut ed, b"mem\x1b[12\r");
        assert_eq!(events, [line("mem")]);
        let (events, _) = run(&mut ed, b"x\x1b\x03");
        assert_eq!(events, [LineEvent::Cancelled]);
        let (events, _) = run(&mut ed, b"y\x1bO\n");
        assert_eq!(events, [line("y")]);
    }

    #[test]
    fn endless_escape_parameters_stop_being_swallowed() {
        let mut ed = LineEditor::new();
        let mut bytes = Vec::from(&b"\x1b["[..]);
        bytes.extend(core::iter::repeat_n(b'1', 40));
        bytes.push(b'\r');
        let (events, _) = run(&mut ed, &bytes);
        assert_eq!(events.len(), 1);
        let LineEvent::Line(l) = &events[0] else {
            panic!("expected a line, got {events:?}");
        };
        assert!(!l.is_empty() && l.bytes().all(|b| b == b'1'));
    }

    #[test]
    fn overlong_line_is_refused_with_bell() {
        let mut ed = LineEditor::new();
        let mut bytes = Vec::new();
        bytes.extend(core::iter::repeat_n(b'a', MAX_LINE + 3));
        let (events, echo) = run(&mut ed, &bytes);
        assert!(events.is_empty());
        assert_eq!(ed.current().len(), MAX_LINE);
        assert_eq!(echo.matches('a').count(), MAX_LINE);
        assert!(echo.ends_with("\x07\x07\x07"));
        // Backspace makes room again.
        let (_, echo) = run(&mut ed, b"\x7fb");
        assert_eq!(echo, "\x08 \x08b");
        let (events, _) = run(&mut ed, b"\n");
        let LineEvent::Line(l) = &events[0] else {
            panic!("expected a line");
        };
        assert_eq!(l.len(), MAX_LINE);
        assert!(l.ends_with('b'));
    }

    #[test]
    fn non_ascii_and_control_bytes_are_ignored() {
        let mut ed = LineEditor::new();
        // UTF-8 "é", Latin-1 bytes, NUL, tab, Ctrl-A, bell.
        let (events, echo) = run(&mut ed, b"c\xc3\xa9p\xff\x80\x00\t\x01\x07us\r");
        assert_eq!(events, [line("cpus")]);
        assert_eq!(echo, "cpus\n");
    }
}
