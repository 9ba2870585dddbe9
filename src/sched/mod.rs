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
mod sleep;
pub mod thread;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use crate::arch::timer;
use crate::arch::trap::TrapFrame;
use crate::cmdline::StackPolicy;
use crate::percpu::{cpu_index, MAX_CPUS};
use crate::stack::{self, Stack};
use crate::sync::{IrqMutex, IrqMutexGuard};
pub use thread::{Entry, JoinState, Thread, ThreadKind, ThreadState};

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
    /// Test hook: recurse in the handler until the exception stack overflows (a panic).
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

struct CpuQueue {
    head: *mut Thread,
    tail: *mut Thread,
    len: usize,
    sleepers: sleep::SleepQueue,
    slice_end: u64,
}

// SAFETY: the raw pointers are control blocks shared between CPUs only under this lock.
unsafe impl Send for CpuQueue {}

impl CpuQueue {
    const fn new() -> Self {
        Self {
            head: core::ptr::null_mut(),
            tail: core::ptr::null_mut(),
            len: 0,
            sleepers: sleep::SleepQueue::new(),
            slice_end: 0,
        }
    }

    fn push_back(&mut self, t: *mut Thread) {
        // SAFETY: `t` is a live control block not in any queue; we hold the queue lock.
        unsafe { (*t).next = core::ptr::null_mut() };
        if self.tail.is_null() {
            self.head = t;
        } else {
            // SAFETY: tail is a live control block in this queue.
            unsafe { (*self.tail).next = t };
        }
        self.tail = t;
        self.len += 1;
    }

    fn push_front(&mut self, t: *mut Thread) {
        // SAFETY: `t` is a live control block not in any queue; we hold the queue lock.
        unsafe { (*t).next = self.head };
        self.head = t;
        if self.tail.is_null() {
            self.tail = t;
        }
        self.len += 1;
    }

