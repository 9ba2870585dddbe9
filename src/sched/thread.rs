//! The thread control block.
//!
//! Owns the per-thread state the scheduler and the stack subsystem share. Kept small on
//! purpose: a million threads must cost well under 1 KiB each besides their stacks.
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU8, Ordering};

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

/// A thread control block. Lives on the heap at a fixed address from spawn to reaping.
pub struct Thread {
    /// Registers while the thread is not running.
    pub context: TrapFrame,
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
    /// An unpark that came before the park it was meant for (protected by the CPU's queue lock).
    pub(crate) park_token: bool,
    /// Next thread in a run queue (protected by that queue's lock).
    pub(crate) next: *mut Thread,
    /// Deadline while sleeping, in timer ticks.
    pub(crate) wake_at: u64,
    /// Where it is in its CPU's sleep queue while sleeping.
    pub(crate) sleep_index: u32,
    /// Whether the thread must stay on the CPU it was started on (never stolen).
    pub(crate) pinned: bool,
    /// Whether the thread is counted as not yet at its resting point (see `settle`).
    pub(crate) unsettled: bool,
    /// Whether its stack may be parked while it sleeps: nothing on it is shared with another
    /// thread (see `stack::park`). Workload threads are; others may say so themselves.
    pub(crate) parkable: bool,
    /// Whether it is in its CPU's park list (see `sched::parker`), and its neighbours there
    /// (protected by that CPU's queue lock).
    pub(crate) park_listed: bool,
    pub(crate) park_prev: *mut Thread,
    pub(crate) park_next: *mut Thread,
    /// When it went to sleep, in timer ticks (while in a park list).
    pub(crate) slept_at: u64,
    /// One of the kernel's own threads (idle, reaper, the main thread running the shell):
    /// a fault in it is a panic, never the end of just that thread.
    pub essential: bool,
    /// The thread's stack: reservation, mapped part, counters.
    pub stack: Stack,
    /// Completion for `join`, if somebody holds a handle.
    pub(crate) join: Option<alloc::sync::Arc<JoinState>>,
}

impl Thread {
    /// A new thread control block, not yet runnable.
    pub fn new(tid: u64, name: &str, kind: ThreadKind, stack: Stack) -> Self {
        let mut buf = [0u8; 15];
        let mut len = 0;
        for (dst, c) in buf.iter_mut().zip(name.chars().filter(char::is_ascii)) {
            *dst = c as u8;
            len += 1;
        }
        Self {
            context: TrapFrame::default(),
            tid,
            name: buf,
            name_len: len,
            state: AtomicU8::new(ThreadState::Ready as u8),
            cpu: AtomicU32::new(0),
            kind,
            kill_requested: AtomicBool::new(false),
            park_token: false,
            next: core::ptr::null_mut(),
            wake_at: 0,
            sleep_index: 0,
            pinned: false,
            unsettled: false,
            parkable: kind == ThreadKind::Workload,
            park_listed: false,
            park_prev: core::ptr::null_mut(),
            park_next: core::ptr::null_mut(),
            slept_at: 0,
            essential: false,
            stack,
            join: None,
        }
    }

    /// The thread's name (ASCII, at most 15 bytes).
    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..self.name_len as usize]).unwrap_or("?")
    }

    /// Whether its stack may be parked while it sleeps (see `stack::park`).
    pub fn is_parkable(&self) -> bool {
        self.parkable && self.stack.policy() == crate::cmdline::StackPolicy::Dynamic
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
