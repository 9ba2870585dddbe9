//! The boot foundation, checked on the running machine: what the kernel found in the device
//! tree against what it set up (RAM, CPUs, GIC, timer), the execution state every CPU is left
//! in, and the live translation tables on the real MMU (map, unmap, W^X, the linear map),
//! with the faults that must follow from them reported with the right ESR and FAR while the
//! kernel carries on.
//!
//! Booted by `make test` on several QEMU configurations (see tests/qemu.toml): -smp 1/2/4,
//! -m 128M..2G, gic-version=2/3, cortex-a53/a72/max, entered at EL1, EL2 and EL3.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dynstack::arch::timer;
use dynstack::check;
use dynstack::dtb::{self, InterruptController};
use dynstack::kernel::boot_info;
use dynstack::kernel::exception::last_fault;
use dynstack::mm::layout::{
    self, phys_to_virt, DEVICE_BASE, DTB_BASE, EXCEPTION_STACKS_BASE, LINEAR_BASE, LINEAR_SIZE,
    PAGE_SIZE, STACK_ARENA_BASE, STACK_ARENA_SIZE,
};
use dynstack::mm::page_table::{Attributes, MapError, MemoryType, Permission};
use dynstack::mm::{frame, kspace};
use dynstack::percpu::{self, MAX_CPUS};
use dynstack::sched;
use dynstack::stack;
use dynstack::testing::{run, TestResult};

dynstack::kernel_main!(main);

fn main() {
    run(dynstack::test_cases![
        ram_matches_dtb,
        frames_are_usable_ram,
        every_dtb_cpu_online,
        cpu_state_after_boot,
        gic_matches_dtb,
        map_write_query_unmap,
        map_errors_change_nothing,
        read_only_mapping_enforced,
        unmap_invalidates_every_cpu,
        wx_on_live_tables,
        image_protection_in_hardware,
        linear_map_blocks,
        wild_read_reported,
        wild_write_reported,
        null_read_faults,
        data_not_executable,
        kernel_carries_on,
    ])
}

// -------------------------------------------------------------------------------------------
// Helpers

const PAGE: u64 = PAGE_SIZE as u64;
const MIB2: u64 = 2 << 20;

/// ESR_EL1 exception classes.
const EC_IABT_SAME_EL: u64 = 0x21;
const EC_DABT_SAME_EL: u64 = 0x25;

extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __data_end: u8;
    static __kernel_start: u8;
    static __kernel_end: u8;
    static exception_vectors: u8;
}

fn sym(p: *const u8) -> u64 {
    p as u64
}

fn text_range() -> (u64, u64) {
    // Linker symbols: only their addresses are taken.
    (sym(&raw const __text_start), sym(&raw const __text_end))
}

fn rodata_range() -> (u64, u64) {
    (sym(&raw const __rodata_start), sym(&raw const __rodata_end))
}

fn data_range() -> (u64, u64) {
    (sym(&raw const __data_start), sym(&raw const __data_end))
}

fn image_range() -> (u64, u64) {
    (sym(&raw const __kernel_start), sym(&raw const __kernel_end))
}

fn ms_to_ticks(ms: u64) -> u64 {
    timer::ns_to_ticks(ms * 1_000_000)
}

fn esr_ec(esr: u64) -> u64 {
    (esr >> 26) & 0x3f
}

fn esr_fsc(esr: u64) -> u64 {
    esr & 0x3f
}

fn esr_wnr(esr: u64) -> bool {
    esr & (1 << 6) != 0
}

fn is_translation_fault(esr: u64) -> bool {
    esr_fsc(esr) & 0x3c == 0x04
}

fn is_permission_fault(esr: u64) -> bool {
    esr_fsc(esr) & 0x3c == 0x0c
}

