//! Parked stacks (issue 15), booted with `kstack.park_after=0` so that every sleep of a
//! parkable thread is parked as soon as the parker gets to it.
//!
//! Every case makes its events happen by construction: a thread is woken only once the
//! controller has seen its stack parked, memory runs out because the case takes it, and a
//! waiting loop waits for a state, never for a time (its deadline only turns a hang into a
//! failure).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use dynstack::arch::timer;
use dynstack::check;
use dynstack::cmdline::StackPolicy;
use dynstack::mm::frame;
use dynstack::sched::{self, ThreadKind, ThreadState};
use dynstack::stack;
use dynstack::test_cases;
use dynstack::testing::{run, MemorySnapshot, TestResult};

dynstack::kernel_main!(main);

fn main() {
    run(test_cases![
        parking_is_on,
        byte_for_byte,
        kill_and_exit_free_blocks,
        kill_waits_for_a_park_in_progress,
        too_deep_is_trimmed_instead,
        touch_of_parked_stack,
        exhaustion_while_parked_threads_wake,
        hundred_thousand_idle,
    ])
}

/// Waits (yielding) until `cond` holds; false after `ms` of virtual time, and never less than
/// 60 s (a hang guard: a passing case never reaches it, a loaded host must not either).
fn wait_for(ms: u64, mut cond: impl FnMut() -> bool) -> bool {
    let until = timer::now() + timer::ns_to_ticks(ms.max(60_000) * 1_000_000);
    while !cond() {
        if timer::now() > until {
            return false;
        }
        sched::yield_now();
    }
    true
}

/// Whether thread `tid` is blocked with its stack parked.
fn is_parked(tid: u64) -> bool {
    sched::with_thread(tid, |t| {
        // SAFETY: alive under the table lock.
        let t = unsafe { &*t };
        t.state() == ThreadState::Blocked && t.stack.is_parked()
    })
    .unwrap_or(false)
}

/// Wakes thread `tid` from `park`.
fn wake(tid: u64) {
    // SAFETY: alive under the table lock.
    sched::with_thread(tid, |t| unsafe { sched::unpark(t) });
}

fn spawn_workload(
    name: &str,
    entry: sched::Entry,
    arg: usize,
) -> Result<u64, alloc::string::String> {
    sched::spawn_raw(
        name,
        ThreadKind::Workload,
        StackPolicy::Dynamic,
        entry,
        arg,
        None,
    )
    .map_err(|e| format!("spawn {}: {}", name, e))
}

fn parking_is_on() -> TestResult {
    check!(
        stack::config().park_after_ms == Some(0),
        "booted without kstack.park_after=0: {:?}",
        stack::config().park_after_ms
    );
    Ok(())
}

/// Recurses until SP is at or below `until`, filling each frame with a pattern made of its
/// address and `salt`, calls `at_bottom`, then checks every frame on the way back up.
/// Returns the number of words found changed.
#[inline(never)]
fn recurse(until: u64, salt: u64, at_bottom: &mut dyn FnMut()) -> u64 {
    let mut frame = [0u64; 12];
    let me = dynstack::arch::stack_pointer();
    for (i, w) in frame.iter_mut().enumerate() {
        *w = me.rotate_left(i as u32) ^ salt;
    }
    core::hint::black_box(&mut frame);
    let below = if me > until {
        recurse(until, salt, at_bottom)
    } else {
        at_bottom();
        0
    };
    let mut bad = below;
    for (i, w) in core::hint::black_box(&frame).iter().enumerate() {
        if *w != me.rotate_left(i as u32) ^ salt {
            bad += 1;
        }
    }
    bad
}

const ROUND_THREADS: usize = 8;
const ROUNDS: u32 = 24;
/// Round each thread has reached (it blocks once per round).
static ROUND: [AtomicU32; ROUND_THREADS] = [const { AtomicU32::new(0) }; ROUND_THREADS];
static BAD_WORDS: AtomicU64 = AtomicU64::new(0);

