//! The thread control block.
//!
//! Owns the per-thread state the scheduler and the stack subsystem share. Kept small on
//! purpose: a million threads must cost well under 1 KiB each besides their stacks.
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering};

use super::counted::{Block, Counted, Store};
use super::parklist::{ParkLinks, ParkNode};
use super::runq::RunNode;
use super::sleep::SleepNode;
use crate::arch::trap::TrapFrame;
use crate::stack::Stack;

/// Where a thread is in its life.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadState {
    /// In a run queue, waiting for a CPU.
    Ready = 0,
    /// Current on some CPU.
    Running = 1,
    /// Waiting for a deadline.
    Sleeping = 2,
    /// Waiting for [`crate::sched::unpark`].
    Blocked = 3,
    /// Finished; waiting for the reaper to return its memory.
    Dead = 4,
}

impl ThreadState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Ready,
            1 => Self::Running,
            2 => Self::Sleeping,
            3 => Self::Blocked,
            _ => Self::Dead,
        }
    }

    /// Lower-case name for `ps`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Running => "running",
            Self::Sleeping => "sleeping",
            Self::Blocked => "blocked",
            Self::Dead => "dead",
        }
    }
}

/// What a thread is for; only workload threads may be killed from the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    /// A CPU's idle thread: never queued, never killed.
    Idle,
    /// A kernel service (shell, reaper, tests).
    System,
    /// Started by `spawn`; `kill` and `settle` act on these.
    Workload,
}

/// The thread's entry point and what it is called with.
pub type Entry = fn(usize);

/// Completion shared between an exiting thread and the one joining it.
pub struct JoinState {
    /// Set by the reaper once the thread is gone.
    pub done: AtomicBool,
    /// The thread waiting in `join`, if any.
    pub waiter: AtomicPtr<Thread>,
}

impl JoinState {
    /// Not done, nobody waiting.
    pub const fn new() -> Self {
        Self {
            done: AtomicBool::new(false),
            waiter: AtomicPtr::new(core::ptr::null_mut()),
        }
    }
}

impl Default for JoinState {
    fn default() -> Self {
        Self::new()
    }
}

/// A shared reference to a [`JoinState`]: one for the joiner, one for the thread (the
/// reaper drops it once the thread is gone). Created with `Join::try_new(JoinState::new())`,
/// which fails (the value comes back) when memory is out instead of aborting.
pub type Join = Counted<JoinState, JoinStore>;

/// The store of join states: a slab cache of their own, so creating a thread takes one O(1)
/// slab object for its join state (no general-heap allocation, and a clean `None` when no
/// page is left), and the slabs go back as threads are joined.
pub struct JoinStore;

static JOIN_CACHE: crate::mm::slab::SlabCache = crate::mm::slab::SlabCache::new(
    core::mem::size_of::<Block<JoinState>>(),
    core::mem::align_of::<Block<JoinState>>(),
);

// SAFETY: the slab cache hands out objects of exactly a Block<JoinState>'s size and
// alignment, each used by nobody else until it is freed.
unsafe impl Store<JoinState> for JoinStore {
    fn alloc() -> Option<core::ptr::NonNull<Block<JoinState>>> {
        JOIN_CACHE.alloc().map(|p| p.cast())
    }

    unsafe fn free(block: core::ptr::NonNull<Block<JoinState>>) {
        // SAFETY: the caller's promise: it came from `alloc`, hence from JOIN_CACHE, and
        // nothing uses it any more.
        unsafe { JOIN_CACHE.free(block.cast()) }
    }
}

/// The join states' cache counters (objects in use, slabs, bytes).
pub fn join_cache_stats() -> crate::mm::slab::SlabStats {
    JOIN_CACHE.stats()
}

/// A field of a control block that has one owner at a time, named in the table of the
/// `sched` module doc: an `UnsafeCell`, so that the owner writes it through the `&Thread`
/// every CPU may hold (a `&mut Thread` while others can see the block would break Rust's
/// aliasing rules). For fields that are not a machine word: the saved registers and the
/// join state. Reached only through `Thread`'s accessors, each `unsafe` with its owner in
/// its contract.
#[repr(transparent)]
pub struct Owned<T>(UnsafeCell<T>);

