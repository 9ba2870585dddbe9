//! `bench strategies [quick]`: the workloads and the basic costs, fixed stacks against
//! dynamic ones grown the way this boot's `kstack.strategy` says, one `STRATEGY` line each.
//!
//! Every workload runs twice, first with fixed stacks, then with dynamic ones: N threads are
//! started and wait at a start line; the clock runs from the start until the last thread has
//! done its operations (`mix`: one recursion to a depth drawn like the article's population;
//! `churn`: recursions to random depths, yielding between them; `chain`, `bigframe`,
//! `inflate`, `json`: one checked operation of `shell::checked` each). Under `make
//! bench-strategies` QEMU runs with `-icount shift=0` on one CPU, so nanoseconds are
//! instructions. Then the threads rest, and their stack memory is read: `stack_kib` (mapped
//! now, all threads) and `high_water_kib` (the sum of each thread's deepest point). `misses`
//! are threads ended because their stack was not grown in time, `growths` the growths (faults
//! and ahead of use) during the run. Then a context switch, a spawn and an empty `svc` are
//! timed the same two ways. Calls `sched`, `stack`, `shell::checked` and `workload`.
//!
//! Takes nothing from the heap itself (results live on the stack and in statics; every
//! thread reading them is joined first). With too little free memory to start a run's
//! threads it prints `error: out of memory ...` and returns; a run that starts only some
//! of its threads reports how many (`threads=`).
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::arch::timer;
use crate::cmdline::{StackPolicy, StackStrategy};
use crate::sched::{self, SpawnError, ThreadKind};
use crate::shell::bench::{cannot_start, has_memory};
use crate::shell::command::Profile;
use crate::shell::workload::{self, Rng};
use crate::stack;

/// One workload of the comparison: `threads` threads doing `ops` operations each.
#[derive(Clone, Copy)]
struct Load {
    profile: Profile,
    threads: usize,
    ops: u32,
}

const fn load(profile: Profile, threads: usize, ops: u32) -> Load {
    Load {
        profile,
        threads,
        ops,
    }
}

/// The workloads, in the order of [`FULL`] and [`QUICK`].
const PROFILES: [Profile; 6] = [
    Profile::Mix,
    Profile::Churn,
    Profile::Chain,
    Profile::Bigframe,
    Profile::Inflate,
    Profile::Json,
];

const FULL: [Load; 6] = [
    load(Profile::Mix, 200, 1),
    load(Profile::Churn, 32, 16),
    load(Profile::Chain, 32, 8),
    load(Profile::Bigframe, 32, 8),
    load(Profile::Inflate, 16, 2),
    load(Profile::Json, 32, 4),
];

const QUICK: [Load; 6] = [
    load(Profile::Mix, 20, 1),
    load(Profile::Churn, 4, 4),
    load(Profile::Chain, 4, 2),
    load(Profile::Bigframe, 4, 2),
    load(Profile::Inflate, 2, 1),
    load(Profile::Json, 4, 1),
];

/// Sizes of the basic costs: yields per thread, spawns, `svc` calls.
struct Micro {
    yields: u32,
    spawns: u32,
    svcs: u32,
}

const FULL_MICRO: Micro = Micro {
    yields: 2000,
    spawns: 200,
    svcs: 20_000,
};
const QUICK_MICRO: Micro = Micro {
    yields: 100,
    spawns: 10,
    svcs: 500,
};

/// What the worker threads of the current run do (one run at a time).
/// The workload, as its index in [`PROFILES`].
static PROFILE: AtomicUsize = AtomicUsize::new(0);
static OPS: AtomicU32 = AtomicU32::new(0);
static READY: AtomicUsize = AtomicUsize::new(0);
static GO: AtomicBool = AtomicBool::new(false);
static DONE_OPS: AtomicU64 = AtomicU64::new(0);
static LAST_END: AtomicU64 = AtomicU64::new(0);

