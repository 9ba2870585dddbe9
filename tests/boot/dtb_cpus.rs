//! RAM, CPUs, the GIC and the CPU state every CPU is left in, against the device tree.
use super::*;

// -------------------------------------------------------------------------------------------
// RAM and CPUs against the DTB

/// The frame allocator holds exactly the DTB's RAM minus the image, the DTB blob and every
/// reserved range (each page partly covered by a hole excluded), computed independently here.
pub(crate) fn ram_matches_dtb() -> TestResult {
    let info = boot_info();
    let m = &info.machine;
    check!(!m.memory.is_empty(), "the DTB describes no memory");
    let dtb_ram: u64 = m.memory.iter().map(|r| r.size).sum();
    check!(
        info.ram_bytes == dtb_ram,
        "boot_info().ram_bytes {} != DTB memory {}",
        info.ram_bytes,
        dtb_ram
    );
    let (img_start, img_end) = image_pa();
    let (dtb_pa, dtb_size) = dtb_location()?;
    let mut holes: Vec<(u64, u64)> = m
        .reserved
        .iter()
        .map(|r| (r.base, r.base.saturating_add(r.size)))
        .collect();
    holes.push((img_start, img_end));
    holes.push((dtb_pa, dtb_pa + dtb_size));
    // Holes grow outward to whole pages; RAM shrinks inward.
    let holes = merge(
        holes
            .into_iter()
            .map(|(s, e)| (layout::align_down(s, PAGE), layout::align_up(e, PAGE)))
            .collect(),
    );
    let mut expected_pages = 0u64;
    for r in &m.memory {
        let start = layout::align_up(r.base, PAGE);
        let end = layout::align_down(r.base + r.size, PAGE);
        if end <= start {
            continue;
        }
        let mut pages = (end - start) / PAGE;
        for &(hs, he) in &holes {
            let s = hs.max(start);
            let e = he.min(end);
            if e > s {
                pages -= (e - s) / PAGE;
            }
        }
        expected_pages += pages;
    }
    let total = frame::total_pages();
    check!(
        total == expected_pages,
        "frame allocator manages {} pages; DTB RAM {} bytes minus image {:#x}..{:#x}, DTB {:#x}+{:#x} and {} reserved range(s) leaves {} pages",
        total,
        dtb_ram,
        img_start,
        img_end,
        dtb_pa,
        dtb_size,
        m.reserved.len(),
        expected_pages
    );
    // And, whatever the holes: not more than RAM, not absurdly less.
    let image_bytes = img_end - img_start;
    check!(
        total * PAGE <= dtb_ram - image_bytes,
        "more frames ({} KiB) than RAM minus the image",
        total * 4
    );
    let reserved: u64 = m.reserved.iter().map(|r| r.size).sum();
    check!(
        total * PAGE + image_bytes + reserved + (4 << 20) >= dtb_ram,
        "{} KiB of {} KiB RAM unaccounted for",
        (dtb_ram - total * PAGE - image_bytes - reserved) / 1024,
        dtb_ram / 1024
    );
    check!(
        frame::free_pages() <= total,
        "free {} > total {}",
        frame::free_pages(),
        total
    );
    Ok(())
}

/// Frames handed out lie in the DTB's RAM, outside the image, the DTB and reserved ranges,
/// and can be written and read back through the linear map.
pub(crate) fn frames_are_usable_ram() -> TestResult {
    let m = &boot_info().machine;
    let (img_start, img_end) = image_pa();
    let (dtb_pa, dtb_size) = dtb_location()?;
    let mut got = Vec::new();
    let mut result = Ok(());
    for i in 0..256u64 {
        let Some(pa) = frame::alloc(1) else {
            result = Err(format!("frame::alloc failed after {} frames", i));
            break;
        };
        got.push(pa);
        let in_ram = m
            .memory
            .iter()
            .any(|r| pa >= r.base && pa + PAGE <= r.base + r.size);
        let overlaps = |s: u64, e: u64| pa < e && pa + PAGE > s;
        if !in_ram
            || overlaps(img_start, img_end)
            || overlaps(dtb_pa, dtb_pa + dtb_size)
            || m.reserved.iter().any(|r| overlaps(r.base, r.base + r.size))
        {
            result = Err(format!("frame {:#x} is not usable RAM", pa));
            break;
        }
        if pa % PAGE != 0 {
            result = Err(format!("frame {:#x} is not page aligned", pa));
            break;
        }
        let va = phys_to_virt(pa);
        let pattern = 0x5a5a_0000_0000_0000 | pa | i;
        raw_write(va, pattern);
        raw_write(va + PAGE - 8, !pattern);
        if raw_read(va) != pattern || raw_read(va + PAGE - 8) != !pattern {
            result = Err(format!("frame {:#x} does not hold what was written", pa));
            break;
        }
    }
    let mut sorted = got.clone();
    sorted.sort();
    sorted.dedup();
    if result.is_ok() && sorted.len() != got.len() {
        result = Err(String::from("frame::alloc handed out the same frame twice"));
    }
    let free_before = frame::free_pages();
    for pa in &got {
        frame::free(*pa, 1);
    }
    check!(
        frame::free_pages() == free_before + got.len() as u64,
        "freeing {} frames moved the free count by {}",
        got.len(),
        frame::free_pages() as i64 - free_before as i64
    );
    result
}

