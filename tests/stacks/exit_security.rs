//! Exit freeing everything, thousands of threads growing at once, and the security
//! properties: zeroed pages, guards never mapped, stacks never executable, no stale TLB
//! entries after exit or trim.
use super::*;

// ---------------------------------------------------------------------------------------
// Exit, scale

/// Threads of both policies grow to random depths and exit: afterwards every frame, every
/// counter and the arena's tables are as before. They are held at the bottom of their dives
/// (a `go` flag) until all of them are there and the peak has been read, so all 64 are
/// alive and grown at once, however the host schedules the CPUs.
pub(crate) fn exit_frees_everything() -> TestResult {
    const N: u64 = 64;
    let base = Snap::take();
    let mut hs = Vec::new();
    let bad = Arc::new(AtomicU64::new(0));
    let at_bottom = Arc::new(AtomicU64::new(0));
    let grown = Arc::new(AtomicU64::new(0));
    let go = Arc::new(AtomicBool::new(false));
    for i in 0..N {
        let (bad, at_bottom, grown, go) =
            (bad.clone(), at_bottom.clone(), grown.clone(), go.clone());
        let policy = if i % 4 == 0 {
            StackPolicy::Fixed
        } else {
            StackPolicy::Dynamic
        };
        hs.push(
            sched::spawn_with("exiter", policy, move || {
                let mut rng = Rng::for_index(0xE_0000 + i);
                let depth = rng.range(256, full_depth());
                let s = &me().stack;
                let b = dive(s.top() - depth, i, &mut || {
                    grown.fetch_add(s.mapped_bytes() / PAGE, Ordering::SeqCst);
                    at_bottom.fetch_add(1, Ordering::SeqCst);
                    while !go.load(Ordering::SeqCst) {
                        sched::park();
                    }
                    if i % 2 == 0 {
                        sched::sleep_ms(1)
                    }
                });
                bad.fetch_add(b, Ordering::SeqCst);
            })
            .map_err(|e| format!("spawn: {}", e))?,
        );
    }
    let all_there = wait_until(60_000, || at_bottom.load(Ordering::SeqCst) == N);
    let peak = Snap::take();
    go.store(true, Ordering::SeqCst);
    wake_all_named("exiter");
    for h in hs {
        h.join();
    }
    check!(
        all_there,
        "only {} of {} threads reached the bottom of their dives within 60 s",
        at_bottom.load(Ordering::SeqCst),
        N
    );
    check!(bad.load(Ordering::SeqCst) == 0);
    check!(
        peak.stacks >= base.stacks + N,
        "{} stacks at the peak, {} before: the {} threads were not alive at once",
        peak.stacks,
        base.stacks,
        N
    );
    check!(
        peak.mapped >= base.mapped + grown.load(Ordering::SeqCst),
        "{} stack pages mapped at the peak, {} before, the threads had grown to {}",
        peak.mapped,
        base.mapped,
        grown.load(Ordering::SeqCst)
    );
    check_clean(&base)
}

