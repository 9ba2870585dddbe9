//! Threads and the scheduler: per-CPU run queues, preemptive round robin, sleep, park/unpark,
//! exit, kill, and the reaper.
//!
//! Threads run at EL1t on their own stack (SP_EL0). Every switch happens on the exception
//! stack, inside an exception: the interrupted thread's [`TrapFrame`] is copied into its
//! control block and the next thread's is copied over the frame that `exception_return`
//! restores. No code ever runs on a thread's stack while it is unclear which thread is
//! current. Voluntary switches (`yield_now`, `sleep`, `park`, `exit`) are `svc` calls.
//!
//! Locking: one [`IrqMutex`] per CPU guards its run queue and sleepers; code holds at most
//! one of them, except that a CPU with nothing to run may *try* another's to steal a thread.
//! The thread table has its own lock. Calls `stack` (claim, reserve refill before a dynamic
//! thread is switched in, release at exit), `arch` (timer, trap frames) and `drivers` through
//! `irq` (reschedule SGIs).
//!
//! The files: this one (the shared state and the API a thread calls), [`thread`] (the
//! control block), `queue` (the per-CPU queues under their locks, and stealing), `spawn`,
//! `kill`, `cpu` (idle threads and bring-up), `switch` (the context switch and all
//! exception-context entry points), `reaper` and [`parker`]. The plain logic, generic over
//! the node and host-tested (`cargo hosttest`, `sched/tests.rs`): [`runq`] (the FIFO, and
//! which thread may be stolen), [`sleep`] (the sleep queue's wake order), [`parklist`]
//! (oldest sleeper first), [`balance`] (where a new thread goes, whom an idle CPU robs,
//! whom a busy one pulls from) and [`counted`] (the join states' reference count, whose
//! creation fails cleanly when memory is out).
//!
//! # Who may touch which field of a [`Thread`]
//!
//! A control block is shared by every CPU from the moment `spawn` puts it in the thread
//! table until the reaper frees it, so nothing makes a `&mut Thread` in between: each field
//! is immutable after spawn, an atomic (`Relaxed` unless said otherwise; the lock named
//! below orders it), or an `UnsafeCell` ([`thread::Owned`]) reached through `unsafe`
//! accessors whose contract names its owner. "Its queue lock" is the lock of `QUEUES[cpu]`
//! for the CPU in the thread's `cpu` field, taken by loading `cpu`, locking, and loading it
//! again (`unpark`, `end_killed`).
//!
//! | field | kind | written by | read by |
//! |---|---|---|---|
//! | `tid`, `name`, `kind`, `essential` | plain | spawn, before the block is published | anyone who keeps it alive (the table lock, a claim, being current) |
//! | `context` | `Owned` | the holder of the stack's claim: the CPU switching the thread out (`save_current`) or in (`switch_to_next`, which also rewrites it for a killed thread) | that CPU; trim and parking read the saved SP under their claim |
//! | `state` | atomic, Release/Acquire | its queue lock's holder; the CPU switching it in (`Running`, with its claim) or out | anyone (reports); decisions are made under its queue lock |
//! | `cpu` | atomic, Release/Acquire | under the lock of the queue it moves into (spawn, `pin_to`) or out of (`steal`), and by `switch_to_next` | anyone, then checked again under that queue's lock |
//! | `kill_requested` | atomic | `request_kill` (a swap: once) | anyone |
//! | `park_token` | atomic | its queue lock | its queue lock |
//! | `next` | atomic pointer | the lock of the list it is in: its run queue's ([`runq`]), or `ZOMBIES`' once dead; the reaper once it has taken the list | the same |
//! | `wake_at`, `sleep_index` | atomics | its own CPU as it goes to sleep, then the sleep queue ([`sleep`]), under its queue lock | its queue lock |
//! | `pinned` | atomic | its own CPU while it runs and is in no queue (`pin_to`); spawn | its queue lock (`take_unpinned`) |
//! | `unsettled` | atomic | its queue lock (`mark_settled`, `terminate_current`, `end_killed`) | the same |
//! | `parkable` | atomic | the thread itself, under its queue lock (`set_parkable`); spawn | its queue lock; trim, for a thread asleep |
//! | `park`, `slept_at` | atomics | its queue lock ([`parklist`], `parker::note_asleep`) | its queue lock |
//! | `stack` | its own atomics and claim (see [`crate::stack::Stack`]) | the claim's holder (the running CPU, trim, parking; the fast path through `offset_of!`) | anyone, for reports |
//! | `join` | `Owned` | spawn; the reaper, which has the dead block to itself after `claim_for_release` | the same |
//! | `own_heap` | atomic pointer | the thread itself, in thread context ([`heap_scope`]); the reaper once it is dead | the same (the global allocator, on the thread's behalf) |
pub mod balance;
pub mod counted;
mod cpu;
pub mod heap_scope;
mod kill;
pub mod parker;
pub mod parklist;
mod queue;
mod reaper;
pub mod runq;
pub mod sleep;
mod spawn;
mod switch;
mod table;
pub mod thread;

