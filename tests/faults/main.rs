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
//!   always works against the same amount. The `own_heap_*` cases: a thread's own heap
//!   around third-party code, out of memory and dying inside it (see `own_heap`).
//! - `init="exhaust"`: a system call recurses on the exception stack until it overflows.
//!   This must end in a `PANIC` report naming the exception stack overflow and a non-zero
//!   exit, not a hang. It ends the kernel, so it is a boot of its own.
//! - `init="panic"`: the main thread panics (a panic in thread context): every CPU stops
//!   and the report ends with a `stopped:` line.
//! - `init="overflow-locked"`: a thread overflows its stack while holding a lock. It cannot
//!   be ended safely, so the kernel must stop with an `OVERFLOW` line and then a `PANIC`
//!   saying so (exit non-zero), rather than end it and deadlock on the lock later.
//! - `init="overflow-in-once"`: the same inside the initializer of a `sync::Once`, which
//!   counts as a lock while it runs (the kernel uses no uncounted spin lock or `Once`).
//! - `init="growth-fault"`: the growth path itself faults (through the kernel's test hook
//!   `stack::inject_fault_in_growth_path`): a `PANIC` naming the exception-stack vector, exit
//!   non-zero, not a hang. The fast path steps aside while that injection is pending, so
//!   this is the slow path (`stack::on_fault`).
//! - `init="fast-path-fault"`: the growth fast path itself faults (its reserve's buffer is
//!   made unmapped through `stack::fast::inject_fault_in_fast_path`): the same report.
//! - `init="alloc-fail"`: [`allocate_impossibly`] asks for 1 TiB through `Vec::with_capacity`,
//!   which panics when the allocator fails: the `PANIC` line must name the size and this
//!   function as the caller (the first frame outside the allocator, `alloc` and the panic),
//!   and the backtrace must name its frames (the kernel's symbol table, filled by the build).
//! - `init="memory-out; CMD; ...; memory-back; CMD; ..."`: frames, join states and heap run
//!   out by construction; spawning closures must fail cleanly and leak nothing, and the shell
//!   commands in between must print `error: out of memory ...` and carry on (see
//!   `memory_out`).
//! - `kstack.strategy=expand init="heap-miss"`: a stack that runs off its mapped part inside
//!   the allocator is a miss that ends the thread, not one under the heap's lock (see
//!   `heap_miss`).
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
use dynstack::sync::IrqMutex;
use dynstack::testing::{run, TestResult};

mod cases;
mod heap_miss;
mod memory_out;
mod own_heap;

use cases::*;

dynstack::kernel_main!(main);

fn main() {
    let init = &dynstack::kernel::boot_info().args.init;
    if init.split(';').any(|c| c.trim() == "exhaust") {
        exhaust_exception_stack();
    }
    if init.split(';').any(|c| c.trim() == "panic") {
        panic!("faults: a panic in thread context, as asked");
    }
    if init.split(';').any(|c| c.trim() == "overflow-locked") {
        overflow_holding_lock();
    }
    if init.split(';').any(|c| c.trim() == "overflow-in-once") {
        overflow_in_once();
    }
    if init.split(';').any(|c| c.trim() == "growth-fault") {
        fault_in_growth_path();
    }
    if init.split(';').any(|c| c.trim() == "fast-path-fault") {
        fault_in_fast_path();
    }
    if init.split(';').any(|c| c.trim() == "alloc-fail") {
        allocate_impossibly();
    }
    if init.split(';').any(|c| c.trim() == "heap-miss") {
        heap_miss::run();
    }
    if init.split(';').any(|c| c.trim() == "memory-out") {
        memory_out::run(init);
    }
    if let Err(e) = start_watchdog() {
        dynstack::println!("faults: {}", e);
    }
    run(dynstack::test_cases![via fixed_controller;
        reserve_quiet_rule => reserve_quiet_rule,
        trim_when_memory_runs_low => trim_when_memory_runs_low,
        memory_exhaustion => exhaustion_controller,
        reserves_drain => reserves_drain,
        own_heap_serves_the_scope => own_heap::own_heap_serves_the_scope,
        own_heap_refused_when_memory_is_out => own_heap::own_heap_refused_when_memory_is_out,
        own_heap_out_of_memory_ends_only_the_thread => own_heap::own_heap_out_of_memory_ends_only_the_thread,
        own_heap_given_back_when_the_thread_dies => own_heap::own_heap_given_back_when_the_thread_dies,
    ])
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

/// Allocates far more than any machine has, through a path that panics when the allocator
/// fails (`Vec::with_capacity`). Never returns: the kernel must panic with `memory allocation
/// of 1099511627776 bytes failed in faults::allocate_impossibly+0x...`.
#[inline(never)]
fn allocate_impossibly() -> ! {
    dynstack::println!(
        "faults: allocating 1 TiB (expect PANIC ... memory allocation of 1099511627776 bytes failed in faults::allocate_impossibly+0x...)"
    );
    let v: Vec<u8> = Vec::with_capacity(core::hint::black_box(1 << 40));
    core::hint::black_box(&v);
    dynstack::println!("faults: 1 TiB was allocated");
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

static ONCE: dynstack::sync::Once<u64> = dynstack::sync::Once::new();

/// Overflows the stack inside the initializer of a `sync::Once` (the kernel's only kind of
/// one-time initialization, which counts as a lock while it runs): ending the thread would
/// leave the `Once` initializing forever and every later caller spinning, so the kernel must
/// stop with a panic that says it held a lock.
fn overflow_in_once() -> ! {
    dynstack::println!(
        "faults: overflowing inside a Once initializer (expect OVERFLOW, then PANIC ... holding 1 lock)"
    );
    let h = sched::spawn("onceovf", || {
        core::hint::black_box(ONCE.call_once(|| forever(0)));
    });
    if let Ok(h) = h {
        h.join();
    }
    dynstack::println!(
        "faults: the thread that overflowed in a Once initializer was ended and the kernel went on"
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

static SHARED: dynstack::sync::Once<Shared> = dynstack::sync::Once::new();
/// Milliseconds (timer) of the controller's last sign of life, for the watchdog; 0 while no
/// case is being watched.
static HEARTBEAT: AtomicU64 = AtomicU64::new(0);
static PHASE: IrqMutex<&str> = IrqMutex::new("-");
static CASE: IrqMutex<&str> = IrqMutex::new("-");
static PASSED: AtomicU64 = AtomicU64::new(0);
static CONTROLLER_ERROR: IrqMutex<Option<String>> = IrqMutex::new(None);

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
        if last != 0 && now_ms() > last + 60_000 {
            let s = stack::stats();
            let case = *CASE.lock();
            if let Some(e) = CONTROLLER_ERROR.lock().take() {
                dynstack::println!(
                    "TEST {} ... FAILED: {} (and the case could not report it: no progress for 60 s)",
                    case,
                    e
                );
            } else {
                dynstack::println!(
                    "TEST {} ... FAILED: no progress for 60 s while {}: free_pages={} heap_grown_kib={} reserve_pages={} shortages={} oom_kills={} trimmed_kib={} workload_threads={}",
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