/// Thousands of threads grow to random depths on all CPUs under preemption, each checking
/// its pattern after a sleep or a yield at the bottom; each takes exactly one fault per page
/// it grew; growth happened on every CPU (every other thread is pinned, round robin over the
/// online CPUs, so each CPU has growers whatever the balancer does; the others go where
/// they are sent and stolen); memory comes back.
pub(crate) fn concurrent_growth_thousands() -> TestResult {
    let base = Snap::take();
    // Room for every thread at full depth, twice over.
    let budget = frame::free_pages() / 2 / (max() / PAGE + 1);
    let n = budget.min(2000) as usize;
    check!(
        n >= 100,
        "not enough memory for a meaningful number of threads ({})",
        n
    );
    let bad = Arc::new(AtomicU64::new(0));
    let wrong_faults = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let cpus_seen = Arc::new(AtomicU64::new(0));
    let go = Arc::new(AtomicBool::new(false));
    let start = timer::now();
    let online = online_cpus();
    let mut hs = Vec::with_capacity(n);
    for i in 0..n {
        let (bad, wrong_faults, ok, cpus_seen, go) = (
            bad.clone(),
            wrong_faults.clone(),
            ok.clone(),
            cpus_seen.clone(),
            go.clone(),
        );
        let body = move || {
            let s = &me().stack;
            while !go.load(Ordering::SeqCst) {
                sched::park();
            }
            let mut rng = Rng::for_index(0xC_0000 + i as u64);
            for _ in 0..2 {
                let depth = rng.range(256, full_depth());
                let how = rng.range(0, 2);
                let mapped0 = s.mapped_bytes();
                let faults0 = s.grow_faults();
                let b = dive(s.top() - depth, rng.next_u64(), &mut || {
                    cpus_seen.fetch_or(1 << cpu(), Ordering::SeqCst);
                    match how {
                        0 => sched::yield_now(),
                        1 => sched::sleep_ms(1),
                        _ => {}
                    }
                });
                let grown = (s.mapped_bytes() - mapped0) / PAGE;
                if (s.grow_faults() - faults0) as u64 != grown {
                    wrong_faults.fetch_add(1, Ordering::SeqCst);
                }
                bad.fetch_add(b, Ordering::SeqCst);
            }
            ok.fetch_add(1, Ordering::SeqCst);
        };
        let h = if i % 2 == 0 {
            let on = online[(i / 2) % online.len()];
            sched::spawn_pinned("grower", StackPolicy::Dynamic, on, body)
        } else {
            sched::spawn_with("grower", StackPolicy::Dynamic, body)
        };
        hs.push(h.map_err(|e| format!("spawn {} of {}: {}", i, n, e))?);
    }
    // All at once: release them together. Through the thread table, whose lock keeps every
    // thread in it alive (one that already went its way may be gone).
    go.store(true, Ordering::SeqCst);
    wake_all_named("grower");
    let peak = Snap::take();
    for h in hs {
        h.join();
    }
    let ms = timer::ticks_to_ns(timer::now() - start) / 1_000_000;
    check!(
        ok.load(Ordering::SeqCst) == n,
        "{} of {} threads finished",
        ok.load(Ordering::SeqCst),
        n
    );
    check!(
        bad.load(Ordering::SeqCst) == 0,
        "{} stack words corrupted",
        bad.load(Ordering::SeqCst)
    );
    check!(
        wrong_faults.load(Ordering::SeqCst) == 0,
        "{} threads took a fault count different from the pages they grew",
        wrong_faults.load(Ordering::SeqCst)
    );
    let after = Snap::take();
    check!(
        after.grow_faults - base.grow_faults >= n as u64 / 4,
        "few growth faults"
    );
    check!(
        cpus_seen.load(Ordering::SeqCst) == online_mask(),
        "growth ran on CPUs {:#b}, online {:#b}",
        cpus_seen.load(Ordering::SeqCst),
        online_mask()
    );
    dynstack::println!(
        "  {} threads (peak {} stacks, {} KiB mapped) in {} ms",
        n,
        peak.stacks,
        peak.mapped * 4,
        ms
    );
    check_clean(&base)
}

// ---------------------------------------------------------------------------------------
// Security properties

