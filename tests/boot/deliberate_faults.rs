//! Faults on purpose, reported with the right ESR and FAR while the kernel carries on,
//! and the layout of the stacks the vector entry checks.
use super::*;

// -------------------------------------------------------------------------------------------
// Faults on purpose

/// A read of 0xdead_0000 (lower half; TTBR0 walks are off) ends the reading thread with a
/// data abort naming that address; the kernel carries on.
pub(crate) fn wild_read_reported() -> TestResult {
    let far = 0xdead_0000;
    let run = run_expecting_fault("wild-read", move || {
        raw_read(far);
    })?;
    check_data_abort(&run, far, false, true)?;
    check_spawn_still_works()
}

/// The same for a write to an unmapped upper-half address in the device window.
pub(crate) fn wild_write_reported() -> TestResult {
    let far = DEVICE_BASE + (1 << 29) + 0x7f8;
    check!(kspace::query(far).is_none(), "{:#x} is mapped", far);
    let run = run_expecting_fault("wild-write", move || raw_write(far, 0x55))?;
    check_data_abort(&run, far, true, true)?;
    check_spawn_still_works()
}

/// A null-pointer read faults (FAR 0), instead of reading whatever page 0 holds.
pub(crate) fn null_read_faults() -> TestResult {
    let run = run_expecting_fault("null-read", || {
        raw_read(0);
    })?;
    check_data_abort(&run, 0, false, true)?;
    let run = run_expecting_fault("null-read+8", || {
        raw_read(8);
    })?;
    check_data_abort(&run, 8, false, true)
}

/// Jumping into a data page (holding a valid `ret`) is an instruction abort, a permission
/// fault at that address: XN is enforced by the MMU, not just written in the tables.
pub(crate) fn data_not_executable() -> TestResult {
    let pa = frame::alloc_zeroed().ok_or("no frame")?;
    let va = phys_to_virt(pa) + 0x80;
    raw_write(va, 0xd65f_03c0_d65f_03c0); // ret; ret
                                          // SAFETY: cache maintenance on a page this test owns.
    unsafe {
        asm!("dc cvau, {a}", "dsb ish", "ic ivau, {a}", "dsb ish", "isb", a = in(reg) va,
             options(nostack))
    };
    let run = run_expecting_fault("exec-data", move || {
        // SAFETY: meant to fault; if it does not, `ret` returns here.
        unsafe { asm!("blr {a}", a = in(reg) va, clobber_abi("C")) };
    })?;
    frame::free(pa, 1);
    check!(!run.survived, "code ran from the linear map at {:#x}", va);
    let (tid, esr, far) = run.fault;
    check!(
        tid == run.tid,
        "last_fault names thread {}, not {}",
        tid,
        run.tid
    );
    check!(
        esr_ec(esr) == EC_IABT_SAME_EL,
        "ESR {:#x}: EC {:#x}, expected {:#x} (instruction abort)",
        esr,
        esr_ec(esr),
        EC_IABT_SAME_EL
    );
    check!(
        is_permission_fault(esr),
        "ESR {:#x}: IFSC {:#x} is not a permission fault",
        esr,
        esr_fsc(esr)
    );
    check!(far == va, "FAR {:#x}, expected {:#x}", far, va);
    Ok(())
}

/// After all the faults above, the kernel still works: every CPU runs threads, memory is
/// consistent, and the faulted threads were reaped.
pub(crate) fn kernel_carries_on() -> TestResult {
    check_spawn_still_works()?;
    let survey = survey_cpus(true)?;
    for (cpu, s) in survey.iter().enumerate() {
        check!(s.seen, "cpu {} runs no threads any more", cpu);
    }
    let mut dead = 0;
    let mut names = Vec::new();
    sched::for_each_thread(usize::MAX, &mut |t| {
        if t.state() == sched::ThreadState::Dead {
            dead += 1;
        }
        if t.name().starts_with("wild") || t.name().starts_with("null") {
            names.push(String::from(t.name()));
        }
    });
    check!(
        names.is_empty(),
        "faulted threads are still in the thread table: {:?}",
        names
    );
    check!(dead == 0, "{} dead threads not reaped", dead);
    check!(
        frame::free_pages() <= frame::total_pages(),
        "free pages {} > total {}",
        frame::free_pages(),
        frame::total_pages()
    );
    Ok(())
}

