//! The two cases of the default mode: trim when memory runs low, and memory exhaustion.
use super::*;

/// Sleeping threads hold deep stack pages they do not use now. Then every free frame is
/// taken away and threads on every CPU must grow: the per-CPU reserves run dry, and the
/// shortage must make the kernel trim the sleeping threads by itself (nobody here calls
/// trim); with the pages that gives back, every growing thread reaches its full depth. The
/// sleepers' own data is intact, and every frame is accounted for afterwards.
pub(crate) fn trim_when_memory_runs_low() -> TestResult {
    beat("setting up");
    let cfg = stack::config();
    let max_pages = cfg.max as u64 / PAGE;
    check!(
        max_pages > cfg.initial as u64 / PAGE + 1,
        "kstack.max leaves nothing to trim"
    );
    let base = Snap::take();
    let cpus: Vec<usize> = (0..dynstack::percpu::MAX_CPUS)
        .filter(|&c| sched::is_online(c))
        .collect();
    let release = alloc::sync::Arc::new(AtomicBool::new(false));
    let go = alloc::sync::Arc::new(AtomicBool::new(false));
    let rested = alloc::sync::Arc::new(AtomicU64::new(0));
    let grown = alloc::sync::Arc::new(AtomicU64::new(0));
    let bad = alloc::sync::Arc::new(AtomicU64::new(0));
    let mut hs = Vec::new();
    // Sleepers: grow to the maximum, come back to the top, keep a pattern there, sleep.
    let sleepers = 8 * cpus.len() as u64 + 8;
    for i in 0..sleepers {
        let (release, rested, bad) = (release.clone(), rested.clone(), bad.clone());
        hs.push(
            sched::spawn_with("sleeper", StackPolicy::Dynamic, move || {
                let mut mine = [0u64; 16];
                for (k, w) in mine.iter_mut().enumerate() {
                    *w = (i << 8 | k as u64) ^ 0x5A5A_0000_0000;
                }
                core::hint::black_box(&mut mine);
                // SAFETY: the running thread's control block.
                let top = unsafe { (*sched::current_ptr()).stack.top() };
                bad.fetch_add(
                    dive(top - cfg.max as u64 + 3 * 1024, &mut || {}),
                    Ordering::SeqCst,
                );
                rested.fetch_add(1, Ordering::SeqCst);
                while !release.load(Ordering::SeqCst) {
                    sched::park();
                }
                core::hint::black_box(&mut mine);
                for (k, w) in mine.iter().enumerate() {
                    // SAFETY: a word of this frame.
                    if unsafe { core::ptr::read_volatile(w) }
                        != (i << 8 | k as u64) ^ 0x5A5A_0000_0000
                    {
                        bad.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
            .map_err(|e| format!("spawn: {}", e))?,
        );
    }
    // Growers: two per CPU, pinned, waiting at the top of their stacks.
    let growers = 2 * cpus.len() as u64;
    for &c in cpus.iter().chain(cpus.iter()) {
        let (release, go, grown, bad, rested) = (
            release.clone(),
            go.clone(),
            grown.clone(),
            bad.clone(),
            rested.clone(),
        );
        hs.push(
            sched::spawn_pinned("grower", StackPolicy::Dynamic, c, move || {
                rested.fetch_add(1, Ordering::SeqCst);
                while !go.load(Ordering::SeqCst) {
                    sched::park();
                }
                // SAFETY: the running thread's control block.
                let top = unsafe { (*sched::current_ptr()).stack.top() };
                let until = top - cfg.max as u64 + 3 * 1024;
                bad.fetch_add(
                    dive(until, &mut || {
                        grown.fetch_add(1, Ordering::SeqCst);
                        while !release.load(Ordering::SeqCst) {
                            sched::park();
                        }
                    }),
                    Ordering::SeqCst,
                );
            })
            .map_err(|e| format!("spawn: {}", e))?,
        );
    }
    let end = now_ms() + 45_000;
    while rested.load(Ordering::SeqCst) < sleepers + growers {
        check!(
            now_ms() < end,
            "threads did not get to their resting points"
        );
        nap(5, "waiting for the threads to rest");
    }
    let trimmable: u64 = {
        let mut n = 0;
        sched::for_each_thread(usize::MAX, &mut |t| {
            if t.name() == "sleeper" {
                n += t.stack.mapped_bytes() / PAGE - 1;
            }
        });
        n
    };
    let before = Snap::take();
    {
        // Take every free frame away: growth can only use what reserves hold and what trim
        // gives back.
        let ballast = Ballast::take_all_but(0);
        beat("growing with no free memory");
        go.store(true, Ordering::SeqCst);
        wake_all_named("grower");
        let end = now_ms() + 45_000;
        while grown.load(Ordering::SeqCst) < growers {
            check!(
                now_ms() < end,
                "with no free memory, {} of {} threads could grow in 45 s (free {} pages, shortages {}, trimmed {} KiB since, {} pages were trimmable)",
                grown.load(Ordering::SeqCst),
                growers,
                frame::free_pages(),
                stack::stats().shortages - before.shortages,
                (stack::stats().trimmed_pages - before.trimmed) * 4,
                trimmable
            );
            nap(5, "growing with no free memory");
        }
        let during = Snap::take();
        dynstack::println!(
            "  {} growers grew with {} frames taken away: {} shortages, {} KiB trimmed by the kernel",
            growers,
            ballast.pages,
            during.shortages - before.shortages,
            (during.trimmed - before.trimmed) * 4
        );
        check!(
            during.shortages > before.shortages,
            "no shortage: the reserves never ran dry, the case means nothing"
        );
        check!(
            during.trimmed > before.trimmed,
            "threads grew without anything being trimmed or freed?"
        );
        check!(
            during.oom_kills == before.oom_kills,
            "OOM kills while growing"
        );
        drop(ballast);
    }
    beat("releasing");
    release.store(true, Ordering::SeqCst);
    wake_all_named("sleeper");
    wake_all_named("grower");
    for h in hs {
        h.join();
    }
    check!(
        bad.load(Ordering::SeqCst) == 0,
        "{} stack words changed",
        bad.load(Ordering::SeqCst)
    );
    beat("checking");
    let end = now_ms() + 45_000;
    loop {
        let s = Snap::take();
        if s.stacks == s.threads as u64 && s.threads == base.threads {
            break;
        }
        check!(now_ms() < end, "threads were not reaped");
        nap(5, "waiting for the reaper");
    }
    let end = now_ms() + 45_000;
    let mut after = Snap::take();
    while after.accounted() != base.accounted() && now_ms() < end {
        nap(10, "waiting for the reaper to give the frames back");
        after = Snap::take();
    }
    check!(
        after.accounted() == base.accounted(),
        "frames not conserved: before {:?}, after {:?}",
        base,
        after
    );
    Ok(())
}

/// Unparks every thread called `name` (a spare token for those not parked), through the
/// thread table, whose lock keeps every thread in it alive.
pub(crate) fn wake_all_named(name: &str) {
    sched::for_each_thread_chunked(&mut |t| {
        if t.name() == name {
            // SAFETY: in the thread table, hence alive, while the table lock is held.
            unsafe { sched::unpark(t as *const Thread as *mut Thread) };
        }
    });
}

pub(crate) fn exhaustion_controller() -> TestResult {
    beat("setting up");
    let cfg = stack::config();
    let max_pages = cfg.max as u64 / PAGE;
    let initial_pages = cfg.initial as u64 / PAGE;
    check!(
        max_pages > initial_pages,
        "kstack.max = kstack.initial: nothing can grow, the case means nothing"
    );
    // Take away memory beyond the working set, so the case does the same work whatever -m.
    let mut ballast: Vec<(u64, usize)> = Vec::with_capacity(4096);
    let mut ballast_pages = 0u64;
    while frame::free_pages() > WORKING_SET_PAGES + 512 && ballast.len() < ballast.capacity() {
        let excess = frame::free_pages() - WORKING_SET_PAGES;
        let chunk = if excess >= 512 { 512 } else { 1 };
        match frame::alloc(chunk) {
            Some(pa) => {
                ballast.push((pa, chunk));
                ballast_pages += chunk as u64;
            }
            None => break,
        }
    }
    let base = Snap::take();
    let capacity = (frame::free_pages() + 64) as usize;
    let mut state = Vec::with_capacity(capacity);
    for _ in 0..capacity {
        state.push(AtomicU8::new(NOT_STARTED));
    }
    let sh = SHARED.call_once(|| Shared {
        state,
        go: AtomicBool::new(false),
    });
    let mut tids: Vec<u64> = Vec::with_capacity(capacity);
    // Phase 5 picks its victims when free memory is 0: no allocation may happen then.
    let mut victims: Vec<u64> = Vec::with_capacity(16);
    dynstack::println!(
        "  free {} KiB (ballast {} KiB), kstack.max {} KiB: spawning until it fails",
        base.free * 4,
        ballast_pages * 4,
        cfg.max / 1024
    );

    // Phase 2: spawn until spawning fails.
    let spawn_error = loop {
        if tids.len() == capacity {
            return Err(format!(
                "{} threads spawned and spawning still works",
                capacity
            ));
        }
        match sched::spawn_raw(
            "hog",
            ThreadKind::Workload,
            StackPolicy::Dynamic,
            worker,
            tids.len(),
            None,
        ) {
            Ok(tid) => tids.push(tid),
            Err(e) => break e,
        }
        if tids.len().is_multiple_of(256) {
            beat("spawning until spawning fails");
        }
    };
    let n = tids.len();
    check!(
        spawn_error == sched::SpawnError::OutOfMemory,
        "spawning failed with {:?}, want OutOfMemory",
        spawn_error
    );
    check!(n >= 100, "only {} threads could be spawned", n);
    // A closure thread fails as cleanly.
    let r = sched::spawn("late", || {});
    check!(
        r.is_err(),
        "spawn succeeded after spawn_raw failed for lack of memory"
    );
    let after_spawn = Snap::take();
    dynstack::println!(
        "  spawned {} threads, then: {:?} (free {} KiB)",
        n,
        spawn_error,
        after_spawn.free * 4
    );

    // Every worker gets to run once (only its initial pages are needed).
    let end = now_ms() + 30_000;
    while count(sh, n, WAITING_FOR_GO) < n {
        check!(
            now_ms() < end,
            "only {} of {} spawned threads ever ran",
            count(sh, n, WAITING_FOR_GO),
            n
        );
        nap(5, "waiting for every spawned thread to run once");
    }

    // Phase 4: all grow at once, far beyond what memory holds.
    sh.go.store(true, Ordering::SeqCst);
    // Through the thread table, whose lock keeps every thread in it alive: a worker that saw
    // `go` before parking may already be gone (an OOM kill) by the time we get to it.
    sched::for_each_thread_chunked(&mut |t| {
        if t.kind == ThreadKind::Workload && t.name() == "hog" {
            // SAFETY: in the thread table, hence alive, while the table lock is held.
            unsafe { sched::unpark(t as *const Thread as *mut Thread) };
        }
    });
    beat("all threads growing at once");
    let mut last = (usize::MAX, 0u64);
    let mut stable_since = now_ms();
    let end = now_ms() + 40_000;
    loop {
        let grown = count(sh, n, GROWN);
        let dead = n - sched::workload_threads().min(n);
        let key = (grown, dead as u64);
        if key != last {
            last = key;
            stable_since = now_ms();
        }
        if grown + dead == n || now_ms() > stable_since + 1500 {
            break;
        }
        check!(now_ms() < end, "growth never settled");
        nap(20, "all threads growing at once");
    }
    let exhausted = Snap::take();
    let grown = count(sh, n, GROWN);
    let alive = sched::workload_threads();
    // Alive and not grown: waiting for memory (to be switched in, or inside the growth).
    let waiting = alive.saturating_sub(grown);
    let oom = exhausted.oom_kills - base.oom_kills;
    let shortages = exhausted.shortages - base.shortages;
    dynstack::println!(
        "  after growth: {} grown, {} waiting, {} alive, {} OOM-killed, {} shortages, free {} KiB",
        grown,
        waiting,
        alive,
        oom,
        shortages,
        exhausted.free * 4
    );
    check!(
        exhausted.overflows == base.overflows,
        "{} overflows while growing within the reservation",
        exhausted.overflows - base.overflows
    );
    check!(
        (n - alive) as u64 == oom,
        "{} threads are gone but only {} OOM kills were counted: growth failed silently",
        n - alive,
        oom
    );
    check!(
        grown + waiting + (n - alive) >= n,
        "threads unaccounted for: {} grown, {} waiting, {} dead of {}",
        grown,
        waiting,
        n - alive,
        n
    );
    check!(
        grown < n,
        "all {} threads grew: memory never ran out, the case means nothing",
        n
    );
    check!(
        waiting == 0 || shortages > 0,
        "{} threads wait for memory but no shortage was counted",
        waiting
    );

    // Phase 5: memory comes back (a few grown threads are killed), and threads that waited go on.
    if waiting > 0 {
        // Filled without allocating: free memory is 0 here (the Vec was made up front).
        victims.extend(
            (0..n)
                .filter(|&i| sh.state[i].load(Ordering::SeqCst) == GROWN)
                .take(16)
                .map(|i| tids[i]),
        );
        check!(!victims.is_empty(), "no grown thread to free memory with");
        for tid in &victims {
            beat("killing a few grown threads (waits for the reaper to free them)");
            sched::kill(*tid).map_err(|e| format!("kill {}: {}", tid, e))?;
        }
        let end = now_ms() + 45_000;
        while count(sh, n, GROWN) <= grown - victims.len() {
            check!(
                now_ms() < end,
                "memory came back ({} threads killed) but no waiting thread went on",
                victims.len()
            );
            nap(10, "waiting for threads that waited for memory to go on");
        }
    }

    // Phase 6: kill them all; every frame comes back.
    beat("killing all threads");
    let killed = sched::kill_all(&mut |done, total| {
        beat("killing all threads");
        dynstack::println!("  killing: {} of {}", done, total);
    });
    beat("waiting for the reaper to free every stack");
    let end = now_ms() + 45_000;
    loop {
        let s = Snap::take();
        if s.stacks == s.threads as u64 && s.threads == base.threads {
            break;
        }
        check!(
            now_ms() < end,
            "after kill all: {} threads, {} stacks, {} before",
            s.threads,
            s.stacks,
            base.threads
        );
        nap(10, "waiting for the reaper to free every stack");
    }
    // The reaper may still hold the frames of stacks it has unmapped (it frees them in
    // batches): give it a moment before calling anything lost.
    let end = now_ms() + 45_000;
    let mut back = Snap::take();
    while back.accounted() != base.accounted() && now_ms() < end {
        nap(10, "waiting for the reaper to give the frames back");
        back = Snap::take();
    }
    dynstack::println!(
        "  killed {}; free {} KiB (was {} KiB; heap grew {} KiB, tables {} KiB)",
        killed,
        back.free * 4,
        base.free * 4,
        (back.heap_pages - base.heap_pages) * 4,
        (back.tables - base.tables) * 4
    );
    check!(
        back.accounted() == base.accounted(),
        "frames not conserved: before {:?}, after {:?} (difference {})",
        base,
        back,
        back.accounted() as i64 - base.accounted() as i64
    );

    // Phase 7: the kernel works normally again: a new thread grows to the maximum.
    let ok = alloc::sync::Arc::new(AtomicU64::new(u64::MAX));
    let ok2 = ok.clone();
    let h = sched::spawn_with("after", StackPolicy::Dynamic, move || {
        // SAFETY: the running thread's control block.
        let top = unsafe { (*sched::current_ptr()).stack.top() };
        let bad = dive(top - stack::config().max as u64 + 3 * 1024, &mut || {});
        ok2.store(bad, Ordering::SeqCst);
    })
    .map_err(|e| format!("spawning after recovery failed: {}", e))?;
    h.join();
    check!(
        ok.load(Ordering::SeqCst) == 0,
        "a thread could not grow after recovery"
    );
    for (pa, count) in ballast {
        frame::free(pa, count);
    }
    Ok(())
}
