//! Test hooks that make a race happen by construction: each widens one window of the kernel
//! (or moves a thread at one exact point) when a test arms it, so a test kernel can show that
//! the window is closed instead of hoping a schedule finds it. Only in kernels built with the
//! cargo feature `test-hooks` (the test kernels); `scripts/run_tests.py` checks that the
//! production kernel names none of this.
//!
//! - [`arm_migration`]: the next `cpu_index()` that a given thread reads with IRQs unmasked
//!   moves that thread to another CPU right after the read, as a preemption and a steal at
//!   that instruction would. Code that reads the CPU before masking IRQs then uses a stale
//!   index (`mark_settled`, `current_ptr`); code that masks first never triggers it.
//! - [`hold_cpu_going_idle`]: a CPU that has just chosen its idle thread stops right after it
//!   dropped its run-queue lock, until released: whatever another CPU queues for it then must
//!   still kick it.
//! - [`hold_park_batch_of`]: a park batch that holds the claim of a given stack stops before
//!   it parks anything, until released: a kill of that thread meanwhile must wait for it.
//! - [`hold_reaper`]: the reaper leaves dead threads alone (in the table, dead) until
//!   released.
//! - The hand-over probe: every control block handed to the reaper is checked against every
//!   CPU's `CURRENT`; [`handed_while_current`] counts the ones some CPU still named.
//! - [`kicks_sent`]: reschedule kicks sent to each CPU.
//!
//! Owns only its flags and counters. Calls `sched` (the current threads, `pin_current_to`)
//! and `arch` (IRQ masking, the timer for hang guards).
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use crate::percpu::MAX_CPUS;
use crate::sched::Thread;

/// No CPU or slot armed.
const NONE: usize = usize::MAX;

/// A hold never lasts longer than this (a hang guard: a test that passes releases it long
/// before).
const HOLD_LIMIT_NS: u64 = 60_000_000_000;

fn hold_expired(since: u64) -> bool {
    crate::arch::timer::ticks_to_ns(crate::arch::timer::now().saturating_sub(since)) > HOLD_LIMIT_NS
}

// ---------------------------------------------------------------------------------------
// Moving a thread right after it read its CPU index

static MIGRATE_THREAD: AtomicPtr<Thread> = AtomicPtr::new(core::ptr::null_mut());
static MIGRATE_TO: AtomicUsize = AtomicUsize::new(NONE);
static MIGRATIONS: AtomicU64 = AtomicU64::new(0);

/// Arms the migration trap: the next time thread `t` reads `cpu_index()` with IRQs unmasked,
/// it is moved to CPU `to` (and pinned there) right after the read, which then names the CPU
/// it left. One-shot.
pub fn arm_migration(t: *mut Thread, to: usize) {
    MIGRATE_TO.store(to, Ordering::SeqCst);
    MIGRATE_THREAD.store(t, Ordering::SeqCst);
}

/// Disarms the migration trap (if it did not fire).
pub fn disarm_migration() {
    MIGRATE_THREAD.store(core::ptr::null_mut(), Ordering::SeqCst);
}

/// How many times the migration trap fired since boot.
pub fn migrations() -> u64 {
    MIGRATIONS.load(Ordering::SeqCst)
}

/// Called by `cpu_index()` after every read (test kernels only).
#[inline(always)]
pub fn after_cpu_read() {
    if !MIGRATE_THREAD.load(Ordering::Relaxed).is_null() {
        migrate_if_armed();
    }
}

