//! The scheduler on the running machine: preemption, sleep, join, closures reaching their
//! threads, a thousand threads, CPU migration, thread faults, register preservation across
//! preemption, park/unpark, kill and yield fairness.
//!
//! Booted by `make test` with -smp 1 and -smp 4 (see tests/qemu.toml). Every wait has a
//! deadline, every time bound is generous (QEMU TCG on a loaded host), and every case checks
//! something a broken scheduler gets wrong.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use dynstack::arch::timer;
use dynstack::check;
use dynstack::cmdline::StackPolicy;
use dynstack::kernel::exception::last_fault;
use dynstack::mm::{frame, heap, kspace};
use dynstack::percpu;
use dynstack::sched::{self, Join, JoinState, Thread, ThreadKind, ThreadState};
use dynstack::stack;
use dynstack::sync::IrqMutex;
use dynstack::testing::{run, TestResult};

mod closures;
mod join_faults;
mod kill_fairness;
mod latent;
mod registers_park;

use closures::*;
use join_faults::*;
use kill_fairness::*;
use latent::*;
use registers_park::*;

dynstack::kernel_main!(main);

fn main() {
    run(dynstack::test_cases![
        preempts_spinning_threads,
        sleep_accuracy,
        sleep_under_load,
        join_many_memory_returns,
        closures_reach_their_threads,
        thousand_threads_alive,
        threads_migrate_and_finish,
        fault_reported_kernel_continues,
        registers_preserved,
        park_token_not_lost,
        park_unpark_ping_pong,
        kill_sleeping_thread,
        kill_running_thread,
        kill_does_not_wait_for_other_kills,
        yield_fairness,
        current_ptr_survives_migration,
        settle_and_parkable_read_cpu_masked,
        exit_hands_over_after_switching_away,
        wake_of_cpu_going_idle_kicks_it,
        steal_skips_a_pinned_head,
    ])
}

// -------------------------------------------------------------------------------------------
// Helpers

fn ms_to_ticks(ms: u64) -> u64 {
    timer::ns_to_ticks(ms * 1_000_000)
}

fn ticks_to_ms(t: u64) -> u64 {
    timer::ticks_to_ns(t) / 1_000_000
}

fn now() -> u64 {
    timer::now()
}

