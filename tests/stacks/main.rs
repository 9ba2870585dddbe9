//! Dynamic thread stacks, tested in QEMU: growth (one page, a frame that skips pages, with
//! IRQs masked, with locks held, pre-grown with `ensure`), data integrity across growth,
//! preemption and migration, overflow (exact report, and a flood on all CPUs that leaves
//! every other thread intact), trim and re-growth, exit freeing everything, fixed and dynamic
//! side by side, thousands of threads growing at once, large reservations, and the security
//! properties: grown pages are zeroed, guard gaps are never mapped, stacks are never
//! executable, and no CPU keeps a translation for a page that was trimmed or freed. The
//! growth fast path against the slow path: `stacks/fast_path.rs`.
//!
//! Boot it with `-smp 1` and `-smp 4`, and once with `kstack.max=256k` on the command line.
//! Every case reads the configuration in force (`stack::config()`), so it holds whatever
//! `kstack.*` says. Memory is checked by conservation: free frames + mapped stack pages +
//! per-CPU reserve pages + heap growth + translation-table pages is a constant once boot is
//! done, so a page that leaks anywhere shows up.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use dynstack::arch::{irq, timer};
use dynstack::check;
use dynstack::cmdline::StackPolicy;
use dynstack::mm::layout::{STACK_ARENA_BASE, STACK_ARENA_SIZE};
use dynstack::mm::page_table::MemoryType;
use dynstack::mm::{frame, kspace};
use dynstack::sched::{self, JoinHandle, Thread, ThreadState};
use dynstack::shell::workload::Rng;
use dynstack::stack;
use dynstack::sync::IrqMutex;
use dynstack::testing::{run, TestResult};

mod exit_security;
mod fast_path;
mod growth;
mod overflow_trim;

use exit_security::*;
use fast_path::*;
use growth::*;
use overflow_trim::*;

dynstack::kernel_main!(main);

fn main() {
    let cfg = stack::config();
    dynstack::println!(
        "stacks: kstack.initial={} kstack.max={} kstack.guard={} policy={:?} cpus={}",
        cfg.initial,
        cfg.max,
        cfg.guard,
        cfg.policy,
        sched::online_count()
    );
    run(dynstack::test_cases![
        config_matches_bootargs,
        grow_one_page,
        grow_frame_skipping_pages,
        fast_and_slow_grow_one_page,
        fast_and_slow_grow_several_pages,
        fast_grow_across_tables,
        fast_path_leaves_overflow,
        fast_path_leaves_other_faults,
        reserve_short_goes_to_slow_path,
        no_growth_when_growth_is_off,
        grow_with_irqs_masked,
        grow_with_locks_held,
        ensure_pregrows,
        with_stack_too_large_is_refused,
        deep_growth_to_max,
        fixed_and_dynamic_side_by_side,
        integrity_across_preemption_and_migration,
        overflow_exact_report,
        overflow_flood,
        trim_then_regrow,
        trim_racing_wakeups,
        trim_skips_dead_threads,
        exit_frees_everything,
        concurrent_growth_thousands,
        grown_pages_are_zeroed,
        guard_never_mapped_after_cycles,
        stacks_never_executable,
        no_stale_tlb_after_exit,
        no_stale_tlb_after_trim,
    ])
}

// ---------------------------------------------------------------------------------------
// Helpers

const PAGE: u64 = 4096;
/// ESR exception classes.
const EC_INSTRUCTION_ABORT_SAME_EL: u64 = 0x21;
const EC_DATA_ABORT_SAME_EL: u64 = 0x25;
/// A value no stack holds unless a test put it there.
const MARK: u64 = 0x5EC0_DEAD_BEEF_5EC0;

fn sp() -> u64 {
    dynstack::arch::stack_pointer()
}

/// The running thread.
fn me() -> &'static Thread {
    // SAFETY: the running thread's control block lives as long as it runs.
    unsafe { &*sched::current_ptr() }
}

