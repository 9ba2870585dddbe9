//! Growth of dynamic stacks (one page, frames that skip pages, IRQs masked, locks held,
//! pre-grown with `ensure`, to the full reservation), the configuration in force, fixed and
//! dynamic side by side, and data integrity across preemption and migration.
use super::*;

// ---------------------------------------------------------------------------------------
// Configuration

/// The `kstack.*` settings in force are the ones on the command line (or the defaults).
pub(crate) fn config_matches_bootargs() -> TestResult {
    let info = dynstack::kernel::boot_info();
    let line = info.machine.bootargs.clone().unwrap_or_default();
    let mut want_max = 16 * 1024;
    for word in line.split_whitespace() {
        if let Some(v) = word.strip_prefix("kstack.max=") {
            want_max = dynstack::cmdline::parse_size(v)
                .map_err(|e| format!("bad kstack.max on the command line: {:?}", e))?;
        }
    }
    let cfg = stack::config();
    check!(
        cfg.max == want_max,
        "kstack.max is {} but the command line {:?} asks for {}",
        cfg.max,
        line,
        want_max
    );
    check!(
        (cfg.initial as u64).is_multiple_of(PAGE) && cfg.initial >= 4096 && cfg.initial <= cfg.max
    );
    check!((cfg.guard as u64).is_multiple_of(PAGE) && cfg.guard >= 4096);
    check!(
        stride() == (cfg.max + cfg.guard) as u64,
        "slots are {} bytes apart, want max+guard = {}",
        stride(),
        cfg.max + cfg.guard
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Growth

/// A store just below the mapped part maps exactly one zeroed page with one fault.
pub(crate) fn grow_one_page() -> TestResult {
    in_thread("grow1", StackPolicy::Dynamic, || {
        let s = &me().stack;
        let bottom = s.mapped_bottom();
        check!(bottom > s.base(), "no room below the initial pages");
        check!(
            sp() - bottom >= 1024,
            "SP {:#x} too close to the mapped bottom {:#x} to measure",
            sp(),
            bottom
        );
        check!(
            kspace::query(bottom - 8).is_none(),
            "the page below the initial ones is already mapped"
        );
        let global0 = stack::stats().grow_faults;
        let mapped0 = s.mapped_bytes();
        let faults0 = s.grow_faults();
        let target = bottom - 8;
        // SAFETY: an address of this thread's own reservation, below SP: nothing lives there.
        unsafe { core::ptr::write_volatile(target as *mut u64, MARK) };
        let mapped1 = s.mapped_bytes();
        let faults1 = s.grow_faults();
        // SAFETY: as above, now mapped.
        let back = unsafe { core::ptr::read_volatile(target as *const u64) };
        check!(back == MARK, "read back {:#x}", back);
        check!(
            mapped1 == mapped0 + PAGE,
            "mapped {} -> {} bytes, want one page more",
            mapped0,
            mapped1
        );
        check!(
            faults1 == faults0 + 1,
            "grow faults {} -> {}",
            faults0,
            faults1
        );
        check!(s.mapped_bottom() == bottom - PAGE);
        check!(s.high_water_bytes() >= mapped1);
        check!(stack::stats().grow_faults > global0);
        for a in (bottom - PAGE..bottom - 8).step_by(8) {
            // SAFETY: the page just mapped.
            let v = unsafe { core::ptr::read_volatile(a as *const u64) };
            check!(v == 0, "new page not zeroed: {:#x} holds {:#x}", a, v);
        }
        let tr = kspace::query(bottom - PAGE).ok_or("new page not in the tables")?;
        check!(
            tr.level == 3 && tr.writable() && !tr.executable(),
            "new page mapped as {:?}",
            tr
        );
        if bottom - PAGE > s.base() {
            check!(
                kspace::query(bottom - PAGE - 8).is_none(),
                "more than one page was mapped"
            );
        }
        Ok(())
    })
}

/// A store far below SP (hand-written assembly, no probes) maps every page from the faulting
/// one up to the mapped part, with a single fault; so does a load.
pub(crate) fn grow_frame_skipping_pages() -> TestResult {
    for (write, policy_name) in [(true, "store"), (false, "load")] {
        in_thread("growskip", StackPolicy::Dynamic, move || {
            let s = &me().stack;
            let base = s.base();
            let bottom = s.mapped_bottom();
            check!(
                bottom - base >= 2 * PAGE,
                "reservation too small to skip pages (mapped bottom {:#x}, base {:#x})",
                bottom,
                base
            );
            let target = base + 64;
            let mapped0 = s.mapped_bytes();
            let faults0 = s.grow_faults();
            let here = sp();
            let distance = here - target;
            if write {
                // SAFETY: stores into this thread's own reservation, far below SP, as a
                // large frame made by hand would: `sub` from SP without touching the pages
                // in between.
                unsafe {
                    core::arch::asm!(
                        "mov {t}, sp",
                        "sub {t}, {t}, {d}",
                        "str {v}, [{t}]",
                        t = out(reg) _,
                        d = in(reg) distance,
                        v = in(reg) MARK,
                        options(nostack),
                    )
                };
            } else {
                let v: u64;
                // SAFETY: as above, a load.
                unsafe {
                    core::arch::asm!(
                        "mov {t}, sp",
                        "sub {t}, {t}, {d}",
                        "ldr {v}, [{t}]",
                        t = out(reg) _,
                        d = in(reg) distance,
                        v = out(reg) v,
                        options(nostack, readonly),
                    )
                };
                check!(v == 0, "a grown page read {:#x}", v);
            }
            let mapped1 = s.mapped_bytes();
            let faults1 = s.grow_faults();
            let pages = (bottom - base) / PAGE;
            check!(
                faults1 == faults0 + 1,
                "{}: {} faults to map {} pages, want 1",
                policy_name,
                faults1 - faults0,
                pages
            );
            check!(
                mapped1 == mapped0 + pages * PAGE,
                "{}: mapped {} -> {}, want {} pages more",
                policy_name,
                mapped0,
                mapped1,
                pages
            );
            check!(s.mapped_bottom() == base);
            // Every page in between is mapped, zeroed, and touching it faults no more.
            let mut a = base;
            while a < bottom {
                check!(
                    kspace::query(a).is_some(),
                    "page {:#x} in between not mapped",
                    a
                );
                for w in (a..a + PAGE).step_by(8) {
                    if w == target {
                        continue;
                    }
                    // SAFETY: mapped pages of this thread's reservation below SP.
                    let v = unsafe { core::ptr::read_volatile(w as *const u64) };
                    check!(v == 0, "{:#x} holds {:#x}, want 0", w, v);
                }
                a += PAGE;
            }
            check!(
                s.grow_faults() == faults1,
                "touching the pages in between faulted again"
            );
            if write {
                // SAFETY: as above.
                let v = unsafe { core::ptr::read_volatile(target as *const u64) };
                check!(v == MARK, "stored word reads {:#x}", v);
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Growth works with IRQs masked (page by page through a deep recursion, and a single
/// store), and IRQs stay masked.
pub(crate) fn grow_with_irqs_masked() -> TestResult {
    in_thread("growirq", StackPolicy::Dynamic, || {
        let s = &me().stack;
        let mapped0 = s.mapped_bytes();
        let faults0 = s.grow_faults();
        let daif = irq::save_and_disable();
        let bad = dive(s.top() - full_depth(), 7, &mut || {});
        let still_masked = irq::are_masked();
        irq::restore(daif);
        let grown = (s.mapped_bytes() - mapped0) / PAGE;
        check!(still_masked, "IRQs were unmasked by the fault path");
        check!(bad == 0, "{} words corrupted", bad);
        check!(
            s.mapped_bytes() == max(),
            "grew to {} of {}",
            s.mapped_bytes(),
            max()
        );
        check!(
            s.grow_faults() - faults0 == grown as u32,
            "{} faults for {} pages",
            s.grow_faults() - faults0,
            grown
        );
        check!(grown > 0, "nothing grew");
        Ok(())
    })
}

pub(crate) static TEST_LOCK: IrqMutex<u64> = IrqMutex::new(0);
/// A plain spin lock on purpose: growth must work while code holds any kind of lock (the
/// kernel itself uses only counted ones, see clippy.toml).
#[allow(clippy::disallowed_types)]
pub(crate) static TEST_SPIN: spin::Mutex<u64> = spin::Mutex::new(0);

/// Growth works while the thread holds locks: a test IrqMutex, a plain spin lock (IRQs on),
/// the kernel address-space lock (inside `kspace::walk`), and the thread-table lock (inside
/// `sched::for_each_thread`). A fault path that took any of them would deadlock here.
pub(crate) fn grow_with_locks_held() -> TestResult {
    type Holder = fn(&mut dyn FnMut());
    let holders: [(&str, Holder); 4] = [
        ("IrqMutex", |f| {
            let mut g = TEST_LOCK.lock();
            *g += 1;
            check_locked_and(f);
        }),
        ("spin::Mutex", |f| {
            let mut g = TEST_SPIN.lock();
            *g += 1;
            f();
        }),
        ("kspace lock", |f| {
            let mut once = Some(f);
            kspace::walk(|_, _| {
                if let Some(f) = once.take() {
                    check_locked_and(f);
                }
            });
        }),
        ("thread table lock", |f| {
            let mut once = Some(f);
            sched::for_each_thread(1, &mut |_| {
                if let Some(f) = once.take() {
                    check_locked_and(f);
                }
            });
        }),
    ];
    for (what, hold) in holders {
        in_thread("growlock", StackPolicy::Dynamic, move || {
            let s = &me().stack;
            let mapped0 = s.mapped_bytes();
            let faults0 = s.grow_faults();
            let mut bad = u64::MAX;
            let seed = 11;
            let until = s.top() - full_depth();
            hold(&mut || bad = dive(until, seed, &mut || {}));
            check!(bad != u64::MAX, "{}: the body did not run", what);
            check!(bad == 0, "{}: {} words corrupted", what, bad);
            let grown = (s.mapped_bytes() - mapped0) / PAGE;
            check!(grown > 0, "{}: nothing grew", what);
            check!(s.grow_faults() - faults0 == grown as u32);
            check!(dynstack::sync::locks_held() == 0);
            if what != "spin::Mutex" {
                check!(
                    LOCKS_SEEN.swap(0, Ordering::SeqCst) >= 1,
                    "{}: the body did not run with the lock held",
                    what
                );
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Locks held (as the kernel counts them) when the last body ran under a kernel lock.
pub(crate) static LOCKS_SEEN: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn check_locked_and(f: &mut dyn FnMut()) {
    LOCKS_SEEN.store(dynstack::sync::locks_held() as usize, Ordering::SeqCst);
    f();
}

/// `stack::ensure` maps ahead of use, and code inside `with_stack` does not fault.
pub(crate) fn ensure_pregrows() -> TestResult {
    in_thread("ensure", StackPolicy::Dynamic, || {
        let s = &me().stack;
        let want = (sp() - s.base()).min(max()) - 2048;
        let want = want.min(8 * 1024);
        stack::ensure(want as usize);
        let here = sp();
        check!(
            s.mapped_bottom() <= here - want,
            "ensure({}) left the mapped bottom at {:#x}, SP {:#x}",
            want,
            s.mapped_bottom(),
            here
        );
        check!(kspace::query(here - want).is_some());
        let faults = s.grow_faults();
        let bad = dive(here - want + 1024, 3, &mut || {});
        check!(bad == 0);
        check!(
            s.grow_faults() == faults,
            "{} faults inside pre-grown stack",
            s.grow_faults() - faults
        );
        // with_stack pre-grows page by page from its own SP, a little below `here`: one
        // fault per page it maps, none in its body.
        // It asks for two pages more than `ensure` mapped, where the reservation has them.
        let want2 = (sp() - s.base()).saturating_sub(2048).min(want + 2 * PAGE);
        let faults2 = s.grow_faults();
        let mapped2 = s.mapped_bytes();
        let inner_faults = stack::with_stack(want2 as usize, || {
            let f = me().stack.grow_faults();
            let b = dive(sp() - want2 + 1536, 5, &mut || {});
            (me().stack.grow_faults() - f, b)
        });
        check!(
            inner_faults == (0, 0),
            "with_stack body: (faults, bad) = {:?}",
            inner_faults
        );
        let (pre_faults, pre_pages) = (
            s.grow_faults() - faults2,
            (s.mapped_bytes() - mapped2) / PAGE,
        );
        check!(
            pre_faults as u64 == pre_pages,
            "with_stack's pre-growth took {} faults for {} pages",
            pre_faults,
            pre_pages
        );
        check!(
            want2 < want + 2 * PAGE || pre_pages >= 1,
            "with_stack({}) mapped nothing beyond ensure({})",
            want2,
            want
        );
        Ok(())
    })
}

/// `with_stack(bytes, f)` promises `f` at least `bytes` of mapped stack. Asking for more
/// than the reservation holds cannot be granted: `f` must not run (the guard gap stops the
/// pre-growth, as `ensure`'s own comment says: an overflow ends the thread).
pub(crate) fn with_stack_too_large_is_refused() -> TestResult {
    let base = Snap::take();
    let ran = Arc::new(AtomicBool::new(false));
    let r2 = ran.clone();
    let h = sched::spawn_with("bigask", StackPolicy::Dynamic, move || {
        stack::with_stack((max() + guard()) as usize, || {
            let below = sp() - me().stack.base();
            r2.store(true, Ordering::SeqCst);
            dynstack::println!(
                "  with_stack({} KiB) ran its body with {} bytes of stack below SP",
                (max() + guard()) / 1024,
                below
            );
        });
    })
    .map_err(|e| format!("spawn: {}", e))?;
    let tid = h.tid();
    h.join();
    check!(
        !ran.load(Ordering::SeqCst),
        "with_stack ran its body with less stack than it promised"
    );
    let (ftid, _, far) = dynstack::kernel::exception::last_fault();
    check!(ftid == tid, "the thread was not ended by a fault");
    check!(
        (far - STACK_ARENA_BASE) % stride() < guard(),
        "ended by a fault at {:#x}, not in the guard gap",
        far
    );
    check_clean(&base)
}

/// A thread can grow to its whole reservation (with `kstack.max=256k`: about 250 KiB), one
/// fault per page, its data intact, high-water mark at the maximum.
pub(crate) fn deep_growth_to_max() -> TestResult {
    in_thread("deep", StackPolicy::Dynamic, || {
        let s = &me().stack;
        let mapped0 = s.mapped_bytes();
        let faults0 = s.grow_faults();
        let mut bottom_sp = 0;
        let bad = dive(s.top() - full_depth(), 99, &mut || bottom_sp = sp());
        check!(bad == 0, "{} words corrupted", bad);
        check!(
            s.mapped_bytes() == max(),
            "mapped {} of {} after diving to {:#x}",
            s.mapped_bytes(),
            max(),
            bottom_sp
        );
        check!(s.high_water_bytes() == max());
        let grown = (max() - mapped0) / PAGE;
        check!(
            (s.grow_faults() - faults0) as u64 == grown,
            "{} faults for {} pages",
            s.grow_faults() - faults0,
            grown
        );
        check!(
            s.top() - bottom_sp >= max() - 4 * 1024,
            "only reached {} bytes",
            s.top() - bottom_sp
        );
        Ok(())
    })
}

/// A fixed stack is wholly mapped at creation and never faults; a dynamic one next to it
/// grows. Trim leaves the fixed one alone.
pub(crate) fn fixed_and_dynamic_side_by_side() -> TestResult {
    let base = Snap::take();
    let (fixed, hf) = Puppet::spawn("fixed", StackPolicy::Fixed, 1)?;
    let (dynamic, hd) = Puppet::spawn("dynamic", StackPolicy::Dynamic, 2)?;
    let (ft, dt) = (fixed.thread(), dynamic.thread());
    check!(ft.stack.policy() == StackPolicy::Fixed && dt.stack.policy() == StackPolicy::Dynamic);
    check!(
        ft.stack.mapped_bytes() == max(),
        "fixed stack maps {} at creation",
        ft.stack.mapped_bytes()
    );
    let mut a = ft.stack.base();
    while a < ft.stack.top() {
        check!(
            kspace::query(a).is_some(),
            "fixed stack page {:#x} not mapped",
            a
        );
        a += PAGE;
    }
    check!(
        dt.stack.mapped_bytes() <= initial().max(PAGE),
        "dynamic stack maps {} at creation",
        dt.stack.mapped_bytes()
    );
    fixed.dive(full_depth())?;
    dynamic.dive(full_depth())?;
    check!(
        ft.stack.grow_faults() == 0,
        "fixed stack took {} faults",
        ft.stack.grow_faults()
    );
    check!(dt.stack.grow_faults() > 0, "dynamic stack never faulted");
    check!(dt.stack.mapped_bytes() == max());
    check!(
        ft.stack.high_water_bytes() >= full_depth() - 1024,
        "fixed high-water {}",
        ft.stack.high_water_bytes()
    );
    stack::trim_all();
    check!(
        ft.stack.mapped_bytes() == max(),
        "trim took pages from a fixed stack"
    );
    check!(
        dt.stack.mapped_bytes() < max(),
        "trim left the dynamic stack whole"
    );
    fixed.dive(full_depth())?;
    dynamic.dive(full_depth())?;
    check!(ft.stack.grow_faults() == 0);
    fixed.exit(hf)?;
    dynamic.exit(hd)?;
    check_clean(&base)
}

// ---------------------------------------------------------------------------------------
// Integrity under preemption and migration

/// Threads (more than CPUs) fill their whole stacks with a pattern, then at the bottom spin
/// through several time slices, move to another CPU (explicitly: `pin_current_to`, so every
/// one of them migrates with its full stack, whatever the host's scheduling), yield and
/// sleep there; the pattern is checked on the way back up.
pub(crate) fn integrity_across_preemption_and_migration() -> TestResult {
    let base = Snap::take();
    let cpus = online_cpus();
    let n = 4 * cpus.len() + 4;
    let migrated = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let switches0 = sched::switches();
    let mut handles = Vec::new();
    for i in 0..n {
        let (migrated, bad, finished, cpus) = (
            migrated.clone(),
            bad.clone(),
            finished.clone(),
            cpus.clone(),
        );
        let h = sched::spawn_with("integrity", StackPolicy::Dynamic, move || {
            let s = &me().stack;
            let mut moved = false;
            let b = dive(s.top() - full_depth(), 1000 + i as u64, &mut || {
                let start_cpu = cpu();
                // Spin through three slices: preempted by the timer, with IRQs on.
                let spin_end = deadline_in(35);
                while !past(spin_end) {
                    core::hint::spin_loop();
                }
                if cpus.len() > 1 {
                    let at = cpus.iter().position(|&c| c == start_cpu).unwrap_or(0);
                    let to = cpus[(at + 1 + i % (cpus.len() - 1)) % cpus.len()];
                    moved = sched::pin_current_to(to) && cpu() == to && to != start_cpu;
                }
                for round in 0..20u32 {
                    if round.is_multiple_of(2) {
                        sched::yield_now();
                    } else {
                        sched::sleep_ms(1);
                    }
                }
            });
            if moved {
                migrated.fetch_add(1, Ordering::SeqCst);
            }
            bad.fetch_add(b, Ordering::SeqCst);
            finished.fetch_add(1, Ordering::SeqCst);
        })
        .map_err(|e| format!("spawn: {}", e))?;
        handles.push(h);
    }
    for h in handles {
        h.join();
    }
    check!(
        finished.load(Ordering::SeqCst) == n,
        "only {} of {} threads finished",
        finished.load(Ordering::SeqCst),
        n
    );
    check!(
        bad.load(Ordering::SeqCst) == 0,
        "{} stack words corrupted",
        bad.load(Ordering::SeqCst)
    );
    check!(
        sched::switches() - switches0 >= n as u64 * 10,
        "too few context switches to mean anything"
    );
    if cpus.len() > 1 {
        check!(
            migrated.load(Ordering::SeqCst) == n,
            "only {} of {} threads ran on another CPU after pin_current_to",
            migrated.load(Ordering::SeqCst),
            n
        );
    }
    dynstack::println!(
        "  {} threads, {} migrated with a full stack",
        n,
        migrated.load(Ordering::SeqCst)
    );
    check_clean(&base)
}
