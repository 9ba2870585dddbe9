//! The `demo` command: the showcase `make run` starts with.
//!
//! In a few seconds and under a screen it tells the kernel's story with the real thing: a
//! population of `mix` threads (the article's distribution of stack depths) under each stack
//! policy, their stack memory side by side with what Linux's fixed 16 KiB would cost, a text
//! histogram of how deep they went, one thread that overflows its stack and dies alone while
//! others sit deep in theirs, a trim that gives pages back and parks the sleeping stacks (their
//! live bytes kept in small blocks, every page returned), and the population killed again.
//!
//! Every figure printed is measured in this run: thread counts and stack memory come from a
//! walk over the thread table (`sched::for_each_thread_chunked`), page tables and overflows
//! from the stack counters. Threads are started, settled, trimmed and killed through the
//! shell [`Backend`] it is handed, like a user would; the deep "witness" threads use `sched`
//! and `workload::recurse` directly. Calls `sched`, `stack`, `workload` and `arch::timer`.
//!
//! Nothing here takes memory from the heap: figures are formatted into fixed buffers
//! ([`Text`]) or straight to the console, the histogram lives in arrays, and the witnesses
//! share statics. The threads it starts are its only memory, taken fallibly; with too little
//! free memory the demo prints `error: out of memory ...` and returns.
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::arch::timer;
use crate::cmdline::StackPolicy;
use crate::sched::{self, ThreadKind, ThreadState};
use crate::shell::{
    savings_pct, Backend, KillTarget, Profile, Quotient, StackStats, Text, LINUX_STACK_KIB,
};

/// `mix` threads started per policy, at most (fewer when memory is short).
const POPULATION: usize = 2000;

/// Threads that sit deep in their stacks while another overflows, then check every frame.
const WITNESSES: usize = 4;

/// Most rows of the high-water histogram (rows are page multiples of equal width).
const HISTOGRAM_ROWS: usize = 8;

/// Width of the histogram's longest bar, in characters.
const BAR_WIDTH: u64 = 40;

/// How long the demo waits for any one step before it moves on (and says what it saw).
const STEP_TIMEOUT_NS: u64 = 10_000_000_000;

/// Writes one line; console output cannot usefully fail.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {
        let _ = writeln!($out, $($arg)*);
    };
}

/// What a walk over the thread table found for the demo's `mix` threads of one policy.
#[derive(Default)]
struct Census {
    /// Live threads.
    threads: u64,
    /// Stack bytes mapped now.
    mapped: u64,
    /// Threads per high-water row (see [`Rows`]; only the first `Rows::count` are used).
    rows: [u64; HISTOGRAM_ROWS],
    /// Threads whose high-water mark is at most 8 KiB.
    within_8k: u64,
    /// Threads whose stacks are parked, and the bytes of their blocks.
    parked: u64,
    parked_bytes: u64,
}

/// The high-water histogram's rows: `count` rows (at most [`HISTOGRAM_ROWS`]) of `pages`
/// pages each.
struct Rows {
    pages: u64,
    count: usize,
}

impl Rows {
    fn new() -> Self {
        let max_pages = (crate::stack::config().max as u64 / 4096).max(1);
        let pages = max_pages.div_ceil(HISTOGRAM_ROWS as u64);
        Rows {
            pages,
            count: max_pages.div_ceil(pages) as usize,
        }
    }

    fn index(&self, bytes: u64) -> usize {
        ((bytes.max(1) - 1) / (self.pages * 4096)).min(self.count as u64 - 1) as usize
    }
}

/// Walks every live thread and counts the demo's `mix` threads: `[fixed, dynamic]`.
fn census(rows: &Rows) -> [Census; 2] {
    let mut c: [Census; 2] = Default::default();
    sched::for_each_thread_chunked(&mut |t| {
        if t.kind != ThreadKind::Workload || t.state() == ThreadState::Dead || t.name() != "mix" {
            return;
        }
        let p = &mut c[policy_index(t.stack.policy())];
        let high = t.stack.high_water_bytes();
        p.threads += 1;
        p.mapped += t.stack.mapped_bytes();
        if t.stack.is_parked() {
            p.parked += 1;
            p.parked_bytes += t.stack.parked_bytes();
        }
        p.rows[rows.index(high)] += 1;
        if high <= 8192 {
            p.within_8k += 1;
        }
    });
    c
}

fn policy_index(p: StackPolicy) -> usize {
    match p {
        StackPolicy::Fixed => 0,
        StackPolicy::Dynamic => 1,
    }
}

/// `a / b` with `places` decimals, rounded (see [`Quotient`]).
fn ratio(a: u64, b: u64, places: u32) -> Quotient {
    Quotient::new(a, b, places)
}