fn thread_at(ptr: usize) -> &'static Thread {
    // SAFETY: callers only pass pointers of threads they know to be alive (parked puppets).
    unsafe { &*(ptr as *const Thread) }
}

fn max() -> u64 {
    stack::config().max as u64
}

fn guard() -> u64 {
    stack::config().guard as u64
}

fn initial() -> u64 {
    stack::config().initial as u64
}

fn stride() -> u64 {
    stack::arena::stride()
}

fn ec(esr: u64) -> u64 {
    (esr >> 26) & 0x3f
}

/// The last thread ended by a fault was `tid`, with exception class `want_ec` at `want_far`.
fn check_ended_by_fault(what: &str, tid: u64, want_ec: u64, want_far: u64) -> TestResult {
    let (ftid, esr, far) = dynstack::kernel::exception::last_fault();
    check!(
        ftid == tid,
        "{}: last fault was thread {}, want {}",
        what,
        ftid,
        tid
    );
    check!(
        ec(esr) == want_ec,
        "{}: ESR {:#x}, want exception class {:#x}",
        what,
        esr,
        want_ec
    );
    check!(
        far == want_far,
        "{}: FAR {:#x}, want {:#x}",
        what,
        far,
        want_far
    );
    Ok(())
}

fn ms_to_ticks(ms: u64) -> u64 {
    timer::ns_to_ticks(ms * 1_000_000)
}

/// A deadline `ms` milliseconds from now.
fn deadline_in(ms: u64) -> u64 {
    timer::now() + ms_to_ticks(ms)
}

fn past(deadline: u64) -> bool {
    timer::now() > deadline
}

/// Waits (sleeping) until `cond` holds; `false` if it still does not after `ms`. The limit
/// only keeps a broken kernel from hanging the suite: a case that passes never reaches it.
fn wait_until(ms: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = deadline_in(ms);
    loop {
        if cond() {
            return true;
        }
        if past(end) {
            return cond();
        }
        sched::sleep_ms(1);
    }
}

fn online_mask() -> u64 {
    (0..dynstack::percpu::MAX_CPUS)
        .filter(|&c| sched::is_online(c))
        .fold(0, |m, c| m | 1 << c)
}

fn cpu() -> usize {
    dynstack::percpu::cpu_index()
}

/// Start of the reservation (above the guard) that `addr` falls into.
fn slot_base_of(addr: u64) -> u64 {
    STACK_ARENA_BASE + (addr - STACK_ARENA_BASE) / stride() * stride() + guard()
}

fn pattern(seed: u64, addr: u64, i: usize) -> u64 {
    (seed ^ addr.rotate_left(23)).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64
}

/// Recurses until SP is at or below `until`, filling every frame with a pattern, calls
/// `bottom` there, and checks every frame on the way back. Returns how many words were
/// wrong. Frames are far smaller than a page, so growth goes one page per fault.
#[inline(never)]
fn dive(until: u64, seed: u64, bottom: &mut dyn FnMut()) -> u64 {
    let mut frame = [0u64; 24];
    let me = sp();
    for (i, w) in frame.iter_mut().enumerate() {
        *w = pattern(seed, me, i);
    }
    core::hint::black_box(&mut frame);
    let below = if me > until {
        dive(until, seed, bottom)
    } else {
        bottom();
        0
    };
    core::hint::black_box(&mut frame);
    let mut bad = below;
    for (i, w) in frame.iter().enumerate() {
        // SAFETY: a word of this frame.
        if unsafe { core::ptr::read_volatile(w) } != pattern(seed, me, i) {
            bad += 1;
        }
    }
    bad
}

/// Recurses without bound (the guard gap ends it).
#[inline(never)]
fn dive_forever(depth: u64) -> u64 {
    let mut frame = [0u64; 24];
    frame[(depth % 24) as usize] = depth;
    core::hint::black_box(&mut frame);
    if depth > 1 << 40 {
        return depth;
    }
    dive_forever(depth + 1) + frame[(depth % 7) as usize]
}