pub use cpu::*;
pub use kill::*;
use queue::*;
pub use reaper::*;
pub use spawn::*;
pub use switch::*;

use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use crate::arch::timer;
use crate::arch::trap::TrapFrame;
use crate::cmdline::StackPolicy;
use crate::percpu::{cpu_index, MAX_CPUS};
use crate::stack::{self, Stack};
use crate::sync::{IrqMutex, IrqMutexGuard};
pub use thread::{join_cache_stats, Entry, Join, JoinState, Thread, ThreadKind, ThreadState};

/// Length of a time slice.
pub const TIME_SLICE_NS: u64 = 10_000_000;

/// System call numbers (the `svc` immediate).
pub mod syscall {
    /// Give up the CPU, stay runnable.
    pub const YIELD: u16 = 1;
    /// Sleep until the tick count in x0.
    pub const SLEEP_UNTIL: u16 = 2;
    /// Block until unparked (returns at once if an unpark is pending).
    pub const PARK: u16 = 3;
    /// End the calling thread.
    pub const EXIT: u16 = 4;
    /// Do nothing and return: the cost of a system call round trip, for benchmarks.
    pub const NOP: u16 = 5;
    /// Pin the calling thread to the CPU in x0 and move it there (x0: 0 done, 1 refused).
    pub const PIN_TO: u16 = 6;
    /// Test hook: recurse in the handler until the exception stack overflows (a panic).
    /// Only kernels built with the `test-hooks` feature (the test kernels) handle it.
    #[cfg(feature = "test-hooks")]
    pub const TEST_EXHAUST_EXCEPTION_STACK: u16 = 0x7e;
}

/// Why a thread could not be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnError {
    /// No memory for the stack or the control block.
    OutOfMemory,
    /// No free reservation left in the stack arena.
    ArenaFull,
}

impl core::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::OutOfMemory => f.write_str("out of memory"),
            Self::ArenaFull => f.write_str("stack arena full"),
        }
    }
}

static QUEUES: [IrqMutex<CpuQueue>; MAX_CPUS] =
    [const { IrqMutex::new(CpuQueue::new()) }; MAX_CPUS];
static QUEUE_LEN: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
/// The thread each CPU runs. The stack growth fast path (`stack::fast`) reads it.
pub(crate) static CURRENT: [AtomicPtr<Thread>; MAX_CPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];
static IDLE: [AtomicPtr<Thread>; MAX_CPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];
static IS_IDLE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
static ONLINE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
static ONLINE_COUNT: AtomicUsize = AtomicUsize::new(0);
static NEXT_CPU: AtomicUsize = AtomicUsize::new(0);

