//! What can be wrong with a typed line, and the one-line message `error: ...` prints for it.
//! Owns [`ParseError`] and how user input is quoted back. Calls nothing.
use alloc::string::String;
use core::fmt;

/// Longest piece of user input quoted back in an error message, in characters.
pub(super) const QUOTE_MAX: usize = 32;

/// Why a line is not a valid command. `Display` gives the message that follows `error: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The first word is not a command.
    UnknownCommand(String),
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
        text: String,
    },
    /// A number is outside the range the command accepts.
    OutOfRange {
        /// The command.
        command: &'static str,
        /// The argument's name.
        what: &'static str,
        /// What was typed.
        text: String,
        /// The accepted range, as a person would write it.
        range: &'static str,
    },
    /// `spawn` was given a profile that does not exist.
    UnknownProfile(String),
    /// `deep:SIZE` has a size that does not parse.
    BadSize {
        /// What was typed after `deep:`.
        text: String,
        /// Why it is not a size.
        reason: String,
    },
    /// `spawn` was given a policy other than `dynamic` or `fixed`.
    UnknownPolicy(String),
    /// `kill` was given neither `all` nor a thread id; `None` when nothing was given.
    BadKillTarget(Option<String>),
    /// A command was given an option it does not know.
    UnknownOption {
        /// The command.
        command: &'static str,
        /// What was typed.
        text: String,
        /// The options it knows.
        expected: &'static str,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::UnknownCommand(name) => {
                write!(f, "unknown command '{}' (type 'help')", Quoted(name))
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
            } => write!(f, "{command}: {what} '{}' is not a number", Quoted(text)),
            ParseError::OutOfRange {
                command,
                what,
                text,
                range,
            } => write!(
                f,
                "{command}: {what} '{}' is out of range ({range})",
                Quoted(text)
            ),
            ParseError::UnknownProfile(text) => write!(
                f,
                "spawn: unknown profile '{}' (idle, mix, deep:SIZE, overflow, churn, chain, bigframe, inflate, json)",
                Quoted(text)
            ),
            ParseError::BadSize { text, reason } => {
                write!(f, "spawn: deep size '{}' {reason}", Quoted(text))
            }
            ParseError::UnknownPolicy(text) => write!(
                f,
                "spawn: unknown policy '{}' (dynamic, fixed)",
                Quoted(text)
            ),
            ParseError::BadKillTarget(None) => f.write_str("kill: expected 'all' or a thread id"),
            ParseError::BadKillTarget(Some(text)) => write!(
                f,
                "kill: expected 'all' or a thread id, not '{}'",
                Quoted(text)
            ),
            ParseError::UnknownOption {
                command,
                text,
                expected,
            } => write!(
                f,
                "{command}: unknown option '{}' (expected {expected})",
                Quoted(text)
            ),
        }
    }
}

/// User input quoted in a message, cut at a character boundary when it is long so that an
/// error stays one readable line.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(QUOTE_MAX) {
            Some((cut, _)) => write!(f, "{}...", &self.0[..cut]),
            None => f.write_str(self.0),
        }
    }
}
