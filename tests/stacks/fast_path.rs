//! The growth fast path (`stack::fast`, assembly before the trap frame) against the slow path
//! (`stack::on_fault`), which stays the reference: both must grow by one page and by several
//! pages at once in exactly the same way, and the fast path must leave to the slow path
//! everything that is not a growth it can finish (an overflow into the guard gap, a fault
//! outside the current thread's stack, a short reserve, growth switched off).
//!
//! Which path ran is read from this CPU's counters (`stack::cpu_growth_faults`) around a
//! fault taken with IRQs masked, so nothing else runs on the CPU in between: a fast path that
//! does not run, or that handles what it should not, fails these cases.
use super::*;

/// Growth faults this CPU's fast and slow paths took while `touch` ran, IRQs masked.
fn paths_taken(touch: impl FnOnce()) -> (u64, u64) {
    let daif = irq::save_and_disable();
    let c = cpu();
    let (faults0, fast0) = stack::cpu_growth_faults(c);
    touch();
    let (faults1, fast1) = stack::cpu_growth_faults(c);
    irq::restore(daif);
    let fast = fast1 - fast0;
    (fast, faults1 - faults0 - fast)
}

/// What a growth through the path `fast` must show in `paths_taken`.
fn want(fast: bool) -> (u64, u64) {
    if fast {
        (1, 0)
    } else {
        (0, 1)
    }
}

fn path_name(fast: bool) -> &'static str {
    if fast {
        "fast path"
    } else {
        "slow path"
    }
}

/// Runs `case` once with the fast path on and once with it off (every growth then takes
/// the slow path); the fast path is on again afterwards whatever happened.
fn on_both_paths(case: fn(bool) -> TestResult) -> TestResult {
    let mut result = Ok(());
    for fast in [true, false] {
        stack::set_fast_path(fast);
        result = case(fast).map_err(|e| format!("{}: {}", path_name(fast), e));
        if result.is_err() {
            break;
        }
    }
    stack::set_fast_path(true);
    result
}

/// Pages `[from, to)` are mapped read-write, never executable, and read as zero.
fn check_new_pages(from: u64, to: u64) -> TestResult {
    let mut page = from;
    while page < to {
        let tr = kspace::query(page).ok_or_else(|| format!("{:#x} not mapped", page))?;
        check!(
            tr.level == 3 && tr.writable() && !tr.executable(),
            "{:#x} mapped as {:?}",
            page,
            tr
        );
        for a in (page..page + PAGE).step_by(8) {
            // SAFETY: a page of this thread's stack that was just mapped.
            let v = unsafe { core::ptr::read_volatile(a as *const u64) };
            check!(v == 0, "new page not zeroed: {:#x} holds {:#x}", a, v);
        }
        page += PAGE;
    }
    Ok(())
}

