//! GICv2: a memory-mapped distributor and a memory-mapped CPU interface (QEMU `virt` with
//! `gic-version=2`, the Raspberry Pi 4's GIC-400).
//!
//! Owns the distributor (`GICD_*`) and CPU interface (`GICC_*`) register blocks at the
//! mapped addresses it is given, plus two small tables GICv2 needs that the hardware does
//! not keep for us: which CPU interface number belongs to which MPIDR (SGIs are addressed
//! by interface number), and which CPU sent each SGI being handled (`GICC_EOIR` must echo
//! the source CPU that `GICC_IAR` returned). Calls `tock-registers`, `aarch64-cpu` barriers
//! and the shared helpers in the parent module.
//!
//! Security views. A GICv2 shows software one of two register layouts. Code running
//! Non-secure on a GIC with the Security Extensions (the Pi 4 after its firmware) sees the
//! Non-secure view: `GICD_IGROUPRn` reads as zero, bit 0 of the control registers enables
//! Group 1, and the firmware has already put every interrupt in Group 1. Code running
//! Secure, or on a GIC without the Security Extensions (QEMU `virt` by default), sees the
//! full view: it assigns groups itself, enables Group 1 with bit 1, and must set
//! `GICC_CTLR.AckCtl` to acknowledge Group 1 interrupts through `GICC_IAR`. The driver
//! tells the two apart by whether `GICD_IGROUPR0` accepts a write.

// Host tests only: the plain spin lock below stands in for `sync::IrqMutex`.
#![cfg_attr(not(target_os = "none"), allow(clippy::disallowed_types))]

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

// The configuration lock masks IRQs on the machine (an interrupt handler may reconfigure a
// line); the host tests, which have no IRQs to mask and no `sync`, use a plain spin lock.
#[cfg(target_os = "none")]
use crate::sync::IrqMutex;
#[cfg(not(target_os = "none"))]
use spin::Mutex as IrqMutex;
use tock_registers::{
    interfaces::{Readable, Writeable},
    register_bitfields, register_structs,
    registers::{ReadOnly, ReadWrite, WriteOnly},
};

use super::{
    affinity_of, current_affinity, is_special, lines_from_typer, InterruptController, SgiTarget,
    DEFAULT_PRIORITY, PRIORITY_MASK_OPEN, SGI_COUNT, SPECIAL_INTID_FIRST, SPI_BASE,
};

/// Largest number of CPU interfaces a GICv2 supports.
const MAX_CPU_INTERFACES: usize = 8;

/// Marks a filled slot of the interface-to-affinity table (affinities use bits 0..40).
const SLOT_VALID: u64 = 1 << 63;

register_bitfields! {u32,
    /// Distributor type register.
    GICD_TYPER [
        IT_LINES_NUMBER OFFSET(0) NUMBITS(5) [],
        CPU_NUMBER OFFSET(5) NUMBITS(3) [],
        SECURITY_EXTN OFFSET(10) NUMBITS(1) []
    ],

    /// Software generated interrupt register.
    GICD_SGIR [
        SGIINTID OFFSET(0) NUMBITS(4) [],
        NSATT OFFSET(15) NUMBITS(1) [],
        CPU_TARGET_LIST OFFSET(16) NUMBITS(8) [],
        TARGET_LIST_FILTER OFFSET(24) NUMBITS(2) [
            TargetList = 0,
            AllOthers = 1,
            OnlySelf = 2
        ]
    ],

    /// Interrupt acknowledge / end of interrupt register.
    GICC_IAR [
        INTERRUPT_ID OFFSET(0) NUMBITS(10) [],
        CPUID OFFSET(10) NUMBITS(3) []
    ]
}

