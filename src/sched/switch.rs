//! The context switch and everything else that runs in exception context (on the exception
//! stack, IRQs masked): saving the interrupted thread, picking the next, the timer tick, the
//! reschedule SGI, system calls and terminating a faulted thread.
use super::*;

/// Saves the running thread's registers and gives up its claim on its stack.
pub(super) fn save_current(frame: &TrapFrame, cpu: usize) -> *mut Thread {
    let t = CURRENT[cpu].load(Ordering::Relaxed);
    // SAFETY: the current thread's control block, alive while it is current here.
    let th = unsafe { &*t };
    // SAFETY: this CPU holds the thread's stack claim (taken when it was switched in here)
    // until just below, or it is this CPU's idle thread, which no other CPU ever switches:
    // the registers are ours to write, and it is not running while we hold its frame.
    unsafe { *th.context_mut() = *frame };
    th.stack.release_claim();
    // An idle thread is never queued; it waits, ready, for its CPU to have nothing else.
    if th.kind == ThreadKind::Idle {
        th.set_state(ThreadState::Ready);
    }
    t
}

pub(super) fn is_idle_thread(t: *mut Thread, cpu: usize) -> bool {
    t == IDLE[cpu].load(Ordering::Relaxed)
}

/// Picks the next thread for this CPU and loads its context into `frame`. The previous
/// thread must already be saved (or dead) and queued wherever it belongs.
pub(super) fn switch_to_next(
    frame: &mut TrapFrame,
    cpu: usize,
    mut q: IrqMutexGuard<'_, CpuQueue>,
) {
    let idle = IDLE[cpu].load(Ordering::Relaxed);
    let mut attempts = q.len() + 1;
    let next = loop {
        let candidate = match q.pop_front() {
            Some(t) => Some(t),
            None => steal(cpu),
        };
        QUEUE_LEN[cpu].store(q.len(), Ordering::Relaxed);
        let Some(t) = candidate else { break idle };
        // SAFETY: a control block taken from a run queue: alive, and this CPU's now.
        let th = unsafe { &*t };
        if th.stack.try_claim() {
            if th.kill_requested.load(Ordering::Relaxed) && th.kind == ThreadKind::Workload {
                // Exit from the top of its own stack, which is always mapped.
                // SAFETY: the claim just taken makes the registers this CPU's.
                unsafe {
                    *th.context_mut() = TrapFrame::new_thread(
                        thread_killed as *const () as u64,
                        0,
                        th.stack.top(),
                        0,
                    )
                };
                break t;
            }
            if stack::prepare_switch_in(cpu, &th.stack) {
                break t;
            }
            th.stack.release_claim();
        }
        // Being trimmed right now, or its stack could not be guaranteed: try the others first.
        // SAFETY: taken from a run queue just above: alive, in none now.
        unsafe { q.push_back(t) };
        attempts -= 1;
        if attempts == 0 {
            break idle;
        }
    };
    // Idle or not, said before the lock goes: a CPU that queues a thread here after this
    // (under this lock) then sees that this one is idle and kicks it (see `kick`); said
    // after, it could look in between and find it still busy, and the thread would wait
    // for the next tick.
    IS_IDLE[cpu].store(next == idle, Ordering::Release);
    drop(q);
    #[cfg(feature = "test-hooks")]
    crate::test_hooks::queue_unlocked(cpu, next == idle);
    wake_reaper_if_asked();
    parker::wake_if_asked();
    // SAFETY: `next` is a live control block chosen above (or this CPU's idle thread).
    let th = unsafe { &*next };
    th.set_state(ThreadState::Running);
    th.cpu.store(cpu as u32, Ordering::Relaxed);
    CURRENT[cpu].store(next, Ordering::Relaxed);
    stack::strategy::switched_in(cpu, &th.stack);
    // SAFETY: this CPU holds its stack claim (taken above; an idle thread's stack is never
    // trimmed or parked, and only its own CPU runs it), so nobody writes the registers.
    *frame = unsafe { *th.context() };
    SWITCHES.fetch_add(1, Ordering::Relaxed);
    arm_timer(cpu, true);
}

/// [`TIME_SLICE_NS`] in counter ticks, worked out on first use: the counter's frequency is
/// fixed from boot, and every context switch re-arms the timer (the conversion is a few
/// dozen instructions of 128-bit arithmetic).
fn slice_ticks() -> u64 {
    static SLICE_TICKS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
    let ticks = SLICE_TICKS.load(Ordering::Relaxed);
    if ticks != 0 {
        return ticks;
    }
    let ticks = timer::ns_to_ticks(TIME_SLICE_NS);
    SLICE_TICKS.store(ticks, Ordering::Relaxed);
    ticks
}