/// A growth of `pages` pages by one store at the lowest of them, through the path `fast`.
fn grow_by(pages: u64, fast: bool) -> TestResult {
    in_thread("fastgrow", StackPolicy::Dynamic, move || {
        let s = &me().stack;
        let bottom = s.mapped_bottom();
        let pages = pages.min((bottom - s.base()) / PAGE);
        check!(pages > 0, "no room below the initial pages");
        let low = bottom - pages * PAGE;
        check!(
            kspace::query(bottom - 8).is_none() && kspace::query(low).is_none(),
            "pages below the mapped part are already mapped"
        );
        let (mapped0, faults0, high0) = (s.mapped_bytes(), s.grow_faults(), s.high_water_bytes());
        let stats0 = stack::stats();
        // SAFETY: this thread's own reservation, below SP: nothing lives there. The store is
        // a plain one, far below any probe, so `pages` pages are missing at once.
        let taken = paths_taken(|| unsafe { core::ptr::write_volatile((low + 8) as *mut u64, 0) });
        check!(
            taken == want(fast),
            "(fast, slow) growths {:?}, want {:?}",
            taken,
            want(fast)
        );
        check!(
            s.mapped_bytes() == mapped0 + pages * PAGE,
            "mapped {} -> {} bytes, want {} pages more",
            mapped0,
            s.mapped_bytes(),
            pages
        );
        check!(
            s.mapped_bottom() == low,
            "the mapped part ends at {:#x}",
            s.mapped_bottom()
        );
        check!(
            s.grow_faults() == faults0 + 1,
            "grow faults {} -> {}, want one fault",
            faults0,
            s.grow_faults()
        );
        check!(
            s.high_water_bytes() == high0.max(s.mapped_bytes()),
            "high water {} with {} mapped",
            s.high_water_bytes(),
            s.mapped_bytes()
        );
        let stats1 = stack::stats();
        check!(stats1.grow_faults > stats0.grow_faults);
        check!(
            stats1.mapped_pages >= stats0.mapped_pages + pages,
            "stack statistics count {} -> {} pages",
            stats0.mapped_pages,
            stats1.mapped_pages
        );
        check_new_pages(low, bottom)?;
        if low > s.base() {
            check!(
                kspace::query(low - 8).is_none(),
                "mapped below the faulting page"
            );
        }
        Ok(())
    })
}

/// One store just below the mapped part: one page, one fault, on the expected path.
pub(super) fn fast_and_slow_grow_one_page() -> TestResult {
    on_both_paths(|fast| grow_by(1, fast))
}

/// One store three pages below the mapped part: three pages with a single fault.
pub(super) fn fast_and_slow_grow_several_pages() -> TestResult {
    on_both_paths(|fast| grow_by(3, fast))
}

/// With growth switched off (`kstack.strategy=expand|check`), a fault below the mapped part
/// ends the thread on both paths as a miss (not a growth, not a guard-gap overflow), and
/// nothing is mapped.
pub(super) fn no_growth_when_growth_is_off() -> TestResult {
    stack::set_grow_on_fault(false);
    let r = on_both_paths(|fast| {
        let far = Arc::new(AtomicU64::new(0));
        let f2 = far.clone();
        let (overflows0, misses0) = (stack::stats().overflows, stack::stats().misses);
        let (fast0, faults0) = (stack::stats().fast_grow_faults, stack::stats().grow_faults);
        let h = sched::spawn_with("nogrow", StackPolicy::Dynamic, move || {
            let addr = me().stack.mapped_bottom() - 8;
            f2.store(addr, Ordering::SeqCst);
            // SAFETY: this thread's own reservation: with growth off, the thread ends here.
            unsafe { core::ptr::write_volatile(addr as *mut u64, 1) };
        })
        .map_err(|e| format!("spawn: {}", e))?;
        let tid = h.tid();
        h.join();
        check_ended_by_fault(
            "nogrow",
            tid,
            EC_DATA_ABORT_SAME_EL,
            far.load(Ordering::SeqCst),
        )?;
        let s = stack::stats();
        check!(
            s.misses == misses0 + 1 && s.overflows == overflows0,
            "misses {} -> {}, overflows {} -> {}",
            misses0,
            s.misses,
            overflows0,
            s.overflows
        );
        check!(
            s.grow_faults == faults0 && s.fast_grow_faults == fast0,
            "a stack grew with growth off ({} path)",
            path_name(fast)
        );
        Ok(())
    });
    stack::set_grow_on_fault(true);
    r
}

