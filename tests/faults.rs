//! Fatal and near-fatal conditions, tested in QEMU: memory running low and out under stack
//! growth, and faults the kernel cannot survive (which must end in a clear report, never a
//! hang).
//!
//! The mode is chosen by the command line:
//!
//! - default (meant for `-m 64M`; works with any `-m`, see below): two cases, each driven
//!   from a thread with a fixed stack and watched by a watchdog that turns a hang into a
//!   `FAILED` line. `trim_when_memory_runs_low`: sleeping threads hold deep unused stack
//!   pages, every free frame is taken away, and threads pinned to every CPU must grow: the
//!   kernel must trim by itself to let them. `memory_exhaustion`: dynamic threads are
//!   spawned until spawning fails, then all of them grow to `kstack.max` at once, far more
//!   than memory holds. Spawning must fail cleanly, growth must never fail silently (a thread
//!   either waits for memory, counted in `shortages`, or is ended with an OOM report, counted
//!   in `oom_kills`), nothing may panic or hang, waiting threads must go on once memory comes
//!   back, and after killing them all every frame must be accounted for again. With more
//!   RAM than 64 MiB the case first takes the excess away (ballast frames) so that it
//!   always works against the same amount.
//! - `init="exhaust"`: a system call recurses on the exception stack until it overflows.
//!   This must end in a `PANIC` report naming the exception stack overflow and a non-zero
//!   exit, not a hang. It ends the kernel, so it is a boot of its own.
//! - `init="overflow-locked"`: a thread overflows its stack while holding a lock. It cannot
//!   be ended safely, so the kernel must stop with an `OVERFLOW` line and then a `PANIC`
//!   saying so (exit non-zero), rather than end it and deadlock on the lock later.
//! - `init="growth-fault"`: the growth path itself faults (through the kernel's test hook
//!   `stack::inject_fault_in_growth_path`): a `PANIC` naming the exception-stack vector, exit
//!   non-zero, not a hang. The fast path steps aside while that injection is pending, so
//!   this is the slow path (`stack::on_fault`).
//! - `init="fast-path-fault"`: the growth fast path itself faults (its reserve's buffer is
//!   made unmapped through `stack::fast::inject_fault_in_fast_path`): the same report.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use dynstack::arch::timer;
use dynstack::check;
use dynstack::cmdline::StackPolicy;
use dynstack::mm::{frame, heap};
use dynstack::sched::{self, Thread, ThreadKind};
use dynstack::stack;
use dynstack::testing::{run, TestCase, TestResult};

dynstack::kernel_main!(main);

fn main() {
    let init = &dynstack::kernel::boot_info().args.init;
    if init.split(';').any(|c| c.trim() == "exhaust") {
        exhaust_exception_stack();
    }
    if init.split(';').any(|c| c.trim() == "overflow-locked") {
        overflow_holding_lock();
    }
    if init.split(';').any(|c| c.trim() == "growth-fault") {
        fault_in_growth_path();
    }
    if init.split(';').any(|c| c.trim() == "fast-path-fault") {
        fault_in_fast_path();
    }
    if let Err(e) = start_watchdog() {
        dynstack::println!("faults: {}", e);
    }
    let cases: &[TestCase] = &[
        TestCase {
            name: "trim_when_memory_runs_low",
            run: || fixed_controller("trim_when_memory_runs_low", trim_when_memory_runs_low),
        },
        TestCase {
            name: "memory_exhaustion",
            run: || fixed_controller("memory_exhaustion", exhaustion_controller),
        },
    ];
    run(cases)
}

/// Recurses on the exception stack through the test system call. Never returns: the kernel
/// must panic with an exception-stack overflow report.
fn exhaust_exception_stack() -> ! {
    dynstack::println!(
        "faults: exhausting the exception stack (expect PANIC ... exception stack overflow)"
    );
    // SAFETY: the test hook; it does not return.
    unsafe {
        core::arch::asm!(
            "svc #0x7e",
            in("x0") 0u64,
            options(nostack)
        )
    };
    dynstack::println!("faults: the exception-stack test hook returned");
    semihosting::process::exit(3)
}