/// Threads fill their whole reservations with a marker and exit; new threads (both
/// policies) that get the same reservations and frames see zeroes in every page they did
/// not write themselves, and never the marker. At least one reservation is reused.
pub(crate) fn grown_pages_are_zeroed() -> TestResult {
    let base = Snap::take();
    let k = 16u64;
    let bases = Arc::new(IrqMutex::new(Vec::<u64>::with_capacity(k as usize)));
    let mut hs = Vec::new();
    for i in 0..k {
        let bases = bases.clone();
        let policy = if i % 4 == 3 {
            StackPolicy::Fixed
        } else {
            StackPolicy::Dynamic
        };
        hs.push(
            sched::spawn_with("dirty", policy, move || {
                let s = &me().stack;
                bases.lock().push(s.base());
                let mut a = (sp() - 512) & !7;
                while a > s.base() {
                    a -= 8;
                    // SAFETY: this thread's own reservation below SP.
                    unsafe { core::ptr::write_volatile(a as *mut u64, MARK) };
                }
            })
            .map_err(|e| format!("spawn: {}", e))?,
        );
    }
    for h in hs {
        h.join();
    }
    let dirty: Vec<u64> = bases.lock().clone();
    check!(dirty.len() == k as usize);
    let reused = Arc::new(AtomicUsize::new(0));
    for i in 0..k {
        let reused = reused.clone();
        let dirty = dirty.clone();
        let policy = if i % 4 == 1 {
            StackPolicy::Fixed
        } else {
            StackPolicy::Dynamic
        };
        in_thread("clean", policy, move || {
            let s = &me().stack;
            if dirty.contains(&s.base()) {
                reused.fetch_add(1, Ordering::SeqCst);
            }
            let here = sp();
            // Already mapped: the initial pages (or all, for fixed). Below SP - 512 nothing of
            // ours yet; the marker must appear nowhere.
            let mut a = s.mapped_bottom();
            while a < here - 512 {
                // SAFETY: mapped, this thread's own, below SP.
                let v = unsafe { core::ptr::read_volatile(a as *const u64) };
                check!(
                    v != MARK,
                    "{:?}: {:#x} holds another thread's data",
                    policy,
                    a
                );
                if s.top() - a > 8 * 1024 {
                    check!(
                        v == 0,
                        "{:?}: {:#x} never written by us holds {:#x}",
                        policy,
                        a,
                        v
                    );
                }
                a += 8;
            }
            if policy == StackPolicy::Dynamic {
                // Grow everything at once from the lowest word, then check all of it.
                let bottom = s.mapped_bottom();
                let faults = s.grow_faults();
                // SAFETY: the lowest word of this thread's reservation.
                let v = unsafe { core::ptr::read_volatile(s.base() as *const u64) };
                check!(v == 0, "lowest word {:#x}", v);
                check!(s.grow_faults() == faults + 1);
                let mut a = s.base();
                while a < bottom {
                    // SAFETY: just mapped.
                    let v = unsafe { core::ptr::read_volatile(a as *const u64) };
                    check!(v == 0, "grown page word {:#x} holds {:#x}", a, v);
                    a += 8;
                }
            }
            Ok(())
        })?;
    }
    check!(
        reused.load(Ordering::SeqCst) > 0,
        "no reservation was reused by a later thread"
    );
    check_clean(&base)
}

/// After many cycles of growth, trim, exit and reuse, no guard page is mapped, every page
/// in the arena belongs to a live thread's mapped part, and the tables agree with the
/// counters.
pub(crate) fn guard_never_mapped_after_cycles() -> TestResult {
    let base = Snap::take();
    let mut puppets: Vec<(Arc<Puppet>, JoinHandle)> = Vec::new();
    let mut rng = Rng::for_index(0x6_0A4D);
    for round in 0..6u64 {
        // New threads, some exiting at once (their reservations come back for reuse).
        for i in 0..12u64 {
            let policy = if rng.range(0, 4) == 0 {
                StackPolicy::Fixed
            } else {
                StackPolicy::Dynamic
            };
            let (p, h) = Puppet::spawn("cycler", policy, round * 100 + i)?;
            p.dive(rng.range(256, full_depth()))?;
            if rng.range(0, 2) == 0 {
                p.exit(h)?;
            } else {
                puppets.push((p, h));
            }
        }
        stack::trim_all();
        for (p, _) in &puppets {
            if rng.range(0, 1) == 0 {
                p.dive(rng.range(256, full_depth()))?;
            }
        }
        // Some of the old ones go.
        let mut keep = Vec::new();
        for (p, h) in puppets.drain(..) {
            if rng.range(0, 3) == 0 {
                p.exit(h)?;
            } else {
                keep.push((p, h));
            }
        }
        puppets = keep;
        audit_arena(true)?;
    }
    check!(!puppets.is_empty());
    for (p, h) in puppets {
        p.exit(h)?;
    }
    check_clean(&base)
}

