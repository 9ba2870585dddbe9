//! GICv3 (and GICv4, which is programmed the same way here): a memory-mapped distributor
//! with affinity routing, one memory-mapped redistributor per CPU, and the CPU interface
//! reached through `ICC_*` system registers (QEMU `virt`'s default GIC).
//!
//! Owns the distributor (`GICD_*`) and the redistributor region (`GICR_*`) at the mapped
//! addresses it is given, and the calling CPU's `ICC_*` registers. Each CPU finds its own
//! redistributor by walking the region's frames and matching `GICR_TYPER.Affinity_Value`
//! against `MPIDR_EL1`, so the driver keeps no per-CPU table. Calls `tock-registers`,
//! `aarch64-cpu` (MPIDR, ID registers, barriers), `core::arch::asm!` for the `ICC_*`
//! registers `aarch64-cpu` does not define, and the shared helpers in the parent module.
//!
//! Security: the driver programs the Non-secure view of a GIC with two security states (as
//! left by firmware such as TF-A) or a GIC with a single security state (`GICD_CTLR.DS`,
//! QEMU `virt` without `secure=on`). In both, writing `ARE | EnableGrp1 | bit 0` to
//! `GICD_CTLR` turns on affinity routing and Group 1, and `ICC_IGRPEN1_EL1` enables it at
//! A kernel left in Secure EL1 on a two-state GIC is not supported.
//!
//! Host-tested (`v3/tests.rs`) against fake distributor and redistributor blocks and a fake
//! CPU interface that stands in for the `ICC_*` registers (see `icc`).

// Host tests only: the plain spin lock below stands in for `sync::IrqMutex`.
#![cfg_attr(not(target_os = "none"), allow(clippy::disallowed_types))]

#[cfg(target_os = "none")]
use crate::sync::IrqMutex;
#[cfg(not(target_os = "none"))]
use spin::Mutex as IrqMutex;
use tock_registers::{
    interfaces::{ReadWriteable, Readable, Writeable},
    register_bitfields, register_structs,
    registers::{ReadOnly, ReadWrite},
};

use super::{
    affinity_of, is_special, lines_from_typer, wait_while, InterruptController, SgiTarget,
    DEFAULT_PRIORITY, PRIORITY_MASK_OPEN, SGI_COUNT, SPI_BASE,
};

/// Bytes of one redistributor: an RD_base frame and an SGI_base frame of 64 KiB each.
const REDIST_FRAMES_SIZE: usize = 0x2_0000;

/// Stride between redistributors that also implement virtual LPIs (GICv4: two more frames).
const REDIST_FRAMES_SIZE_VLPI: usize = 0x4_0000;

register_bitfields! {u32,
    /// Distributor control register (single-security and Non-secure layouts agree on
    /// these bits).
    GICD_CTLR [
        ENABLE_GRP0_OR_GRP1NS OFFSET(0) NUMBITS(1) [],
        ENABLE_GRP1 OFFSET(1) NUMBITS(1) [],
        ARE OFFSET(4) NUMBITS(1) [],
        RWP OFFSET(31) NUMBITS(1) []
    ],

    /// Peripheral ID 2: which architecture version this block implements.
    PIDR2 [
        ARCH_REV OFFSET(4) NUMBITS(4) []
    ],

    /// Redistributor control register.
    GICR_CTLR [
        RWP OFFSET(3) NUMBITS(1) []
    ],

    /// Redistributor power management.
    GICR_WAKER [
        PROCESSOR_SLEEP OFFSET(1) NUMBITS(1) [],
        CHILDREN_ASLEEP OFFSET(2) NUMBITS(1) []
    ]
}