fn elapsed_ms(since: u64) -> u64 {
    timer::ticks_to_ns(timer::now().saturating_sub(since)) / 1_000_000
}

/// Waits (sleeping) until `done` holds or the step timeout passes; returns whether it held.
fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = timer::now() + timer::ns_to_ticks(STEP_TIMEOUT_NS);
    while !done() {
        if timer::now() > deadline {
            return false;
        }
        sched::sleep_ms(1);
    }
    true
}

/// Runs the demo, printing to `out`.
pub fn run(backend: &mut dyn Backend, out: &mut dyn Write) {
    let start = timer::now();
    let Some((n, before)) = introduce(backend, out) else {
        return;
    };
    let Some(created) = start_population(backend, n, out) else {
        // Whatever did start goes again (the demo runs only when no workload thread does).
        let _ = backend.kill(&KillTarget::All);
        return;
    };
    let rows = Rows::new();
    let [fixed, dynamic] = census(&rows);
    show_memory(backend, &fixed, &dynamic, out);
    show_high_water(&rows, &fixed, &dynamic, out);
    let fixed_after = show_overflow(backend, &rows, created, &fixed, &dynamic, out);
    show_trim(backend, &rows, &fixed_after, out);
    clean_up(backend, &before, out);
    say!(
        out,
        "demo done in {} ms. Try: spawn 10000 mix, stacks, ps 5, trim, kill all, help",
        elapsed_ms(start)
    );
}

/// The machine and the stack settings; then how many threads of each policy the demo starts,
/// and the stack counters before it, or `None` (with an error printed) when it cannot run.
fn introduce(backend: &mut dyn Backend, out: &mut dyn Write) -> Option<(usize, StackStats)> {
    let info = crate::kernel::boot_info();
    let cfg = crate::stack::config();
    say!(
        out,
        "dynstack demo: {} on {} CPU{}, {} MiB RAM",
        info.machine.model,
        sched::online_count(),
        if sched::online_count() == 1 { "" } else { "s" },
        info.ram_bytes >> 20
    );
    say!(
        out,
        "stacks: policy={} initial={} KiB max={} KiB guard={} KiB",
        cfg.policy,
        cfg.initial / 1024,
        cfg.max / 1024,
        cfg.guard / 1024
    );
    if sched::workload_threads() > 0 {
        say!(
            out,
            "error: demo: {} workload threads are running; `kill all` first",
            sched::workload_threads()
        );
        return None;
    }
    let before = backend.stacks();
    let max_kib = cfg.max as u64 / 1024;
    // Each pair of threads needs a fixed stack, at most as much again for the dynamic one,
    // and their control blocks: keep the population well inside the free memory that
    // spawning may use (it stops short of the frames kept for the kernel itself).
    let free_kib = backend.mem().free_kib;
    let kept_kib = sched::SPAWN_LOW_WATER_PAGES * 4;
    let pair_kib = 4 * (2 * max_kib + 2);
    let n = POPULATION.min((free_kib.saturating_sub(kept_kib) / pair_kib) as usize);
    if n == 0 {
        say!(
            out,
            "error: out of memory: the demo needs {} KiB free, {free_kib} KiB are",
            kept_kib + pair_kib
        );
        return None;
    }
    Some((n, before))
}

/// Step 1: `n` `mix` threads of each policy, settled. Returns how many of each started
/// (`[fixed, dynamic]`), or `None` (the reason printed) when a policy got none: there is
/// nothing to compare then.
fn start_population(
    backend: &mut dyn Backend,
    n: usize,
    out: &mut dyn Write,
) -> Option<[usize; 2]> {
    let t0 = timer::now();
    let mut created = [0usize; 2];
    for policy in [StackPolicy::Fixed, StackPolicy::Dynamic] {
        let report = backend.spawn(n, &Profile::Mix, Some(policy), out);
        created[policy_index(policy)] = report.created;
        match report.reason {
            // The reason says what ran out ("out of memory after 0 threads").
            Some(why) if report.created == 0 => {
                say!(
                    out,
                    "error: {why}: the demo could not start its {policy} `mix` threads"
                );
                return None;
            }
            Some(why) => {
                say!(out, "error: demo: spawn {n} mix {policy}: {why}");
            }
            None => {}
        }
    }
    backend.settle(out);
    say!(
        out,
        "\n1. started {} fixed and {} dynamic `mix` threads, settled in {} ms",
        created[0],
        created[1],
        elapsed_ms(t0)
    );
    say!(
        out,
        "   (each recursed once to a depth drawn like the article's population, then slept)"
    );
    Some(created)
}