fn now_ns() -> u64 {
    timer::ticks_to_ns(timer::now())
}

/// What one run measured.
#[derive(Default)]
struct Row {
    threads: usize,
    ops: u64,
    ns: u64,
    stack_kib: u64,
    high_water_kib: u64,
    misses: u64,
    growths: u64,
    checked: u64,
    wrong: u64,
}

impl Row {
    fn per_op(&self) -> u64 {
        self.ns.checked_div(self.ops).unwrap_or(0)
    }
}

/// Runs every workload and basic cost, fixed then dynamic, printing one line each.
pub fn run(quick: bool, out: &mut dyn Write) {
    let strategy = stack::strategy::current();
    let lookahead = match strategy {
        StackStrategy::Check => stack::strategy::lookahead(),
        _ => 0,
    };
    let _ = writeln!(
        out,
        "strategies: fixed stacks against kstack.strategy={} (lookahead {} B; the {} build), \
         kstack.max={} KiB, {} CPUs{}",
        strategy,
        lookahead,
        if stack::strategy::HAS_CHECK_HOOK {
            "check"
        } else {
            "normal"
        },
        stack::config().max / 1024,
        sched::online_count(),
        if quick { ", quick" } else { "" }
    );
    // At least one fixed stack and a MiB for everything else; a run that then fits fewer
    // threads than it asks for says so in its line.
    if !has_memory(
        out,
        "bench strategies",
        2 * (stack::config().max as u64 / 1024) + 1024,
    ) {
        return;
    }
    let loads = if quick { &QUICK } else { &FULL };
    let micro = if quick { &QUICK_MICRO } else { &FULL_MICRO };
    let print = |out: &mut dyn Write,
                 name: &str,
                 workload: &dyn core::fmt::Display,
                 row: &Row,
                 fixed: &Row| {
        let _ = writeln!(
            out,
            "STRATEGY name={} lookahead={} workload={} threads={} stack_kib={} instr_per_op={} \
             overhead_pct={} misses={} growths={} high_water_kib={} ops={} checked={} wrong={}",
            name,
            if name == "fixed" { 0 } else { lookahead },
            workload,
            row.threads,
            row.stack_kib,
            row.per_op(),
            Overhead(row.per_op(), fixed.per_op()),
            row.misses,
            row.growths,
            row.high_water_kib,
            row.ops,
            row.checked,
            row.wrong
        );
    };
    for l in loads {
        let fixed = match measure(l, StackPolicy::Fixed) {
            Ok(row) => row,
            Err(e) => {
                cannot_start(out, "bench strategies", e);
                return;
            }
        };
        print(out, "fixed", &l.profile, &fixed, &fixed);
        let dynamic = match measure(l, StackPolicy::Dynamic) {
            Ok(row) => row,
            Err(e) => {
                cannot_start(out, "bench strategies", e);
                return;
            }
        };
        print(out, strategy.as_str(), &l.profile, &dynamic, &fixed);
    }
    type Bench = fn(&Micro, StackPolicy) -> Result<Row, SpawnError>;
    let micros: [(&str, Bench); 3] = [("switch", switch), ("spawn", spawn), ("svc", svc)];
    for (name, bench) in micros {
        let fixed = match bench(micro, StackPolicy::Fixed) {
            Ok(row) => row,
            Err(e) => {
                cannot_start(out, "bench strategies", e);
                return;
            }
        };
        print(out, "fixed", &name, &fixed, &fixed);
        let dynamic = match bench(micro, StackPolicy::Dynamic) {
            Ok(row) => row,
            Err(e) => {
                cannot_start(out, "bench strategies", e);
                return;
            }
        };
        print(out, strategy.as_str(), &name, &dynamic, &fixed);
    }
}

/// `(a - b) / b` in percent with one decimal, signed.
struct Overhead(u64, u64);

