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
use dynstack::testing::{run, TestCase, TestResult};

#[path = "stacks/fast_path.rs"]
mod fast_path;

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
    let cases: &[TestCase] = &[
        TestCase {
            name: "config_matches_bootargs",
            run: config_matches_bootargs,
        },
        TestCase {
            name: "grow_one_page",
            run: grow_one_page,
        },
        TestCase {
            name: "grow_frame_skipping_pages",
            run: grow_frame_skipping_pages,
        },
        TestCase {
            name: "fast_and_slow_grow_one_page",
            run: fast_path::fast_and_slow_grow_one_page,
        },
        TestCase {
            name: "fast_and_slow_grow_several_pages",
            run: fast_path::fast_and_slow_grow_several_pages,
        },
        TestCase {
            name: "fast_grow_across_tables",
            run: fast_path::fast_grow_across_tables,
        },
        TestCase {
            name: "fast_path_leaves_overflow",
            run: fast_path::fast_path_leaves_overflow,
        },
        TestCase {
            name: "fast_path_leaves_other_faults",
            run: fast_path::fast_path_leaves_other_faults,
        },
        TestCase {
            name: "reserve_short_goes_to_slow_path",
            run: fast_path::reserve_short_goes_to_slow_path,
        },
        TestCase {
            name: "no_growth_when_growth_is_off",
            run: fast_path::no_growth_when_growth_is_off,
        },
        TestCase {
            name: "grow_with_irqs_masked",
            run: grow_with_irqs_masked,
        },
        TestCase {
            name: "grow_with_locks_held",
            run: grow_with_locks_held,
        },
        TestCase {
            name: "ensure_pregrows",
            run: ensure_pregrows,
        },
        TestCase {
            name: "with_stack_too_large_is_refused",
            run: with_stack_too_large_is_refused,
        },
        TestCase {
            name: "deep_growth_to_max",
            run: deep_growth_to_max,
        },
        TestCase {
            name: "fixed_and_dynamic_side_by_side",
            run: fixed_and_dynamic_side_by_side,
        },
        TestCase {
            name: "integrity_across_preemption_and_migration",
            run: integrity_across_preemption_and_migration,
        },
        TestCase {
            name: "overflow_exact_report",
            run: overflow_exact_report,
        },
        TestCase {
            name: "overflow_flood",
            run: overflow_flood,
        },
        TestCase {
            name: "trim_then_regrow",
            run: trim_then_regrow,
        },
        TestCase {
            name: "trim_racing_wakeups",
            run: trim_racing_wakeups,
        },
        TestCase {
            name: "exit_frees_everything",
            run: exit_frees_everything,
        },
        TestCase {
            name: "concurrent_growth_thousands",
            run: concurrent_growth_thousands,
        },
        TestCase {
            name: "grown_pages_are_zeroed",
            run: grown_pages_are_zeroed,
        },
        TestCase {
            name: "guard_never_mapped_after_cycles",
            run: guard_never_mapped_after_cycles,
        },
        TestCase {
            name: "stacks_never_executable",
            run: stacks_never_executable,
        },
        TestCase {
            name: "no_stale_tlb_after_exit",
            run: no_stale_tlb_after_exit,
        },
        TestCase {
            name: "no_stale_tlb_after_trim",
            run: no_stale_tlb_after_trim,
        },
    ];
    run(cases)
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
    let end = deadline_in(5000);
    loop {
        let s = Snap::take();
        if s.stacks == s.threads as u64 {
            return Ok(());
        }
        if past(end) {
            return Err(format!(
                "stacks ({}) and threads ({}) disagree for 5 s: a dead thread's stack is never freed",
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
    let end = deadline_in(5000);
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
        let end = deadline_in(10_000);
        loop {
            let p = self.ptr.load(Ordering::SeqCst);
            if p != 0
                && self.ack.load(Ordering::SeqCst) == self.req.load(Ordering::SeqCst)
                && thread_at(p).state() == ThreadState::Blocked
            {
                return Ok(());
            }
            if past(end) {
                return Err(String::from("a puppet thread did not park within 10 s"));
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

// ---------------------------------------------------------------------------------------
// Configuration

/// The `kstack.*` settings in force are the ones on the command line (or the defaults).
fn config_matches_bootargs() -> TestResult {
    let info = dynstack::kernel::boot_info();
    let line = info.machine.bootargs.clone().unwrap_or_default();
    let mut want_max = 16 * 1024;
    for word in line.split_whitespace() {
        if let Some(v) = word.strip_prefix("kstack.max=") {
            want_max = dynstack::cmdline::parse_size(v)
                .map_err(|e| format!("bad kstack.max on the command line: {:?}", e))?;
        }
    }
    let cfg = stack::config();
    check!(
        cfg.max == want_max,
        "kstack.max is {} but the command line {:?} asks for {}",
        cfg.max,
        line,
        want_max
    );
    check!(
        (cfg.initial as u64).is_multiple_of(PAGE) && cfg.initial >= 4096 && cfg.initial <= cfg.max
    );
    check!((cfg.guard as u64).is_multiple_of(PAGE) && cfg.guard >= 4096);
    check!(
        stride() == (cfg.max + cfg.guard) as u64,
        "slots are {} bytes apart, want max+guard = {}",
        stride(),
        cfg.max + cfg.guard
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Growth

/// A store just below the mapped part maps exactly one zeroed page with one fault.
fn grow_one_page() -> TestResult {
    in_thread("grow1", StackPolicy::Dynamic, || {
        let s = &me().stack;
        let bottom = s.mapped_bottom();
        check!(bottom > s.base(), "no room below the initial pages");
        check!(
            sp() - bottom >= 1024,
            "SP {:#x} too close to the mapped bottom {:#x} to measure",
            sp(),
            bottom
        );
        check!(
            kspace::query(bottom - 8).is_none(),
            "the page below the initial ones is already mapped"
        );
        let global0 = stack::stats().grow_faults;
        let mapped0 = s.mapped_bytes();
        let faults0 = s.grow_faults();
        let target = bottom - 8;
        // SAFETY: an address of this thread's own reservation, below SP: nothing lives there.
        unsafe { core::ptr::write_volatile(target as *mut u64, MARK) };
        let mapped1 = s.mapped_bytes();
        let faults1 = s.grow_faults();
        // SAFETY: as above, now mapped.
        let back = unsafe { core::ptr::read_volatile(target as *const u64) };
        check!(back == MARK, "read back {:#x}", back);
        check!(
            mapped1 == mapped0 + PAGE,
            "mapped {} -> {} bytes, want one page more",
            mapped0,
            mapped1
        );
        check!(
            faults1 == faults0 + 1,
            "grow faults {} -> {}",
            faults0,
            faults1
        );
        check!(s.mapped_bottom() == bottom - PAGE);
        check!(s.high_water_bytes() >= mapped1);
        check!(stack::stats().grow_faults > global0);
        for a in (bottom - PAGE..bottom - 8).step_by(8) {
            // SAFETY: the page just mapped.
            let v = unsafe { core::ptr::read_volatile(a as *const u64) };
            check!(v == 0, "new page not zeroed: {:#x} holds {:#x}", a, v);
        }
        let tr = kspace::query(bottom - PAGE).ok_or("new page not in the tables")?;
        check!(
            tr.level == 3 && tr.writable() && !tr.executable(),
            "new page mapped as {:?}",
            tr
        );
        if bottom - PAGE > s.base() {
            check!(
                kspace::query(bottom - PAGE - 8).is_none(),
                "more than one page was mapped"
            );
        }
        Ok(())
    })
}

/// A store far below SP (hand-written assembly, no probes) maps every page from the faulting
/// one up to the mapped part, with a single fault; so does a load.
fn grow_frame_skipping_pages() -> TestResult {
    for (write, policy_name) in [(true, "store"), (false, "load")] {
        in_thread("growskip", StackPolicy::Dynamic, move || {
            let s = &me().stack;
            let base = s.base();
            let bottom = s.mapped_bottom();
            check!(
                bottom - base >= 2 * PAGE,
                "reservation too small to skip pages (mapped bottom {:#x}, base {:#x})",
                bottom,
                base
            );
            let target = base + 64;
            let mapped0 = s.mapped_bytes();
            let faults0 = s.grow_faults();
            let here = sp();
            let distance = here - target;
            if write {
                // SAFETY: stores into this thread's own reservation, far below SP, as a
                // large frame made by hand would: `sub` from SP without touching the pages
                // in between.
                unsafe {
                    core::arch::asm!(
                        "mov {t}, sp",
                        "sub {t}, {t}, {d}",
                        "str {v}, [{t}]",
                        t = out(reg) _,
                        d = in(reg) distance,
                        v = in(reg) MARK,
                        options(nostack),
                    )
                };
            } else {
                let v: u64;
                // SAFETY: as above, a load.
                unsafe {
                    core::arch::asm!(
                        "mov {t}, sp",
                        "sub {t}, {t}, {d}",
                        "ldr {v}, [{t}]",
                        t = out(reg) _,
                        d = in(reg) distance,
                        v = out(reg) v,
                        options(nostack, readonly),
                    )
                };
                check!(v == 0, "a grown page read {:#x}", v);
            }
            let mapped1 = s.mapped_bytes();
            let faults1 = s.grow_faults();
            let pages = (bottom - base) / PAGE;
            check!(
                faults1 == faults0 + 1,
                "{}: {} faults to map {} pages, want 1",
                policy_name,
                faults1 - faults0,
                pages
            );
            check!(
                mapped1 == mapped0 + pages * PAGE,
                "{}: mapped {} -> {}, want {} pages more",
                policy_name,
                mapped0,
                mapped1,
                pages
            );
            check!(s.mapped_bottom() == base);
            // Every page in between is mapped, zeroed, and touching it faults no more.
            let mut a = base;
            while a < bottom {
                check!(
                    kspace::query(a).is_some(),
                    "page {:#x} in between not mapped",
                    a
                );
                for w in (a..a + PAGE).step_by(8) {
                    if w == target {
                        continue;
                    }
                    // SAFETY: mapped pages of this thread's reservation below SP.
                    let v = unsafe { core::ptr::read_volatile(w as *const u64) };
                    check!(v == 0, "{:#x} holds {:#x}, want 0", w, v);
                }
                a += PAGE;
            }
            check!(
                s.grow_faults() == faults1,
                "touching the pages in between faulted again"
            );
            if write {
                // SAFETY: as above.
                let v = unsafe { core::ptr::read_volatile(target as *const u64) };
                check!(v == MARK, "stored word reads {:#x}", v);
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Growth works with IRQs masked (page by page through a deep recursion, and a single
/// store), and IRQs stay masked.
fn grow_with_irqs_masked() -> TestResult {
    in_thread("growirq", StackPolicy::Dynamic, || {
        let s = &me().stack;
        let mapped0 = s.mapped_bytes();
        let faults0 = s.grow_faults();
        let daif = irq::save_and_disable();
        let bad = dive(s.top() - full_depth(), 7, &mut || {});
        let still_masked = irq::are_masked();
        irq::restore(daif);
        let grown = (s.mapped_bytes() - mapped0) / PAGE;
        check!(still_masked, "IRQs were unmasked by the fault path");
        check!(bad == 0, "{} words corrupted", bad);
        check!(
            s.mapped_bytes() == max(),
            "grew to {} of {}",
            s.mapped_bytes(),
            max()
        );
        check!(
            s.grow_faults() - faults0 == grown as u32,
            "{} faults for {} pages",
            s.grow_faults() - faults0,
            grown
        );
        check!(grown > 0, "nothing grew");
        Ok(())
    })
}

static TEST_LOCK: IrqMutex<u64> = IrqMutex::new(0);
static TEST_SPIN: spin::Mutex<u64> = spin::Mutex::new(0);

/// Growth works while the thread holds locks: a test IrqMutex, a plain spin lock (IRQs on),
/// the kernel address-space lock (inside `kspace::walk`), and the thread-table lock (inside
/// `sched::for_each_thread`). A fault path that took any of them would deadlock here.
fn grow_with_locks_held() -> TestResult {
    type Holder = fn(&mut dyn FnMut());
    let holders: [(&str, Holder); 4] = [
        ("IrqMutex", |f| {
            let mut g = TEST_LOCK.lock();
            *g += 1;
            check_locked_and(f);
        }),
        ("spin::Mutex", |f| {
            let mut g = TEST_SPIN.lock();
            *g += 1;
            f();
        }),
        ("kspace lock", |f| {
            let mut once = Some(f);
            kspace::walk(|_, _| {
                if let Some(f) = once.take() {
                    check_locked_and(f);
                }
            });
        }),
        ("thread table lock", |f| {
            let mut once = Some(f);
            sched::for_each_thread(1, &mut |_| {
                if let Some(f) = once.take() {
                    check_locked_and(f);
                }
            });
        }),
    ];
    for (what, hold) in holders {
        in_thread("growlock", StackPolicy::Dynamic, move || {
            let s = &me().stack;
            let mapped0 = s.mapped_bytes();
            let faults0 = s.grow_faults();
            let mut bad = u64::MAX;
            let seed = 11;
            let until = s.top() - full_depth();
            hold(&mut || bad = dive(until, seed, &mut || {}));
            check!(bad != u64::MAX, "{}: the body did not run", what);
            check!(bad == 0, "{}: {} words corrupted", what, bad);
            let grown = (s.mapped_bytes() - mapped0) / PAGE;
            check!(grown > 0, "{}: nothing grew", what);
            check!(s.grow_faults() - faults0 == grown as u32);
            check!(dynstack::sync::locks_held() == 0);
            if what != "spin::Mutex" {
                check!(
                    LOCKS_SEEN.swap(0, Ordering::SeqCst) >= 1,
                    "{}: the body did not run with the lock held",
                    what
                );
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Locks held (as the kernel counts them) when the last body ran under a kernel lock.
static LOCKS_SEEN: AtomicUsize = AtomicUsize::new(0);

fn check_locked_and(f: &mut dyn FnMut()) {
    LOCKS_SEEN.store(dynstack::sync::locks_held() as usize, Ordering::SeqCst);
    f();
}

/// `stack::ensure` maps ahead of use, and code inside `with_stack` does not fault.
fn ensure_pregrows() -> TestResult {
    in_thread("ensure", StackPolicy::Dynamic, || {
        let s = &me().stack;
        let want = (sp() - s.base()).min(max()) - 2048;
        let want = want.min(8 * 1024);
        stack::ensure(want as usize);
        let here = sp();
        check!(
            s.mapped_bottom() <= here - want,
            "ensure({}) left the mapped bottom at {:#x}, SP {:#x}",
            want,
            s.mapped_bottom(),
            here
        );
        check!(kspace::query(here - want).is_some());
        let faults = s.grow_faults();
        let bad = dive(here - want + 1024, 3, &mut || {});
        check!(bad == 0);
        check!(
            s.grow_faults() == faults,
            "{} faults inside pre-grown stack",
            s.grow_faults() - faults
        );
        let faults2 = s.grow_faults();
        let inner_faults = stack::with_stack(want as usize, || {
            let f = me().stack.grow_faults();
            let b = dive(sp() - want + 1536, 5, &mut || {});
            (me().stack.grow_faults() - f, b)
        });
        check!(
            inner_faults == (0, 0),
            "with_stack body: (faults, bad) = {:?}",
            inner_faults
        );
        check!(s.grow_faults() >= faults2);
        Ok(())
    })
}

/// `with_stack(bytes, f)` promises `f` at least `bytes` of mapped stack. Asking for more
/// than the reservation holds cannot be granted: `f` must not run (the guard gap stops the
/// pre-growth, as `ensure`'s own comment says: an overflow ends the thread).
fn with_stack_too_large_is_refused() -> TestResult {
    let base = Snap::take();
    let ran = Arc::new(AtomicBool::new(false));
    let r2 = ran.clone();
    let h = sched::spawn_with("bigask", StackPolicy::Dynamic, move || {
        stack::with_stack((max() + guard()) as usize, || {
            let below = sp() - me().stack.base();
            r2.store(true, Ordering::SeqCst);
            dynstack::println!(
                "  with_stack({} KiB) ran its body with {} bytes of stack below SP",
                (max() + guard()) / 1024,
                below
            );
        });
    })
    .map_err(|e| format!("spawn: {}", e))?;
    let tid = h.tid();
    h.join();
    check!(
        !ran.load(Ordering::SeqCst),
        "with_stack ran its body with less stack than it promised"
    );
    let (ftid, _, far) = dynstack::kernel::exception::last_fault();
    check!(ftid == tid, "the thread was not ended by a fault");
    check!(
        (far - STACK_ARENA_BASE) % stride() < guard(),
        "ended by a fault at {:#x}, not in the guard gap",
        far
    );
    check_clean(&base)
}

/// A thread can grow to its whole reservation (with `kstack.max=256k`: about 250 KiB), one
/// fault per page, its data intact, high-water mark at the maximum.
fn deep_growth_to_max() -> TestResult {
    in_thread("deep", StackPolicy::Dynamic, || {
        let s = &me().stack;
        let mapped0 = s.mapped_bytes();
        let faults0 = s.grow_faults();
        let mut bottom_sp = 0;
        let bad = dive(s.top() - full_depth(), 99, &mut || bottom_sp = sp());
        check!(bad == 0, "{} words corrupted", bad);
        check!(
            s.mapped_bytes() == max(),
            "mapped {} of {} after diving to {:#x}",
            s.mapped_bytes(),
            max(),
            bottom_sp
        );
        check!(s.high_water_bytes() == max());
        let grown = (max() - mapped0) / PAGE;
        check!(
            (s.grow_faults() - faults0) as u64 == grown,
            "{} faults for {} pages",
            s.grow_faults() - faults0,
            grown
        );
        check!(
            s.top() - bottom_sp >= max() - 4 * 1024,
            "only reached {} bytes",
            s.top() - bottom_sp
        );
        Ok(())
    })
}

/// A fixed stack is wholly mapped at creation and never faults; a dynamic one next to it
/// grows. Trim leaves the fixed one alone.
fn fixed_and_dynamic_side_by_side() -> TestResult {
    let base = Snap::take();
    let (fixed, hf) = Puppet::spawn("fixed", StackPolicy::Fixed, 1)?;
    let (dynamic, hd) = Puppet::spawn("dynamic", StackPolicy::Dynamic, 2)?;
    let (ft, dt) = (fixed.thread(), dynamic.thread());
    check!(ft.stack.policy() == StackPolicy::Fixed && dt.stack.policy() == StackPolicy::Dynamic);
    check!(
        ft.stack.mapped_bytes() == max(),
        "fixed stack maps {} at creation",
        ft.stack.mapped_bytes()
    );
    let mut a = ft.stack.base();
    while a < ft.stack.top() {
        check!(
            kspace::query(a).is_some(),
            "fixed stack page {:#x} not mapped",
            a
        );
        a += PAGE;
    }
    check!(
        dt.stack.mapped_bytes() <= initial().max(PAGE),
        "dynamic stack maps {} at creation",
        dt.stack.mapped_bytes()
    );
    fixed.dive(full_depth())?;
    dynamic.dive(full_depth())?;
    check!(
        ft.stack.grow_faults() == 0,
        "fixed stack took {} faults",
        ft.stack.grow_faults()
    );
    check!(dt.stack.grow_faults() > 0, "dynamic stack never faulted");
    check!(dt.stack.mapped_bytes() == max());
    check!(
        ft.stack.high_water_bytes() >= full_depth() - 1024,
        "fixed high-water {}",
        ft.stack.high_water_bytes()
    );
    stack::trim_all();
    check!(
        ft.stack.mapped_bytes() == max(),
        "trim took pages from a fixed stack"
    );
    check!(
        dt.stack.mapped_bytes() < max(),
        "trim left the dynamic stack whole"
    );
    fixed.dive(full_depth())?;
    dynamic.dive(full_depth())?;
    check!(ft.stack.grow_faults() == 0);
    fixed.exit(hf)?;
    dynamic.exit(hd)?;
    check_clean(&base)
}

// ---------------------------------------------------------------------------------------
// Integrity under preemption and migration

/// Threads (more than CPUs) fill their whole stacks with a pattern, then at the bottom spin
/// through several time slices, yield and sleep until they have run on another CPU; the
/// pattern is checked on the way back up.
fn integrity_across_preemption_and_migration() -> TestResult {
    let base = Snap::take();
    let cpus = sched::online_count();
    let n = 4 * cpus + 4;
    let migrated = Arc::new(AtomicUsize::new(0));
    let moving = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let switches0 = sched::switches();
    let end = deadline_in(15_000);
    let mut handles = Vec::new();
    for i in 0..n {
        let (migrated, bad, finished, moving) = (
            migrated.clone(),
            bad.clone(),
            finished.clone(),
            moving.clone(),
        );
        let h = sched::spawn_with("integrity", StackPolicy::Dynamic, move || {
            let s = &me().stack;
            let mut moved = false;
            let b = dive(s.top() - full_depth(), 1000 + i as u64, &mut || {
                let start_cpu = cpu();
                // Spin through three slices: preempted by the timer, with IRQs on.
                let spin_end = deadline_in(35);
                while !past(spin_end) {
                    core::hint::spin_loop();
                }
                let mut round = 0u32;
                loop {
                    if cpu() != start_cpu && !moved {
                        moved = true;
                        moving.fetch_add(1, Ordering::SeqCst);
                    }
                    // Enough when this one moved, or when half of them did (some may never
                    // need to), or at the deadline.
                    let enough =
                        moved || cpus == 1 || moving.load(Ordering::SeqCst) * 2 >= n || past(end);
                    if round >= 20 && enough {
                        break;
                    }
                    if round.is_multiple_of(2) {
                        sched::yield_now();
                    } else {
                        sched::sleep_ms(1);
                    }
                    round += 1;
                }
            });
            if moved {
                migrated.fetch_add(1, Ordering::SeqCst);
            }
            bad.fetch_add(b, Ordering::SeqCst);
            finished.fetch_add(1, Ordering::SeqCst);
        })
        .map_err(|e| format!("spawn: {}", e))?;
        handles.push(h);
    }
    for h in handles {
        h.join();
    }
    check!(
        finished.load(Ordering::SeqCst) == n,
        "only {} of {} threads finished",
        finished.load(Ordering::SeqCst),
        n
    );
    check!(
        bad.load(Ordering::SeqCst) == 0,
        "{} stack words corrupted",
        bad.load(Ordering::SeqCst)
    );
    check!(
        sched::switches() - switches0 >= n as u64 * 10,
        "too few context switches to mean anything"
    );
    if cpus > 1 {
        check!(
            migrated.load(Ordering::SeqCst) > 0,
            "no thread migrated to another CPU within 15 s"
        );
    }
    dynstack::println!(
        "  {} threads, {} migrated with a full stack",
        n,
        migrated.load(Ordering::SeqCst)
    );
    check_clean(&base)
}

// ---------------------------------------------------------------------------------------
// Overflow

/// A store into the guard gap (a frame larger than what is left, made by hand) is an
/// overflow: counted once, the thread ends with FAR exactly there, and its stack is freed.
/// For both policies.
fn overflow_exact_report() -> TestResult {
    for policy in [StackPolicy::Dynamic, StackPolicy::Fixed] {
        let base = Snap::take();
        let target = Arc::new(AtomicU64::new(0));
        let survived = Arc::new(AtomicBool::new(false));
        let (t2, s2) = (target.clone(), survived.clone());
        let h = sched::spawn_with("ovf", policy, move || {
            let s = &me().stack;
            let addr = s.base() - guard() / 2 - 8;
            t2.store(addr, Ordering::SeqCst);
            let distance = sp() - addr;
            // SAFETY: deliberately stores into this thread's guard gap; the kernel must end
            // the thread.
            unsafe {
                core::arch::asm!(
                    "mov {t}, sp",
                    "sub {t}, {t}, {d}",
                    "str xzr, [{t}]",
                    t = out(reg) _,
                    d = in(reg) distance,
                    options(nostack),
                )
            };
            s2.store(true, Ordering::SeqCst);
        })
        .map_err(|e| format!("spawn: {}", e))?;
        let tid = h.tid();
        h.join();
        check!(
            !survived.load(Ordering::SeqCst),
            "{:?}: a store into the guard gap succeeded",
            policy
        );
        check_ended_by_fault(
            &format!("{:?}", policy),
            tid,
            EC_DATA_ABORT_SAME_EL,
            target.load(Ordering::SeqCst),
        )?;
        let now = Snap::take();
        check!(
            now.overflows == base.overflows + 1,
            "{:?}: overflows {} -> {}",
            policy,
            base.overflows,
            now.overflows
        );
        check_clean(&base)?;
    }
    Ok(())
}

/// Hundreds of threads overflow at once on every CPU. Neighbours that filled their whole
/// stacks with a pattern before the flood find it intact after; every overflow is counted;
/// memory and counters return to where they were.
fn overflow_flood() -> TestResult {
    let base = Snap::take();
    let cpus = sched::online_count();
    let flood = 300usize;
    let neighbours = 2 * cpus + 4;
    let go = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let at_bottom = Arc::new(AtomicUsize::new(0));
    let ready = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let survived = Arc::new(AtomicUsize::new(0));
    let mut nh = Vec::new();
    for i in 0..neighbours {
        let (done, at_bottom, bad) = (done.clone(), at_bottom.clone(), bad.clone());
        let policy = if i % 3 == 2 {
            StackPolicy::Fixed
        } else {
            StackPolicy::Dynamic
        };
        nh.push(
            sched::spawn_with("neighbour", policy, move || {
                let s = &me().stack;
                let b = dive(s.top() - full_depth(), 0xF100D + i as u64, &mut || {
                    at_bottom.fetch_add(1, Ordering::SeqCst);
                    while !done.load(Ordering::SeqCst) {
                        sched::sleep_ms(2);
                    }
                });
                bad.fetch_add(b, Ordering::SeqCst);
            })
            .map_err(|e| format!("spawn: {}", e))?,
        );
    }
    let end = deadline_in(10_000);
    while at_bottom.load(Ordering::SeqCst) < neighbours {
        check!(
            !past(end),
            "neighbours did not reach the bottom of their stacks"
        );
        sched::sleep_ms(2);
    }
    let mut fh = Vec::new();
    for i in 0..flood {
        let (go, ready, survived) = (go.clone(), ready.clone(), survived.clone());
        let policy = if i % 5 == 4 {
            StackPolicy::Fixed
        } else {
            StackPolicy::Dynamic
        };
        fh.push(
            sched::spawn_with("overflow", policy, move || {
                ready.fetch_add(1, Ordering::SeqCst);
                while !go.load(Ordering::SeqCst) {
                    sched::sleep_ms(1);
                }
                core::hint::black_box(dive_forever(0));
                survived.fetch_add(1, Ordering::SeqCst);
            })
            .map_err(|e| format!("spawn: {}", e))?,
        );
    }
    let end = deadline_in(20_000);
    while ready.load(Ordering::SeqCst) < flood {
        check!(!past(end), "flood threads did not start");
        sched::sleep_ms(2);
    }
    go.store(true, Ordering::SeqCst);
    for h in fh {
        h.join();
    }
    let mid = Snap::take();
    done.store(true, Ordering::SeqCst);
    for h in nh {
        h.join();
    }
    check!(
        survived.load(Ordering::SeqCst) == 0,
        "an unbounded recursion returned"
    );
    check!(
        mid.overflows - base.overflows == flood as u64,
        "{} overflows counted for {} overflowing threads",
        mid.overflows - base.overflows,
        flood
    );
    check!(
        bad.load(Ordering::SeqCst) == 0,
        "neighbours found {} corrupted words after the flood",
        bad.load(Ordering::SeqCst)
    );
    let (_, esr, far) = dynstack::kernel::exception::last_fault();
    check!(
        ec(esr) == EC_DATA_ABORT_SAME_EL,
        "last fault ESR {:#x}",
        esr
    );
    check!(
        (far - STACK_ARENA_BASE) % stride() < guard(),
        "last overflow FAR {:#x} is not in a guard gap",
        far
    );
    check_clean(&base)
}

// ---------------------------------------------------------------------------------------
// Trim

/// A thread grows deep, comes back up and parks; `trim_all` unmaps and frees the pages
/// below its saved SP (keeping the initial pages and a small margin); woken, it finds fresh
/// zeroed pages down there (one growth fault per page) and grows again.
fn trim_then_regrow() -> TestResult {
    let base = Snap::take();
    let (p, h) = Puppet::spawn("trimmed", StackPolicy::Dynamic, 5)?;
    let t = p.thread();
    p.dive(full_depth())?;
    check!(t.stack.mapped_bytes() == max(), "did not grow to max");
    let saved_sp = t.context.sp_el0;
    let top = t.stack.top();
    let deep = t.stack.base() + 64;
    check!(kspace::query(deep).is_some());
    let before = Snap::take();
    let mapped_before = t.stack.mapped_bytes();
    let faults_before = t.stack.grow_faults();
    let freed_all = stack::trim_all();
    let after = Snap::take();
    let bottom = t.stack.mapped_bottom();
    check!(
        bottom <= saved_sp - 256,
        "trim kept too little: mapped bottom {:#x}, saved SP {:#x}",
        bottom,
        saved_sp
    );
    check!(bottom <= top - initial(), "trim took initial pages");
    let keep_limit = ((saved_sp - 4096) & !(PAGE - 1)).min(top - initial());
    check!(
        bottom <= top - initial() && bottom >= keep_limit,
        "trim kept more than a page below SP: mapped bottom {:#x}, saved SP {:#x}",
        bottom,
        saved_sp
    );
    let freed = (mapped_before - t.stack.mapped_bytes()) / PAGE;
    check!(freed >= 1, "nothing trimmed");
    check!(
        freed_all >= freed,
        "trim_all reports {} pages, this thread alone gave {}",
        freed_all,
        freed
    );
    check!(
        after.trimmed - before.trimmed == freed_all,
        "trimmed counter moved by {}, trim_all freed {}",
        after.trimmed - before.trimmed,
        freed_all
    );
    check!(
        after.accounted() == before.accounted(),
        "trim lost frames: {:?} -> {:?}",
        before,
        after
    );
    check!(
        after.free >= before.free + freed_all,
        "free frames {} -> {}",
        before.free,
        after.free
    );
    let mut a = t.stack.base();
    while a < bottom {
        check!(
            kspace::query(a).is_none(),
            "trimmed page {:#x} still mapped",
            a
        );
        a += PAGE;
    }
    check!(t.stack.grow_faults() == faults_before);
    audit_arena(true)?;
    // Wake it: it reads the trimmed range word by word (fresh zeroed pages, one fault per
    // page), then dives to the bottom again.
    let faults1 = t.stack.grow_faults();
    let zeros = read_zero_below(&p, bottom)?;
    check!(zeros, "a re-grown page was not zero");
    let grown = (bottom - t.stack.base()) / PAGE;
    check!(
        (t.stack.grow_faults() - faults1) as u64 == grown,
        "re-growing {} pages took {} faults",
        grown,
        t.stack.grow_faults() - faults1
    );
    p.dive(full_depth())?;
    check!(t.stack.mapped_bytes() == max());
    p.exit(h)?;
    check_clean(&base)
}

/// Makes the puppet read every word of its reservation below `from` (top down, so every
/// page faults once); true if all were zero.
fn read_zero_below(p: &Puppet, from: u64) -> Result<bool, String> {
    ZERO_FROM.store(from, Ordering::SeqCst);
    ZERO_BAD.store(0, Ordering::SeqCst);
    p.dive(READ_ZERO)?;
    Ok(ZERO_BAD.load(Ordering::SeqCst) == 0)
}

const READ_ZERO: u64 = u64::MAX - 1;
static ZERO_FROM: AtomicU64 = AtomicU64::new(0);
static ZERO_BAD: AtomicU64 = AtomicU64::new(0);

/// Churning threads (dive to a random depth, sleep at the bottom, check, sleep at the top)
/// while another thread trims all stacks in a loop: trim and wake-up race on every CPU and
/// no thread may find its stack changed.
fn trim_racing_wakeups() -> TestResult {
    let base = Snap::take();
    let cpus = sched::online_count();
    let n = 6 * cpus + 2;
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(AtomicU64::new(0));
    let rounds = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let mut hs = Vec::new();
    for i in 0..n {
        let (stop, bad, rounds, finished) =
            (stop.clone(), bad.clone(), rounds.clone(), finished.clone());
        hs.push(
            sched::spawn_with("churn", StackPolicy::Dynamic, move || {
                let s = &me().stack;
                let mut rng = Rng::for_index(0x7_1000 + i as u64);
                while !stop.load(Ordering::SeqCst) {
                    let depth = rng.range(512, full_depth());
                    let nap = rng.range(0, 3);
                    let b = dive(s.top() - depth, rng.next_u64(), &mut || {
                        if nap == 0 {
                            sched::yield_now()
                        } else {
                            sched::sleep_ms(nap)
                        }
                    });
                    bad.fetch_add(b, Ordering::SeqCst);
                    rounds.fetch_add(1, Ordering::SeqCst);
                    sched::sleep_ms(rng.range(0, 2));
                }
                finished.fetch_add(1, Ordering::SeqCst);
            })
            .map_err(|e| format!("spawn: {}", e))?,
        );
    }
    let t0 = Snap::take();
    let end = deadline_in(3000);
    let mut trims = 0u64;
    while !past(end) {
        stack::trim_all();
        trims += 1;
        sched::sleep_ms(1);
    }
    stop.store(true, Ordering::SeqCst);
    for h in hs {
        h.join();
    }
    let t1 = Snap::take();
    check!(
        finished.load(Ordering::SeqCst) == n,
        "{} of {} threads died while their stacks were being trimmed (see the reports above)",
        n - finished.load(Ordering::SeqCst),
        n
    );
    check!(
        bad.load(Ordering::SeqCst) == 0,
        "{} stack words changed under trim",
        bad.load(Ordering::SeqCst)
    );
    check!(
        rounds.load(Ordering::SeqCst) >= n as u64,
        "threads made no progress"
    );
    check!(t1.trimmed > t0.trimmed, "nothing was ever trimmed");
    check!(t1.overflows == base.overflows);
    dynstack::println!(
        "  {} threads, {} rounds, {} trims, {} KiB trimmed",
        n,
        rounds.load(Ordering::SeqCst),
        trims,
        (t1.trimmed - t0.trimmed) * 4
    );
    check_clean(&base)
}

// ---------------------------------------------------------------------------------------
// Exit, scale

/// Threads of both policies grow to random depths and exit: afterwards every frame, every
/// counter and the arena's tables are as before.
fn exit_frees_everything() -> TestResult {
    let base = Snap::take();
    let mut hs = Vec::new();
    let bad = Arc::new(AtomicU64::new(0));
    // Every thread waits at the end until all have got there, so they are alive at once by
    // construction (growth is fast enough for the first ones to be gone otherwise).
    let arrived = Arc::new(AtomicU64::new(0));
    let go = Arc::new(AtomicBool::new(false));
    for i in 0..64u64 {
        let (bad, arrived, go) = (bad.clone(), arrived.clone(), go.clone());
        let policy = if i % 4 == 0 {
            StackPolicy::Fixed
        } else {
            StackPolicy::Dynamic
        };
        hs.push(
            sched::spawn_with("exiter", policy, move || {
                let mut rng = Rng::for_index(0xE_0000 + i);
                let depth = rng.range(256, full_depth());
                let s = &me().stack;
                let b = dive(s.top() - depth, i, &mut || {
                    if i % 2 == 0 {
                        sched::sleep_ms(1)
                    }
                });
                bad.fetch_add(b, Ordering::SeqCst);
                arrived.fetch_add(1, Ordering::SeqCst);
                while !go.load(Ordering::SeqCst) {
                    sched::sleep_ms(1);
                }
            })
            .map_err(|e| format!("spawn: {}", e))?,
        );
    }
    let end = deadline_in(10_000);
    while arrived.load(Ordering::SeqCst) < hs.len() as u64 && !past(end) {
        sched::sleep_ms(1);
    }
    let peak = Snap::take();
    go.store(true, Ordering::SeqCst);
    for h in hs {
        h.join();
    }
    check!(bad.load(Ordering::SeqCst) == 0);
    check!(peak.stacks > base.stacks, "threads were not alive at once");
    check_clean(&base)
}

/// Thousands of threads grow to random depths on all CPUs under preemption, each checking
/// its pattern after a sleep or a yield at the bottom; each takes exactly one fault per page
/// it grew; growth happened on every CPU; memory comes back.
fn concurrent_growth_thousands() -> TestResult {
    let base = Snap::take();
    // Room for every thread at full depth, twice over.
    let budget = frame::free_pages() / 2 / (max() / PAGE + 1);
    let n = budget.min(2000) as usize;
    check!(
        n >= 100,
        "not enough memory for a meaningful number of threads ({})",
        n
    );
    let bad = Arc::new(AtomicU64::new(0));
    let wrong_faults = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let cpus_seen = Arc::new(AtomicU64::new(0));
    let go = Arc::new(AtomicBool::new(false));
    let start = timer::now();
    let mut hs = Vec::with_capacity(n);
    for i in 0..n {
        let (bad, wrong_faults, ok, cpus_seen, go) = (
            bad.clone(),
            wrong_faults.clone(),
            ok.clone(),
            cpus_seen.clone(),
            go.clone(),
        );
        hs.push(
            sched::spawn_with("grower", StackPolicy::Dynamic, move || {
                let s = &me().stack;
                while !go.load(Ordering::SeqCst) {
                    sched::park();
                }
                let mut rng = Rng::for_index(0xC_0000 + i as u64);
                for _ in 0..2 {
                    let depth = rng.range(256, full_depth());
                    let how = rng.range(0, 2);
                    let mapped0 = s.mapped_bytes();
                    let faults0 = s.grow_faults();
                    let b = dive(s.top() - depth, rng.next_u64(), &mut || {
                        cpus_seen.fetch_or(1 << cpu(), Ordering::SeqCst);
                        match how {
                            0 => sched::yield_now(),
                            1 => sched::sleep_ms(1),
                            _ => {}
                        }
                    });
                    let grown = (s.mapped_bytes() - mapped0) / PAGE;
                    if (s.grow_faults() - faults0) as u64 != grown {
                        wrong_faults.fetch_add(1, Ordering::SeqCst);
                    }
                    bad.fetch_add(b, Ordering::SeqCst);
                }
                ok.fetch_add(1, Ordering::SeqCst);
            })
            .map_err(|e| format!("spawn {} of {}: {}", i, n, e))?,
        );
    }
    // All at once: release them together. Through the thread table, whose lock keeps every
    // thread in it alive (one that already went its way may be gone).
    go.store(true, Ordering::SeqCst);
    wake_all_named("grower");
    let peak = Snap::take();
    for h in hs {
        h.join();
    }
    let ms = timer::ticks_to_ns(timer::now() - start) / 1_000_000;
    check!(
        ok.load(Ordering::SeqCst) == n,
        "{} of {} threads finished",
        ok.load(Ordering::SeqCst),
        n
    );
    check!(
        bad.load(Ordering::SeqCst) == 0,
        "{} stack words corrupted",
        bad.load(Ordering::SeqCst)
    );
    check!(
        wrong_faults.load(Ordering::SeqCst) == 0,
        "{} threads took a fault count different from the pages they grew",
        wrong_faults.load(Ordering::SeqCst)
    );
    let after = Snap::take();
    check!(
        after.grow_faults - base.grow_faults >= n as u64 / 4,
        "few growth faults"
    );
    check!(
        cpus_seen.load(Ordering::SeqCst) == online_mask(),
        "growth ran on CPUs {:#b}, online {:#b}",
        cpus_seen.load(Ordering::SeqCst),
        online_mask()
    );
    dynstack::println!(
        "  {} threads (peak {} stacks, {} KiB mapped) in {} ms",
        n,
        peak.stacks,
        peak.mapped * 4,
        ms
    );
    check_clean(&base)
}

// ---------------------------------------------------------------------------------------
// Security properties

/// Threads fill their whole reservations with a marker and exit; new threads (both
/// policies) that get the same reservations and frames see zeroes in every page they did
/// not write themselves, and never the marker. At least one reservation is reused.
fn grown_pages_are_zeroed() -> TestResult {
    let base = Snap::take();
    let k = 16u64;
    let bases = Arc::new(IrqMutex::new(Vec::<u64>::with_capacity(k as usize)));
    let mut hs = Vec::new();
    for i in 0..k {
        let bases = bases.clone();
        let policy = if i % 4 == 3 {
            StackPolicy::Fixed
        } else {
            StackPolicy::Dynamic
        };
        hs.push(
            sched::spawn_with("dirty", policy, move || {
                let s = &me().stack;
                bases.lock().push(s.base());
                let mut a = (sp() - 512) & !7;
                while a > s.base() {
                    a -= 8;
                    // SAFETY: this thread's own reservation below SP.
                    unsafe { core::ptr::write_volatile(a as *mut u64, MARK) };
                }
            })
            .map_err(|e| format!("spawn: {}", e))?,
        );
    }
    for h in hs {
        h.join();
    }
    let dirty: Vec<u64> = bases.lock().clone();
    check!(dirty.len() == k as usize);
    let reused = Arc::new(AtomicUsize::new(0));
    for i in 0..k {
        let reused = reused.clone();
        let dirty = dirty.clone();
        let policy = if i % 4 == 1 {
            StackPolicy::Fixed
        } else {
            StackPolicy::Dynamic
        };
        in_thread("clean", policy, move || {
            let s = &me().stack;
            if dirty.contains(&s.base()) {
                reused.fetch_add(1, Ordering::SeqCst);
            }
            let here = sp();
            // Already mapped: the initial pages (or all, for fixed). Below SP - 512 nothing of
            // ours yet; the marker must appear nowhere.
            let mut a = s.mapped_bottom();
            while a < here - 512 {
                // SAFETY: mapped, this thread's own, below SP.
                let v = unsafe { core::ptr::read_volatile(a as *const u64) };
                check!(
                    v != MARK,
                    "{:?}: {:#x} holds another thread's data",
                    policy,
                    a
                );
                if s.top() - a > 8 * 1024 {
                    check!(
                        v == 0,
                        "{:?}: {:#x} never written by us holds {:#x}",
                        policy,
                        a,
                        v
                    );
                }
                a += 8;
            }
            if policy == StackPolicy::Dynamic {
                // Grow everything at once from the lowest word, then check all of it.
                let bottom = s.mapped_bottom();
                let faults = s.grow_faults();
                // SAFETY: the lowest word of this thread's reservation.
                let v = unsafe { core::ptr::read_volatile(s.base() as *const u64) };
                check!(v == 0, "lowest word {:#x}", v);
                check!(s.grow_faults() == faults + 1);
                let mut a = s.base();
                while a < bottom {
                    // SAFETY: just mapped.
                    let v = unsafe { core::ptr::read_volatile(a as *const u64) };
                    check!(v == 0, "grown page word {:#x} holds {:#x}", a, v);
                    a += 8;
                }
            }
            Ok(())
        })?;
    }
    check!(
        reused.load(Ordering::SeqCst) > 0,
        "no reservation was reused by a later thread"
    );
    check_clean(&base)
}

/// After many cycles of growth, trim, exit and reuse, no guard page is mapped, every page
/// in the arena belongs to a live thread's mapped part, and the tables agree with the
/// counters.
fn guard_never_mapped_after_cycles() -> TestResult {
    let base = Snap::take();
    let mut puppets: Vec<(Arc<Puppet>, JoinHandle)> = Vec::new();
    let mut rng = Rng::for_index(0x6_0A4D);
    for round in 0..6u64 {
        // New threads, some exiting at once (their reservations come back for reuse).
        for i in 0..12u64 {
            let policy = if rng.range(0, 4) == 0 {
                StackPolicy::Fixed
            } else {
                StackPolicy::Dynamic
            };
            let (p, h) = Puppet::spawn("cycler", policy, round * 100 + i)?;
            p.dive(rng.range(256, full_depth()))?;
            if rng.range(0, 2) == 0 {
                p.exit(h)?;
            } else {
                puppets.push((p, h));
            }
        }
        stack::trim_all();
        for (p, _) in &puppets {
            if rng.range(0, 1) == 0 {
                p.dive(rng.range(256, full_depth()))?;
            }
        }
        // Some of the old ones go.
        let mut keep = Vec::new();
        for (p, h) in puppets.drain(..) {
            if rng.range(0, 3) == 0 {
                p.exit(h)?;
            } else {
                keep.push((p, h));
            }
        }
        puppets = keep;
        audit_arena(true)?;
    }
    check!(!puppets.is_empty());
    for (p, h) in puppets {
        p.exit(h)?;
    }
    check_clean(&base)
}

/// The arena holds no executable mapping (checked in every audit), and jumping to code
/// written on a stack ends the thread with an instruction abort at that address.
fn stacks_never_executable() -> TestResult {
    audit_arena(false)?;
    for policy in [StackPolicy::Dynamic, StackPolicy::Fixed] {
        let base = Snap::take();
        let addr = Arc::new(AtomicU64::new(0));
        let ran = Arc::new(AtomicBool::new(false));
        let (a2, r2) = (addr.clone(), ran.clone());
        let h = sched::spawn_with("exec", policy, move || {
            // nop; ret
            let code: [u32; 4] = [0xd503_201f, 0xd65f_03c0, 0, 0];
            let code = core::hint::black_box(code);
            let p = code.as_ptr() as u64;
            a2.store(p, Ordering::SeqCst);
            // SAFETY: deliberately branches to the stack; the kernel must refuse to execute.
            unsafe {
                core::arch::asm!("blr {p}", p = in(reg) p, clobber_abi("C"));
            }
            r2.store(true, Ordering::SeqCst);
            core::hint::black_box(code);
        })
        .map_err(|e| format!("spawn: {}", e))?;
        let tid = h.tid();
        h.join();
        check!(
            !ran.load(Ordering::SeqCst),
            "{:?}: code on a stack ran",
            policy
        );
        check_ended_by_fault(
            &format!("{:?}", policy),
            tid,
            EC_INSTRUCTION_ABORT_SAME_EL,
            addr.load(Ordering::SeqCst),
        )?;
        check_clean(&base)?;
    }
    Ok(())
}

fn online_cpus() -> Vec<usize> {
    (0..dynstack::percpu::MAX_CPUS)
        .filter(|&c| sched::is_online(c))
        .collect()
}

/// Reads `addr` from a new thread pinned to CPU `on`; the read must fault there. `Ok(false)`
/// if the prober happened to get that reservation for its own stack (a growth, not a test).
fn probe(addr: u64, on: usize) -> Result<bool, String> {
    let ran_on = Arc::new(AtomicUsize::new(usize::MAX));
    let read = Arc::new(AtomicU64::new(0));
    let survived = Arc::new(AtomicBool::new(false));
    let own = Arc::new(AtomicBool::new(false));
    let (c2, r2, s2, o2) = (ran_on.clone(), read.clone(), survived.clone(), own.clone());
    let h = sched::spawn_pinned("prober", StackPolicy::Dynamic, on, move || {
        if me().stack.base() == slot_base_of(addr) {
            o2.store(true, Ordering::SeqCst);
            return;
        }
        c2.store(cpu(), Ordering::SeqCst);
        // SAFETY: deliberately reads another thread's unmapped stack page; the kernel must
        // end this thread.
        let v = unsafe { core::ptr::read_volatile(addr as *const u64) };
        r2.store(v, Ordering::SeqCst);
        s2.store(true, Ordering::SeqCst);
    })
    .map_err(|e| format!("spawn: {}", e))?;
    let tid = h.tid();
    h.join();
    if own.load(Ordering::SeqCst) {
        return Ok(false);
    }
    let c = ran_on.load(Ordering::SeqCst);
    check!(c == on, "a prober pinned to cpu {} ran on cpu {}", on, c);
    check!(
        !survived.load(Ordering::SeqCst),
        "STALE TRANSLATION: cpu {} read {:#x} at unmapped {:#x} without a fault",
        c,
        read.load(Ordering::SeqCst),
        addr
    );
    check_ended_by_fault(
        &format!("prober on cpu {}", c),
        tid,
        EC_DATA_ABORT_SAME_EL,
        addr,
    )?;
    Ok(true)
}

/// Reads every address from every online CPU; every read must fault.
fn probe_from_all_cpus(addrs: &[u64]) -> TestResult {
    for &addr in addrs {
        check!(
            kspace::query(addr).is_none(),
            "{:#x} is still in the tables",
            addr
        );
        for c in online_cpus() {
            check!(
                probe(addr, c)?,
                "a prober got the reservation of {:#x} for itself",
                addr
            );
        }
    }
    Ok(())
}

/// One victim per CPU, pinned there, touches the deep pages of its stack again and again
/// (so that CPU's TLB holds them) and parks.
fn pinned_victims(seed: u64) -> Result<Vec<(Arc<Puppet>, JoinHandle)>, String> {
    let mut victims = Vec::new();
    for c in online_cpus() {
        let (p, h) = Puppet::spawn_on("victim", StackPolicy::Dynamic, seed + c as u64, Some(c))?;
        for _ in 0..3 {
            p.dive(full_depth())?;
        }
        victims.push((p, h));
    }
    Ok(victims)
}

/// Threads pinned to each CPU touch deep pages of their stacks and exit; reading those
/// addresses afterwards, from every CPU, faults: no CPU kept a translation of a freed page.
fn no_stale_tlb_after_exit() -> TestResult {
    let base = Snap::take();
    let mut addrs = Vec::new();
    for (p, h) in pinned_victims(40)? {
        addrs.push(p.thread().stack.base() + 128);
        p.exit(h)?;
    }
    // Fillers take the freed reservations and keep them without growing, so that no prober
    // gets one of them for its own stack.
    let mut fillers = Vec::new();
    let mut held = 0;
    while held < addrs.len() && fillers.len() < 8 * addrs.len() + 64 {
        let (f, fh) = Puppet::spawn("filler", StackPolicy::Dynamic, 50)?;
        if addrs
            .iter()
            .any(|&a| slot_base_of(a) == f.thread().stack.base())
        {
            held += 1;
        }
        fillers.push((f, fh));
    }
    check!(held == addrs.len(), "freed reservations were not reused");
    probe_from_all_cpus(&addrs)?;
    for (f, h) in fillers {
        f.exit(h)?;
    }
    check_clean(&base)
}

/// Threads pinned to each CPU touch deep pages of their stacks and park; the pages are
/// trimmed; reading them from every CPU faults, and each thread grows back into fresh zeroed
/// pages (with a fault, not through a stale translation).
fn no_stale_tlb_after_trim() -> TestResult {
    let base = Snap::take();
    let victims = pinned_victims(60)?;
    let mut addrs = Vec::new();
    for (p, _) in &victims {
        let deep = p.thread().stack.base() + 128;
        check!(kspace::query(deep).is_some());
        addrs.push(deep);
    }
    stack::trim_all();
    for (p, _) in &victims {
        check!(
            p.thread().stack.mapped_bottom() > p.thread().stack.base() + 128,
            "trim did not free the deep pages"
        );
    }
    probe_from_all_cpus(&addrs)?;
    for (p, h) in victims {
        let t = p.thread();
        let faults = t.stack.grow_faults();
        let zeros = read_zero_below(&p, t.stack.mapped_bottom())?;
        check!(zeros, "re-grown page not zero");
        check!(
            t.stack.grow_faults() > faults,
            "the trimmed page came back without a fault"
        );
        p.exit(h)?;
    }
    check_clean(&base)
}
