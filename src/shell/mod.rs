//! The shell: the kernel's user interface on the serial console.
//!
//! Owns the line editor ([`line`]), the command grammar ([`command`]), the boundary to the
//! kernel (the [`Backend`] trait, which the kernel implements and tests fake) and the
//! console output format that people and scripts read. It calls only `crate::cmdline` (size
//! syntax, stack policy, `init=` splitting) and the backend it is handed; it never touches
//! the machine itself, so all of it builds and is tested on the host.

#[cfg(target_os = "none")]
pub mod backend;
#[cfg(target_os = "none")]
pub mod bench;
pub mod command;
#[cfg(target_os = "none")]
pub mod demo;
pub mod line;
#[cfg(target_os = "none")]
pub mod workload;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::{self, Write};

pub use command::{parse, BenchPlan, Command, KillTarget, ParseError, Profile};
pub use line::{LineEditor, LineEvent};

use crate::cmdline::{split_commands, StackPolicy};

/// The prompt printed before every command, interactive or from `init=`.
pub const PROMPT: &str = "dynstack> ";

/// Rows `ps` shows when no limit is given; `ps N` shows more (or fewer).
pub const DEFAULT_PS_LIMIT: usize = 20;

/// Linux's fixed kernel stack per thread on arm64 and x86-64, the baseline `stacks` compares
/// against.
pub const LINUX_STACK_KIB: u64 = 16;

/// Physical memory, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemInfo {
    /// All RAM the kernel manages.
    pub total_kib: u64,
    /// RAM not allocated.
    pub free_kib: u64,
    /// RAM allocated, kernel image included.
    pub used_kib: u64,
    /// The kernel image, its heap and its own page tables.
    pub kernel_kib: u64,
}

/// One CPU of the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuRow {
    /// Logical CPU number, as the scheduler counts.
    pub index: usize,
    /// The CPU's MPIDR affinity value.
    pub mpidr: u64,
    /// What it is doing, e.g. "online", "offline", "failed".
    pub state: &'static str,
}

/// The CPUs the kernel knows about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuInfo {
    /// CPUs running the scheduler.
    pub online: usize,
    /// Every CPU, online or not.
    pub cpus: Vec<CpuRow>,
}

/// One thread as `ps` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadRow {
    /// Thread id.
    pub tid: u64,
    /// Thread name.
    pub name: String,
    /// Scheduler state, e.g. "running", "ready", "sleeping".
    pub state: &'static str,
    /// The CPU it runs on, or last ran on; `None` if it has not run yet.
    pub cpu: Option<usize>,
    /// Its stack policy.
    pub policy: StackPolicy,
    /// Stack bytes mapped now, in KiB.
    pub mapped_kib: u64,
    /// Most stack ever mapped at once, in KiB.
    pub high_water_kib: u64,
    /// Growth faults the thread has taken.
    pub grow_faults: u64,
}

/// The answer to `ps`: how many threads exist, and the first few of them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ThreadList {
    /// All threads alive.
    pub total: usize,
    /// At most the limit asked for, already cut by the backend.
    pub rows: Vec<ThreadRow>,
}

/// What a `spawn` achieved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpawnReport {
    /// Threads asked for.
    pub requested: usize,
    /// Threads started.
    pub created: usize,
    /// Threads that could not be started.
    pub failed: usize,
    /// Why the first failure happened, when there was one.
    pub reason: Option<String>,
}

/// Stack memory now, summed over all threads (O(1) counters in the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StackStats {
    /// Threads alive.
    pub threads: u64,
    /// Stack memory mapped, in KiB.
    pub mapped_kib: u64,
    /// What the same threads would map with every stack fully mapped (`threads × kstack.max`).
    pub fixed_equiv_kib: u64,
    /// Growth faults taken since boot.
    pub grow_faults: u64,
    /// Threads stopped by the guard gap since boot.
    pub overflows: u64,
    /// Threads terminated because a growth found no memory, since boot.
    pub oom_kills: u64,
    /// Stack memory given back by trims since boot, in KiB.
    pub trimmed_kib: u64,
    /// Page-table memory the stack arena uses, in KiB.
    pub pt_kib: u64,
    /// Bytes of thread control block per thread.
    pub tcb_bytes: u64,
    /// Page-table bytes one stack costs: its share of the last-level table that serves it
    /// and its neighbours (the tables stay when threads exit, so `pt_kib / threads` is not it).
    pub pt_bytes_per_thread: u64,
}

