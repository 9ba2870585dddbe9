//! Join and memory coming back, a thousand threads alive, migration, and thread faults
//! that leave the kernel running.
use super::*;

// -------------------------------------------------------------------------------------------
// Join and memory

/// Frames that are accounted for outside threads' stacks: free, in the per-CPU reserves,
/// grown into the heap, or used as translation tables. Whatever else is missing is held by
/// stacks (or leaked).
pub(crate) fn frames_accounted() -> u64 {
    frame::free_pages()
        + stack::stats().reserve_pages
        + heap::grown_bytes() / 4096
        + dynstack::mm::slab::frame_pages()
        + kspace::table_pages()
}

pub(crate) struct MemSnapshot {
    pub(crate) frames: u64,
    pub(crate) heap: u64,
    pub(crate) threads: usize,
    pub(crate) stacks: u64,
    pub(crate) stack_pages: u64,
}

pub(crate) fn snapshot() -> MemSnapshot {
    MemSnapshot {
        frames: frames_accounted(),
        heap: heap::allocated_bytes(),
        threads: sched::thread_count(),
        stacks: stack::stats().stacks,
        stack_pages: stack::stats().mapped_pages,
    }
}

/// One round of 200 threads: dynamic and fixed stacks, some using three pages of stack
/// (growth), each adding its share to a checksum; all joined.
pub(crate) fn two_hundred_threads(round: u64) -> TestResult {
    const N: u64 = 200;
    let results: Arc<Vec<AtomicU64>> = Arc::new((0..N).map(|_| AtomicU64::new(0)).collect());
    let mut hs = Vec::new();
    for i in 0..N {
        let r = results.clone();
        let policy = if i % 3 == 0 {
            StackPolicy::Fixed
        } else {
            StackPolicy::Dynamic
        };
        let h = sched::spawn_with("joinee", policy, move || {
            let depth = if i % 4 == 0 { 10 * 1024 } else { 1024 };
            let v = use_stack(depth, i ^ round);
            core::hint::black_box(v);
            r[i as usize].fetch_add(1, Ordering::SeqCst);
            if i % 7 == 0 {
                sched::yield_now();
            }
        })
        .map_err(|e| format!("spawn {} of {} failed: {}", i, N, e))?;
        hs.push(h);
    }
    for h in hs {
        h.join();
    }
    let counts: Vec<u64> = results.iter().map(|r| r.load(Ordering::SeqCst)).collect();
    check!(
        counts.iter().all(|&c| c == 1),
        "after join, threads ran these many times: {:?}",
        counts
    );
    Ok(())
}

/// 200 threads joined, twice: after the second round every frame, every heap byte, every
/// stack and every thread-table entry is back (the first round lets the heap and tables
/// reach their working size).
pub(crate) fn join_many_memory_returns() -> TestResult {
    // Grow this thread's own stack first, so its growth is not counted as a leak.
    use_stack(10 * 1024, 1);
    two_hundred_threads(0)?;
    let before = snapshot();
    two_hundred_threads(1)?;
    let after = snapshot();
    check!(
        after.threads == before.threads,
        "thread table: {} entries before, {} after join",
        before.threads,
        after.threads
    );
    check!(
        after.stacks == before.stacks,
        "stacks: {} before, {} after join",
        before.stacks,
        after.stacks
    );
    check!(
        after.stack_pages == before.stack_pages,
        "stack pages mapped: {} before, {} after join",
        before.stack_pages,
        after.stack_pages
    );
    check!(
        after.frames + 2 >= before.frames,
        "{} frames did not come back after joining 200 threads ({} -> {})",
        before.frames - after.frames,
        before.frames,
        after.frames
    );
    check!(
        after.frames <= before.frames + 2,
        "{} more frames than before (accounting is off)",
        after.frames - before.frames
    );
    check!(
        after.heap <= before.heap + 2048,
        "heap in use grew by {} bytes over 200 joined threads",
        after.heap - before.heap
    );
    Ok(())
}