/// Runs `f` in a new thread with `policy` and returns what it returned; `Err` if it died.
fn in_thread<F>(name: &str, policy: StackPolicy, f: F) -> TestResult
where
    F: FnOnce() -> TestResult + Send + 'static,
{
    let slot: Arc<IrqMutex<Option<TestResult>>> = Arc::new(IrqMutex::new(None));
    let inner = slot.clone();
    let h = sched::spawn_with(name, policy, move || {
        let r = f();
        *inner.lock() = Some(r);
    })
    .map_err(|e| format!("cannot spawn {}: {}", name, e))?;
    h.join();
    let r = slot.lock().take();
    r.unwrap_or_else(|| Err(format!("thread {} died (see its report above)", name)))
}

/// Frames and counters at one moment (see `MemorySnapshot`).
type Snap = dynstack::testing::MemorySnapshot;

/// Waits until no thread is half-way through being reaped (every stack belongs to a thread
/// in the table).
fn quiesce() -> TestResult {
    let end = deadline_in(60_000);
    loop {
        let s = Snap::take();
        if s.stacks == s.threads as u64 {
            return Ok(());
        }
        if past(end) {
            return Err(format!(
                "stacks ({}) and threads ({}) disagree for 60 s: a dead thread's stack is never freed",
                s.stacks, s.threads
            ));
        }
        sched::sleep_ms(2);
    }
}

/// After the threads a case started are gone: the same threads and stacks as at `base`, the
/// stack counters agree with the threads and with the live translation tables, and every
/// frame is accounted for.
fn check_clean(base: &Snap) -> TestResult {
    quiesce()?;
    // The reaper may still hold the frames of stacks it has unmapped (it frees them in
    // batches): give it a moment before calling anything lost.
    let end = deadline_in(60_000);
    let mut now = Snap::take();
    while now.accounted() != base.accounted() && !past(end) {
        sched::sleep_ms(5);
        now = Snap::take();
    }
    check!(
        now.threads == base.threads,
        "{} threads now, {} before",
        now.threads,
        base.threads
    );
    check!(
        now.stacks == base.stacks,
        "{} stacks now, {} before",
        now.stacks,
        base.stacks
    );
    check!(
        now.accounted() == base.accounted(),
        "frames not conserved: before {:?}, now {:?} (difference {})",
        base,
        now,
        now.accounted() as i64 - base.accounted() as i64
    );
    audit_arena(true)?;
    Ok(())
}

struct LiveStack {
    tid: u64,
    base: u64,
    bottom: u64,
    top: u64,
}