/// Reads 8 bytes at `addr` with one `ldr` (no Rust pointer, so no UB and no null check).
#[inline(never)]
fn raw_read(addr: u64) -> u64 {
    let v: u64;
    // SAFETY: the callers mean this to fault, or know `addr` is mapped.
    unsafe { asm!("ldr {v}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack)) };
    v
}

/// Writes 8 bytes at `addr` with one `str`.
#[inline(never)]
fn raw_write(addr: u64, value: u64) {
    // SAFETY: the callers mean this to fault, or know `addr` is mapped and theirs.
    unsafe { asm!("str {v}, [{a}]", a = in(reg) addr, v = in(reg) value, options(nostack)) };
}

/// What a thread that was expected to fault left behind.
struct FaultRun {
    tid: u64,
    /// Whether the access returned (it should not have).
    survived: bool,
    /// last_fault() after the join.
    fault: (u64, u64, u64),
}

/// Runs `f` in a fresh thread, joins it and reports whether `f` returned and what the kernel
/// recorded as the last fault.
fn run_expecting_fault(name: &str, f: impl FnOnce() + Send + 'static) -> Result<FaultRun, String> {
    let survived = Arc::new(AtomicBool::new(false));
    let s = survived.clone();
    let h = sched::spawn(name, move || {
        f();
        s.store(true, Ordering::SeqCst);
    })
    .map_err(|e| format!("spawn failed: {}", e))?;
    let tid = h.tid();
    h.join();
    Ok(FaultRun {
        tid,
        survived: survived.load(Ordering::SeqCst),
        fault: last_fault(),
    })
}

/// Checks that `r` is a data abort at the same EL on `far` by thread `r.tid`.
fn check_data_abort(r: &FaultRun, far: u64, write: bool, translation: bool) -> TestResult {
    check!(!r.survived, "the access at {:#x} did not fault", far);
    let (tid, esr, got_far) = r.fault;
    check!(
        tid == r.tid,
        "last_fault names thread {} but thread {} faulted",
        tid,
        r.tid
    );
    check!(
        esr_ec(esr) == EC_DABT_SAME_EL,
        "ESR {:#x}: EC {:#x}, expected {:#x} (data abort, same EL)",
        esr,
        esr_ec(esr),
        EC_DABT_SAME_EL
    );
    if translation {
        check!(
            is_translation_fault(esr),
            "ESR {:#x}: DFSC {:#x} is not a translation fault",
            esr,
            esr_fsc(esr)
        );
    } else {
        check!(
            is_permission_fault(esr),
            "ESR {:#x}: DFSC {:#x} is not a permission fault",
            esr,
            esr_fsc(esr)
        );
    }
    check!(
        esr_wnr(esr) == write,
        "ESR {:#x}: WnR={} but the access was a {}",
        esr,
        esr_wnr(esr) as u8,
        if write { "write" } else { "read" }
    );
    check!(
        got_far == far,
        "FAR {:#x}, expected exactly {:#x}",
        got_far,
        far
    );
    Ok(())
}

/// Hardware translation of `va` by `AT S1E1R` (or `S1E1W`): `Ok(pa)` or `Err(PAR_EL1)`.
fn at_translate(va: u64, write: bool) -> Result<u64, u64> {
    let par: u64;
    // SAFETY: address translation instructions have no side effect but PAR_EL1, read
    // before anything else on this CPU can run (IRQs masked around the pair).
    unsafe {
        if write {
            asm!(
                "mrs {d}, daif",
                "msr daifset, #2",
                "at s1e1w, {va}",
                "isb",
                "mrs {par}, par_el1",
                "msr daif, {d}",
                va = in(reg) va, par = out(reg) par, d = out(reg) _,
                options(nostack)
            );
        } else {
            asm!(
                "mrs {d}, daif",
                "msr daifset, #2",
                "at s1e1r, {va}",
                "isb",
                "mrs {par}, par_el1",
                "msr daif, {d}",
                va = in(reg) va, par = out(reg) par, d = out(reg) _,
                options(nostack)
            );
        }
    }
    if par & 1 != 0 {
        Err(par)
    } else {
        Ok((par & 0x0000_FFFF_FFFF_F000) | (va & (PAGE - 1)))
    }
}

/// PAR_EL1.FST of a failed translation.
fn par_fst(par: u64) -> u64 {
    (par >> 1) & 0x3f
}

/// A scratch virtual range nothing uses: well above the DTB window's content and below the
/// exception stacks. Checked to be unmapped before use.
const SCRATCH_VA: u64 = DTB_BASE + (512 << 20);
const _: () = assert!(SCRATCH_VA + (2 << 20) <= EXCEPTION_STACKS_BASE);
const _: () = assert!(DTB_BASE + (dtb::MAX_TOTAL_SIZE as u64) + PAGE < SCRATCH_VA);

/// Merges half-open ranges (sorted by start) into disjoint ones.
fn merge(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.retain(|r| r.1 > r.0);
    v.sort();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for r in v {
        if let Some(last) = out.last_mut() {
            if r.0 <= last.1 {
                last.1 = last.1.max(r.1);
                continue;
            }
        }
        out.push(r);
    }
    out
}

/// Where the kernel found the DTB and how big it is: the DTB window's first page maps the
/// blob's page; the blob starts at an 8-byte aligned offset in it.
fn dtb_location() -> Result<(u64, u64), String> {
    let t = kspace::query(DTB_BASE).ok_or("the DTB window is not mapped")?;
    for off in (0..PAGE).step_by(8) {
        let p = (DTB_BASE + off) as *const u8;
        // SAFETY: the DTB window maps at least two pages from DTB_BASE (kernel::map_dtb);
        // 40 bytes from an offset below one page stay inside them.
        let header = unsafe { core::slice::from_raw_parts(p, 40) };
        if let Ok(size) = dtb::total_size(header) {
            return Ok((t.pa + off, size as u64));
        }
    }
    Err(String::from(
        "no FDT header in the first page of the DTB window",
    ))
}

fn image_pa() -> (u64, u64) {
    let (start, _) = image_range();
    let pa = kspace::image_va_to_pa(start);
    (pa, pa + boot_info().image_bytes)
}

// -------------------------------------------------------------------------------------------
// RAM and CPUs against the DTB

/// The frame allocator holds exactly the DTB's RAM minus the image, the DTB blob and every
/// reserved range (each page partly covered by a hole excluded), computed independently here.
fn ram_matches_dtb() -> TestResult {
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
fn frames_are_usable_ram() -> TestResult {
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
fn every_dtb_cpu_online() -> TestResult {
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
struct CpuState {
    seen: bool,
    current_el: u64,
    spsel: u64,
    daif_in_thread: u64,
    sctlr: u64,
    tcr: u64,
    vbar: u64,
    mpidr: u64,
    pfr0: u64,
    cntfrq: u64,
    /// Physical counter before, virtual counter, physical counter after.
    counters: (u64, u64, u64),
    sp: u64,
    stack: (u64, u64),
    gic_ready: bool,
}

fn read_state() -> (usize, CpuState) {
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
fn survey_cpus(pinned: bool) -> Result<Vec<CpuState>, String> {
    let n = sched::online_count();
    let states: Arc<dynstack::sync::IrqMutex<Vec<CpuState>>> = Arc::new(
        dynstack::sync::IrqMutex::new(alloc::vec![CpuState::default(); n]),
    );
    let deadline = timer::now() + ms_to_ticks(10_000);
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
fn cpu_state_after_boot() -> TestResult {
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
fn gic_matches_dtb() -> TestResult {
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

// -------------------------------------------------------------------------------------------
// Page tables on the real MMU

/// Maps a fresh frame at a scratch address, writes through it and reads back through the
/// linear map (and the other way round); kspace::query and the MMU (AT S1E1R) agree; then
/// unmaps it, gets the frame back through the callback, and a touch afterwards faults with a
/// translation fault naming the exact address.
fn map_write_query_unmap() -> TestResult {
    let va = SCRATCH_VA;
    check!(
        kspace::query(va).is_none() && kspace::query(va + PAGE).is_none(),
        "the scratch range {:#x} is already mapped",
        va
    );
    let pa = frame::alloc_zeroed().ok_or("no frame")?;
    let r = kspace::map(va, pa, PAGE, Attributes::DATA, false);
    check!(r.is_ok(), "map failed: {:?}", r);
    let t = kspace::query(va + 0x238).ok_or("query finds nothing after map")?;
    check!(
        t.pa == pa + 0x238,
        "query: pa {:#x}, mapped {:#x}",
        t.pa,
        pa + 0x238
    );
    check!(t.level == 3, "a 4 KiB map became a level-{} entry", t.level);
    check!(
        t.attributes == Attributes::DATA && t.writable() && !t.executable(),
        "query: attributes {:?} writable {} executable {}",
        t.attributes,
        t.writable(),
        t.executable()
    );
    check!(
        at_translate(va + 0x238, false) == Ok(pa + 0x238),
        "the MMU translates {:#x} to {:?}, the tables say {:#x}",
        va + 0x238,
        at_translate(va + 0x238, false),
        pa + 0x238
    );
    check!(
        at_translate(va + 0x238, true) == Ok(pa + 0x238),
        "the MMU refuses a write to the RW mapping: {:?}",
        at_translate(va + 0x238, true)
    );
    // Through the new mapping, back through the linear map, and the other way.
    for i in 0..(PAGE / 8) {
        raw_write(va + i * 8, 0xc0ff_ee00_0000_0000 ^ (i * 0x1_0001));
    }
    let lin = phys_to_virt(pa);
    for i in 0..(PAGE / 8) {
        let got = raw_read(lin + i * 8);
        check!(
            got == 0xc0ff_ee00_0000_0000 ^ (i * 0x1_0001),
            "word {} reads {:#x} through the linear map",
            i,
            got
        );
    }
    raw_write(lin + 0x100, 0x1234_5678_9abc_def0);
    check!(
        raw_read(va + 0x100) == 0x1234_5678_9abc_def0,
        "a write through the linear map is not seen through the new mapping"
    );
    // Unmap: the callback gets exactly this page.
    let mut seen = Vec::new();
    let r = kspace::unmap(va, PAGE, |v, p| seen.push((v, p)));
    check!(r.is_ok(), "unmap failed: {:?}", r);
    check!(
        seen.len() == 1 && seen[0] == (va, pa),
        "unmap reported {:?}, expected [({:#x}, {:#x})]",
        seen,
        va,
        pa
    );
    check!(
        kspace::query(va).is_none(),
        "query still finds the page after unmap"
    );
    check!(
        at_translate(va, false).is_err(),
        "the MMU still translates {:#x} after unmap",
        va
    );
    // This CPU's TLB held the entry (it was just used): touching it must fault now.
    let far = va + 0x238;
    let run = run_expecting_fault("touch-unmapped", move || {
        raw_read(far);
    })?;
    frame::free(pa, 1);
    check_data_abort(&run, far, false, true)
}

/// Refused requests return the right error and change nothing.
fn map_errors_change_nothing() -> TestResult {
    let va = SCRATCH_VA + 16 * PAGE;
    check!(
        kspace::query(va).is_none(),
        "scratch {:#x} already mapped",
        va
    );
    let pa = frame::alloc_zeroed().ok_or("no frame")?;
    let pa2 = frame::alloc_zeroed().ok_or("no frame")?;
    let r = kspace::map(va, pa, PAGE, Attributes::DATA, false);
    check!(r.is_ok(), "map failed: {:?}", r);
    let mut result: TestResult = Ok(());
    let mut fail = |m: String| {
        if result.is_ok() {
            result = Err(m);
        }
    };
    match kspace::map(va, pa2, PAGE, Attributes::DATA, false) {
        Err(MapError::AlreadyMapped { va: v }) if v == va => {}
        other => fail(format!("mapping over a mapped page: {:?}", other)),
    }
    match kspace::map(va - PAGE, pa2, 2 * PAGE, Attributes::DATA, false) {
        Err(MapError::AlreadyMapped { va: v }) if v == va => {}
        other => fail(format!("a range overlapping a mapped page: {:?}", other)),
    }
    if kspace::query(va - PAGE).is_some() {
        fail(String::from("a refused map left the page before it mapped"));
    }
    match kspace::map(va + PAGE + 8, pa2, PAGE, Attributes::DATA, false) {
        Err(MapError::Unaligned { .. }) => {}
        other => fail(format!("unaligned va: {:?}", other)),
    }
    match kspace::map(va + PAGE, pa2 + 8, PAGE, Attributes::DATA, false) {
        Err(MapError::Unaligned { .. }) => {}
        other => fail(format!("unaligned pa: {:?}", other)),
    }
    match kspace::map(0x4000_0000, pa2, PAGE, Attributes::DATA, false) {
        Err(MapError::OutOfRange { .. }) => {}
        other => fail(format!(
            "a lower-half address in the kernel tables: {:?}",
            other
        )),
    }
    match kspace::map(
        va + PAGE,
        pa2,
        PAGE,
        Attributes::new(MemoryType::Device, Permission::ReadExecute),
        false,
    ) {
        Err(MapError::ExecutableDevice) => {}
        other => fail(format!("executable device memory: {:?}", other)),
    }
    match kspace::unmap(va + PAGE, PAGE, |_, _| {}) {
        Err(MapError::NotMapped { va: v }) if v == va + PAGE => {}
        other => fail(format!("unmapping an unmapped page: {:?}", other)),
    }
    match kspace::unmap(va, 2 * PAGE, |_, _| {}) {
        Err(MapError::NotMapped { .. }) => {}
        other => fail(format!("unmapping a range with a hole: {:?}", other)),
    }
    match kspace::query(va) {
        Some(t) if t.pa == pa && t.attributes == Attributes::DATA => {}
        other => fail(format!(
            "after the refused requests the page reads {:?}",
            other
        )),
    }
    if kspace::query(va + PAGE).is_some() {
        fail(String::from("a refused request mapped the page after"));
    }
    let r = kspace::unmap(va, PAGE, |_, _| {});
    if r.is_err() {
        fail(format!("final unmap: {:?}", r));
    }
    frame::free(pa, 1);
    frame::free(pa2, 1);
    result
}

/// A read-only mapping can be read, and a write to it is a permission fault (WnR set, exact
/// FAR) that ends only the writing thread.
fn read_only_mapping_enforced() -> TestResult {
    let va = SCRATCH_VA + 32 * PAGE;
    check!(
        kspace::query(va).is_none(),
        "scratch {:#x} already mapped",
        va
    );
    let pa = frame::alloc_zeroed().ok_or("no frame")?;
    raw_write(phys_to_virt(pa) + 0x40, 0xfeed_f00d);
    let ro = Attributes::new(MemoryType::Normal, Permission::ReadOnly);
    let r = kspace::map(va, pa, PAGE, ro, false);
    check!(r.is_ok(), "map failed: {:?}", r);
    let t = kspace::query(va).ok_or("not mapped")?;
    let mut result = (|| {
        check!(
            !t.writable() && !t.executable() && t.attributes == ro,
            "read-only mapping decodes as {:?}",
            t.attributes
        );
        check!(
            raw_read(va + 0x40) == 0xfeed_f00d,
            "read through the RO mapping"
        );
        check!(
            at_translate(va, true).is_err(),
            "the MMU allows a write to the read-only page"
        );
        let far = va + 0x48;
        let run = run_expecting_fault("write-ro", move || raw_write(far, 1))?;
        check_data_abort(&run, far, true, false)?;
        check!(
            raw_read(phys_to_virt(pa) + 0x48) == 0,
            "the refused write reached memory"
        );
        Ok(())
    })();
    if let Err(e) = kspace::unmap(va, PAGE, |_, _| {}) {
        result = result.and(Err(format!("unmap: {}", e)));
    }
    frame::free(pa, 1);
    result
}

/// After an unmap, no CPU may still translate the page through a stale TLB entry: a thread
/// pinned to each CPU reads the page (filling that CPU's TLB), then after the unmap a thread
/// pinned to each CPU touches it again, and every one of them must fault.
fn unmap_invalidates_every_cpu() -> TestResult {
    let va = SCRATCH_VA + 48 * PAGE;
    check!(
        kspace::query(va).is_none(),
        "scratch {:#x} already mapped",
        va
    );
    let pa = frame::alloc_zeroed().ok_or("no frame")?;
    raw_write(phys_to_virt(pa), 0x7777);
    let r = kspace::map(va, pa, PAGE, Attributes::DATA, false);
    check!(r.is_ok(), "map failed: {:?}", r);
    let n = sched::online_count();
    let policy = stack::default_policy();
    // Warm every CPU's TLB.
    let warmed = Arc::new(AtomicU64::new(0));
    let mut hs = Vec::new();
    for cpu in 0..n {
        let w = warmed.clone();
        let h = sched::spawn_pinned("tlb-warm", policy, cpu, move || {
            for _ in 0..100 {
                if raw_read(va) == 0x7777 {
                    w.fetch_or(1 << percpu::cpu_index(), Ordering::SeqCst);
                }
            }
        });
        hs.push(h.map_err(|e| format!("spawn_pinned: {}", e))?);
    }
    for h in hs {
        h.join();
    }
    let warmed = warmed.load(Ordering::SeqCst);
    let r = kspace::unmap(va, PAGE, |_, _| {});
    check!(r.is_ok(), "unmap failed: {:?}", r);
    // Touch from every CPU again; each toucher records where it ran and whether it survived.
    let ran_on = Arc::new(AtomicU64::new(0));
    let survivors = Arc::new(AtomicU64::new(0));
    let mut hs = Vec::new();
    for cpu in 0..n {
        let on = ran_on.clone();
        let s = survivors.clone();
        let h = sched::spawn_pinned("tlb-touch", policy, cpu, move || {
            on.fetch_or(1 << percpu::cpu_index(), Ordering::SeqCst);
            raw_read(va + 0x10);
            s.fetch_add(1, Ordering::SeqCst);
        });
        hs.push(h.map_err(|e| format!("spawn_pinned: {}", e))?);
    }
    for h in hs {
        h.join();
    }
    frame::free(pa, 1);
    let all = (1u64 << n) - 1;
    check!(
        warmed == all,
        "pinned readers saw the mapped page on CPUs {:#b}, expected {:#b}",
        warmed,
        all
    );
    check!(
        survivors.load(Ordering::SeqCst) == 0,
        "{} of {} CPUs still read the page after it was unmapped (stale TLB entry)",
        survivors.load(Ordering::SeqCst),
        n
    );
    check!(
        ran_on.load(Ordering::SeqCst) == all,
        "pinned touchers ran on CPUs {:#b}, expected {:#b}",
        ran_on.load(Ordering::SeqCst),
        all
    );
    let (_, esr, far) = last_fault();
    check!(
        esr_ec(esr) == EC_DABT_SAME_EL && is_translation_fault(esr) && far == va + 0x10,
        "last fault ESR {:#x} FAR {:#x}, expected a translation fault at {:#x}",
        esr,
        far,
        va + 0x10
    );
    Ok(())
}

/// Decoded straight from the raw descriptor bits (not through Translation's helpers).
fn desc_writable(d: u64) -> bool {
    d & (1 << 7) == 0 // AP[2] clear: read-write
}

fn desc_el1_executable(d: u64) -> bool {
    // PXN clear, and not writable at EL0 (which implies PXN).
    d & (1 << 53) == 0 && !(d & (1 << 6) != 0 && d & (1 << 7) == 0)
}

/// W^X over the whole live kernel address space: no mapping is writable and executable, none
/// is reachable from EL0, only kernel text is executable, text is executable and read-only,
/// rodata is read-only and not executable, data/bss is writable and not executable, and no
/// writable mapping aliases the physical pages of kernel text.
fn wx_on_live_tables() -> TestResult {
    let (ts, te) = text_range();
    let (rs, re) = rodata_range();
    let (ds, de) = data_range();
    check!(
        ts < te && te <= rs && rs < re && re <= ds && ds < de,
        "odd image layout: text {:#x}..{:#x} rodata {:#x}..{:#x} data {:#x}..{:#x}",
        ts,
        te,
        rs,
        re,
        ds,
        de
    );
    let text_pa = kspace::image_va_to_pa(ts);
    let text_pa_end = text_pa + (te - ts);
    let mut leaves = 0u64;
    let mut first_problem: Option<String> = None;
    let mut note = |p: String| {
        if first_problem.is_none() {
            first_problem = Some(p);
        }
    };
    kspace::walk(|va, t| {
        leaves += 1;
        let d = t.descriptor;
        let end = va + t.size();
        if desc_writable(d) && desc_el1_executable(d) {
            note(format!(
                "{:#x} (level {}) is writable and executable: {:#x}",
                va, t.level, d
            ));
        }
        if t.writable() && t.executable() {
            note(format!(
                "{:#x}: Translation says writable and executable",
                va
            ));
        }
        if d & (1 << 6) != 0 {
            note(format!("{:#x} is accessible from EL0: {:#x}", va, d));
        }
        if d & (1 << 54) == 0 {
            note(format!(
                "{:#x} is executable at EL0 (UXN clear): {:#x}",
                va, d
            ));
        }
        if desc_el1_executable(d) && (va < ts || end > te) {
            note(format!(
                "{:#x}..{:#x} is executable but not kernel text",
                va, end
            ));
        }
        if va < te && end > ts && (desc_writable(d) || !desc_el1_executable(d)) {
            note(format!(
                "text at {:#x} is not read-only executable: {:#x}",
                va, d
            ));
        }
        if va < re && end > rs && (desc_writable(d) || desc_el1_executable(d)) {
            note(format!("rodata at {:#x} is not read-only: {:#x}", va, d));
        }
        if va < de && end > ds && (!desc_writable(d) || desc_el1_executable(d)) {
            note(format!(
                "data at {:#x} is not read-write no-exec: {:#x}",
                va, d
            ));
        }
        if desc_writable(d) && t.pa < text_pa_end && t.pa + t.size() > text_pa {
            note(format!(
                "{:#x} is a writable alias of kernel text (pa {:#x})",
                va, t.pa
            ));
        }
    });
    if let Some(p) = first_problem {
        return Err(p);
    }
    check!(leaves > 0, "the walk found no mapping at all");
    // Every page of each section is mapped (the walk above only sees what exists).
    for (name, s, e) in [("text", ts, te), ("rodata", rs, re), ("data", ds, de)] {
        let mut va = s & !(PAGE - 1);
        while va < e {
            check!(
                kspace::query(va).is_some(),
                "{} page {:#x} is not mapped",
                name,
                va
            );
            va += PAGE;
        }
    }
    Ok(())
}

/// The MMU itself (AT S1E1W, then real writes) refuses writes to kernel text and rodata and
/// allows them to data; a write to text and one to rodata each end only the writing thread
/// with a permission fault at the exact address.
fn image_protection_in_hardware() -> TestResult {
    let (ts, te) = text_range();
    let (rs, re) = rodata_range();
    let (ds, de) = data_range();
    let mut va = ts;
    while va < re {
        check!(
            at_translate(va, false).is_ok(),
            "{:#x} in the image cannot be read",
            va
        );
        match at_translate(va, true) {
            Err(par) => check!(
                par_fst(par) & 0x3c == 0x0c,
                "AT S1E1W on {:#x}: FST {:#x} is not a permission fault",
                va,
                par_fst(par)
            ),
            Ok(_) => {
                return Err(format!(
                    "the MMU allows writes to {} page {:#x}",
                    if va < te { "text" } else { "rodata" },
                    va
                ))
            }
        }
        va += PAGE;
    }
    let mut va = ds;
    while va < de {
        check!(
            at_translate(va, true).is_ok(),
            "the MMU refuses writes to data page {:#x}",
            va
        );
        va += PAGE;
    }
    static READ_ONLY_WORD: u64 = 0x0bad_cafe;
    let ro = &READ_ONLY_WORD as *const u64 as u64;
    check!(
        ro >= rs && ro < re,
        "the test's static {:#x} is not in rodata {:#x}..{:#x}",
        ro,
        rs,
        re
    );
    let run = run_expecting_fault("write-rodata", move || raw_write(ro, 1))?;
    check_data_abort(&run, ro, true, false)?;
    check!(
        // SAFETY: reading a static.
        unsafe { core::ptr::read_volatile(&READ_ONLY_WORD) } == 0x0bad_cafe,
        "the refused write changed rodata"
    );
    let code = raw_read as *const () as u64;
    check!(
        code >= ts && code < te,
        "raw_read {:#x} is not in text",
        code
    );
    let before = raw_read(code);
    let run = run_expecting_fault("write-text", move || raw_write(code + 8, 0))?;
    check_data_abort(&run, code + 8, true, false)?;
    check!(raw_read(code) == before, "the refused write changed text");
    Ok(())
}

/// The linear map covers every page of RAM but the image at LINEAR_BASE + pa, with RW
/// no-exec normal memory, and uses block mappings: every 2 MiB-aligned 2 MiB of RAM clear of
/// the image is one block (level 1 or 2), and only a few pages are mapped page by page.
fn linear_map_blocks() -> TestResult {
    let m = &boot_info().machine;
    let (img_s, img_e) = image_pa();
    let mut blocks_checked = 0;
    let mut giant = 0;
    for r in &m.memory {
        let end = r.base + r.size;
        let mut chunk = layout::align_up(r.base, MIB2);
        while chunk + MIB2 <= end {
            if chunk + MIB2 <= img_s || chunk >= img_e {
                let va = phys_to_virt(chunk);
                let t = kspace::query(va + 0x1000)
                    .ok_or_else(|| format!("linear map misses pa {:#x}", chunk))?;
                check!(
                    t.level <= 2,
                    "pa {:#x}..{:#x} is mapped with level-{} entries, not a block",
                    chunk,
                    chunk + MIB2,
                    t.level
                );
                check!(
                    t.pa == chunk + 0x1000,
                    "linear va {:#x} -> pa {:#x}",
                    va,
                    t.pa
                );
                if t.level == 1 {
                    giant += 1;
                }
                blocks_checked += 1;
            }
            chunk += MIB2;
        }
    }
    check!(
        blocks_checked > 0,
        "no 2 MiB of RAM clear of the image to check"
    );
    // Sample every page-ish stride of RAM: mapped at the right place with the right
    // attributes, except the image, which the linear map must not alias.
    let total: u64 = m.memory.iter().map(|r| r.size).sum();
    let stride = layout::align_up((total / 4096).max(PAGE), PAGE) + PAGE;
    for r in &m.memory {
        let mut pa = layout::align_up(r.base, PAGE);
        while pa < r.base + r.size {
            let t = kspace::query(phys_to_virt(pa));
            if pa >= img_s && pa < img_e {
                check!(
                    t.is_none(),
                    "the image's page {:#x} is aliased in the linear map",
                    pa
                );
            } else {
                let t = t.ok_or_else(|| format!("RAM page {:#x} not in the linear map", pa))?;
                check!(
                    t.pa == pa,
                    "linear map: pa {:#x} appears at {:#x}",
                    t.pa,
                    pa
                );
                check!(
                    t.attributes == Attributes::DATA,
                    "linear map of {:#x}: {:?}",
                    pa,
                    t.attributes
                );
                check!(
                    at_translate(phys_to_virt(pa), true) == Ok(pa),
                    "the MMU translates linear {:#x} to {:?}",
                    phys_to_virt(pa),
                    at_translate(phys_to_virt(pa), true)
                );
            }
            pa += stride;
        }
    }
    // Page-granular entries in the linear region: only around the image and odd edges.
    let mut pages = 0u64;
    kspace::walk(|va, t| {
        if (LINEAR_BASE..LINEAR_BASE + LINEAR_SIZE).contains(&va) && t.level == 3 {
            pages += 1;
        }
    });
    let edges = 2 * m.memory.len() as u64 + 2;
    check!(
        pages <= edges * 512,
        "{} 4 KiB pages in the linear map (at most {} expected with blocks; {} blocks of 1 GiB)",
        pages,
        edges * 512,
        giant
    );
    Ok(())
}

// -------------------------------------------------------------------------------------------
// Faults on purpose

/// A read of 0xdead_0000 (lower half; TTBR0 walks are off) ends the reading thread with a
/// data abort naming that address; the kernel carries on.
fn wild_read_reported() -> TestResult {
    let far = 0xdead_0000;
    let run = run_expecting_fault("wild-read", move || {
        raw_read(far);
    })?;
    check_data_abort(&run, far, false, true)?;
    check_spawn_still_works()
}

/// The same for a write to an unmapped upper-half address in the device window.
fn wild_write_reported() -> TestResult {
    let far = DEVICE_BASE + (1 << 29) + 0x7f8;
    check!(kspace::query(far).is_none(), "{:#x} is mapped", far);
    let run = run_expecting_fault("wild-write", move || raw_write(far, 0x55))?;
    check_data_abort(&run, far, true, true)?;
    check_spawn_still_works()
}

/// A null-pointer read faults (FAR 0), instead of reading whatever page 0 holds.
fn null_read_faults() -> TestResult {
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
fn data_not_executable() -> TestResult {
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
fn kernel_carries_on() -> TestResult {
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

fn check_spawn_still_works() -> TestResult {
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
