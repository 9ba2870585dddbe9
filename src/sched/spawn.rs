//! Creating threads (closures or raw entry points, pinned or placed on the least-loaded
//! CPU), the first code a thread runs, and waking a parked thread.
use super::*;

extern "C" fn thread_start(entry: usize, arg: usize) -> ! {
    // SAFETY: `entry` was stored from an `Entry` by `spawn_raw`.
    let f: Entry = unsafe { core::mem::transmute::<usize, Entry>(entry) };
    f(arg);
    exit()
}

pub(super) extern "C" fn thread_killed() -> ! {
    exit()
}

pub(super) fn closure_entry(arg: usize) {
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
    spawn_closure(name, policy, None, Box::new(f), false)
}

/// Starts a system thread of the kernel's own (the shell) running `f`, on a fixed stack of
/// [`stack::SYSTEM_STACK_BYTES`] rather than `kstack.max`.
pub fn spawn_system_with<F: FnOnce() + Send + 'static>(
    name: &str,
    f: F,
) -> Result<JoinHandle, SpawnError> {
    spawn_closure(name, StackPolicy::Fixed, None, Box::new(f), true)
}

/// Starts a system thread running `f` on CPU `cpu` only (it is never migrated), for
/// benchmarks and tests that need to know where a thread runs.
pub fn spawn_pinned<F: FnOnce() + Send + 'static>(
    name: &str,
    policy: StackPolicy,
    cpu: usize,
    f: F,
) -> Result<JoinHandle, SpawnError> {
    spawn_closure(name, policy, Some(cpu), Box::new(f), false)
}