impl core::fmt::Display for Overhead {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // No operation completed (every thread missed), or no baseline: nothing to compare.
        if self.0 == 0 || self.1 == 0 {
            return f.write_str("0.0");
        }
        let (a, b) = (self.0 as i128, self.1 as i128);
        // Rounded to the nearest tenth, halves away from zero.
        let num = (a - b) * 1000;
        let tenths = if num >= 0 {
            (num + b / 2) / b
        } else {
            -((-num + b / 2) / b)
        };
        let sign = if tenths < 0 { "-" } else { "" };
        write!(f, "{}{}.{}", sign, tenths.abs() / 10, tenths.abs() % 10)
    }
}

/// The thread body of a workload run.
fn worker(index: usize) {
    let profile = PROFILES[PROFILE.load(Ordering::Relaxed)];
    let ops = OPS.load(Ordering::Relaxed);
    let mut rng = Rng::for_index(index as u64);
    // SAFETY: the running thread's control block.
    let (top, max) = unsafe {
        let t = &*sched::current_ptr();
        (t.stack.top(), stack::config().max as u64)
    };
    READY.fetch_add(1, Ordering::AcqRel);
    while !GO.load(Ordering::Acquire) {
        sched::yield_now();
    }
    for _ in 0..ops {
        match profile {
            Profile::Mix | Profile::Churn => {
                let depth = if profile == Profile::Mix {
                    workload::mix_depth(&mut rng, max)
                } else {
                    rng.range(256, max.saturating_sub(2048).max(512))
                };
                stack::expand_stack(depth as usize + workload::ANNOTATION_MARGIN);
                core::hint::black_box(workload::recurse(top - depth, &mut || {}));
                if profile == Profile::Churn {
                    sched::yield_now();
                }
            }
            _ => {
                crate::shell::checked::run_counted(&profile, &mut rng);
            }
        }
        DONE_OPS.fetch_add(1, Ordering::Relaxed);
    }
    LAST_END.fetch_max(now_ns(), Ordering::AcqRel);
    sched::mark_settled();
    loop {
        sched::park();
    }
}

fn growths(s: &stack::Stats) -> u64 {
    s.grow_faults + s.ahead_growths
}

/// Waits (sleeping) until `done` holds, for at most a minute of machine time.
fn wait_for(done: impl Fn() -> bool) {
    let deadline = timer::now() + timer::ns_to_ticks(60_000_000_000);
    while !done() && timer::now() < deadline {
        sched::sleep_ms(1);
    }
}

/// One run of `l` with `policy`; an error if not one of its threads could be started.
fn measure(l: &Load, policy: StackPolicy) -> Result<Row, SpawnError> {
    let index = PROFILES.iter().position(|p| *p == l.profile).unwrap_or(0);
    PROFILE.store(index, Ordering::Relaxed);
    OPS.store(l.ops, Ordering::Relaxed);
    READY.store(0, Ordering::Relaxed);
    GO.store(false, Ordering::Relaxed);
    DONE_OPS.store(0, Ordering::Relaxed);
    LAST_END.store(0, Ordering::Relaxed);
    let before = stack::stats();
    let (ok0, wrong0) = crate::shell::checked::results();
    let name = workload::name_for(&l.profile);
    let mut started = 0;
    let mut failed = None;
    for i in 0..l.threads {
        match sched::spawn_raw(name, ThreadKind::Workload, policy, worker, i, None) {
            Ok(_) => started += 1,
            Err(e) => failed = Some(e),
        }
    }
    if let (0, Some(e)) = (started, failed) {
        return Err(e);
    }
    // Everybody at the start line, then the clock starts.
    wait_for(|| READY.load(Ordering::Acquire) >= started);
    let t0 = now_ns();
    GO.store(true, Ordering::Release);
    wait_for(|| sched::unsettled() == 0);
    let t1 = LAST_END.load(Ordering::Acquire).max(t0);
    let after = stack::stats();
    let mut high_water = 0u64;
    sched::for_each_thread_chunked(&mut |t| {
        if t.kind == ThreadKind::Workload {
            high_water += t.stack.high_water_bytes();
        }
    });
    let (ok1, wrong1) = crate::shell::checked::results();
    sched::kill_all(&mut |_, _| {});
    wait_for(|| sched::workload_threads() == 0);
    Ok(Row {
        threads: started,
        ops: DONE_OPS.load(Ordering::Relaxed),
        ns: t1 - t0,
        stack_kib: after.mapped_pages.saturating_sub(before.mapped_pages) * 4,
        high_water_kib: high_water / 1024,
        misses: after.misses - before.misses,
        growths: growths(&after) - growths(&before),
        checked: ok1 - ok0,
        wrong: wrong1 - wrong0,
    })
}

