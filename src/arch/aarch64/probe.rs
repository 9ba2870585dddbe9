//! A load that may fault: [`try_read`] returns `None` instead of ending the thread when the
//! address is not mapped, for tests and for `bench`, which measures what a fault that is not
//! a growth costs on its way through both fault paths.
//!
//! The load is one instruction at a known address (`probe_read_insn`); the slow fault path
//! asks [`fixup`] about every data abort it would otherwise end a thread for, and a fault at
//! that address resumes at the next instruction with the "faulted" result set instead. A
//! growth fault at that address is still a growth (the probe then reads the new, zeroed page).
use super::trap::TrapFrame;

core::arch::global_asm!(
    r#"
.section .text
// x0 = address -> x0 = the u64 there, x1 = 0; or x1 = 1 if the load faulted (x0 unchanged).
.global probe_read
probe_read:
    mov     x1, #0
.global probe_read_insn
probe_read_insn:
    ldr     x0, [x0]
    ret
"#
);

#[repr(C)]
struct Probe {
    value: u64,
    faulted: u64,
}

extern "C" {
    fn probe_read(addr: u64) -> Probe;
    fn probe_read_insn();
}

/// The u64 at `addr`, or `None` if reading it faults (a translation, permission or
/// alignment fault of a data access). `addr` must be 8-byte aligned.
pub fn try_read(addr: u64) -> Option<u64> {
    // SAFETY: the load either succeeds or faults into `fixup`, which resumes here; it writes
    // nothing and touches no memory but `addr`.
    let p = unsafe { probe_read(addr) };
    (p.faulted == 0).then_some(p.value)
}

/// If `frame` is a data abort of [`try_read`]'s load, makes it return "faulted" and says so.
pub fn fixup(frame: &mut TrapFrame) -> bool {
    if frame.elr != probe_read_insn as *const () as u64 {
        return false;
    }
    frame.x[1] = 1;
    frame.elr += 4;
    true
}
