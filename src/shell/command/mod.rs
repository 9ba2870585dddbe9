//! The command parser: one typed line to one [`Command`], or a [`ParseError`] saying what
//! is wrong with it.
//!
//! Owns the command grammar and its limits. Calls `crate::cmdline` for the stack policy and
//! size syntax shared with the kernel command line; runs nothing.
//!
//! The files: this one (what a command is: [`Command`] and its parts), `parse` (the grammar,
//! word by word: [`parse`]), `error` (what can be wrong with a line, and the message for it:
//! [`ParseError`]) and `tests`.

mod error;
mod parse;

pub use error::{ParseError, Typed};
pub use parse::parse;

#[cfg(test)]
use alloc::string::String;
use core::fmt;

use crate::cmdline::StackPolicy;

/// Most threads one `spawn` may ask for.
pub const MAX_SPAWN: usize = 10_000_000;

/// Limit on the `deep:SIZE` recursion depth: a stack reservation this large is already far
/// outside anything the kernel maps, so bigger values are typing mistakes.
pub const MAX_DEEP_BYTES: usize = 1 << 30;

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

#[cfg(test)]
mod tests;