fn rounds_thread(index: usize) {
    let top = {
        // SAFETY: the running thread's control block.
        unsafe { (*sched::current_ptr()).stack.top() }
    };
    for round in 0..ROUNDS {
        // Depths from 64 bytes to 1.5 KiB: every one fits a parking class.
        let depth = 64 + ((index as u64 * 389 + round as u64 * 173) % 1400);
        let salt = (index as u64) << 32 | round as u64;
        let bad = recurse(top - depth, salt, &mut || {
            ROUND[index].store(round + 1, Ordering::SeqCst);
            sched::park();
        });
        BAD_WORDS.fetch_add(bad, Ordering::SeqCst);
    }
}

/// Eight threads at different depths block 24 times each; every time the controller waits
/// until the stack is parked before it wakes the thread, which then checks every frame.
fn byte_for_byte() -> TestResult {
    let base = stack::stats().park;
    let mut tids = Vec::new();
    for i in 0..ROUND_THREADS {
        tids.push(spawn_workload("rounds", rounds_thread, i)?);
    }
    for round in 1..=ROUNDS {
        for (i, &tid) in tids.iter().enumerate() {
            check!(
                wait_for(20_000, || ROUND[i].load(Ordering::SeqCst) == round
                    && is_parked(tid)),
                "thread {} never parked in round {} (round {}, stats {:?})",
                i,
                round,
                ROUND[i].load(Ordering::SeqCst),
                stack::stats().park
            );
            wake(tid);
        }
    }
    check!(
        wait_for(20_000, || tids.iter().all(|&t| sched::with_thread(
            t,
            |_| ()
        )
        .is_none())),
        "the threads did not exit"
    );
    let after = stack::stats().park;
    check!(
        BAD_WORDS.load(Ordering::SeqCst) == 0,
        "{} stack words changed across park and wake",
        BAD_WORDS.load(Ordering::SeqCst)
    );
    let n = (ROUND_THREADS as u64) * ROUNDS as u64;
    check!(
        after.parks - base.parks >= n,
        "{} parks for {} sleeps",
        after.parks - base.parks,
        n
    );
    check!(
        after.restores - base.restores >= n,
        "{} restores",
        after.restores - base.restores
    );
    check!(after.parked == base.parked, "{} parked left", after.parked);
    check!(
        after.parked_bytes == base.parked_bytes,
        "{} parked bytes left",
        after.parked_bytes
    );
    Ok(())
}

static EXIT_NOW: AtomicBool = AtomicBool::new(false);

fn blocker(_: usize) {
    let mut witness = [0x5a5a_0000_u64; 8];
    core::hint::black_box(&mut witness);
    while !EXIT_NOW.load(Ordering::SeqCst) && !sched::kill_requested() {
        sched::park();
    }
}