/// Every CPU in the DTB (up to MAX_CPUS) is online, with a distinct MPIDR from the DTB, and
/// threads actually run on each of them.
pub(crate) fn every_dtb_cpu_online() -> TestResult {
    let m = &boot_info().machine;
    let expected = m.cpus.len().clamp(1, MAX_CPUS);
    check!(
        sched::online_count() == expected,
        "online_count() {} but the DTB lists {} CPU(s) (max {})",
        sched::online_count(),
        m.cpus.len(),
        MAX_CPUS
    );
    let mut seen_mpidr = Vec::new();
    for cpu in 0..expected {
        check!(sched::is_online(cpu), "cpu {} is not online", cpu);
        let mpidr = percpu::get(cpu).mpidr.load(Ordering::Relaxed) & 0xff_00ff_ffff;
        check!(
            m.cpus.iter().any(|c| c.mpidr == mpidr),
            "cpu {} has MPIDR {:#x}, not in the DTB",
            cpu,
            mpidr
        );
        check!(
            !seen_mpidr.contains(&mpidr),
            "cpu {} has MPIDR {:#x}, like another CPU",
            cpu,
            mpidr
        );
        seen_mpidr.push(mpidr);
    }
    for cpu in expected..MAX_CPUS {
        check!(
            !sched::is_online(cpu),
            "cpu {} is online but not in the DTB",
            cpu
        );
    }
    let survey = survey_cpus(false)?;
    for (cpu, s) in survey.iter().enumerate() {
        check!(
            s.seen,
            "no thread was placed on cpu {} within the time limit",
            cpu
        );
        check!(
            s.mpidr == percpu::get(cpu).mpidr.load(Ordering::Relaxed) & 0xff_00ff_ffff,
            "cpu {} runs with MPIDR {:#x} but is registered as {:#x}",
            cpu,
            s.mpidr,
            percpu::get(cpu).mpidr.load(Ordering::Relaxed)
        );
    }
    Ok(())
}

/// What a thread found about the CPU it ran on.
#[derive(Clone, Copy, Default)]
pub(crate) struct CpuState {
    pub(crate) seen: bool,
    pub(crate) current_el: u64,
    pub(crate) spsel: u64,
    pub(crate) daif_in_thread: u64,
    pub(crate) sctlr: u64,
    pub(crate) tcr: u64,
    pub(crate) vbar: u64,
    pub(crate) mpidr: u64,
    pub(crate) pfr0: u64,
    pub(crate) cntfrq: u64,
    /// Physical counter before, virtual counter, physical counter after.
    pub(crate) counters: (u64, u64, u64),
    pub(crate) sp: u64,
    pub(crate) stack: (u64, u64),
    pub(crate) gic_ready: bool,
}