#[inline(never)]
fn migrate_if_armed() {
    use aarch64_cpu::registers::{Readable, DAIF};
    if DAIF.is_set(DAIF::I) {
        // IRQs masked: nothing could move this thread here, so neither does the trap.
        return;
    }
    let daif = crate::arch::irq::save_and_disable();
    let armed = MIGRATE_THREAD.load(Ordering::SeqCst);
    // IRQs are masked now, so the CPU read here is the one this thread runs on.
    let current = crate::sched::CURRENT[crate::percpu::raw_cpu_index()].load(Ordering::Relaxed);
    let fire = !armed.is_null()
        && armed == current
        && MIGRATE_THREAD
            .compare_exchange(
                armed,
                core::ptr::null_mut(),
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok();
    crate::arch::irq::restore(daif);
    if fire {
        MIGRATIONS.fetch_add(1, Ordering::SeqCst);
        crate::sched::pin_current_to(MIGRATE_TO.load(Ordering::SeqCst));
    }
}

// ---------------------------------------------------------------------------------------
// Holding a CPU that is going idle

static IDLE_HOLD_CPU: AtomicUsize = AtomicUsize::new(NONE);
static IDLE_HELD: AtomicBool = AtomicBool::new(false);
static IDLE_RELEASE: AtomicBool = AtomicBool::new(false);
static KICKS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Arms the idle hold: the next time CPU `cpu` switches to its idle thread, it stops right
/// after it dropped its run-queue lock (IRQs masked, nothing held) until [`release_idle`].
pub fn hold_cpu_going_idle(cpu: usize) {
    IDLE_RELEASE.store(false, Ordering::SeqCst);
    IDLE_HELD.store(false, Ordering::SeqCst);
    IDLE_HOLD_CPU.store(cpu, Ordering::SeqCst);
}

/// Whether the armed CPU is stopped in the idle hold now.
pub fn idle_held() -> bool {
    IDLE_HELD.load(Ordering::SeqCst)
}

/// Lets the CPU in the idle hold go on (and disarms the hold if it never fired).
pub fn release_idle() {
    IDLE_HOLD_CPU.store(NONE, Ordering::SeqCst);
    IDLE_RELEASE.store(true, Ordering::SeqCst);
}

/// Called by `switch_to_next` on CPU `cpu` once its run-queue lock is dropped.
#[inline(always)]
pub fn queue_unlocked(cpu: usize, going_idle: bool) {
    if going_idle && IDLE_HOLD_CPU.load(Ordering::Relaxed) == cpu {
        idle_hold(cpu);
    }
}

#[inline(never)]
fn idle_hold(cpu: usize) {
    if IDLE_HOLD_CPU
        .compare_exchange(cpu, NONE, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return;
    }
    IDLE_HELD.store(true, Ordering::SeqCst);
    let since = crate::arch::timer::now();
    while !IDLE_RELEASE.load(Ordering::SeqCst) && !hold_expired(since) {
        core::hint::spin_loop();
    }
    IDLE_HELD.store(false, Ordering::SeqCst);
}

/// Called by `kick` when it sends CPU `cpu` a reschedule request.
pub fn note_kick(cpu: usize) {
    KICKS[cpu].fetch_add(1, Ordering::SeqCst);
}

/// Reschedule requests sent to CPU `cpu` since boot.
pub fn kicks_sent(cpu: usize) -> u64 {
    KICKS[cpu].load(Ordering::SeqCst)
}

// ---------------------------------------------------------------------------------------
// Holding a park batch that holds a given stack's claim

static PARK_HOLD_SLOT: AtomicUsize = AtomicUsize::new(NONE);
static PARK_HELD: AtomicBool = AtomicBool::new(false);
static PARK_RELEASE: AtomicBool = AtomicBool::new(false);

/// Arms the park hold: the next park batch that holds the claim of the stack in arena slot
/// `slot` stops before it parks anything (claims held, in thread context) until
/// [`release_park_batch`].
pub fn hold_park_batch_of(slot: u32) {
    PARK_RELEASE.store(false, Ordering::SeqCst);
    PARK_HELD.store(false, Ordering::SeqCst);
    PARK_HOLD_SLOT.store(slot as usize, Ordering::SeqCst);
}

/// Whether a park batch is stopped in the hold now.
pub fn park_batch_held() -> bool {
    PARK_HELD.load(Ordering::SeqCst)
}

/// Lets the held park batch go on (and disarms the hold if it never fired).
pub fn release_park_batch() {
    PARK_HOLD_SLOT.store(NONE, Ordering::SeqCst);
    PARK_RELEASE.store(true, Ordering::SeqCst);
}

/// Called by a park batch about to park the stacks of `slots` (their claims held).
pub fn park_batch_claimed(slots: &mut dyn Iterator<Item = u32>) {
    let want = PARK_HOLD_SLOT.load(Ordering::Relaxed);
    if want == NONE {
        return;
    }
    let mut found = false;
    for s in slots {
        found |= s as usize == want;
    }
    if !found {
        return;
    }
    if PARK_HOLD_SLOT
        .compare_exchange(want, NONE, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return;
    }
    PARK_HELD.store(true, Ordering::SeqCst);
    let since = crate::arch::timer::now();
    while !PARK_RELEASE.load(Ordering::SeqCst) && !hold_expired(since) {
        crate::sched::sleep_ms(1);
    }
    PARK_HELD.store(false, Ordering::SeqCst);
}

// ---------------------------------------------------------------------------------------
// Holding the reaper

static REAPER_HOLD: AtomicBool = AtomicBool::new(false);

/// While `on`, the reaper leaves the dead threads handed to it alone: they stay in the
/// thread table, dead, with their stacks, until it is released.
pub fn hold_reaper(on: bool) {
    REAPER_HOLD.store(on, Ordering::SeqCst);
}

/// Called by the reaper before it takes the dead threads: waits while it is held.
pub fn reaper_may_reap() {
    let since = crate::arch::timer::now();
    while REAPER_HOLD.load(Ordering::SeqCst) && !hold_expired(since) {
        crate::sched::sleep_ms(1);
    }
}

// ---------------------------------------------------------------------------------------
// The hand-over probe

static HANDED: AtomicU64 = AtomicU64::new(0);
static HANDED_WHILE_CURRENT: AtomicU64 = AtomicU64::new(0);

/// Called when `t` is handed to the reaper (or freed by it): counts it, and counts it again
/// if some CPU's `CURRENT` still names it, since the reaper may free it at any moment.
pub fn note_handed(t: *mut Thread) {
    HANDED.fetch_add(1, Ordering::SeqCst);
    if crate::sched::CURRENT
        .iter()
        .any(|c| c.load(Ordering::SeqCst) == t)
    {
        HANDED_WHILE_CURRENT.fetch_add(1, Ordering::SeqCst);
    }
}

/// Control blocks handed to the reaper since boot, and how many of them some CPU still named
/// as its current thread at that moment.
pub fn handed_while_current() -> (u64, u64) {
    (
        HANDED.load(Ordering::SeqCst),
        HANDED_WHILE_CURRENT.load(Ordering::SeqCst),
    )
}