static NEXT_TID: AtomicU64 = AtomicU64::new(1);
static WORKLOAD_THREADS: AtomicUsize = AtomicUsize::new(0);
/// Workload threads that are dead but not yet reaped (still counted in [`WORKLOAD_THREADS`]).
static DEAD_WORKLOADS: AtomicUsize = AtomicUsize::new(0);
static UNSETTLED: AtomicUsize = AtomicUsize::new(0);
static PENDING_KILLS: AtomicUsize = AtomicUsize::new(0);
/// Reaper batches begun and finished (memory back), for [`kill`] to wait for one thread.
static REAP_STARTED: AtomicU64 = AtomicU64::new(0);
static REAP_DONE: AtomicU64 = AtomicU64::new(0);
static SWITCHES: AtomicU64 = AtomicU64::new(0);

struct Zombies {
    head: *mut Thread,
}
// SAFETY: dead control blocks handed to the reaper under this lock.
unsafe impl Send for Zombies {}
static ZOMBIES: IrqMutex<Zombies> = IrqMutex::new(Zombies {
    head: core::ptr::null_mut(),
});
static REAPER: AtomicPtr<Thread> = AtomicPtr::new(core::ptr::null_mut());

/// Hook the interrupt layer provides to poke an idle CPU (a reschedule SGI).
static KICK: crate::sync::Once<fn(usize)> = crate::sync::Once::new();

/// Registers how to wake CPU `n` from `wfi` when work arrives for it.
pub fn set_kick(kick: fn(usize)) {
    KICK.call_once(|| kick);
}

// ---------------------------------------------------------------------------------------
// Thread-context API

#[inline(always)]
fn svc0(num: u16) -> u64 {
    let ret: u64;
    // SAFETY: the svc handler preserves every register but x0 (the result).
    unsafe {
        match num {
            syscall::YIELD => core::arch::asm!("svc #1", lateout("x0") ret),
            syscall::PARK => core::arch::asm!("svc #3", lateout("x0") ret),
            syscall::NOP => core::arch::asm!("svc #5", lateout("x0") ret),
            _ => core::arch::asm!("svc #4", lateout("x0") ret),
        }
    }
    ret
}

/// Gives up the CPU; the thread stays runnable.
pub fn yield_now() {
    svc0(syscall::YIELD);
}

/// An empty system call (benchmark baseline).
pub fn null_syscall() {
    svc0(syscall::NOP);
}

/// Sleeps until the generic timer reaches `deadline` ticks.
pub fn sleep_until(deadline: u64) {
    while timer::now() < deadline {
        // Make room in this CPU's sleep queue here, where allocating is allowed, with IRQs
        // masked so the thread cannot move to another CPU before the svc puts it there. The
        // thread resumes with IRQs masked (its saved PSTATE) and unmasks them below.
        let daif = crate::arch::irq::save_and_disable();
        let room = QUEUES[cpu_index()].lock().sleepers.make_room();
        let mut result = 1u64;
        if room {
            result = deadline;
            // SAFETY: as in svc0; x0 carries the deadline in and 0 (slept) or 1 (no room) out.
            unsafe { core::arch::asm!("svc #2", inout("x0") result) };
        }
        crate::arch::irq::restore(daif);
        if result == 0 {
            return;
        }
        // Out of memory for the sleep queue: wait without it.
        yield_now();
    }
}

/// Sleeps for at least `ns` nanoseconds.
pub fn sleep_ns(ns: u64) {
    sleep_until(timer::now() + timer::ns_to_ticks(ns));
}

/// Sleeps for at least `ms` milliseconds.
pub fn sleep_ms(ms: u64) {
    sleep_ns(ms * 1_000_000);
}

/// Pins the calling thread to CPU `cpu` (it is never migrated again) and moves it there:
/// returns running on `cpu`. For tests and benchmarks that need a thread to change CPUs at a
/// known point, rather than hoping the balancer moves it. `false` (and nothing changes) if
/// `cpu` is not online or this is an idle thread.
pub fn pin_current_to(cpu: usize) -> bool {
    let mut result = cpu as u64;
    // SAFETY: as in svc0; x0 carries the CPU in and 0 (moved) or 1 (refused) out.
    unsafe { core::arch::asm!("svc #6", inout("x0") result) };
    result == 0
}