pub(crate) fn read_state() -> (usize, CpuState) {
    let mut s = CpuState {
        seen: true,
        ..Default::default()
    };
    let cpu;
    // SAFETY: reads of system registers, with IRQs masked so all come from one CPU.
    unsafe {
        asm!("mrs {}, daif", out(reg) s.daif_in_thread, options(nomem, nostack));
        let daif: u64;
        asm!("mrs {}, daif", "msr daifset, #2", out(reg) daif, options(nomem, nostack));
        cpu = percpu::cpu_index();
        asm!(
            "mrs {el}, CurrentEL",
            "mrs {spsel}, SPSel",
            "mrs {sctlr}, sctlr_el1",
            "mrs {tcr}, tcr_el1",
            "mrs {vbar}, vbar_el1",
            "mrs {mpidr}, mpidr_el1",
            "mrs {pfr0}, id_aa64pfr0_el1",
            "mrs {frq}, cntfrq_el0",
            "mov {sp}, sp",
            el = out(reg) s.current_el,
            spsel = out(reg) s.spsel,
            sctlr = out(reg) s.sctlr,
            tcr = out(reg) s.tcr,
            vbar = out(reg) s.vbar,
            mpidr = out(reg) s.mpidr,
            pfr0 = out(reg) s.pfr0,
            frq = out(reg) s.cntfrq,
            sp = out(reg) s.sp,
            options(nomem, nostack)
        );
        asm!(
            "isb",
            "mrs {p0}, cntpct_el0",
            "isb",
            "mrs {v}, cntvct_el0",
            "isb",
            "mrs {p1}, cntpct_el0",
            p0 = out(reg) s.counters.0,
            v = out(reg) s.counters.1,
            p1 = out(reg) s.counters.2,
            options(nomem, nostack)
        );
        s.gic_ready = dynstack::kernel::irq::controller().is_some_and(|c| c.cpu_interface_ready());
        let t = sched::current_ptr();
        s.stack = ((*t).stack.base(), (*t).stack.top());
        asm!("msr daif, {}", in(reg) daif, options(nomem, nostack));
    }
    s.mpidr &= 0xff_00ff_ffff;
    (cpu, s)
}

/// Runs `read_state` on every online CPU: in one thread pinned to each CPU when `pinned`,
/// else in ordinary threads, batch after batch, until the scheduler has placed one on every
/// CPU (10 s at most).
pub(crate) fn survey_cpus(pinned: bool) -> Result<Vec<CpuState>, String> {
    let n = sched::online_count();
    let states: Arc<dynstack::sync::IrqMutex<Vec<CpuState>>> = Arc::new(
        dynstack::sync::IrqMutex::new(alloc::vec![CpuState::default(); n]),
    );
    let deadline = timer::now() + ms_to_ticks(60_000);
    while timer::now() < deadline {
        if states.lock().iter().all(|s| s.seen) {
            break;
        }
        let mut handles = Vec::new();
        for i in 0..n * 2 {
            let st = states.clone();
            let body = move || {
                // Keep the CPU a little, so the others get the rest of the batch.
                let end = timer::now() + ms_to_ticks(3);
                while timer::now() < end {
                    core::hint::spin_loop();
                }
                let (cpu, s) = read_state();
                let mut v = st.lock();
                if cpu < v.len() {
                    v[cpu] = s;
                }
            };
            let h = if pinned {
                if i >= n {
                    break;
                }
                sched::spawn_pinned("survey", stack::default_policy(), i, body)
            } else {
                sched::spawn("survey", body)
            }
            .map_err(|e| format!("spawn failed: {}", e))?;
            handles.push(h);
        }
        for h in handles {
            h.join();
        }
    }
    let v = states.lock().clone();
    Ok(v)
}

