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

/// The entry of a thread started from a closure of type `F` that travels on its own stack
/// (see [`spawn_closure`]): `arg` is where the closure lies, at the top of the stack.
fn closure_entry_on_stack<F: FnOnce() + Send + 'static>(arg: usize) {
    // SAFETY: `spawn_closure::<F>` moved an `F` to `arg` (aligned, above this thread's first
    // SP, so nothing has written over it) and gave up its own copy; read once.
    let f = unsafe { core::ptr::read(arg as *const F) };
    f();
}

/// The entry of a thread started from a closure of type `F` too large to travel on the
/// stack: `arg` is its box.
fn closure_entry_boxed<F: FnOnce() + Send + 'static>(arg: usize) {
    // SAFETY: `arg` came from `try_box::<F>` in `spawn_closure::<F>` (a block of the global
    // allocator with F's layout holding an F, as Box::into_raw gives it) and is used once.
    let f = unsafe { Box::from_raw(arg as *mut F) };
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
    spawn_closure(name, policy, None, f, false)
}

/// Starts a system thread of the kernel's own (the shell) running `f`, on a fixed stack of
/// [`stack::SYSTEM_STACK_BYTES`] rather than `kstack.max`.
pub fn spawn_system_with<F: FnOnce() + Send + 'static>(
    name: &str,
    f: F,
) -> Result<JoinHandle, SpawnError> {
    spawn_closure(name, StackPolicy::Fixed, None, f, true)
}

/// Starts a system thread running `f` on CPU `cpu` only (it is never migrated), for
/// benchmarks and tests that need to know where a thread runs.
pub fn spawn_pinned<F: FnOnce() + Send + 'static>(
    name: &str,
    policy: StackPolicy,
    cpu: usize,
    f: F,
) -> Result<JoinHandle, SpawnError> {
    spawn_closure(name, policy, Some(cpu), f, false)
}

/// Closures at most this large travel to the new thread at the top of its own stack, above
/// its first SP (well inside the initial page, which every stack has mapped), so that
/// creating a thread takes no heap allocation for them; larger ones are boxed.
const CLOSURE_ON_STACK_MAX: usize = 256;

/// The alignment a thread's SP keeps (AAPCS64), and so the most a closure on the stack may need.
const STACK_ALIGN: usize = 16;

/// Creates the thread of [`spawn`] and its kin. Takes no infallible allocation: the join
/// state comes from its slab cache and a closure too large for the stack from
/// `alloc::alloc::alloc`, each checked, so with memory out this returns
/// [`SpawnError::OutOfMemory`] having taken nothing (`f` is dropped).
pub(super) fn spawn_closure<F: FnOnce() + Send + 'static>(
    name: &str,
    policy: StackPolicy,
    pinned: Option<usize>,
    f: F,
    system_stack: bool,
) -> Result<JoinHandle, SpawnError> {
    let Ok(state) = Join::try_new(JoinState::new()) else {
        return Err(SpawnError::OutOfMemory);
    };
    let join = Some(state.clone());
    let made = if size_of::<F>() <= CLOSURE_ON_STACK_MAX && align_of::<F>() <= STACK_ALIGN {
        let f = core::mem::ManuallyDrop::new(f);
        let bytes = (&*f as *const F as *const u8, size_of::<F>());
        let made = spawn_thread(
            name,
            ThreadKind::System,
            policy,
            closure_entry_on_stack::<F>,
            0,
            join,
            pinned,
            system_stack,
            Some(bytes),
        );
        // Created: the closure's bytes moved to the thread. Not: it is still ours, here.
        if made.is_err() {
            drop(core::mem::ManuallyDrop::into_inner(f));
        }
        made
    } else {
        // `Box::new` would abort when memory is out: allocate the box by hand, checked.
        let Some(boxed) = try_box(f) else {
            return Err(SpawnError::OutOfMemory);
        };
        let arg = boxed as usize;
        let made = spawn_thread(
            name,
            ThreadKind::System,
            policy,
            closure_entry_boxed::<F>,
            arg,
            join,
            pinned,
            system_stack,
            None,
        );
        if made.is_err() {
            // SAFETY: the thread was not created, so the box is still ours.
            drop(unsafe { Box::from_raw(arg as *mut F) });
        }
        made
    };
    made.map(|tid| JoinHandle { tid, state })
}

