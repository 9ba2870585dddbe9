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
    // Frames that come free after spawning failed (CPUs that fall quiet give their reserves
    // back), taken away for the "late" spawn below: room made now, while memory is there.
    let mut late_frames: Vec<u64> = Vec::with_capacity(64 * dynstack::percpu::MAX_CPUS + 256);
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
    // A closure thread fails as cleanly, with every free frame taken (memory may have come
    // back since spawning failed: reserves of CPUs gone quiet drain).
    while late_frames.len() < late_frames.capacity() {
        match frame::alloc(1) {
            Some(pa) => late_frames.push(pa),
            None => break,
        }
    }
    let r = sched::spawn("late", || {});
    for &pa in &late_frames {
        frame::free(pa, 1);
    }
    check!(
        r.is_err(),
        "spawn succeeded after spawn_raw failed for lack of memory ({} frames had come free since)",
        late_frames.len()
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

/// The per-CPU reserves give their pages back. Memory low: two dynamic threads pinned to one
/// CPU take turns, and the one that records reads that CPU's reserve right after each of its
/// switch-ins: `kstack.max` pages (at most the bound) while memory is plentiful, and soon
/// (at that CPU's next tick) only what it can still map (`kstack.max` less its mapped
/// pages) once free memory is below the low-water mark, the rest given back. Idle: a
/// dynamic thread fills another CPU's reserve and parks; with no dynamic thread switched in
/// there any more, a tick must drain that CPU's reserve to nothing (checked on a CPU the
/// watchdog, which never sleeps, does not run on; with one CPU there is none: it could
/// drain there too, the watchdog being fixed, but it may share it with dynamic threads).
pub(crate) fn reserves_drain() -> TestResult {
    use stack::reserve;
    beat("setting up");
    let max_pages = stack::config().max as u64 / PAGE;
    let cap = max_pages.min(reserve::RESERVE_MAX as u64);
    check!(max_pages > 1, "kstack.max is one page: nothing to drain");
    let cpus: Vec<usize> = (0..dynstack::percpu::MAX_CPUS)
        .filter(|&c| sched::is_online(c))
        .collect();
    let c = *cpus.last().expect("an online CPU");
    let (idle_before, low_before) = reserve::drained_pages();

    // Memory low.
    const NONE: u64 = u64::MAX;
    let stop = alloc::sync::Arc::new(AtomicBool::new(false));
    let low = alloc::sync::Arc::new(AtomicBool::new(false));
    let plenty_seen = alloc::sync::Arc::new(AtomicU64::new(NONE));
    let low_seen = alloc::sync::Arc::new(AtomicU64::new(NONE));
    let low_need = alloc::sync::Arc::new(AtomicU64::new(NONE));
    let recorder = {
        let (stop, low, plenty_seen, low_seen, low_need) = (
            stop.clone(),
            low.clone(),
            plenty_seen.clone(),
            low_seen.clone(),
            low_need.clone(),
        );
        sched::spawn_pinned("recorder", StackPolicy::Dynamic, c, move || {
            while !stop.load(Ordering::SeqCst) {
                // Memory low before the yield and still low after it: the switch-in that
                // just brought this thread back found it low too.
                let is_low = low.load(Ordering::SeqCst) && reserve::memory_low();
                sched::yield_now();
                let daif = dynstack::arch::irq::save_and_disable();
                let still_low = reserve::memory_low();
                let held = reserve::pages(c) as u64;
                // SAFETY: the running thread's control block.
                let mapped = unsafe { (*sched::current_ptr()).stack.mapped_bytes() } / PAGE;
                dynstack::arch::irq::restore(daif);
                if is_low && still_low {
                    low_need.store(max_pages.saturating_sub(mapped).min(cap), Ordering::SeqCst);
                    low_seen.store(held, Ordering::SeqCst);
                } else {
                    plenty_seen.store(held, Ordering::SeqCst);
                }
            }
        })
        .map_err(|e| format!("spawn: {}", e))?
    };
    let partner = {
        let stop = stop.clone();
        sched::spawn_pinned("partner", StackPolicy::Dynamic, c, move || {
            while !stop.load(Ordering::SeqCst) {
                sched::yield_now();
            }
        })
        .map_err(|e| format!("spawn: {}", e))?
    };
    let result = (|| -> TestResult {
        let end = now_ms() + 45_000;
        while plenty_seen.load(Ordering::SeqCst) == NONE {
            check!(now_ms() < end, "the recorder never ran");
            nap(5, "waiting for the recorder");
        }
        check!(
            plenty_seen.load(Ordering::SeqCst) == cap,
            "memory plentiful: CPU {}'s reserve held {} pages after a switch-in, not {}",
            c,
            plenty_seen.load(Ordering::SeqCst),
            cap
        );
        // Several ballasts: one holds at most a few thousand runs, and free memory may be
        // single pages by now. Well below the mark, and taken again whenever the kernel
        // gives memory back meanwhile (a heap chunk that empties is 512 pages).
        let mut ballast = Vec::with_capacity(64);
        let take_ballast = |ballast: &mut Vec<Ballast>| {
            while !reserve::memory_low() && ballast.len() < ballast.capacity() {
                ballast.push(Ballast::take_all_but(reserve::LOW_WATER_PAGES / 8));
            }
        };
        take_ballast(&mut ballast);
        check!(
            reserve::memory_low(),
            "could not bring free memory below the low-water mark ({} pages free)",
            frame::free_pages()
        );
        low.store(true, Ordering::SeqCst);
        // A full reserve drains at the CPU's next tick, a refill takes only what is needed:
        // either way, soon after memory ran low the recorder finds only what it can map.
        let end = now_ms() + 45_000;
        while low_seen.load(Ordering::SeqCst) == NONE
            || low_seen.load(Ordering::SeqCst) != low_need.load(Ordering::SeqCst)
        {
            if now_ms() >= end {
                break;
            }
            nap(5, "waiting for the recorder, memory low");
            take_ballast(&mut ballast);
        }
        drop(ballast);
        let (seen, need) = (
            low_seen.load(Ordering::SeqCst),
            low_need.load(Ordering::SeqCst),
        );
        check!(seen != NONE, "the recorder never ran with memory low");
        dynstack::println!(
            "  CPU {}: reserve {} pages with memory plentiful, {} with memory low (the recorder can still map {})",
            c,
            cap,
            seen,
            need
        );
        check!(
            seen == need,
            "memory low for 45 s: CPU {}'s reserve still held {} pages after a switch-in, not {}",
            c,
            seen,
            need
        );
        if need < cap {
            check!(
                reserve::drained_pages().1 > low_before,
                "no page was counted as given back while memory was low"
            );
        }
        Ok(())
    })();
    stop.store(true, Ordering::SeqCst);
    recorder.join();
    partner.join();
    result?;

    // Idle.
    let watchdog_cpu = || {
        let mut cpu = None;
        sched::for_each_thread(usize::MAX, &mut |t| {
            if t.name() == "watchdog" {
                cpu = Some(t.cpu.load(Ordering::Relaxed) as usize);
            }
        });
        cpu
    };
    let Some(&c) = cpus.iter().rev().find(|&&c| Some(c) != watchdog_cpu()) else {
        dynstack::println!(
            "  one CPU, kept busy by the watchdog: the idle drain is checked with more"
        );
        return Ok(());
    };
    let release = alloc::sync::Arc::new(AtomicBool::new(false));
    let filled = alloc::sync::Arc::new(AtomicU64::new(NONE));
    let sleeper = {
        let (release, filled) = (release.clone(), filled.clone());
        sched::spawn_pinned("drainee", StackPolicy::Dynamic, c, move || {
            let daif = dynstack::arch::irq::save_and_disable();
            let held = reserve::pages(c) as u64;
            dynstack::arch::irq::restore(daif);
            filled.store(held, Ordering::SeqCst);
            while !release.load(Ordering::SeqCst) {
                sched::park();
            }
        })
        .map_err(|e| format!("spawn: {}", e))?
    };
    let result = (|| -> TestResult {
        let end = now_ms() + 45_000;
        while filled.load(Ordering::SeqCst) == NONE {
            check!(now_ms() < end, "the drainee never ran");
            nap(5, "waiting for the drainee");
        }
        check!(
            filled.load(Ordering::SeqCst) == cap,
            "CPU {}'s reserve held {} pages when the drainee ran, not {}",
            c,
            filled.load(Ordering::SeqCst),
            cap
        );
        let end = now_ms() + 45_000;
        while reserve::pages(c) != 0 {
            if now_ms() >= end {
                sched::for_each_thread(usize::MAX, &mut |t| {
                    if t.cpu.load(Ordering::Relaxed) as usize == c {
                        dynstack::println!(
                            "  on CPU {}: thread {} ({}) {:?}",
                            c,
                            t.tid,
                            t.name(),
                            t.state()
                        );
                    }
                });
            }
            check!(
                now_ms() < end,
                "CPU {} kept {} reserve pages for 45 s with its only dynamic thread parked (watchdog on CPU {:?})",
                c,
                reserve::pages(c),
                watchdog_cpu()
            );
            nap(5, "waiting for an idle CPU's reserve to drain");
        }
        check!(
            reserve::drained_pages().0 >= idle_before + cap,
            "the idle drains were not counted"
        );
        dynstack::println!(
            "  CPU {}: reserve of {} pages drained once it was idle",
            c,
            cap
        );
        Ok(())
    })();
    release.store(true, Ordering::SeqCst);
    wake_all_named("drainee");
    sleeper.join();
    result
}

/// The quiet rule of the reserves' idle drain, driven through the tick's own function on
/// this CPU with made-up tick times far ahead of the real ones (IRQs masked, so no real tick
/// comes between): a CPU whose ticks never find a dynamic thread running keeps its reserve
/// while dynamic threads are switched in between its ticks (short-lived threads, as
/// `bench create` spawns), and gives all of it back once none has been for
/// `IDLE_DRAIN_NS`.
pub(crate) fn reserve_quiet_rule() -> TestResult {
    use stack::reserve;
    beat("setting up");
    let daif = dynstack::arch::irq::save_and_disable();
    let cpu = dynstack::percpu::cpu_index();
    let result = (|| -> TestResult {
        check!(
            !reserve::memory_low(),
            "memory is low ({} pages free): the quiet rule does not apply",
            frame::free_pages()
        );
        check!(reserve::fill(cpu, usize::MAX), "could not fill the reserve");
        let cap = reserve::pages(cpu);
        check!(cap > 0, "CPU {}'s reserve holds nothing when full", cpu);
        let step = timer::ns_to_ticks(reserve::IDLE_DRAIN_NS);
        let t0 = timer::now() + 1000 * step;
        // A tick finds a dynamic thread running: not quiet since t0.
        reserve::on_tick(cpu, t0, Some(1));
        for i in 1..=5 {
            // A dynamic thread switched in (and gone again) before each tick.
            let _ = reserve::is_full_noting_use(cpu);
            let freed = reserve::on_tick(cpu, t0 + i * step, None);
            check!(
                freed == 0,
                "tick {}: drained {} pages although a dynamic thread was switched in since the tick before",
                i,
                freed
            );
        }
        let last_use = t0 + 5 * step;
        let freed = reserve::on_tick(cpu, last_use + step / 2, None);
        check!(
            freed == 0,
            "drained {} pages before the CPU was quiet for IDLE_DRAIN_NS",
            freed
        );
        let freed = reserve::on_tick(cpu, last_use + step, None);
        check!(
            freed == cap && reserve::pages(cpu) == 0,
            "quiet for IDLE_DRAIN_NS: drained {} of {} pages, {} left",
            freed,
            cap,
            reserve::pages(cpu)
        );
        dynstack::println!(
            "  CPU {}: reserve of {} pages kept across 5 ticks with dynamic switch-ins between, drained once quiet",
            cpu,
            cap
        );
        Ok(())
    })();
    // Back to real time: the next real tick must not see a quiet period of made-up length.
    reserve::on_tick(cpu, timer::now(), Some(0));
    dynstack::arch::irq::restore(daif);
    result
}