/// On every CPU, threads run at EL1 (even when QEMU entered the kernel at EL2 or EL3) on
/// SP_EL0 (EL1t) inside their own stack reservation, with IRQs unmasked, the MMU and caches
/// on, TTBR0 walks off, the kernel's vectors installed, and one clock: the virtual counter
/// equals the physical one (CNTVOFF zero) and runs at a nonzero frequency.
pub(crate) fn cpu_state_after_boot() -> TestResult {
    let survey = survey_cpus(true)?;
    let vbar = sym(&raw const exception_vectors);
    let dtb_freq = boot_info().machine.timer.as_ref().and_then(|t| t.frequency);
    for (cpu, s) in survey.iter().enumerate() {
        check!(s.seen, "no thread ran on cpu {}", cpu);
        check!(
            (s.current_el >> 2) & 3 == 1,
            "cpu {}: CurrentEL is EL{} in a thread, expected EL1",
            cpu,
            (s.current_el >> 2) & 3
        );
        check!(
            s.spsel & 1 == 0,
            "cpu {}: SPSel={} in a thread: threads must run on SP_EL0 (EL1t)",
            cpu,
            s.spsel
        );
        check!(
            s.sp >= STACK_ARENA_BASE && s.sp < STACK_ARENA_BASE + STACK_ARENA_SIZE,
            "cpu {}: thread SP {:#x} is outside the stack arena",
            cpu,
            s.sp
        );
        check!(
            s.sp > s.stack.0 && s.sp <= s.stack.1,
            "cpu {}: thread SP {:#x} is outside its own stack {:#x}..{:#x}",
            cpu,
            s.sp,
            s.stack.0,
            s.stack.1
        );
        check!(
            s.daif_in_thread & (1 << 7) == 0,
            "cpu {}: IRQs masked in a thread (DAIF {:#x})",
            cpu,
            s.daif_in_thread
        );
        check!(
            s.sctlr & 0b101 == 0b101 && s.sctlr & (1 << 12) != 0,
            "cpu {}: SCTLR_EL1 {:#x}: MMU, D-cache or I-cache off",
            cpu,
            s.sctlr
        );
        check!(
            s.tcr & (1 << 7) != 0,
            "cpu {}: TCR_EL1 {:#x}: TTBR0 walks still enabled (EPD0 clear)",
            cpu,
            s.tcr
        );
        check!(
            (s.tcr >> 16) & 0x3f == 16,
            "cpu {}: TCR_EL1.T1SZ={} (expected 16: 48-bit kernel half)",
            cpu,
            (s.tcr >> 16) & 0x3f
        );
        check!(
            s.vbar == vbar,
            "cpu {}: VBAR_EL1 {:#x}, expected the kernel's vectors at {:#x}",
            cpu,
            s.vbar,
            vbar
        );
        check!(s.cntfrq != 0, "cpu {}: CNTFRQ_EL0 is 0", cpu);
        if let Some(f) = dtb_freq {
            check!(
                s.cntfrq == f as u64,
                "cpu {}: CNTFRQ_EL0 {} but the DTB says {}",
                cpu,
                s.cntfrq,
                f
            );
        }
        let (p0, v, p1) = s.counters;
        check!(
            p0 <= v && v <= p1,
            "cpu {}: virtual counter {} outside physical {}..{}: CNTVOFF is not zero",
            cpu,
            v,
            p0,
            p1
        );
    }
    Ok(())
}

/// The interrupt controller the kernel drives is the one the DTB names, the CPU agrees
/// (ID_AA64PFR0_EL1.GIC says whether a GICv3 system-register interface exists), and every
/// CPU's interface is set up.
pub(crate) fn gic_matches_dtb() -> TestResult {
    let m = &boot_info().machine;
    let c = dynstack::kernel::irq::controller().ok_or("no interrupt controller registered")?;
    let dtb_v3 = match m.interrupt_controller {
        Some(InterruptController::GicV2 { .. }) => false,
        Some(InterruptController::GicV3 { .. }) => true,
        Some(InterruptController::Bcm2836 { .. }) => {
            check!(
                c.version() == 0,
                "DTB says BCM2836, kernel drives GICv{}",
                c.version()
            );
            for (cpu, s) in survey_cpus(true)?.iter().enumerate() {
                check!(s.seen, "no thread ran on cpu {}", cpu);
                check!(s.gic_ready, "cpu {}: cpu_interface_ready() is false", cpu);
            }
            return Ok(());
        }
        None => return Err(String::from("the DTB names no interrupt controller")),
    };
    let v = c.version();
    if dtb_v3 {
        check!(v == 3 || v == 4, "DTB says GICv3, kernel drives GICv{}", v);
    } else {
        check!(v == 2, "DTB says GICv2, kernel drives GICv{}", v);
    }
    let survey = survey_cpus(true)?;
    for (cpu, s) in survey.iter().enumerate() {
        check!(s.seen, "no thread ran on cpu {}", cpu);
        let sysreg_gic = (s.pfr0 >> 24) & 0xf;
        check!(
            (sysreg_gic != 0) == dtb_v3,
            "cpu {}: ID_AA64PFR0_EL1.GIC={} but the DTB says GICv{}",
            cpu,
            sysreg_gic,
            if dtb_v3 { 3 } else { 2 }
        );
        check!(
            s.gic_ready,
            "cpu {}: the GIC CPU interface is not ready (cpu_interface_ready() false)",
            cpu
        );
    }
    Ok(())
}