impl<T> Owned<T> {
    const fn new(v: T) -> Self {
        Self(UnsafeCell::new(v))
    }
}

/// A thread control block. Lives in the thread cache at a fixed address from spawn to
/// reaping, shared by every CPU through raw pointers and `&Thread`: every field is either
/// immutable after spawn, an atomic, or [`Owned`]; which lock or CPU may change each one is
/// the table in the `sched` module doc. Nobody makes a `&mut Thread` once it is published.
pub struct Thread {
    /// Registers while the thread is not running (owner: the holder of its stack's claim).
    context: Owned<TrapFrame>,
    /// Thread id, unique for the life of the kernel.
    pub tid: u64,
    name: [u8; 15],
    name_len: u8,
    state: AtomicU8,
    /// CPU whose queues hold this thread (or that runs it).
    pub cpu: AtomicU32,
    /// Kind of thread.
    pub kind: ThreadKind,
    /// Set by `kill`: the thread exits the next time it would run.
    pub kill_requested: AtomicBool,
    /// An unpark that came before the park it was meant for.
    pub(crate) park_token: AtomicBool,
    /// Next thread in a run queue, or in the zombie list once dead.
    pub(crate) next: AtomicPtr<Thread>,
    /// Deadline while sleeping, in timer ticks.
    pub(crate) wake_at: AtomicU64,
    /// Where it is in its CPU's sleep queue while sleeping.
    pub(crate) sleep_index: AtomicU32,
    /// Whether the thread must stay on the CPU it is queued on (never stolen).
    pub(crate) pinned: AtomicBool,
    /// Whether the thread is counted as not yet at its resting point (see `settle`).
    pub(crate) unsettled: AtomicBool,
    /// Whether its stack may be parked while it sleeps: nothing on it is shared with another
    /// thread (see `stack::park`). Workload threads are; others may say so themselves.
    pub(crate) parkable: AtomicBool,
    /// Its place in its CPU's park list (see `sched::parker`).
    pub(crate) park: ParkLinks<Thread>,
    /// When it went to sleep, in timer ticks (while in a park list).
    pub(crate) slept_at: AtomicU64,
    /// One of the kernel's own threads (idle, reaper, the main thread running the shell):
    /// a fault in it is a panic, never the end of just that thread.
    pub essential: bool,
    /// The thread's stack: reservation, mapped part, counters, and the claim that says who
    /// may change them.
    pub stack: Stack,
    /// Completion for `join`, if somebody holds a handle (owner: spawn, then the reaper).
    join: Owned<Option<Join>>,
    /// Its own heap while it runs code in `heap_scope::with_own_heap` (null otherwise).
    pub(crate) own_heap: AtomicPtr<crate::mm::thread_heap::ThreadHeap>,
}

impl RunNode for Thread {
    #[inline(always)]
    fn run_link(&self) -> &AtomicPtr<Self> {
        &self.next
    }

    #[inline(always)]
    fn is_pinned(&self) -> bool {
        self.pinned.load(Ordering::Relaxed)
    }
}

impl SleepNode for Thread {
    #[inline(always)]
    fn sleep_key(&self) -> (u64, u64) {
        (self.wake_at.load(Ordering::Relaxed), self.tid)
    }

    #[inline(always)]
    fn sleep_index(&self) -> &AtomicU32 {
        &self.sleep_index
    }
}

impl ParkNode for Thread {
    #[inline(always)]
    fn park_links(&self) -> &ParkLinks<Self> {
        &self.park
    }
}

/// What a new thread starts with besides its name, kind and stack.
pub(crate) struct Start {
    /// Its first registers.
    pub context: TrapFrame,
    /// Its completion, if somebody will join it.
    pub join: Option<Join>,
    /// Pinned to the CPU it is queued on.
    pub pinned: bool,
    /// One of the kernel's own threads.
    pub essential: bool,
}

