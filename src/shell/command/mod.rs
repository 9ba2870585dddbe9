//! The command parser: one typed line to one [`Command`], or a [`ParseError`] saying what
//! is wrong with it.
//!
//! Owns the command grammar and its limits. Calls `crate::cmdline` for the stack policy and
//! size syntax shared with the kernel command line; runs nothing.

use alloc::string::{String, ToString};
use core::fmt;

use crate::cmdline::{parse_size, SizeError, StackPolicy};

/// Most threads one `spawn` may ask for.
pub const MAX_SPAWN: usize = 10_000_000;

/// Limit on the `deep:SIZE` recursion depth: a stack reservation this large is already far
/// outside anything the kernel maps, so bigger values are typing mistakes.
pub const MAX_DEEP_BYTES: usize = 1 << 30;

/// Longest piece of user input quoted back in an error message, in characters.
const QUOTE_MAX: usize = 32;

/// A parsed shell command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `help`: list the commands.
    Help,
    /// `mem`: physical memory.
    Mem,
    /// `cpus`: CPUs online.
    Cpus,
    /// `ps [N]`: one row per thread, at most `limit` rows (a default when `None`).
    Ps {
        /// Most rows to show, at least 1.
        limit: Option<usize>,
    },
    /// `spawn N PROFILE [dynamic|fixed]`: start workload threads.
    Spawn {
        /// Threads to start, `1..=MAX_SPAWN`.
        count: usize,
        /// What each thread does.
        profile: Profile,
        /// Stack policy; the kernel's default (`kstack.policy=`) when `None`.
        policy: Option<StackPolicy>,
    },
    /// `settle`: wait until every workload thread has reached its resting point.
    Settle,
    /// `stacks`: stack memory, now.
    Stacks,
    /// `trim`: trim the stacks of sleeping threads.
    Trim,
    /// `kill all|TID`: terminate workload threads.
    Kill(KillTarget),
    /// `bench [quick|scale]`: benchmarks, dynamic against fixed.
    Bench {
        /// Which benchmarks, at what size.
        plan: BenchPlan,
    },
    /// `demo`: the showcase `make run` starts with.
    Demo,
    /// `poweroff`: stop the machine.
    Poweroff,
}

/// What `bench` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchPlan {
    /// `bench`: every benchmark at full size.
    Full,
    /// `bench quick`: every benchmark, small sizes (for tests).
    Quick,
    /// `bench scale`: only the `scale` benchmark, full size (for a boot without `-icount`).
    Scale,
    /// `bench strategies [quick]`: every workload and the switch, spawn and `svc` costs,
    /// fixed against this boot's `kstack.strategy`, one `STRATEGY` line each.
    Strategies {
        /// Few threads and operations (for tests).
        quick: bool,
    },
}

/// Which threads `kill` terminates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillTarget {
    /// Every workload thread.
    All,
    /// One thread, by id.
    Tid(u64),
}

/// What a workload thread does (see the brief's workload profiles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Sleeps until killed.
    Idle,
    /// The article's population of stack depths, then sleeps.
    Mix,
    /// Recurses to `bytes` of stack and sleeps there.
    Deep {
        /// Stack depth to reach, `1..MAX_DEEP_BYTES`.
        bytes: usize,
    },
    /// Recurses without bound until the guard stops it.
    Overflow,
    /// Recurses to random depths, sleeps, repeats.
    Churn,
    /// Deep recursion through many tiny frames (the reviewer's case against a frame-size
    /// threshold), then sleeps.
    Chain,
    /// One function with a multi-KiB local buffer, then sleeps.
    Bigframe,
    /// Compresses and inflates a buffer with `miniz_oxide` (third-party code), then sleeps.
    Inflate,
    /// Parses and prints a JSON document with `serde_json` (third-party code), then sleeps.
    Json,
}

impl Profile {
    /// The profiles that run a fixed piece of work, checking its result, in the order the
    /// `strategies` command measures them (besides `mix` and `churn`).
    pub const CHECKED: [Profile; 4] = [
        Profile::Chain,
        Profile::Bigframe,
        Profile::Inflate,
        Profile::Json,
    ];
}