/// Parked threads that are killed, and parked threads that wake and exit, give their blocks
/// back; so do the frames (every frame is accounted for before and after).
fn kill_and_exit_free_blocks() -> TestResult {
    let base = stack::stats();
    let snap = MemorySnapshot::take();
    let mut tids = Vec::new();
    for i in 0..16 {
        tids.push(spawn_workload("blocker", blocker, i)?);
    }
    check!(
        wait_for(20_000, || tids.iter().all(|&t| is_parked(t))),
        "not all parked: {:?}",
        stack::stats().park
    );
    let parked = stack::stats();
    check!(
        parked.park.parked == base.park.parked + 16,
        "{:?}",
        parked.park
    );
    check!(
        parked.park.parked_bytes == base.park.parked_bytes + 16 * 128,
        "an idle blocker takes a 128-byte block: {:?}",
        parked.park
    );
    check!(
        parked.mapped_pages == base.mapped_pages,
        "parked stacks still map pages"
    );
    for &tid in &tids[..8] {
        check!(sched::kill(tid) == Ok(1), "kill {}", tid);
    }
    let s = stack::stats();
    check!(
        s.park.parked == base.park.parked + 8,
        "killed: {:?}",
        s.park
    );
    check!(
        s.park.parked_bytes == base.park.parked_bytes + 8 * 128,
        "{:?}",
        s.park
    );
    EXIT_NOW.store(true, Ordering::SeqCst);
    for &tid in &tids[8..] {
        wake(tid);
    }
    check!(
        wait_for(20_000, || stack::stats().stacks == base.stacks),
        "the exiting threads did not go"
    );
    EXIT_NOW.store(false, Ordering::SeqCst);
    let s = stack::stats();
    check!(s.park.parked == base.park.parked, "{:?}", s.park);
    check!(
        s.park.parked_bytes == base.park.parked_bytes,
        "{:?}",
        s.park
    );
    check!(s.park.restores >= base.park.restores + 8, "{:?}", s.park);
    check!(s.mapped_pages == base.mapped_pages, "pages left mapped");
    // Other CPUs may be refilling their reserves (frames taken, not yet counted) at any
    // instant: the count must come back, not be right at one instant.
    check!(
        wait_for(20_000, || MemorySnapshot::take().accounted()
            == snap.accounted()),
        "frames accounted for: {} before, {} after",
        snap.accounted(),
        MemorySnapshot::take().accounted()
    );
    Ok(())
}

static HELD_GO: AtomicBool = AtomicBool::new(false);

fn held_blocker(_: usize) {
    while !HELD_GO.load(Ordering::SeqCst) {
        sched::yield_now();
    }
    blocker(0);
}

/// A thread killed while a park batch holds its stack's claim is freed only once the batch
/// is done. The hook holds the batch that claimed it (claims taken, nothing parked yet); the
/// kill retires the blocked thread and the reaper takes it out of the table, and must then
/// wait for the claim in the control block. Before the fix it took a bitwise copy of the
/// control block first and waited for the claim of the copy, which says "parking" forever:
/// the kill never returned (with a claim still free in the copy, it would have freed the
/// stack under the parker).
fn kill_waits_for_a_park_in_progress() -> TestResult {
    let base = stack::stats();
    let snap = MemorySnapshot::take();
    HELD_GO.store(false, Ordering::SeqCst);
    let tid = spawn_workload("held", held_blocker, 0)?;
    // SAFETY: alive under the table lock.
    let slot =
        sched::with_thread(tid, |t| unsafe { (*t).stack.slot() }).ok_or("the thread vanished")?;
    dynstack::test_hooks::hold_park_batch_of(slot);
    HELD_GO.store(true, Ordering::SeqCst);
    let held = wait_for(60_000, dynstack::test_hooks::park_batch_held);
    let killer = sched::spawn("killer", move || {
        let _ = sched::kill(tid);
    })
    .map_err(|e| format!("spawn: {}", e))?;
    // The reaper takes it out of the table before it waits for the claim.
    let left_table = held && wait_for(60_000, || sched::with_thread(tid, |_| ()).is_none());
    let kill_waited = !killer.is_finished();
    dynstack::test_hooks::release_park_batch();
    let returned = wait_for(60_000, || killer.is_finished());
    if !returned {
        // Said now: the reaper is stuck, so this case's own thread is never reaped and the
        // harness never gets to print its result.
        dynstack::println!(
            "  kill_waits_for_a_park_in_progress: the kill never returned (the reaper waits \
             for a claim that nobody will release)"
        );
    }
    check!(held, "no park batch claimed the thread's stack");
    check!(left_table, "the killed thread never left the table");
    check!(
        kill_waited,
        "the kill returned while a park batch still held the thread's stack"
    );
    check!(
        returned,
        "the kill never returned once the park batch let go: the reaper waits for a claim \
         that nobody will release"
    );
    killer.join();
    let s = stack::stats();
    check!(s.park.parked == base.park.parked, "{:?}", s.park);
    check!(
        s.park.parked_bytes == base.park.parked_bytes,
        "{:?}",
        s.park
    );
    check!(
        s.stacks == base.stacks,
        "{} stacks, {} before",
        s.stacks,
        base.stacks
    );
    check!(
        wait_for(20_000, || MemorySnapshot::take().accounted()
            == snap.accounted()),
        "frames accounted for: {} before, {} after",
        snap.accounted(),
        MemorySnapshot::take().accounted()
    );
    Ok(())
}

