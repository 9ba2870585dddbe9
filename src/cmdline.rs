//! The kernel command line: `init=`, `kstack.policy=`, `kstack.initial=`, `kstack.max=`,
//! `kstack.guard=` and `seed=` (the table in the brief).
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

/// How a new thread's stack is backed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StackPolicy {
    /// Map `initial` bytes at creation and grow on demand up to `max`.
    #[default]
    Dynamic,
    /// Map the whole `max` reservation at creation (the baseline).
    Fixed,
}

impl StackPolicy {
    /// The name used on the command line and in the shell.
    pub fn as_str(self) -> &'static str {
        match self {
            StackPolicy::Dynamic => "dynamic",
            StackPolicy::Fixed => "fixed",
        }
    }
}

impl fmt::Display for StackPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is neither `dynamic` nor `fixed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The word given.
    pub text: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown policy \"{}\" (expected dynamic or fixed)",
            self.text
        )
    }
}

impl core::error::Error for PolicyError {}

impl FromStr for StackPolicy {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dynamic" => Ok(StackPolicy::Dynamic),
            "fixed" => Ok(StackPolicy::Fixed),
            _ => Err(PolicyError {
                text: s.to_string(),
            }),
        }
    }
}

/// Thread stack settings. Whatever [`parse`] returns satisfies: every size a multiple of
/// [`PAGE_SIZE`], [`MIN_STACK`] ≤ `initial` ≤ `max` ≤ [`MAX_STACK`], and
/// [`MIN_GUARD`] ≤ `guard` ≤ [`MAX_GUARD`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackConfig {
    /// Policy for new threads (`kstack.policy`).
    pub policy: StackPolicy,
    /// Bytes mapped at creation under the dynamic policy (`kstack.initial`).
    pub initial: usize,
    /// Bytes reserved, all of which may be mapped (`kstack.max`).
    pub max: usize,
    /// Unmapped bytes below each reservation (`kstack.guard`).
    pub guard: usize,
}

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            policy: StackPolicy::Dynamic,
            initial: 4 << 10,
            max: 16 << 10,
            guard: 4 << 10,
        }
    }
}

impl fmt::Display for StackConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "policy={} initial={} max={} guard={}",
            self.policy,
            size_text(self.initial),
            size_text(self.max),
            size_text(self.guard)
        )
    }
}

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
            ignored: Vec::new(),
        }
    }
}

/// Which UART the console runs on, from `console=`.
///
/// `console=pl011` (or Linux's name for it, `ttyAMA0`) is the default; `console=mini` (or
/// `ttyS0`, Linux's name for the BCM2835 auxiliary mini UART) picks the mini UART where the
/// device tree has one. Linux-style options after a comma (`ttyS0,115200`) are ignored: the
/// baud rate is the firmware's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsoleChoice {
    /// The PL011 (UART0 on a Raspberry Pi).
    #[default]
    Pl011,
    /// The BCM2835 auxiliary mini UART (UART1 on a Raspberry Pi).
    Mini,
}

impl ConsoleChoice {
    /// The name `console=` takes for it.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsoleChoice::Pl011 => "pl011",
            ConsoleChoice::Mini => "mini",
        }
    }
}

impl fmt::Display for ConsoleChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConsoleChoice {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let name = s.split(',').next().unwrap_or(s);
        match name {
            "pl011" | "ttyAMA0" => Ok(ConsoleChoice::Pl011),
            "mini" | "ttyS0" => Ok(ConsoleChoice::Mini),
            _ => Err(()),
        }
    }
}

/// The console the command line asks for, read before the console exists (boot picks the
/// UART with it). The last `console=` naming a UART this kernel drives wins, as in Linux,
/// where the last `console=` is `/dev/console`; others (`console=tty1`) are left in
/// [`KernelArgs::ignored`] by [`parse`], which boot reports once the console is up.
pub fn console_choice(line: &str) -> ConsoleChoice {
    parse(line).0.console
}

/// Why a text is not a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeError {
    /// Nothing given.
    Empty,
    /// A leading minus sign.
    Negative,
    /// A prefix or suffix without digits (`k`, `0x`).
    NoDigits,
    /// A character that does not belong (`4kb`, `4q`, ` 4k`).
    Unexpected(char),
    /// More than fits in the address space.
    TooLarge,
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeError::Empty => f.write_str("empty"),
            SizeError::Negative => f.write_str("negative"),
            SizeError::NoDigits => f.write_str("no digits"),
            SizeError::Unexpected(c) => write!(
                f,
                "unexpected {c:?} (expected digits or 0x hex, then an optional k, m or g)"
            ),
            SizeError::TooLarge => f.write_str("too large"),
        }
    }
}

impl core::error::Error for SizeError {}

/// Parses a byte count: decimal (`4096`) or hex (`0x1000`) digits, then an optional
/// binary suffix `k`, `m` or `g` in either case (`16k` = 16384). Rejects empty text,
/// signs, spaces, other suffixes and anything that overflows `usize`.
pub fn parse_size(s: &str) -> Result<usize, SizeError> {
    if s.is_empty() {
        return Err(SizeError::Empty);
    }
    if s.starts_with('-') {
        return Err(SizeError::Negative);
    }
    let (digits, radix) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (s, 10),
    };
    let suffixes = [(['k', 'K'], 10), (['m', 'M'], 20), (['g', 'G'], 30)];
    let (digits, shift) = suffixes
        .iter()
        .find_map(|&(suffix, shift)| Some((digits.strip_suffix(suffix)?, shift)))
        .unwrap_or((digits, 0));
    let value = parse_digits(digits, radix)?;
    let multiplier = 1usize << shift;
    let bytes = usize::try_from(value)
        .ok()
        .and_then(|v| v.checked_mul(multiplier))
        .ok_or(SizeError::TooLarge)?;
    Ok(bytes)
}

/// Digits only, in `radix`, into a `u64` without overflow.
fn parse_digits(digits: &str, radix: u32) -> Result<u64, SizeError> {
    if digits.is_empty() {
        return Err(SizeError::NoDigits);
    }
    digits.chars().try_fold(0u64, |acc, c| {
        let digit = c.to_digit(radix).ok_or(SizeError::Unexpected(c))?;
        acc.checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(u64::from(digit)))
            .ok_or(SizeError::TooLarge)
    })
}

/// The commands of an `init=` value: split on `;`, trimmed, empty ones skipped.
pub fn split_commands(init: &str) -> impl Iterator<Item = &str> {
    init.split(';').map(str::trim).filter(|c| !c.is_empty())
}

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
    /// A size that does not parse.
    BadSize(SizeError),
    /// A size that is not a whole number of pages.
    NotPageMultiple,
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
                 kstack.max, kstack.guard)"
            ),
            ArgErrorKind::BadPolicy(e) => write!(f, "{e}"),
            ArgErrorKind::BadSize(e) => write!(f, "not a size: {e}"),
            ArgErrorKind::NotPageMultiple => write!(f, "not a multiple of {PAGE_SIZE}"),
            ArgErrorKind::TooSmall { min } => {
                write!(f, "smaller than the {} minimum", size_text(*min))
            }
            ArgErrorKind::TooLarge { max } => {
                write!(f, "larger than the {} maximum", size_text(*max))
            }
            ArgErrorKind::BadNumber => f.write_str("not a number (expected decimal or 0x hex)"),
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

/// A setting the command line can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setting {
    Init,
    Seed,
    Console,
    Policy,
    Initial,
    Max,
    Guard,
}

enum Key<'a> {
    Known(Setting),
    UnknownStack(&'a str),
    Other,
}

impl Setting {
    fn from_key(key: &str) -> Key<'_> {
        match key {
            "init" => Key::Known(Setting::Init),
            "seed" => Key::Known(Setting::Seed),
            "console" => Key::Known(Setting::Console),
            _ => match key.strip_prefix("kstack.") {
                Some("policy") => Key::Known(Setting::Policy),
                Some("initial") => Key::Known(Setting::Initial),
                Some("max") => Key::Known(Setting::Max),
                Some("guard") => Key::Known(Setting::Guard),
                Some(sub) => Key::UnknownStack(sub),
                None => Key::Other,
            },
        }
    }

    fn apply(self, value: &str, args: &mut KernelArgs) -> Result<(), ArgErrorKind> {
        match self {
            Setting::Init => args.init = value.to_string(),
            Setting::Seed => args.seed = parse_u64(value)?,
            // Only values that parse get here (see `parse`).
            Setting::Console => args.console = value.parse().unwrap_or(args.console),
            Setting::Policy => {
                args.stack.policy = value.parse().map_err(ArgErrorKind::BadPolicy)?;
            }
            Setting::Initial => args.stack.initial = checked_size(value, MIN_STACK, MAX_STACK)?,
            Setting::Max => args.stack.max = checked_size(value, MIN_STACK, MAX_STACK)?,
            Setting::Guard => args.stack.guard = checked_size(value, MIN_GUARD, MAX_GUARD)?,
        }
        Ok(())
    }

    /// How the value this setting keeps reads in an error, e.g. `default 16k`.
    fn kept(self, args: &KernelArgs) -> String {
        let defaults = KernelArgs::default();
        let (now, default) = match self {
            Setting::Init => (
                alloc::format!("\"{}\"", args.init),
                alloc::format!("\"{}\"", defaults.init),
            ),
            Setting::Seed => (args.seed.to_string(), defaults.seed.to_string()),
            Setting::Console => (args.console.to_string(), defaults.console.to_string()),
            Setting::Policy => (
                args.stack.policy.to_string(),
                defaults.stack.policy.to_string(),
            ),
            Setting::Initial => (
                size_text(args.stack.initial),
                size_text(defaults.stack.initial),
            ),
            Setting::Max => (size_text(args.stack.max), size_text(defaults.stack.max)),
            Setting::Guard => (size_text(args.stack.guard), size_text(defaults.stack.guard)),
        };
        if now == default {
            alloc::format!("default {now}")
        } else {
            now
        }
    }
}

fn checked_size(value: &str, min: usize, max: usize) -> Result<usize, ArgErrorKind> {
    let bytes = parse_size(value).map_err(ArgErrorKind::BadSize)?;
    if !bytes.is_multiple_of(PAGE_SIZE) {
        Err(ArgErrorKind::NotPageMultiple)
    } else if bytes < min {
        Err(ArgErrorKind::TooSmall { min })
    } else if bytes > max {
        Err(ArgErrorKind::TooLarge { max })
    } else {
        Ok(bytes)
    }
}

/// A `u64` in decimal or `0x` hex, digits only.
fn parse_u64(value: &str) -> Result<u64, ArgErrorKind> {
    let (digits, radix) = match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) => (hex, 16),
        None => (value, 10),
    };
    parse_digits(digits, radix).map_err(|e| match e {
        SizeError::TooLarge => ArgErrorKind::NumberTooLarge,
        _ => ArgErrorKind::BadNumber,
    })
}

/// Bytes as the command line writes them: `16k`, `1m`, `2g`, or plain bytes.
fn size_text(bytes: usize) -> String {
    let units = [(30, 'g'), (20, 'm'), (10, 'k')];
    match units
        .iter()
        .find(|&&(shift, _)| bytes != 0 && bytes.is_multiple_of(1usize << shift))
    {
        Some(&(shift, unit)) => alloc::format!("{}{unit}", bytes >> shift),
        None => bytes.to_string(),
    }
}

/// One whitespace-separated argument.
struct Token<'a> {
    /// As written, quotes included.
    raw: &'a str,
    /// With quotes removed.
    text: String,
    /// The quote still open at the end of the line, if any.
    unterminated: Option<char>,
}

fn tokens(line: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut chars = line.char_indices().peekable();
    while let Some(&(start, _)) = chars.peek() {
        if chars.next_if(|&(_, c)| c.is_whitespace()).is_some() {
            continue;
        }
        let mut text = String::new();
        let mut quote = None;
        let mut end = line.len();
        while let Some(&(at, c)) = chars.peek() {
            match quote {
                None if c.is_whitespace() => {
                    end = at;
                    break;
                }
                None if c == '"' || c == '\'' => quote = Some(c),
                Some(q) if c == q => quote = None,
                _ => text.push(c),
            }
            chars.next();
        }
        tokens.push(Token {
            raw: line.get(start..end).unwrap_or_default(),
            text,
            unterminated: quote,
        });
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    fn messages(errors: &[ArgError]) -> Vec<String> {
        errors.iter().map(ToString::to_string).collect()
    }

    fn assert_valid(stack: &StackConfig) {
        assert_eq!(stack.initial % PAGE_SIZE, 0, "{stack}");
        assert_eq!(stack.max % PAGE_SIZE, 0, "{stack}");
        assert_eq!(stack.guard % PAGE_SIZE, 0, "{stack}");
        assert!(MIN_STACK <= stack.initial, "{stack}");
        assert!(stack.initial <= stack.max, "{stack}");
        assert!(stack.max <= MAX_STACK, "{stack}");
        assert!((MIN_GUARD..=MAX_GUARD).contains(&stack.guard), "{stack}");
    }

    #[test]
    fn empty_line_gives_defaults() {
        for line in ["", "   ", "\t\n "] {
            let (args, errors) = parse(line);
            assert!(errors.is_empty());
            assert_eq!(args, KernelArgs::default());
        }
        let args = KernelArgs::default();
        assert_eq!(args.init, "demo");
        assert_eq!(args.seed, DEFAULT_SEED);
        assert_eq!(args.stack.policy, StackPolicy::Dynamic);
        assert_eq!(
            (args.stack.initial, args.stack.max, args.stack.guard),
            (4096, 16384, 4096)
        );
        assert_eq!(
            args.stack.to_string(),
            "policy=dynamic initial=4k max=16k guard=4k"
        );
    }

    #[test]
    fn every_argument_applies() {
        let (args, errors) = parse(
            "kstack.policy=fixed kstack.initial=8k kstack.max=1M kstack.guard=0x2000 \
             seed=0xdeadBEEF init=ps",
        );
        assert!(errors.is_empty(), "{:?}", messages(&errors));
        assert_eq!(args.stack.policy, StackPolicy::Fixed);
        assert_eq!(args.stack.initial, 8192);
        assert_eq!(args.stack.max, 1 << 20);
        assert_eq!(args.stack.guard, 0x2000);
        assert_eq!(args.seed, 0xdead_beef);
        assert_eq!(args.init, "ps");
        let (args, _) = parse("seed=18446744073709551615 kstack.max=64m kstack.guard=1m");
        assert_eq!(args.seed, u64::MAX);
        assert_eq!(args.stack.max, 64 << 20);
        assert_eq!(args.stack.guard, 1 << 20);
    }

    #[test]
    fn later_arguments_override_earlier_ones() {
        let (args, errors) = parse("seed=1 seed=2 kstack.policy=fixed kstack.policy=dynamic");
        assert!(errors.is_empty());
        assert_eq!(args.seed, 2);
        assert_eq!(args.stack.policy, StackPolicy::Dynamic);
        // A bad later argument keeps the earlier good one, and says so.
        let (args, errors) = parse("kstack.max=32k kstack.max=junk");
        assert_eq!(args.stack.max, 32 << 10);
        assert_eq!(
            messages(&errors),
            [
                "kstack.max=junk: not a size: unexpected 'j' (expected digits or 0x hex, \
              then an optional k, m or g) (32k kept)"
            ]
        );
    }

    #[test]
    fn both_quote_styles() {
        let (args, errors) = parse(r#"init="spawn 10 idle; stacks" seed=3"#);
        assert!(errors.is_empty());
        assert_eq!(args.init, "spawn 10 idle; stacks");
        assert_eq!(args.seed, 3);
        let (args, errors) = parse("init='spawn 10 idle;  stacks ;' quiet");
        assert!(errors.is_empty());
        assert_eq!(args.init, "spawn 10 idle;  stacks ;");
        assert_eq!(args.ignored, ["quiet"]);
        assert_eq!(
            split_commands(&args.init).collect::<Vec<_>>(),
            ["spawn 10 idle", "stacks"]
        );
    }

    #[test]
    fn quotes_anywhere_as_in_a_shell() {
        let (args, _) = parse(r#"init=a" b "'c "d'"#);
        assert_eq!(args.init, r#"a b c "d"#);
        let (args, _) = parse(r#""init=x y""#);
        assert_eq!(args.init, "x y");
        let (args, _) = parse(r#"init="it's""#);
        assert_eq!(args.init, "it's");
        let (args, errors) = parse(r#"init="""#);
        assert!(errors.is_empty());
        assert_eq!(args.init, "");
        assert_eq!(split_commands(&args.init).count(), 0);
        let (args, _) = parse(r#"kstack.max="32k""#);
        assert_eq!(args.stack.max, 32 << 10);
    }

    #[test]
    fn unterminated_quotes_are_errors() {
        let (args, errors) = parse(r#"seed=5 init="ps; stacks seed=9"#);
        assert_eq!(args.init, "demo");
        assert_eq!(args.seed, 5);
        assert_eq!(
            messages(&errors),
            [r#"init="ps; stacks seed=9: unterminated double quote (default "demo" kept)"#]
        );
        let (_, errors) = parse("foo='bar");
        assert_eq!(messages(&errors), ["foo='bar: unterminated single quote"]);
        let (args, errors) = parse("kstack.max='32k");
        assert_eq!(args.stack.max, 16 << 10);
        assert_eq!(
            messages(&errors),
            ["kstack.max='32k: unterminated single quote (default 16k kept)"]
        );
    }

    #[test]
    fn firmware_words_are_ignored_not_errors() {
        let (args, errors) = parse(
            "console=ttyAMA0,115200 console=tty1 quiet 8250.nr_uarts=1 kstack \
             root=/dev/mmcblk0p2 kstackx.max=1 =x",
        );
        assert!(errors.is_empty(), "{:?}", messages(&errors));
        assert_eq!(args.console, ConsoleChoice::Pl011);
        assert_eq!(
            args.ignored,
            [
                "console=tty1",
                "quiet",
                "8250.nr_uarts=1",
                "kstack",
                "root=/dev/mmcblk0p2",
                "kstackx.max=1",
                "=x"
            ]
        );
        assert_eq!(args.stack, StackConfig::default());
    }

    #[test]
    fn unknown_kstack_keys_are_errors() {
        let (args, errors) = parse("kstack.size=8k kstack. kstack.MAX=8k");
        assert_eq!(args.stack, StackConfig::default());
        assert_eq!(errors.len(), 3);
        assert_eq!(
            errors[0].to_string(),
            "kstack.size=8k: unknown setting kstack.size (known: kstack.policy, \
             kstack.initial, kstack.max, kstack.guard)"
        );
        assert_eq!(errors[1].kind, ArgErrorKind::UnknownStackKey(String::new()));
        assert_eq!(errors[2].kind, ArgErrorKind::UnknownStackKey("MAX".into()));
    }

    #[test]
    fn error_kinds_and_messages() {
        let cases: &[(&str, ArgErrorKind, &str)] = &[
            (
                "kstack.max=3000",
                ArgErrorKind::NotPageMultiple,
                "kstack.max=3000: not a multiple of 4096 (default 16k kept)",
            ),
            (
                "kstack.initial=0",
                ArgErrorKind::TooSmall { min: 4096 },
                "kstack.initial=0: smaller than the 4k minimum (default 4k kept)",
            ),
            (
                "kstack.max=128m",
                ArgErrorKind::TooLarge { max: 64 << 20 },
                "kstack.max=128m: larger than the 64m maximum (default 16k kept)",
            ),
            (
                "kstack.guard=2m",
                ArgErrorKind::TooLarge { max: 1 << 20 },
                "kstack.guard=2m: larger than the 1m maximum (default 4k kept)",
            ),
            (
                "kstack.guard=0",
                ArgErrorKind::TooSmall { min: 4096 },
                "kstack.guard=0: smaller than the 4k minimum (default 4k kept)",
            ),
            (
                "kstack.guard=",
                ArgErrorKind::BadSize(SizeError::Empty),
                "kstack.guard=: not a size: empty (default 4k kept)",
            ),
            (
                "kstack.initial=-4k",
                ArgErrorKind::BadSize(SizeError::Negative),
                "kstack.initial=-4k: not a size: negative (default 4k kept)",
            ),
            (
                "kstack.policy=lazy",
                ArgErrorKind::BadPolicy(PolicyError {
                    text: "lazy".into(),
                }),
                "kstack.policy=lazy: unknown policy \"lazy\" (expected dynamic or fixed) \
                 (default dynamic kept)",
            ),
            (
                "seed=abc",
                ArgErrorKind::BadNumber,
                "seed=abc: not a number (expected decimal or 0x hex) (default 2024 kept)",
            ),
            (
                "seed=-1",
                ArgErrorKind::BadNumber,
                "seed=-1: not a number (expected decimal or 0x hex) (default 2024 kept)",
            ),
            (
                "seed=18446744073709551616",
                ArgErrorKind::NumberTooLarge,
                "seed=18446744073709551616: does not fit in 64 bits (default 2024 kept)",
            ),
            (
                "seed",
                ArgErrorKind::MissingValue,
                "seed: missing value (expected KEY=VALUE) (default 2024 kept)",
            ),
            (
                "init",
                ArgErrorKind::MissingValue,
                "init: missing value (expected KEY=VALUE) (default \"demo\" kept)",
            ),
        ];
        for (line, kind, message) in cases {
            let (args, errors) = parse(line);
            assert_eq!(errors.len(), 1, "{line}");
            assert_eq!(&errors[0].kind, kind, "{line}");
            assert_eq!(errors[0].to_string(), *message);
            assert_eq!(args.stack, StackConfig::default(), "{line}");
            assert_eq!(args.seed, DEFAULT_SEED, "{line}");
        }
    }

    #[test]
    fn bad_arguments_do_not_stop_good_ones() {
        let (args, errors) =
            parse("kstack.max=3000 kstack.guard=8k seed=x seed=12 kstack.policy=fixed");
        assert_eq!(errors.len(), 2);
        assert_eq!(args.stack.max, 16 << 10);
        assert_eq!(args.stack.guard, 8 << 10);
        assert_eq!(args.seed, 12);
        assert_eq!(args.stack.policy, StackPolicy::Fixed);
    }

    #[test]
    fn initial_above_max_restores_both_defaults() {
        let (args, errors) = parse("kstack.initial=32k");
        assert_eq!((args.stack.initial, args.stack.max), (4096, 16384));
        assert_eq!(
            messages(&errors),
            ["kstack.initial=32k: initial 32k is larger than max 16k \
              (defaults 4k and 16k kept)"]
        );
        let (args, errors) = parse("kstack.max=8k kstack.initial=12k kstack.guard=8k");
        assert_eq!((args.stack.initial, args.stack.max), (4096, 16384));
        assert_eq!(args.stack.guard, 8192);
        assert_eq!(
            messages(&errors),
            [
                "kstack.initial=12k kstack.max=8k: initial 12k is larger than max 8k \
              (defaults 4k and 16k kept)"
            ]
        );
        // Order does not matter: the check runs after the whole line.
        let (args, errors) = parse("kstack.initial=32k kstack.max=64k");
        assert!(errors.is_empty());
        assert_eq!((args.stack.initial, args.stack.max), (32 << 10, 64 << 10));
        let (args, errors) = parse("kstack.initial=16k kstack.max=16k");
        assert!(errors.is_empty());
        assert_eq!(args.stack.initial, args.stack.max);
    }

    #[test]
    fn sizes() {
        let good = [
            ("4096", 4096),
            ("0", 0),
            ("4k", 4096),
            ("4K", 4096),
            ("16k", 16384),
            ("1m", 1 << 20),
            ("1M", 1 << 20),
            ("1g", 1 << 30),
            ("2G", 2 << 30),
            ("0x1000", 4096),
            ("0X1000", 4096),
            ("0x10k", 16 << 10),
            ("0xfffK", 0xfff << 10),
            ("007", 7),
        ];
        for (text, bytes) in good {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        let bad = [
            ("", SizeError::Empty),
            ("-4k", SizeError::Negative),
            ("-", SizeError::Negative),
            ("k", SizeError::NoDigits),
            ("0x", SizeError::NoDigits),
            ("0xk", SizeError::NoDigits),
            ("+4k", SizeError::Unexpected('+')),
            ("4kb", SizeError::Unexpected('k')),
            ("4q", SizeError::Unexpected('q')),
            (" 4k", SizeError::Unexpected(' ')),
            ("4 k", SizeError::Unexpected(' ')),
            ("4.5k", SizeError::Unexpected('.')),
            ("0x1g0", SizeError::Unexpected('g')),
            ("1e3", SizeError::Unexpected('e')),
            ("٤k", SizeError::Unexpected('٤')),
            ("18446744073709551616", SizeError::TooLarge),
            ("0x10000000000000000", SizeError::TooLarge),
            ("17179869184g", SizeError::TooLarge),
            ("99999999999999999999999999999k", SizeError::TooLarge),
        ];
        for (text, error) in bad {
            assert_eq!(parse_size(text), Err(error), "{text}");
        }
        assert_eq!(parse_size(&"9".repeat(1000)), Err(SizeError::TooLarge));
    }

    #[test]
    fn huge_numbers_everywhere() {
        let huge = "9".repeat(500);
        let line =
            format!("seed={huge} kstack.max={huge}k kstack.initial=0x{huge} kstack.guard={huge}");
        let (args, errors) = parse(&line);
        assert_eq!(errors.len(), 4);
        assert_eq!(errors[0].kind, ArgErrorKind::NumberTooLarge);
        for e in &errors[1..] {
            assert_eq!(e.kind, ArgErrorKind::BadSize(SizeError::TooLarge));
        }
        assert_eq!(args.stack, StackConfig::default());
        // Fits in usize but is far above the limit.
        let (_, errors) = parse("kstack.max=16g");
        assert_eq!(errors[0].kind, ArgErrorKind::TooLarge { max: MAX_STACK });
    }

    #[test]
    fn policy_round_trips() {
        for policy in [StackPolicy::Dynamic, StackPolicy::Fixed] {
            assert_eq!(policy.to_string().parse::<StackPolicy>(), Ok(policy));
        }
        assert!("Dynamic".parse::<StackPolicy>().is_err());
        assert!("".parse::<StackPolicy>().is_err());
    }

    #[test]
    fn split_commands_trims_and_skips_empties() {
        assert_eq!(
            split_commands(" help ;; ps;  ;stacks  ").collect::<Vec<_>>(),
            ["help", "ps", "stacks"]
        );
        assert_eq!(split_commands("").count(), 0);
        assert_eq!(split_commands(";;;").count(), 0);
        assert_eq!(split_commands("demo").collect::<Vec<_>>(), ["demo"]);
    }

    #[test]
    fn size_text_prefers_the_largest_unit() {
        assert_eq!(size_text(0), "0");
        assert_eq!(size_text(3000), "3000");
        assert_eq!(size_text(4096), "4k");
        assert_eq!(size_text(1 << 20), "1m");
        assert_eq!(size_text(3 << 30), "3g");
        assert_eq!(size_text(1536 << 10), "1536k");
    }

    #[test]
    fn random_lines_never_panic_and_stay_valid() {
        let pieces = [
            "kstack.policy=",
            "kstack.initial=",
            "kstack.max=",
            "kstack.guard=",
            "kstack.",
            "seed=",
            "init=",
            "console=ttyAMA0",
            "dynamic",
            "fixed",
            "4k",
            "16k",
            "64m",
            "1g",
            "0x1000",
            "3000",
            "0",
            "-",
            "k",
            "0x",
            "\"",
            "'",
            " ",
            "\t",
            ";",
            "=",
            "99999999999999999999",
            "é",
            "\u{0}",
        ];
        let mut rng = crate::rng::XorShift::new(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let mut line = String::new();
            for _ in 0..rng.next_u64() % 12 {
                line.push_str(rng.pick(&pieces));
                if rng.next_u64().is_multiple_of(3) {
                    line.push(' ');
                }
            }
            let outcome = std::panic::catch_unwind(|| parse(&line));
            let (args, errors) = outcome.unwrap_or_else(|_| panic!("panicked on {line:?}"));
            assert_valid(&args.stack);
            for e in &errors {
                assert!(!e.to_string().is_empty());
            }
            let words = line.split_whitespace().count();
            assert!(args.ignored.len() <= words, "{line:?}");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = crate::rng::XorShift::new(12345);
        for _ in 0..5_000 {
            let len = (rng.next_u64() % 64) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| (rng.next_u64() % 128) as u8).collect();
            let line = String::from_utf8_lossy(&bytes).into_owned();
            let (args, _) = std::panic::catch_unwind(|| parse(&line))
                .unwrap_or_else(|_| panic!("panicked on {line:?}"));
            assert_valid(&args.stack);
            let _ = std::panic::catch_unwind(|| parse_size(&line))
                .unwrap_or_else(|_| panic!("parse_size panicked on {line:?}"));
        }
    }

    #[test]
    fn console_choice_names() {
        assert_eq!(console_choice(""), ConsoleChoice::Pl011);
        assert_eq!(console_choice("init=cpus"), ConsoleChoice::Pl011);
        for line in [
            "console=mini",
            "console=ttyS0",
            "console=ttyS0,115200",
            "seed=3 console=\"mini\" init=\"cpus; poweroff\"",
            "console=pl011 console=mini",
        ] {
            assert_eq!(console_choice(line), ConsoleChoice::Mini, "{line}");
        }
        for line in [
            "console=pl011",
            "console=ttyAMA0,115200",
            "console=mini console=pl011",
        ] {
            assert_eq!(console_choice(line), ConsoleChoice::Pl011, "{line}");
        }
        // A bad value is ignored before the console exists; the earlier choice stays.
        assert_eq!(
            console_choice("console=mini console=tty9"),
            ConsoleChoice::Mini
        );
        assert_eq!(console_choice("console=serial1"), ConsoleChoice::Pl011);
        assert_eq!(console_choice("console"), ConsoleChoice::Pl011);
    }

    #[test]
    fn console_is_a_known_argument() {
        let (args, errors) = parse("console=mini");
        assert!(errors.is_empty(), "{:?}", messages(&errors));
        assert!(args.ignored.is_empty());
        assert_eq!(args.console, ConsoleChoice::Mini);
        // Consoles this kernel does not drive are firmware words, reported as ignored.
        let (args, errors) = parse("console=mini console=tty1 console console=\"ttyS0");
        assert!(errors.is_empty(), "{:?}", messages(&errors));
        assert_eq!(args.console, ConsoleChoice::Mini);
        assert_eq!(args.ignored, ["console=tty1", "console", "console=\"ttyS0"]);
    }
}