impl fmt::Display for Profile {
    /// The text `spawn` accepts for this profile; a deep size is written in the largest unit
    /// that divides it, so printing and parsing again gives the same profile.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Profile::Idle => f.write_str("idle"),
            Profile::Mix => f.write_str("mix"),
            Profile::Deep { bytes } if bytes != 0 && bytes % (1 << 20) == 0 => {
                write!(f, "deep:{}m", bytes >> 20)
            }
            Profile::Deep { bytes } if bytes != 0 && bytes % (1 << 10) == 0 => {
                write!(f, "deep:{}k", bytes >> 10)
            }
            Profile::Deep { bytes } => write!(f, "deep:{bytes}"),
            Profile::Overflow => f.write_str("overflow"),
            Profile::Churn => f.write_str("churn"),
            Profile::Chain => f.write_str("chain"),
            Profile::Bigframe => f.write_str("bigframe"),
            Profile::Inflate => f.write_str("inflate"),
            Profile::Json => f.write_str("json"),
        }
    }
}

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
                        text: text.to_string(),
                        expected: "'quick'",
                    })
                }
                (Some(_), Some(_)) => return Err(ParseError::TooManyArguments("bench")),
                (Some(text), None) => {
                    return Err(ParseError::UnknownOption {
                        command: "bench",
                        text: text.to_string(),
                        expected: "'quick', 'scale' or 'strategies'",
                    })
                }
            };
            Command::Bench { plan }
        }
        _ => return Err(ParseError::UnknownCommand(name.to_string())),
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
            text.parse::<StackPolicy>()
                .map_err(|_| ParseError::UnknownPolicy(text.to_string()))?,
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
            None => return Err(ParseError::UnknownProfile(text.to_string())),
        },
    })
}

