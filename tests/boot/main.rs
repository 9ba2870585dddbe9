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

mod deliberate_faults;
mod dtb_cpus;
mod mmu;

use deliberate_faults::*;
use dtb_cpus::*;
use mmu::*;

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
        stacks_pass_the_vector_check,
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
