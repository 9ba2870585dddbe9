//! The trap frame every exception pushes, and decoding of the exception syndrome (ESR_EL1).
//!
//! Owns the layout shared with `vectors.s` and the names of exception classes and fault
//! status codes. Calls nothing; `crate::kernel::exception` decides what to do with a trap.
use core::fmt;

use aarch64_cpu::registers::{ESR_EL1, SPSR_EL1};

/// Registers saved by the vector entry, in the order `vectors.s` stores them. A thread's
/// saved context is the same structure, so a context switch is a copy of one of these.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct TrapFrame {
    /// x0..x30.
    pub x: [u64; 31],
    /// The interrupted thread's stack pointer (SP_EL0).
    pub sp_el0: u64,
    /// Where the interrupted code resumes.
    pub elr: u64,
    /// The interrupted code's PSTATE.
    pub spsr: u64,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 272);
// `vectors.s` stores x30 and SP_EL0 with one `stp`, and ELR and SPSR with another.
const _: () = assert!(
    core::mem::offset_of!(TrapFrame, sp_el0) == core::mem::offset_of!(TrapFrame, x) + 31 * 8
);
const _: () =
    assert!(core::mem::offset_of!(TrapFrame, spsr) == core::mem::offset_of!(TrapFrame, elr) + 8);

/// ESR_EL1.EC: where the exception class starts.
pub const ESR_EC_SHIFT: usize = ESR_EL1::EC.shift;
/// ESR_EL1.EC of a data abort taken without a change in exception level.
pub const EC_DATA_ABORT_SAME_EL: u64 = ESR_EL1::EC::Value::DataAbortCurrentEL as u64;
/// The bits of ESR_EL1.ISS.DFSC that say "translation fault" (any level): `0b0001xx`.
pub const DFSC_TRANSLATION_MASK: u64 = 0b11_1100;
/// DFSC & [`DFSC_TRANSLATION_MASK`] for a translation fault.
pub const DFSC_TRANSLATION: u64 = 0b00_0100;

/// SPSR value for a thread: EL1t (SP_EL0), interrupts enabled.
pub const SPSR_EL1T: u64 = SPSR_EL1::M::EL1t.value;
/// SPSR.M field mask.
pub const SPSR_MODE_MASK: u64 = SPSR_EL1::M.mask << SPSR_EL1::M.shift;
/// SPSR.I: IRQs masked.
pub const SPSR_IRQ_MASKED: u64 = SPSR_EL1::I::Masked.value;

impl TrapFrame {
    /// A frame that starts `entry(arg)` at EL1t on the stack whose top is `sp`, with
    /// interrupts enabled and `lr` as the return address.
    pub fn new_thread(entry: u64, arg: u64, sp: u64, lr: u64) -> Self {
        let mut frame = TrapFrame::default();
        frame.x[0] = arg;
        frame.x[30] = lr;
        frame.sp_el0 = sp;
        frame.elr = entry;
        frame.spsr = SPSR_EL1T;
        frame
    }

    /// The frame pointer (x29) of the interrupted code.
    pub fn fp(&self) -> u64 {
        self.x[29]
    }

    /// Whether the interrupted code ran on a thread stack (EL1t) rather than the
    /// exception stack (EL1h).
    pub fn from_thread(&self) -> bool {
        self.spsr & SPSR_MODE_MASK == SPSR_EL1T
    }
}

impl fmt::Display for TrapFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, pair) in self.x.chunks(2).enumerate() {
            let r = i * 2;
            if pair.len() == 2 {
                writeln!(
                    f,
                    "  x{:<2} {:#018x}  x{:<2} {:#018x}",
                    r,
                    pair[0],
                    r + 1,
                    pair[1]
                )?;
            } else {
                writeln!(
                    f,
                    "  x{:<2} {:#018x}  sp  {:#018x}",
                    r, pair[0], self.sp_el0
                )?;
            }
        }
        write!(f, "  elr {:#018x}  spsr {:#010x}", self.elr, self.spsr)
    }
}

/// Exception classes the kernel distinguishes (ESR_EL1.EC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionClass {
    /// SVC from AArch64: a system call from a thread.
    Svc,
    /// Instruction abort at the same EL.
    InstructionAbort,
    /// Data abort at the same EL: stack growth, overflow, or a bad access.
    DataAbort,
    /// PC alignment fault.
    PcAlignment,
    /// SP alignment fault.
    SpAlignment,
    /// BRK instruction.
    Breakpoint,
    /// Unknown reason / undefined instruction.
    Unknown,
    /// Any other class, with its raw value.
    Other(u8),
}

/// A decoded ESR_EL1 value.
#[derive(Clone, Copy, Debug)]
pub struct Syndrome(pub u64);