register_bitfields! {u64,
    /// Redistributor type register.
    GICR_TYPER [
        VLPIS OFFSET(1) NUMBITS(1) [],
        LAST OFFSET(4) NUMBITS(1) [],
        AFFINITY_VALUE OFFSET(32) NUMBITS(32) []
    ],

    /// Interrupt routing register (an SPI goes to one CPU, named by affinity).
    GICD_IROUTER [
        AFF0 OFFSET(0) NUMBITS(8) [],
        AFF1 OFFSET(8) NUMBITS(8) [],
        AFF2 OFFSET(16) NUMBITS(8) [],
        INTERRUPT_ROUTING_MODE OFFSET(31) NUMBITS(1) [],
        AFF3 OFFSET(32) NUMBITS(8) []
    ],

    /// `ICC_SGI1R_EL1`: raises a Group 1 SGI.
    ICC_SGI1R [
        TARGET_LIST OFFSET(0) NUMBITS(16) [],
        AFF1 OFFSET(16) NUMBITS(8) [],
        INTID OFFSET(24) NUMBITS(4) [],
        AFF2 OFFSET(32) NUMBITS(8) [],
        IRM OFFSET(40) NUMBITS(1) [],
        RS OFFSET(44) NUMBITS(4) [],
        AFF3 OFFSET(48) NUMBITS(8) []
    ]
}

register_structs! {
    DistributorRegs {
        (0x0000 => ctlr: ReadWrite<u32, GICD_CTLR::Register>),
        (0x0004 => typer: ReadOnly<u32>),
        (0x0008 => _reserved0),
        (0x0080 => igroupr: [ReadWrite<u32>; 32]),
        (0x0100 => isenabler: [ReadWrite<u32>; 32]),
        (0x0180 => icenabler: [ReadWrite<u32>; 32]),
        (0x0200 => _reserved1),
        (0x0280 => icpendr: [ReadWrite<u32>; 32]),
        (0x0300 => _reserved2),
        (0x0380 => icactiver: [ReadWrite<u32>; 32]),
        (0x0400 => ipriorityr: [ReadWrite<u8>; 1020]),
        (0x07fc => _reserved3),
        (0x0c00 => icfgr: [ReadWrite<u32>; 64]),
        (0x0d00 => _reserved4),
        // GICD_IROUTER<n> for n = 32..1020; the first 32 slots are reserved.
        (0x6100 => irouter: [ReadWrite<u64, GICD_IROUTER::Register>; 988]),
        (0x7fe0 => _reserved5),
        (0xffe8 => pidr2: ReadOnly<u32, PIDR2::Register>),
        (0xffec => @END),
    },

    /// One redistributor: the RD_base frame, then the SGI_base frame 64 KiB above it.
    RedistributorRegs {
        (0x0_0000 => ctlr: ReadWrite<u32, GICR_CTLR::Register>),
        (0x0_0004 => _reserved0),
        (0x0_0008 => typer: ReadOnly<u64, GICR_TYPER::Register>),
        (0x0_0010 => _reserved1),
        (0x0_0014 => waker: ReadWrite<u32, GICR_WAKER::Register>),
        (0x0_0018 => _reserved2),
        (0x0_ffe8 => pidr2: ReadOnly<u32, PIDR2::Register>),
        (0x0_ffec => _reserved3),
        (0x1_0080 => igroupr0: ReadWrite<u32>),
        (0x1_0084 => _reserved4),
        (0x1_0100 => isenabler0: ReadWrite<u32>),
        (0x1_0104 => _reserved5),
        (0x1_0180 => icenabler0: ReadWrite<u32>),
        (0x1_0184 => _reserved6),
        (0x1_0380 => icactiver0: ReadWrite<u32>),
        (0x1_0384 => _reserved7),
        (0x1_0400 => ipriorityr: [ReadWrite<u8>; 32]),
        (0x1_0420 => @END),
    }
}

/// The calling CPU's side of the GIC: the `ICC_*` system registers (`aarch64-cpu` 11
/// defines only `ICC_CTLR_EL1` among them), the ID register that says whether they exist,
/// the barriers between their writes, and the CPU's affinity. On the target, `mrs`/`msr`;
/// in the host tests, the fake CPU interface of `tests.rs`.
mod icc {
    #[cfg(target_os = "none")]
    pub use super::hw::*;
    #[cfg(not(target_os = "none"))]
    pub use super::tests::fake_icc::*;