/// Step 2: the two policies' stack memory side by side, and Linux's for as many threads.
fn show_memory(backend: &mut dyn Backend, fixed: &Census, dynamic: &Census, out: &mut dyn Write) {
    let with_tables = backend.stacks();
    let linux_kib = dynamic.threads * LINUX_STACK_KIB;
    let mut linux = Text::<48>::new();
    let _ = write!(linux, "Linux ({LINUX_STACK_KIB} KiB each, computed)");
    say!(
        out,
        "\n2. stack memory, measured        threads   stack KiB  KiB/thread"
    );
    for (name, threads, kib) in [
        (
            Text::<48>::of("fixed (all mapped)"),
            fixed.threads,
            fixed.mapped / 1024,
        ),
        (
            Text::of("dynamic (grown on demand)"),
            dynamic.threads,
            dynamic.mapped / 1024,
        ),
        (linux, dynamic.threads, linux_kib),
    ] {
        say!(
            out,
            "   {name:<29}{threads:>8}{kib:>12}{:>12}",
            ratio(kib, threads, 2)
        );
    }
    say!(
        out,
        "   dynamic saves {}% against fixed, {}% against Linux",
        savings_pct(dynamic.mapped / 1024, fixed.mapped / 1024),
        savings_pct(dynamic.mapped / 1024, linux_kib)
    );
    say!(
        out,
        "   (and the stack arena's page tables: {} bytes per stack)",
        with_tables.pt_kib * 1024 / with_tables.threads.max(1)
    );
}

/// Step 3: the histogram of high-water marks.
fn show_high_water(rows: &Rows, fixed: &Census, dynamic: &Census, out: &mut dyn Write) {
    say!(
        out,
        "\n3. stack high-water marks (fixed: deepest word written; dynamic: pages mapped)"
    );
    say!(out, "   KiB       fixed  dynamic");
    let most = (0..rows.count)
        .map(|i| fixed.rows[i] + dynamic.rows[i])
        .max()
        .unwrap_or(0)
        .max(1);
    for i in 0..rows.count {
        let both = fixed.rows[i] + dynamic.rows[i];
        let bar = if both == 0 {
            0
        } else {
            (both * BAR_WIDTH).div_ceil(most)
        };
        let lo = i as u64 * rows.pages * 4;
        let mut label = Text::<48>::new();
        let _ = write!(label, "{}-{}", lo, lo + rows.pages * 4);
        let _ = write!(
            out,
            "   {label:<8}{:>7}{:>9}  ",
            fixed.rows[i], dynamic.rows[i]
        );
        for _ in 0..bar {
            let _ = out.write_char('#');
        }
        let _ = writeln!(out);
    }
    let all = fixed.threads + dynamic.threads;
    say!(
        out,
        "   {}% stayed within 8 KiB (the article: about 99% on Linux)",
        ratio(100 * (fixed.within_8k + dynamic.within_8k), all, 1)
    );
}

/// Step 4: one thread overflows while witnesses sit deep in their stacks; the others are
/// unharmed. Returns the census of fixed threads afterwards.
fn show_overflow(
    backend: &mut dyn Backend,
    rows: &Rows,
    created: [usize; 2],
    fixed: &Census,
    dynamic: &Census,
    out: &mut dyn Write,
) -> Census {
    let cfg = crate::stack::config();
    let all = fixed.threads + dynamic.threads;
    say!(
        out,
        "\n4. {WITNESSES} witnesses wait {} KiB deep in their stacks; an `overflow` thread \
         recurses:",
        cfg.max * 3 / 4 / 1024
    );
    let witnesses = Witnesses::start(cfg.max as u64 * 3 / 4);
    let overflows = backend.stacks().overflows;
    let report = backend.spawn(1, &Profile::Overflow, Some(StackPolicy::Dynamic), out);
    if let (0, Some(why)) = (report.created, &report.reason) {
        say!(out, "error: demo: spawn 1 overflow: {why}");
    }
    let died = report.created == 1
        && wait_until(|| backend.stacks().overflows > overflows)
        && wait_until(|| sched::workload_threads() == created[0] + created[1]);
    let intact = witnesses.finish();
    let [fixed_after, dynamic_after] = census(rows);
    if !died && report.created == 1 {
        say!(out, "error: demo: the overflow thread did not die in time");
    }
    let (kib_before, kib_after) = (
        (fixed.mapped + dynamic.mapped) / 1024,
        (fixed_after.mapped + dynamic_after.mapped) / 1024,
    );
    let mut change = Text::<64>::new();
    let _ = if kib_before == kib_after {
        write!(change, "unchanged, {kib_after} KiB")
    } else {
        write!(change, "{kib_before} -> {kib_after} KiB")
    };
    say!(
        out,
        "   overflows {} -> {}; {} of {} mix threads alive; stacks {}",
        overflows,
        backend.stacks().overflows,
        fixed_after.threads + dynamic_after.threads,
        all,
        change
    );
    say!(
        out,
        "   {intact} of {} witnesses came back up through every frame intact",
        witnesses.started
    );
    fixed_after
}

