//! The latent concurrency bugs of issue 12, each made to happen by construction with the test
//! hooks (`dynstack::test_hooks`): a thread moved to another CPU right after it read its CPU
//! index, a CPU held just after it chose its idle thread, a run queue frozen with a pinned
//! thread at its head, and a probe on every hand-over to the reaper. Each case fails on the
//! code before its fix (named in the case), whatever the host's schedule.
use super::*;
use dynstack::test_hooks;

/// The running thread's control block, read with IRQs masked: nothing can move the thread
/// then, and the migration trap never fires.
fn me() -> *mut Thread {
    let daif = dynstack::arch::irq::save_and_disable();
    let t = sched::current_ptr();
    dynstack::arch::irq::restore(daif);
    t
}

fn one_cpu(case: &str) -> bool {
    if sched::online_count() < 2 {
        dynstack::println!("  {}: one CPU, no other CPU to move to", case);
        return true;
    }
    false
}

static CP_ME: AtomicPtr<Thread> = AtomicPtr::new(core::ptr::null_mut());
static CP_SEEN: AtomicPtr<Thread> = AtomicPtr::new(core::ptr::null_mut());
static CP_FIRED: AtomicU64 = AtomicU64::new(0);

/// `current_ptr()` names the running thread even if the thread is moved to another CPU right
/// after it read its CPU index (the trap moves it from CPU 1 to CPU 0 there). Before the fix
/// it read the index with IRQs unmasked and then returned CPU 1's current thread, another
/// one: `join` and the console reader registered that thread as the one to wake, and waking
/// it after it was freed wrote into freed memory.
pub(crate) fn current_ptr_survives_migration() -> TestResult {
    if one_cpu("current_ptr_survives_migration") {
        return Ok(());
    }
    check!(sched::pin_current_to(0), "cannot move to cpu 0");
    let h = sched::spawn_pinned("cur-probe", stack::default_policy(), 1, || {
        let me = me();
        let fired = test_hooks::migrations();
        test_hooks::arm_migration(me, 0);
        let seen = sched::current_ptr();
        test_hooks::disarm_migration();
        CP_FIRED.store(test_hooks::migrations() - fired, Ordering::SeqCst);
        CP_ME.store(me, Ordering::SeqCst);
        CP_SEEN.store(seen, Ordering::SeqCst);
    })
    .map_err(|e| format!("spawn_pinned: {}", e))?;
    h.join();
    let (me, seen) = (CP_ME.load(Ordering::SeqCst), CP_SEEN.load(Ordering::SeqCst));
    check!(
        !me.is_null() && seen == me,
        "current_ptr() returned {:p}, not the running thread {:p}: it read its CPU with IRQs \
         unmasked and the thread was moved right after (trap fired {} time(s))",
        seen,
        me,
        CP_FIRED.load(Ordering::SeqCst)
    );
    Ok(())
}

static MS_FIRED: AtomicU64 = AtomicU64::new(u64::MAX);
static SP_FIRED: AtomicU64 = AtomicU64::new(u64::MAX);

fn settle_probe(_: usize) {
    let me = me();
    let fired = test_hooks::migrations();
    test_hooks::arm_migration(me, 0);
    sched::mark_settled();
    test_hooks::disarm_migration();
    MS_FIRED.store(test_hooks::migrations() - fired, Ordering::SeqCst);
    let fired = test_hooks::migrations();
    test_hooks::arm_migration(me, 0);
    sched::set_parkable(true);
    test_hooks::disarm_migration();
    SP_FIRED.store(test_hooks::migrations() - fired, Ordering::SeqCst);
}

