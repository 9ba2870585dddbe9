//! The scheduler on the running machine: preemption, sleep, join, a thousand threads, CPU
//! migration, thread faults, register preservation across preemption, park/unpark, kill and
//! yield fairness.
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
use dynstack::sched::{self, JoinState, Thread, ThreadKind, ThreadState};
use dynstack::stack;
use dynstack::testing::{run, TestResult};

dynstack::kernel_main!(main);

fn main() {
    run(dynstack::test_cases![
        preempts_spinning_threads,
        sleep_accuracy,
        sleep_under_load,
        join_many_memory_returns,
        thousand_threads_alive,
        threads_migrate_and_finish,
        fault_reported_kernel_continues,
        registers_preserved,
        park_token_not_lost,
        park_unpark_ping_pong,
        kill_sleeping_thread,
        kill_running_thread,
        yield_fairness,
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
fn wait_for(ms: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = now() + ms_to_ticks(ms);
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

/// sleep_ms(20) takes at least 20 ms of generic-timer time, and typically not much more
/// (median below 60 ms, none beyond 2 s); sleep_ms(1) likewise; a deadline in the past
/// returns at once.
fn sleep_accuracy() -> TestResult {
    let freq = timer::frequency();
    check!(freq > 0, "CNTFRQ_EL0 is 0");
    for (ms, samples, median_bound) in [(20u64, 9usize, 60u64), (1, 15, 20), (5, 9, 30)] {
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
            check!(
                ns < ms * 1_000_000 + 2_000_000_000,
                "sleep_ms({}) took {} ms",
                ms,
                ns / 1_000_000
            );
            got.push(ns / 1000);
        }
        let med = median(&mut got);
        check!(
            med < median_bound * 1000,
            "sleep_ms({}): median {} us over {} sleeps (bound {} ms): {:?}",
            ms,
            med,
            samples,
            median_bound,
            got
        );
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
    let t0 = now();
    sched::sleep_until(t0 - 1);
    sched::sleep_ns(0);
    let took = ticks_to_ms(now() - t0);
    check!(took < 100, "a past deadline slept {} ms", took);
    Ok(())
}

/// Many threads sleep different lengths at once while every CPU is busy with a spinner:
/// each wakes no earlier than asked, and the median lateness stays small (the wake-up
/// preempts the spinner at the end of its slice at the latest).
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
    check!(
        med < 100_000,
        "median best lateness {} us with every CPU busy (bound 100 ms): {:?}",
        med,
        lateness
    );
    Ok(())
}

// -------------------------------------------------------------------------------------------
// Join and memory

/// Frames that are accounted for outside threads' stacks: free, in the per-CPU reserves,
/// grown into the heap, or used as translation tables. Whatever else is missing is held by
/// stacks (or leaked).
fn frames_accounted() -> u64 {
    frame::free_pages()
        + stack::stats().reserve_pages
        + heap::grown_bytes() / 4096
        + kspace::table_pages()
}

struct MemSnapshot {
    frames: u64,
    heap: u64,
    threads: usize,
    stacks: u64,
    stack_pages: u64,
}

fn snapshot() -> MemSnapshot {
    MemSnapshot {
        frames: frames_accounted(),
        heap: heap::allocated_bytes(),
        threads: sched::thread_count(),
        stacks: stack::stats().stacks,
        stack_pages: stack::stats().mapped_pages,
    }
}

/// One round of 200 threads: dynamic and fixed stacks, some using three pages of stack
/// (growth), each adding its share to a checksum; all joined.
fn two_hundred_threads(round: u64) -> TestResult {
    const N: u64 = 200;
    let results: Arc<Vec<AtomicU64>> = Arc::new((0..N).map(|_| AtomicU64::new(0)).collect());
    let mut hs = Vec::new();
    for i in 0..N {
        let r = results.clone();
        let policy = if i % 3 == 0 {
            StackPolicy::Fixed
        } else {
            StackPolicy::Dynamic
        };
        let h = sched::spawn_with("joinee", policy, move || {
            let depth = if i % 4 == 0 { 10 * 1024 } else { 1024 };
            let v = use_stack(depth, i ^ round);
            core::hint::black_box(v);
            r[i as usize].fetch_add(1, Ordering::SeqCst);
            if i % 7 == 0 {
                sched::yield_now();
            }
        })
        .map_err(|e| format!("spawn {} of {} failed: {}", i, N, e))?;
        hs.push(h);
    }
    for h in hs {
        h.join();
    }
    let counts: Vec<u64> = results.iter().map(|r| r.load(Ordering::SeqCst)).collect();
    check!(
        counts.iter().all(|&c| c == 1),
        "after join, threads ran these many times: {:?}",
        counts
    );
    Ok(())
}

/// 200 threads joined, twice: after the second round every frame, every heap byte, every
/// stack and every thread-table entry is back (the first round lets the heap and tables
/// reach their working size).
fn join_many_memory_returns() -> TestResult {
    // Grow this thread's own stack first, so its growth is not counted as a leak.
    use_stack(10 * 1024, 1);
    two_hundred_threads(0)?;
    let before = snapshot();
    two_hundred_threads(1)?;
    let after = snapshot();
    check!(
        after.threads == before.threads,
        "thread table: {} entries before, {} after join",
        before.threads,
        after.threads
    );
    check!(
        after.stacks == before.stacks,
        "stacks: {} before, {} after join",
        before.stacks,
        after.stacks
    );
    check!(
        after.stack_pages == before.stack_pages,
        "stack pages mapped: {} before, {} after join",
        before.stack_pages,
        after.stack_pages
    );
    check!(
        after.frames + 2 >= before.frames,
        "{} frames did not come back after joining 200 threads ({} -> {})",
        before.frames - after.frames,
        before.frames,
        after.frames
    );
    check!(
        after.frames <= before.frames + 2,
        "{} more frames than before (accounting is off)",
        after.frames - before.frames
    );
    check!(
        after.heap <= before.heap + 2048,
        "heap in use grew by {} bytes over 200 joined threads",
        after.heap - before.heap
    );
    Ok(())
}

static PARK_GO: AtomicBool = AtomicBool::new(false);
static PARKED_WORKLOAD: AtomicUsize = AtomicUsize::new(0);
static WORKLOAD_RAN_ON: AtomicUsize = AtomicUsize::new(0);

fn parked_workload(_: usize) {
    PARKED_WORKLOAD.fetch_add(1, Ordering::SeqCst);
    while !PARK_GO.load(Ordering::SeqCst) {
        sched::park();
    }
    // Killed threads never get here.
    WORKLOAD_RAN_ON.fetch_add(1, Ordering::SeqCst);
}

/// 1,000 threads alive at once (500 system threads, 500 workload threads), all parked and
/// counted in the thread table; the workload half is killed with kill_all while blocked,
/// the rest unparked; all end and the table is back to where it was.
fn thousand_threads_alive() -> TestResult {
    const HALF: usize = 500;
    let base_threads = sched::thread_count();
    let base_stacks = stack::stats().stacks;
    PARK_GO.store(false, Ordering::SeqCst);
    PARKED_WORKLOAD.store(0, Ordering::SeqCst);
    WORKLOAD_RAN_ON.store(0, Ordering::SeqCst);
    let ptrs: Arc<Vec<AtomicPtr<Thread>>> = Arc::new(
        (0..HALF)
            .map(|_| AtomicPtr::new(core::ptr::null_mut()))
            .collect(),
    );
    let started = Arc::new(AtomicUsize::new(0));
    let mut hs = Vec::new();
    let mut joins = Vec::new();
    for i in 0..HALF {
        let p = ptrs.clone();
        let s = started.clone();
        hs.push(spawn("parker-s", move || {
            p[i].store(sched::current_ptr(), Ordering::SeqCst);
            s.fetch_add(1, Ordering::SeqCst);
            while !PARK_GO.load(Ordering::SeqCst) {
                sched::park();
            }
        })?);
        let js = Arc::new(JoinState {
            done: AtomicBool::new(false),
            waiter: AtomicPtr::new(core::ptr::null_mut()),
        });
        sched::spawn_raw(
            "parker-w",
            ThreadKind::Workload,
            stack::default_policy(),
            parked_workload,
            0,
            Some(js.clone()),
        )
        .map_err(|e| format!("workload spawn {} failed: {}", i, e))?;
        joins.push(js);
    }
    let count_blocked = || {
        let mut n = 0;
        sched::for_each_thread(usize::MAX, &mut |t| {
            if t.name().starts_with("parker-") && t.state() == ThreadState::Blocked {
                n += 1;
            }
        });
        n
    };
    let all_parked = wait_for(30_000, || count_blocked() == 2 * HALF);
    let blocked = count_blocked();
    let alive = sched::thread_count();
    let stacks = stack::stats().stacks;
    let mut result: TestResult = (|| {
        check!(
            all_parked,
            "only {} of {} threads reached park within 30 s ({} started, {} workload)",
            blocked,
            2 * HALF,
            started.load(Ordering::SeqCst),
            PARKED_WORKLOAD.load(Ordering::SeqCst)
        );
        check!(
            alive >= base_threads + 2 * HALF,
            "thread table holds {} threads, expected at least {}",
            alive,
            base_threads + 2 * HALF
        );
        check!(
            stacks >= base_stacks + 2 * HALF as u64,
            "{} stacks exist with {} threads alive",
            stacks,
            2 * HALF
        );
        check!(
            sched::workload_threads() == HALF,
            "workload_threads() = {}",
            sched::workload_threads()
        );
        Ok(())
    })();
    // Kill the workload half while it is blocked.
    let killed = sched::kill_all(&mut |_, _| {});
    if result.is_ok() && killed != HALF as u64 {
        result = Err(format!("kill_all killed {}, expected {}", killed, HALF));
    }
    let all_done = wait_for(30_000, || {
        joins.iter().all(|j| j.done.load(Ordering::SeqCst))
    });
    if result.is_ok() && !all_done {
        result = Err(String::from(
            "killed workload threads were not reaped within 30 s",
        ));
    }
    // Unpark the system half.
    PARK_GO.store(true, Ordering::SeqCst);
    for p in ptrs.iter() {
        let t = p.load(Ordering::SeqCst);
        if !t.is_null() {
            // SAFETY: each system parker lives until PARK_GO is set and it is unparked (or
            // its park returns on a token); unparking an exiting thread is what unpark
            // allows for: it stays in the table until the reaper takes it after its exit,
            // and its exit needs this very wake-up or a token.
            unsafe { sched::unpark(t) };
        }
    }
    let all_exited = wait_for(30_000, || hs.iter().all(|h| h.is_finished()));
    if !all_exited {
        return result.and(Err(String::from(
            "unparked threads did not all exit within 30 s",
        )));
    }
    for h in hs {
        h.join();
    }
    result?;
    check!(
        WORKLOAD_RAN_ON.load(Ordering::SeqCst) == 0,
        "{} killed workload threads ran on past their park",
        WORKLOAD_RAN_ON.load(Ordering::SeqCst)
    );
    check!(
        sched::workload_threads() == 0,
        "{} workload threads left after kill_all",
        sched::workload_threads()
    );
    check!(
        wait_for(5_000, || sched::thread_count() == base_threads),
        "thread table: {} entries, {} before",
        sched::thread_count(),
        base_threads
    );
    check!(
        stack::stats().stacks == base_stacks,
        "stacks: {} now, {} before",
        stack::stats().stacks,
        base_stacks
    );
    Ok(())
}

// -------------------------------------------------------------------------------------------
// Migration

/// Threads with staggered amounts of work, yielding often: as some finish, idle CPUs take
/// queued threads from busy ones. With more than one CPU, at least one thread is seen on
/// two CPUs (cpu_index() across yields); on one CPU, everything runs on CPU 0. All finish
/// and do all their work either way.
fn threads_migrate_and_finish() -> TestResult {
    let n = sched::online_count();
    let mut rounds = 0;
    let deadline = now() + ms_to_ticks(20_000);
    loop {
        rounds += 1;
        let k = 2 * n + 1;
        let masks: Arc<Vec<AtomicU64>> = Arc::new((0..k).map(|_| AtomicU64::new(0)).collect());
        let work: Arc<Vec<AtomicU64>> = Arc::new((0..k).map(|_| AtomicU64::new(0)).collect());
        let mut hs = Vec::new();
        for i in 0..k {
            let m = masks.clone();
            let w = work.clone();
            hs.push(spawn("migrant", move || {
                let bursts = 4 * (i as u64 + 1);
                for _ in 0..bursts {
                    m[i].fetch_or(1 << percpu::cpu_index(), Ordering::SeqCst);
                    let end = now() + timer::ns_to_ticks(500_000);
                    while now() < end {
                        core::hint::spin_loop();
                    }
                    w[i].fetch_add(1, Ordering::SeqCst);
                    sched::yield_now();
                }
                m[i].fetch_or(1 << percpu::cpu_index(), Ordering::SeqCst);
            })?);
        }
        for h in hs {
            h.join();
        }
        for i in 0..k {
            let done = work[i].load(Ordering::SeqCst);
            check!(
                done == 4 * (i as u64 + 1),
                "thread {} did {} of {} bursts",
                i,
                done,
                4 * (i + 1)
            );
            let m = masks[i].load(Ordering::SeqCst);
            check!(m != 0, "thread {} never recorded a CPU", i);
            check!(
                m >> n == 0,
                "thread {} ran on CPUs {:#b}, but only {} are online",
                i,
                m,
                n
            );
        }
        let moved = masks
            .iter()
            .filter(|m| m.load(Ordering::SeqCst).count_ones() >= 2)
            .count();
        if n == 1 {
            check!(
                masks.iter().all(|m| m.load(Ordering::SeqCst) == 1),
                "on one CPU, threads report CPUs other than 0"
            );
            return Ok(());
        }
        if moved > 0 {
            dynstack::println!(
                "  threads_migrate_and_finish: {} of {} threads ran on two or more CPUs (round {})",
                moved,
                k,
                rounds
            );
            return Ok(());
        }
        check!(
            now() < deadline,
            "no thread ran on two CPUs in {} rounds of {} threads on {} CPUs",
            rounds,
            2 * n + 1,
            n
        );
    }
}

// -------------------------------------------------------------------------------------------
// Faults

/// A thread that writes to a bad address is ended and reported (last_fault names it, with a
/// write data abort at that address) while other threads keep running on every CPU; the
/// kernel carries on: new threads start and finish, and the dead thread's memory is back.
fn fault_reported_kernel_continues() -> TestResult {
    let n = sched::online_count();
    let base_threads = sched::thread_count();
    let base_stacks = stack::stats().stacks;
    // Background work across the CPUs while the fault happens.
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let mut bg = Vec::new();
    for _ in 0..n {
        let s = stop.clone();
        let p = progress.clone();
        bg.push(spawn("bystander", move || {
            let give_up = now() + ms_to_ticks(20_000);
            while !s.load(Ordering::Relaxed) && now() < give_up {
                p.fetch_add(1, Ordering::Relaxed);
                if p.load(Ordering::Relaxed).is_multiple_of(64) {
                    sched::yield_now();
                }
            }
        })?);
    }
    let bad = 0xdead_beef_0000u64;
    let survived = Arc::new(AtomicBool::new(false));
    let sv = survived.clone();
    let h = spawn("faulter", move || {
        // SAFETY: meant to fault.
        unsafe { asm!("str {v}, [{a}]", a = in(reg) bad, v = in(reg) 7u64, options(nostack)) };
        sv.store(true, Ordering::SeqCst);
    })?;
    let tid = h.tid();
    h.join();
    let (ftid, esr, far) = last_fault();
    let p0 = progress.load(Ordering::Relaxed);
    let bystanders_ok = wait_for(5_000, || progress.load(Ordering::Relaxed) > p0 + 1000);
    stop.store(true, Ordering::Relaxed);
    for h in bg {
        h.join();
    }
    check!(
        !survived.load(Ordering::SeqCst),
        "the write to {:#x} did not fault",
        bad
    );
    check!(
        ftid == tid,
        "last_fault names thread {}, the faulter was {}",
        ftid,
        tid
    );
    check!(
        (esr >> 26) & 0x3f == 0x25 && esr & (1 << 6) != 0,
        "ESR {:#x}: expected a data abort (EC 0x25) on a write",
        esr
    );
    check!(far == bad, "FAR {:#x}, expected {:#x}", far, bad);
    check!(
        bystanders_ok,
        "other threads stopped running after the fault"
    );
    check!(
        state_of(tid).is_none(),
        "the faulted thread is still in the thread table"
    );
    // New threads still work, on every CPU.
    let sum = Arc::new(AtomicU64::new(0));
    let mut hs = Vec::new();
    for i in 1..=50u64 {
        let s = sum.clone();
        hs.push(spawn("after", move || {
            s.fetch_add(i * i, Ordering::SeqCst);
        })?);
    }
    for h in hs {
        h.join();
    }
    check!(
        sum.load(Ordering::SeqCst) == 42925,
        "threads after the fault summed {} (expected 42925)",
        sum.load(Ordering::SeqCst)
    );
    check!(
        sched::thread_count() == base_threads,
        "thread table {} entries, {} before",
        sched::thread_count(),
        base_threads
    );
    check!(
        stack::stats().stacks == base_stacks,
        "{} stacks, {} before: the faulted thread's stack was not returned",
        stack::stats().stacks,
        base_stacks
    );
    Ok(())
}

// -------------------------------------------------------------------------------------------
// Registers across preemption

/// Fills x0..x29 from `table`, then checks them all against it `iters` times, taking a
/// yield (`svc #1`) every `period` iterations (0: never). x30 is the only scratch register;
/// the loop state lives on the stack. On return, `dump` holds x0..x29 as they were at the
/// end (or at the first mismatch) and the result is 0, or 1 for a mismatch.
#[inline(never)]
fn reg_chunk(table: &[u64; 30], iters: u64, period: u64, dump: &mut [u64; 30]) -> u64 {
    let code: u64;
    // SAFETY: saves and restores x19 and x29 itself, declares every other register it
    // changes, and leaves sp as it found it. Memory: reads `table`, writes `dump`.
    unsafe {
        asm!(
            "sub sp, sp, #64",
            "stp x19, x29, [sp, #0]",
            "stp x0, x1, [sp, #16]",
            "stp x2, x2, [sp, #32]",
            "str x3, [sp, #48]",
            "mov x30, x0",
            "ldp x0, x1, [x30, #0]",
            "ldp x2, x3, [x30, #16]",
            "ldp x4, x5, [x30, #32]",
            "ldp x6, x7, [x30, #48]",
            "ldp x8, x9, [x30, #64]",
            "ldp x10, x11, [x30, #80]",
            "ldp x12, x13, [x30, #96]",
            "ldp x14, x15, [x30, #112]",
            "ldp x16, x17, [x30, #128]",
            "ldp x18, x19, [x30, #144]",
            "ldp x20, x21, [x30, #160]",
            "ldp x22, x23, [x30, #176]",
            "ldp x24, x25, [x30, #192]",
            "ldp x26, x27, [x30, #208]",
            "ldp x28, x29, [x30, #224]",
            "1:",
            ".irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29",
            "ldr x30, [sp, #16]",
            "ldr x30, [x30, #(8*\\n)]",
            "cmp x\\n, x30",
            "b.ne 8f",
            ".endr",
            "ldr x30, [sp, #24]",
            "subs x30, x30, #1",
            "str x30, [sp, #24]",
            "b.eq 7f",
            "ldr x30, [sp, #40]",
            "subs x30, x30, #1",
            "str x30, [sp, #40]",
            "b.ne 1b",
            "ldr x30, [sp, #32]",
            "str x30, [sp, #40]",
            "svc #1",
            "ldr x30, [sp, #16]",
            "ldr x0, [x30]",
            "b 1b",
            "7:",
            "mov x30, #0",
            "b 9f",
            "8:",
            "mov x30, #1",
            "9:",
            "str x30, [sp, #56]",
            "ldr x30, [sp, #48]",
            "stp x0, x1, [x30, #0]",
            "stp x2, x3, [x30, #16]",
            "stp x4, x5, [x30, #32]",
            "stp x6, x7, [x30, #48]",
            "stp x8, x9, [x30, #64]",
            "stp x10, x11, [x30, #80]",
            "stp x12, x13, [x30, #96]",
            "stp x14, x15, [x30, #112]",
            "stp x16, x17, [x30, #128]",
            "stp x18, x19, [x30, #144]",
            "stp x20, x21, [x30, #160]",
            "stp x22, x23, [x30, #176]",
            "stp x24, x25, [x30, #192]",
            "stp x26, x27, [x30, #208]",
            "stp x28, x29, [x30, #224]",
            "ldr x0, [sp, #56]",
            "ldp x19, x29, [sp, #0]",
            "add sp, sp, #64",
            inout("x0") table.as_ptr() => code,
            inout("x1") iters => _,
            inout("x2") period => _,
            inout("x3") dump.as_mut_ptr() => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _, out("x18") _,
            out("x20") _, out("x21") _, out("x22") _, out("x23") _,
            out("x24") _, out("x25") _, out("x26") _, out("x27") _,
            out("x28") _, out("x30") _,
        );
    }
    code
}

/// Per-checker outcome.
struct Checker {
    chunks: AtomicU64,
    failure: spin::Mutex<Option<String>>,
}

/// Threads fill x0..x29 with their own patterns and check them continuously for six
/// seconds: on every CPU, two that never yield and one that also yields through `svc` in
/// the middle of its pattern, all pinned there, beside a thread sleeping 1 ms in a loop
/// (timer interrupts all the time). No register (nor the flags, nor SP) ever changes under
/// them. The checkers that never yield must all have progressed half way through, before
/// either of a CPU's pair could finish on its own, which takes preemption; and the
/// context-switch count must show at least 2/3 of the 100 slice ends a second per CPU.
fn registers_preserved() -> TestResult {
    let n = sched::online_count();
    let checkers = 3 * n;
    let duration_ms = 6_000;
    let stop = Arc::new(AtomicBool::new(false));
    let state: Arc<Vec<Checker>> = Arc::new(
        (0..checkers)
            .map(|_| Checker {
                chunks: AtomicU64::new(0),
                failure: spin::Mutex::new(None),
            })
            .collect(),
    );
    let switches_before = sched::switches();
    let mut tickers = Vec::new();
    let policy = stack::default_policy();
    for cpu in 0..n {
        let s = stop.clone();
        let h = sched::spawn_pinned("ticker", policy, cpu, move || {
            let give_up = now() + ms_to_ticks(30_000);
            while !s.load(Ordering::Relaxed) && now() < give_up {
                sched::sleep_ms(1);
            }
        });
        tickers.push(h.map_err(|e| format!("spawn_pinned: {}", e))?);
    }
    let end = now() + ms_to_ticks(duration_ms);
    let mut hs = Vec::new();
    for k in 0..checkers {
        let st = state.clone();
        let h = sched::spawn_pinned("regcheck", policy, k % n, move || {
            let mut table = [0u64; 30];
            for (r, v) in table.iter_mut().enumerate() {
                *v = splitmix(((k as u64) << 8) | r as u64);
            }
            let period = if k / n == 2 { 499 } else { 0 };
            let me = &st[k];
            let mut dump = [0u64; 30];
            loop {
                let code = reg_chunk(&table, 3000, period, &mut dump);
                let bad: Vec<String> = (0..30)
                    .filter(|&r| dump[r] != table[r])
                    .map(|r| format!("x{}={:#x} (expected {:#x})", r, dump[r], table[r]))
                    .collect();
                if code != 0 || !bad.is_empty() {
                    *me.failure.lock() = Some(format!(
                        "checker {} (svc {}) after {} chunks: {}",
                        k,
                        if period > 0 { "yes" } else { "no" },
                        me.chunks.load(Ordering::SeqCst),
                        bad.join(", ")
                    ));
                    return;
                }
                me.chunks.fetch_add(1, Ordering::SeqCst);
                if now() > end {
                    return;
                }
            }
        });
        hs.push(h.map_err(|e| format!("spawn_pinned: {}", e))?);
    }
    // Half way, every checker must already have done some work: without preemption, the
    // checkers that got a CPU first would keep it until `end`.
    sched::sleep_ms(duration_ms / 2);
    let mid: Vec<u64> = state
        .iter()
        .map(|c| c.chunks.load(Ordering::SeqCst))
        .collect();
    let mid_time = now();
    let finished = wait_for(duration_ms + 20_000, || hs.iter().all(|h| h.is_finished()));
    stop.store(true, Ordering::Relaxed);
    for h in tickers {
        h.join();
    }
    check!(finished, "checkers did not finish");
    for h in hs {
        h.join();
    }
    let switched = sched::switches() - switches_before;
    for c in state.iter() {
        if let Some(f) = c.failure.lock().take() {
            return Err(format!("register corrupted: {}", f));
        }
    }
    let done: Vec<u64> = state
        .iter()
        .map(|c| c.chunks.load(Ordering::SeqCst))
        .collect();
    check!(
        mid_time < end,
        "this thread did not get the CPU back before the checkers' end ({} ms late)",
        ticks_to_ms(mid_time - end)
    );
    let pure = |k: &usize| k / n != 2;
    check!(
        (0..checkers).filter(pure).all(|k| mid[k] > 0),
        "half way through, some never-yielding checkers had not run: {:?} ({} checkers on {} CPU(s); the last {} yield)",
        mid,
        checkers,
        n,
        n
    );
    check!(
        (0..checkers).filter(pure).all(|k| done[k] > mid[k]),
        "some never-yielding checkers made no progress in the second half: {:?} -> {:?}",
        mid,
        done
    );
    check!(
        done.iter().all(|&d| d > 0),
        "some checkers never completed a chunk: {:?}",
        done
    );
    // Every CPU alternates between its two never-yielding checkers every 10 ms slice: 100
    // preemptions a second per CPU on an idle host. A loaded host runs QEMU's vCPUs in
    // bursts and ticks coalesce, so only a fifth of that is required: still hundreds of
    // preemptions in the middle of the checkers' register patterns.
    let expected_switches = 20 * n as u64 * duration_ms / 1000;
    check!(
        switched >= expected_switches,
        "only {} context switches in {} ms on {} CPU(s) (expected at least {})",
        switched,
        duration_ms,
        n,
        expected_switches
    );
    dynstack::println!(
        "  registers_preserved: {} checkers, {} chunks of 3000 checks, {} context switches",
        checkers,
        done.iter().sum::<u64>(),
        switched
    );
    Ok(())
}

// -------------------------------------------------------------------------------------------
// Park / unpark

/// An unpark that comes before the park is kept as a token: the park returns at once. The
/// token is used up: the next park blocks until the next unpark.
fn park_token_not_lost() -> TestResult {
    let ptr = Arc::new(AtomicPtr::new(core::ptr::null_mut::<Thread>()));
    let go = Arc::new(AtomicBool::new(false));
    let stage = Arc::new(AtomicU32::new(0));
    let (p, g, s) = (ptr.clone(), go.clone(), stage.clone());
    let h = spawn("token", move || {
        p.store(sched::current_ptr(), Ordering::SeqCst);
        while !g.load(Ordering::SeqCst) {
            sched::yield_now();
        }
        sched::park(); // the token is waiting: returns at once
        s.store(1, Ordering::SeqCst);
        sched::park(); // no token: blocks until unparked again
        s.store(2, Ordering::SeqCst);
    })?;
    let tid = h.tid();
    check!(
        wait_for(5_000, || !ptr.load(Ordering::SeqCst).is_null()),
        "the thread never started"
    );
    let t = ptr.load(Ordering::SeqCst);
    let st = state_of(tid);
    check!(
        matches!(st, Some(ThreadState::Ready) | Some(ThreadState::Running)),
        "thread is {:?} before the early unpark",
        st
    );
    // SAFETY: the thread cannot exit before its second park returns, which needs a later
    // unpark from here.
    unsafe { sched::unpark(t) };
    go.store(true, Ordering::SeqCst);
    if !wait_for(5_000, || stage.load(Ordering::SeqCst) >= 1) {
        // Leave it blocked: unparking it now could race with nothing, but the case failed.
        return Err(String::from(
            "the unpark before the park was lost: park did not return within 5 s",
        ));
    }
    let blocked = wait_for(5_000, || state_of(tid) == Some(ThreadState::Blocked));
    let stage_then = stage.load(Ordering::SeqCst);
    // SAFETY: as above: it is blocked (or about to be) in its second park.
    unsafe { sched::unpark(t) };
    let woke = wait_for(5_000, || stage.load(Ordering::SeqCst) == 2);
    check!(woke, "the second unpark did not wake the thread");
    h.join();
    check!(
        blocked && stage_then == 1,
        "the token was not used up: the second park did not block (stage {})",
        stage_then
    );
    Ok(())
}

/// Two threads hand a turn back and forth 3,000 times with park/unpark only, racing each
/// other on different CPUs (when there are several): a single lost wake-up stops both.
fn park_unpark_ping_pong() -> TestResult {
    const ROUNDS: u64 = 3000;
    struct Pp {
        turn: AtomicU32,
        ptr: [AtomicPtr<Thread>; 2],
        rounds: [AtomicU64; 2],
    }
    let pp = Arc::new(Pp {
        turn: AtomicU32::new(0),
        ptr: [
            AtomicPtr::new(core::ptr::null_mut()),
            AtomicPtr::new(core::ptr::null_mut()),
        ],
        rounds: [AtomicU64::new(0), AtomicU64::new(0)],
    });
    let mut hs = Vec::new();
    for me in 0..2usize {
        let pp = pp.clone();
        hs.push(spawn("pingpong", move || {
            pp.ptr[me].store(sched::current_ptr(), Ordering::SeqCst);
            while pp.ptr[1 - me].load(Ordering::SeqCst).is_null() {
                sched::yield_now();
            }
            let other = pp.ptr[1 - me].load(Ordering::SeqCst);
            for r in 0..ROUNDS {
                while pp.turn.load(Ordering::SeqCst) != me as u32 {
                    sched::park();
                }
                pp.rounds[me].fetch_add(1, Ordering::SeqCst);
                pp.turn.store(1 - me as u32, Ordering::SeqCst);
                // The partner is alive until it has done its last round; player 1 does not
                // wake player 0 after its own last round (player 0 is done by then).
                if !(me == 1 && r == ROUNDS - 1) {
                    // SAFETY: see above.
                    unsafe { sched::unpark(other) };
                }
            }
        })?);
    }
    let done = wait_for(30_000, || hs.iter().all(|h| h.is_finished()));
    let r0 = pp.rounds[0].load(Ordering::SeqCst);
    let r1 = pp.rounds[1].load(Ordering::SeqCst);
    if !done {
        // Leave both blocked: waking them now could touch a thread that is gone.
        return Err(format!(
            "a wake-up was lost: stuck after {} + {} of {} rounds each",
            r0, r1, ROUNDS
        ));
    }
    for h in hs {
        h.join();
    }
    check!(
        r0 == ROUNDS && r1 == ROUNDS,
        "rounds {} and {}, expected {} each",
        r0,
        r1,
        ROUNDS
    );
    Ok(())
}

// -------------------------------------------------------------------------------------------
// Kill

static KS_STARTED: AtomicUsize = AtomicUsize::new(0);
static KS_WOKE: AtomicUsize = AtomicUsize::new(0);
static KS_DEADLINE: AtomicU64 = AtomicU64::new(0);
static KS_LATE: AtomicU64 = AtomicU64::new(0);
static KS_EARLY: AtomicUsize = AtomicUsize::new(0);

fn long_sleeper(_: usize) {
    KS_STARTED.fetch_add(1, Ordering::SeqCst);
    sched::sleep_ms(60_000);
    KS_WOKE.fetch_add(1, Ordering::SeqCst);
}

fn deadline_sleeper(_: usize) {
    KS_STARTED.fetch_add(1, Ordering::SeqCst);
    let d = KS_DEADLINE.load(Ordering::SeqCst);
    sched::sleep_until(d);
    let t = now();
    if t < d {
        KS_EARLY.fetch_add(1, Ordering::SeqCst);
    }
    KS_LATE.fetch_max(t - d.min(t), Ordering::SeqCst);
    KS_WOKE.fetch_add(1, Ordering::SeqCst);
}

fn new_join_state() -> Arc<JoinState> {
    Arc::new(JoinState {
        done: AtomicBool::new(false),
        waiter: AtomicPtr::new(core::ptr::null_mut()),
    })
}

/// kill of a thread sleeping for a minute ends it at once (kill returns once it is gone,
/// it never runs past its sleep); killing one of three threads sleeping to the very same
/// deadline leaves the other two to wake on time; kill of an unknown or a system thread is
/// refused.
fn kill_sleeping_thread() -> TestResult {
    KS_STARTED.store(0, Ordering::SeqCst);
    KS_WOKE.store(0, Ordering::SeqCst);
    let base_threads = sched::thread_count();
    let js = new_join_state();
    let tid = sched::spawn_raw(
        "longsleep",
        ThreadKind::Workload,
        stack::default_policy(),
        long_sleeper,
        0,
        Some(js.clone()),
    )
    .map_err(|e| format!("spawn: {}", e))?;
    check!(
        wait_for(5_000, || state_of(tid) == Some(ThreadState::Sleeping)),
        "the sleeper never went to sleep (state {:?})",
        state_of(tid)
    );
    let t0 = now();
    let r = sched::kill(tid);
    let took = ticks_to_ms(now() - t0);
    check!(r == Ok(1), "kill({}) returned {:?}", tid, r);
    check!(took < 5_000, "kill of a sleeping thread took {} ms", took);
    check!(
        js.done.load(Ordering::SeqCst),
        "kill returned before the thread was reaped"
    );
    check!(
        state_of(tid).is_none(),
        "the killed thread is still in the table"
    );
    check!(
        KS_WOKE.load(Ordering::SeqCst) == 0,
        "the killed thread ran past its sleep"
    );
    check!(
        sched::kill(tid) == Err(sched::KillError::NoSuchThread(tid)),
        "a second kill of {} returned {:?}",
        tid,
        sched::kill(tid)
    );
    let me = sched::current_tid();
    check!(
        sched::kill(me) == Err(sched::KillError::NotWorkload(me)),
        "kill of this system thread returned {:?}",
        sched::kill(me)
    );
    // Three sleepers on one deadline; kill the middle one.
    KS_STARTED.store(0, Ordering::SeqCst);
    KS_WOKE.store(0, Ordering::SeqCst);
    KS_EARLY.store(0, Ordering::SeqCst);
    KS_LATE.store(0, Ordering::SeqCst);
    let deadline = now() + ms_to_ticks(400);
    KS_DEADLINE.store(deadline, Ordering::SeqCst);
    let mut tids = Vec::new();
    let mut states = Vec::new();
    for _ in 0..3 {
        let js = new_join_state();
        tids.push(
            sched::spawn_raw(
                "samedeadline",
                ThreadKind::Workload,
                stack::default_policy(),
                deadline_sleeper,
                0,
                Some(js.clone()),
            )
            .map_err(|e| format!("spawn: {}", e))?,
        );
        states.push(js);
    }
    let asleep = wait_for(5_000, || {
        tids.iter()
            .all(|&t| state_of(t) == Some(ThreadState::Sleeping))
    });
    let killed_in_time = now() < deadline;
    let r = sched::kill(tids[1]);
    check!(r == Ok(1), "kill of a same-deadline sleeper: {:?}", r);
    let others = wait_for(10_000, || {
        states[0].done.load(Ordering::SeqCst) && states[2].done.load(Ordering::SeqCst)
    });
    check!(
        others,
        "the other sleepers on the same deadline did not wake (woke {})",
        KS_WOKE.load(Ordering::SeqCst)
    );
    check!(
        asleep && killed_in_time,
        "setup too slow: the sleepers were not all asleep before the deadline"
    );
    check!(
        KS_WOKE.load(Ordering::SeqCst) == 2,
        "{} of the same-deadline sleepers woke, expected 2",
        KS_WOKE.load(Ordering::SeqCst)
    );
    check!(
        KS_EARLY.load(Ordering::SeqCst) == 0,
        "a sleeper woke before its deadline"
    );
    let late = ticks_to_ms(KS_LATE.load(Ordering::SeqCst));
    check!(late < 2_000, "a sleeper woke {} ms late", late);
    check!(
        wait_for(5_000, || sched::thread_count() == base_threads),
        "thread table {} entries, {} before",
        sched::thread_count(),
        base_threads
    );
    check!(sched::workload_threads() == 0, "workload threads left");
    Ok(())
}

static KR_ON: [AtomicUsize; percpu::MAX_CPUS] =
    [const { AtomicUsize::new(usize::MAX) }; percpu::MAX_CPUS];
static KR_PAST_KILL: AtomicUsize = AtomicUsize::new(0);
static KR_GIVE_UP: AtomicU64 = AtomicU64::new(0);

/// A workload thread that computes without yielding; after KR_GIVE_UP it yields on every
/// turn (so that a kill which waits for it to stop by itself still ends).
fn busy_workload(i: usize) {
    loop {
        KR_ON[i].store(percpu::cpu_index(), Ordering::Relaxed);
        let mut x = 0u64;
        for k in 0..10_000u64 {
            x = core::hint::black_box(x.wrapping_add(k));
        }
        if now() > KR_GIVE_UP.load(Ordering::Relaxed) {
            if sched::kill_requested() {
                KR_PAST_KILL.fetch_add(1, Ordering::SeqCst);
            }
            sched::yield_now();
        }
    }
}

/// kill of workload threads that are computing (never sleeping or yielding), one per CPU,
/// completes promptly: a kill must not wait for the thread to give up its CPU by itself,
/// which a thread alone on its CPU never has to do. The killer runs pinned to CPU 0 and
/// this thread only waits in join, so the other CPUs have nothing else to run.
fn kill_running_thread() -> TestResult {
    let n = sched::online_count();
    let base_threads = sched::thread_count();
    KR_PAST_KILL.store(0, Ordering::SeqCst);
    KR_GIVE_UP.store(now() + ms_to_ticks(6_000), Ordering::SeqCst);
    let mut joins = Vec::new();
    for (i, on) in KR_ON.iter().enumerate().take(n) {
        on.store(usize::MAX, Ordering::SeqCst);
        let js = new_join_state();
        sched::spawn_raw(
            "busy",
            ThreadKind::Workload,
            stack::default_policy(),
            busy_workload,
            i,
            Some(js.clone()),
        )
        .map_err(|e| format!("spawn: {}", e))?;
        joins.push(js);
    }
    // Let idle CPUs take their share, then check every busy thread is running.
    let spread = wait_for(2_000, || {
        (0..n).all(|i| KR_ON[i].load(Ordering::Relaxed) != usize::MAX)
    });
    sched::sleep_ms(100);
    let where_: Vec<usize> = (0..n).map(|i| KR_ON[i].load(Ordering::Relaxed)).collect();
    let took = Arc::new(AtomicU64::new(u64::MAX));
    let killed = Arc::new(AtomicU64::new(0));
    let (t, k) = (took.clone(), killed.clone());
    let killer = sched::spawn_pinned("killer", stack::default_policy(), 0, move || {
        let t0 = now();
        k.store(sched::kill_all(&mut |_, _| {}), Ordering::SeqCst);
        t.store(ticks_to_ms(now() - t0), Ordering::SeqCst);
    })
    .map_err(|e| format!("spawn_pinned: {}", e))?;
    killer.join();
    let took = took.load(Ordering::SeqCst);
    check!(spread, "not every busy thread started: {:?}", where_);
    check!(
        killed.load(Ordering::SeqCst) == n as u64,
        "kill_all killed {}, expected {}",
        killed.load(Ordering::SeqCst),
        n
    );
    check!(
        joins.iter().all(|j| j.done.load(Ordering::SeqCst)),
        "kill_all returned before the threads were reaped"
    );
    check!(
        took < 2_000,
        "kill_all of {} computing workload threads (on CPUs {:?}) took {} ms: the kill waited for them to yield by themselves ({} did, after 6 s)",
        n,
        where_,
        took,
        KR_PAST_KILL.load(Ordering::SeqCst)
    );
    check!(
        wait_for(5_000, || sched::thread_count() == base_threads),
        "thread table {} entries, {} before",
        sched::thread_count(),
        base_threads
    );
    Ok(())
}

// -------------------------------------------------------------------------------------------
// Fairness

/// Threads that only count and yield, at least twice as many as CPUs, for a second: threads
/// sharing a CPU get equal turns, and all make comparable progress (the slowest at least a
/// third of the fastest), which takes new threads spread evenly over the CPUs. The count is
/// a multiple of MAX_CPUS, so the outcome does not depend on where round-robin placement
/// happens to stand.
fn yield_fairness() -> TestResult {
    let n = sched::online_count();
    let k = (2 * n).div_ceil(percpu::MAX_CPUS) * percpu::MAX_CPUS;
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<Vec<AtomicU64>> = Arc::new((0..k).map(|_| AtomicU64::new(0)).collect());
    let cpus: Arc<Vec<AtomicU64>> = Arc::new((0..k).map(|_| AtomicU64::new(0)).collect());
    let ready = Arc::new(AtomicUsize::new(0));
    let mut hs = Vec::new();
    for i in 0..k {
        let (s, c, m, r) = (stop.clone(), counts.clone(), cpus.clone(), ready.clone());
        hs.push(spawn("yielder", move || {
            r.fetch_add(1, Ordering::SeqCst);
            let give_up = now() + ms_to_ticks(20_000);
            while !s.load(Ordering::Relaxed) && now() < give_up {
                m[i].fetch_or(1 << percpu::cpu_index(), Ordering::Relaxed);
                c[i].fetch_add(1, Ordering::Relaxed);
                sched::yield_now();
            }
        })?);
    }
    check!(
        wait_for(5_000, || ready.load(Ordering::SeqCst) == k),
        "not all yielders started"
    );
    let start: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    sched::sleep_ms(1000);
    let end: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join();
    }
    let got: Vec<u64> = end.iter().zip(&start).map(|(e, s)| e - s).collect();
    let masks: Vec<u64> = cpus.iter().map(|m| m.load(Ordering::Relaxed)).collect();
    let min = *got.iter().min().unwrap_or(&0);
    check!(
        min > 0,
        "a yielding thread made no progress in 1 s: {:?}",
        got
    );
    // Round robin on each CPU: threads that stayed on one CPU share it evenly.
    for cpu in 0..n {
        let same: Vec<u64> = (0..k)
            .filter(|&i| masks[i] == 1 << cpu)
            .map(|i| got[i])
            .collect();
        if let (Some(lo), Some(hi)) = (same.iter().min(), same.iter().max()) {
            check!(
                lo * 2 >= *hi,
                "threads sharing cpu {} got unequal turns: {:?}",
                cpu,
                same
            );
        }
    }
    // Across CPUs, yields per thread measure the host as much as this scheduler (a loaded
    // host runs some of QEMU's vCPU threads far less than others), so what is checked there
    // is placement: the threads are spread over every CPU, none holding much more than its
    // share (the placement bug this caught put 5 of 8 on one CPU of 4).
    let mut on_cpu = alloc::vec![0usize; n];
    for &m in &masks {
        for (cpu, count) in on_cpu.iter_mut().enumerate() {
            if m & (1 << cpu) != 0 {
                *count += 1;
            }
        }
    }
    let share = k.div_ceil(n);
    check!(
        on_cpu.iter().all(|&c| c > 0 && c <= share + 1),
        "{} yielding threads on {} CPU(s): threads seen per CPU {:?} (share {}); yields per thread {:?}, CPU masks {:?}",
        k,
        n,
        on_cpu,
        share,
        got,
        masks
    );
    Ok(())
}