/// A store into the guard gap is an overflow: the fast path leaves it to the slow path,
/// which ends the thread with its report.
pub(super) fn fast_path_leaves_overflow() -> TestResult {
    let far = Arc::new(AtomicU64::new(0));
    let f2 = far.clone();
    let s0 = stack::stats();
    let h = sched::spawn_with("fastovf", StackPolicy::Dynamic, move || {
        let addr = me().stack.base() - 8;
        f2.store(addr, Ordering::SeqCst);
        // SAFETY: the guard gap below this thread's reservation: the thread ends here.
        unsafe { core::ptr::write_volatile(addr as *mut u64, 1) };
    })
    .map_err(|e| format!("spawn: {}", e))?;
    let tid = h.tid();
    h.join();
    check_ended_by_fault(
        "guard-gap store",
        tid,
        EC_DATA_ABORT_SAME_EL,
        far.load(Ordering::SeqCst),
    )?;
    let s1 = stack::stats();
    check!(
        s1.overflows == s0.overflows + 1,
        "overflows {} -> {}",
        s0.overflows,
        s1.overflows
    );
    check!(
        s1.fast_grow_faults == s0.fast_grow_faults && s1.grow_faults == s0.grow_faults,
        "the guard-gap store was counted as a growth"
    );
    Ok(())
}

/// Faults that are not growths of the current thread's stack go to the slow path: a read of
/// another thread's reservation below its mapped part (where a fast path that looked at the
/// wrong thread would grow), and reads of unmapped addresses outside any stack, survived
/// through `probe::try_read`. A probe of the thread's own reservation is still a growth.
pub(super) fn fast_path_leaves_other_faults() -> TestResult {
    let (victim, vh) = Puppet::spawn("fastvictim", StackPolicy::Dynamic, 41)?;
    let target = victim.thread().stack.mapped_bottom() - 8;
    let victim_mapped = victim.thread().stack.mapped_bytes();
    let s0 = stack::stats();
    let survived = Arc::new(AtomicBool::new(false));
    let s2 = survived.clone();
    let h = sched::spawn_with("fastprobe", StackPolicy::Dynamic, move || {
        // SAFETY: deliberately reads another thread's unmapped stack page; the kernel must
        // end this thread.
        unsafe { core::ptr::read_volatile(target as *const u64) };
        s2.store(true, Ordering::SeqCst);
    })
    .map_err(|e| format!("spawn: {}", e))?;
    let tid = h.tid();
    h.join();
    let ended = check_ended_by_fault("foreign read", tid, EC_DATA_ABORT_SAME_EL, target);
    let s1 = stack::stats();
    let now_mapped = victim.thread().stack.mapped_bytes();
    victim.exit(vh)?;
    ended?;
    check!(
        !survived.load(Ordering::SeqCst),
        "read another thread's unmapped page"
    );
    check!(
        now_mapped == victim_mapped,
        "the other thread's stack went from {} to {} bytes",
        victim_mapped,
        now_mapped
    );
    check!(
        s1.fast_grow_faults == s0.fast_grow_faults && s1.grow_faults == s0.grow_faults,
        "a read of another thread's stack was counted as a growth"
    );
    in_thread("fastprobe2", StackPolicy::Dynamic, || {
        // The top of the arena (slots are handed out from the bottom), and an address with
        // no table at all.
        let unmapped = [STACK_ARENA_BASE + STACK_ARENA_SIZE - 8, 0xdead_0000];
        for addr in unmapped {
            let mut got = Some(0);
            let taken = paths_taken(|| got = dynstack::arch::probe::try_read(addr));
            check!(
                got.is_none(),
                "read {:#x} at unmapped {:#x}",
                got.unwrap_or(0),
                addr
            );
            check!(
                taken == (0, 0),
                "a read of {:#x} grew a stack: {:?}",
                addr,
                taken
            );
        }
        let own = me().stack.mapped_bottom() - 8;
        let mut got = None;
        let taken = paths_taken(|| got = dynstack::arch::probe::try_read(own));
        check!(got == Some(0), "a probe of its own stack read {:?}", got);
        check!(
            taken == (1, 0),
            "a probe of its own stack: (fast, slow) {:?}",
            taken
        );
        Ok(())
    })
}