    fn pop_front(&mut self) -> Option<*mut Thread> {
        if self.head.is_null() {
            return None;
        }
        let t = self.head;
        // SAFETY: head is a live control block in this queue.
        self.head = unsafe { (*t).next };
        if self.head.is_null() {
            self.tail = core::ptr::null_mut();
        }
        self.len -= 1;
        Some(t)
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

static THREADS: IrqMutex<BTreeMap<u64, usize>> = IrqMutex::new(BTreeMap::new());
static NEXT_TID: AtomicU64 = AtomicU64::new(1);
static WORKLOAD_THREADS: AtomicUsize = AtomicUsize::new(0);
static UNSETTLED: AtomicUsize = AtomicUsize::new(0);
static PENDING_KILLS: AtomicUsize = AtomicUsize::new(0);
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
static KICK: spin::Once<fn(usize)> = spin::Once::new();

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
pub fn current_ptr() -> *mut Thread {
    CURRENT[cpu_index()].load(Ordering::Relaxed)
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
    let _q = QUEUES[cpu_index()].lock();
    // SAFETY: the current thread's control block; `unsettled` is only changed by itself or
    // by the exit path, both on its CPU with the queue lock held.
    let t = unsafe { &mut *current_ptr() };
    if t.unsettled {
        t.unsettled = false;
        UNSETTLED.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Workload threads not yet at their resting point.
pub fn unsettled() -> usize {
    UNSETTLED.load(Ordering::Relaxed)
}

/// Live workload threads.
pub fn workload_threads() -> usize {
    WORKLOAD_THREADS.load(Ordering::Relaxed)
}

/// Threads alive (including idle, system and dead-but-not-reaped ones).
pub fn thread_count() -> usize {
    THREADS.lock().len()
}

/// Context switches so far.
pub fn switches() -> u64 {
    SWITCHES.load(Ordering::Relaxed)
}

/// A handle to wait for a thread's end.
pub struct JoinHandle {
    tid: u64,
    state: Arc<JoinState>,
}

impl JoinHandle {
    /// The thread's id.
    pub fn tid(&self) -> u64 {
        self.tid
    }

    /// Waits until the thread has ended and its memory is back.
    pub fn join(self) {
        loop {
            if self.state.done.load(Ordering::Acquire) {
                return;
            }
            self.state.waiter.store(current_ptr(), Ordering::Release);
            if self.state.done.load(Ordering::Acquire) {
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

extern "C" fn thread_start(entry: usize, arg: usize) -> ! {
    // SAFETY: `entry` was stored from an `Entry` by `spawn_raw`.
    let f: Entry = unsafe { core::mem::transmute::<usize, Entry>(entry) };
    f(arg);
    exit()
}

extern "C" fn thread_killed() -> ! {
    exit()
}

fn closure_entry(arg: usize) {
    // SAFETY: `arg` came from Box::into_raw in `spawn` and is used once.
    let f = unsafe { Box::from_raw(arg as *mut Box<dyn FnOnce() + Send>) };
    f();
}

/// Starts a system thread running `f`, with the default stack policy.
pub fn spawn<F: FnOnce() + Send + 'static>(name: &str, f: F) -> Result<JoinHandle, SpawnError> {
    spawn_with(name, stack::default_policy(), f)
}

/// Starts a system thread running `f` with the given stack policy.
pub fn spawn_with<F: FnOnce() + Send + 'static>(
    name: &str,
    policy: StackPolicy,
    f: F,
) -> Result<JoinHandle, SpawnError> {
    spawn_closure(name, policy, None, Box::new(f))
}

/// Starts a system thread running `f` on CPU `cpu` only (it is never migrated), for
/// benchmarks and tests that need to know where a thread runs.
pub fn spawn_pinned<F: FnOnce() + Send + 'static>(
    name: &str,
    policy: StackPolicy,
    cpu: usize,
    f: F,
) -> Result<JoinHandle, SpawnError> {
    spawn_closure(name, policy, Some(cpu), Box::new(f))
}

fn spawn_closure(
    name: &str,
    policy: StackPolicy,
    pinned: Option<usize>,
    f: Box<dyn FnOnce() + Send>,
) -> Result<JoinHandle, SpawnError> {
    let arg = Box::into_raw(Box::new(f)) as usize;
    let state = Arc::new(JoinState {
        done: AtomicBool::new(false),
        waiter: AtomicPtr::new(core::ptr::null_mut()),
    });
    match spawn_raw_on(
        name,
        ThreadKind::System,
        policy,
        closure_entry,
        arg,
        Some(state.clone()),
        pinned,
    ) {
        Ok(tid) => Ok(JoinHandle { tid, state }),
        Err(e) => {
            // SAFETY: the thread was not created, so the closure is still ours.
            drop(unsafe { Box::from_raw(arg as *mut Box<dyn FnOnce() + Send>) });
            Err(e)
        }
    }
}

/// Frames kept free for the kernel itself: spawning stops before memory is this low, so the
/// heap and the stack reserves never fail where they cannot report it.
const SPAWN_LOW_WATER_PAGES: u64 = 512;

/// Starts a thread calling `entry(arg)`; returns its id. Workload threads are counted for
/// `settle` and may be killed.
pub fn spawn_raw(
    name: &str,
    kind: ThreadKind,
    policy: StackPolicy,
    entry: Entry,
    arg: usize,
    join: Option<Arc<JoinState>>,
) -> Result<u64, SpawnError> {
    spawn_raw_on(name, kind, policy, entry, arg, join, None)
}

/// [`spawn_raw`], optionally pinned to one CPU.
fn spawn_raw_on(
    name: &str,
    kind: ThreadKind,
    policy: StackPolicy,
    entry: Entry,
    arg: usize,
    join: Option<Arc<JoinState>>,
    pinned: Option<usize>,
) -> Result<u64, SpawnError> {
    if crate::mm::frame::free_pages() < SPAWN_LOW_WATER_PAGES + stack::initial_pages(policy) as u64
    {
        return Err(SpawnError::OutOfMemory);
    }
    let stack = Stack::create(policy).map_err(|e| match e {
        stack::StackError::ArenaFull => SpawnError::ArenaFull,
        stack::StackError::OutOfMemory => SpawnError::OutOfMemory,
    })?;
    let tid = NEXT_TID.fetch_add(1, Ordering::Relaxed);
    let top = stack.top();
    let layout = core::alloc::Layout::new::<Thread>();
    // SAFETY: Thread has a non-zero size; a null result is handled.
    let raw = unsafe { alloc::alloc::alloc(layout) } as *mut Thread;
    if raw.is_null() {
        stack.destroy();
        return Err(SpawnError::OutOfMemory);
    }
    let mut t = Thread::new(tid, name, kind, stack);
    t.context = TrapFrame::new_thread(
        thread_start as *const () as u64,
        entry as *const () as u64,
        top,
        0,
    );
    t.context.x[1] = arg as u64;
    t.join = join;
    t.pinned = pinned.is_some();
    t.unsettled = kind == ThreadKind::Workload;
    // SAFETY: `raw` is a fresh allocation of the right layout.
    unsafe { raw.write(t) };
    if kind == ThreadKind::Workload {
        WORKLOAD_THREADS.fetch_add(1, Ordering::Relaxed);
        UNSETTLED.fetch_add(1, Ordering::Relaxed);
    }
    THREADS.lock().insert(tid, raw as usize);
    if kind != ThreadKind::Idle {
        enqueue_new(raw, pinned);
    }
    Ok(tid)
}

fn online_cpus() -> usize {
    ONLINE_COUNT.load(Ordering::Relaxed).max(1)
}

fn enqueue_new(t: *mut Thread, pinned: Option<usize>) {
    // Round robin over online CPUs; idle CPUs also steal, so the load evens out.
    let cpu = match pinned {
        Some(cpu) => cpu % MAX_CPUS,
        None => {
            // The k-th online CPU, k going round all of them in turn.
            let k = NEXT_CPU.fetch_add(1, Ordering::Relaxed) % online_cpus();
            (0..MAX_CPUS)
                .filter(|&c| ONLINE[c].load(Ordering::Relaxed))
                .nth(k)
                .unwrap_or(0)
        }
    };
    {
        let mut q = QUEUES[cpu].lock();
        // SAFETY: a new control block, owned by the scheduler from here on.
        unsafe { (*t).cpu.store(cpu as u32, Ordering::Relaxed) };
        q.push_back(t);
        QUEUE_LEN[cpu].store(q.len, Ordering::Relaxed);
    }
    kick(cpu);
}

fn kick(cpu: usize) {
    if cpu != cpu_index() && IS_IDLE[cpu].load(Ordering::Acquire) {
        if let Some(k) = KICK.get() {
            k(cpu);
        }
    }
}

/// Makes a parked thread runnable, or leaves a token so its next `park` returns at once.
///
/// # Safety
/// `t` must be a live thread (not yet reaped).
pub unsafe fn unpark(t: *mut Thread) {
    // SAFETY: the caller guarantees `t` is alive.
    let th = unsafe { &mut *t };
    loop {
        let cpu = th.cpu.load(Ordering::Acquire) as usize;
        let mut q = QUEUES[cpu].lock();
        if th.cpu.load(Ordering::Acquire) as usize != cpu {
            continue;
        }
        match th.state() {
            ThreadState::Blocked => {
                th.set_state(ThreadState::Ready);
                q.push_back(t);
                QUEUE_LEN[cpu].store(q.len, Ordering::Relaxed);
                drop(q);
                kick(cpu);
            }
            ThreadState::Dead => {}
            _ => th.park_token = true,
        }
        return;
    }
}

/// Ends a workload thread that has been asked to exit. One that is parked or sleeping is
/// retired on the spot: it holds nothing (workload threads only wait at their resting point),
/// so it need not run again just to exit. One that is ready or running exits the next time
/// it is switched in. `t` must be alive (callers hold the thread table lock).
fn end_killed(t: *mut Thread) {
    // SAFETY: callers hold the thread table lock, which keeps `t` alive.
    let th = unsafe { &mut *t };
    loop {
        let cpu = th.cpu.load(Ordering::Acquire) as usize;
        let mut q = QUEUES[cpu].lock();
        if th.cpu.load(Ordering::Acquire) as usize != cpu {
            continue;
        }
        match th.state() {
            ThreadState::Sleeping | ThreadState::Blocked => {
                if th.state() == ThreadState::Sleeping {
                    q.sleepers.remove(t);
                }
                if th.unsettled {
                    th.unsettled = false;
                    UNSETTLED.fetch_sub(1, Ordering::Relaxed);
                }
                th.set_state(ThreadState::Dead);
                drop(q);
                hand_to_reaper(t);
            }
            ThreadState::Dead => {}
            ThreadState::Running => {
                th.park_token = true;
                drop(q);
                // It may have its CPU to itself and never yield: make that CPU reschedule.
                if cpu != cpu_index() {
                    if let Some(k) = KICK.get() {
                        k(cpu);
                    }
                }
            }
            ThreadState::Ready => th.park_token = true,
        }
        return;
    }
}

/// Queues a dead thread for the reaper and wakes it. Call with no run-queue lock held.
fn hand_to_reaper(t: *mut Thread) {
    {
        let mut z = ZOMBIES.lock();
        // SAFETY: dead, in no queue; the zombie list owns it now.
        unsafe { (*t).next = z.head };
        z.head = t;
    }
    let reaper = REAPER.load(Ordering::Acquire);
    if !reaper.is_null() && reaper != t {
        // SAFETY: the reaper never exits.
        unsafe { unpark(reaper) };
    }
}

/// Why a kill was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum KillError {
    /// No thread has that id.
    NoSuchThread(u64),
    /// The thread is not a workload thread.
    NotWorkload(u64),
}

impl core::fmt::Display for KillError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoSuchThread(t) => write!(f, "no thread {}", t),
            Self::NotWorkload(t) => write!(f, "thread {} is not a workload thread", t),
        }
    }
}

/// Must be called with the thread table locked (which keeps `t` alive).
fn request_kill(t: *mut Thread) -> bool {
    // SAFETY: the caller holds the table lock; the reaper removes a thread from the table
    // before freeing it.
    let th = unsafe { &*t };
    if th.state() == ThreadState::Dead || th.kill_requested.swap(true, Ordering::AcqRel) {
        return false;
    }
    PENDING_KILLS.fetch_add(1, Ordering::Relaxed);
    end_killed(t);
    true
}

/// Asks workload thread `tid` to exit and waits until it is gone.
pub fn kill(tid: u64) -> Result<u64, KillError> {
    {
        let threads = THREADS.lock();
        let &ptr = threads.get(&tid).ok_or(KillError::NoSuchThread(tid))?;
        let t = ptr as *mut Thread;
        // SAFETY: in the table, hence alive, while we hold the table lock.
        if unsafe { (*t).kind } != ThreadKind::Workload {
            return Err(KillError::NotWorkload(tid));
        }
        if !request_kill(t) {
            return Ok(0);
        }
    }
    wait_for_kills(&mut |_, _| {}, 1);
    Ok(1)
}

/// Asks every workload thread to exit and waits until all are gone; `progress(done, total)`
/// is called about once a second so the console can show it.
pub fn kill_all(progress: &mut dyn FnMut(usize, usize)) -> u64 {
    let mut killed = 0u64;
    // The table lock is held while each kill is requested (see walk_threads): the reaper
    // removes a thread from the table before freeing it.
    walk_threads(&mut |t| {
        // SAFETY: walk_threads hands out live control blocks.
        if unsafe { (*t).kind } == ThreadKind::Workload && request_kill(t) {
            killed += 1;
        }
    });
    wait_for_kills(progress, killed as usize);
    killed
}

/// Waits until every requested kill has been reaped; `progress(done, total)` about once a
/// second, where `total` is how many this caller asked for.
fn wait_for_kills(progress: &mut dyn FnMut(usize, usize), total: usize) {
    let mut last = timer::now();
    loop {
        let left = PENDING_KILLS.load(Ordering::Relaxed);
        if left == 0 {
            break;
        }
        let now = timer::now();
        if timer::ticks_to_ns(now - last) >= 1_000_000_000 {
            progress(total.saturating_sub(left), total);
            last = now;
        }
        sleep_ms(1);
    }
}

/// Visits up to `limit` threads in tid order.
pub fn for_each_thread(limit: usize, f: &mut dyn FnMut(&Thread)) {
    let threads = THREADS.lock();
    for (_, &p) in threads.iter().take(limit) {
        // SAFETY: in the table, hence alive, while we hold the lock.
        f(unsafe { &*(p as *const Thread) });
    }
}

/// Visits every live thread, a chunk at a time (so IRQs are not masked for long).
pub fn for_each_thread_chunked(f: &mut dyn FnMut(&Thread)) {
    // SAFETY: walk_threads hands out live control blocks.
    walk_threads(&mut |t| f(unsafe { &*t }));
}

/// Calls `f` for every thread in the table, in tid order, holding the table lock for a
/// chunk of them at a time. A thread seen here stays alive while `f` runs: the reaper takes
/// it out of the table (under this lock) before freeing it.
fn walk_threads(f: &mut dyn FnMut(*mut Thread)) {
    let mut next = 0u64;
    loop {
        let threads = THREADS.lock();
        let mut seen = 0;
        for (&tid, &p) in threads.range(next..).take(256) {
            next = tid + 1;
            seen += 1;
            f(p as *mut Thread);
        }
        if seen == 0 {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// CPUs

/// Registers CPU `cpu`'s idle thread; the CPU counts as online from now on.
pub fn add_cpu(cpu: usize) -> Result<(), SpawnError> {
    // Fixed: the threads the kernel cannot do without must run even when no page can be
    // found for a dynamic stack's reserve.
    // Named after its CPU, so `ps` does not mix it up with `idle` workload threads.
    let name = alloc::format!("cpu{}-idle", cpu);
    let tid = spawn_raw(
        &name,
        ThreadKind::Idle,
        StackPolicy::Fixed,
        idle_loop,
        cpu,
        None,
    )?;
    let p = *THREADS.lock().get(&tid).expect("idle thread just inserted");
    let t = p as *mut Thread;
    // SAFETY: just created, not queued anywhere.
    unsafe { (*t).cpu.store(cpu as u32, Ordering::Relaxed) };
    IDLE[cpu].store(t, Ordering::Release);
    Ok(())
}

/// Counts this CPU as online: new threads may be queued on it from now on (it runs them
/// once it calls [`start_this_cpu`]).
pub fn set_online() {
    let cpu = cpu_index();
    if !ONLINE[cpu].swap(true, Ordering::AcqRel) {
        ONLINE_COUNT.fetch_add(1, Ordering::AcqRel);
    }
}

/// Number of CPUs running the scheduler.
pub fn online_count() -> usize {
    ONLINE_COUNT.load(Ordering::Relaxed)
}

/// Whether CPU `cpu` runs the scheduler.
pub fn is_online(cpu: usize) -> bool {
    ONLINE[cpu].load(Ordering::Relaxed)
}

fn idle_loop(_cpu: usize) {
    loop {
        aarch64_cpu::asm::wfi();
    }
}

/// Starts scheduling on this CPU: runs the first ready thread (or idle). Never returns.
/// Called with IRQs masked, on the boot stack or the CPU's initial stack.
pub fn start_this_cpu() -> ! {
    let cpu = cpu_index();
    let mut frame = TrapFrame::default();
    let q = QUEUES[cpu].lock();
    switch_to_next(&mut frame, cpu, q);
    let top = crate::mm::layout::exception_stack_top(cpu);
    // The guard from `lock()` restored DAIF to masked; the first thread's SPSR unmasks.
    extern "C" {
        fn enter_first_frame(frame: *const TrapFrame, exception_stack_top: u64) -> !;
    }
    // SAFETY: the frame is a valid thread context and the exception stack is mapped.
    unsafe { enter_first_frame(&frame, top) }
}

// ---------------------------------------------------------------------------------------
// Exception context: everything below runs on the exception stack with IRQs masked.

/// Saves the running thread's registers and gives up its claim on its stack.
fn save_current(frame: &TrapFrame, cpu: usize) -> *mut Thread {
    let t = CURRENT[cpu].load(Ordering::Relaxed);
    // SAFETY: the current thread's control block; it is not running while we hold its frame.
    unsafe {
        (*t).context = *frame;
        (*t).stack.release_claim();
        // An idle thread is never queued; it waits, ready, for its CPU to have nothing else.
        if (*t).kind == ThreadKind::Idle {
            (*t).set_state(ThreadState::Ready);
        }
    }
    t
}

fn is_idle_thread(t: *mut Thread, cpu: usize) -> bool {
    t == IDLE[cpu].load(Ordering::Relaxed)
}

/// Takes one ready thread from another CPU's queue, if one can be had without waiting.
fn steal(cpu: usize) -> Option<*mut Thread> {
    let n = MAX_CPUS;
    for i in 1..n {
        let victim = (cpu + i) % n;
        if QUEUE_LEN[victim].load(Ordering::Relaxed) == 0 {
            continue;
        }
        if let Some(mut q) = QUEUES[victim].try_lock() {
            // SAFETY: the head is a live control block in that queue, under its lock.
            if q.head.is_null() || unsafe { (*q.head).pinned } {
                continue;
            }
            if let Some(t) = q.pop_front() {
                QUEUE_LEN[victim].store(q.len, Ordering::Relaxed);
                // SAFETY: taken from a run queue under its lock; it is ours now.
                unsafe { (*t).cpu.store(cpu as u32, Ordering::Release) };
                return Some(t);
            }
        }
    }
    None
}

/// Takes one ready thread from the CPU with the longest queue, if that queue is longer than
/// `own_len + 1` (so balancing never just moves the imbalance).
fn steal_from_busy(cpu: usize, own_len: usize) -> Option<*mut Thread> {
    let (victim, len) = QUEUE_LEN
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != cpu)
        .map(|(i, l)| (i, l.load(Ordering::Relaxed)))
        .max_by_key(|&(_, l)| l)?;
    if len < own_len + 2 {
        return None;
    }
    let mut q = QUEUES[victim].try_lock()?;
    // SAFETY: the head is a live control block in that queue, under its lock.
    if q.head.is_null() || unsafe { (*q.head).pinned } {
        return None;
    }
    let t = q.pop_front()?;
    QUEUE_LEN[victim].store(q.len, Ordering::Relaxed);
    // SAFETY: taken from a run queue under its lock; it is ours now.
    unsafe { (*t).cpu.store(cpu as u32, Ordering::Release) };
    Some(t)
}

/// Picks the next thread for this CPU and loads its context into `frame`. The previous
/// thread must already be saved (or dead) and queued wherever it belongs.
fn switch_to_next(frame: &mut TrapFrame, cpu: usize, mut q: IrqMutexGuard<'_, CpuQueue>) {
    let idle = IDLE[cpu].load(Ordering::Relaxed);
    let mut attempts = q.len + 1;
    let next = loop {
        let candidate = match q.pop_front() {
            Some(t) => Some(t),
            None => steal(cpu),
        };
        QUEUE_LEN[cpu].store(q.len, Ordering::Relaxed);
        let Some(t) = candidate else { break idle };
        // SAFETY: a control block taken from a run queue; the scheduler owns it now.
        let th = unsafe { &mut *t };
        if th.stack.try_claim() {
            if th.kill_requested.load(Ordering::Relaxed) && th.kind == ThreadKind::Workload {
                // Exit from the top of its own stack, which is always mapped.
                th.context =
                    TrapFrame::new_thread(thread_killed as *const () as u64, 0, th.stack.top(), 0);
                break t;
            }
            if stack::prepare_switch_in(cpu, &th.stack) {
                break t;
            }
            th.stack.release_claim();
        }
        // Being trimmed right now, or its stack could not be guaranteed: try the others first.
        q.push_back(t);
        attempts -= 1;
        if attempts == 0 {
            break idle;
        }
    };
    drop(q);
    wake_reaper_if_asked();
    // SAFETY: `next` is a live control block chosen above (or this CPU's idle thread).
    let th = unsafe { &mut *next };
    th.set_state(ThreadState::Running);
    th.cpu.store(cpu as u32, Ordering::Relaxed);
    CURRENT[cpu].store(next, Ordering::Relaxed);
    IS_IDLE[cpu].store(next == idle, Ordering::Release);
    *frame = th.context;
    SWITCHES.fetch_add(1, Ordering::Relaxed);
    arm_timer(cpu, true);
}

/// Programs this CPU's timer for the end of the slice or the first sleeper, whichever is first.
fn arm_timer(cpu: usize, new_slice: bool) {
    let now = timer::now();
    let mut q = QUEUES[cpu].lock();
    if new_slice || q.slice_end <= now {
        q.slice_end = now + timer::ns_to_ticks(TIME_SLICE_NS);
    }
    let mut deadline = q.slice_end;
    if let Some(wake) = q.sleepers.first_deadline() {
        deadline = deadline.min(wake);
    }
    drop(q);
    timer::arm_at(deadline);
}

/// The timer interrupt: wakes sleepers that are due and preempts at the end of a slice.
pub fn on_timer_tick(frame: &mut TrapFrame) {
    let cpu = cpu_index();
    let now = timer::now();
    let mut q = QUEUES[cpu].lock();
    while let Some(t) = q.sleepers.pop_due(now) {
        // SAFETY: sleepers are live control blocks owned by this queue.
        unsafe { (*t).set_state(ThreadState::Ready) };
        q.push_back(t);
    }
    // Balance: pull a waiting thread from the busiest CPU when its queue is longer than ours
    // by two or more, so threads that never sleep still share all CPUs.
    if let Some(t) = steal_from_busy(cpu, q.len) {
        q.push_back(t);
    }
    QUEUE_LEN[cpu].store(q.len, Ordering::Relaxed);
    let current = CURRENT[cpu].load(Ordering::Relaxed);
    let idle = is_idle_thread(current, cpu);
    if (now >= q.slice_end && q.len > 0)
        || (idle && (q.len > 0 || any_queued()))
        || must_exit(current)
    {
        let t = save_current(frame, cpu);
        if !idle {
            // SAFETY: the thread we just saved.
            unsafe { (*t).set_state(ThreadState::Ready) };
            q.push_back(t);
        }
        switch_to_next(frame, cpu, q);
    } else {
        drop(q);
        arm_timer(cpu, false);
    }
}

fn any_queued() -> bool {
    QUEUE_LEN.iter().any(|l| l.load(Ordering::Relaxed) > 0)
}

/// A reschedule request from another CPU (it queued work for us while we were idle).
pub fn on_reschedule(frame: &mut TrapFrame) {
    let cpu = cpu_index();
    let current = CURRENT[cpu].load(Ordering::Relaxed);
    if is_idle_thread(current, cpu) {
        let q = QUEUES[cpu].lock();
        save_current(frame, cpu);
        switch_to_next(frame, cpu, q);
    } else if must_exit(current) {
        let mut q = QUEUES[cpu].lock();
        let t = save_current(frame, cpu);
        // SAFETY: the thread we just saved.
        unsafe { (*t).set_state(ThreadState::Ready) };
        q.push_front(t);
        switch_to_next(frame, cpu, q);
    }
}

/// Whether `t`, running now, is a workload thread asked to exit: it must be switched out so
/// that `switch_to_next` sends it to its exit, even if it never gives up the CPU itself.
fn must_exit(t: *mut Thread) -> bool {
    // SAFETY: the current thread of this CPU.
    !t.is_null()
        && unsafe {
            (*t).kind == ThreadKind::Workload && (*t).kill_requested.load(Ordering::Relaxed)
        }
}

/// Handles a system call from a thread. Returns with `frame` holding whatever thread runs next.
pub fn on_syscall(frame: &mut TrapFrame, num: u16) {
    let cpu = cpu_index();
    match num {
        syscall::NOP => frame.x[0] = 0,
        syscall::YIELD => {
            let mut q = QUEUES[cpu].lock();
            let t = save_current(frame, cpu);
            if !is_idle_thread(t, cpu) {
                // SAFETY: the thread we just saved.
                unsafe { (*t).set_state(ThreadState::Ready) };
                q.push_back(t);
            }
            switch_to_next(frame, cpu, q);
        }
        syscall::SLEEP_UNTIL => {
            let deadline = frame.x[0];
            let mut q = QUEUES[cpu].lock();
            frame.x[0] = 0;
            if deadline <= timer::now() {
                return;
            }
            if !q.sleepers.has_room() {
                // sleep_until made no room (memory ran out): it waits by yielding instead.
                frame.x[0] = 1;
                return;
            }
            let t = save_current(frame, cpu);
            // SAFETY: the thread we just saved; it is not in any queue.
            let th = unsafe { &mut *t };
            th.wake_at = deadline;
            th.set_state(ThreadState::Sleeping);
            q.sleepers.push(t);
            switch_to_next(frame, cpu, q);
        }
        syscall::PARK => {
            let q = QUEUES[cpu].lock();
            let t = CURRENT[cpu].load(Ordering::Relaxed);
            // SAFETY: the current thread's control block, under its CPU's queue lock.
            let th = unsafe { &mut *t };
            if th.park_token || th.kill_requested.load(Ordering::Relaxed) {
                th.park_token = false;
                return;
            }
            save_current(frame, cpu);
            th.set_state(ThreadState::Blocked);
            switch_to_next(frame, cpu, q);
        }
        syscall::EXIT => terminate_current(frame),
        _ => frame.x[0] = u64::MAX,
    }
}

/// Ends the current thread (it exited, was killed, or faulted fatally) and switches away.
/// Its stack and control block go to the reaper.
pub fn terminate_current(frame: &mut TrapFrame) {
    let cpu = cpu_index();
    let t = CURRENT[cpu].load(Ordering::Relaxed);
    {
        let _q = QUEUES[cpu].lock();
        // SAFETY: the current thread; nothing else changes these fields while it runs.
        let th = unsafe { &mut *t };
        th.stack.release_claim();
        if th.unsettled {
            th.unsettled = false;
            UNSETTLED.fetch_sub(1, Ordering::Relaxed);
        }
        th.set_state(ThreadState::Dead);
    }
    hand_to_reaper(t);
    let q = QUEUES[cpu].lock();
    switch_to_next(frame, cpu, q);
}

/// Starts the reaper, which returns dead threads' stacks and control blocks.
pub fn start_reaper() -> Result<(), SpawnError> {
    // Fixed, like idle: the reaper is what gives memory back when it has run out.
    let tid = spawn_raw(
        "reaper",
        ThreadKind::System,
        StackPolicy::Fixed,
        reaper_loop,
        0,
        None,
    )?;
    let p = *THREADS.lock().get(&tid).expect("reaper just inserted");
    REAPER.store(p as *mut Thread, Ordering::Release);
    Ok(())
}

/// Asks the reaper to trim sleeping threads' stacks (memory ran low). May be called with a
/// run-queue lock held: the reaper is woken later, by [`switch_to_next`] once it has
/// dropped that lock.
pub fn request_trim() {
    if !TRIM_REQUESTED.swap(true, Ordering::AcqRel) {
        WAKE_REAPER.store(true, Ordering::Release);
    }
}

static TRIM_REQUESTED: AtomicBool = AtomicBool::new(false);
static WAKE_REAPER: AtomicBool = AtomicBool::new(false);

fn wake_reaper_if_asked() {
    if WAKE_REAPER.swap(false, Ordering::AcqRel) {
        let reaper = REAPER.load(Ordering::Acquire);
        if !reaper.is_null() {
            // SAFETY: the reaper never exits.
            unsafe { unpark(reaper) };
        }
    }
}

/// Dead threads released per batch.
const REAP_BATCH: usize = 1024;

fn reaper_loop(_: usize) {
    // Allocated once: reaping must not need memory, since it is what gives memory back.
    let mut batch = stack::ReleaseBatch::with_room_for(REAP_BATCH);
    let mut joins = alloc::vec::Vec::with_capacity(REAP_BATCH);
    loop {
        let list = {
            let mut z = ZOMBIES.lock();
            core::mem::replace(&mut z.head, core::ptr::null_mut())
        };
        if list.is_null() {
            if TRIM_REQUESTED.swap(false, Ordering::AcqRel) {
                stack::trim_all();
                continue;
            }
            park();
            continue;
        }
        reap_list(list, &mut batch, &mut joins);
    }
}

/// Frees a list of dead threads (linked through `next`): control blocks, table entries,
/// and their stacks in one batch; then tells whoever waits in `join`.
fn reap_list(
    mut t: *mut Thread,
    batch: &mut stack::ReleaseBatch,
    joins: &mut alloc::vec::Vec<Arc<JoinState>>,
) {
    while !t.is_null() {
        let mut killed = 0;
        while !t.is_null() && batch.has_room() && joins.len() < joins.capacity() {
            // SAFETY: dead control blocks handed over through the zombie list; no CPU runs
            // or queues them any more, so this is the only reference.
            let th = unsafe { &mut *t };
            let next = th.next;
            THREADS.lock().remove(&th.tid);
            if th.kind == ThreadKind::Workload {
                WORKLOAD_THREADS.fetch_sub(1, Ordering::Relaxed);
            }
            if th.kill_requested.load(Ordering::Relaxed) {
                killed += 1;
            }
            if let Some(j) = th.join.take() {
                joins.push(j);
            }
            // SAFETY: `t` was allocated with this layout in spawn_raw and is moved out and
            // freed once, here.
            let owned = unsafe { t.read() };
            batch.add(owned.stack);
            // SAFETY: as above.
            unsafe { alloc::alloc::dealloc(t as *mut u8, core::alloc::Layout::new::<Thread>()) };
            t = next;
        }
        batch.finish();
        // Only now is their memory back: `kill` waits for this count.
        PENDING_KILLS.fetch_sub(killed, Ordering::Release);
        for j in joins.drain(..) {
            j.done.store(true, Ordering::Release);
            let w = j.waiter.load(Ordering::Acquire);
            if !w.is_null() {
                // SAFETY: the waiter is blocked in join, hence alive.
                unsafe { unpark(w) };
            }
        }
    }
}