fn deep_blocker(_: usize) {
    let top = {
        // SAFETY: the running thread's control block.
        unsafe { (*sched::current_ptr()).stack.top() }
    };
    let bad = recurse(top - 6 * 1024, 77, &mut || {
        while !sched::kill_requested() && !EXIT_NOW.load(Ordering::SeqCst) {
            sched::park();
        }
    });
    BAD_WORDS.fetch_add(bad, Ordering::SeqCst);
}

/// A thread asleep 6 KiB deep has more live bytes than the largest class: it is trimmed
/// instead, keeps the pages it uses, and its frames survive.
fn too_deep_is_trimmed_instead() -> TestResult {
    let base = stack::stats().park;
    let bad_before = BAD_WORDS.load(Ordering::SeqCst);
    let tid = spawn_workload("deep", deep_blocker, 0)?;
    check!(
        wait_for(20_000, || stack::stats().park.trimmed_instead
            > base.trimmed_instead),
        "the parker never looked at the deep thread"
    );
    check!(!is_parked(tid), "a 6 KiB live part was parked");
    // SAFETY: `with_thread` holds the thread table lock, which keeps the block alive.
    let mapped = sched::with_thread(tid, |t| unsafe { (*t).stack.mapped_bytes() }).unwrap_or(0);
    check!(mapped >= 6 * 1024, "only {} bytes left mapped", mapped);
    EXIT_NOW.store(true, Ordering::SeqCst);
    wake(tid);
    check!(
        wait_for(20_000, || sched::with_thread(tid, |_| ()).is_none()),
        "the deep thread did not exit"
    );
    EXIT_NOW.store(false, Ordering::SeqCst);
    check!(
        BAD_WORDS.load(Ordering::SeqCst) == bad_before,
        "frames changed"
    );
    Ok(())
}

static SECRET_ADDR: AtomicU64 = AtomicU64::new(0);
static SECRET_OK: AtomicU32 = AtomicU32::new(0);

fn secret_keeper(_: usize) {
    let mut secret = [0xC0FF_EE00_u64; 4];
    for (i, w) in secret.iter_mut().enumerate() {
        *w += i as u64;
    }
    core::hint::black_box(&mut secret);
    SECRET_ADDR.store(secret.as_ptr() as u64, Ordering::SeqCst);
    while !EXIT_NOW.load(Ordering::SeqCst) && !sched::kill_requested() {
        sched::park();
    }
    let ok = core::hint::black_box(&secret)
        .iter()
        .enumerate()
        .all(|(i, &w)| w == 0xC0FF_EE00 + i as u64);
    SECRET_OK.store(if ok { 1 } else { 2 }, Ordering::SeqCst);
}

/// Another thread reading a parked stack gets a clear report naming the parked thread and is
/// ended; the parked thread is untouched and comes back intact.
fn touch_of_parked_stack() -> TestResult {
    let tid = spawn_workload("keeper", secret_keeper, 0)?;
    check!(
        wait_for(20_000, || SECRET_ADDR.load(Ordering::SeqCst) != 0
            && is_parked(tid)),
        "the keeper never parked"
    );
    let addr = SECRET_ADDR.load(Ordering::SeqCst);
    let reader = sched::spawn("toucher", move || {
        // SAFETY: deliberately not safe: the parked stack of another thread.
        let v = unsafe { core::ptr::read_volatile(addr as *const u64) };
        core::hint::black_box(v);
    })
    .map_err(|e| format!("toucher: {}", e))?;
    let reader_tid = reader.tid();
    reader.join();
    let (fault_tid, _, far) = dynstack::kernel::exception::last_fault();
    check!(
        fault_tid == reader_tid,
        "last fault ended {} (the toucher is {})",
        fault_tid,
        reader_tid
    );
    check!(
        far == addr,
        "fault at {:#x}, the secret is at {:#x}",
        far,
        addr
    );
    check!(
        is_parked(tid),
        "the keeper's stack was unparked by the touch"
    );
    EXIT_NOW.store(true, Ordering::SeqCst);
    wake(tid);
    check!(
        wait_for(20_000, || SECRET_OK.load(Ordering::SeqCst) != 0),
        "the keeper did not finish"
    );
    EXIT_NOW.store(false, Ordering::SeqCst);
    check!(
        SECRET_OK.load(Ordering::SeqCst) == 1,
        "the keeper's secret changed"
    );
    Ok(())
}

