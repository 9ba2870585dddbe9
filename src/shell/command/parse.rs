//! The command grammar: a line split into words, each command's arguments checked in order,
//! the first thing wrong reported. Owns [`parse`] and its helpers. Calls `crate::cmdline` for
//! sizes and the stack policy.

use super::*;
use crate::cmdline::{parse_size, SizeError, StackPolicy};

const SPAWN_USAGE: &str = "spawn N PROFILE [dynamic|fixed]";

/// Parses one line. `Ok(None)` for a line that is empty or only whitespace.
///
/// Words are separated by any whitespace; commands and keywords are lower-case.
///
/// # Errors
///
/// A [`ParseError`] naming the first thing wrong with the line.
pub fn parse(line: &str) -> Result<Option<Command>, ParseError> {
    let mut words = line.split_whitespace();
    let Some(name) = words.next() else {
        return Ok(None);
    };
    let args: [Option<&str>; 3] = [words.next(), words.next(), words.next()];
    let extra = words.next().is_some();
    let command = match name {
        "help" => no_args(Command::Help, "help", args)?,
        "mem" => no_args(Command::Mem, "mem", args)?,
        "cpus" => no_args(Command::Cpus, "cpus", args)?,
        "settle" => no_args(Command::Settle, "settle", args)?,
        "stacks" => no_args(Command::Stacks, "stacks", args)?,
        "trim" => no_args(Command::Trim, "trim", args)?,
        "demo" => no_args(Command::Demo, "demo", args)?,
        "poweroff" => no_args(Command::Poweroff, "poweroff", args)?,
        "ps" => {
            at_most(1, "ps", args)?;
            let limit = match args[0] {
                None => None,
                Some(text) => Some(number(text, "ps", "limit", 1, usize::MAX, "at least 1")?),
            };
            Command::Ps { limit }
        }
        "spawn" => {
            if extra {
                return Err(ParseError::TooManyArguments("spawn"));
            }
            spawn(args)?
        }
        "kill" => {
            at_most(1, "kill", args)?;
            Command::Kill(kill_target(args[0])?)
        }
        "bench" => {
            at_most(2, "bench", args)?;
            let plan = match (args[0], args[1]) {
                (None, _) => BenchPlan::Full,
                (Some("quick"), None) => BenchPlan::Quick,
                (Some("scale"), None) => BenchPlan::Scale,
                (Some("strategies"), None) => BenchPlan::Strategies { quick: false },
                (Some("strategies"), Some("quick")) => BenchPlan::Strategies { quick: true },
                (Some("strategies"), Some(text)) => {
                    return Err(ParseError::UnknownOption {
                        command: "bench strategies",
                        text: Typed::new(text),
                        expected: "'quick'",
                    })
                }
                (Some(_), Some(_)) => return Err(ParseError::TooManyArguments("bench")),
                (Some(text), None) => {
                    return Err(ParseError::UnknownOption {
                        command: "bench",
                        text: Typed::new(text),
                        expected: "'quick', 'scale' or 'strategies'",
                    })
                }
            };
            Command::Bench { plan }
        }
        _ => return Err(ParseError::UnknownCommand(Typed::new(name))),
    };
    Ok(Some(command))
}

fn no_args(
    command: Command,
    name: &'static str,
    args: [Option<&str>; 3],
) -> Result<Command, ParseError> {
    at_most(0, name, args)?;
    Ok(command)
}

fn at_most(n: usize, name: &'static str, args: [Option<&str>; 3]) -> Result<(), ParseError> {
    if args.iter().skip(n).any(Option::is_some) {
        return Err(ParseError::TooManyArguments(name));
    }
    Ok(())
}

fn spawn(args: [Option<&str>; 3]) -> Result<Command, ParseError> {
    let missing = |what| ParseError::Missing {
        command: "spawn",
        what,
        usage: SPAWN_USAGE,
    };
    let count_text = args[0].ok_or_else(|| missing("count"))?;
    let count = number(count_text, "spawn", "count", 1, MAX_SPAWN, "1 to 10000000")?;
    let profile = profile(args[1].ok_or_else(|| missing("profile"))?)?;
    let policy = match args[2] {
        None => None,
        Some(text) => Some(
            // Matched here rather than through `FromStr`, whose error holds a `String`: an
            // error must not need the heap.
            match text {
                "dynamic" => StackPolicy::Dynamic,
                "fixed" => StackPolicy::Fixed,
                _ => return Err(ParseError::UnknownPolicy(Typed::new(text))),
            },
        ),
    };
    Ok(Command::Spawn {
        count,
        profile,
        policy,
    })
}

fn profile(text: &str) -> Result<Profile, ParseError> {
    Ok(match text {
        "idle" => Profile::Idle,
        "mix" => Profile::Mix,
        "overflow" => Profile::Overflow,
        "churn" => Profile::Churn,
        "chain" => Profile::Chain,
        "bigframe" => Profile::Bigframe,
        "inflate" => Profile::Inflate,
        "json" => Profile::Json,
        _ => match text.strip_prefix("deep:") {
            Some(size) => Profile::Deep {
                bytes: deep_size(size)?,
            },
            None => return Err(ParseError::UnknownProfile(Typed::new(text))),
        },
    })
}

fn deep_size(text: &str) -> Result<usize, ParseError> {
    if text.is_empty() {
        return Err(ParseError::Missing {
            command: "spawn",
            what: "deep size",
            usage: "deep:SIZE, e.g. deep:8k",
        });
    }
    let out_of_range = || ParseError::OutOfRange {
        command: "spawn",
        what: "deep size",
        text: Typed::new(text),
        range: "1 byte to under 1 GiB",
    };
    match parse_size(text) {
        Ok(bytes) if bytes != 0 && bytes < MAX_DEEP_BYTES => Ok(bytes),
        Ok(_) | Err(SizeError::TooLarge) => Err(out_of_range()),
        Err(reason) => Err(ParseError::BadSize {
            text: Typed::new(text),
            reason,
        }),
    }
}

fn kill_target(arg: Option<&str>) -> Result<KillTarget, ParseError> {
    match arg {
        None => Err(ParseError::BadKillTarget(None)),
        Some("all") => Ok(KillTarget::All),
        Some(text) if is_decimal(text) => match text.parse::<u64>() {
            Ok(tid) => Ok(KillTarget::Tid(tid)),
            Err(_) => Err(ParseError::OutOfRange {
                command: "kill",
                what: "thread id",
                text: Typed::new(text),
                range: "0 to 18446744073709551615",
            }),
        },
        Some(text) => Err(ParseError::BadKillTarget(Some(Typed::new(text)))),
    }
}

fn is_decimal(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// A decimal number in `min..=max`. Only digits are accepted (no sign), and a run of digits
/// too long for the type is reported as out of range rather than as "not a number".
fn number(
    text: &str,
    command: &'static str,
    what: &'static str,
    min: usize,
    max: usize,
    range: &'static str,
) -> Result<usize, ParseError> {
    if !is_decimal(text) {
        return Err(ParseError::NotANumber {
            command,
            what,
            text: Typed::new(text),
        });
    }
    match text.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ParseError::OutOfRange {
            command,
            what,
            text: Typed::new(text),
            range,
        }),
    }
}
