//! Stress: thousands of `churn` threads growing, sleeping, being trimmed, killed, respawned
//! and migrating on every CPU, for a fixed time (`stress.seconds=N` on the command line,
//! default 20; `make stress` runs 600). Every churn thread checks a pattern across its stack
//! frames after every wake-up (a mismatch panics the kernel, failing the run). At the end,
//! after `kill all`, stack memory and frames are back at their baseline. Booted with
//! `kstack.park_after=0`, every sleep may also park the stack (the parker racing wake-ups,
//! the trimmer and the killer on every CPU); then parks and restores must have happened and
//! no parked copy may be left after `kill all`.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dynstack::arch::timer;
use dynstack::check;
use dynstack::cmdline::StackPolicy;
use dynstack::sched::{self, ThreadKind};
use dynstack::shell::command::Profile;
use dynstack::stack;
use dynstack::testing::{run, MemorySnapshot, TestResult};

dynstack::kernel_main!(main);

fn main() {
    run(dynstack::test_cases![churn_torture])
}

/// `stress.NAME=N` from the command line, or `default`.
fn knob(name: &str, default: u64) -> u64 {
    let args = &dynstack::kernel::boot_info().args;
    args.ignored
        .iter()
        .find_map(|w| {
            w.strip_prefix("stress.")?
                .strip_prefix(name)?
                .strip_prefix('=')?
                .parse()
                .ok()
        })
        .unwrap_or(default)
}

fn seconds() -> u64 {
    knob("seconds", 20)
}

static STOP: AtomicBool = AtomicBool::new(false);
static TRIMMED: AtomicU64 = AtomicU64::new(0);
static RESPAWNED: AtomicU64 = AtomicU64::new(0);

fn spawn_churn(index: usize) -> bool {
    let (entry, arg) = dynstack::shell::workload::entry_for(&Profile::Churn, index);
    sched::spawn_raw(
        "churn",
        ThreadKind::Workload,
        StackPolicy::Dynamic,
        entry,
        arg,
        None,
    )
    .is_ok()
}

fn churn_torture() -> TestResult {
    let seconds = seconds();
    let threads = 500 * sched::online_count();
    let base_stats = stack::stats();
    let base = MemorySnapshot::take();
    dynstack::println!(
        "stress: {} churn threads on {} CPUs for {} s",
        threads,
        sched::online_count(),
        seconds
    );

    for i in 0..threads {
        check!(spawn_churn(i), "spawn {} of {} failed", i, threads);
    }
    // A trimmer racing with wake-ups on every CPU.
    let trimmer = sched::spawn("trimmer", || {
        while !STOP.load(Ordering::Relaxed) && knob("trim", 1) == 1 {
            TRIMMED.fetch_add(stack::trim_all(), Ordering::Relaxed);
            sched::sleep_ms(7);
        }
    })
    .map_err(|e| format!("trimmer: {}", e))?;
    // A killer ending random churn threads (mid-sleep or mid-recursion) and starting new ones.
    let killer = sched::spawn("killer", move || {
        let mut rng = dynstack::shell::workload::Rng::for_index(0xdead);
        let mut next_index = threads;
        while !STOP.load(Ordering::Relaxed) && knob("kill", 1) == 1 {
            let mut victims = alloc::vec::Vec::new();
            sched::for_each_thread(usize::MAX, &mut |t| {
                if t.kind == ThreadKind::Workload && rng.range(0, 99) < 2 {
                    victims.push(t.tid);
                }
            });
            for tid in victims.into_iter().take(20) {
                if sched::kill(tid) == Ok(1) && spawn_churn(next_index) {
                    next_index += 1;
                    RESPAWNED.fetch_add(1, Ordering::Relaxed);
                }
            }
            sched::sleep_ms(50);
        }
    })
    .map_err(|e| format!("killer: {}", e))?;

    let start = timer::now();
    let mut last_report = start;
    while timer::ticks_to_ns(timer::now() - start) < seconds * 1_000_000_000 {
        sched::sleep_ms(100);
        if timer::ticks_to_ns(timer::now() - last_report) >= 10_000_000_000 {
            last_report = timer::now();
            let s = stack::stats();
            dynstack::println!(
                "stress: {} s: grow_faults={} trimmed_pages={} respawned={} switches={} mapped_kib={}",
                timer::ticks_to_ns(last_report - start) / 1_000_000_000,
                s.grow_faults - base_stats.grow_faults,
                s.trimmed_pages - base_stats.trimmed_pages,
                RESPAWNED.load(Ordering::Relaxed),
                sched::switches(),
                s.mapped_pages * 4
            );
        }
    }
    STOP.store(true, Ordering::Relaxed);
    trimmer.join();
    killer.join();
    let killed = sched::kill_all(&mut |_, _| {});
    let s = stack::stats();
    dynstack::println!(
        "STRESS seconds={} threads={} killed={} respawned={} grow_faults={} trimmed_pages={} overflows={} oom_kills={} shortages={} parks={} restores={}",
        seconds,
        threads,
        killed,
        RESPAWNED.load(Ordering::Relaxed),
        s.grow_faults - base_stats.grow_faults,
        s.trimmed_pages - base_stats.trimmed_pages,
        s.overflows - base_stats.overflows,
        s.oom_kills - base_stats.oom_kills,
        s.shortages - base_stats.shortages,
        s.park.parks - base_stats.park.parks,
        s.park.restores - base_stats.park.restores
    );
    if stack::config().park_after_ms == Some(0) {
        check!(
            s.park.parks > base_stats.park.parks && s.park.restores > base_stats.park.restores,
            "every sleep may park, yet {} parks and {} restores",
            s.park.parks - base_stats.park.parks,
            s.park.restores - base_stats.park.restores
        );
    }
    check!(
        s.park.parked == base_stats.park.parked
            && s.park.parked_bytes == base_stats.park.parked_bytes,
        "{} parked stacks ({} bytes) left after kill all",
        s.park.parked,
        s.park.parked_bytes
    );
    check!(
        s.grow_faults > base_stats.grow_faults + threads as u64,
        "too few growth faults: the churn did not churn"
    );
    check!(
        knob("trim", 1) == 0 || s.trimmed_pages > base_stats.trimmed_pages,
        "trim never freed anything"
    );
    check!(
        s.overflows == base_stats.overflows,
        "{} overflows",
        s.overflows - base_stats.overflows
    );
    check!(
        s.oom_kills == base_stats.oom_kills,
        "{} OOM kills",
        s.oom_kills - base_stats.oom_kills
    );
    check!(
        s.stacks == base_stats.stacks,
        "stacks {} after kill all, {} before",
        s.stacks,
        base_stats.stacks
    );
    check!(
        s.mapped_pages == base_stats.mapped_pages,
        "mapped stack pages {} after kill all, {} before",
        s.mapped_pages,
        base_stats.mapped_pages
    );
    let after = MemorySnapshot::take();
    check!(
        after.accounted().abs_diff(base.accounted()) <= 2,
        "frames accounted for: {} after, {} before (a leak of {} pages); before {:?}, after {:?}",
        after.accounted(),
        base.accounted(),
        base.accounted() as i64 - after.accounted() as i64,
        base,
        after
    );
    Ok(())
}