pub(super) fn spawn_closure(
    name: &str,
    policy: StackPolicy,
    pinned: Option<usize>,
    f: Box<dyn FnOnce() + Send>,
    system_stack: bool,
) -> Result<JoinHandle, SpawnError> {
    let arg = Box::into_raw(Box::new(f)) as usize;
    let state = Arc::new(JoinState {
        done: AtomicBool::new(false),
        waiter: AtomicPtr::new(core::ptr::null_mut()),
    });
    match spawn_thread(
        name,
        ThreadKind::System,
        policy,
        closure_entry,
        arg,
        Some(state.clone()),
        pinned,
        system_stack,
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
pub(super) const SPAWN_LOW_WATER_PAGES: u64 = 512;

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
    spawn_thread(name, kind, policy, entry, arg, join, None, false)
}

/// [`spawn_raw`], optionally pinned to one CPU (it then runs there only).
pub fn spawn_raw_on(
    name: &str,
    kind: ThreadKind,
    policy: StackPolicy,
    entry: Entry,
    arg: usize,
    join: Option<Arc<JoinState>>,
    pinned: Option<usize>,
) -> Result<u64, SpawnError> {
    spawn_thread(name, kind, policy, entry, arg, join, pinned, false)
}

/// [`spawn_raw_on`], optionally on a system stack ([`Stack::create_system`]: fixed, its
/// own size, for the kernel's own threads, which are then `essential`).
#[allow(clippy::too_many_arguments)]
pub(super) fn spawn_thread(
    name: &str,
    kind: ThreadKind,
    policy: StackPolicy,
    entry: Entry,
    arg: usize,
    join: Option<Arc<JoinState>>,
    pinned: Option<usize>,
    system_stack: bool,
) -> Result<u64, SpawnError> {
    let low = || {
        !system_stack
            && crate::mm::frame::free_pages()
                < SPAWN_LOW_WATER_PAGES + stack::initial_pages(policy) as u64
    };
    // Memory ran low: park the sleepers waiting to be parked now rather than later (a mass
    // spawn can outrun `kstack.park_after`), then look again.
    if low() && (!stack::park::enabled() || parker::park_listed_now() == 0 || low()) {
        return Err(SpawnError::OutOfMemory);
    }
    let stack = if system_stack {
        Stack::create_system()
    } else {
        Stack::create(policy)
    };
    let stack = stack.map_err(|e| match e {
        stack::StackError::ArenaFull => SpawnError::ArenaFull,
        stack::StackError::OutOfMemory => SpawnError::OutOfMemory,
    })?;
    let tid = NEXT_TID.fetch_add(1, Ordering::Relaxed);
    let top = stack.top();
    let Some(raw) = THREAD_CACHE.alloc() else {
        stack.destroy();
        return Err(SpawnError::OutOfMemory);
    };
    let raw = raw.as_ptr() as *mut Thread;
    let mut context = TrapFrame::new_thread(
        thread_start as *const () as u64,
        entry as *const () as u64,
        top,
        0,
    );
    context.x[1] = arg as u64;
    let start = thread::Start {
        context,
        join,
        pinned: pinned.is_some(),
        essential: system_stack,
    };
    let slot = stack.slot();
    // SAFETY: `raw` is a fresh object of the thread cache: size and alignment of a Thread.
    unsafe { raw.write(Thread::new(tid, name, kind, stack, start)) };
    if !table::insert(slot, raw) {
        // SAFETY: written just above and never published: moved out and freed once.
        let t = unsafe { raw.read() };
        // SAFETY: from THREAD_CACHE, unused from here on.
        unsafe { THREAD_CACHE.free(core::ptr::NonNull::new_unchecked(raw as *mut u8)) };
        t.stack.destroy();
        return Err(SpawnError::OutOfMemory);
    }
    if kind == ThreadKind::Workload {
        WORKLOAD_THREADS.fetch_add(1, Ordering::Relaxed);
        UNSETTLED.fetch_add(1, Ordering::Relaxed);
    }
    if kind != ThreadKind::Idle {
        enqueue_new(raw, pinned);
    }
    Ok(tid)
}

pub(super) fn online_cpus() -> usize {
    ONLINE_COUNT.load(Ordering::Relaxed).max(1)
}

pub(super) fn enqueue_new(t: *mut Thread, pinned: Option<usize>) {
    // Round robin over online CPUs; idle CPUs also steal, so the load evens out.
    let cpu = match pinned {
        Some(cpu) => cpu % MAX_CPUS,
        None => {
            // The k-th online CPU, k going round all of them in turn.
            let k = NEXT_CPU.fetch_add(1, Ordering::Relaxed) % online_cpus();
            let online = ONLINE.iter().map(|o| o.load(Ordering::Relaxed));
            balance::nth_online(online, k).unwrap_or(0)
        }
    };
    {
        let mut q = QUEUES[cpu].lock();
        // SAFETY: a new control block, in no queue, owned by the scheduler from here on
        // (alive until it is dead and reaped).
        unsafe {
            (*t).cpu.store(cpu as u32, Ordering::Relaxed);
            q.push_back(t);
        }
        QUEUE_LEN[cpu].store(q.len(), Ordering::Relaxed);
    }
    kick(cpu);
}

/// Wakes CPU `cpu` if it is idle. Call after queueing work for it and dropping its queue
/// lock: a CPU that went idle before our push said so under that lock (`switch_to_next`),
/// so the load below sees it. IRQs are masked so that "this CPU" stays this CPU.
pub(super) fn kick(cpu: usize) {
    let daif = crate::arch::irq::save_and_disable();
    if cpu != cpu_index() && IS_IDLE[cpu].load(Ordering::Acquire) {
        if let Some(k) = KICK.get() {
            k(cpu);
        }
    }
    crate::arch::irq::restore(daif);
}

/// Makes a parked thread runnable, or leaves a token so its next `park` returns at once.
///
/// # Safety
/// `t` must be a live thread (not yet reaped).
pub unsafe fn unpark(t: *mut Thread) {
    // SAFETY: the caller guarantees `t` is alive.
    let th = unsafe { &*t };
    loop {
        let cpu = th.cpu.load(Ordering::Acquire) as usize;
        let mut q = QUEUES[cpu].lock();
        if th.cpu.load(Ordering::Acquire) as usize != cpu {
            continue;
        }
        match th.state() {
            ThreadState::Blocked => {
                // SAFETY: blocked on this CPU (checked under its lock): alive, in no run
                // queue, and in this CPU's park list or in none.
                unsafe {
                    q.parkable.remove(t);
                    th.set_state(ThreadState::Ready);
                    q.push_back(t);
                }
                QUEUE_LEN[cpu].store(q.len(), Ordering::Relaxed);
                drop(q);
                kick(cpu);
            }
            ThreadState::Dead => {}
            _ => th.park_token.store(true, Ordering::Relaxed),
        }
        return;
    }
}