register_structs! {
    DistributorRegs {
        (0x000 => ctlr: ReadWrite<u32>),
        (0x004 => typer: ReadOnly<u32, GICD_TYPER::Register>),
        (0x008 => _reserved0),
        (0x080 => igroupr: [ReadWrite<u32>; 32]),
        (0x100 => isenabler: [ReadWrite<u32>; 32]),
        (0x180 => icenabler: [ReadWrite<u32>; 32]),
        (0x200 => _reserved1),
        (0x280 => icpendr: [ReadWrite<u32>; 32]),
        (0x300 => _reserved2),
        (0x380 => icactiver: [ReadWrite<u32>; 32]),
        (0x400 => ipriorityr: [ReadWrite<u8>; 1020]),
        (0x7fc => _reserved3),
        (0x800 => itargetsr: [ReadWrite<u8>; 1020]),
        (0xbfc => _reserved4),
        (0xc00 => icfgr: [ReadWrite<u32>; 64]),
        (0xd00 => _reserved5),
        (0xf00 => sgir: WriteOnly<u32, GICD_SGIR::Register>),
        (0xf04 => @END),
    },

    CpuInterfaceRegs {
        (0x000 => ctlr: ReadWrite<u32>),
        (0x004 => pmr: ReadWrite<u32>),
        (0x008 => bpr: ReadWrite<u32>),
        (0x00c => iar: ReadOnly<u32, GICC_IAR::Register>),
        (0x010 => eoir: WriteOnly<u32, GICC_IAR::Register>),
        (0x014 => @END),
    }
}

/// GICD_CTLR / GICC_CTLR bits in the full (Secure or single-security) view.
mod full_view {
    /// Enables forwarding/signalling of Group 1 interrupts.
    pub const ENABLE_GRP1: u32 = 1 << 1;
    /// Lets `GICC_IAR` acknowledge Group 1 interrupts.
    pub const ACK_CTL: u32 = 1 << 2;
    /// Makes `GICC_BPR` govern Group 1 preemption too.
    pub const CBPR: u32 = 1 << 4;
}

/// GICD_CTLR / GICC_CTLR bits in the Non-secure view.
mod ns_view {
    /// Enables forwarding/signalling of (Non-secure) Group 1 interrupts.
    pub const ENABLE_GRP1: u32 = 1 << 0;
}

/// Values of [`GicV2::view`].
const VIEW_UNKNOWN: u8 = 0;
const VIEW_NON_SECURE: u8 = 1;
const VIEW_FULL: u8 = 2;
const VIEW_FULL_SECURE: u8 = 3;

/// A GICv2 distributor and CPU interface at mapped virtual addresses.
pub struct GicV2 {
    gicd: usize,
    gicc: usize,
    /// Which register view this kernel sees, found by `init_distributor`.
    view: AtomicU8,
    /// Affinity (with [`SLOT_VALID`]) of the CPU behind each CPU interface number.
    interface_affinity: [AtomicU64; MAX_CPU_INTERFACES],
    /// Source CPU interface of each SGI being handled, per receiving CPU interface. One
    /// slot per SGI ID suffices: all SGIs share one priority, so an SGI never preempts
    /// another on the same CPU.
    sgi_source: [[AtomicU8; SGI_COUNT as usize]; MAX_CPU_INTERFACES],
    /// Serialises read-modify-write of `GICD_ICFGRn`, which packs 16 interrupts per word.
    config_lock: IrqMutex<()>,
}

impl GicV2 {
    /// Creates a driver for the GICv2 whose distributor is mapped at `gicd` and whose CPU
    /// interface is mapped at `gicc`. Touches no hardware.
    ///
    /// # Safety
    ///
    /// `gicd` must map the 4 KiB distributor and `gicc` the 8 KiB CPU interface as Device
    /// memory for as long as the driver is used, and no other code may program this GIC.
    pub const unsafe fn new(gicd: usize, gicc: usize) -> Self {
        Self {
            gicd,
            gicc,
            view: AtomicU8::new(VIEW_UNKNOWN),
            interface_affinity: [const { AtomicU64::new(0) }; MAX_CPU_INTERFACES],
            sgi_source: [const { [const { AtomicU8::new(0) }; SGI_COUNT as usize] };
                MAX_CPU_INTERFACES],
            config_lock: IrqMutex::new(()),
        }
    }