/// `mark_settled` and `set_parkable` take the queue lock of the CPU they run on: they mask
/// IRQs before they read the CPU index, so the trap (move the thread from CPU 1 to CPU 0
/// right after an unmasked read) never fires in them. Before the fix they read it first and
/// could lock CPU 1's queue while running on CPU 0, a lock that excludes nothing there.
pub(crate) fn settle_and_parkable_read_cpu_masked() -> TestResult {
    if one_cpu("settle_and_parkable_read_cpu_masked") {
        return Ok(());
    }
    check!(sched::pin_current_to(0), "cannot move to cpu 0");
    let unsettled = sched::unsettled();
    let done = new_join_state();
    sched::spawn_raw_on(
        "settle-probe",
        ThreadKind::Workload,
        stack::default_policy(),
        settle_probe,
        0,
        Some(done.clone()),
        Some(1),
    )
    .map_err(|e| format!("spawn: {}", e))?;
    check!(
        wait_for(30_000, || done.done.load(Ordering::SeqCst)),
        "the probe thread did not end"
    );
    let (ms, sp) = (
        MS_FIRED.load(Ordering::SeqCst),
        SP_FIRED.load(Ordering::SeqCst),
    );
    check!(
        ms == 0 && sp == 0,
        "read their CPU with IRQs unmasked: the thread was moved from CPU 1 to CPU 0 between \
         the read and locking CPU 1's queue, {} time(s) in mark_settled and {} in set_parkable",
        ms,
        sp
    );
    check!(
        sched::unsettled() == unsettled,
        "unsettled {} before, {} after",
        unsettled,
        sched::unsettled()
    );
    Ok(())
}

static SK_STARTED: AtomicBool = AtomicBool::new(false);

fn spin_until_killed(_: usize) {
    SK_STARTED.store(true, Ordering::SeqCst);
    while !sched::kill_requested() {
        core::hint::spin_loop();
    }
    // Spin on: the kill must take it out from under its own loop (must_exit, thread_killed).
    loop {
        core::hint::spin_loop();
    }
}

/// A thread's control block goes to the reaper only once its CPU has switched away from it:
/// the probe checks every CPU's `CURRENT` at each hand-over, for threads that return, and
/// for one killed while it runs. Before the fix `terminate_current` handed it over first, and
/// the reaper could free it while `CURRENT` still named it.
pub(crate) fn exit_hands_over_after_switching_away() -> TestResult {
    let (handed, while_current) = test_hooks::handed_while_current();
    let mut hs = Vec::new();
    for _ in 0..8 {
        hs.push(spawn("returns", || {
            core::hint::black_box(use_stack(2048, 1));
        })?);
    }
    for h in hs {
        h.join();
    }
    SK_STARTED.store(false, Ordering::SeqCst);
    let spinner = sched::spawn_raw(
        "spin-kill",
        ThreadKind::Workload,
        stack::default_policy(),
        spin_until_killed,
        0,
        None,
    )
    .map_err(|e| format!("spawn: {}", e))?;
    check!(
        wait_for(30_000, || SK_STARTED.load(Ordering::SeqCst)),
        "the spinner never ran"
    );
    check!(sched::kill(spinner) == Ok(1), "kill of the spinner");
    let (handed2, while_current2) = test_hooks::handed_while_current();
    check!(
        handed2 >= handed + 9,
        "the probe saw {} hand-overs, expected at least 9",
        handed2 - handed
    );
    check!(
        while_current2 == while_current,
        "{} of {} control blocks were handed to the reaper while a CPU's CURRENT still named \
         them",
        while_current2 - while_current,
        handed2 - handed
    );
    Ok(())
}

static LK_GO: AtomicBool = AtomicBool::new(false);
static LK_RAN: AtomicBool = AtomicBool::new(false);

/// A thread queued for a CPU that has just chosen its idle thread (the hook holds CPU 1 right
/// after it dropped its run-queue lock) gets that CPU kicked at once. Before the fix the CPU
/// said it was idle only after that point, so `unpark` saw it busy, sent nothing, and the
/// thread waited for CPU 1's next tick.
pub(crate) fn wake_of_cpu_going_idle_kicks_it() -> TestResult {
    if one_cpu("wake_of_cpu_going_idle_kicks_it") {
        return Ok(());
    }
    check!(sched::pin_current_to(0), "cannot move to cpu 0");
    LK_GO.store(false, Ordering::SeqCst);
    LK_RAN.store(false, Ordering::SeqCst);
    let w = sched::spawn_pinned("lk-parker", stack::default_policy(), 1, || {
        while !LK_GO.load(Ordering::SeqCst) {
            core::hint::spin_loop();
        }
        sched::park();
        LK_RAN.store(true, Ordering::SeqCst);
    })
    .map_err(|e| format!("spawn_pinned: {}", e))?;
    let tid = w.tid();
    test_hooks::hold_cpu_going_idle(1);
    LK_GO.store(true, Ordering::SeqCst);
    // CPU 1 goes idle only once the parker has parked (it is pinned there and spins till then).
    let held = wait_for(30_000, test_hooks::idle_held);
    let kicks = test_hooks::kicks_sent(1);
    let blocked = state_of(tid) == Some(ThreadState::Blocked);
    // SAFETY: alive under the table lock.
    sched::with_thread(tid, |t| unsafe { sched::unpark(t) });
    let kicked = test_hooks::kicks_sent(1) - kicks;
    test_hooks::release_idle();
    let ran = wait_for(30_000, || LK_RAN.load(Ordering::SeqCst));
    w.join();
    check!(held, "CPU 1 never went idle with the hold armed");
    check!(blocked, "the parker was not blocked while CPU 1 went idle");
    check!(ran, "the woken thread never ran");
    check!(
        kicked == 1,
        "CPU 1 had chosen its idle thread and dropped its queue lock; a thread queued for it \
         then sent it {} kick(s): it would sleep until its next tick",
        kicked
    );
    Ok(())
}