/// Makes the growth fault path itself fault (the kernel's test hook) and then grows a stack.
/// A fault in exception context cannot be survived: the kernel must stop with a clear report
/// (`PANIC`, then the vector it came through), not hang or loop.
fn fault_in_growth_path() -> ! {
    dynstack::println!(
        "faults: a fault inside the growth path (expect PANIC ... synchronous, exception stack)"
    );
    let h = sched::spawn_with("growfault", StackPolicy::Dynamic, || {
        // SAFETY: the running thread's control block.
        let bottom = unsafe { (*sched::current_ptr()).stack.mapped_bottom() };
        stack::inject_fault_in_growth_path();
        // SAFETY: just below this thread's mapped stack: a growth.
        unsafe { core::ptr::write_volatile((bottom - 8) as *mut u64, 1) };
    });
    if let Ok(h) = h {
        h.join();
    }
    dynstack::println!("faults: the kernel survived a fault inside its growth path");
    semihosting::process::exit(3)
}

/// Makes the growth fast path fault (the kernel's test hook) and grows a stack on the same
/// CPU with IRQs masked, so nothing touches the reserve in between: the kernel must stop
/// with the same clear report as for a fault in the slow path.
fn fault_in_fast_path() -> ! {
    dynstack::println!(
        "faults: a fault inside the growth fast path (expect PANIC ... synchronous, exception stack)"
    );
    let h = sched::spawn_with("fastfault", StackPolicy::Dynamic, || {
        // SAFETY: the running thread's control block.
        let bottom = unsafe { (*sched::current_ptr()).stack.mapped_bottom() };
        let _daif = dynstack::arch::irq::save_and_disable();
        stack::fast::inject_fault_in_fast_path();
        // SAFETY: just below this thread's mapped stack: a growth, taken by the fast path.
        unsafe { core::ptr::write_volatile((bottom - 8) as *mut u64, 1) };
    });
    if let Ok(h) = h {
        h.join();
    }
    dynstack::println!("faults: the kernel survived a fault inside its growth fast path");
    semihosting::process::exit(3)
}

static HELD: dynstack::sync::IrqMutex<u64> = dynstack::sync::IrqMutex::new(0);

/// Overflows the stack while holding a lock. The thread cannot be ended safely (the lock
/// would never be released), so the kernel must stop with a panic that says so, after the
/// OVERFLOW report, instead of ending the thread and deadlocking later.
fn overflow_holding_lock() -> ! {
    dynstack::println!(
        "faults: overflowing while holding a lock (expect OVERFLOW, then PANIC ... holding 1 lock)"
    );
    let h = sched::spawn("lockedovf", || {
        let mut g = HELD.lock();
        *g += core::hint::black_box(forever(0));
    });
    if let Ok(h) = h {
        h.join();
    }
    dynstack::println!(
        "faults: the thread that overflowed holding a lock was ended and the kernel went on"
    );
    semihosting::process::exit(3)
}

#[inline(never)]
fn forever(depth: u64) -> u64 {
    let mut frame = [0u64; 24];
    frame[(depth % 24) as usize] = depth;
    core::hint::black_box(&mut frame);
    if depth > 1 << 40 {
        return depth;
    }
    forever(depth + 1) + frame[(depth % 7) as usize]
}

const PAGE: u64 = 4096;
/// Memory the exhaustion case works against, whatever `-m` says.
const WORKING_SET_PAGES: u64 = (56 << 20) / PAGE;

fn ms_to_ticks(ms: u64) -> u64 {
    timer::ns_to_ticks(ms * 1_000_000)
}

fn now_ms() -> u64 {
    timer::ticks_to_ns(timer::now()) / 1_000_000
}

fn sp() -> u64 {
    dynstack::arch::stack_pointer()
}

type Snap = dynstack::testing::MemorySnapshot;