/// Programs this CPU's timer for the end of the slice or the first sleeper, whichever is first.
pub(super) fn arm_timer(cpu: usize, new_slice: bool) {
    let now = timer::now();
    let mut q = QUEUES[cpu].lock();
    if new_slice || q.slice_end <= now {
        q.slice_end = now + slice_ticks();
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
        // SAFETY: sleepers are live control blocks of this queue, each in this CPU's park
        // list or in none, and in no run queue.
        unsafe {
            q.parkable.remove(t);
            (*t).set_state(ThreadState::Ready);
            q.push_back(t);
        }
    }
    // Balance: pull a waiting thread from the busiest CPU when its queue is longer than ours
    // by two or more, so threads that never sleep still share all CPUs.
    if let Some(t) = steal_from_busy(cpu, q.len()) {
        // SAFETY: just taken from another run queue: alive, in none now.
        unsafe { q.push_back(t) };
    }
    QUEUE_LEN[cpu].store(q.len(), Ordering::Relaxed);
    let current = CURRENT[cpu].load(Ordering::Relaxed);
    let idle = is_idle_thread(current, cpu);
    // The growth reserve drains here when memory is low or the CPU has gone quiet
    // (stack::reserve::on_tick); it must know the stack it serves now.
    // SAFETY: the current thread's control block, alive while it is current.
    crate::stack::on_tick(cpu, now, unsafe { current.as_ref() }.map(|t| &t.stack));
    if (now >= q.slice_end && q.len() > 0)
        || (idle && (q.len() > 0 || any_queued()))
        || must_exit(current)
    {
        let t = save_current(frame, cpu);
        if !idle {
            // SAFETY: the thread we just saved: alive, running until now, so in no queue.
            unsafe {
                (*t).set_state(ThreadState::Ready);
                q.push_back(t);
            }
        }
        switch_to_next(frame, cpu, q);
    } else {
        drop(q);
        arm_timer(cpu, false);
    }
}

pub(super) fn any_queued() -> bool {
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
        // SAFETY: the thread we just saved: alive, running until now, so in no queue.
        unsafe {
            (*t).set_state(ThreadState::Ready);
            q.push_front(t);
        }
        switch_to_next(frame, cpu, q);
    }
}

/// Whether `t`, running now, is a workload thread asked to exit: it must be switched out so
/// that `switch_to_next` sends it to its exit, even if it never gives up the CPU itself.
pub(super) fn must_exit(t: *mut Thread) -> bool {
    // SAFETY: the current thread of this CPU.
    !t.is_null()
        && unsafe {
            (*t).kind == ThreadKind::Workload && (*t).kill_requested.load(Ordering::Relaxed)
        }
}

/// The current thread's stack growth found this CPU's reserve empty: switch it out. Its
/// frame still points at the faulting instruction, which it retries when it next runs,
/// after `switch_to_next` refilled the reserve for it (or it waits in the queue while no
/// memory can be found). Exception context, IRQs masked.
pub fn wait_for_reserve(frame: &mut TrapFrame) {
    let cpu = cpu_index();
    let mut q = QUEUES[cpu].lock();
    let t = save_current(frame, cpu);
    // SAFETY: the thread we just saved: alive, running until now, so in no queue.
    unsafe {
        (*t).set_state(ThreadState::Ready);
        q.push_back(t);
    }
    switch_to_next(frame, cpu, q);
}

/// Handles a system call from a thread. Returns with `frame` holding whatever thread runs next.
/// The dispatch has no stack frame of its own: each call that may switch threads is a
/// function of its own (out of line), so a call that does not (`NOP`) costs only the match.
pub fn on_syscall(frame: &mut TrapFrame, num: u16) {
    match num {
        syscall::NOP => frame.x[0] = 0,
        syscall::YIELD => sys_yield(frame),
        syscall::SLEEP_UNTIL => sys_sleep_until(frame),
        syscall::PARK => sys_park(frame),
        syscall::EXIT => sys_exit(frame),
        syscall::PIN_TO => pin_to(frame, cpu_index()),
        _ => frame.x[0] = u64::MAX,
    }
}

