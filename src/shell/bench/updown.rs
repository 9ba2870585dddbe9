//! `BENCH name=updown`: what growing and shrinking a stack costs, in one line.
//!
//! - `grow1_ns`, `grow3_ns`: one growth fault that maps 1 page, and one that maps 3 at once,
//!   through the fast path; `grow1_slow_ns`, `grow3_slow_ns`: the same with the fast path
//!   switched off (the full trap frame and `stack::on_fault`).
//! - `trim1_ns`: trimming one page of one parked thread (`stack::trim`, with its broadcast
//!   TLB invalidation and the frame going back).
//! - `trim_threads`, `trim_pages`, `trim_per_page_ns`: one `trim` over that many sleeping
//!   threads that each grew by a page and came back up, per page freed.
//! - `exit_grown_ns`, `exit_fixed_ns`: from the last instruction of a thread until `join`
//!   returns (the reaper has unmapped and freed its stack), for a dynamic stack that grew to
//!   `kstack.max` and for a fixed stack of the same size.
//! - `nonstack_ns`, `nonstack_nofast_ns`: a fault that is not a growth (a `probe::try_read`
//!   of an unmapped address, survived), with the fast path on and switched off (its gate,
//!   four instructions, still runs); the difference is what the fast path's checks add to
//!   such faults.
//!
//! Each figure is an average over rounds, with the cost of reading the clock twice taken
//! off, except the exit figures: they are the median round (see `exit`). Calls `sched`, `stack` and `arch::probe`.
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::{now_ns, Ratio};
use crate::cmdline::StackPolicy;
use crate::sched::{self, Thread, ThreadKind, ThreadState};
use crate::stack;

const PAGE: u64 = 4096;

/// Rounds for the growth, trim and exit figures, and probes for the non-stack fault.
pub(super) struct Sizes {
    pub rounds: u32,
    pub trim_threads: usize,
    pub probes: u32,
}

/// What reading the clock costs: the smallest of a few back-to-back pairs.
pub(super) fn clock_cost() -> u64 {
    (0..16)
        .map(|_| {
            let t0 = now_ns();
            now_ns() - t0
        })
        .min()
        .unwrap_or(0)
}

fn me() -> &'static Thread {
    // SAFETY: the running thread's control block lives as long as it runs.
    unsafe { &*sched::current_ptr() }
}

/// Average cost of one growth fault that maps `pages` pages, over `rounds` new threads.
fn grow(pages: u64, rounds: u32, clock: u64) -> Option<u64> {
    let total = AtomicU64::new(0);
    let n = AtomicU64::new(0);
    let (total_ptr, n_ptr) = (&total as *const _ as usize, &n as *const _ as usize);
    for _ in 0..rounds {
        let h = sched::spawn_with("bench-grow", StackPolicy::Dynamic, move || {
            // SAFETY: the caller joins this thread before the counters go away.
            let (total, n) = unsafe {
                (
                    &*(total_ptr as *const AtomicU64),
                    &*(n_ptr as *const AtomicU64),
                )
            };
            let s = &me().stack;
            let bottom = s.mapped_bottom();
            if bottom - s.base() < pages * PAGE {
                return;
            }
            let faults = s.grow_faults();
            let addr = bottom - pages * PAGE + 64;
            let t0 = now_ns();
            // SAFETY: this thread's own reservation, below SP: one growth of `pages` pages.
            unsafe { core::ptr::write_volatile(addr as *mut u64, 1) };
            let t1 = now_ns();
            if s.grow_faults() == faults + 1 && s.mapped_bottom() == bottom - pages * PAGE {
                total.fetch_add((t1 - t0).saturating_sub(clock), Ordering::Relaxed);
                n.fetch_add(1, Ordering::Relaxed);
            }
        });
        h.ok()?.join();
    }
    let n = n.load(Ordering::Relaxed);
    (n > 0).then(|| total.load(Ordering::Relaxed) / n)
}

/// A thread that grows by one page, comes back up and parks until it is told to go.
fn grow_then_park(arg: usize) {
    let s = &me().stack;
    let addr = s.mapped_bottom() - 64;
    // SAFETY: this thread's own reservation, below SP: a growth by one page.
    unsafe { core::ptr::write_volatile(addr as *mut u64, 1) };
    if arg != 0 {
        // SAFETY: the bench waits for this pointer and outlives the thread.
        unsafe { &*(arg as *const AtomicUsize) }
            .store(me() as *const Thread as usize, Ordering::Release);
    }
    sched::mark_settled();
    while !sched::kill_requested() {
        sched::park();
    }
}

/// Trimming one page of one parked thread, averaged over `rounds` threads.
fn trim_one(rounds: u32, clock: u64) -> Option<u64> {
    let mut total = 0u64;
    let mut n = 0u64;
    for _ in 0..rounds {
        let ptr = AtomicUsize::new(0);
        let tid = sched::spawn_raw(
            "bench-trim",
            ThreadKind::Workload,
            StackPolicy::Dynamic,
            grow_then_park,
            &ptr as *const AtomicUsize as usize,
            None,
        )
        .ok()?;
        let t = loop {
            let p = ptr.load(Ordering::Acquire);
            // SAFETY: the thread parks until it is killed below; it is alive while parked.
            if p != 0 && unsafe { &*(p as *const Thread) }.state() == ThreadState::Blocked {
                // SAFETY: as above: parked until killed below, so alive.
                break unsafe { &*(p as *const Thread) };
            }
            sched::yield_now();
        };
        let t0 = now_ns();
        // SAFETY: `trim` reads the saved SP only once it holds the stack's claim, which
        // keeps the thread from being switched in meanwhile.
        let freed = stack::trim(&t.stack, || unsafe { t.saved_sp() });
        let t1 = now_ns();
        if freed == 1 {
            total += (t1 - t0).saturating_sub(clock);
            n += 1;
        }
        let _ = sched::kill(tid);
        wait_no_workload();
    }
    (n > 0).then(|| total / n)
}