/// What the shell needs from the kernel. Long operations get the console so they can print
/// progress. Implementations must accept any argument the parser lets through (it has
/// already checked the documented limits) and must not panic on it.
pub trait Backend {
    /// Physical memory now.
    fn mem(&self) -> MemInfo;
    /// The CPUs and which are online.
    fn cpus(&self) -> CpuInfo;
    /// The thread count and at most `limit` rows.
    fn threads(&self, limit: usize) -> ThreadList;
    /// Starts `count` workload threads; `policy` `None` means the kernel's default.
    fn spawn(
        &mut self,
        count: usize,
        profile: &Profile,
        policy: Option<StackPolicy>,
        out: &mut dyn Write,
    ) -> SpawnReport;
    /// Waits until every workload thread has reached its resting point; returns how many
    /// threads that was.
    fn settle(&mut self, out: &mut dyn Write) -> u64;
    /// Stack memory now.
    fn stacks(&self) -> StackStats;
    /// Trims the stacks of sleeping threads; returns the KiB freed.
    fn trim(&mut self) -> u64;
    /// Terminates workload threads and returns how many.
    ///
    /// # Errors
    ///
    /// Why no thread could be killed (e.g. "no thread 42", "thread 3 is not a workload
    /// thread"); nothing changed then.
    fn kill(&mut self, target: &KillTarget) -> Result<u64, String>;
    /// Runs the benchmarks of `plan`, printing one `BENCH name=...` line each.
    fn bench(&mut self, plan: BenchPlan, out: &mut dyn Write);
    /// Runs the showcase.
    fn demo(&mut self, out: &mut dyn Write);
    /// Stops the machine. Does not return on the kernel; returns in tests.
    fn poweroff(&mut self, out: &mut dyn Write);
}

/// Writes one line to the console. Console writes cannot usefully fail: there is nowhere
/// else to report that, so errors are dropped here once instead of at every call.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {
        let _ = writeln!($out, $($arg)*);
    };
}

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
            LineEvent::Line(line) => execute(backend, &line, out),
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
            ps(&backend.threads(limit), limit, out);
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

/// Every command with one line of description, in the order `help` prints them.
const HELP: &[(&str, &str)] = &[
    ("help", "list these commands"),
    ("mem", "physical memory"),
    ("cpus", "CPUs online"),
    (
        "ps [N]",
        "threads: tid, state, cpu, stack (first 20 rows, or N)",
    ),
    (
        "spawn N PROFILE [dynamic|fixed]",
        "start N workload threads (N up to 10000000)",
    ),
    (
        "  PROFILE",
        "idle, mix, deep:SIZE (e.g. deep:8k), overflow, churn",
    ),
    (
        "settle",
        "wait until workload threads reach their resting point",
    ),
    ("stacks", "stack memory now, dynamic against fixed"),
    ("trim", "give back stack pages below sleeping threads' SP"),
    ("kill all|TID", "terminate workload threads"),
    ("bench [quick|scale]", "benchmarks, dynamic against fixed"),
    ("demo", "the showcase: dynamic stacks against fixed ones"),
    ("poweroff", "stop the machine"),
];

fn help(out: &mut dyn Write) {
    let width = HELP.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
    say!(out, "commands:");
    for (cmd, what) in HELP {
        say!(out, "  {cmd:<width$}  {what}");
    }
}

fn mem(m: &MemInfo, out: &mut dyn Write) {
    say!(out, "memory");
    for (name, kib) in [
        ("total", m.total_kib),
        ("free", m.free_kib),
        ("used", m.used_kib),
        ("kernel", m.kernel_kib),
    ] {
        say!(out, "  {name:<7}{kib:>12} KiB  {}", Human(kib));
    }
    say!(
        out,
        "MEM total_kib={} free_kib={} used_kib={} kernel_kib={}",
        m.total_kib,
        m.free_kib,
        m.used_kib,
        m.kernel_kib
    );
}

fn cpus(c: &CpuInfo, out: &mut dyn Write) {
    let mut table = Table::new(&["CPU", "MPIDR", "STATE"], &[true, false, false]);
    for row in &c.cpus {
        table.row([
            row.index.to_string(),
            format!("{:#x}", row.mpidr),
            String::from(row.state),
        ]);
    }
    table.print(out);
    say!(out, "{} of {} CPUs online", c.online, c.cpus.len());
    say!(out, "CPUS online={}", c.online);
}

