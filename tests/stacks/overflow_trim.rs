//! Overflow (the exact report, and a flood on every CPU) and trim (then re-growth, and
//! trim racing wake-ups).
use super::*;

// ---------------------------------------------------------------------------------------
// Overflow

/// A store into the guard gap (a frame larger than what is left, made by hand) is an
/// overflow: counted once, the thread ends with FAR exactly there, and its stack is freed.
/// For both policies.
pub(crate) fn overflow_exact_report() -> TestResult {
    for policy in [StackPolicy::Dynamic, StackPolicy::Fixed] {
        let base = Snap::take();
        let target = Arc::new(AtomicU64::new(0));
        let survived = Arc::new(AtomicBool::new(false));
        let (t2, s2) = (target.clone(), survived.clone());
        let h = sched::spawn_with("ovf", policy, move || {
            let s = &me().stack;
            let addr = s.base() - guard() / 2 - 8;
            t2.store(addr, Ordering::SeqCst);
            let distance = sp() - addr;
            // SAFETY: deliberately stores into this thread's guard gap; the kernel must end
            // the thread.
            unsafe {
                core::arch::asm!(
                    "mov {t}, sp",
                    "sub {t}, {t}, {d}",
                    "str xzr, [{t}]",
                    t = out(reg) _,
                    d = in(reg) distance,
                    options(nostack),
                )
            };
            s2.store(true, Ordering::SeqCst);
        })
        .map_err(|e| format!("spawn: {}", e))?;
        let tid = h.tid();
        h.join();
        check!(
            !survived.load(Ordering::SeqCst),
            "{:?}: a store into the guard gap succeeded",
            policy
        );
        check_ended_by_fault(
            &format!("{:?}", policy),
            tid,
            EC_DATA_ABORT_SAME_EL,
            target.load(Ordering::SeqCst),
        )?;
        let now = Snap::take();
        check!(
            now.overflows == base.overflows + 1,
            "{:?}: overflows {} -> {}",
            policy,
            base.overflows,
            now.overflows
        );
        check_clean(&base)?;
    }
    Ok(())
}

/// Hundreds of threads overflow at once on every CPU. Neighbours that filled their whole
/// stacks with a pattern before the flood find it intact after; every overflow is counted;
/// memory and counters return to where they were.
pub(crate) fn overflow_flood() -> TestResult {
    let base = Snap::take();
    let cpus = sched::online_count();
    let flood = 300usize;
    let neighbours = 2 * cpus + 4;
    let go = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let at_bottom = Arc::new(AtomicUsize::new(0));
    let ready = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let survived = Arc::new(AtomicUsize::new(0));
    let mut nh = Vec::new();
    for i in 0..neighbours {
        let (done, at_bottom, bad) = (done.clone(), at_bottom.clone(), bad.clone());
        let policy = if i % 3 == 2 {
            StackPolicy::Fixed
        } else {
            StackPolicy::Dynamic
        };
        nh.push(
            sched::spawn_with("neighbour", policy, move || {
                let s = &me().stack;
                let b = dive(s.top() - full_depth(), 0xF100D + i as u64, &mut || {
                    at_bottom.fetch_add(1, Ordering::SeqCst);
                    while !done.load(Ordering::SeqCst) {
                        sched::sleep_ms(2);
                    }
                });
                bad.fetch_add(b, Ordering::SeqCst);
            })
            .map_err(|e| format!("spawn: {}", e))?,
        );
    }
    let end = deadline_in(60_000);
    while at_bottom.load(Ordering::SeqCst) < neighbours {
        check!(
            !past(end),
            "neighbours did not reach the bottom of their stacks"
        );
        sched::sleep_ms(2);
    }
    let mut fh = Vec::new();
    for i in 0..flood {
        let (go, ready, survived) = (go.clone(), ready.clone(), survived.clone());
        let policy = if i % 5 == 4 {
            StackPolicy::Fixed
        } else {
            StackPolicy::Dynamic
        };
        fh.push(
            sched::spawn_with("overflow", policy, move || {
                ready.fetch_add(1, Ordering::SeqCst);
                while !go.load(Ordering::SeqCst) {
                    sched::sleep_ms(1);
                }
                core::hint::black_box(dive_forever(0));
                survived.fetch_add(1, Ordering::SeqCst);
            })
            .map_err(|e| format!("spawn: {}", e))?,
        );
    }
    let end = deadline_in(60_000);
    while ready.load(Ordering::SeqCst) < flood {
        check!(!past(end), "flood threads did not start");
        sched::sleep_ms(2);
    }
    go.store(true, Ordering::SeqCst);
    for h in fh {
        h.join();
    }
    let mid = Snap::take();
    done.store(true, Ordering::SeqCst);
    for h in nh {
        h.join();
    }
    check!(
        survived.load(Ordering::SeqCst) == 0,
        "an unbounded recursion returned"
    );
    check!(
        mid.overflows - base.overflows == flood as u64,
        "{} overflows counted for {} overflowing threads",
        mid.overflows - base.overflows,
        flood
    );
    check!(
        bad.load(Ordering::SeqCst) == 0,
        "neighbours found {} corrupted words after the flood",
        bad.load(Ordering::SeqCst)
    );
    let (_, esr, far) = dynstack::kernel::exception::last_fault();
    check!(
        ec(esr) == EC_DATA_ABORT_SAME_EL,
        "last fault ESR {:#x}",
        esr
    );
    check!(
        (far - STACK_ARENA_BASE) % stride() < guard(),
        "last overflow FAR {:#x} is not in a guard gap",
        far
    );
    check_clean(&base)
}