#[inline(never)]
fn dive(until: u64, bottom: &mut dyn FnMut()) -> u64 {
    let mut frame = [0u64; 24];
    let me = sp();
    for (i, w) in frame.iter_mut().enumerate() {
        *w = me ^ i as u64;
    }
    core::hint::black_box(&mut frame);
    let below = if me > until {
        dive(until, bottom)
    } else {
        bottom();
        0
    };
    core::hint::black_box(&mut frame);
    let mut bad = below;
    for (i, w) in frame.iter().enumerate() {
        // SAFETY: a word of this frame.
        if unsafe { core::ptr::read_volatile(w) } != me ^ i as u64 {
            bad += 1;
        }
    }
    bad
}

// Worker states.
const NOT_STARTED: u8 = 0;
const WAITING_FOR_GO: u8 = 1;
const GROWING: u8 = 2;
const GROWN: u8 = 3;

struct Shared {
    state: Vec<AtomicU8>,
    go: AtomicBool,
}

static SHARED: spin::Once<Shared> = spin::Once::new();
/// Milliseconds (timer) of the controller's last sign of life, for the watchdog; 0 while no
/// case is being watched.
static HEARTBEAT: AtomicU64 = AtomicU64::new(0);
static PHASE: spin::Mutex<&str> = spin::Mutex::new("-");
static CASE: spin::Mutex<&str> = spin::Mutex::new("-");
static PASSED: AtomicU64 = AtomicU64::new(0);
static CONTROLLER_ERROR: spin::Mutex<Option<String>> = spin::Mutex::new(None);

/// Tells the watchdog the controller is alive and what it is doing.
fn beat(phase: &'static str) {
    *PHASE.lock() = phase;
    HEARTBEAT.store(now_ms(), Ordering::SeqCst);
}

fn worker(i: usize) {
    let sh = SHARED.get().expect("shared state");
    let t = sched::current_ptr();
    sh.state[i].store(WAITING_FOR_GO, Ordering::SeqCst);
    while !sh.go.load(Ordering::SeqCst) {
        sched::park();
    }
    sh.state[i].store(GROWING, Ordering::SeqCst);
    // SAFETY: the running thread's control block.
    let top = unsafe { (*t).stack.top() };
    let until = top - stack::config().max as u64 + 3 * 1024;
    dive(until, &mut || {
        sh.state[i].store(GROWN, Ordering::SeqCst);
        loop {
            sched::park();
        }
    });
}

/// A thread with a fixed stack (it never needs memory to be switched in) that ends the boot
/// with a clear message if a case's controller stops making progress: a hang is a failure
/// too, and one that would otherwise only show as a timeout.
fn start_watchdog() -> Result<(), String> {
    sched::spawn_with("watchdog", StackPolicy::Fixed, || loop {
        let last = HEARTBEAT.load(Ordering::SeqCst);
        if last != 0 && now_ms() > last + 20_000 {
            let s = stack::stats();
            let case = *CASE.lock();
            if let Some(e) = CONTROLLER_ERROR.lock().take() {
                dynstack::println!(
                    "TEST {} ... FAILED: {} (and the case could not report it: no progress for 20 s)",
                    case,
                    e
                );
            } else {
                dynstack::println!(
                    "TEST {} ... FAILED: no progress for 20 s while {}: free_pages={} heap_grown_kib={} reserve_pages={} shortages={} oom_kills={} trimmed_kib={} workload_threads={}",
                    case,
                    *PHASE.lock(),
                    frame::free_pages(),
                    heap::grown_bytes() / 1024,
                    s.reserve_pages,
                    s.shortages,
                    s.oom_kills,
                    s.trimmed_pages * 4,
                    sched::workload_threads()
                );
            }
            sched::for_each_thread(usize::MAX, &mut |t| {
                if t.kind == ThreadKind::System {
                    let need = match t.stack.policy() {
                        StackPolicy::Fixed => 0,
                        StackPolicy::Dynamic => {
                            (stack::config().max as u64 - t.stack.mapped_bytes()) / PAGE
                        }
                    };
                    dynstack::println!(
                        "  system thread {} ({}): {:?}, policy {:?}, {} of {} KiB mapped (needs {} reserve pages to be switched in)",
                        t.tid,
                        t.name(),
                        t.state(),
                        t.stack.policy(),
                        t.stack.mapped_bytes() / 1024,
                        stack::config().max / 1024,
                        need
                    );
                }
            });
            dynstack::println!(
                "TESTS passed={} failed=1",
                PASSED.load(Ordering::SeqCst)
            );
            semihosting::process::exit(1);
        }
        // Wait on the timer rather than sleep: sleeping may allocate.
        let until = timer::now() + ms_to_ticks(200);
        while timer::now() < until {
            sched::yield_now();
        }
    })
    .map(|_| ())
    .map_err(|e| format!("cannot start the watchdog: {}", e))
}