fn ps(list: &ThreadList, limit: usize, out: &mut dyn Write) {
    let mut table = Table::new(
        &[
            "TID",
            "NAME",
            "STATE",
            "CPU",
            "POLICY",
            "MAPPED_KIB",
            "HIGH_KIB",
            "FAULTS",
        ],
        &[true, false, false, true, false, true, true, true],
    );
    // A backend that returns more than asked must not flood the console.
    let shown = list.rows.len().min(limit);
    for t in &list.rows[..shown] {
        table.row([
            t.tid.to_string(),
            t.name.clone(),
            String::from(t.state),
            t.cpu.map_or_else(|| String::from("-"), |c| c.to_string()),
            String::from(t.policy.as_str()),
            t.mapped_kib.to_string(),
            t.high_water_kib.to_string(),
            t.grow_faults.to_string(),
        ]);
    }
    table.print(out);
    if shown < list.total {
        say!(
            out,
            "showing {shown} of {} threads (ps N shows more)",
            list.total
        );
    }
    say!(out, "PS threads={}", list.total);
}

fn spawn(r: &SpawnReport, profile: &Profile, policy: Option<StackPolicy>, out: &mut dyn Write) {
    let policy = policy.map_or("the default stack policy", |p| match p {
        StackPolicy::Dynamic => "dynamic stacks",
        StackPolicy::Fixed => "fixed stacks",
    });
    say!(
        out,
        "started {} of {} {profile} {} ({policy})",
        r.created,
        r.requested,
        plural(r.requested as u64, "thread", "threads")
    );
    if r.failed > 0 {
        let reason = r.reason.as_deref().unwrap_or("no reason given");
        say!(
            out,
            "{} {} not started: {reason}",
            r.failed,
            plural(r.failed as u64, "thread", "threads")
        );
    }
    say!(
        out,
        "SPAWN requested={} created={} failed={}",
        r.requested,
        r.created,
        r.failed
    );
}

fn stacks(s: &StackStats, out: &mut dyn Write) {
    let n = s.threads;
    say!(
        out,
        "{n} {} alive; stack memory now, per thread and in total:",
        plural(n, "thread", "threads")
    );
    let mut table = Table::new(&["", "PER THREAD", "TOTAL"], &[false, true, true]);
    let per_thread = |kib: u64| {
        if n == 0 {
            String::from("-")
        } else {
            format!("{} KiB", Tenths::ratio(kib, n))
        }
    };
    table.row([
        String::from("stack mapped"),
        per_thread(s.mapped_kib),
        format!("{} KiB", s.mapped_kib),
    ]);
    table.row([
        String::from("page tables"),
        format!("{} B", s.pt_bytes_per_thread),
        format!("{} KiB", s.pt_kib),
    ]);
    table.row([
        String::from("control block"),
        format!("{} B", s.tcb_bytes),
        format!("{} KiB", u128::from(s.tcb_bytes) * u128::from(n) / 1024),
    ]);
    table.row([
        String::from("fully mapped (kstack.max)"),
        per_thread(s.fixed_equiv_kib),
        format!("{} KiB", s.fixed_equiv_kib),
    ]);
    table.row([
        String::from("Linux (fixed 16 KiB)"),
        format!("{LINUX_STACK_KIB}.0 KiB"),
        format!("{} KiB", u128::from(n) * u128::from(LINUX_STACK_KIB)),
    ]);
    table.print(out);
    let savings = savings_pct(s.mapped_kib, s.fixed_equiv_kib);
    if n > 0 {
        let linux = savings_pct(s.mapped_kib, n.saturating_mul(LINUX_STACK_KIB));
        say!(
            out,
            "stacks hold {savings}% less than fully mapped, {linux}% less than Linux's"
        );
    }
    say!(
        out,
        "since boot: grow faults {}, overflows {}, OOM kills {}, trimmed {} KiB",
        s.grow_faults,
        s.overflows,
        s.oom_kills,
        s.trimmed_kib
    );
    say!(
        out,
        "STACKS threads={n} mapped_kib={} fixed_equiv_kib={} savings_pct={savings} grow_faults={} overflows={} oom_kills={} trimmed_kib={} pt_kib={}",
        s.mapped_kib,
        s.fixed_equiv_kib,
        s.grow_faults,
        s.overflows,
        s.oom_kills,
        s.trimmed_kib,
        s.pt_kib
    );
}

/// `100 × (1 − mapped / fixed)` with one decimal, rounded half away from zero, computed in
/// integers so the host and the soft-float kernel print the same digits. `0.0` when there is
/// nothing to compare against.
pub fn savings_pct(mapped_kib: u64, fixed_equiv_kib: u64) -> Tenths {
    if fixed_equiv_kib == 0 {
        return Tenths(0);
    }
    let fixed = i128::from(fixed_equiv_kib);
    let saved = fixed - i128::from(mapped_kib);
    // 1000 × saved / fixed, in tenths of a percent; i128 holds 1000 × u64::MAX.
    let magnitude = (1000 * saved.abs() * 2 + fixed) / (2 * fixed);
    Tenths(if saved < 0 { -magnitude } else { magnitude })
}

