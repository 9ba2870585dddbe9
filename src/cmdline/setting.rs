//! The settings a key names, how a value applies to [`KernelArgs`], and the value a bad
//! argument leaves in place.
use super::*;

/// A setting the command line can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Setting {
    Init,
    Seed,
    Console,
    Policy,
    Initial,
    Max,
    Guard,
    ParkAfter,
    Strategy,
    Lookahead,
    Semihosting,
}

pub(super) enum Key<'a> {
    Known(Setting),
    UnknownStack(&'a str),
    Other,
}

fn on_off(v: Option<bool>) -> String {
    match v {
        Some(true) => "on",
        Some(false) => "off",
        None => "the board's",
    }
    .to_string()
}

impl Setting {
    pub(super) fn from_key(key: &str) -> Key<'_> {
        match key {
            "init" => Key::Known(Setting::Init),
            "seed" => Key::Known(Setting::Seed),
            "console" => Key::Known(Setting::Console),
            "semihosting" => Key::Known(Setting::Semihosting),
            _ => match key.strip_prefix("kstack.") {
                Some("policy") => Key::Known(Setting::Policy),
                Some("initial") => Key::Known(Setting::Initial),
                Some("max") => Key::Known(Setting::Max),
                Some("guard") => Key::Known(Setting::Guard),
                Some("park_after") => Key::Known(Setting::ParkAfter),
                Some("strategy") => Key::Known(Setting::Strategy),
                Some("lookahead") => Key::Known(Setting::Lookahead),
                Some(sub) => Key::UnknownStack(sub),
                None => Key::Other,
            },
        }
    }

    pub(super) fn apply(self, value: &str, args: &mut KernelArgs) -> Result<(), ArgErrorKind> {
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
            Setting::ParkAfter => args.stack.park_after_ms = parse_park_after(value)?,
            Setting::Strategy => {
                args.stack.strategy = value.parse().map_err(ArgErrorKind::BadStrategy)?;
            }
            Setting::Lookahead => args.stack.lookahead = lookahead_size(value)?,
            Setting::Semihosting => {
                args.semihosting = Some(match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(ArgErrorKind::BadChoice("on or off")),
                })
            }
        }
        Ok(())
    }

    /// How the value this setting keeps reads in an error, e.g. `default 16k`.
    pub(super) fn kept(self, args: &KernelArgs) -> String {
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
            Setting::ParkAfter => (
                park_after_text(args.stack.park_after_ms),
                park_after_text(defaults.stack.park_after_ms),
            ),
            Setting::Strategy => (
                args.stack.strategy.to_string(),
                defaults.stack.strategy.to_string(),
            ),
            Setting::Lookahead => (
                size_text(args.stack.lookahead),
                size_text(defaults.stack.lookahead),
            ),
            Setting::Semihosting => (on_off(args.semihosting), on_off(defaults.semihosting)),
        };
        if now == default {
            alloc::format!("default {now}")
        } else {
            now
        }
    }
}

/// `off`, or decimal milliseconds up to [`MAX_PARK_AFTER_MS`].
fn parse_park_after(value: &str) -> Result<Option<u32>, ArgErrorKind> {
    if value == "off" {
        return Ok(None);
    }
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ArgErrorKind::BadParkAfter);
    }
    match parse_digits(value, 10) {
        Ok(ms) if ms <= MAX_PARK_AFTER_MS => Ok(Some(ms as u32)),
        _ => Err(ArgErrorKind::BadParkAfter),
    }
}

/// `kstack.park_after` as the command line writes it.
pub fn park_after_text(ms: Option<u32>) -> String {
    match ms {
        Some(ms) => ms.to_string(),
        None => "off".to_string(),
    }
}

pub(super) fn checked_size(value: &str, min: usize, max: usize) -> Result<usize, ArgErrorKind> {
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

/// A `kstack.lookahead`: any byte count (not only whole pages) from [`MIN_LOOKAHEAD`] to
/// [`MAX_LOOKAHEAD`], a multiple of 16 like SP.
pub(super) fn lookahead_size(value: &str) -> Result<usize, ArgErrorKind> {
    let bytes = parse_size(value).map_err(ArgErrorKind::BadSize)?;
    if bytes < MIN_LOOKAHEAD {
        Err(ArgErrorKind::TooSmall { min: MIN_LOOKAHEAD })
    } else if bytes > MAX_LOOKAHEAD {
        Err(ArgErrorKind::TooLarge { max: MAX_LOOKAHEAD })
    } else if !bytes.is_multiple_of(16) {
        Err(ArgErrorKind::NotMultipleOf16)
    } else {
        Ok(bytes)
    }
}

/// A `u64` in decimal or `0x` hex, digits only.
pub(super) fn parse_u64(value: &str) -> Result<u64, ArgErrorKind> {
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
