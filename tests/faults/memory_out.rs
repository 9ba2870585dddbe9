//! `init="memory-out; CMD; ...; memory-back; CMD; ..."`: memory run out by construction, then
//! the commands a user reaches, then memory given back and the kernel still working.
//!
//! `memory-out` takes every free frame (ballast), every free object of the join states'
//! slab cache and every free block of the heap, down to 16 bytes, so that any allocation
//! the kernel makes from here on fails. It then spawns closures three ways, each of which
//! must fail with `SpawnError::OutOfMemory`, drop the closure exactly once and leave every
//! counter (free frames, heap bytes, join states, threads) as it was: with no join state to
//! be had; with one join state free but no heap block for a closure too large for the stack;
//! and with a join state but no frame for the stack. Each prints a `faults: spawn ...` line.
//! The commands up to `memory-back` then run through the real shell and backend (each must
//! print its `error: out of memory ...` or its summary and return); `memory-back` gives all
//! the memory back, checks that free memory is back at its baseline and that closures spawn
//! and run again; the commands after it run with memory back. A failed check prints
//! `faults: memory-out FAILED: ...` and exits 1; the end prints `faults: memory-out done` and
//! exits 0. Judged by the shell case `memory-out-commands-and-closures` (tests/qemu.toml).
use super::*;

use core::alloc::Layout;
use core::sync::atomic::AtomicUsize;

use dynstack::sched::{Join, JoinState, SpawnError};

/// Heap blocks held while memory is out, linked through their first word (the second holds
/// the block's size), so holding them needs no memory.
struct HeapFill {
    head: *mut usize,
    bytes: u64,
}

/// Block sizes the heap is filled with, largest first: down to the smallest block it has.
const FILL_SIZES: [usize; 6] = [1 << 16, 1 << 12, 1 << 9, 1 << 7, 32, 16];

fn fill_layout(size: usize) -> Layout {
    match Layout::from_size_align(size, 16) {
        Ok(l) => l,
        Err(_) => panic!("a fill block's layout"),
    }
}

impl HeapFill {
    /// Takes heap blocks until the heap has none left of any size (frames are out already,
    /// so it cannot grow).
    fn take_all() -> Self {
        let mut fill = HeapFill {
            head: core::ptr::null_mut(),
            bytes: 0,
        };
        for size in FILL_SIZES {
            loop {
                // SAFETY: the layout's size is not zero.
                let p = unsafe { alloc::alloc::alloc(fill_layout(size)) } as *mut usize;
                if p.is_null() {
                    break;
                }
                // SAFETY: a fresh block of at least 16 bytes, aligned to 16: two words.
                unsafe {
                    p.write(fill.head as usize);
                    p.add(1).write(size);
                }
                fill.head = p;
                fill.bytes += size as u64;
            }
        }
        fill
    }

    fn release(self) {
        let mut p = self.head;
        while !p.is_null() {
            // SAFETY: a block this fill took; its first words are the link and its size.
            let (next, size) = unsafe { (p.read() as *mut usize, p.add(1).read()) };
            // SAFETY: allocated above with this layout, freed once.
            unsafe { alloc::alloc::dealloc(p as *mut u8, fill_layout(size)) };
            p = next;
        }
    }
}

/// Closures dropped (they count themselves), and closures that ran.
static DROPPED: AtomicUsize = AtomicUsize::new(0);
static RAN: AtomicUsize = AtomicUsize::new(0);

/// Captured by every closure spawned here: counts the closure's drop.
struct CountsDrop;

impl Drop for CountsDrop {
    fn drop(&mut self) {
        DROPPED.fetch_add(1, Ordering::SeqCst);
    }
}

/// What spawning must leave unchanged when it fails.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Counters {
    free_pages: u64,
    heap_bytes: u64,
    join_states: u64,
    threads: usize,
}

fn counters() -> Counters {
    Counters {
        free_pages: frame::free_pages(),
        heap_bytes: heap::allocated_bytes(),
        join_states: sched::join_cache_stats().objects,
        threads: sched::thread_count(),
    }
}

fn small_closure() -> impl FnOnce() + Send + 'static {
    let c = CountsDrop;
    move || {
        let _c = c;
        RAN.fetch_add(1, Ordering::SeqCst);
    }
}