impl Syndrome {
    /// The raw exception class.
    pub fn ec(&self) -> u8 {
        ESR_EL1::EC.read(self.0) as u8
    }

    /// The instruction-specific syndrome.
    pub fn iss(&self) -> u32 {
        ESR_EL1::ISS.read(self.0) as u32
    }

    /// The exception class.
    #[inline(always)]
    pub fn class(&self) -> ExceptionClass {
        use ESR_EL1::EC::Value as Ec;
        // Compares on the raw class, not the register crate's `read_as_enum`, which is an
        // out-of-line table lookup: this decides every system call (`exception_dispatch`).
        const UNKNOWN: u8 = Ec::Unknown as u8;
        const SVC64: u8 = Ec::SVC64 as u8;
        const IABT_LOWER: u8 = Ec::InstrAbortLowerEL as u8;
        const IABT_SAME: u8 = Ec::InstrAbortCurrentEL as u8;
        const DABT_LOWER: u8 = Ec::DataAbortLowerEL as u8;
        const DABT_SAME: u8 = Ec::DataAbortCurrentEL as u8;
        const PC_ALIGN: u8 = Ec::PCAlignmentFault as u8;
        const SP_ALIGN: u8 = Ec::SPAlignmentFault as u8;
        const BRK64: u8 = Ec::Brk64 as u8;
        match self.ec() {
            SVC64 => ExceptionClass::Svc,
            DABT_LOWER | DABT_SAME => ExceptionClass::DataAbort,
            UNKNOWN => ExceptionClass::Unknown,
            IABT_LOWER | IABT_SAME => ExceptionClass::InstructionAbort,
            PC_ALIGN => ExceptionClass::PcAlignment,
            SP_ALIGN => ExceptionClass::SpAlignment,
            BRK64 => ExceptionClass::Breakpoint,
            ec => ExceptionClass::Other(ec),
        }
    }

    /// Data/instruction fault status code (DFSC/IFSC).
    pub fn fault_status(&self) -> u8 {
        (self.iss() & 0x3f) as u8
    }

    /// Whether an abort is a translation fault (no valid descriptor at some level).
    pub fn is_translation_fault(&self) -> bool {
        (self.fault_status() as u64 & DFSC_TRANSLATION_MASK) == DFSC_TRANSLATION
    }

    /// Whether a data abort was caused by a write (ISS.WnR).
    pub fn is_write(&self) -> bool {
        self.iss() & (1 << 6) != 0
    }

    /// The SVC immediate.
    pub fn svc_imm(&self) -> u16 {
        (self.iss() & 0xffff) as u16
    }
}

/// A human name for an exception class value.
pub fn class_name(ec: u8) -> &'static str {
    match ec {
        0x00 => "unknown reason (undefined instruction?)",
        0x01 => "trapped WFI/WFE",
        0x07 => "trapped SIMD/FP access",
        0x0e => "illegal execution state",
        0x15 => "SVC from AArch64",
        0x18 => "trapped MSR/MRS/system instruction",
        0x20 => "instruction abort from a lower EL",
        0x21 => "instruction abort at the same EL",
        0x22 => "PC alignment fault",
        0x24 => "data abort from a lower EL",
        0x25 => "data abort at the same EL",
        0x26 => "SP alignment fault",
        0x2f => "SError",
        0x30 | 0x31 => "breakpoint",
        0x32 | 0x33 => "software step",
        0x34 | 0x35 => "watchpoint",
        0x3c => "BRK instruction",
        _ => "unexpected exception class",
    }
}

/// A human name for a data/instruction fault status code.
pub fn fault_status_name(fsc: u8) -> &'static str {
    match fsc {
        0x00..=0x03 => "address size fault",
        0x04..=0x07 => "translation fault",
        0x08..=0x0b => "access flag fault",
        0x0c..=0x0f => "permission fault",
        0x10 => "synchronous external abort",
        0x21 => "alignment fault",
        0x30 => "TLB conflict abort",
        _ => "other fault",
    }
}

impl fmt::Display for Syndrome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "esr={:#x} ec={:#x} ({})",
            self.0,
            self.ec(),
            class_name(self.ec())
        )?;
        if matches!(
            self.class(),
            ExceptionClass::DataAbort | ExceptionClass::InstructionAbort
        ) {
            let fsc = self.fault_status();
            write!(
                f,
                " fsc={:#x} ({}, level {})",
                fsc,
                fault_status_name(fsc),
                fsc & 3
            )?;
            if self.class() == ExceptionClass::DataAbort {
                write!(f, " {}", if self.is_write() { "write" } else { "read" })?;
            }
        }
        Ok(())
    }
}