/// Runs `body` from a thread with a fixed stack, watched by the watchdog. Under memory
/// exhaustion, only a thread that needs no memory to be switched in can be sure to run (a
/// dynamic one legitimately waits), like an operator who must be able to kill the hogs.
/// Everything else involved (the reaper, trim, the scheduler) is the kernel's own.
fn fixed_controller(name: &'static str, body: fn() -> TestResult) -> TestResult {
    *CASE.lock() = name;
    *CONTROLLER_ERROR.lock() = None;
    beat("starting");
    let slot = alloc::sync::Arc::new(dynstack::sync::IrqMutex::new(None));
    let s2 = slot.clone();
    let h = sched::spawn_with("controller", StackPolicy::Fixed, move || {
        let r = body();
        if let Err(e) = &r {
            // The case thread that reports this may itself be starved of memory: let the
            // watchdog say it if it has to.
            *CONTROLLER_ERROR.lock() = Some(e.clone());
        }
        *s2.lock() = Some(r);
    })
    .map_err(|e| format!("cannot start the controller: {}", e))?;
    h.join();
    let r = slot.lock().take();
    let r = r.unwrap_or_else(|| Err(String::from("the controller died (see the report above)")));
    HEARTBEAT.store(0, Ordering::SeqCst);
    if r.is_ok() {
        PASSED.fetch_add(1, Ordering::SeqCst);
    }
    r
}

fn count(sh: &Shared, n: usize, state: u8) -> usize {
    sh.state[..n]
        .iter()
        .filter(|s| s.load(Ordering::SeqCst) == state)
        .count()
}

/// Sleeps `ms` while telling the watchdog we are alive.
fn nap(ms: u64, phase: &'static str) {
    sched::sleep_ms(ms);
    beat(phase);
}

/// Frames taken away from the kernel for a while; given back when dropped, whatever way the
/// case ends (an early error must not leave the machine without memory).
struct Ballast {
    chunks: Vec<(u64, usize)>,
    pages: u64,
}

impl Ballast {
    /// Takes free frames until only `leave` are left (or the allocator says no).
    fn take_all_but(leave: u64) -> Ballast {
        let mut b = Ballast {
            chunks: Vec::with_capacity((frame::free_pages() / 512 + 4096) as usize),
            pages: 0,
        };
        for chunk in [512usize, 64, 1] {
            while frame::free_pages() >= leave + chunk as u64
                && b.chunks.len() < b.chunks.capacity()
            {
                match frame::alloc(chunk) {
                    Some(pa) => {
                        b.chunks.push((pa, chunk));
                        b.pages += chunk as u64;
                    }
                    None => break,
                }
            }
        }
        b
    }
}

impl Drop for Ballast {
    fn drop(&mut self) {
        for &(pa, count) in &self.chunks {
            frame::free(pa, count);
        }
    }
}