/// The arena holds no executable mapping (checked in every audit), and jumping to code
/// written on a stack ends the thread with an instruction abort at that address.
pub(crate) fn stacks_never_executable() -> TestResult {
    audit_arena(false)?;
    for policy in [StackPolicy::Dynamic, StackPolicy::Fixed] {
        let base = Snap::take();
        let addr = Arc::new(AtomicU64::new(0));
        let ran = Arc::new(AtomicBool::new(false));
        let (a2, r2) = (addr.clone(), ran.clone());
        let h = sched::spawn_with("exec", policy, move || {
            // nop; ret
            let code: [u32; 4] = [0xd503_201f, 0xd65f_03c0, 0, 0];
            let code = core::hint::black_box(code);
            let p = code.as_ptr() as u64;
            a2.store(p, Ordering::SeqCst);
            // SAFETY: deliberately branches to the stack; the kernel must refuse to execute.
            unsafe {
                core::arch::asm!("blr {p}", p = in(reg) p, clobber_abi("C"));
            }
            r2.store(true, Ordering::SeqCst);
            core::hint::black_box(code);
        })
        .map_err(|e| format!("spawn: {}", e))?;
        let tid = h.tid();
        h.join();
        check!(
            !ran.load(Ordering::SeqCst),
            "{:?}: code on a stack ran",
            policy
        );
        check_ended_by_fault(
            &format!("{:?}", policy),
            tid,
            EC_INSTRUCTION_ABORT_SAME_EL,
            addr.load(Ordering::SeqCst),
        )?;
        check_clean(&base)?;
    }
    Ok(())
}

pub(crate) fn online_cpus() -> Vec<usize> {
    (0..dynstack::percpu::MAX_CPUS)
        .filter(|&c| sched::is_online(c))
        .collect()
}

/// Reads `addr` from a new thread pinned to CPU `on`; the read must fault there. `Ok(false)`
/// if the prober happened to get that reservation for its own stack (a growth, not a test).
pub(crate) fn probe(addr: u64, on: usize) -> Result<bool, String> {
    let ran_on = Arc::new(AtomicUsize::new(usize::MAX));
    let read = Arc::new(AtomicU64::new(0));
    let survived = Arc::new(AtomicBool::new(false));
    let own = Arc::new(AtomicBool::new(false));
    let (c2, r2, s2, o2) = (ran_on.clone(), read.clone(), survived.clone(), own.clone());
    let h = sched::spawn_pinned("prober", StackPolicy::Dynamic, on, move || {
        if me().stack.base() == slot_base_of(addr) {
            o2.store(true, Ordering::SeqCst);
            return;
        }
        c2.store(cpu(), Ordering::SeqCst);
        // SAFETY: deliberately reads another thread's unmapped stack page; the kernel must
        // end this thread.
        let v = unsafe { core::ptr::read_volatile(addr as *const u64) };
        r2.store(v, Ordering::SeqCst);
        s2.store(true, Ordering::SeqCst);
    })
    .map_err(|e| format!("spawn: {}", e))?;
    let tid = h.tid();
    h.join();
    if own.load(Ordering::SeqCst) {
        return Ok(false);
    }
    let c = ran_on.load(Ordering::SeqCst);
    check!(c == on, "a prober pinned to cpu {} ran on cpu {}", on, c);
    check!(
        !survived.load(Ordering::SeqCst),
        "STALE TRANSLATION: cpu {} read {:#x} at unmapped {:#x} without a fault",
        c,
        read.load(Ordering::SeqCst),
        addr
    );
    check_ended_by_fault(
        &format!("prober on cpu {}", c),
        tid,
        EC_DATA_ABORT_SAME_EL,
        addr,
    )?;
    Ok(true)
}

/// Reads every address from every online CPU; every read must fault.
pub(crate) fn probe_from_all_cpus(addrs: &[u64]) -> TestResult {
    for &addr in addrs {
        check!(
            kspace::query(addr).is_none(),
            "{:#x} is still in the tables",
            addr
        );
        for c in online_cpus() {
            check!(
                probe(addr, c)?,
                "a prober got the reservation of {:#x} for itself",
                addr
            );
        }
    }
    Ok(())
}