    /// `ICC_SRE_EL1.SRE`: the system register interface is in use.
    pub const SRE_SRE: u64 = 1 << 0;
    /// `ICC_CTLR_EL1.EOImode`: EOI only drops priority (deactivation done separately).
    pub const CTLR_EOIMODE: u64 = 1 << 1;
    /// `ICC_CTLR_EL1.RSS`: SGIs can target Aff0 values 16..256.
    pub const CTLR_RSS: u64 = 1 << 18;
    /// `ICC_IGRPEN1_EL1.Enable`.
    pub const IGRPEN1_ENABLE: u64 = 1 << 0;
    /// Valid bits of the INTID returned by `ICC_IAR1_EL1`.
    pub const IAR_INTID_MASK: u64 = 0xff_ffff;

    /// Whether the PE implements the GIC system register interface
    /// (`ID_AA64PFR0_EL1.GIC`, bits 27:24, non-zero).
    pub fn implemented(id_aa64pfr0: u64) -> bool {
        (id_aa64pfr0 >> 24) & 0xf != 0
    }
}

/// The machine's `ICC_*` registers (see `icc`).
#[cfg(target_os = "none")]
mod hw {
    use aarch64_cpu::asm::barrier;
    use aarch64_cpu::registers::{Readable, ICC_CTLR_EL1, ID_AA64PFR0_EL1};
    use core::arch::asm;

    /// The calling CPU's affinity (MPIDR layout).
    #[inline(always)]
    pub fn affinity() -> u64 {
        super::super::current_affinity()
    }

    /// `ID_AA64PFR0_EL1`.
    #[inline(always)]
    pub fn id_aa64pfr0_el1() -> u64 {
        ID_AA64PFR0_EL1.get()
    }

    /// `ICC_CTLR_EL1`.
    #[inline(always)]
    pub fn ctlr_el1() -> u64 {
        ICC_CTLR_EL1.get()
    }

    /// `ISB`: the register writes before it take effect before what follows.
    #[inline(always)]
    pub fn isb() {
        barrier::isb(barrier::SY);
    }

    /// `DSB ISHST`: earlier stores are visible to the other CPUs.
    #[inline(always)]
    pub fn dsb_ishst() {
        barrier::dsb(barrier::ISHST);
    }