/// Polls `cond` every millisecond (sleeping in between) until it holds or `ms` have passed.
/// Waits (sleeping) until `cond` holds; `false` if it still does not after `ms`, and never
/// less than 30 s: the limit only keeps a broken kernel from hanging the suite (a case that
/// passes never reaches it), so it is far beyond what any loaded host needs.
fn wait_for(ms: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = now() + ms_to_ticks(ms.max(30_000));
    loop {
        if cond() {
            return true;
        }
        if now() > deadline {
            return cond();
        }
        sched::sleep_ms(1);
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<sched::JoinHandle, String> {
    sched::spawn(name, f).map_err(|e| format!("spawn {} failed: {}", name, e))
}

/// State of thread `tid`, if it is in the thread table.
fn state_of(tid: u64) -> Option<ThreadState> {
    let mut s = None;
    sched::for_each_thread(usize::MAX, &mut |t| {
        if t.tid == tid {
            s = Some(t.state());
        }
    });
    s
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Uses about `bytes` of stack (the compiler's probes touch every page on the way down).
#[inline(never)]
fn use_stack(bytes: usize, seed: u64) -> u64 {
    if bytes < 1024 {
        return seed;
    }
    let mut buf = [0u8; 1024];
    buf[(seed % 1024) as usize] = seed as u8;
    core::hint::black_box(&mut buf);
    let below = use_stack(bytes - 1024, seed.wrapping_mul(31).wrapping_add(1));
    // Used after the call, so the frame stays live (no tail call).
    below ^ buf[((seed / 3) % 1024) as usize] as u64
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

// -------------------------------------------------------------------------------------------
// Preemption

/// Threads that spin without ever yielding or sleeping: first more of them than CPUs,
/// placed by the scheduler, then two pinned to every CPU. All of them, and this thread,
/// keep making progress; without timer preemption the first spinner on a CPU would keep it
/// and the others (and this thread) would starve.
fn preempts_spinning_threads() -> TestResult {
    let n = sched::online_count();
    spinners_progress(n + 1, false)?;
    spinners_progress(2 * n, true)
}

fn spinners_progress(spinners: usize, pinned: bool) -> TestResult {
    let n = sched::online_count();
    let counters: Arc<Vec<AtomicU64>> =
        Arc::new((0..spinners).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let switches_before = sched::switches();
    let mut hs = Vec::new();
    for i in 0..spinners {
        let c = counters.clone();
        let s = stop.clone();
        let body = move || {
            // A safety net so a broken scheduler still ends the case: 20 s.
            let give_up = now() + ms_to_ticks(20_000);
            let mut k = 0u64;
            while !s.load(Ordering::Relaxed) {
                c[i].fetch_add(1, Ordering::Relaxed);
                k += 1;
                if k.is_multiple_of(4096) && now() > give_up {
                    break;
                }
            }
        };
        hs.push(if pinned {
            sched::spawn_pinned("spinner", stack::default_policy(), i % n, body)
                .map_err(|e| format!("spawn_pinned: {}", e))?
        } else {
            spawn("spinner", body)?
        });
    }
    let all_started = wait_for(10_000, || {
        counters.iter().all(|c| c.load(Ordering::Relaxed) > 0)
    });
    let first: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let all_progressed = all_started
        && wait_for(10_000, || {
            counters
                .iter()
                .zip(&first)
                .all(|(c, &f)| c.load(Ordering::Relaxed) > f)
        });
    let last: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join();
    }
    let switched = sched::switches() - switches_before;
    let how = if pinned { "pinned" } else { "placed" };
    check!(
        all_started,
        "{} never-yielding spinners ({}) on {} CPU(s): not all ever ran: {:?}",
        spinners,
        how,
        n,
        first
    );
    check!(
        all_progressed,
        "{} spinners stopped making progress: {:?} then {:?}",
        how,
        first,
        last
    );
    check!(
        switched >= spinners as u64,
        "only {} context switches while {} {} spinners shared {} CPU(s)",
        switched,
        spinners,
        how,
        n
    );
    Ok(())
}

// -------------------------------------------------------------------------------------------
// Sleep

/// sleep_ms(20) takes at least 20 ms of generic-timer time; sleep_ms(1) and sleep_ms(5)
/// likewise; every sleep ends; a deadline in the past returns without sleeping. How late a
/// sleep ends depends on the host (QEMU's clock is the host's), so it is printed, not
/// bounded.
fn sleep_accuracy() -> TestResult {
    let freq = timer::frequency();
    check!(freq > 0, "CNTFRQ_EL0 is 0");
    for (ms, samples) in [(20u64, 9usize), (1, 15), (5, 9)] {
        let mut got = Vec::new();
        for _ in 0..samples {
            let t0 = now();
            sched::sleep_ms(ms);
            let t1 = now();
            let ns = timer::ticks_to_ns(t1 - t0);
            check!(
                ns >= ms * 1_000_000,
                "sleep_ms({}) returned after {} ns",
                ms,
                ns
            );
            got.push(ns / 1000);
        }
        let med = median(&mut got);
        dynstack::println!(
            "  sleep_accuracy: sleep_ms({}) x{}: median {} us, max {} us",
            ms,
            samples,
            med,
            got.last().copied().unwrap_or(0)
        );
    }
    // sleep_until: an absolute deadline is met, a past one returns at once.
    let deadline = now() + ms_to_ticks(15);
    sched::sleep_until(deadline);
    check!(
        now() >= deadline,
        "sleep_until returned before its deadline"
    );
    // A past deadline returns without a sleep: no context switch happens on this CPU, and
    // a sleeping thread would switch (IRQs masked: nothing else can switch it out).
    let daif = dynstack::arch::irq::save_and_disable();
    let switches = sched::switches();
    sched::sleep_until(now() - 1);
    sched::sleep_ns(0);
    let switched = sched::switches() - switches;
    dynstack::arch::irq::restore(daif);
    check!(
        switched == 0 || sched::online_count() > 1,
        "a past deadline slept ({} switches)",
        switched
    );
    Ok(())
}

/// Many threads sleep different lengths at once while every CPU is busy with a spinner:
/// each wakes no earlier than asked, and every one wakes although no CPU is ever idle (the
/// wake-up preempts the spinner at the end of its slice). The median lateness is printed:
/// QEMU's clock is the host's, so it is not bounded.
fn sleep_under_load() -> TestResult {
    let n = sched::online_count();
    let stop = Arc::new(AtomicBool::new(false));
    let mut spinners = Vec::new();
    for _ in 0..n {
        let s = stop.clone();
        spinners.push(spawn("load", move || {
            let give_up = now() + ms_to_ticks(20_000);
            while !s.load(Ordering::Relaxed) && now() < give_up {
                core::hint::spin_loop();
            }
        })?);
    }
    const SLEEPERS: usize = 48;
    let late: Arc<Vec<AtomicU64>> =
        Arc::new((0..SLEEPERS).map(|_| AtomicU64::new(u64::MAX)).collect());
    let early = Arc::new(AtomicU64::new(0));
    let mut hs = Vec::new();
    for i in 0..SLEEPERS {
        let l = late.clone();
        let e = early.clone();
        let ms = 1 + splitmix(i as u64) % 60;
        hs.push(spawn("sleeper", move || {
            for round in 0..3 {
                let t0 = now();
                let want = ms_to_ticks(ms + round);
                sched::sleep_ms(ms + round);
                let took = now() - t0;
                if took < want {
                    e.fetch_add(1, Ordering::SeqCst);
                }
                let lateness_us = timer::ticks_to_ns(took.saturating_sub(want)) / 1000;
                l[i].store(
                    lateness_us.min(l[i].load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
            }
        })?);
    }
    let finished = wait_for(20_000, || hs.iter().all(|h| h.is_finished()));
    stop.store(true, Ordering::Relaxed);
    for h in spinners {
        h.join();
    }
    check!(finished, "sleepers did not all finish within 20 s");
    for h in hs {
        h.join();
    }
    check!(
        early.load(Ordering::SeqCst) == 0,
        "{} sleeps ended before their deadline",
        early.load(Ordering::SeqCst)
    );
    let mut lateness: Vec<u64> = late.iter().map(|l| l.load(Ordering::Relaxed)).collect();
    let med = median(&mut lateness);
    dynstack::println!(
        "  sleep_under_load: {} sleepers beside {} spinners, median best lateness {} us",
        SLEEPERS,
        n,
        med
    );
    Ok(())
}