// ---------------------------------------------------------------------------------------
// Trim

/// A thread grows deep, comes back up and parks; `trim_all` unmaps and frees the pages
/// below its saved SP (keeping the initial pages and a small margin); woken, it finds fresh
/// zeroed pages down there (one growth fault per page) and grows again.
pub(crate) fn trim_then_regrow() -> TestResult {
    let base = Snap::take();
    let (p, h) = Puppet::spawn("trimmed", StackPolicy::Dynamic, 5)?;
    let t = p.thread();
    p.dive(full_depth())?;
    check!(t.stack.mapped_bytes() == max(), "did not grow to max");
    // SAFETY: the puppet is parked (dive returns once it is) and stays so until woken.
    let saved_sp = unsafe { t.saved_sp() };
    let top = t.stack.top();
    let deep = t.stack.base() + 64;
    check!(kspace::query(deep).is_some());
    let before = Snap::take();
    let mapped_before = t.stack.mapped_bytes();
    let faults_before = t.stack.grow_faults();
    let freed_all = stack::trim_all();
    let after = Snap::take();
    let bottom = t.stack.mapped_bottom();
    check!(
        bottom <= saved_sp - 256,
        "trim kept too little: mapped bottom {:#x}, saved SP {:#x}",
        bottom,
        saved_sp
    );
    check!(bottom <= top - initial(), "trim took initial pages");
    let keep_limit = ((saved_sp - 4096) & !(PAGE - 1)).min(top - initial());
    check!(
        bottom <= top - initial() && bottom >= keep_limit,
        "trim kept more than a page below SP: mapped bottom {:#x}, saved SP {:#x}",
        bottom,
        saved_sp
    );
    let freed = (mapped_before - t.stack.mapped_bytes()) / PAGE;
    check!(freed >= 1, "nothing trimmed");
    check!(
        freed_all >= freed,
        "trim_all reports {} pages, this thread alone gave {}",
        freed_all,
        freed
    );
    check!(
        after.trimmed - before.trimmed == freed_all,
        "trimmed counter moved by {}, trim_all freed {}",
        after.trimmed - before.trimmed,
        freed_all
    );
    check!(
        after.accounted() == before.accounted(),
        "trim lost frames: {:?} -> {:?}",
        before,
        after
    );
    check!(
        after.free >= before.free + freed_all,
        "free frames {} -> {}",
        before.free,
        after.free
    );
    let mut a = t.stack.base();
    while a < bottom {
        check!(
            kspace::query(a).is_none(),
            "trimmed page {:#x} still mapped",
            a
        );
        a += PAGE;
    }
    check!(t.stack.grow_faults() == faults_before);
    audit_arena(true)?;
    // Wake it: it reads the trimmed range word by word (fresh zeroed pages, one fault per
    // page), then dives to the bottom again.
    let faults1 = t.stack.grow_faults();
    let zeros = read_zero_below(&p, bottom)?;
    check!(zeros, "a re-grown page was not zero");
    let grown = (bottom - t.stack.base()) / PAGE;
    check!(
        (t.stack.grow_faults() - faults1) as u64 == grown,
        "re-growing {} pages took {} faults",
        grown,
        t.stack.grow_faults() - faults1
    );
    p.dive(full_depth())?;
    check!(t.stack.mapped_bytes() == max());
    p.exit(h)?;
    check_clean(&base)
}

/// Makes the puppet read every word of its reservation below `from` (top down, so every
/// page faults once); true if all were zero.
pub(crate) fn read_zero_below(p: &Puppet, from: u64) -> Result<bool, String> {
    ZERO_FROM.store(from, Ordering::SeqCst);
    ZERO_BAD.store(0, Ordering::SeqCst);
    p.dive(READ_ZERO)?;
    Ok(ZERO_BAD.load(Ordering::SeqCst) == 0)
}

pub(crate) const READ_ZERO: u64 = u64::MAX - 1;
pub(crate) static ZERO_FROM: AtomicU64 = AtomicU64::new(0);
pub(crate) static ZERO_BAD: AtomicU64 = AtomicU64::new(0);