    macro_rules! sysreg_read {
        ($(#[$doc:meta])* $fn:ident, $reg:literal) => {
            $(#[$doc])*
            #[inline(always)]
            pub fn $fn() -> u64 {
                let value: u64;
                // SAFETY: reading this GIC CPU interface register touches neither memory
                // nor the stack. The interface exists: `init_cpu` and `cpu_interface_ready`
                // check ID_AA64PFR0_EL1.GIC first, and the rest run only after `init_cpu`.
                unsafe {
                    asm!(concat!("mrs {}, ", $reg), out(reg) value, options(nostack, preserves_flags));
                }
                value
            }
        };
    }

    macro_rules! sysreg_write {
        ($(#[$doc:meta])* $fn:ident, $reg:literal) => {
            $(#[$doc])*
            #[inline(always)]
            pub fn $fn(value: u64) {
                // SAFETY: writing this GIC CPU interface register changes only interrupt
                // delivery state, never memory or the stack (not `nomem`, so the compiler
                // keeps memory accesses on their side). The interface exists, as for reads.
                unsafe {
                    asm!(concat!("msr ", $reg, ", {}"), in(reg) value, options(nostack, preserves_flags));
                }
            }
        };
    }

    sysreg_read!(
        /// `ICC_SRE_EL1`.
        sre_el1, "S3_0_C12_C12_5"
    );
    sysreg_write!(
        /// `ICC_SRE_EL1`.
        set_sre_el1, "S3_0_C12_C12_5"
    );
    sysreg_write!(
        /// `ICC_PMR_EL1`.
        set_pmr_el1, "S3_0_C4_C6_0"
    );
    sysreg_write!(
        /// `ICC_BPR1_EL1`.
        set_bpr1_el1, "S3_0_C12_C12_3"
    );
    sysreg_write!(
        /// `ICC_CTLR_EL1`.
        set_ctlr_el1, "S3_0_C12_C12_4"
    );
    sysreg_read!(
        /// `ICC_IGRPEN1_EL1`.
        igrpen1_el1, "S3_0_C12_C12_7"
    );
    sysreg_write!(
        /// `ICC_IGRPEN1_EL1`.
        set_igrpen1_el1, "S3_0_C12_C12_7"
    );
    sysreg_read!(
        /// `ICC_IAR1_EL1` (acknowledges the interrupt it returns).
        iar1_el1, "S3_0_C12_C12_0"
    );
    sysreg_write!(
        /// `ICC_EOIR1_EL1`.
        set_eoir1_el1, "S3_0_C12_C12_1"
    );
    sysreg_write!(
        /// `ICC_SGI1R_EL1`.
        set_sgi1r_el1, "S3_0_C12_C11_5"
    );
}

/// A GICv3 distributor and redistributor region at mapped virtual addresses.
pub struct GicV3 {
    gicd: usize,
    gicr_base: usize,
    gicr_size: usize,
    /// Serialises read-modify-write of `GICD_ICFGRn`, which packs 16 interrupts per word.
    config_lock: IrqMutex<()>,
}

impl GicV3 {
    /// Creates a driver for the GICv3 whose distributor is mapped at `gicd` and whose
    /// redistributors occupy `gicr_size` bytes mapped at `gicr_base`. Touches no hardware.
    ///
    /// # Safety
    ///
    /// `gicd` must map the 64 KiB distributor and `gicr_base..gicr_base + gicr_size` the
    /// redistributor region, as Device memory, for as long as the driver is used; no other
    /// code may program this GIC.
    pub const unsafe fn new(gicd: usize, gicr_base: usize, gicr_size: usize) -> Self {
        Self {
            gicd,
            gicr_base,
            gicr_size,
            config_lock: IrqMutex::new(()),
        }
    }

    fn gicd(&self) -> &DistributorRegs {
        // SAFETY: `new`'s contract guarantees `gicd` maps the distributor for the driver's
        // lifetime; every access goes through volatile MMIO cells.
        unsafe { &*(self.gicd as *const DistributorRegs) }
    }

    /// The redistributor of the CPU with `affinity` (MPIDR layout), found by walking the
    /// region until `GICR_TYPER.Last`, the end of the region, or a frame that is not a
    /// GICv3/v4 redistributor.
    fn redistributor_for(&self, affinity: u64) -> Option<&RedistributorRegs> {
        // GICR_TYPER packs Aff3.Aff2.Aff1.Aff0 into 32 bits; MPIDR keeps Aff3 at 39:32.
        let wanted = ((affinity >> 32) << 24) | (affinity & 0xff_ffff);
        let mut offset = 0usize;
        while offset
            .checked_add(REDIST_FRAMES_SIZE)
            .is_some_and(|end| end <= self.gicr_size)
        {
            // SAFETY: `offset + REDIST_FRAMES_SIZE <= gicr_size`, so both frames of this
            // redistributor lie inside the region `new`'s contract says is mapped.
            let rd = unsafe { &*((self.gicr_base + offset) as *const RedistributorRegs) };
            if !matches!(rd.pidr2.read(PIDR2::ARCH_REV), 3 | 4) {
                return None;
            }
            let typer = rd.typer.extract();
            if typer.read(GICR_TYPER::AFFINITY_VALUE) == wanted {
                return Some(rd);
            }
            if typer.is_set(GICR_TYPER::LAST) {
                return None;
            }
            offset += if typer.is_set(GICR_TYPER::VLPIS) {
                REDIST_FRAMES_SIZE_VLPI
            } else {
                REDIST_FRAMES_SIZE
            };
        }
        None
    }

    /// Interrupt IDs below the special range this distributor implements.
    fn lines(&self) -> u32 {
        lines_from_typer(self.gicd().typer.get())
    }

    /// Waits for distributor writes that `GICD_CTLR.RWP` tracks to take effect.
    fn wait_distributor(&self) {
        let d = self.gicd();
        wait_while(|| d.ctlr.is_set(GICD_CTLR::RWP));
    }

    /// Turns on the calling CPU's system register interface and opens it to Group 1,
    /// unless the interface does not exist or cannot be switched on.
    fn init_cpu_interface(&self) {
        if !icc::implemented(icc::id_aa64pfr0_el1()) {
            return;
        }
        icc::set_sre_el1(icc::sre_el1() | icc::SRE_SRE);
        icc::isb();
        // SRE stays 0 when a higher EL keeps EL1 on the memory-mapped interface.
        if icc::sre_el1() & icc::SRE_SRE == 0 {
            return;
        }

        icc::set_pmr_el1(u64::from(PRIORITY_MASK_OPEN));
        icc::isb();
        icc::set_bpr1_el1(0);
        // EOImode 0: one EOIR write both drops priority and deactivates.
        icc::set_ctlr_el1(icc::ctlr_el1() & !icc::CTLR_EOIMODE);
        icc::set_igrpen1_el1(icc::IGRPEN1_ENABLE);
        icc::isb();
    }
}

impl InterruptController for GicV3 {
    fn init_distributor(&self) {
        let d = self.gicd();

        // Groups must be off while ARE changes.
        d.ctlr.set(0);
        self.wait_distributor();

        let lines = self.lines();
        for word in (SPI_BASE / 32) as usize..lines.div_ceil(32) as usize {
            d.icenabler[word].set(u32::MAX);
            d.icpendr[word].set(u32::MAX);
            d.icactiver[word].set(u32::MAX);
            d.igroupr[word].set(u32::MAX);
        }
        self.wait_distributor();

        for intid in SPI_BASE..lines {
            d.ipriorityr[intid as usize].set(DEFAULT_PRIORITY);
        }
        for word in (SPI_BASE / 16) as usize..lines.div_ceil(16) as usize {
            d.icfgr[word].set(0);
        }

        d.ctlr.write(
            GICD_CTLR::ARE::SET
                + GICD_CTLR::ENABLE_GRP1::SET
                + GICD_CTLR::ENABLE_GRP0_OR_GRP1NS::SET,
        );
        self.wait_distributor();

        // IROUTER only means something once ARE is on.
        let boot = icc::affinity();
        let route = GICD_IROUTER::AFF0.val(boot & 0xff)
            + GICD_IROUTER::AFF1.val((boot >> 8) & 0xff)
            + GICD_IROUTER::AFF2.val((boot >> 16) & 0xff)
            + GICD_IROUTER::AFF3.val((boot >> 32) & 0xff)
            + GICD_IROUTER::INTERRUPT_ROUTING_MODE::CLEAR;
        for intid in SPI_BASE..lines {
            d.irouter[(intid - SPI_BASE) as usize].write(route);
        }
    }

    fn init_cpu(&self) {
        let Some(rd) = self.redistributor_for(icc::affinity()) else {
            return;
        };

        rd.waker.modify(GICR_WAKER::PROCESSOR_SLEEP::CLEAR);
        wait_while(|| rd.waker.is_set(GICR_WAKER::CHILDREN_ASLEEP));

        rd.igroupr0.set(u32::MAX);
        rd.icactiver0.set(u32::MAX);
        rd.icenabler0.set(0xffff_0000);
        wait_while(|| rd.ctlr.is_set(GICR_CTLR::RWP));
        for intid in 0..SPI_BASE {
            rd.ipriorityr[intid as usize].set(DEFAULT_PRIORITY);
        }
        rd.isenabler0.set(0x0000_ffff);

        self.init_cpu_interface();
    }

    fn cpu_interface_ready(&self) -> bool {
        let Some(rd) = self.redistributor_for(icc::affinity()) else {
            return false;
        };
        !rd.waker.is_set(GICR_WAKER::CHILDREN_ASLEEP)
            && icc::implemented(icc::id_aa64pfr0_el1())
            && icc::sre_el1() & icc::SRE_SRE != 0
            && icc::igrpen1_el1() & icc::IGRPEN1_ENABLE != 0
    }

    fn enable(&self, intid: u32) {
        let bit = 1 << (intid % 32);
        if intid < SPI_BASE {
            if let Some(rd) = self.redistributor_for(icc::affinity()) {
                rd.isenabler0.set(bit);
            }
        } else if intid < self.lines() {
            self.gicd().isenabler[(intid / 32) as usize].set(bit);
        }
    }

    fn disable(&self, intid: u32) {
        let bit = 1 << (intid % 32);
        if intid < SPI_BASE {
            if let Some(rd) = self.redistributor_for(icc::affinity()) {
                rd.icenabler0.set(bit);
                wait_while(|| rd.ctlr.is_set(GICR_CTLR::RWP));
            }
        } else if intid < self.lines() {
            self.gicd().icenabler[(intid / 32) as usize].set(bit);
            self.wait_distributor();
        }
    }

    fn set_edge_triggered(&self, intid: u32, edge: bool) {
        if intid < SPI_BASE || intid >= self.lines() {
            return;
        }
        let d = self.gicd();
        let word = (intid / 32) as usize;
        let bit = 1 << (intid % 32);
        let edge_bit = 1 << (2 * (intid % 16) + 1);

        let _guard = self.config_lock.lock();
        // Changing the trigger of an enabled SPI is UNPREDICTABLE.
        let was_enabled = d.isenabler[word].get() & bit != 0;
        if was_enabled {
            d.icenabler[word].set(bit);
            self.wait_distributor();
        }
        let cfg = &d.icfgr[(intid / 16) as usize];
        let old = cfg.get();
        cfg.set(if edge {
            old | edge_bit
        } else {
            old & !edge_bit
        });
        if was_enabled {
            d.isenabler[word].set(bit);
        }
    }

    fn acknowledge(&self) -> Option<u32> {
        let intid = (icc::iar1_el1() & icc::IAR_INTID_MASK) as u32;
        if is_special(intid) {
            None
        } else {
            Some(intid)
        }
    }

    fn end_of_interrupt(&self, intid: u32) {
        if is_special(intid) {
            return;
        }
        icc::set_eoir1_el1(u64::from(intid));
        icc::isb();
    }

    fn send_sgi(&self, sgi: u32, target: SgiTarget) {
        if sgi >= SGI_COUNT {
            return;
        }
        let value = match target {
            SgiTarget::AllOthers => ICC_SGI1R::IRM::SET + ICC_SGI1R::INTID.val(u64::from(sgi)),
            SgiTarget::Cpu(mpidr) => {
                let aff = affinity_of(mpidr);
                let aff0 = aff & 0xff;
                // Aff0 above 15 needs range selectors, which only RSS-capable GICs have.
                if aff0 >= 16 && icc::ctlr_el1() & icc::CTLR_RSS == 0 {
                    return;
                }
                ICC_SGI1R::TARGET_LIST.val(1 << (aff0 % 16))
                    + ICC_SGI1R::RS.val(aff0 / 16)
                    + ICC_SGI1R::AFF1.val((aff >> 8) & 0xff)
                    + ICC_SGI1R::AFF2.val((aff >> 16) & 0xff)
                    + ICC_SGI1R::AFF3.val((aff >> 32) & 0xff)
                    + ICC_SGI1R::INTID.val(u64::from(sgi))
            }
        };
        // The target's handler must see everything written before the SGI was raised.
        icc::dsb_ishst();
        icc::set_sgi1r_el1(value.value);
        icc::isb();
    }

    fn version(&self) -> u8 {
        match self.gicd().pidr2.read(PIDR2::ARCH_REV) {
            4 => 4,
            _ => 3,
        }
    }
}

#[cfg(test)]
mod tests;