pub(crate) fn check_spawn_still_works() -> TestResult {
    let sum = Arc::new(AtomicU64::new(0));
    let mut hs = Vec::new();
    for i in 1..=8u64 {
        let s = sum.clone();
        hs.push(
            sched::spawn("after-fault", move || {
                s.fetch_add(i, Ordering::SeqCst);
            })
            .map_err(|e| format!("spawn after a fault failed: {}", e))?,
        );
    }
    for h in hs {
        h.join();
    }
    check!(
        sum.load(Ordering::SeqCst) == 36,
        "threads spawned after the fault computed {}, expected 36",
        sum.load(Ordering::SeqCst)
    );
    Ok(())
}

extern "C" {
    static boot_stack: u8;
    static __boot_stack_top: u8;
}

/// Every stack SP_EL1 can be on is laid out as the vector entry's overflow check expects
/// (vectors.s: bit 14 of SP set anywhere a frame may go, clear just below): the boot stack
/// CPU 0 starts on (so an early exception there is not taken for an exception-stack
/// overflow), and on every online CPU the exception stack and the emergency stack, each the
/// upper half of its window, mapped, with the lower half an unmapped guard. The emergency
/// stack the vector entry switches to is this one.
pub(crate) fn stacks_pass_the_vector_check() -> TestResult {
    const FRAME: u64 = 272;
    let (low, top) = (
        sym(core::ptr::addr_of!(boot_stack)),
        sym(core::ptr::addr_of!(__boot_stack_top)),
    );
    check!(
        top - low == layout::EXCEPTION_STACK_SIZE as u64,
        "boot stack [{:#x}, {:#x}) is not {} bytes",
        low,
        top,
        layout::EXCEPTION_STACK_SIZE
    );
    let mut sp = top;
    while sp >= low + FRAME {
        check!(
            layout::passes_vector_check(sp - FRAME),
            "a frame pushed at SP {:#x} on the boot stack [{:#x}, {:#x}) fails the vector check",
            sp,
            low,
            top
        );
        sp -= 16;
    }
    check!(
        !layout::passes_vector_check(low - 16),
        "running off the boot stack at {:#x} passes the vector check",
        low - 16
    );
    let size = layout::EXCEPTION_STACK_SIZE as u64;
    for cpu in (0..MAX_CPUS).filter(|&c| sched::is_online(c)) {
        for (what, top) in [
            ("exception", layout::exception_stack_top(cpu)),
            ("emergency", layout::emergency_stack_top(cpu)),
        ] {
            check!(
                layout::passes_vector_check(top - FRAME)
                    && layout::passes_vector_check(top - size)
                    && !layout::passes_vector_check(top - size - 16),
                "cpu {}'s {} stack below {:#x} does not fit the vector check",
                cpu,
                what,
                top
            );
            let mut va = top - 2 * size;
            while va < top {
                let mapped = kspace::query(va).is_some();
                check!(
                    mapped == (va >= top - size),
                    "cpu {}'s {} stack window: {:#x} is {}mapped",
                    cpu,
                    what,
                    va,
                    if mapped { "" } else { "not " }
                );
                va += PAGE;
            }
        }
    }
    // IRQs masked: both read on the same CPU.
    let daif = dynstack::arch::irq::save_and_disable();
    let (mine, cpu) = (dynstack::percpu::emergency_stack_top(), percpu::cpu_index());
    dynstack::arch::irq::restore(daif);
    check!(
        mine == layout::emergency_stack_top(cpu),
        "cpu {} switches to the emergency stack at {:#x}, laid out at {:#x}",
        cpu,
        mine,
        layout::emergency_stack_top(cpu)
    );
    Ok(())
}