pub(crate) static PARK_GO: AtomicBool = AtomicBool::new(false);
pub(crate) static PARKED_WORKLOAD: AtomicUsize = AtomicUsize::new(0);
pub(crate) static WORKLOAD_RAN_ON: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn parked_workload(_: usize) {
    PARKED_WORKLOAD.fetch_add(1, Ordering::SeqCst);
    while !PARK_GO.load(Ordering::SeqCst) {
        sched::park();
    }
    // Killed threads never get here.
    WORKLOAD_RAN_ON.fetch_add(1, Ordering::SeqCst);
}

/// 1,000 threads alive at once (500 system threads, 500 workload threads), all parked and
/// counted in the thread table; the workload half is killed with kill_all while blocked,
/// the rest unparked; all end and the table is back to where it was.
pub(crate) fn thousand_threads_alive() -> TestResult {
    const HALF: usize = 500;
    let base_threads = sched::thread_count();
    let base_stacks = stack::stats().stacks;
    PARK_GO.store(false, Ordering::SeqCst);
    PARKED_WORKLOAD.store(0, Ordering::SeqCst);
    WORKLOAD_RAN_ON.store(0, Ordering::SeqCst);
    let ptrs: Arc<Vec<AtomicPtr<Thread>>> = Arc::new(
        (0..HALF)
            .map(|_| AtomicPtr::new(core::ptr::null_mut()))
            .collect(),
    );
    let started = Arc::new(AtomicUsize::new(0));
    let mut hs = Vec::new();
    let mut joins = Vec::new();
    for i in 0..HALF {
        let p = ptrs.clone();
        let s = started.clone();
        hs.push(spawn("parker-s", move || {
            p[i].store(sched::current_ptr(), Ordering::SeqCst);
            s.fetch_add(1, Ordering::SeqCst);
            while !PARK_GO.load(Ordering::SeqCst) {
                sched::park();
            }
        })?);
        let js = new_join_state();
        sched::spawn_raw(
            "parker-w",
            ThreadKind::Workload,
            stack::default_policy(),
            parked_workload,
            0,
            Some(js.clone()),
        )
        .map_err(|e| format!("workload spawn {} failed: {}", i, e))?;
        joins.push(js);
    }
    let count_blocked = || {
        let mut n = 0;
        sched::for_each_thread(usize::MAX, &mut |t| {
            if t.name().starts_with("parker-") && t.state() == ThreadState::Blocked {
                n += 1;
            }
        });
        n
    };
    let all_parked = wait_for(30_000, || count_blocked() == 2 * HALF);
    let blocked = count_blocked();
    let alive = sched::thread_count();
    let stacks = stack::stats().stacks;
    let mut result: TestResult = (|| {
        check!(
            all_parked,
            "only {} of {} threads reached park within 30 s ({} started, {} workload)",
            blocked,
            2 * HALF,
            started.load(Ordering::SeqCst),
            PARKED_WORKLOAD.load(Ordering::SeqCst)
        );
        check!(
            alive >= base_threads + 2 * HALF,
            "thread table holds {} threads, expected at least {}",
            alive,
            base_threads + 2 * HALF
        );
        check!(
            stacks >= base_stacks + 2 * HALF as u64,
            "{} stacks exist with {} threads alive",
            stacks,
            2 * HALF
        );
        check!(
            sched::workload_threads() == HALF,
            "workload_threads() = {}",
            sched::workload_threads()
        );
        Ok(())
    })();
    // Kill the workload half while it is blocked.
    let killed = sched::kill_all(&mut |_, _| {});
    if result.is_ok() && killed != HALF as u64 {
        result = Err(format!("kill_all killed {}, expected {}", killed, HALF));
    }
    let all_done = wait_for(30_000, || {
        joins.iter().all(|j| j.done.load(Ordering::SeqCst))
    });
    if result.is_ok() && !all_done {
        result = Err(String::from(
            "killed workload threads were not reaped within 30 s",
        ));
    }
    // Unpark the system half.
    PARK_GO.store(true, Ordering::SeqCst);
    for p in ptrs.iter() {
        let t = p.load(Ordering::SeqCst);
        if !t.is_null() {
            // SAFETY: each system parker lives until PARK_GO is set and it is unparked (or
            // its park returns on a token); unparking an exiting thread is what unpark
            // allows for: it stays in the table until the reaper takes it after its exit,
            // and its exit needs this very wake-up or a token.
            unsafe { sched::unpark(t) };
        }
    }
    let all_exited = wait_for(30_000, || hs.iter().all(|h| h.is_finished()));
    if !all_exited {
        return result.and(Err(String::from(
            "unparked threads did not all exit within 30 s",
        )));
    }
    for h in hs {
        h.join();
    }
    result?;
    check!(
        WORKLOAD_RAN_ON.load(Ordering::SeqCst) == 0,
        "{} killed workload threads ran on past their park",
        WORKLOAD_RAN_ON.load(Ordering::SeqCst)
    );
    check!(
        sched::workload_threads() == 0,
        "{} workload threads left after kill_all",
        sched::workload_threads()
    );
    check!(
        wait_for(5_000, || sched::thread_count() == base_threads),
        "thread table: {} entries, {} before",
        sched::thread_count(),
        base_threads
    );
    check!(
        stack::stats().stacks == base_stacks,
        "stacks: {} now, {} before",
        stack::stats().stacks,
        base_stacks
    );
    Ok(())
}