/// Reads the live translation tables of the whole stack arena and checks them against the
/// threads: every mapped page lies in the mapped part of a live thread's reservation, never
/// in a guard gap, is a 4 KiB read-write non-executable normal page, and their number is
/// what the counters say; every live thread's mapped part is mapped and its guard is not.
/// Only meaningful while no other thread can grow (they are all parked or sleeping).
fn audit_arena(per_thread: bool) -> TestResult {
    // The walk holds the address-space lock: make sure this thread does not grow meanwhile.
    stack::ensure(6 * 1024);
    let mut live: Vec<LiveStack> = Vec::with_capacity(sched::thread_count() + 64);
    sched::for_each_thread(usize::MAX, &mut |t| {
        if live.len() < live.capacity() {
            live.push(LiveStack {
                tid: t.tid,
                base: t.stack.base(),
                bottom: t.stack.mapped_bottom(),
                top: t.stack.top(),
            });
        }
    });
    live.sort_unstable_by_key(|l| l.base);
    let mut errors: Vec<String> = Vec::with_capacity(8);
    let mut bad: Vec<(u64, &'static str)> = Vec::with_capacity(8);
    let mut count = 0u64;
    let arena_end = STACK_ARENA_BASE + STACK_ARENA_SIZE;
    let my_tid = me().tid;
    kspace::walk(|va, tr| {
        if va < STACK_ARENA_BASE || va >= arena_end {
            return;
        }
        count += tr.size() / PAGE;
        let mut problem: Option<&'static str> = None;
        if tr.level != 3 {
            problem = Some("block mapping in the stack arena");
        } else if tr.executable() {
            problem = Some("executable stack page");
        } else if tr.descriptor & (1 << 54) == 0 || tr.descriptor & (1 << 53) == 0 {
            problem = Some("stack page without UXN and PXN");
        } else if !tr.writable() {
            problem = Some("stack page not writable");
        } else if tr.attributes.memory != MemoryType::Normal {
            problem = Some("stack page not normal memory");
        } else if (va - STACK_ARENA_BASE) % stride() < guard() {
            problem = Some("GUARD PAGE MAPPED");
        } else {
            let base = slot_base_of(va);
            match live.binary_search_by_key(&base, |l| l.base) {
                Ok(i) => {
                    let l = &live[i];
                    // This thread may have grown since the snapshot; nobody else can.
                    if va < l.bottom && l.tid != my_tid {
                        problem = Some("mapped below the owner's mapped part");
                    }
                    if va >= l.top {
                        problem = Some("mapped above the reservation");
                    }
                }
                Err(_) => problem = Some("mapped in a reservation no live thread owns"),
            }
        }
        if let Some(p) = problem {
            if bad.len() < bad.capacity() {
                bad.push((va, p));
            }
        }
    });
    let stats = stack::stats();
    for (va, p) in &bad {
        errors.push(format!("{:#x}: {}", va, p));
    }
    if count != stats.mapped_pages {
        errors.push(format!(
            "the tables map {} stack pages, the counters say {}",
            count, stats.mapped_pages
        ));
    }
    let sum: u64 = live.iter().map(|l| (l.top - l.bottom) / PAGE).sum();
    if sum != stats.mapped_pages && errors.is_empty() {
        // Re-read: this thread may have grown after the snapshot.
        let mine = me().stack.mapped_bytes() / PAGE;
        let snap_mine = live
            .iter()
            .find(|l| l.tid == my_tid)
            .map_or(0, |l| (l.top - l.bottom) / PAGE);
        if sum - snap_mine + mine != stats.mapped_pages {
            errors.push(format!(
                "live threads hold {} mapped pages, the counters say {}",
                sum - snap_mine + mine,
                stats.mapped_pages
            ));
        }
    }
    if per_thread {
        for l in &live {
            let mut g = l.base - guard();
            while g < l.base {
                if kspace::query(g).is_some() {
                    errors.push(format!("thread {}: guard page {:#x} is mapped", l.tid, g));
                    break;
                }
                g += PAGE;
            }
            let mut p = l.bottom;
            while p < l.top {
                if kspace::query(p).is_none() {
                    errors.push(format!(
                        "thread {}: page {:#x} of its mapped part is not mapped",
                        l.tid, p
                    ));
                    break;
                }
                p += PAGE;
            }
            if errors.len() > 8 {
                break;
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("arena audit: {}", errors.join("; ")))
    }
}

/// A parked thread that dives on command, so a case can trim it, wake it and look at it
/// while it sleeps.
struct Puppet {
    ptr: AtomicUsize,
    req: AtomicU64,
    ack: AtomicU64,
    /// Depth below the top to dive to next (bytes), or `EXIT`.
    op: AtomicU64,
    bad: AtomicU64,
    seed: u64,
}

const EXIT: u64 = u64::MAX;

impl Puppet {
    fn spawn(
        name: &str,
        policy: StackPolicy,
        seed: u64,
    ) -> Result<(Arc<Puppet>, JoinHandle), String> {
        Self::spawn_on(name, policy, seed, None)
    }

    /// As [`spawn`](Self::spawn), pinned to CPU `cpu` if given.
    fn spawn_on(
        name: &str,
        policy: StackPolicy,
        seed: u64,
        cpu: Option<usize>,
    ) -> Result<(Arc<Puppet>, JoinHandle), String> {
        let p = Arc::new(Puppet {
            ptr: AtomicUsize::new(0),
            req: AtomicU64::new(0),
            ack: AtomicU64::new(u64::MAX),
            op: AtomicU64::new(0),
            bad: AtomicU64::new(0),
            seed,
        });
        let q = p.clone();
        let h = match cpu {
            Some(c) => sched::spawn_pinned(name, policy, c, move || q.body()),
            None => sched::spawn_with(name, policy, move || q.body()),
        }
        .map_err(|e| format!("cannot spawn {}: {}", name, e))?;
        p.wait_parked()?;
        Ok((p, h))
    }

    fn body(&self) {
        let t = me();
        self.ptr
            .store(t as *const Thread as usize, Ordering::SeqCst);
        let mut seen = 0;
        loop {
            self.ack.store(seen, Ordering::SeqCst);
            loop {
                let r = self.req.load(Ordering::SeqCst);
                if r != seen {
                    seen = r;
                    break;
                }
                sched::park();
            }
            let op = self.op.load(Ordering::SeqCst);
            if op == EXIT {
                return;
            }
            if op == READ_ZERO {
                // Top down, word by word: each page below the mapped part faults once.
                let mut a = ZERO_FROM.load(Ordering::SeqCst);
                while a > t.stack.base() {
                    a -= 8;
                    // SAFETY: this thread's own reservation, far below SP.
                    if unsafe { core::ptr::read_volatile(a as *const u64) } != 0 {
                        ZERO_BAD.fetch_add(1, Ordering::SeqCst);
                    }
                }
                continue;
            }
            let until = t.stack.top() - op;
            let bad = dive(until, self.seed ^ seen, &mut || {});
            self.bad.fetch_add(bad, Ordering::SeqCst);
        }
    }

    fn thread(&self) -> &'static Thread {
        thread_at(self.ptr.load(Ordering::SeqCst))
    }

    /// Waits until the puppet has done every command and is blocked in `park`.
    fn wait_parked(&self) -> TestResult {
        let end = deadline_in(60_000);
        loop {
            let p = self.ptr.load(Ordering::SeqCst);
            if p != 0
                && self.ack.load(Ordering::SeqCst) == self.req.load(Ordering::SeqCst)
                && thread_at(p).state() == ThreadState::Blocked
            {
                return Ok(());
            }
            if past(end) {
                return Err(String::from("a puppet thread did not park within 60 s"));
            }
            sched::sleep_ms(1);
        }
    }

    /// Dives `depth` bytes below the top of its stack, comes back and parks again.
    fn dive(&self, depth: u64) -> TestResult {
        self.op.store(depth, Ordering::SeqCst);
        self.req.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the puppet lives until it is told to exit.
        unsafe { sched::unpark(self.ptr.load(Ordering::SeqCst) as *mut Thread) };
        self.wait_parked()
    }

    fn exit(&self, h: JoinHandle) -> TestResult {
        self.op.store(EXIT, Ordering::SeqCst);
        self.req.fetch_add(1, Ordering::SeqCst);
        // SAFETY: as in dive; this is the last use of the pointer.
        unsafe { sched::unpark(self.ptr.load(Ordering::SeqCst) as *mut Thread) };
        h.join();
        let bad = self.bad.load(Ordering::SeqCst);
        check!(bad == 0, "a puppet found {} corrupted stack words", bad);
        Ok(())
    }
}

/// Unparks every thread called `name` (a spare token for those not parked).
fn wake_all_named(name: &str) {
    sched::for_each_thread_chunked(&mut |t| {
        if t.name() == name {
            // SAFETY: in the thread table, hence alive, while the table lock is held.
            unsafe { sched::unpark(t as *const Thread as *mut Thread) };
        }
    });
}

/// Depth that reaches the lowest page of a reservation from its top, leaving room for the
/// calls made at the bottom.
fn full_depth() -> u64 {
    max() - 3 * 1024
}