/// A number in tenths, printed with exactly one decimal ("66.7", "-5.0", "0.0").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tenths(i128);

impl Tenths {
    /// `a / b` in tenths, rounded half up; `0` when `b` is zero.
    fn ratio(a: u64, b: u64) -> Tenths {
        if b == 0 {
            return Tenths(0);
        }
        // i128 holds 20 × u64::MAX, so no input can overflow.
        let (a, b) = (i128::from(a), i128::from(b));
        Tenths((20 * a + b) / (2 * b))
    }
}

impl fmt::Display for Tenths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let v = self.0.unsigned_abs();
        let text = format!("{sign}{}.{}", v / 10, v % 10);
        // `pad` so that width and alignment in a format string apply to the whole number.
        f.pad(&text)
    }
}

/// KiB in the largest binary unit that keeps it at least 1, with one decimal.
struct Human(u64);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 4] = ["MiB", "GiB", "TiB", "PiB"];
        if self.0 < 1024 {
            return write!(f, "({} KiB)", self.0);
        }
        let mut divisor = 1024u64;
        let mut unit = 0;
        while unit + 1 < UNITS.len() && self.0 / divisor >= 1024 {
            divisor *= 1024;
            unit += 1;
        }
        write!(f, "({} {})", Tenths::ratio(self.0, divisor), UNITS[unit])
    }
}