fn large_closure() -> impl FnOnce() + Send + 'static {
    let c = CountsDrop;
    // More than the 256 bytes that travel on the new thread's stack: the closure is boxed.
    let payload = [7u8; 1024];
    move || {
        let _c = c;
        if core::hint::black_box(&payload).iter().all(|&b| b == 7) {
            RAN.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Spawns `f`, which must fail with OutOfMemory, drop `f` once and change no counter. A
/// failure is reported without allocating (memory is out) and ends the boot.
fn spawn_must_fail(what: &str, f: impl FnOnce() + Send + 'static) {
    let before = counters();
    let dropped = DROPPED.load(Ordering::SeqCst);
    let r = sched::spawn_with("memout", StackPolicy::Dynamic, f);
    let after = counters();
    match r {
        Err(SpawnError::OutOfMemory) => {}
        Err(e) => fail(format_args!("spawn {what}: {e}, not out of memory")),
        Ok(h) => {
            h.join();
            fail(format_args!("spawn {what} succeeded with memory out"));
        }
    }
    if after != before {
        fail(format_args!(
            "spawn {what} failed but leaked: {before:?} before, {after:?} after"
        ));
    }
    let drops = DROPPED.load(Ordering::SeqCst) - dropped;
    if drops != 1 {
        fail(format_args!(
            "spawn {what} dropped its closure {drops} times"
        ));
    }
    dynstack::println!("faults: spawn {what}: out of memory, closure dropped once, nothing leaked");
}

/// Spawns `f`, which must run and be dropped once.
fn spawn_must_run(what: &str, f: impl FnOnce() + Send + 'static) {
    let (ran, dropped) = (RAN.load(Ordering::SeqCst), DROPPED.load(Ordering::SeqCst));
    match sched::spawn_with("memback", StackPolicy::Dynamic, f) {
        Ok(h) => h.join(),
        Err(e) => fail(format_args!("spawn {what} with memory back: {e}")),
    }
    if RAN.load(Ordering::SeqCst) != ran + 1 || DROPPED.load(Ordering::SeqCst) != dropped + 1 {
        fail(format_args!(
            "spawn {what} with memory back: it did not run once"
        ));
    }
    dynstack::println!("faults: spawn {what} with memory back: ran once");
}

/// Reports a failed check (printed straight to the console: no allocation) and ends the boot.
fn fail(why: core::fmt::Arguments<'_>) -> ! {
    dynstack::println!("faults: memory-out FAILED: {}", why);
    semihosting::process::exit(1)
}

/// Runs one shell command as `init=` does: echoed after the prompt, through the real
/// backend.
fn shell_command(cmd: &str) {
    let mut backend = dynstack::shell::backend::KernelBackend;
    let mut out = dynstack::kernel::console::Console;
    dynstack::println!("{}{}", dynstack::shell::PROMPT, cmd);
    dynstack::shell::execute(&mut backend, cmd, &mut out);
}

/// The mode: see the module doc.
pub(crate) fn run(init: &str) -> ! {
    let commands: Vec<&str> = dynstack::cmdline::split_commands(init).collect();
    let Some(start) = commands.iter().position(|c| *c == "memory-out") else {
        fail(format_args!("no memory-out in init="));
    };
    let back = commands
        .iter()
        .position(|c| *c == "memory-back")
        .unwrap_or(commands.len());
    // Settle the boot's own threads first: the baseline is a quiet machine.
    sched::sleep_ms(100);
    let baseline = counters();
    // Room for the join states taken, reserved while memory is there.
    let mut joins: Vec<Join> = Vec::with_capacity(8192);
    let ballast = Ballast::take_all_but(0);
    while joins.len() < joins.capacity() {
        match Join::try_new(JoinState::new()) {
            Ok(j) => joins.push(j),
            Err(_) => break,
        }
    }
    if joins.len() == joins.capacity() {
        fail(format_args!("the join states' cache never ran out"));
    }
    let fill = HeapFill::take_all();
    dynstack::println!(
        "faults: memory out: {} frames free, {} taken, {} join states and {} KiB of heap blocks taken",
        frame::free_pages(),
        ballast.pages,
        joins.len(),
        fill.bytes / 1024
    );
    spawn_must_fail("of a small closure with no join state", small_closure());
    spawn_must_fail("of a large closure with no join state", large_closure());
    // One join state to be had: the next failures come further on.
    drop(joins.pop());
    spawn_must_fail(
        "of a large closure with no heap block for its box",
        large_closure(),
    );
    spawn_must_fail(
        "of a small closure with no frame for its stack",
        small_closure(),
    );
    for cmd in &commands[start + 1..back] {
        shell_command(cmd);
    }
    fill.release();
    drop(joins);
    drop(ballast);
    // The reaper gives back what the commands' threads held.
    sched::sleep_ms(100);
    let now = counters();
    dynstack::println!(
        "faults: memory back: {} frames free ({} at the start), {} heap bytes ({}), {} join states ({})",
        now.free_pages,
        baseline.free_pages,
        now.heap_bytes,
        baseline.heap_bytes,
        now.join_states,
        baseline.join_states
    );
    // Slabs and heap chunks kept as spares may hold a few pages more than at the start.
    if now.free_pages + 64 < baseline.free_pages || now.join_states != baseline.join_states {
        fail(format_args!("memory did not come back"));
    }
    spawn_must_run("of a small closure", small_closure());
    spawn_must_run("of a large closure", large_closure());
    for cmd in commands.iter().skip(back + 1) {
        shell_command(cmd);
    }
    dynstack::println!("faults: memory-out done");
    semihosting::process::exit(0)
}