/// Counts from `before` to now, for the basic costs.
fn micro_row(threads: usize, ops: u64, ns: u64, before: &stack::Stats) -> Row {
    let after = stack::stats();
    Row {
        threads,
        ops,
        ns,
        misses: after.misses - before.misses,
        growths: growths(&after) - growths(before),
        ..Row::default()
    }
}

/// Two threads on one CPU yielding to each other.
fn switch(m: &Micro, policy: StackPolicy) -> Result<Row, SpawnError> {
    let before = stack::stats();
    let yields = m.yields;
    let t0 = now_ns();
    let body = move || {
        for _ in 0..yields {
            sched::yield_now();
        }
    };
    let a = sched::spawn_pinned("strat-sw-a", policy, 0, body);
    let b = sched::spawn_pinned("strat-sw-b", policy, 0, body);
    let mut failed = None;
    // Both joined, or the one that started (it yields its rounds and ends on its own).
    for h in [a, b] {
        match h {
            Ok(h) => h.join(),
            Err(e) => failed = Some(e),
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(micro_row(2, 2 * yields as u64, now_ns() - t0, &before))
}

/// Spawning a thread, up to its first instruction (its exit is not timed).
fn spawn(m: &Micro, policy: StackPolicy) -> Result<Row, SpawnError> {
    let before = stack::stats();
    let started = AtomicU64::new(0);
    let started_ptr = &started as *const AtomicU64 as usize;
    let mut total = 0u64;
    let mut done = 0u64;
    for _ in 0..m.spawns {
        started.store(0, Ordering::Relaxed);
        let cpu = crate::percpu::cpu_index();
        let t0 = now_ns();
        let h = sched::spawn_pinned("strat-spawn", policy, cpu, move || {
            // SAFETY: `started` outlives this thread (the caller joins it).
            unsafe { &*(started_ptr as *const AtomicU64) }.store(now_ns(), Ordering::Release);
        });
        let h = match h {
            Ok(h) => h,
            Err(e) if done == 0 => return Err(e),
            // Memory ran out after some rounds: the figure is over those.
            Err(_) => break,
        };
        while started.load(Ordering::Acquire) == 0 {
            sched::yield_now();
        }
        total += started.load(Ordering::Acquire) - t0;
        h.join();
        done += 1;
    }
    Ok(micro_row(1, done, total, &before))
}

/// An empty system call round trip, from a thread with `policy`.
fn svc(m: &Micro, policy: StackPolicy) -> Result<Row, SpawnError> {
    let before = stack::stats();
    let ns = AtomicU64::new(0);
    let ns_ptr = &ns as *const AtomicU64 as usize;
    let calls = m.svcs;
    let h = sched::spawn_with("strat-svc", policy, move || {
        let t0 = now_ns();
        for _ in 0..calls {
            sched::null_syscall();
        }
        // SAFETY: `ns` outlives this thread (the caller joins it).
        unsafe { &*(ns_ptr as *const AtomicU64) }.store(now_ns() - t0, Ordering::Relaxed);
    })?;
    h.join();
    Ok(micro_row(
        1,
        calls as u64,
        ns.load(Ordering::Relaxed),
        &before,
    ))
}
