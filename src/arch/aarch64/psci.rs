//! PSCI (Arm Power State Coordination Interface, DEN 0022), version 0.2 and later: starting
//! secondary CPUs, powering the machine off and resetting it.
//!
//! Owns the firmware calls and their error codes, nothing else. Calls go through the
//! conduit the device tree names (`/psci` `method`): `hvc #0` to a hypervisor (QEMU `virt`
//! entered at EL1) or `smc #0` to secure firmware (entered at EL2, or TF-A), following the
//! SMC Calling Convention. Calls only `core::arch::asm!` and `aarch64-cpu` (DAIF, `wfi`).

use core::fmt;

use aarch64_cpu::{
    asm::wfi,
    registers::{Writeable, DAIF},
};

use crate::dtb::PsciConduit;

/// `PSCI_VERSION` (SMC32).
const FN_PSCI_VERSION: u64 = 0x8400_0000;
/// `CPU_ON` (SMC64).
const FN_CPU_ON: u64 = 0xc400_0003;
/// `SYSTEM_OFF` (SMC32).
const FN_SYSTEM_OFF: u64 = 0x8400_0008;
/// `SYSTEM_RESET` (SMC32).
const FN_SYSTEM_RESET: u64 = 0x8400_0009;

/// A PSCI call's failure, from its negative return code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciError {
    /// -1: the firmware does not implement the function.
    NotSupported,
    /// -2: an argument is invalid (for `CPU_ON`, no CPU has that MPIDR).
    InvalidParameters,
    /// -3: the firmware refuses the operation.
    Denied,
    /// -4: `CPU_ON` named a CPU that is already on.
    AlreadyOn,
    /// -5: an earlier `CPU_ON` for that CPU is still in progress.
    OnPending,
    /// -6: the firmware failed internally.
    InternalFailure,
    /// -7: the target is not present.
    NotPresent,
    /// -8: the target is disabled.
    Disabled,
    /// -9: the entry point address is not valid for the target.
    InvalidAddress,
    /// A return code this module does not know.
    Unknown(i32),
}

impl PsciError {
    /// Decodes a PSCI return value: `Ok` for zero or positive, the error otherwise.
    fn check(ret: i32) -> Result<(), Self> {
        Err(match ret {
            0.. => return Ok(()),
            -1 => Self::NotSupported,
            -2 => Self::InvalidParameters,
            -3 => Self::Denied,
            -4 => Self::AlreadyOn,
            -5 => Self::OnPending,
            -6 => Self::InternalFailure,
            -7 => Self::NotPresent,
            -8 => Self::Disabled,
            -9 => Self::InvalidAddress,
            other => Self::Unknown(other),
        })
    }
}

impl fmt::Display for PsciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::NotSupported => "not supported",
            Self::InvalidParameters => "invalid parameters",
            Self::Denied => "denied",
            Self::AlreadyOn => "already on",
            Self::OnPending => "on pending",
            Self::InternalFailure => "internal failure",
            Self::NotPresent => "not present",
            Self::Disabled => "disabled",
            Self::InvalidAddress => "invalid address",
            Self::Unknown(code) => return write!(f, "unknown PSCI error {code}"),
        };
        f.write_str(text)
    }
}

/// Makes one SMCCC call: function `id` with arguments in x1..x3, result from x0.
///
/// The caller must have got `conduit` from the device tree: `hvc` without an EL2, or `smc`
/// without an EL3 (or QEMU's emulation of one), is an undefined instruction.
fn call(conduit: PsciConduit, id: u64, a1: u64, a2: u64, a3: u64) -> u64 {
    let ret: u64;
    match conduit {
        // SAFETY: an SMCCC call returns to the next instruction, preserving x18..x30 and
        // SP; every register it may change (x0..x17) is declared clobbered. Memory is not
        // declared untouched: CPU_ON's target reads what we wrote before the call.
        PsciConduit::Hvc => unsafe {
            core::arch::asm!(
                "hvc #0",
                inout("x0") id => ret,
                inout("x1") a1 => _,
                inout("x2") a2 => _,
                inout("x3") a3 => _,
                out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _,
                out("x12") _, out("x13") _, out("x14") _, out("x15") _,
                out("x16") _, out("x17") _,
                options(nostack),
            );
        },
        // SAFETY: as for `hvc` above; the secure monitor follows the same convention.
        PsciConduit::Smc => unsafe {
            core::arch::asm!(
                "smc #0",
                inout("x0") id => ret,
                inout("x1") a1 => _,
                inout("x2") a2 => _,
                inout("x3") a3 => _,
                out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _,
                out("x12") _, out("x13") _, out("x14") _, out("x15") _,
                out("x16") _, out("x17") _,
                options(nostack),
            );
        },
    }
    ret
}

/// The PSCI version as (major, minor), e.g. (1, 1) on QEMU; (0, 0) when the firmware does
/// not implement `PSCI_VERSION` (PSCI 0.1, which this module cannot drive).
pub fn version(conduit: PsciConduit) -> (u16, u16) {
    // PSCI_VERSION is an SMC32 call: only the low 32 bits of x0 are defined.
    let ret = call(conduit, FN_PSCI_VERSION, 0, 0, 0) as u32;
    if (ret as i32) < 0 {
        return (0, 0);
    }
    ((ret >> 16) as u16, ret as u16)
}

/// Starts the CPU whose MPIDR affinity is `target_mpidr` at physical address `entry_pa`,
/// with `context` in its x0, MMU and caches off, at the caller's exception level.
///
/// Whatever the new CPU reads before it turns its caches on (its entry code, `context`'s
/// target, page tables) must have been cleaned to the point of coherency first.
pub fn cpu_on(
    conduit: PsciConduit,
    target_mpidr: u64,
    entry_pa: u64,
    context: u64,
) -> Result<(), PsciError> {
    // SMC64 functions return a 64-bit value, but firmware sign-extends a 32-bit error
    // code, so the low word carries it either way.
    let ret = call(conduit, FN_CPU_ON, target_mpidr, entry_pa, context) as u32 as i32;
    PsciError::check(ret)
}

/// Powers the machine off (QEMU exits with status 0). Never returns: if the firmware does
/// not implement `SYSTEM_OFF` the CPU idles with interrupts masked.
pub fn system_off(conduit: PsciConduit) -> ! {
    call(conduit, FN_SYSTEM_OFF, 0, 0, 0);
    halt()
}

/// Resets the machine. Never returns: if the firmware does not implement `SYSTEM_RESET`
/// the CPU idles with interrupts masked.
pub fn system_reset(conduit: PsciConduit) -> ! {
    call(conduit, FN_SYSTEM_RESET, 0, 0, 0);
    halt()
}

/// Masks every exception and waits forever.
fn halt() -> ! {
    // Masked interrupts still wake `wfi`, but are not taken, so nothing runs again.
    DAIF.write(DAIF::D::Masked + DAIF::A::Masked + DAIF::I::Masked + DAIF::F::Masked);
    loop {
        wfi();
    }
}