    fn gicd(&self) -> &DistributorRegs {
        // SAFETY: `new`'s contract guarantees `gicd` maps the distributor for the driver's
        // lifetime; every access goes through volatile MMIO cells.
        unsafe { &*(self.gicd as *const DistributorRegs) }
    }

    fn gicc(&self) -> &CpuInterfaceRegs {
        // SAFETY: `new`'s contract guarantees `gicc` maps the CPU interface for the
        // driver's lifetime; every access goes through volatile MMIO cells.
        unsafe { &*(self.gicc as *const CpuInterfaceRegs) }
    }

    /// Interrupt IDs this distributor implements.
    fn lines(&self) -> u32 {
        lines_from_typer(self.gicd().typer.get())
    }

    /// Finds which security view the calling CPU has of the GIC, leaving its banked SGIs
    /// and PPIs in Group 1 where groups are writable.
    fn probe_view(&self) -> u8 {
        let d = self.gicd();
        d.igroupr[0].set(u32::MAX);
        if d.igroupr[0].get() == 0 {
            VIEW_NON_SECURE
        } else if d.typer.is_set(GICD_TYPER::SECURITY_EXTN) {
            VIEW_FULL_SECURE
        } else {
            VIEW_FULL
        }
    }

    /// The calling CPU's interface number, from the banked `GICD_ITARGETSR0` byte that
    /// reads back as the caller's own target mask (zero on a uniprocessor GIC).
    fn this_interface(&self) -> usize {
        let mask = self.gicd().itargetsr[0].get();
        if mask == 0 {
            0
        } else {
            mask.trailing_zeros() as usize
        }
    }

    /// Target list bit for the CPU with `affinity`, from the table `init_cpu` fills.
    ///
    /// Falls back to Aff0 as the interface number (true on QEMU `virt` and the Pi 4) for a
    /// CPU that has not run `init_cpu` yet.
    fn target_mask_for(&self, affinity: u64) -> Option<u8> {
        let wanted = affinity | SLOT_VALID;
        if let Some(i) = self
            .interface_affinity
            .iter()
            .position(|slot| slot.load(Ordering::Acquire) == wanted)
        {
            return Some(1 << i);
        }
        if affinity < MAX_CPU_INTERFACES as u64 {
            Some(1 << affinity)
        } else {
            None
        }
    }
}

impl InterruptController for GicV2 {
    fn init_distributor(&self) {
        let d = self.gicd();
        let view = self.probe_view();
        self.view.store(view, Ordering::Release);

        d.ctlr.set(0);

        let lines = self.lines();
        let spi_words = (SPI_BASE / 32) as usize..(lines.div_ceil(32)) as usize;
        for word in spi_words {
            d.icenabler[word].set(u32::MAX);
            d.icpendr[word].set(u32::MAX);
            d.icactiver[word].set(u32::MAX);
            if view != VIEW_NON_SECURE {
                d.igroupr[word].set(u32::MAX);
            }
        }

        // Every SPI goes to the boot CPU; the banked SGI 0 target byte is its own mask.
        let boot_mask = d.itargetsr[0].get();
        for intid in SPI_BASE..lines {
            d.ipriorityr[intid as usize].set(DEFAULT_PRIORITY);
            d.itargetsr[intid as usize].set(boot_mask);
        }
        for word in (SPI_BASE / 16) as usize..(lines.div_ceil(16)) as usize {
            d.icfgr[word].set(0);
        }

        d.ctlr.set(match view {
            VIEW_NON_SECURE => ns_view::ENABLE_GRP1,
            _ => full_view::ENABLE_GRP1,
        });
    }