/// Step 5: trim gives the sleeping threads' unused pages back.
fn show_trim(backend: &mut dyn Backend, rows: &Rows, fixed_after: &Census, out: &mut dyn Write) {
    let freed = backend.trim();
    let [_, trimmed] = census(rows);
    let held = trimmed.mapped + trimmed.parked_bytes;
    say!(
        out,
        "\n5. trim: {freed} KiB back from sleeping threads; dynamic stacks now {} KiB",
        held.div_ceil(1024)
    );
    if trimmed.parked > 0 {
        say!(
            out,
            "   {} of {} dynamic threads parked: live bytes in {} KiB of small blocks, no page",
            trimmed.parked,
            trimmed.threads,
            trimmed.parked_bytes.div_ceil(1024)
        );
    }
    say!(
        out,
        "   ({} B/thread, {}% less than fixed)",
        held / trimmed.threads.max(1),
        savings_pct(held.div_ceil(1024), fixed_after.mapped / 1024)
    );
}

/// Step 6: the population killed, and stack memory back where it was.
fn clean_up(backend: &mut dyn Backend, before: &StackStats, out: &mut dyn Write) {
    match backend.kill(&KillTarget::All) {
        Ok(killed) => {
            let now = backend.stacks();
            say!(
                out,
                "\n6. killed {killed} threads: stack memory {} KiB ({} KiB before the demo)",
                now.mapped_kib,
                before.mapped_kib
            );
        }
        Err(why) => {
            say!(out, "error: demo: kill all: {why}");
        }
    }
}

/// How many witnesses have reached their depth, whether they may return, and how many came
/// back up intact: statics rather than shared heap objects (no allocation). One demo runs at
/// a time (the shell runs one command at a time); [`Witnesses::start`] resets them.
static WITNESS_ARRIVED: AtomicUsize = AtomicUsize::new(0);
static WITNESS_RELEASE: AtomicBool = AtomicBool::new(false);
static WITNESS_INTACT: AtomicUsize = AtomicUsize::new(0);

/// Threads parked deep in their own stacks while another thread overflows; each then returns
/// through every frame, and `workload::recurse` checks each frame's pattern on the way up
/// (a corrupted frame is a kernel panic, never a silent pass).
struct Witnesses {
    started: usize,
    handles: [Option<sched::JoinHandle>; WITNESSES],
}

impl Witnesses {
    /// Starts the witnesses, each recursing `depth` bytes down, and waits until all are there.
    /// Those that cannot be started (memory is out) are left out of the count.
    fn start(depth: u64) -> Self {
        WITNESS_ARRIVED.store(0, Ordering::Release);
        WITNESS_RELEASE.store(false, Ordering::Release);
        WITNESS_INTACT.store(0, Ordering::Release);
        let mut handles: [Option<sched::JoinHandle>; WITNESSES] = Default::default();
        let mut started = 0;
        for slot in handles.iter_mut() {
            let h = sched::spawn_with("demo-witness", StackPolicy::Dynamic, move || {
                // SAFETY: the running thread's own control block, alive while it runs.
                let top = unsafe { &*sched::current_ptr() }.stack.top();
                core::hint::black_box(crate::shell::workload::recurse(top - depth, &mut || {
                    WITNESS_ARRIVED.fetch_add(1, Ordering::AcqRel);
                    while !WITNESS_RELEASE.load(Ordering::Acquire) {
                        sched::sleep_ms(1);
                    }
                }));
                WITNESS_INTACT.fetch_add(1, Ordering::AcqRel);
            });
            if let Ok(h) = h {
                *slot = Some(h);
                started += 1;
            }
        }
        wait_until(|| WITNESS_ARRIVED.load(Ordering::Acquire) >= started);
        Witnesses { started, handles }
    }

    /// Lets the witnesses return, waits for them, and says how many came back intact.
    fn finish(&self) -> usize {
        WITNESS_RELEASE.store(true, Ordering::Release);
        let _ = wait_until(|| self.handles.iter().flatten().all(|h| h.is_finished()));
        WITNESS_INTACT.load(Ordering::Acquire)
    }
}