/// Blocks until [`unpark`] is called for this thread (at once if one already was).
pub fn park() {
    svc0(syscall::PARK);
}

/// Ends the calling thread.
pub fn exit() -> ! {
    svc0(syscall::EXIT);
    unreachable!("exit returned");
}

/// The control block of the thread running on this CPU.
///
/// IRQs are masked around the two loads: read unmasked, the thread could be preempted and
/// moved to another CPU between reading its CPU's index and that CPU's `CURRENT`, and get
/// whichever thread runs there by then (a join or a console read would then register that
/// thread as the one to wake, and it may be freed long before the wake-up comes).
pub fn current_ptr() -> *mut Thread {
    let daif = crate::arch::irq::save_and_disable();
    let t = CURRENT[cpu_index()].load(Ordering::Relaxed);
    crate::arch::irq::restore(daif);
    t
}

/// The control block of the thread running on CPU `cpu`, for code that runs there with IRQs
/// already masked (exception context: the fault path), where [`current_ptr`]'s masking is
/// only cost: nothing can move the thread between finding the CPU and reading its entry.
#[inline(always)]
pub fn current_on(cpu: usize) -> *mut Thread {
    CURRENT[cpu].load(Ordering::Relaxed)
}

/// The running thread's id.
pub fn current_tid() -> u64 {
    // SAFETY: the current thread's control block lives as long as it runs.
    unsafe { (*current_ptr()).tid }
}

/// Whether the running thread has been asked to exit.
pub fn kill_requested() -> bool {
    // SAFETY: as in current_tid.
    unsafe { (*current_ptr()).kill_requested.load(Ordering::Relaxed) }
}

/// Marks the running workload thread as having reached its resting point (see `settle`).
pub fn mark_settled() {
    // IRQs masked first: read before, `cpu_index()` may name a CPU the thread has been
    // moved away from by the time the lock is taken, and that lock would not exclude the
    // exit path of the CPU it runs on.
    let daif = crate::arch::irq::save_and_disable();
    {
        let _q = QUEUES[cpu_index()].lock();
        // SAFETY: the current thread's control block, alive while it runs.
        let t = unsafe { &*current_ptr() };
        // `unsettled` is only changed by itself or by the exit path, both on its CPU with
        // the queue lock held.
        if t.unsettled.load(Ordering::Relaxed) {
            t.unsettled.store(false, Ordering::Relaxed);
            UNSETTLED.fetch_sub(1, Ordering::Relaxed);
        }
    }
    crate::arch::irq::restore(daif);
}

/// Declares whether the running thread's stack may be parked while it sleeps: `true` only
/// if nothing on its stack is read or written by any other thread (see `stack::park`).
/// Workload threads are parkable from the start.
pub fn set_parkable(parkable: bool) {
    // IRQs masked before the CPU is read, as in mark_settled.
    let daif = crate::arch::irq::save_and_disable();
    {
        let _q = QUEUES[cpu_index()].lock();
        // SAFETY: the current thread's control block, alive while it runs. `parkable` is
        // read under its CPU's queue lock when it goes to sleep (and by trim, which only
        // parks it asleep).
        unsafe { (*current_ptr()).parkable.store(parkable, Ordering::Relaxed) };
    }
    crate::arch::irq::restore(daif);
}

/// The thread whose stack has arena slot `slot`: (tid, name, whether its stack is parked).
/// For fault reports (any context): a walk of the table, given up if the table is locked.
pub fn stack_owner(slot: u32) -> Option<(u64, [u8; 15], bool)> {
    table::try_with_slot(slot, |p| {
        // SAFETY: in the table, hence alive, while the table lock is held.
        let t = unsafe { &*p };
        let mut name = [0u8; 15];
        for (d, s) in name.iter_mut().zip(t.name().bytes()) {
            *d = s;
        }
        (t.tid, name, t.stack.is_parked())
    })
}