static ST_RAN_ON: AtomicUsize = AtomicUsize::new(usize::MAX);
static ST_SEEN: AtomicUsize = AtomicUsize::new(usize::MAX);

fn parks_then_notes_cpu(_: usize) {
    sched::park();
    let daif = dynstack::arch::irq::save_and_disable();
    ST_RAN_ON.store(percpu::cpu_index(), Ordering::SeqCst);
    dynstack::arch::irq::restore(daif);
}

fn returns_at_once(_: usize) {}

/// An idle CPU steals a ready thread from behind a pinned one: CPU A's queue is frozen with
/// a pinned thread at its head and an unpinned one behind it (A spins with IRQs masked, so it
/// neither runs them nor rotates its queue), and the unpinned one must run elsewhere. Before
/// the fix `steal` (and the balancer) gave up on a queue whose head was pinned, and it ran
/// only once A let go.
pub(crate) fn steal_skips_a_pinned_head() -> TestResult {
    if one_cpu("steal_skips_a_pinned_head") {
        return Ok(());
    }
    ST_RAN_ON.store(usize::MAX, Ordering::SeqCst);
    ST_SEEN.store(usize::MAX, Ordering::SeqCst);
    let policy = stack::default_policy();
    let done = new_join_state();
    let u = sched::spawn_raw(
        "unpinned",
        ThreadKind::System,
        policy,
        parks_then_notes_cpu,
        0,
        Some(done.clone()),
    )
    .map_err(|e| format!("spawn: {}", e))?;
    check!(
        wait_for(30_000, || state_of(u) == Some(ThreadState::Blocked)),
        "the unpinned thread never parked"
    );
    // It is blocked, so its CPU stays what it is: the queue it will be woken into.
    // SAFETY: alive under the table lock.
    let a = sched::with_thread(u, |t| unsafe { (*t).cpu.load(Ordering::SeqCst) } as usize)
        .ok_or("the unpinned thread vanished")?;
    let holder = sched::spawn_pinned("holder", policy, a, move || {
        let daif = dynstack::arch::irq::save_and_disable();
        // Queue [pinned, unpinned] on this CPU, which runs neither while IRQs are masked.
        let pinned = sched::spawn_raw_on(
            "pinned",
            ThreadKind::System,
            policy,
            returns_at_once,
            0,
            None,
            Some(a),
        );
        if pinned.is_ok() {
            // SAFETY: alive under the table lock.
            sched::with_thread(u, |t| unsafe { sched::unpark(t) });
            let until = now() + ms_to_ticks(30_000);
            while ST_RAN_ON.load(Ordering::SeqCst) == usize::MAX && now() < until {
                core::hint::spin_loop();
            }
        }
        ST_SEEN.store(ST_RAN_ON.load(Ordering::SeqCst), Ordering::SeqCst);
        dynstack::arch::irq::restore(daif);
    })
    .map_err(|e| format!("spawn_pinned: {}", e))?;
    holder.join();
    check!(
        wait_for(30_000, || done.done.load(Ordering::SeqCst)),
        "the unpinned thread never ended"
    );
    let seen = ST_SEEN.load(Ordering::SeqCst);
    check!(
        seen != usize::MAX,
        "CPU {}'s queue held a pinned thread and then an unpinned one for 30 s, with other \
         CPUs idle, and none of them stole the unpinned one",
        a
    );
    check!(
        seen != a,
        "the unpinned thread ran on CPU {}, the held one",
        seen
    );
    Ok(())
}
