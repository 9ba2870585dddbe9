//! The shell: the kernel's user interface on the serial console.
//!
//! Owns the line editor ([`mod@line`]), the command grammar ([`command`]), the boundary to the
//! kernel (the [`Backend`] trait, which the kernel implements and tests fake) and the
//! console output format that people and scripts read. It calls only `crate::cmdline` (size
//! syntax, stack policy, `init=` splitting) and the backend it is handed; it never touches
//! the machine itself, so all of it builds and is tested on the host.
//!
//! The files: this one (running lines), [`mod@line`], [`command`], [`api`] (the [`Backend`]
//! trait and its reports), `output` (what each command prints) and `format` (numbers and
//! tables). Built for the target only, the kernel's side of the shell: [`backend`] (the
//! [`Backend`] the kernel implements), [`workload`] (the thread bodies `spawn` starts),
//! [`mod@bench`] (the benchmarks), [`strategies`] (`bench strategies`), [`checked`] (the
//! workloads that check their results) and [`demo`] (the showcase `make run` opens with).

pub mod api;
#[cfg(target_os = "none")]
pub mod backend;
#[cfg(target_os = "none")]
pub mod bench;
#[cfg(target_os = "none")]
pub mod checked;
pub mod command;
#[cfg(target_os = "none")]
pub mod demo;
pub mod line;
#[cfg(target_os = "none")]
pub mod strategies;
#[cfg(target_os = "none")]
pub mod workload;

#[cfg(test)]
use alloc::format;
#[cfg(test)]
use alloc::string::{String, ToString};
#[cfg(test)]
use alloc::vec::Vec;
use core::fmt::{self, Write};

pub use api::*;
pub use command::{parse, BenchPlan, Command, KillTarget, ParseError, Profile};
pub use line::{Line, LineEditor, LineEvent};

use crate::cmdline::{split_commands, StackPolicy};

/// The prompt printed before every command, interactive or from `init=`.
pub const PROMPT: &str = "dynstack> ";

/// Rows `ps` shows when no limit is given; `ps N` shows more (or fewer).
pub const DEFAULT_PS_LIMIT: usize = 20;

/// Linux's fixed kernel stack per thread on arm64 and x86-64, the baseline `stacks` compares
/// against.
pub const LINUX_STACK_KIB: u64 = 16;

/// Writes one line to the console. Console writes cannot usefully fail: there is nowhere
/// else to report that, so errors are dropped here once instead of at every call.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {
        let _ = writeln!($out, $($arg)*);
    };
}

mod format;
mod output;

pub use format::*;
use output::*;

/// Parses and runs one line, printing its output to `out`. An empty line does nothing; a
/// line that does not parse prints `error: ...` and calls nothing on the backend.
pub fn execute(backend: &mut dyn Backend, line: &str, out: &mut dyn Write) {
    match parse(line) {
        Ok(None) => {}
        Ok(Some(command)) => run(backend, &command, out),
        Err(e) => {
            say!(out, "error: {e}");
        }
    }
}

/// Runs the `;`-separated commands of `init=`, each echoed after a prompt so that a boot
/// log reads like an interactive session.
pub fn run_init(backend: &mut dyn Backend, init: &str, out: &mut dyn Write) {
    for cmd in split_commands(init) {
        say!(out, "{PROMPT}{cmd}");
        execute(backend, cmd, out);
    }
}

/// The interactive shell: reads bytes forever, runs each line, prompts again.
pub fn interactive(
    backend: &mut dyn Backend,
    read_byte: &mut dyn FnMut() -> u8,
    out: &mut dyn Write,
) -> ! {
    let mut shell = Shell::new();
    shell.start(out);
    loop {
        shell.feed(backend, read_byte(), out);
    }
}

/// The interactive shell's state between bytes, so the loop body can be tested.
#[derive(Debug, Clone, Default)]
pub struct Shell {
    editor: LineEditor,
}

impl Shell {
    /// A shell with nothing typed yet.
    pub const fn new() -> Self {
        Self {
            editor: LineEditor::new(),
        }
    }

    /// Greets and prints the first prompt.
    pub fn start(&mut self, out: &mut dyn Write) {
        say!(out, "type 'help' for commands");
        let _ = out.write_str(PROMPT);
    }

    /// Takes one byte from the console; runs the line when it is complete and prompts again.
    pub fn feed(&mut self, backend: &mut dyn Backend, byte: u8, out: &mut dyn Write) {
        match self.editor.feed(byte, out) {
            LineEvent::None => return,
            LineEvent::Line(line) => execute(backend, line.as_str(), out),
            LineEvent::Cancelled => {}
        }
        let _ = out.write_str(PROMPT);
    }
}

fn run(backend: &mut dyn Backend, command: &Command, out: &mut dyn Write) {
    match *command {
        Command::Help => help(out),
        Command::Mem => mem(&backend.mem(), out),
        Command::Cpus => cpus(&backend.cpus(), out),
        Command::Ps { limit } => {
            let limit = limit.unwrap_or(DEFAULT_PS_LIMIT);
            ps(backend, limit, out);
        }
        Command::Spawn {
            count,
            ref profile,
            policy,
        } => {
            let report = backend.spawn(count, profile, policy, out);
            spawn(&report, profile, policy, out);
        }
        Command::Settle => {
            let threads = backend.settle(out);
            say!(
                out,
                "{threads} workload {} at their resting point",
                plural(threads, "thread", "threads")
            );
            say!(out, "SETTLE threads={threads}");
        }
        Command::Stacks => stacks(&backend.stacks(), out),
        Command::Trim => {
            let freed = backend.trim();
            say!(out, "trimmed {freed} KiB of stack from sleeping threads");
            say!(out, "TRIM freed_kib={freed}");
        }
        Command::Kill(ref target) => match backend.kill(target) {
            Ok(killed) => {
                say!(
                    out,
                    "killed {killed} {}",
                    plural(killed, "thread", "threads")
                );
                say!(out, "KILL killed={killed}");
            }
            Err(why) => {
                say!(out, "error: kill: {why}");
            }
        },
        Command::Bench { plan } => backend.bench(plan, out),
        Command::Demo => backend.demo(out),
        Command::Poweroff => backend.poweroff(out),
    }
}

#[cfg(test)]
mod tests;