/// The `YIELD` system call: the thread goes to the back of its queue.
#[inline(never)]
fn sys_yield(frame: &mut TrapFrame) {
    let cpu = cpu_index();
    let mut q = QUEUES[cpu].lock();
    let t = save_current(frame, cpu);
    if !is_idle_thread(t, cpu) {
        // SAFETY: the thread we just saved: alive, running until now, so in no queue.
        unsafe {
            (*t).set_state(ThreadState::Ready);
            q.push_back(t);
        }
    }
    switch_to_next(frame, cpu, q);
}

/// The `SLEEP_UNTIL` system call: `x0` holds the deadline; 0 (slept) or 1 (no room) back.
#[inline(never)]
fn sys_sleep_until(frame: &mut TrapFrame) {
    let cpu = cpu_index();
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
    // SAFETY: the thread we just saved: alive, running until now, so in no queue;
    // its deadline is set before it joins the sleepers and fixed while it is there.
    unsafe {
        (*t).wake_at.store(deadline, Ordering::Relaxed);
        (*t).set_state(ThreadState::Sleeping);
        q.sleepers.push(t);
    }
    parker::note_asleep(&mut q.parkable, t);
    switch_to_next(frame, cpu, q);
}

/// The `PARK` system call: blocks until `unpark`, unless a token (or a kill) is pending.
#[inline(never)]
fn sys_park(frame: &mut TrapFrame) {
    let cpu = cpu_index();
    let mut q = QUEUES[cpu].lock();
    let t = CURRENT[cpu].load(Ordering::Relaxed);
    // SAFETY: the current thread's control block, alive while it is current here.
    let th = unsafe { &*t };
    // `park_token` is changed under this CPU's queue lock, which is held.
    if th.park_token.load(Ordering::Relaxed) || th.kill_requested.load(Ordering::Relaxed) {
        th.park_token.store(false, Ordering::Relaxed);
        return;
    }
    save_current(frame, cpu);
    th.set_state(ThreadState::Blocked);
    parker::note_asleep(&mut q.parkable, t);
    switch_to_next(frame, cpu, q);
}

/// The `EXIT` system call.
#[inline(never)]
fn sys_exit(frame: &mut TrapFrame) {
    terminate_current(frame);
}

/// The `PIN_TO` system call: pins the current thread to the CPU in `x0` and, if that is not
/// this one, switches away and then queues it there. Switching first means no other CPU
/// can run it while `CURRENT` here still names it, and only one queue lock is held at a
/// time, as everywhere else.
#[inline(never)]
fn pin_to(frame: &mut TrapFrame, cpu: usize) {
    let target = frame.x[0] as usize;
    let t = CURRENT[cpu].load(Ordering::Relaxed);
    // SAFETY: the current thread's control block, alive while it is current here. It runs
    // here, so it is in no queue and nobody else reads `pinned` now.
    let th = unsafe { &*t };
    if target >= MAX_CPUS || !ONLINE[target].load(Ordering::Acquire) || th.kind == ThreadKind::Idle
    {
        frame.x[0] = 1;
        return;
    }
    frame.x[0] = 0;
    th.pinned.store(true, Ordering::Relaxed);
    if target == cpu {
        return;
    }
    let q = QUEUES[cpu].lock();
    save_current(frame, cpu);
    th.set_state(ThreadState::Ready);
    switch_to_next(frame, cpu, q);
    // Ready and in no queue: unpark and kill only leave it a token, trim may trim it (its
    // registers are saved); nobody runs it until it is queued here.
    {
        let mut q = QUEUES[target].lock();
        th.cpu.store(target as u32, Ordering::Release);
        // SAFETY: saved and in no queue (see above); alive, since only its own exit or a
        // kill retires it and neither can while it is in no queue and not running.
        unsafe { q.push_back(t) };
        QUEUE_LEN[target].store(q.len(), Ordering::Relaxed);
    }
    kick(target);
}

/// Ends the current thread (it exited, was killed, or faulted fatally) and switches away.
/// Its stack and control block go to the reaper.
pub fn terminate_current(frame: &mut TrapFrame) {
    let cpu = cpu_index();
    let t = CURRENT[cpu].load(Ordering::Relaxed);
    {
        let _q = QUEUES[cpu].lock();
        // SAFETY: the current thread's control block, alive while it is current here.
        let th = unsafe { &*t };
        th.stack.release_claim();
        // This CPU's queue lock is held.
        note_dying(th);
        th.set_state(ThreadState::Dead);
    }
    // Switch away first: once the reaper has it, the control block may be freed at any
    // moment, and `CURRENT[cpu]` must not point at it then.
    let q = QUEUES[cpu].lock();
    switch_to_next(frame, cpu, q);
    hand_to_reaper(t);
}