impl Thread {
    /// A new thread control block, not yet runnable, starting as `start` says.
    #[inline(always)]
    pub(crate) fn new(tid: u64, name: &str, kind: ThreadKind, stack: Stack, start: Start) -> Self {
        let mut buf = [0u8; 15];
        let mut len = 0;
        // The ASCII characters of `name`: in UTF-8 those are exactly the bytes below 0x80.
        for (dst, b) in buf.iter_mut().zip(name.bytes().filter(u8::is_ascii)) {
            *dst = b;
            len += 1;
        }
        Self {
            context: Owned::new(start.context),
            tid,
            name: buf,
            name_len: len,
            state: AtomicU8::new(ThreadState::Ready as u8),
            cpu: AtomicU32::new(0),
            kind,
            kill_requested: AtomicBool::new(false),
            park_token: AtomicBool::new(false),
            next: AtomicPtr::new(core::ptr::null_mut()),
            wake_at: AtomicU64::new(0),
            sleep_index: AtomicU32::new(0),
            pinned: AtomicBool::new(start.pinned),
            unsettled: AtomicBool::new(kind == ThreadKind::Workload),
            parkable: AtomicBool::new(kind == ThreadKind::Workload),
            park: ParkLinks::new(),
            slept_at: AtomicU64::new(0),
            essential: start.essential,
            stack,
            join: Owned::new(start.join),
            own_heap: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// The saved registers.
    ///
    /// # Safety
    /// The thread is not running and nobody switches it in or out meanwhile: the caller
    /// holds its stack's claim, or (tests) keeps it asleep.
    #[inline(always)]
    pub unsafe fn context(&self) -> &TrapFrame {
        // SAFETY: the caller's promise: the owner (the claim holder) does not write now.
        unsafe { &*self.context.0.get() }
    }

    /// The saved registers, to change them.
    ///
    /// # Safety
    /// The caller holds the thread's stack claim as the CPU switching it in or out (or has
    /// the block to itself), and makes no other reference to them meanwhile.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn context_mut(&self) -> &mut TrapFrame {
        // SAFETY: the caller's promise: it is the owner, and the only one looking.
        unsafe { &mut *self.context.0.get() }
    }

    /// The SP saved when it last stopped.
    ///
    /// # Safety
    /// As for [`context`](Self::context).
    #[inline(always)]
    pub unsafe fn saved_sp(&self) -> u64 {
        // SAFETY: as for `context`.
        unsafe { (*self.context.0.get()).sp_el0 }
    }

    /// Where the saved SP is kept, for a parker to read once it holds the claim.
    pub fn saved_sp_ptr(&self) -> *const u64 {
        // SAFETY: only the address is taken; nothing is read or written here.
        unsafe { core::ptr::addr_of!((*self.context.0.get()).sp_el0) }
    }

    /// Takes the join state out (the reaper, which has the dead block to itself).
    ///
    /// # Safety
    /// The caller owns the block: it is dead, out of every queue and the table, and its
    /// stack claim is held for release.
    pub(crate) unsafe fn take_join(&self) -> Option<Join> {
        // SAFETY: the caller's promise: nobody else can reach the field any more.
        unsafe { (*self.join.0.get()).take() }
    }

    /// The thread's name (ASCII, at most 15 bytes).
    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..self.name_len as usize]).unwrap_or("?")
    }

    /// Whether its stack may be parked while it sleeps (see `stack::park`).
    pub fn is_parkable(&self) -> bool {
        self.parkable.load(Ordering::Relaxed)
            && self.stack.policy() == crate::cmdline::StackPolicy::Dynamic
    }

    /// The state `ps` shows: `parked` for a sleeping thread whose stack is parked.
    pub fn state_name(&self) -> &'static str {
        let state = self.state();
        if matches!(state, ThreadState::Sleeping | ThreadState::Blocked) && self.stack.is_parked() {
            "parked"
        } else {
            state.name()
        }
    }

    /// Current state.
    pub fn state(&self) -> ThreadState {
        ThreadState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn set_state(&self, s: ThreadState) {
        self.state.store(s as u8, Ordering::Release);
    }
}