fn wait_no_workload() {
    while sched::workload_threads() > 0 {
        sched::sleep_ms(1);
    }
}

/// One `trim` over `threads` sleeping threads: (pages freed, ns per page).
fn trim_many(threads: usize) -> Option<(u64, u64)> {
    let mut created = 0;
    for _ in 0..threads {
        if sched::spawn_raw(
            "bench-trimall",
            ThreadKind::Workload,
            StackPolicy::Dynamic,
            grow_then_park,
            0,
            None,
        )
        .is_ok()
        {
            created += 1;
        }
    }
    super::wait_settled();
    let t0 = now_ns();
    let freed = stack::trim_all();
    let ns = now_ns() - t0;
    sched::kill_all(&mut |_, _| {});
    wait_no_workload();
    (created == threads && freed > 0).then(|| (freed, ns / freed))
}

/// From a thread's last instruction to its `join` returning, averaged over `rounds`, for a
/// thread with `policy` whose stack is mapped to `kstack.max` when it ends.
fn exit(policy: StackPolicy, rounds: u32) -> Option<u64> {
    // The median of the rounds, not their mean: a round in which the reaper or the joiner
    // waits behind another CPU's tick (the parker's sweep, a reserve drain) costs a
    // thousand times an ordinary one, and one such round in ten moved the mean by 100x.
    let mut took = [0u64; EXIT_ROUNDS_MAX];
    let rounds = (rounds as usize).clamp(1, EXIT_ROUNDS_MAX);
    let cpu = crate::percpu::cpu_index();
    for slot in took.iter_mut().take(rounds) {
        let last = AtomicU64::new(0);
        let last_ptr = &last as *const AtomicU64 as usize;
        // Pinned to this CPU, as the joining thread is, so both policies see the same
        // scheduling.
        let h = sched::spawn_pinned("bench-exit", policy, cpu, move || {
            let s = &me().stack;
            // Map the whole reservation: for a dynamic stack one fault maps every page
            // below the initial ones; for a fixed stack this is already mapped.
            let addr = s.base() + 64;
            // SAFETY: this thread's own reservation (its lowest page).
            unsafe { core::ptr::write_volatile(addr as *mut u64, 1) };
            // SAFETY: the caller joins this thread before `last` goes away.
            unsafe { &*(last_ptr as *const AtomicU64) }.store(now_ns(), Ordering::Release);
        })
        .ok()?;
        h.join();
        *slot = now_ns() - last.load(Ordering::Acquire);
    }
    let took = &mut took[..rounds];
    took.sort_unstable();
    Some(took[rounds / 2])
}

/// The most exit rounds measured (their times are kept for the median).
const EXIT_ROUNDS_MAX: usize = 256;

/// A non-stack fault (survived through `probe::try_read`), averaged over `probes`.
fn nonstack(probes: u32) -> Option<u64> {
    // The top of the arena: slots are handed out from the bottom, so nothing is mapped.
    let addr = crate::mm::layout::STACK_ARENA_BASE + crate::mm::layout::STACK_ARENA_SIZE - 8;
    let t0 = now_ns();
    for _ in 0..probes {
        if crate::arch::probe::try_read(addr).is_some() {
            return None;
        }
    }
    Some((now_ns() - t0) / probes.max(1) as u64)
}

/// Runs the up/downgrade benchmarks and prints their line.
pub(super) fn run(sizes: &Sizes, out: &mut dyn Write) {
    let clock = clock_cost();
    let rounds = sizes.rounds;
    let grow1 = grow(1, rounds, clock);
    let grow3 = grow(3, rounds, clock);
    stack::set_fast_path(false);
    let grow1_slow = grow(1, rounds, clock);
    let grow3_slow = grow(3, rounds, clock);
    let nonstack_nofast = nonstack(sizes.probes);
    stack::set_fast_path(true);
    let nonstack_fast = nonstack(sizes.probes);
    let trim1 = trim_one(rounds.min(100), clock);
    let many = trim_many(sizes.trim_threads);
    let exit_grown = exit(StackPolicy::Dynamic, rounds);
    let exit_fixed = exit(StackPolicy::Fixed, rounds);
    let (
        Some(grow1),
        Some(grow3),
        Some(grow1_slow),
        Some(grow3_slow),
        Some(trim1),
        Some((trim_pages, trim_per_page)),
        Some(exit_grown),
        Some(exit_fixed),
        Some(nonstack_fast),
        Some(nonstack_nofast),
    ) = (
        grow1,
        grow3,
        grow1_slow,
        grow3_slow,
        trim1,
        many,
        exit_grown,
        exit_fixed,
        nonstack_fast,
        nonstack_nofast,
    )
    else {
        let _ = writeln!(
            out,
            "error: bench updown: a measurement could not be made (out of memory, or kstack.max below 16k)"
        );
        return;
    };
    let _ = writeln!(
        out,
        "BENCH name=updown grow1_ns={} grow3_ns={} grow1_slow_ns={} grow3_slow_ns={} trim1_ns={} trim_threads={} trim_pages={} trim_per_page_ns={} exit_grown_ns={} exit_fixed_ns={} exit_ratio={} nonstack_ns={} nonstack_nofast_ns={}",
        grow1,
        grow3,
        grow1_slow,
        grow3_slow,
        trim1,
        sizes.trim_threads,
        trim_pages,
        trim_per_page,
        exit_grown,
        exit_fixed,
        Ratio(exit_grown, exit_fixed),
        nonstack_fast,
        nonstack_nofast
    );
}