fn plural(n: u64, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// A table whose columns are as wide as their widest cell, numbers right-aligned.
struct Table<const N: usize> {
    header: [&'static str; N],
    right: [bool; N],
    rows: Vec<[String; N]>,
}

impl<const N: usize> Table<N> {
    fn new(header: &[&'static str; N], right: &[bool; N]) -> Self {
        Self {
            header: *header,
            right: *right,
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: [String; N]) {
        self.rows.push(cells);
    }

    fn print(&self, out: &mut dyn Write) {
        let mut widths = self.header.map(|h| h.chars().count());
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        self.line(out, &widths, self.header.iter().copied());
        for row in &self.rows {
            self.line(out, &widths, row.iter().map(String::as_str));
        }
    }

    fn line<'a>(
        &self,
        out: &mut dyn Write,
        widths: &[usize; N],
        cells: impl Iterator<Item = &'a str>,
    ) {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            let width = widths[i];
            if i > 0 {
                text.push_str("  ");
            }
            let _ = if self.right[i] {
                write!(text, "{cell:>width$}")
            } else {
                write!(text, "{cell:<width$}")
            };
        }
        say!(out, "{}", text.trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// A backend that answers from fixed data and records every call, so tests can check
    /// both what was printed and that a bad line changed nothing.
    struct Fake {
        calls: Vec<String>,
        threads: Vec<ThreadRow>,
        stacks: StackStats,
        spawn_fails: usize,
    }

    impl Fake {
        fn new() -> Self {
            let threads = (0..50)
                .map(|i| ThreadRow {
                    tid: i,
                    name: if i == 0 {
                        String::from("idle/0")
                    } else {
                        format!("w{i}")
                    },
                    state: if i % 2 == 0 { "sleeping" } else { "ready" },
                    cpu: if i == 3 { None } else { Some(i as usize % 4) },
                    policy: if i % 3 == 0 {
                        StackPolicy::Fixed
                    } else {
                        StackPolicy::Dynamic
                    },
                    mapped_kib: 4 + i % 3 * 4,
                    high_water_kib: 4 + i % 4 * 4,
                    grow_faults: i * 1000,
                })
                .collect();
            Self {
                calls: Vec::new(),
                threads,
                stacks: StackStats {
                    threads: 1000,
                    mapped_kib: 4000,
                    fixed_equiv_kib: 16000,
                    grow_faults: 50,
                    overflows: 1,
                    oom_kills: 0,
                    trimmed_kib: 12,
                    pt_kib: 16,
                    tcb_bytes: 320,
                    pt_bytes_per_thread: 40,
                },
                spawn_fails: 0,
            }
        }
    }

    impl Backend for Fake {
        fn mem(&self) -> MemInfo {
            MemInfo {
                total_kib: 131072,
                free_kib: 120000,
                used_kib: 11072,
                kernel_kib: 2048,
            }
        }
        fn cpus(&self) -> CpuInfo {
            CpuInfo {
                online: 2,
                cpus: vec![
                    CpuRow {
                        index: 0,
                        mpidr: 0x8000_0000,
                        state: "online",
                    },
                    CpuRow {
                        index: 1,
                        mpidr: 0x8000_0001,
                        state: "online",
                    },
                    CpuRow {
                        index: 2,
                        mpidr: 0x8000_0002,
                        state: "failed",
                    },
                ],
            }
        }
        fn threads(&self, limit: usize) -> ThreadList {
            ThreadList {
                total: self.threads.len(),
                rows: self.threads.iter().take(limit).cloned().collect(),
            }
        }
        fn spawn(
            &mut self,
            count: usize,
            profile: &Profile,
            policy: Option<StackPolicy>,
            out: &mut dyn Write,
        ) -> SpawnReport {
            self.calls
                .push(format!("spawn {count} {profile} {policy:?}"));
            let _ = writeln!(out, "spawning...");
            let failed = self.spawn_fails.min(count);
            SpawnReport {
                requested: count,
                created: count - failed,
                failed,
                reason: (failed > 0).then(|| String::from("out of memory")),
            }
        }
        fn settle(&mut self, _out: &mut dyn Write) -> u64 {
            self.calls.push(String::from("settle"));
            7
        }
        fn stacks(&self) -> StackStats {
            self.stacks
        }
        fn trim(&mut self) -> u64 {
            self.calls.push(String::from("trim"));
            96
        }
        fn kill(&mut self, target: &KillTarget) -> Result<u64, String> {
            self.calls.push(format!("kill {target:?}"));
            match *target {
                KillTarget::All => Ok(49),
                KillTarget::Tid(0) => Err(String::from("thread 0 is not a workload thread")),
                KillTarget::Tid(t) if t < 50 => Ok(1),
                KillTarget::Tid(t) => Err(format!("no thread {t}")),
            }
        }
        fn bench(&mut self, plan: BenchPlan, out: &mut dyn Write) {
            self.calls.push(format!("bench {plan:?}"));
            let _ = writeln!(out, "BENCH name=fake");
        }
        fn demo(&mut self, out: &mut dyn Write) {
            self.calls.push(String::from("demo"));
            let _ = writeln!(out, "demo!");
        }
        fn poweroff(&mut self, out: &mut dyn Write) {
            self.calls.push(String::from("poweroff"));
            let _ = writeln!(out, "bye");
        }
    }

    fn exec(fake: &mut Fake, line: &str) -> String {
        let mut out = String::new();
        execute(fake, line, &mut out);
        out
    }

    /// The lines of `out` that start with `tag` followed by a space.
    fn summary<'a>(out: &'a str, tag: &str) -> Vec<&'a str> {
        out.lines()
            .filter(|l| l.strip_prefix(tag).is_some_and(|r| r.starts_with(' ')))
            .collect()
    }

    fn only_summary<'a>(out: &'a str, tag: &str) -> &'a str {
        let lines = summary(out, tag);
        assert_eq!(lines.len(), 1, "{out}");
        lines[0]
    }

    #[test]
    fn help_lists_every_command() {
        let out = exec(&mut Fake::new(), "help");
        for cmd in [
            "help", "mem", "cpus", "ps", "spawn", "settle", "stacks", "trim", "kill", "bench",
            "demo", "poweroff",
        ] {
            assert!(
                out.lines().any(|l| l.trim_start().starts_with(cmd)),
                "{cmd} missing from\n{out}"
            );
        }
        assert!(out.contains("deep:SIZE"));
    }

    #[test]
    fn mem_summary() {
        let out = exec(&mut Fake::new(), "mem");
        assert_eq!(
            only_summary(&out, "MEM"),
            "MEM total_kib=131072 free_kib=120000 used_kib=11072 kernel_kib=2048"
        );
        assert!(out.contains("(128.0 MiB)"), "{out}");
        assert!(out.contains("(2.0 MiB)"), "{out}");
    }

    #[test]
    fn cpus_summary_and_table() {
        let out = exec(&mut Fake::new(), "cpus");
        assert_eq!(only_summary(&out, "CPUS"), "CPUS online=2");
        assert!(out.contains("0x80000002  failed"), "{out}");
        assert!(out.contains("2 of 3 CPUs online"), "{out}");
    }

    #[test]
    fn ps_default_limit_and_note() {
        let mut fake = Fake::new();
        let out = exec(&mut fake, "ps");
        assert_eq!(only_summary(&out, "PS"), "PS threads=50");
        assert!(out.contains("showing 20 of 50 threads"), "{out}");
        // Header plus 20 rows plus note plus summary.
        assert_eq!(out.lines().count(), 23, "{out}");

        let out = exec(&mut fake, "ps 3");
        assert_eq!(out.lines().count(), 6, "{out}");
        assert!(out.contains("showing 3 of 50 threads"), "{out}");

        let out = exec(&mut fake, "ps 1000000");
        assert!(!out.contains("showing"), "{out}");
        assert_eq!(only_summary(&out, "PS"), "PS threads=50");
    }

    #[test]
    fn ps_columns_are_aligned() {
        let out = exec(&mut Fake::new(), "ps 12");
        let lines: Vec<&str> = out.lines().take(13).collect();
        assert!(lines[0].starts_with("TID  NAME    STATE"), "{out}");
        // Right-aligned numeric columns end at the same place as their header.
        let faults_end = lines[0].len();
        assert!(lines[0].ends_with("FAULTS"));
        for l in &lines[1..] {
            assert_eq!(l.len(), faults_end, "{l:?}\n{out}");
        }
        assert!(lines[4].contains(" -  "), "no cpu shown as '-': {out}");
        assert!(lines[1].contains("fixed"));
        assert!(lines[2].contains("dynamic"));
    }

    #[test]
    fn ps_on_a_backend_that_ignores_the_limit() {
        struct Greedy(Fake);
        impl Backend for Greedy {
            fn mem(&self) -> MemInfo {
                self.0.mem()
            }
            fn cpus(&self) -> CpuInfo {
                self.0.cpus()
            }
            fn threads(&self, _limit: usize) -> ThreadList {
                self.0.threads(usize::MAX)
            }
            fn spawn(
                &mut self,
                c: usize,
                p: &Profile,
                s: Option<StackPolicy>,
                o: &mut dyn Write,
            ) -> SpawnReport {
                self.0.spawn(c, p, s, o)
            }
            fn settle(&mut self, o: &mut dyn Write) -> u64 {
                self.0.settle(o)
            }
            fn stacks(&self) -> StackStats {
                self.0.stacks()
            }
            fn trim(&mut self) -> u64 {
                self.0.trim()
            }
            fn kill(&mut self, t: &KillTarget) -> Result<u64, String> {
                self.0.kill(t)
            }
            fn bench(&mut self, q: BenchPlan, o: &mut dyn Write) {
                self.0.bench(q, o);
            }
            fn demo(&mut self, o: &mut dyn Write) {
                self.0.demo(o);
            }
            fn poweroff(&mut self, o: &mut dyn Write) {
                self.0.poweroff(o);
            }
        }
        let mut out = String::new();
        execute(&mut Greedy(Fake::new()), "ps 2", &mut out);
        assert_eq!(out.lines().count(), 5, "{out}");
    }

    #[test]
    fn spawn_summary() {
        let mut fake = Fake::new();
        let out = exec(&mut fake, "spawn 100 deep:8k fixed");
        assert_eq!(fake.calls, ["spawn 100 deep:8k Some(Fixed)"]);
        assert!(out.starts_with("spawning...\n"), "{out}");
        assert_eq!(
            only_summary(&out, "SPAWN"),
            "SPAWN requested=100 created=100 failed=0"
        );
        assert!(!out.contains("not started"));

        fake.spawn_fails = 30;
        let out = exec(&mut fake, "spawn 100 idle");
        assert_eq!(fake.calls[1], "spawn 100 idle None");
        assert_eq!(
            only_summary(&out, "SPAWN"),
            "SPAWN requested=100 created=70 failed=30"
        );
        assert!(
            out.contains("30 threads not started: out of memory"),
            "{out}"
        );
    }

    #[test]
    fn settle_trim_kill_summaries() {
        let mut fake = Fake::new();
        let out = exec(&mut fake, "settle");
        assert_eq!(only_summary(&out, "SETTLE"), "SETTLE threads=7");
        let out = exec(&mut fake, "trim");
        assert_eq!(only_summary(&out, "TRIM"), "TRIM freed_kib=96");
        let out = exec(&mut fake, "kill all");
        assert_eq!(only_summary(&out, "KILL"), "KILL killed=49");
        let out = exec(&mut fake, "kill 5");
        assert_eq!(only_summary(&out, "KILL"), "KILL killed=1");
        assert!(out.contains("killed 1 thread\n"), "{out}");
        assert_eq!(fake.calls, ["settle", "trim", "kill All", "kill Tid(5)"]);
    }

    #[test]
    fn kill_refused_by_the_kernel_is_an_error() {
        let mut fake = Fake::new();
        let out = exec(&mut fake, "kill 42000");
        assert_eq!(out, "error: kill: no thread 42000\n");
        let out = exec(&mut fake, "kill 0");
        assert_eq!(out, "error: kill: thread 0 is not a workload thread\n");
        assert!(summary(&out, "KILL").is_empty());
    }

    #[test]
    fn stacks_summary_and_breakdown() {
        let mut fake = Fake::new();
        let out = exec(&mut fake, "stacks");
        assert_eq!(
            only_summary(&out, "STACKS"),
            "STACKS threads=1000 mapped_kib=4000 fixed_equiv_kib=16000 savings_pct=75.0 \
             grow_faults=50 overflows=1 oom_kills=0 trimmed_kib=12 pt_kib=16"
        );
        // Per thread: 4.0 KiB of stack, 40 B of page table (the backend's figure, not
        // pt_kib / threads), 320 B of control block, next to Linux's 16 KiB.
        assert!(out.contains("4.0 KiB"), "{out}");
        assert!(out.contains("40 B"), "{out}");
        assert!(out.contains("320 B"), "{out}");
        assert!(out.contains("Linux (fixed 16 KiB)"), "{out}");
        assert!(
            out.contains("75.0% less than fully mapped, 75.0% less than Linux's"),
            "{out}"
        );
        assert!(out.contains("16000 KiB"), "{out}");

        fake.stacks = StackStats::default();
        let out = exec(&mut fake, "stacks");
        assert_eq!(
            only_summary(&out, "STACKS"),
            "STACKS threads=0 mapped_kib=0 fixed_equiv_kib=0 savings_pct=0.0 \
             grow_faults=0 overflows=0 oom_kills=0 trimmed_kib=0 pt_kib=0"
        );
    }

    #[test]
    fn stacks_with_huge_counters_does_not_overflow() {
        let mut fake = Fake::new();
        fake.stacks = StackStats {
            threads: u64::MAX,
            mapped_kib: u64::MAX,
            fixed_equiv_kib: u64::MAX,
            grow_faults: u64::MAX,
            overflows: u64::MAX,
            oom_kills: u64::MAX,
            trimmed_kib: u64::MAX,
            pt_kib: u64::MAX,
            tcb_bytes: u64::MAX,
            pt_bytes_per_thread: u64::MAX,
        };
        let out = exec(&mut fake, "stacks");
        assert!(only_summary(&out, "STACKS").contains("savings_pct=0.0"));
    }

    #[test]
    fn savings_rounding() {
        let pct = |m, f| savings_pct(m, f).to_string();
        assert_eq!(pct(4000, 16000), "75.0");
        assert_eq!(pct(1, 3), "66.7");
        assert_eq!(pct(2, 3), "33.3");
        assert_eq!(pct(0, 16), "100.0");
        assert_eq!(pct(16, 16), "0.0");
        assert_eq!(pct(5, 0), "0.0");
        // 100 × (1 − 1999/2000) = 0.05 rounds half up to 0.1.
        assert_eq!(pct(1999, 2000), "0.1");
        assert_eq!(pct(4004, 16000), "75.0");
        assert_eq!(pct(4008, 16000), "75.0");
        assert_eq!(pct(4009, 16000), "74.9");
        // More mapped than the fixed equivalent is reported, not hidden.
        assert_eq!(pct(17, 16), "-6.3");
        assert_eq!(
            pct(u64::MAX, 1),
            format!("-{}.0", (u128::from(u64::MAX) - 1) * 100)
        );
    }

    #[test]
    fn long_commands_reach_the_backend() {
        let mut fake = Fake::new();
        let out = exec(&mut fake, "bench quick");
        assert_eq!(out, "BENCH name=fake\n");
        exec(&mut fake, "bench");
        exec(&mut fake, "bench scale");
        exec(&mut fake, "demo");
        exec(&mut fake, "poweroff");
        assert_eq!(
            fake.calls,
            [
                "bench Quick",
                "bench Full",
                "bench Scale",
                "demo",
                "poweroff"
            ]
        );
    }

    #[test]
    fn errors_change_nothing() {
        let mut fake = Fake::new();
        for line in [
            "foo",
            "MEM",
            "mem x",
            "spawn",
            "spawn x idle",
            "spawn 99999999999999999999 idle",
            "spawn 10000001 idle",
            "spawn 4 big",
            "spawn 4 deep:0",
            "spawn 4 deep:2g",
            "spawn 4 idle static",
            "spawn 4 idle fixed extra",
            "kill",
            "kill bob",
            "kill 99999999999999999999",
            "kill all now",
            "trim now",
            "settle 1",
            "bench slow",
            "demo 2",
            "poweroff now",
            "ps 0",
        ] {
            let out = exec(&mut fake, line);
            assert!(out.starts_with("error: "), "{line:?}: {out}");
            assert_eq!(out.lines().count(), 1, "{line:?}: {out}");
        }
        assert!(fake.calls.is_empty(), "{:?}", fake.calls);
        assert_eq!(
            exec(&mut fake, "foo"),
            "error: unknown command 'foo' (type 'help')\n"
        );
        assert_eq!(exec(&mut fake, "   "), "");
    }

    #[test]
    fn init_commands_are_echoed_after_a_prompt() {
        let mut fake = Fake::new();
        let mut out = String::new();
        run_init(&mut fake, "spawn 2 idle; ; trim;bogus", &mut out);
        let prompts: Vec<&str> = out.lines().filter(|l| l.starts_with(PROMPT)).collect();
        assert_eq!(
            prompts,
            [
                "dynstack> spawn 2 idle",
                "dynstack> trim",
                "dynstack> bogus"
            ]
        );
        assert!(out.contains("error: unknown command 'bogus'"));
        assert_eq!(fake.calls, ["spawn 2 idle None", "trim"]);
    }

    #[test]
    fn interactive_shell_runs_lines_and_prompts() {
        let mut fake = Fake::new();
        let mut shell = Shell::new();
        let mut out = String::new();
        shell.start(&mut out);
        assert!(out.ends_with(PROMPT));
        out.clear();
        for &b in b"tri\x1b[Dm\r\nkil\x03cpus x\n\n" {
            shell.feed(&mut fake, b, &mut out);
        }
        assert_eq!(
            out,
            format!(
                "trim\ntrimmed 96 KiB of stack from sleeping threads\nTRIM freed_kib=96\n\
                 {PROMPT}kil^C\n{PROMPT}cpus x\nerror: too many arguments for 'cpus'\n\
                 {PROMPT}\n{PROMPT}"
            )
        );
        assert_eq!(fake.calls, ["trim"]);
    }

    /// Input that is mostly command-like (so that parsing goes deep) with random bytes,
    /// editing keys and escape sequences mixed in.
    fn random_input(rng: &mut crate::rng::XorShift) -> Vec<u8> {
        const WORDS: &[&str] = &[
            "help",
            "mem",
            "cpus",
            "ps",
            "spawn",
            "settle",
            "stacks",
            "trim",
            "kill",
            "bench",
            "demo",
            "poweroff",
            "all",
            "quick",
            "idle",
            "mix",
            "deep:",
            "deep:8k",
            "overflow",
            "churn",
            "dynamic",
            "fixed",
            "0",
            "1",
            "20",
            "-1",
            "0x",
            "4k",
            "1g",
            "16K",
            "99999999999999999999",
            "18446744073709551616",
            "10000000",
            "\u{e9}",
            " ",
            " ",
            "\t",
            "\r",
            "\n",
            "\r\n",
            "\x7f",
            "\x08",
            "\x03",
            "\x15",
            "\x1b[A",
            "\x1b[1;5C",
            "\x1b",
            "\x1bO",
            ";",
        ];
        let mut bytes = Vec::new();
        for _ in 0..rng.below(40) {
            match rng.below(4) {
                0 => bytes.push(rng.next_u64() as u8),
                1 => {
                    let n = rng.below(300);
                    bytes.extend((0..n).map(|_| b'0' + rng.below(10) as u8));
                }
                _ => bytes.extend_from_slice(WORDS[rng.below(WORDS.len())].as_bytes()),
            }
        }
        bytes
    }

    #[test]
    fn random_input_never_panics_and_always_answers() {
        let mut rng = crate::rng::XorShift::new(0x9e37_79b9_7f4a_7c15);
        let mut fake = Fake::new();
        let mut shell = Shell::new();
        for _ in 0..3000 {
            let bytes = random_input(&mut rng);

            // The interactive path, byte by byte.
            let mut out = String::new();
            for &b in &bytes {
                shell.feed(&mut fake, b, &mut out);
            }

            // The same bytes as lines, each checked on its own.
            let mut editor = LineEditor::new();
            let mut echo = String::new();
            for &b in &bytes {
                let LineEvent::Line(line) = editor.feed(b, &mut echo) else {
                    continue;
                };
                assert!(line.len() <= line::MAX_LINE);
                assert!(line.bytes().all(|b| (b' '..=b'~').contains(&b)), "{line:?}");
                let calls = fake.calls.len();
                let out = exec(&mut fake, &line);
                match parse(&line) {
                    Ok(None) => assert_eq!(out, "", "{line:?}"),
                    Ok(Some(_)) => assert!(!out.is_empty(), "{line:?}"),
                    Err(e) => {
                        assert_eq!(out, format!("error: {e}\n"), "{line:?}");
                        assert_eq!(fake.calls.len(), calls, "{line:?}");
                    }
                }
            }

            // And as `init=` text, which is not filtered by the editor.
            let text = String::from_utf8_lossy(&bytes);
            let mut out = String::new();
            run_init(&mut fake, &text, &mut out);
        }
    }
}