/// With this CPU's reserve emptied, a growth cannot be finished by the fast path: the slow
/// path tops the reserve up (the thread holds no lock) and grows the stack, by one page and
/// by several.
pub(super) fn reserve_short_goes_to_slow_path() -> TestResult {
    for pages in [1u64, 3] {
        in_thread("fastshort", StackPolicy::Dynamic, move || {
            let s = &me().stack;
            let bottom = s.mapped_bottom();
            let pages = pages.min((bottom - s.base()) / PAGE);
            let low = bottom - pages * PAGE;
            let mut drained = 0;
            let taken = paths_taken(|| {
                drained = stack::reserve::drain(cpu());
                // SAFETY: this thread's own reservation, below SP.
                unsafe { core::ptr::write_volatile((low + 8) as *mut u64, 0) };
            });
            check!(drained > 0, "this CPU's reserve was empty already");
            check!(
                taken == (0, 1),
                "(fast, slow) growths {:?}, want (0, 1)",
                taken
            );
            check!(
                s.mapped_bottom() == low,
                "mapped down to {:#x}, want {:#x}",
                s.mapped_bottom(),
                low
            );
            check_new_pages(low, bottom)
        })?;
    }
    Ok(())
}

/// One growth whose pages lie in two different last-level tables (the reservation straddles
/// a 2 MiB boundary of the arena): the fast path finds each page's table on its own. Threads
/// are kept alive, parked, until one gets such a reservation (fresh slots: about one in a
/// hundred with 16 KiB stacks, one in eight with 256 KiB ones; reused slots come in any
/// order, hence the many tries); that one grows from its base up in one fault and checks
/// every page.
pub(super) fn fast_grow_across_tables() -> TestResult {
    const CHUNK: u64 = 2 << 20;
    const MAX_THREADS: usize = 1500;
    let result: Arc<IrqMutex<Option<TestResult>>> = Arc::new(IrqMutex::new(None));
    let release = Arc::new(AtomicBool::new(false));
    let looked = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    let mut failure = None;
    for _ in 0..MAX_THREADS {
        let (r, rel, seen) = (result.clone(), release.clone(), looked.clone());
        let h = sched::spawn_with("fastcross", StackPolicy::Dynamic, move || {
            let s = &me().stack;
            let bottom = s.mapped_bottom();
            let boundary = (s.base() / CHUNK + 1) * CHUNK;
            if boundary > s.base() + 8 && boundary < bottom {
                let low = s.base();
                let taken = paths_taken(|| {
                    // SAFETY: the lowest page of this thread's own reservation.
                    unsafe { core::ptr::write_volatile((low + 8) as *mut u64, 0) }
                });
                let outcome = if taken != (1, 0) {
                    Err(format!("(fast, slow) growths {:?}, want (1, 0)", taken))
                } else if s.mapped_bottom() != low {
                    Err(format!(
                        "mapped down to {:#x}, want {:#x}",
                        s.mapped_bottom(),
                        low
                    ))
                } else {
                    check_new_pages(low, bottom)
                };
                *r.lock() = Some(outcome);
            }
            seen.fetch_add(1, Ordering::SeqCst);
            while !rel.load(Ordering::SeqCst) {
                sched::park();
            }
        });
        match h {
            Ok(h) => handles.push(h),
            Err(e) => {
                failure = Some(format!("spawn: {}", e));
                break;
            }
        }
        // Wait until this one has looked at its reservation, so the next gets another slot.
        let end = deadline_in(5000);
        while looked.load(Ordering::SeqCst) < handles.len() && !past(end) {
            sched::yield_now();
        }
        if result.lock().is_some() {
            break;
        }
    }
    release.store(true, Ordering::SeqCst);
    wake_all_named("fastcross");
    for h in handles {
        h.join();
    }
    if let Some(f) = failure {
        return Err(f);
    }
    let r = result.lock().take();
    r.unwrap_or_else(|| {
        Err(format!(
            "none of {} threads got a reservation across a 2 MiB boundary",
            MAX_THREADS
        ))
    })
}
