//! What can be wrong with a typed line, and the one-line message `error: ...` prints for it.
//! Owns [`ParseError`] and how user input is quoted back. Calls nothing.
use core::fmt;

use crate::cmdline::SizeError;

/// Longest piece of user input quoted back in an error message, in characters.
pub(super) const QUOTE_MAX: usize = 32;

/// Why a line is not a valid command. `Display` gives the message that follows `error: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The first word is not a command.
    UnknownCommand(Typed),
    /// The command takes fewer arguments than were given.
    TooManyArguments(&'static str),
    /// A required argument is missing.
    Missing {
        /// The command.
        command: &'static str,
        /// The argument's name.
        what: &'static str,
        /// The command's usage line.
        usage: &'static str,
    },
    /// An argument that must be a decimal number is not one.
    NotANumber {
        /// The command.
        command: &'static str,
        /// The argument's name.
        what: &'static str,
        /// What was typed.
        text: Typed,
    },
    /// A number is outside the range the command accepts.
    OutOfRange {
        /// The command.
        command: &'static str,
        /// The argument's name.
        what: &'static str,
        /// What was typed.
        text: Typed,
        /// The accepted range, as a person would write it.
        range: &'static str,
    },
    /// `spawn` was given a profile that does not exist.
    UnknownProfile(Typed),
    /// `deep:SIZE` has a size that does not parse.
    BadSize {
        /// What was typed after `deep:`.
        text: Typed,
        /// Why it is not a size.
        reason: SizeError,
    },
    /// `spawn` was given a policy other than `dynamic` or `fixed`.
    UnknownPolicy(Typed),
    /// `kill` was given neither `all` nor a thread id; `None` when nothing was given.
    BadKillTarget(Option<Typed>),
    /// A command was given an option it does not know.
    UnknownOption {
        /// The command.
        command: &'static str,
        /// What was typed.
        text: Typed,
        /// The options it knows.
        expected: &'static str,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::UnknownCommand(name) => {
                write!(f, "unknown command '{}' (type 'help')", name)
            }
            ParseError::TooManyArguments(command) => {
                write!(f, "too many arguments for '{command}'")
            }
            ParseError::Missing {
                command,
                what,
                usage,
            } => write!(f, "{command}: missing {what} (usage: {usage})"),
            ParseError::NotANumber {
                command,
                what,
                text,
            } => write!(f, "{command}: {what} '{}' is not a number", text),
            ParseError::OutOfRange {
                command,
                what,
                text,
                range,
            } => write!(
                f,
                "{command}: {what} '{}' is out of range ({range})",
                text
            ),
            ParseError::UnknownProfile(text) => write!(
                f,
                "spawn: unknown profile '{}' (idle, mix, deep:SIZE, overflow, churn, chain, bigframe, inflate, json)",
                text
            ),
            ParseError::BadSize { text, reason } => {
                write!(f, "spawn: deep size '{}' is not a size: {reason}", text)
            }
            ParseError::UnknownPolicy(text) => write!(
                f,
                "spawn: unknown policy '{}' (dynamic, fixed)",
                text
            ),
            ParseError::BadKillTarget(None) => f.write_str("kill: expected 'all' or a thread id"),
            ParseError::BadKillTarget(Some(text)) => write!(
                f,
                "kill: expected 'all' or a thread id, not '{}'",
                text
            ),
            ParseError::UnknownOption {
                command,
                text,
                expected,
            } => write!(
                f,
                "{command}: unknown option '{}' (expected {expected})",
                text
            ),
        }
    }
}

/// Bytes a [`Typed`] keeps: [`QUOTE_MAX`] characters of up to two bytes each (an error
/// stays small enough to return by value).
const TYPED_BYTES: usize = QUOTE_MAX * 2;

/// User input quoted in a message, kept without the heap (a parse error must not need
/// memory: it is what a user sees when memory is out): its first `QUOTE_MAX` characters
/// (fewer if they take more than `TYPED_BYTES`), and whether there were more, which
/// `Display` shows as `...` so that an error stays one readable line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Typed {
    bytes: [u8; TYPED_BYTES],
    len: u8,
    cut: bool,
}

impl Typed {
    /// The first `QUOTE_MAX` characters of `text`.
    pub fn new(text: &str) -> Self {
        let mut end = text
            .char_indices()
            .nth(QUOTE_MAX)
            .map_or(text.len(), |(i, _)| i)
            .min(TYPED_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0; TYPED_BYTES];
        bytes[..end].copy_from_slice(&text.as_bytes()[..end]);
        Self {
            bytes,
            len: end as u8,
            cut: end < text.len(),
        }
    }

    /// The characters kept.
    pub fn as_str(&self) -> &str {
        // Cut at a character boundary of a `str`, so always UTF-8.
        core::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

impl fmt::Display for Typed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        if self.cut {
            f.write_str("...")?;
        }
        Ok(())
    }
}