const EXHAUST_THREADS: usize = 8;
static WOKE: [AtomicU32; EXHAUST_THREADS] = [const { AtomicU32::new(0) }; EXHAUST_THREADS];

fn exhaust_sleeper(index: usize) {
    let top = {
        // SAFETY: the running thread's control block.
        unsafe { (*sched::current_ptr()).stack.top() }
    };
    let bad = recurse(
        top - 512 - 64 * index as u64,
        99 + index as u64,
        &mut || {
            ROUND[index].store(1000, Ordering::SeqCst);
            sched::park();
            WOKE[index].store(1, Ordering::SeqCst);
            // Runnable from now on, so that it keeps its page: parked again, it would give
            // back a frame that lets another parked thread be restored before memory is back.
            while !sched::kill_requested() && !EXIT_NOW.load(Ordering::SeqCst) {
                sched::yield_now();
            }
        },
    );
    BAD_WORDS.fetch_add(bad, Ordering::SeqCst);
    WOKE[index].store(2, Ordering::SeqCst);
}

/// Parked threads woken while no page is free wait (counted), never panic, and all come
/// back intact once memory is given back. The controller has a fixed stack: under
/// exhaustion only a thread that needs no page to be switched in can be sure to run.
fn exhaustion_while_parked_threads_wake() -> TestResult {
    let slot = Arc::new(dynstack::sync::IrqMutex::new(None));
    let s2 = slot.clone();
    let h = sched::spawn_with("controller", StackPolicy::Fixed, move || {
        *s2.lock() = Some(exhaustion_controller());
    })
    .map_err(|e| format!("controller: {}", e))?;
    h.join();
    let r = slot.lock().take();
    r.unwrap_or_else(|| Err("the controller died".into()))
}

fn exhaustion_controller() -> TestResult {
    let bad_before = BAD_WORDS.load(Ordering::SeqCst);
    for r in &ROUND {
        r.store(0, Ordering::SeqCst);
    }
    let mut tids = Vec::new();
    for i in 0..EXHAUST_THREADS {
        tids.push(spawn_workload("exhaust", exhaust_sleeper, i)?);
    }
    check!(
        wait_for(20_000, || tids.iter().all(|&t| is_parked(t))),
        "not all parked"
    );
    let base = stack::stats();
    // Take every free frame.
    let mut chunks: Vec<u64> = Vec::with_capacity(frame::free_pages() as usize + 1024);
    while chunks.len() < chunks.capacity() {
        match frame::alloc(1) {
            Some(pa) => chunks.push(pa),
            None => break,
        }
    }
    let taken = chunks.len();
    for &tid in &tids {
        wake(tid);
    }
    // At most one per CPU can be restored from what its reserve still holds; the others
    // wait, and every failed switch-in of a parked thread is counted.
    let waited = wait_for(20_000, || stack::stats().park.waits > base.park.waits);
    let woke_early = WOKE
        .iter()
        .filter(|w| w.load(Ordering::SeqCst) != 0)
        .count();
    for pa in chunks.drain(..) {
        frame::free(pa, 1);
    }
    check!(taken > 0, "took no frames");
    check!(
        waited,
        "no parked thread waited for memory: {:?}",
        stack::stats().park
    );
    check!(
        woke_early < EXHAUST_THREADS,
        "all {} parked threads were restored without memory",
        woke_early
    );
    check!(
        wait_for(20_000, || WOKE
            .iter()
            .all(|w| w.load(Ordering::SeqCst) != 0)),
        "not every thread came back once memory was free: {:?}",
        stack::stats().park
    );
    EXIT_NOW.store(true, Ordering::SeqCst);
    for &tid in &tids {
        wake(tid);
    }
    check!(
        wait_for(20_000, || WOKE
            .iter()
            .all(|w| w.load(Ordering::SeqCst) == 2)),
        "the threads did not finish"
    );
    EXIT_NOW.store(false, Ordering::SeqCst);
    check!(
        BAD_WORDS.load(Ordering::SeqCst) == bad_before,
        "frames changed"
    );
    let s = stack::stats();
    check!(s.oom_kills == base.oom_kills, "OOM kills");
    dynstack::println!(
        "park: exhaustion: {} frames taken, {} of {} restored before memory came back, {} waits",
        taken,
        woke_early,
        EXHAUST_THREADS,
        s.park.waits - base.park.waits
    );
    Ok(())
}