/// Churning threads (dive to a random depth, sleep at the bottom, check, sleep at the top)
/// while another thread trims all stacks in a loop: trim and wake-up race on every CPU and
/// no thread may find its stack changed. The races are counted (`claim_races`: a thread due
/// to run found trim holding its stack, or trim found it taken) and the trimming goes on
/// until some have happened, so the case never passes without having raced. With one CPU
/// there can be none (trim runs with IRQs masked), and none are required.
pub(crate) fn trim_racing_wakeups() -> TestResult {
    const RACES: u64 = 3;
    let base = Snap::take();
    let cpus = sched::online_count();
    let n = 6 * cpus + 2;
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(AtomicU64::new(0));
    let rounds = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let mut hs = Vec::new();
    for i in 0..n {
        let (stop, bad, rounds, finished) =
            (stop.clone(), bad.clone(), rounds.clone(), finished.clone());
        hs.push(
            sched::spawn_with("churn", StackPolicy::Dynamic, move || {
                let s = &me().stack;
                let mut rng = Rng::for_index(0x7_1000 + i as u64);
                while !stop.load(Ordering::SeqCst) {
                    let depth = rng.range(512, full_depth());
                    let nap = rng.range(0, 3);
                    let b = dive(s.top() - depth, rng.next_u64(), &mut || {
                        if nap == 0 {
                            sched::yield_now()
                        } else {
                            sched::sleep_ms(nap)
                        }
                    });
                    bad.fetch_add(b, Ordering::SeqCst);
                    rounds.fetch_add(1, Ordering::SeqCst);
                    sched::sleep_ms(rng.range(0, 2));
                }
                finished.fetch_add(1, Ordering::SeqCst);
            })
            .map_err(|e| format!("spawn: {}", e))?,
        );
    }
    let t0 = Snap::take();
    let races0 = stack::stats().claim_races;
    let races = || stack::stats().claim_races - races0;
    let give_up = deadline_in(60_000);
    let mut trims = 0u64;
    while trims < 500
        || rounds.load(Ordering::SeqCst) < 4 * n as u64
        || (cpus > 1 && races() < RACES)
    {
        if past(give_up) {
            break;
        }
        stack::trim_all();
        trims += 1;
        sched::sleep_ms(1);
    }
    stop.store(true, Ordering::SeqCst);
    for h in hs {
        h.join();
    }
    let t1 = Snap::take();
    check!(
        finished.load(Ordering::SeqCst) == n,
        "{} of {} threads died while their stacks were being trimmed (see the reports above)",
        n - finished.load(Ordering::SeqCst),
        n
    );
    check!(
        bad.load(Ordering::SeqCst) == 0,
        "{} stack words changed under trim",
        bad.load(Ordering::SeqCst)
    );
    check!(
        rounds.load(Ordering::SeqCst) >= n as u64,
        "threads made no progress"
    );
    check!(t1.trimmed > t0.trimmed, "nothing was ever trimmed");
    check!(t1.overflows == base.overflows);
    check!(
        cpus == 1 || races() >= RACES,
        "only {} wake-ups raced a trim in {} trims over 60 s",
        races(),
        trims
    );
    dynstack::println!(
        "  {} threads, {} rounds, {} trims, {} races, {} KiB trimmed",
        n,
        rounds.load(Ordering::SeqCst),
        trims,
        races(),
        (t1.trimmed - t0.trimmed) * 4
    );
    check_clean(&base)
}

/// `trim_all` leaves a dead thread alone: its saved SP is stale (nothing saved it when it
/// ended) and the reaper frees its stack whole. The reaper is held (test hook) so the thread
/// stays in the table, dead, with the pages of a dive it came back from mapped below the
/// shallow SP saved when it last yielded; trim must not touch them. Before the fix `trim_all`
/// skipped only running threads and trimmed this one by its stale SP.
pub(crate) fn trim_skips_dead_threads() -> TestResult {
    dynstack::test_hooks::hold_reaper(true);
    let r = trim_skips_dead_held();
    dynstack::test_hooks::hold_reaper(false);
    r?;
    quiesce()
}

fn trim_skips_dead_held() -> TestResult {
    let h = sched::spawn_with("dies-grown", StackPolicy::Dynamic, || {
        let top = me().stack.top();
        core::hint::black_box(dive(top - full_depth(), 11, &mut || {}));
        // Saved here, near the top, with the pages of the dive still mapped below.
        sched::yield_now();
    })
    .map_err(|e| format!("spawn: {}", e))?;
    let tid = h.tid();
    let dead = || {
        sched::with_thread(tid, |t| {
            // SAFETY: alive under the table lock (the reaper is held).
            unsafe { (*t).state() }
        }) == Some(ThreadState::Dead)
    };
    check!(wait_until(30_000, dead), "the thread did not end");
    // SAFETY: alive under the table lock (the reaper is held).
    let mapped = || sched::with_thread(tid, |t| unsafe { (*t).stack.mapped_bytes() });
    let before = mapped().ok_or("the dead thread left the table with the reaper held")?;
    check!(
        before >= initial() + 2 * PAGE,
        "the thread kept only {} bytes mapped: nothing a trim could take",
        before
    );
    stack::trim_all();
    let after = mapped().ok_or("the dead thread left the table with the reaper held")?;
    dynstack::test_hooks::hold_reaper(false);
    h.join();
    check!(
        after == before,
        "trim_all trimmed a dead thread's stack by its stale saved SP: {} -> {} bytes mapped",
        before,
        after
    );
    Ok(())
}