// -------------------------------------------------------------------------------------------
// Migration

/// Threads with staggered amounts of work, yielding often: as some finish, idle CPUs take
/// queued threads from busy ones. With more than one CPU, at least one thread is seen on
/// two CPUs (cpu_index() across yields); on one CPU, everything runs on CPU 0. All finish
/// and do all their work either way.
pub(crate) fn threads_migrate_and_finish() -> TestResult {
    let n = sched::online_count();
    let mut rounds = 0;
    let deadline = now() + ms_to_ticks(20_000);
    loop {
        rounds += 1;
        let k = 2 * n + 1;
        let masks: Arc<Vec<AtomicU64>> = Arc::new((0..k).map(|_| AtomicU64::new(0)).collect());
        let work: Arc<Vec<AtomicU64>> = Arc::new((0..k).map(|_| AtomicU64::new(0)).collect());
        let mut hs = Vec::new();
        for i in 0..k {
            let m = masks.clone();
            let w = work.clone();
            hs.push(spawn("migrant", move || {
                let bursts = 4 * (i as u64 + 1);
                for _ in 0..bursts {
                    m[i].fetch_or(1 << percpu::cpu_index(), Ordering::SeqCst);
                    let end = now() + timer::ns_to_ticks(500_000);
                    while now() < end {
                        core::hint::spin_loop();
                    }
                    w[i].fetch_add(1, Ordering::SeqCst);
                    sched::yield_now();
                }
                m[i].fetch_or(1 << percpu::cpu_index(), Ordering::SeqCst);
            })?);
        }
        for h in hs {
            h.join();
        }
        for i in 0..k {
            let done = work[i].load(Ordering::SeqCst);
            check!(
                done == 4 * (i as u64 + 1),
                "thread {} did {} of {} bursts",
                i,
                done,
                4 * (i + 1)
            );
            let m = masks[i].load(Ordering::SeqCst);
            check!(m != 0, "thread {} never recorded a CPU", i);
            check!(
                m >> n == 0,
                "thread {} ran on CPUs {:#b}, but only {} are online",
                i,
                m,
                n
            );
        }
        let moved = masks
            .iter()
            .filter(|m| m.load(Ordering::SeqCst).count_ones() >= 2)
            .count();
        if n == 1 {
            check!(
                masks.iter().all(|m| m.load(Ordering::SeqCst) == 1),
                "on one CPU, threads report CPUs other than 0"
            );
            return Ok(());
        }
        if moved > 0 {
            dynstack::println!(
                "  threads_migrate_and_finish: {} of {} threads ran on two or more CPUs (round {})",
                moved,
                k,
                rounds
            );
            return Ok(());
        }
        check!(
            now() < deadline,
            "no thread ran on two CPUs in {} rounds of {} threads on {} CPUs",
            rounds,
            2 * n + 1,
            n
        );
    }
}