/// The million-thread case at 100,000: every idle thread parked after a trim costs at most
/// 1 KiB in all (frames taken from the allocator, heap growth included), stacks save at
/// least 95% against fully mapped ones, and `kill all` gives every stack frame back.
fn hundred_thousand_idle() -> TestResult {
    const N: usize = 100_000;
    let before = MemorySnapshot::take();
    let base = stack::stats();
    let (entry, _) =
        dynstack::shell::workload::entry_for(&dynstack::shell::command::Profile::Idle, 0);
    for i in 0..N {
        check!(
            sched::spawn_raw(
                "idle",
                ThreadKind::Workload,
                StackPolicy::Dynamic,
                entry,
                i,
                None
            )
            .is_ok(),
            "spawn {} of {} failed",
            i,
            N
        );
    }
    check!(wait_for(60_000, || sched::unsettled() == 0), "not settled");
    stack::trim_all();
    let after = MemorySnapshot::take();
    let s = stack::stats();
    let used_kib = (before.free - after.free) * 4;
    let parked = s.park.parked - base.park.parked;
    let held_kib = (s.mapped_pages - base.mapped_pages) * 4
        + (s.park.parked_bytes - base.park.parked_bytes).div_ceil(1024);
    let fixed_kib = N as u64 * stack::config().max as u64 / 1024;
    let saved_tenths = 1000 - held_kib * 1000 / fixed_kib;
    dynstack::println!(
        "park: {} idle threads: {} parked, memory used grew by {} KiB ({} B per thread), stacks hold {} KiB, {}.{}% saved",
        N,
        parked,
        used_kib,
        used_kib * 1024 / N as u64,
        held_kib,
        saved_tenths / 10,
        saved_tenths % 10
    );
    check!(parked == N as u64, "{} of {} parked", parked, N);
    check!(
        used_kib <= N as u64,
        "{} KiB for {} threads: more than 1 KiB each",
        used_kib,
        N
    );
    check!(
        saved_tenths >= 950,
        "only {}.{}% saved",
        saved_tenths / 10,
        saved_tenths % 10
    );
    let killed = sched::kill_all(&mut |_, _| {});
    check!(killed == N as u64, "killed {}", killed);
    let end = MemorySnapshot::take();
    let s = stack::stats();
    check!(
        s.park.parked == base.park.parked,
        "{} parked after kill all",
        s.park.parked
    );
    check!(
        s.mapped_pages == base.mapped_pages,
        "stack pages left mapped"
    );
    check!(
        wait_for(20_000, || MemorySnapshot::take().accounted()
            == before.accounted()),
        "frames accounted for: {} before, {} after",
        before.accounted(),
        end.accounted()
    );
    Ok(())
}