/// Workload threads not yet at their resting point.
///
/// Acquire: a thread that left the count by dying was counted dead first (see
/// [`resting_workload_threads`]).
pub fn unsettled() -> usize {
    UNSETTLED.load(Ordering::Acquire)
}

/// Live workload threads that are not dead: the ones at rest once [`unsettled`] is 0 (a
/// thread that overflowed or was killed may wait for the reaper a while after it died, still
/// counted in [`workload_threads`]).
pub fn resting_workload_threads() -> usize {
    // Dead first: the reaper takes a thread out of the live count before the dead one, so
    // a dead count read here is never below what the live count read next still holds.
    let dead = DEAD_WORKLOADS.load(Ordering::Acquire);
    WORKLOAD_THREADS
        .load(Ordering::Relaxed)
        .saturating_sub(dead)
}

/// Counts `th`, which is dying now, as dead until the reaper has it, then takes it out of
/// [`unsettled`] if it was in it (in that order: see [`unsettled`]). Under its CPU's queue
/// lock, which `unsettled` is changed under.
pub(super) fn note_dying(th: &Thread) {
    if th.kind == ThreadKind::Workload {
        DEAD_WORKLOADS.fetch_add(1, Ordering::Relaxed);
    }
    if th.unsettled.load(Ordering::Relaxed) {
        th.unsettled.store(false, Ordering::Relaxed);
        UNSETTLED.fetch_sub(1, Ordering::Release);
    }
}

/// Live workload threads.
pub fn workload_threads() -> usize {
    WORKLOAD_THREADS.load(Ordering::Relaxed)
}

/// Threads alive (including idle, system and dead-but-not-reaped ones).
pub fn thread_count() -> usize {
    table::count()
}

/// Thread control blocks: a slab cache of their own (page-sized slabs, empty ones given
/// back), so a million threads cost `size_of::<Thread>()` each plus slab headers, not a
/// power-of-two heap block, and `kill all` returns their pages.
static THREAD_CACHE: crate::mm::slab::SlabCache = crate::mm::slab::SlabCache::new(
    core::mem::size_of::<Thread>(),
    core::mem::align_of::<Thread>(),
);

/// Sizes the thread table for `slots` stack slots (the arena's capacity). Called once at
/// boot, after `stack::init` and before the first thread.
pub fn init_table(slots: usize) {
    table::init(slots);
}

/// The thread control blocks' cache counters, for `stacks`.
pub fn thread_cache_stats() -> crate::mm::slab::SlabStats {
    THREAD_CACHE.stats()
}

/// Context switches so far.
pub fn switches() -> u64 {
    SWITCHES.load(Ordering::Relaxed)
}

/// A handle to wait for a thread's end.
pub struct JoinHandle {
    tid: u64,
    state: Join,
}

impl JoinHandle {
    /// The thread's id.
    pub fn tid(&self) -> u64 {
        self.tid
    }

    /// Waits until the thread has ended and its memory is back.
    ///
    /// The handover with the reaper is a store then a load on each side (`waiter` then
    /// `done` here, `done` then `waiter` there), so both are SeqCst: with Release/Acquire
    /// each load may be ordered before the other side's store (LDAPR on FEAT_LRCPC cores),
    /// both sides miss each other and this parks forever.
    pub fn join(self) {
        loop {
            if self.state.done.load(Ordering::SeqCst) {
                return;
            }
            self.state.waiter.store(current_ptr(), Ordering::SeqCst);
            if self.state.done.load(Ordering::SeqCst) {
                return;
            }
            park();
        }
    }

    /// Whether the thread has ended.
    pub fn is_finished(&self) -> bool {
        self.state.done.load(Ordering::Acquire)
    }
}