fn deep_size(text: &str) -> Result<usize, ParseError> {
    let bad = |reason: String| ParseError::BadSize {
        text: text.to_string(),
        reason,
    };
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
        text: text.to_string(),
        range: "1 byte to under 1 GiB",
    };
    match parse_size(text) {
        Ok(bytes) if bytes != 0 && bytes < MAX_DEEP_BYTES => Ok(bytes),
        Ok(_) | Err(SizeError::TooLarge) => Err(out_of_range()),
        Err(e) => Err(bad(alloc::format!("is not a size: {e}"))),
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
                text: text.to_string(),
                range: "0 to 18446744073709551615",
            }),
        },
        Some(text) => Err(ParseError::BadKillTarget(Some(text.to_string()))),
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
            text: text.to_string(),
        });
    }
    match text.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ParseError::OutOfRange {
            command,
            what,
            text: text.to_string(),
            range,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command {
        match parse(line) {
            Ok(Some(c)) => c,
            other => panic!("{line:?} parsed as {other:?}"),
        }
    }

    fn err(line: &str) -> String {
        match parse(line) {
            Err(e) => e.to_string(),
            other => panic!("{line:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn empty_lines_are_nothing() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("   \t  "), Ok(None));
    }

    #[test]
    fn argument_free_commands() {
        assert_eq!(ok("help"), Command::Help);
        assert_eq!(ok("mem"), Command::Mem);
        assert_eq!(ok("  cpus  "), Command::Cpus);
        assert_eq!(ok("settle"), Command::Settle);
        assert_eq!(ok("stacks"), Command::Stacks);
        assert_eq!(ok("trim"), Command::Trim);
        assert_eq!(ok("demo"), Command::Demo);
        assert_eq!(ok("poweroff"), Command::Poweroff);
        for name in [
            "help", "mem", "cpus", "settle", "stacks", "trim", "demo", "poweroff",
        ] {
            assert_eq!(
                err(&alloc::format!("{name} x")),
                alloc::format!("too many arguments for '{name}'")
            );
        }
    }

    #[test]
    fn commands_are_lower_case() {
        assert_eq!(err("MEM"), "unknown command 'MEM' (type 'help')");
        assert_eq!(err("Help"), "unknown command 'Help' (type 'help')");
        assert_eq!(err("foo bar"), "unknown command 'foo' (type 'help')");
    }

    #[test]
    fn ps_limits() {
        assert_eq!(ok("ps"), Command::Ps { limit: None });
        assert_eq!(ok("ps 5"), Command::Ps { limit: Some(5) });
        assert_eq!(err("ps 0"), "ps: limit '0' is out of range (at least 1)");
        assert_eq!(err("ps x"), "ps: limit 'x' is not a number");
        assert_eq!(err("ps -1"), "ps: limit '-1' is not a number");
        assert_eq!(
            err("ps 99999999999999999999"),
            "ps: limit '99999999999999999999' is out of range (at least 1)"
        );
        assert_eq!(err("ps 1 2"), "too many arguments for 'ps'");
    }

    #[test]
    fn spawn_forms() {
        assert_eq!(
            ok("spawn 10 idle"),
            Command::Spawn {
                count: 10,
                profile: Profile::Idle,
                policy: None
            }
        );
        assert_eq!(
            ok("spawn 1 mix fixed"),
            Command::Spawn {
                count: 1,
                profile: Profile::Mix,
                policy: Some(StackPolicy::Fixed)
            }
        );
        assert_eq!(
            ok("spawn 10000000 churn dynamic"),
            Command::Spawn {
                count: MAX_SPAWN,
                profile: Profile::Churn,
                policy: Some(StackPolicy::Dynamic)
            }
        );
        assert_eq!(
            ok("spawn 3 overflow"),
            Command::Spawn {
                count: 3,
                profile: Profile::Overflow,
                policy: None
            }
        );
    }

    #[test]
    fn spawn_errors() {
        assert_eq!(
            err("spawn"),
            "spawn: missing count (usage: spawn N PROFILE [dynamic|fixed])"
        );
        assert_eq!(
            err("spawn 4"),
            "spawn: missing profile (usage: spawn N PROFILE [dynamic|fixed])"
        );
        assert_eq!(err("spawn x idle"), "spawn: count 'x' is not a number");
        assert_eq!(err("spawn +4 idle"), "spawn: count '+4' is not a number");
        assert_eq!(
            err("spawn 0 idle"),
            "spawn: count '0' is out of range (1 to 10000000)"
        );
        assert_eq!(
            err("spawn 10000001 idle"),
            "spawn: count '10000001' is out of range (1 to 10000000)"
        );
        assert_eq!(
            err("spawn 99999999999999999999 idle"),
            "spawn: count '99999999999999999999' is out of range (1 to 10000000)"
        );
        assert_eq!(
            err("spawn 4 big"),
            "spawn: unknown profile 'big' (idle, mix, deep:SIZE, overflow, churn, chain, bigframe, inflate, json)"
        );
        assert_eq!(
            err("spawn 4 IDLE"),
            "spawn: unknown profile 'IDLE' (idle, mix, deep:SIZE, overflow, churn, chain, bigframe, inflate, json)"
        );
        assert_eq!(
            err("spawn 4 idle static"),
            "spawn: unknown policy 'static' (dynamic, fixed)"
        );
        assert_eq!(
            err("spawn 4 idle fixed x"),
            "too many arguments for 'spawn'"
        );
    }

    #[test]
    fn deep_sizes() {
        let deep = |line: &str| match ok(line) {
            Command::Spawn {
                profile: Profile::Deep { bytes },
                ..
            } => bytes,
            other => panic!("{line:?} parsed as {other:?}"),
        };
        assert_eq!(deep("spawn 1 deep:4096"), 4096);
        assert_eq!(deep("spawn 1 deep:8k"), 8192);
        assert_eq!(deep("spawn 1 deep:16K"), 16384);
        assert_eq!(deep("spawn 1 deep:1m"), 1 << 20);
        assert_eq!(deep("spawn 1 deep:0x1000"), 4096);
        assert_eq!(deep("spawn 1 deep:1"), 1);
        assert_eq!(deep("spawn 1 deep:1073741823"), MAX_DEEP_BYTES - 1);
        assert_eq!(
            err("spawn 1 deep:"),
            "spawn: missing deep size (usage: deep:SIZE, e.g. deep:8k)"
        );
        assert_eq!(
            err("spawn 1 deep:0"),
            "spawn: deep size '0' is out of range (1 byte to under 1 GiB)"
        );
        assert_eq!(
            err("spawn 1 deep:1g"),
            "spawn: deep size '1g' is out of range (1 byte to under 1 GiB)"
        );
        assert_eq!(
            err("spawn 1 deep:1073741824"),
            "spawn: deep size '1073741824' is out of range (1 byte to under 1 GiB)"
        );
        assert_eq!(
            err("spawn 1 deep:99999999999999999999"),
            "spawn: deep size '99999999999999999999' is out of range (1 byte to under 1 GiB)"
        );
        assert_eq!(
            err("spawn 1 deep:4q"),
            "spawn: deep size '4q' is not a size: unexpected 'q' \
             (expected digits or 0x hex, then an optional k, m or g)"
        );
        for bad in ["x", "4q", "0x", "-1", "4kb", "+4"] {
            let e = err(&alloc::format!("spawn 1 deep:{bad}"));
            assert!(
                e.starts_with(&alloc::format!("spawn: deep size '{bad}' ")),
                "{e}"
            );
        }
    }

    #[test]
    fn profile_display_round_trips() {
        let profiles = [
            Profile::Idle,
            Profile::Mix,
            Profile::Overflow,
            Profile::Churn,
            Profile::Chain,
            Profile::Bigframe,
            Profile::Inflate,
            Profile::Json,
            Profile::Deep { bytes: 1 },
            Profile::Deep { bytes: 1000 },
            Profile::Deep { bytes: 8192 },
            Profile::Deep { bytes: 3 << 20 },
            Profile::Deep {
                bytes: (1 << 20) + 1024,
            },
        ];
        for p in profiles {
            let text = p.to_string();
            assert_eq!(
                ok(&alloc::format!("spawn 1 {text}")),
                Command::Spawn {
                    count: 1,
                    profile: p,
                    policy: None
                },
                "{text}"
            );
        }
        assert_eq!(Profile::Idle.to_string(), "idle");
        assert_eq!(Profile::Deep { bytes: 8192 }.to_string(), "deep:8k");
        assert_eq!(Profile::Deep { bytes: 1 << 20 }.to_string(), "deep:1m");
        assert_eq!(Profile::Deep { bytes: 1000 }.to_string(), "deep:1000");
    }

    #[test]
    fn kill_targets() {
        assert_eq!(ok("kill all"), Command::Kill(KillTarget::All));
        assert_eq!(ok("kill 42"), Command::Kill(KillTarget::Tid(42)));
        assert_eq!(
            ok("kill 18446744073709551615"),
            Command::Kill(KillTarget::Tid(u64::MAX))
        );
        assert_eq!(err("kill"), "kill: expected 'all' or a thread id");
        assert_eq!(
            err("kill foo"),
            "kill: expected 'all' or a thread id, not 'foo'"
        );
        assert_eq!(
            err("kill -3"),
            "kill: expected 'all' or a thread id, not '-3'"
        );
        assert_eq!(
            err("kill 99999999999999999999"),
            "kill: thread id '99999999999999999999' is out of range (0 to 18446744073709551615)"
        );
        assert_eq!(err("kill all 3"), "too many arguments for 'kill'");
    }

    #[test]
    fn bench_options() {
        assert_eq!(
            ok("bench"),
            Command::Bench {
                plan: BenchPlan::Full
            }
        );
        assert_eq!(
            ok("bench quick"),
            Command::Bench {
                plan: BenchPlan::Quick
            }
        );
        assert_eq!(
            ok("bench scale"),
            Command::Bench {
                plan: BenchPlan::Scale
            }
        );
        assert_eq!(
            err("bench slow"),
            "bench: unknown option 'slow' (expected 'quick', 'scale' or 'strategies')"
        );
        assert_eq!(err("bench quick quick"), "too many arguments for 'bench'");
        assert_eq!(
            ok("bench strategies"),
            Command::Bench {
                plan: BenchPlan::Strategies { quick: false }
            }
        );
        assert_eq!(
            ok("bench strategies quick"),
            Command::Bench {
                plan: BenchPlan::Strategies { quick: true }
            }
        );
        assert_eq!(
            err("bench strategies slow"),
            "bench strategies: unknown option 'slow' (expected 'quick')"
        );
        assert_eq!(
            err("bench strategies quick x"),
            "too many arguments for 'bench'"
        );
    }

    #[test]
    fn long_and_non_ascii_input_is_quoted_safely() {
        // Multi-byte characters straddle the cut point; the message must stay valid.
        let word = "é".repeat(40);
        let e = err(&word);
        assert!(
            e.contains(&alloc::format!("'{}...'", "é".repeat(QUOTE_MAX))),
            "{e}"
        );
        // The message quotes the word cut short, then lists the nine profiles.
        let e = err(&alloc::format!("spawn 1 {}", "x".repeat(300)));
        assert!(e.len() < 140, "{e}");
        assert!(err("mem ünïcode").starts_with("too many arguments"));
    }
}