/// Reads every address from every online CPU in turn (one thread, moved from CPU to CPU
/// with `pin_current_to`), so that every CPU's TLB holds their translations, not only the
/// CPU of the thread that owns them: a later unmap that failed to invalidate some CPU's
/// TLB then shows up when that CPU probes.
pub(crate) fn warm_tlbs(addrs: &[u64]) -> TestResult {
    let addrs: Vec<u64> = addrs.to_vec();
    in_thread("warmer", StackPolicy::Fixed, move || {
        for c in online_cpus() {
            check!(
                sched::pin_current_to(c) && cpu() == c,
                "the warmer could not move to cpu {}",
                c
            );
            for &a in &addrs {
                for _ in 0..3 {
                    // SAFETY: a mapped page of a parked victim's stack (the caller keeps the
                    // victims parked until this returns).
                    core::hint::black_box(unsafe { core::ptr::read_volatile(a as *const u64) });
                }
            }
        }
        Ok(())
    })
}

/// One victim per CPU, pinned there, touches the deep pages of its stack again and again
/// and parks.
pub(crate) fn pinned_victims(seed: u64) -> Result<Vec<(Arc<Puppet>, JoinHandle)>, String> {
    let mut victims = Vec::new();
    for c in online_cpus() {
        let (p, h) = Puppet::spawn_on("victim", StackPolicy::Dynamic, seed + c as u64, Some(c))?;
        for _ in 0..3 {
            p.dive(full_depth())?;
        }
        victims.push((p, h));
    }
    Ok(victims)
}

/// Threads pinned to each CPU touch deep pages of their stacks; every CPU reads those pages
/// (so every TLB holds them); the threads exit; reading those addresses afterwards, from
/// every CPU, faults: no CPU kept a translation of a freed page.
pub(crate) fn no_stale_tlb_after_exit() -> TestResult {
    let base = Snap::take();
    let victims = pinned_victims(40)?;
    let addrs: Vec<u64> = victims
        .iter()
        .map(|(p, _)| p.thread().stack.base() + 128)
        .collect();
    warm_tlbs(&addrs)?;
    for (p, h) in victims {
        p.exit(h)?;
    }
    // Fillers take the freed reservations and keep them without growing, so that no prober
    // gets one of them for its own stack.
    let mut fillers = Vec::new();
    let mut held = 0;
    while held < addrs.len() && fillers.len() < 8 * addrs.len() + 64 {
        let (f, fh) = Puppet::spawn("filler", StackPolicy::Dynamic, 50)?;
        if addrs
            .iter()
            .any(|&a| slot_base_of(a) == f.thread().stack.base())
        {
            held += 1;
        }
        fillers.push((f, fh));
    }
    check!(held == addrs.len(), "freed reservations were not reused");
    probe_from_all_cpus(&addrs)?;
    for (f, h) in fillers {
        f.exit(h)?;
    }
    check_clean(&base)
}

/// Threads pinned to each CPU touch deep pages of their stacks and park; every CPU reads
/// those pages (so every TLB holds them); the pages are trimmed; reading them from every CPU
/// faults, and each thread grows back into fresh zeroed
/// pages (with a fault, not through a stale translation).
pub(crate) fn no_stale_tlb_after_trim() -> TestResult {
    let base = Snap::take();
    let victims = pinned_victims(60)?;
    let mut addrs = Vec::new();
    for (p, _) in &victims {
        let deep = p.thread().stack.base() + 128;
        check!(kspace::query(deep).is_some());
        addrs.push(deep);
    }
    warm_tlbs(&addrs)?;
    stack::trim_all();
    for (p, _) in &victims {
        check!(
            p.thread().stack.mapped_bottom() > p.thread().stack.base() + 128,
            "trim did not free the deep pages"
        );
    }
    probe_from_all_cpus(&addrs)?;
    for (p, h) in victims {
        let t = p.thread();
        let faults = t.stack.grow_faults();
        let zeros = read_zero_below(&p, t.stack.mapped_bottom())?;
        check!(zeros, "re-grown page not zero");
        check!(
            t.stack.grow_faults() > faults,
            "the trimmed page came back without a fault"
        );
        p.exit(h)?;
    }
    check_clean(&base)
}