/// `value` moved into a heap block of its own, as `Box::into_raw(Box::new(value))` gives
/// it (so `Box::from_raw` takes it back), or `None` (`value` dropped) when the heap has no
/// block for it. A zero-sized value takes no memory.
fn try_box<T>(value: T) -> Option<*mut T> {
    let layout = core::alloc::Layout::new::<T>();
    let raw = if layout.size() == 0 {
        core::ptr::NonNull::<T>::dangling().as_ptr()
    } else {
        // SAFETY: the layout's size is not zero.
        let p = unsafe { alloc::alloc::alloc(layout) } as *mut T;
        if p.is_null() {
            return None;
        }
        p
    };
    // SAFETY: `raw` is valid for a write of a T and aligned for it: a fresh block of the
    // global allocator with T's layout, or (T zero-sized) a dangling aligned pointer.
    unsafe { raw.write(value) };
    Some(raw)
}

/// Frames kept free for the kernel itself: spawning stops before memory is this low, so the
/// heap and the stack reserves never fail where they cannot report it.
pub const SPAWN_LOW_WATER_PAGES: u64 = 512;

/// Starts a thread calling `entry(arg)`; returns its id. Workload threads are counted for
/// `settle` and may be killed.
pub fn spawn_raw(
    name: &str,
    kind: ThreadKind,
    policy: StackPolicy,
    entry: Entry,
    arg: usize,
    join: Option<Join>,
) -> Result<u64, SpawnError> {
    spawn_thread(name, kind, policy, entry, arg, join, None, false, None)
}

/// [`spawn_raw`], optionally pinned to one CPU (it then runs there only).
pub fn spawn_raw_on(
    name: &str,
    kind: ThreadKind,
    policy: StackPolicy,
    entry: Entry,
    arg: usize,
    join: Option<Join>,
    pinned: Option<usize>,
) -> Result<u64, SpawnError> {
    spawn_thread(name, kind, policy, entry, arg, join, pinned, false, None)
}

/// [`spawn_raw_on`], optionally on a system stack ([`Stack::create_system`]: fixed, its
/// own size, for the kernel's own threads, which are then `essential`), and optionally with
/// `payload` (address and size, at most [`CLOSURE_ON_STACK_MAX`] bytes) copied to the top of
/// the new stack: the thread then starts below it and `arg` is its address instead.
#[allow(clippy::too_many_arguments)]
pub(super) fn spawn_thread(
    name: &str,
    kind: ThreadKind,
    policy: StackPolicy,
    entry: Entry,
    arg: usize,
    join: Option<Join>,
    pinned: Option<usize>,
    system_stack: bool,
    payload: Option<(*const u8, usize)>,
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
    let (sp, arg) = match payload {
        Some((src, len)) => {
            debug_assert!(len <= CLOSURE_ON_STACK_MAX);
            let at = (top - len as u64) & !(STACK_ALIGN as u64 - 1);
            // SAFETY: [at, top) lies in the stack's initial page, mapped and published by
            // `Stack::create`, which nothing else can reach yet; `src` holds `len` bytes.
            unsafe { core::ptr::copy_nonoverlapping(src, at as *mut u8, len) };
            (at, at as usize)
        }
        None => (top, arg),
    };
    let mut context = TrapFrame::new_thread(
        thread_start as *const () as u64,
        entry as *const () as u64,
        sp,
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
            #[cfg(feature = "test-hooks")]
            crate::test_hooks::note_kick(cpu);
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