/// Sleeping threads hold deep stack pages they do not use now. Then every free frame is
/// taken away and threads on every CPU must grow: the per-CPU reserves run dry, and the
/// shortage must make the kernel trim the sleeping threads by itself (nobody here calls
/// trim); with the pages that gives back, every growing thread reaches its full depth. The
/// sleepers' own data is intact, and every frame is accounted for afterwards.
fn trim_when_memory_runs_low() -> TestResult {
    beat("setting up");
    let cfg = stack::config();
    let max_pages = cfg.max as u64 / PAGE;
    check!(
        max_pages > cfg.initial as u64 / PAGE + 1,
        "kstack.max leaves nothing to trim"
    );
    let base = Snap::take();
    let cpus: Vec<usize> = (0..dynstack::percpu::MAX_CPUS)
        .filter(|&c| sched::is_online(c))
        .collect();
    let release = alloc::sync::Arc::new(AtomicBool::new(false));
    let go = alloc::sync::Arc::new(AtomicBool::new(false));
    let rested = alloc::sync::Arc::new(AtomicU64::new(0));
    let grown = alloc::sync::Arc::new(AtomicU64::new(0));
    let bad = alloc::sync::Arc::new(AtomicU64::new(0));
    let mut hs = Vec::new();
    // Sleepers: grow to the maximum, come back to the top, keep a pattern there, sleep.
    let sleepers = 8 * cpus.len() as u64 + 8;
    for i in 0..sleepers {
        let (release, rested, bad) = (release.clone(), rested.clone(), bad.clone());
        hs.push(
            sched::spawn_with("sleeper", StackPolicy::Dynamic, move || {
                let mut mine = [0u64; 16];
                for (k, w) in mine.iter_mut().enumerate() {
                    *w = (i << 8 | k as u64) ^ 0x5A5A_0000_0000;
                }
                core::hint::black_box(&mut mine);
                // SAFETY: the running thread's control block.
                let top = unsafe { (*sched::current_ptr()).stack.top() };
                bad.fetch_add(
                    dive(top - cfg.max as u64 + 3 * 1024, &mut || {}),
                    Ordering::SeqCst,
                );
                rested.fetch_add(1, Ordering::SeqCst);
                while !release.load(Ordering::SeqCst) {
                    sched::park();
                }
                core::hint::black_box(&mut mine);
                for (k, w) in mine.iter().enumerate() {
                    // SAFETY: a word of this frame.
                    if unsafe { core::ptr::read_volatile(w) }
                        != (i << 8 | k as u64) ^ 0x5A5A_0000_0000
                    {
                        bad.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
            .map_err(|e| format!("spawn: {}", e))?,
        );
    }
    // Growers: two per CPU, pinned, waiting at the top of their stacks.
    let growers = 2 * cpus.len() as u64;
    for &c in cpus.iter().chain(cpus.iter()) {
        let (release, go, grown, bad, rested) = (
            release.clone(),
            go.clone(),
            grown.clone(),
            bad.clone(),
            rested.clone(),
        );
        hs.push(
            sched::spawn_pinned("grower", StackPolicy::Dynamic, c, move || {
                rested.fetch_add(1, Ordering::SeqCst);
                while !go.load(Ordering::SeqCst) {
                    sched::park();
                }
                // SAFETY: the running thread's control block.
                let top = unsafe { (*sched::current_ptr()).stack.top() };
                let until = top - cfg.max as u64 + 3 * 1024;
                bad.fetch_add(
                    dive(until, &mut || {
                        grown.fetch_add(1, Ordering::SeqCst);
                        while !release.load(Ordering::SeqCst) {
                            sched::park();
                        }
                    }),
                    Ordering::SeqCst,
                );
            })
            .map_err(|e| format!("spawn: {}", e))?,
        );
    }
    let end = now_ms() + 15_000;
    while rested.load(Ordering::SeqCst) < sleepers + growers {
        check!(
            now_ms() < end,
            "threads did not get to their resting points"
        );
        nap(5, "waiting for the threads to rest");
    }
    let trimmable: u64 = {
        let mut n = 0;
        sched::for_each_thread(usize::MAX, &mut |t| {
            if t.name() == "sleeper" {
                n += t.stack.mapped_bytes() / PAGE - 1;
            }
        });
        n
    };
    let before = Snap::take();
    {
        // Take every free frame away: growth can only use what reserves hold and what trim
        // gives back.
        let ballast = Ballast::take_all_but(0);
        beat("growing with no free memory");
        go.store(true, Ordering::SeqCst);
        wake_all_named("grower");
        let end = now_ms() + 15_000;
        while grown.load(Ordering::SeqCst) < growers {
            check!(
                now_ms() < end,
                "with no free memory, {} of {} threads could grow in 15 s (free {} pages, shortages {}, trimmed {} KiB since, {} pages were trimmable)",
                grown.load(Ordering::SeqCst),
                growers,
                frame::free_pages(),
                stack::stats().shortages - before.shortages,
                (stack::stats().trimmed_pages - before.trimmed) * 4,
                trimmable
            );
            nap(5, "growing with no free memory");
        }
        let during = Snap::take();
        dynstack::println!(
            "  {} growers grew with {} frames taken away: {} shortages, {} KiB trimmed by the kernel",
            growers,
            ballast.pages,
            during.shortages - before.shortages,
            (during.trimmed - before.trimmed) * 4
        );
        check!(
            during.shortages > before.shortages,
            "no shortage: the reserves never ran dry, the case means nothing"
        );
        check!(
            during.trimmed > before.trimmed,
            "threads grew without anything being trimmed or freed?"
        );
        check!(
            during.oom_kills == before.oom_kills,
            "OOM kills while growing"
        );
        drop(ballast);
    }
    beat("releasing");
    release.store(true, Ordering::SeqCst);
    wake_all_named("sleeper");
    wake_all_named("grower");
    for h in hs {
        h.join();
    }
    check!(
        bad.load(Ordering::SeqCst) == 0,
        "{} stack words changed",
        bad.load(Ordering::SeqCst)
    );
    beat("checking");
    let end = now_ms() + 5000;
    loop {
        let s = Snap::take();
        if s.stacks == s.threads as u64 && s.threads == base.threads {
            break;
        }
        check!(now_ms() < end, "threads were not reaped");
        nap(5, "waiting for the reaper");
    }
    let end = now_ms() + 10_000;
    let mut after = Snap::take();
    while after.accounted() != base.accounted() && now_ms() < end {
        nap(10, "waiting for the reaper to give the frames back");
        after = Snap::take();
    }
    check!(
        after.accounted() == base.accounted(),
        "frames not conserved: before {:?}, after {:?}",
        base,
        after
    );
    Ok(())
}

/// Unparks every thread called `name` (a spare token for those not parked), through the
/// thread table, whose lock keeps every thread in it alive.
fn wake_all_named(name: &str) {
    sched::for_each_thread_chunked(&mut |t| {
        if t.name() == name {
            // SAFETY: in the thread table, hence alive, while the table lock is held.
            unsafe { sched::unpark(t as *const Thread as *mut Thread) };
        }
    });
}

fn exhaustion_controller() -> TestResult {
    beat("setting up");
    let cfg = stack::config();
    let max_pages = cfg.max as u64 / PAGE;
    let initial_pages = cfg.initial as u64 / PAGE;
    check!(
        max_pages > initial_pages,
        "kstack.max = kstack.initial: nothing can grow, the case means nothing"
    );
    // Take away memory beyond the working set, so the case does the same work whatever -m.
    let mut ballast: Vec<(u64, usize)> = Vec::with_capacity(4096);
    let mut ballast_pages = 0u64;
    while frame::free_pages() > WORKING_SET_PAGES + 512 && ballast.len() < ballast.capacity() {
        let excess = frame::free_pages() - WORKING_SET_PAGES;
        let chunk = if excess >= 512 { 512 } else { 1 };
        match frame::alloc(chunk) {
            Some(pa) => {
                ballast.push((pa, chunk));
                ballast_pages += chunk as u64;
            }
            None => break,
        }
    }
    let base = Snap::take();
    let capacity = (frame::free_pages() + 64) as usize;
    let mut state = Vec::with_capacity(capacity);
    for _ in 0..capacity {
        state.push(AtomicU8::new(NOT_STARTED));
    }
    let sh = SHARED.call_once(|| Shared {
        state,
        go: AtomicBool::new(false),
    });
    let mut tids: Vec<u64> = Vec::with_capacity(capacity);
    // Phase 5 picks its victims when free memory is 0: no allocation may happen then.
    let mut victims: Vec<u64> = Vec::with_capacity(16);
    dynstack::println!(
        "  free {} KiB (ballast {} KiB), kstack.max {} KiB: spawning until it fails",
        base.free * 4,
        ballast_pages * 4,
        cfg.max / 1024
    );

    // Phase 2: spawn until spawning fails.
    let spawn_error = loop {
        if tids.len() == capacity {
            return Err(format!(
                "{} threads spawned and spawning still works",
                capacity
            ));
        }
        match sched::spawn_raw(
            "hog",
            ThreadKind::Workload,
            StackPolicy::Dynamic,
            worker,
            tids.len(),
            None,
        ) {
            Ok(tid) => tids.push(tid),
            Err(e) => break e,
        }
        if tids.len().is_multiple_of(256) {
            beat("spawning until spawning fails");
        }
    };
    let n = tids.len();
    check!(
        spawn_error == sched::SpawnError::OutOfMemory,
        "spawning failed with {:?}, want OutOfMemory",
        spawn_error
    );
    check!(n >= 100, "only {} threads could be spawned", n);
    // A closure thread fails as cleanly.
    let r = sched::spawn("late", || {});
    check!(
        r.is_err(),
        "spawn succeeded after spawn_raw failed for lack of memory"
    );
    let after_spawn = Snap::take();
    dynstack::println!(
        "  spawned {} threads, then: {:?} (free {} KiB)",
        n,
        spawn_error,
        after_spawn.free * 4
    );

    // Every worker gets to run once (only its initial pages are needed).
    let end = now_ms() + 30_000;
    while count(sh, n, WAITING_FOR_GO) < n {
        check!(
            now_ms() < end,
            "only {} of {} spawned threads ever ran",
            count(sh, n, WAITING_FOR_GO),
            n
        );
        nap(5, "waiting for every spawned thread to run once");
    }

    // Phase 4: all grow at once, far beyond what memory holds.
    sh.go.store(true, Ordering::SeqCst);
    // Through the thread table, whose lock keeps every thread in it alive: a worker that saw
    // `go` before parking may already be gone (an OOM kill) by the time we get to it.
    sched::for_each_thread_chunked(&mut |t| {
        if t.kind == ThreadKind::Workload && t.name() == "hog" {
            // SAFETY: in the thread table, hence alive, while the table lock is held.
            unsafe { sched::unpark(t as *const Thread as *mut Thread) };
        }
    });
    beat("all threads growing at once");
    let mut last = (usize::MAX, 0u64);
    let mut stable_since = now_ms();
    let end = now_ms() + 40_000;
    loop {
        let grown = count(sh, n, GROWN);
        let dead = n - sched::workload_threads().min(n);
        let key = (grown, dead as u64);
        if key != last {
            last = key;
            stable_since = now_ms();
        }
        if grown + dead == n || now_ms() > stable_since + 1500 {
            break;
        }
        check!(now_ms() < end, "growth never settled");
        nap(20, "all threads growing at once");
    }
    let exhausted = Snap::take();
    let grown = count(sh, n, GROWN);
    let alive = sched::workload_threads();
    // Alive and not grown: waiting for memory (to be switched in, or inside the growth).
    let waiting = alive.saturating_sub(grown);
    let oom = exhausted.oom_kills - base.oom_kills;
    let shortages = exhausted.shortages - base.shortages;
    dynstack::println!(
        "  after growth: {} grown, {} waiting, {} alive, {} OOM-killed, {} shortages, free {} KiB",
        grown,
        waiting,
        alive,
        oom,
        shortages,
        exhausted.free * 4
    );
    check!(
        exhausted.overflows == base.overflows,
        "{} overflows while growing within the reservation",
        exhausted.overflows - base.overflows
    );
    check!(
        (n - alive) as u64 == oom,
        "{} threads are gone but only {} OOM kills were counted: growth failed silently",
        n - alive,
        oom
    );
    check!(
        grown + waiting + (n - alive) >= n,
        "threads unaccounted for: {} grown, {} waiting, {} dead of {}",
        grown,
        waiting,
        n - alive,
        n
    );
    check!(
        grown < n,
        "all {} threads grew: memory never ran out, the case means nothing",
        n
    );
    check!(
        waiting == 0 || shortages > 0,
        "{} threads wait for memory but no shortage was counted",
        waiting
    );

    // Phase 5: memory comes back (a few grown threads are killed), and threads that waited go on.
    if waiting > 0 {
        // Filled without allocating: free memory is 0 here (the Vec was made up front).
        victims.extend(
            (0..n)
                .filter(|&i| sh.state[i].load(Ordering::SeqCst) == GROWN)
                .take(16)
                .map(|i| tids[i]),
        );
        check!(!victims.is_empty(), "no grown thread to free memory with");
        for tid in &victims {
            beat("killing a few grown threads (waits for the reaper to free them)");
            sched::kill(*tid).map_err(|e| format!("kill {}: {}", tid, e))?;
        }
        let end = now_ms() + 20_000;
        while count(sh, n, GROWN) <= grown - victims.len() {
            check!(
                now_ms() < end,
                "memory came back ({} threads killed) but no waiting thread went on",
                victims.len()
            );
            nap(10, "waiting for threads that waited for memory to go on");
        }
    }

    // Phase 6: kill them all; every frame comes back.
    beat("killing all threads");
    let killed = sched::kill_all(&mut |done, total| {
        beat("killing all threads");
        dynstack::println!("  killing: {} of {}", done, total);
    });
    beat("waiting for the reaper to free every stack");
    let end = now_ms() + 10_000;
    loop {
        let s = Snap::take();
        if s.stacks == s.threads as u64 && s.threads == base.threads {
            break;
        }
        check!(
            now_ms() < end,
            "after kill all: {} threads, {} stacks, {} before",
            s.threads,
            s.stacks,
            base.threads
        );
        nap(10, "waiting for the reaper to free every stack");
    }
    // The reaper may still hold the frames of stacks it has unmapped (it frees them in
    // batches): give it a moment before calling anything lost.
    let end = now_ms() + 10_000;
    let mut back = Snap::take();
    while back.accounted() != base.accounted() && now_ms() < end {
        nap(10, "waiting for the reaper to give the frames back");
        back = Snap::take();
    }
    dynstack::println!(
        "  killed {}; free {} KiB (was {} KiB; heap grew {} KiB, tables {} KiB)",
        killed,
        back.free * 4,
        base.free * 4,
        (back.heap_pages - base.heap_pages) * 4,
        (back.tables - base.tables) * 4
    );
    check!(
        back.accounted() == base.accounted(),
        "frames not conserved: before {:?}, after {:?} (difference {})",
        base,
        back,
        back.accounted() as i64 - base.accounted() as i64
    );

    // Phase 7: the kernel works normally again: a new thread grows to the maximum.
    let ok = alloc::sync::Arc::new(AtomicU64::new(u64::MAX));
    let ok2 = ok.clone();
    let h = sched::spawn_with("after", StackPolicy::Dynamic, move || {
        // SAFETY: the running thread's control block.
        let top = unsafe { (*sched::current_ptr()).stack.top() };
        let bad = dive(top - stack::config().max as u64 + 3 * 1024, &mut || {});
        ok2.store(bad, Ordering::SeqCst);
    })
    .map_err(|e| format!("spawning after recovery failed: {}", e))?;
    h.join();
    check!(
        ok.load(Ordering::SeqCst) == 0,
        "a thread could not grow after recovery"
    );
    for (pa, count) in ballast {
        frame::free(pa, count);
    }
    Ok(())
}
