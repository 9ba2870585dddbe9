//! The kernel command line: `init=`, `kstack.policy=`, `kstack.initial=`, `kstack.max=`,
//! `kstack.guard=`, `kstack.park_after=`, `kstack.strategy=`, `kstack.lookahead=` and `seed=`
//! (the table in the brief).
//!
//! Owns tokenizing and checking the line the boot loader passes (QEMU `-append`, DTB
//! `/chosen/bootargs`) into [`KernelArgs`], the size syntax ([`parse_size`]) and the split of
//! `init=` into shell commands ([`split_commands`]), which the shell shares. Calls nothing but
//! `core` and `alloc`. [`parse`] is total: a bad argument never stops the boot, it yields an
//! [`ArgError`] and the setting keeps the value it had (the default unless an earlier argument
//! set it); the remaining arguments still apply.
//!
//! Tokens are separated by whitespace outside quotes. As in a shell, `"..."` and `'...'` may
//! appear anywhere in a token, group whitespace and `;` into it, and are removed; inside one
//! kind of quote the other kind is an ordinary character. There are no backslash escapes.
//! Words the kernel does not know (`console=ttyAMA0`, `quiet`, which firmware adds) are not
//! errors: they are listed in [`KernelArgs::ignored`]. Unknown `kstack.*` keys are errors,
//! because they are almost certainly typos of a setting the user meant to change.
//!
//! The files: this one ([`KernelArgs`] and [`parse`]), `token` (quotes and whitespace),
//! `setting` (what each key sets), `size`, `stack`, `console`, `error`.

mod console;
mod error;
mod setting;
mod size;
mod stack;
mod token;

pub use console::*;
pub use error::*;
use setting::*;
pub use size::*;
pub use stack::*;
use token::*;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;

/// Stack sizes are whole 4 KiB pages.
pub const PAGE_SIZE: usize = 4096;
/// Smallest `kstack.initial` and `kstack.max`: one page.
pub const MIN_STACK: usize = PAGE_SIZE;
/// Largest `kstack.max` (and so `kstack.initial`): 64 MiB.
pub const MAX_STACK: usize = 64 << 20;
/// Smallest `kstack.guard`: one page, so an overflow always faults.
pub const MIN_GUARD: usize = PAGE_SIZE;
/// Largest `kstack.guard`: 1 MiB.
pub const MAX_GUARD: usize = 1 << 20;
/// `init=` when the line has none: the showcase.
pub const DEFAULT_INIT: &str = "demo";
/// `seed=` when the line has none. Arbitrary, but fixed so that runs repeat.
pub const DEFAULT_SEED: u64 = 2024;
/// `kstack.lookahead` when the line has none: 2 KiB, half a page, what the `check` strategy
/// keeps mapped below SP at every function entry.
pub const DEFAULT_LOOKAHEAD: usize = 2 << 10;
/// Smallest `kstack.lookahead`: one frame record (16 bytes).
pub const MIN_LOOKAHEAD: usize = 16;
/// Largest `kstack.lookahead`: 1 MiB.
pub const MAX_LOOKAHEAD: usize = 1 << 20;

/// Everything the command line sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelArgs {
    /// Shell commands run at boot, `;`-separated (see [`split_commands`]); may be empty.
    pub init: String,
    /// Thread stack settings.
    pub stack: StackConfig,
    /// Seed for workload draws.
    pub seed: u64,
    /// Which UART is the console (`console=`); see [`console_choice`].
    pub console: ConsoleChoice,
    /// `semihosting=on|off`: whether a debugger (QEMU `-semihosting`) is there for a panic
    /// to exit through. `None`: the board's default (on for QEMU virt, off for a Pi).
    pub semihosting: Option<bool>,
    /// Words the kernel does not know, as written; they are not errors.
    pub ignored: Vec<String>,
}

impl Default for KernelArgs {
    fn default() -> Self {
        KernelArgs {
            init: DEFAULT_INIT.to_string(),
            stack: StackConfig::default(),
            seed: DEFAULT_SEED,
            console: ConsoleChoice::Pl011,
            semihosting: None,
            ignored: Vec::new(),
        }
    }
}

/// The commands of an `init=` value: split on `;`, trimmed, empty ones skipped.
pub fn split_commands(init: &str) -> impl Iterator<Item = &str> {
    init.split(';').map(str::trim).filter(|c| !c.is_empty())
}

/// Parses a kernel command line. Returns the settings and one error per bad argument.
///
/// Later arguments override earlier ones. A bad argument changes nothing. After the whole
/// line is read, if `kstack.initial` exceeds `kstack.max` (either may have been given),
/// neither given value can be trusted over the other, so both go back to their defaults
/// (4k and 16k, which agree) and one error names the arguments involved.
pub fn parse(line: &str) -> (KernelArgs, Vec<ArgError>) {
    let mut args = KernelArgs::default();
    let mut errors = Vec::new();
    // The arguments that last set initial and max, for the cross-field message.
    let mut initial_arg: Option<&str> = None;
    let mut max_arg: Option<&str> = None;

    for token in tokens(line) {
        let (key, value) = match token.text.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (token.text.as_str(), None),
        };
        let setting = match Setting::from_key(key) {
            // A console this kernel does not drive (`console=tty1`, which the Pi firmware
            // passes for the screen) is a firmware word like any other, not an error.
            Key::Known(Setting::Console)
                if token.unterminated.is_some()
                    || value.is_none_or(|v| v.parse::<ConsoleChoice>().is_err()) =>
            {
                args.ignored.push(token.raw.to_string());
                continue;
            }
            Key::Known(setting) => setting,
            Key::UnknownStack(sub) => {
                errors.push(ArgError {
                    arg: token.raw.to_string(),
                    kind: ArgErrorKind::UnknownStackKey(sub.to_string()),
                    kept: None,
                });
                continue;
            }
            Key::Other => {
                if let Some(quote) = token.unterminated {
                    errors.push(ArgError {
                        arg: token.raw.to_string(),
                        kind: ArgErrorKind::UnterminatedQuote(quote),
                        kept: None,
                    });
                } else {
                    args.ignored.push(token.raw.to_string());
                }
                continue;
            }
        };
        let outcome = match (token.unterminated, value) {
            (Some(quote), _) => Err(ArgErrorKind::UnterminatedQuote(quote)),
            (None, None) => Err(ArgErrorKind::MissingValue),
            (None, Some(value)) => setting.apply(value, &mut args),
        };
        match outcome {
            Ok(()) => match setting {
                Setting::Initial => initial_arg = Some(token.raw),
                Setting::Max => max_arg = Some(token.raw),
                _ => {}
            },
            Err(kind) => errors.push(ArgError {
                arg: token.raw.to_string(),
                kind,
                kept: Some(setting.kept(&args)),
            }),
        }
    }

    let stack = &mut args.stack;
    if stack.initial > stack.max {
        let defaults = StackConfig::default();
        let arg = [initial_arg, max_arg]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        errors.push(ArgError {
            arg,
            kind: ArgErrorKind::InitialAboveMax {
                initial: stack.initial,
                max: stack.max,
            },
            kept: Some(alloc::format!(
                "defaults {} and {}",
                size_text(defaults.initial),
                size_text(defaults.max)
            )),
        });
        stack.initial = defaults.initial;
        stack.max = defaults.max;
    }
    (args, errors)
}

#[cfg(test)]
mod tests;