    fn init_cpu(&self) {
        let d = self.gicd();
        let view = self.probe_view();

        let interface = self.this_interface();
        self.interface_affinity[interface]
            .store(current_affinity() | SLOT_VALID, Ordering::Release);

        d.icactiver[0].set(u32::MAX);
        d.icenabler[0].set(0xffff_0000);
        d.isenabler[0].set(0x0000_ffff);
        for intid in 0..SPI_BASE {
            d.ipriorityr[intid as usize].set(DEFAULT_PRIORITY);
        }

        let c = self.gicc();
        c.pmr.set(u32::from(PRIORITY_MASK_OPEN));
        c.bpr.set(0);
        c.ctlr.set(match view {
            VIEW_NON_SECURE => ns_view::ENABLE_GRP1,
            _ => full_view::ENABLE_GRP1 | full_view::ACK_CTL | full_view::CBPR,
        });
    }

    fn cpu_interface_ready(&self) -> bool {
        let enable = match self.view.load(Ordering::Acquire) {
            VIEW_UNKNOWN => return false,
            VIEW_NON_SECURE => ns_view::ENABLE_GRP1,
            _ => full_view::ENABLE_GRP1,
        };
        self.gicc().ctlr.get() & enable != 0
    }

    fn enable(&self, intid: u32) {
        if intid < self.lines() {
            self.gicd().isenabler[(intid / 32) as usize].set(1 << (intid % 32));
        }
    }

    fn disable(&self, intid: u32) {
        if intid < self.lines() {
            self.gicd().icenabler[(intid / 32) as usize].set(1 << (intid % 32));
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
        // Changing the trigger of an enabled interrupt is UNPREDICTABLE (GICv2 4.3.13).
        let was_enabled = d.isenabler[word].get() & bit != 0;
        if was_enabled {
            d.icenabler[word].set(bit);
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
        let iar = self.gicc().iar.extract();
        let intid = iar.read(GICC_IAR::INTERRUPT_ID);
        if is_special(intid) {
            return None;
        }
        if intid < SGI_COUNT {
            self.sgi_source[self.this_interface()][intid as usize]
                .store(iar.read(GICC_IAR::CPUID) as u8, Ordering::Relaxed);
        }
        Some(intid)
    }

    fn end_of_interrupt(&self, intid: u32) {
        // GICv2 has no LPIs: anything from the special IDs up was never acknowledged.
        if intid >= SPECIAL_INTID_FIRST {
            return;
        }
        let source = if intid < SGI_COUNT {
            u32::from(
                self.sgi_source[self.this_interface()][intid as usize].load(Ordering::Relaxed),
            )
        } else {
            0
        };
        self.gicc()
            .eoir
            .write(GICC_IAR::INTERRUPT_ID.val(intid) + GICC_IAR::CPUID.val(source));
    }

    fn send_sgi(&self, sgi: u32, target: SgiTarget) {
        if sgi >= SGI_COUNT {
            return;
        }
        let filter = match target {
            SgiTarget::AllOthers => {
                GICD_SGIR::TARGET_LIST_FILTER::AllOthers + GICD_SGIR::CPU_TARGET_LIST.val(0)
            }
            SgiTarget::Cpu(mpidr) => match self.target_mask_for(affinity_of(mpidr)) {
                Some(mask) => {
                    GICD_SGIR::TARGET_LIST_FILTER::TargetList
                        + GICD_SGIR::CPU_TARGET_LIST.val(u32::from(mask))
                }
                None => return,
            },
        };
        // Secure writes must say which group the SGI belongs to; ours are all Group 1.
        let nsatt = u32::from(self.view.load(Ordering::Acquire) == VIEW_FULL_SECURE);

        // The target's handler must see everything written before the SGI was raised.
        crate::drivers::dsb_ishst();
        self.gicd()
            .sgir
            .write(filter + GICD_SGIR::SGIINTID.val(sgi) + GICD_SGIR::NSATT.val(nsatt));
    }

    fn version(&self) -> u8 {
        2
    }
}

#[cfg(test)]
mod tests;
