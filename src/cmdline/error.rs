//! What is wrong with one argument: [`ArgError`].
use super::*;

/// What is wrong with one argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgErrorKind {
    /// A quote (the character given) opened and never closed; the argument runs to the
    /// end of the line.
    UnterminatedQuote(char),
    /// A known key without `=VALUE`.
    MissingValue,
    /// A `kstack.` key that is not one of the four settings.
    UnknownStackKey(String),
    /// `kstack.policy` other than `dynamic` or `fixed`.
    BadPolicy(PolicyError),
    /// `kstack.strategy` other than `fault`, `expand` or `check` (the word given).
    BadStrategy(String),
    /// A size that does not parse.
    BadSize(SizeError),
    /// A size that is not a whole number of pages.
    NotPageMultiple,
    /// A `kstack.lookahead` that is not a multiple of 16 (SP's alignment).
    NotMultipleOf16,
    /// A size below the setting's minimum.
    TooSmall {
        /// The minimum in bytes.
        min: usize,
    },
    /// A size above the setting's maximum.
    TooLarge {
        /// The maximum in bytes.
        max: usize,
    },
    /// A `seed` that is not decimal or `0x` hex digits.
    BadNumber,
    /// A `seed` above `u64::MAX`.
    NumberTooLarge,
    /// `kstack.park_after` other than `off` or milliseconds up to [`MAX_PARK_AFTER_MS`].
    BadParkAfter,
    /// A value that is not one of the choices named.
    BadChoice(&'static str),
    /// `kstack.initial` above `kstack.max` once the whole line is read.
    InitialAboveMax {
        /// The `initial` in effect.
        initial: usize,
        /// The `max` in effect.
        max: usize,
    },
}

impl fmt::Display for ArgErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgErrorKind::UnterminatedQuote(q) => {
                let kind = if *q == '"' { "double" } else { "single" };
                write!(f, "unterminated {kind} quote")
            }
            ArgErrorKind::MissingValue => f.write_str("missing value (expected KEY=VALUE)"),
            ArgErrorKind::UnknownStackKey(key) => write!(
                f,
                "unknown setting kstack.{key} (known: kstack.policy, kstack.initial, \
                 kstack.max, kstack.guard, kstack.park_after, kstack.strategy, kstack.lookahead)"
            ),
            ArgErrorKind::BadChoice(choices) => write!(f, "not {choices}"),
            ArgErrorKind::BadPolicy(e) => write!(f, "{e}"),
            ArgErrorKind::BadStrategy(word) => write!(
                f,
                "unknown strategy \"{word}\" (expected fault, expand or check)"
            ),
            ArgErrorKind::BadSize(e) => write!(f, "not a size: {e}"),
            ArgErrorKind::NotPageMultiple => write!(f, "not a multiple of {PAGE_SIZE}"),
            ArgErrorKind::NotMultipleOf16 => f.write_str("not a multiple of 16"),
            ArgErrorKind::TooSmall { min } => {
                write!(f, "smaller than the {} minimum", size_text(*min))
            }
            ArgErrorKind::TooLarge { max } => {
                write!(f, "larger than the {} maximum", size_text(*max))
            }
            ArgErrorKind::BadNumber => f.write_str("not a number (expected decimal or 0x hex)"),
            ArgErrorKind::BadParkAfter => write!(
                f,
                "expected off or milliseconds from 0 to {MAX_PARK_AFTER_MS}"
            ),
            ArgErrorKind::NumberTooLarge => f.write_str("does not fit in 64 bits"),
            ArgErrorKind::InitialAboveMax { initial, max } => write!(
                f,
                "initial {} is larger than max {}",
                size_text(*initial),
                size_text(*max)
            ),
        }
    }
}

/// One rejected argument. Displays as `ARG: PROBLEM (KEPT kept)`, e.g.
/// `kstack.max=3000: not a multiple of 4096 (default 16k kept)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError {
    /// The argument(s) as written on the line.
    pub arg: String,
    /// What is wrong.
    pub kind: ArgErrorKind,
    /// The value(s) kept instead, e.g. `default 16k`; `None` when no setting was named.
    pub kept: Option<String>,
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.arg, self.kind)?;
        if let Some(kept) = &self.kept {
            write!(f, " ({kept} kept)")?;
        }
        Ok(())
    }
}

impl core::error::Error for ArgError {}