// -------------------------------------------------------------------------------------------
// Faults

/// A thread that writes to a bad address is ended and reported (last_fault names it, with a
/// write data abort at that address) while other threads keep running on every CPU; the
/// kernel carries on: new threads start and finish, and the dead thread's memory is back.
pub(crate) fn fault_reported_kernel_continues() -> TestResult {
    let n = sched::online_count();
    let base_threads = sched::thread_count();
    let base_stacks = stack::stats().stacks;
    // Background work across the CPUs while the fault happens.
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let mut bg = Vec::new();
    for _ in 0..n {
        let s = stop.clone();
        let p = progress.clone();
        bg.push(spawn("bystander", move || {
            let give_up = now() + ms_to_ticks(20_000);
            while !s.load(Ordering::Relaxed) && now() < give_up {
                p.fetch_add(1, Ordering::Relaxed);
                if p.load(Ordering::Relaxed).is_multiple_of(64) {
                    sched::yield_now();
                }
            }
        })?);
    }
    let bad = 0xdead_beef_0000u64;
    let survived = Arc::new(AtomicBool::new(false));
    let sv = survived.clone();
    let h = spawn("faulter", move || {
        // SAFETY: meant to fault.
        unsafe { asm!("str {v}, [{a}]", a = in(reg) bad, v = in(reg) 7u64, options(nostack)) };
        sv.store(true, Ordering::SeqCst);
    })?;
    let tid = h.tid();
    h.join();
    let (ftid, esr, far) = last_fault();
    let p0 = progress.load(Ordering::Relaxed);
    let bystanders_ok = wait_for(5_000, || progress.load(Ordering::Relaxed) > p0 + 1000);
    stop.store(true, Ordering::Relaxed);
    for h in bg {
        h.join();
    }
    check!(
        !survived.load(Ordering::SeqCst),
        "the write to {:#x} did not fault",
        bad
    );
    check!(
        ftid == tid,
        "last_fault names thread {}, the faulter was {}",
        ftid,
        tid
    );
    check!(
        (esr >> 26) & 0x3f == 0x25 && esr & (1 << 6) != 0,
        "ESR {:#x}: expected a data abort (EC 0x25) on a write",
        esr
    );
    check!(far == bad, "FAR {:#x}, expected {:#x}", far, bad);
    check!(
        bystanders_ok,
        "other threads stopped running after the fault"
    );
    check!(
        state_of(tid).is_none(),
        "the faulted thread is still in the thread table"
    );
    // New threads still work, on every CPU.
    let sum = Arc::new(AtomicU64::new(0));
    let mut hs = Vec::new();
    for i in 1..=50u64 {
        let s = sum.clone();
        hs.push(spawn("after", move || {
            s.fetch_add(i * i, Ordering::SeqCst);
        })?);
    }
    for h in hs {
        h.join();
    }
    check!(
        sum.load(Ordering::SeqCst) == 42925,
        "threads after the fault summed {} (expected 42925)",
        sum.load(Ordering::SeqCst)
    );
    check!(
        sched::thread_count() == base_threads,
        "thread table {} entries, {} before",
        sched::thread_count(),
        base_threads
    );
    check!(
        stack::stats().stacks == base_stacks,
        "{} stacks, {} before: the faulted thread's stack was not returned",
        stack::stats().stacks,
        base_stacks
    );
    Ok(())
}
