//! The Raspberry Pi 2/3 interrupt controllers: the BCM2836/7 per-core "local" controller
//! (`brcm,bcm2836-l1-intc`, the ARM Quad-A7 control block at 0x4000_0000) and the BCM2835
//! peripheral controller behind it (`brcm,bcm2836-armctrl-ic`, "armctrl", at 0x3f00_b200 on
//! the Pi 3), driven together as one [`InterruptController`].
//!
//! Owns both register blocks at the mapped addresses it is given, and a copy of the
//! peripheral enable masks (so an interrupt that is pending but disabled is never
//! acknowledged). Calls `tock-registers` (MMIO) and `aarch64-cpu` (MPIDR, barriers); it
//! implements the `drivers::gic` trait so `irq` needs no change.
//!
//! How the hardware is wired. Each core's generic-timer outputs, its four mailboxes and the
//! PMU go to the local controller, which shows them per core in an IRQ source register. The
//! peripherals (the PL011 among them) go to armctrl, whose single output reaches the local
//! controller as the "GPU interrupt" of the one core it is routed to. There are no
//! priorities, no active state and nothing to acknowledge: a source stays pending until its
//! device is serviced, and mailbox bits until they are written back.
//!
//! Interrupt IDs, chosen to line up with a GIC's so `irq` can treat both alike:
//!
//! | ID | source |
//! |---|---|
//! | 0..16 | SGI *n*: bit *n* of the target core's mailbox 0 ([`SGI_COUNT`] of them) |
//! | 16..32 | local source *n* = ID − 16, the device tree's `brcm,bcm2836-l1-intc` number: 16 CNTPS, 17 CNTPNS, 18 CNTHP, 19 CNTV (the virtual timer), 25 PMU |
//! | 32..96 | GPU (VideoCore) peripheral IRQ *n* = ID − 32: armctrl bank 1 bit *n*, bank 2 bit *n* − 32 (the PL011 is bank 2 bit 25, GPU IRQ 57, ID 89) |
//! | 96..104 | armctrl bank 0 ("basic", ARM-side) bit *n* = ID − 96 |
//!
//! [`local_intid`] and [`peripheral_intid`] turn device-tree specifiers into these IDs.
//! Everything outside the table is ignored, as the trait asks.

use core::sync::atomic::{AtomicU32, Ordering};

use tock_registers::{
    interfaces::{Readable, Writeable},
    register_structs,
    registers::{ReadOnly, ReadWrite, WriteOnly},
};

use super::gic::{InterruptController, SgiTarget, SGI_COUNT};

/// Cores the local controller serves.
const CORES: usize = 4;

use crate::arch::aarch64::MPIDR_AFFINITY_MASK;

/// First ID of the local sources (the generic timers, mailboxes, GPU cascade, PMU).
pub const LOCAL_BASE: u32 = 16;
/// First ID of the GPU peripheral IRQs (armctrl banks 1 and 2).
pub const GPU_BASE: u32 = 32;
/// GPU peripheral IRQs (two banks of 32).
const GPU_IRQS: u32 = 64;
/// First ID of armctrl's ARM-side "basic" IRQs (bank 0).
pub const BASIC_BASE: u32 = GPU_BASE + GPU_IRQS;
/// Usable "basic" IRQs: bits 0..8 of bank 0 (the ARM timer, mailbox, doorbells, illegal
/// access); its higher bits only summarise banks 1 and 2.
const BASIC_IRQS: u32 = 8;
/// One past the last ID.
const BASIC_END: u32 = BASIC_BASE + BASIC_IRQS;

/// Local source numbers, which are also the bits of a core's IRQ source register.
mod source {
    /// Secure physical timer.
    pub const CNTPS: u32 = 0;
    /// Virtual timer: the highest of the four timer sources.
    pub const CNTV: u32 = 3;
    /// Mailbox 0, which carries the SGIs.
    pub const MAILBOX0: u32 = 4;
    /// The armctrl output, on the core it is routed to.
    pub const GPU: u32 = 8;
    /// Performance monitor.
    pub const PMU: u32 = 9;
}

/// The ID the kernel's generic timer (the EL1 virtual timer) raises through this controller.
pub const VIRTUAL_TIMER_INTID: u32 = LOCAL_BASE + source::CNTV;

register_structs! {
    /// The local controller (ARM Quad-A7 control, QA7_rev3.4), 256 bytes.
    LocalRegs {
        /// Control and the core timer prescaler: the firmware's, left alone.
        (0x00 => _reserved0),
        /// GPU interrupt routing: bits 0..2 the core that gets the IRQ, 2..4 the FIQ.
        (0x0c => gpu_routing: ReadWrite<u32>),
        /// PMU interrupt routing, set and clear: bit n routes core n's PMU to its IRQ.
        (0x10 => pmu_route_set: WriteOnly<u32>),
        (0x14 => pmu_route_clear: WriteOnly<u32>),
        (0x18 => _reserved1),
        /// Per core: bits 0..4 route the four timer sources to IRQ, 4..8 to FIQ.
        (0x40 => timer_control: [ReadWrite<u32>; CORES]),
        /// Per core: bits 0..4 route the four mailboxes to IRQ, 4..8 to FIQ.
        (0x50 => mailbox_control: [ReadWrite<u32>; CORES]),
        /// Per core: pending IRQ sources (bits as in `source`).
        (0x60 => irq_source: [ReadOnly<u32>; CORES]),
        /// Per core: pending FIQ sources (unused: everything is routed to IRQ).
        (0x70 => _reserved2),
        /// Core n mailbox m at [4n + m]: writing sets bits.
        (0x80 => mailbox_set: [WriteOnly<u32>; 4 * CORES]),
        /// Core n mailbox m at [4n + m]: reads the bits, writing ones clears them.
        (0xc0 => mailbox_clear: [ReadWrite<u32>; 4 * CORES]),
        (0x100 => @END),
    },

    /// The BCM2835 peripheral interrupt controller ("armctrl", BCM2835 ARM Peripherals 7.5).
    PeripheralRegs {
        (0x00 => basic_pending: ReadOnly<u32>),
        (0x04 => pending: [ReadOnly<u32>; 2]),
        (0x0c => fiq_control: ReadWrite<u32>),
        /// Writing ones enables (banks 1 and 2).
        (0x10 => enable: [ReadWrite<u32>; 2]),
        (0x18 => enable_basic: ReadWrite<u32>),
        /// Writing ones disables (banks 1 and 2).
        (0x1c => disable: [ReadWrite<u32>; 2]),
        (0x24 => disable_basic: ReadWrite<u32>),
        (0x28 => @END),
    }
}

/// Bytes of the local controller's register block.
pub const LOCAL_SIZE: u64 = 0x100;
/// Bytes of the peripheral controller's register block.
pub const PERIPHERAL_SIZE: u64 = 0x28;

/// The interrupt ID of a `brcm,bcm2836-l1-intc` specifier's first cell (the local source
/// number: 0..4 the timers, 9 the PMU), or `None` if it is not one this driver forwards.
pub fn local_intid(source_number: u32) -> Option<u32> {
    (source_number <= source::CNTV || source_number == source::PMU)
        .then_some(LOCAL_BASE + source_number)
}

/// The interrupt ID of a `brcm,bcm2836-armctrl-ic` specifier `<bank bit>`: bank 0 the
/// ARM-side basic IRQs, banks 1 and 2 the GPU IRQs 0..32 and 32..64; `None` if out of range.
pub fn peripheral_intid(bank: u32, bit: u32) -> Option<u32> {
    match bank {
        0 if bit < BASIC_IRQS => Some(BASIC_BASE + bit),
        1 | 2 if bit < 32 => Some(GPU_BASE + 32 * (bank - 1) + bit),
        _ => None,
    }
}

/// What an interrupt ID names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    Sgi(u32),
    Timer(u32),
    Pmu,
    /// Bank index into the `enable`/`disable`/`pending` arrays (0 or 1, i.e. armctrl
    /// banks 1 and 2), and the bit.
    Gpu(usize, u32),
    Basic(u32),
}

/// What `intid` names; `None` outside the table in the module documentation.
fn line(intid: u32) -> Option<Line> {
    match intid {
        0..SGI_COUNT => Some(Line::Sgi(intid)),
        LOCAL_BASE..GPU_BASE => match intid - LOCAL_BASE {
            n @ source::CNTPS..=source::CNTV => Some(Line::Timer(n)),
            source::PMU => Some(Line::Pmu),
            _ => None,
        },
        GPU_BASE..BASIC_BASE => {
            let n = intid - GPU_BASE;
            Some(Line::Gpu((n / 32) as usize, n % 32))
        }
        BASIC_BASE..BASIC_END => Some(Line::Basic(intid - BASIC_BASE)),
        _ => None,
    }
}

/// The core (0..4) with this MPIDR value: Aff0, with every other affinity field zero.
fn core_of(mpidr: u64) -> Option<usize> {
    let affinity = mpidr & MPIDR_AFFINITY_MASK;
    (affinity < CORES as u64).then_some(affinity as usize)
}

/// The BCM2836 local controller and, when the machine has one, the armctrl behind it.
pub struct Bcm2836 {
    local: usize,
    peripheral: Option<usize>,
    /// Enabled GPU IRQs, banks 1 and 2, as written to armctrl.
    gpu_enabled: [AtomicU32; 2],
    /// Enabled basic IRQs, as written to armctrl.
    basic_enabled: AtomicU32,
}

impl Bcm2836 {
    /// Creates a driver for the local controller mapped at `local` and the peripheral
    /// controller mapped at `peripheral` (if any). Touches no hardware.
    ///
    /// # Safety
    ///
    /// `local` must map [`LOCAL_SIZE`] bytes of the local controller and `peripheral`
    /// [`PERIPHERAL_SIZE`] bytes of armctrl, as Device memory, for as long as the driver is
    /// used, and no other code may program these controllers.
    pub const unsafe fn new(local: usize, peripheral: Option<usize>) -> Self {
        Self {
            local,
            peripheral,
            gpu_enabled: [const { AtomicU32::new(0) }; 2],
            basic_enabled: AtomicU32::new(0),
        }
    }

    fn local(&self) -> &LocalRegs {
        // SAFETY: `new`'s contract guarantees `local` maps the local controller for the
        // driver's lifetime; every access goes through volatile MMIO cells.
        unsafe { &*(self.local as *const LocalRegs) }
    }

    fn peripheral(&self) -> Option<&PeripheralRegs> {
        // SAFETY: `new`'s contract guarantees `peripheral` maps armctrl for the driver's
        // lifetime; every access goes through volatile MMIO cells.
        self.peripheral
            .map(|p| unsafe { &*(p as *const PeripheralRegs) })
    }

    /// The calling core's number, if the local controller serves it.
    fn this_core(&self) -> Option<usize> {
        core_of(super::current_affinity())
    }

    /// The lowest-numbered armctrl interrupt that is both pending and enabled.
    fn pending_peripheral(&self) -> Option<u32> {
        let p = self.peripheral()?;
        for bank in 0..2 {
            let pending = p.pending[bank].get() & self.gpu_enabled[bank].load(Ordering::Relaxed);
            if pending != 0 {
                return Some(GPU_BASE + 32 * bank as u32 + pending.trailing_zeros());
            }
        }
        let basic = p.basic_pending.get()
            & self.basic_enabled.load(Ordering::Relaxed)
            & ((1 << BASIC_IRQS) - 1);
        (basic != 0).then(|| BASIC_BASE + basic.trailing_zeros())
    }
}

impl InterruptController for Bcm2836 {
    /// Disables every peripheral interrupt and routes armctrl's output (and nothing else) to
    /// the calling core's IRQ. The timer prescaler the firmware set is left alone: it makes
    /// the generic timer's frequency.
    fn init_distributor(&self) {
        let l = self.local();
        if let Some(p) = self.peripheral() {
            p.fiq_control.set(0);
            p.disable[0].set(u32::MAX);
            p.disable[1].set(u32::MAX);
            p.disable_basic.set(u32::MAX);
        }
        for bank in &self.gpu_enabled {
            bank.store(0, Ordering::Relaxed);
        }
        self.basic_enabled.store(0, Ordering::Relaxed);
        l.pmu_route_clear.set(0xff);
        l.gpu_routing.set(self.this_core().unwrap_or(0) as u32);
    }

    /// Routes the calling core's mailbox 0 (its SGIs) to IRQ, clears its mailboxes, and
    /// stops its timers interrupting until [`InterruptController::enable`].
    fn init_cpu(&self) {
        let Some(core) = self.this_core() else { return };
        let l = self.local();
        l.timer_control[core].set(0);
        for m in 0..4 {
            l.mailbox_clear[4 * core + m].set(u32::MAX);
        }
        l.mailbox_control[core].set(1 << 0);
    }

    fn cpu_interface_ready(&self) -> bool {
        self.this_core()
            .is_some_and(|core| self.local().mailbox_control[core].get() & 1 != 0)
    }

    fn enable(&self, intid: u32) {
        let (Some(line), Some(core)) = (line(intid), self.this_core()) else {
            return;
        };
        let l = self.local();
        match line {
            // Mailbox 0 carries every SGI and is routed by init_cpu.
            Line::Sgi(_) => {}
            Line::Timer(n) => {
                let c = &l.timer_control[core];
                c.set(c.get() | 1 << n);
            }
            Line::Pmu => l.pmu_route_set.set(1 << core),
            Line::Gpu(bank, bit) => {
                if let Some(p) = self.peripheral() {
                    self.gpu_enabled[bank].fetch_or(1 << bit, Ordering::Relaxed);
                    p.enable[bank].set(1 << bit);
                }
            }
            Line::Basic(bit) => {
                if let Some(p) = self.peripheral() {
                    self.basic_enabled.fetch_or(1 << bit, Ordering::Relaxed);
                    p.enable_basic.set(1 << bit);
                }
            }
        }
    }

    fn disable(&self, intid: u32) {
        let (Some(line), Some(core)) = (line(intid), self.this_core()) else {
            return;
        };
        let l = self.local();
        match line {
            Line::Sgi(_) => {}
            Line::Timer(n) => {
                let c = &l.timer_control[core];
                c.set(c.get() & !(1 << n));
            }
            Line::Pmu => l.pmu_route_clear.set(1 << core),
            Line::Gpu(bank, bit) => {
                if let Some(p) = self.peripheral() {
                    p.disable[bank].set(1 << bit);
                    self.gpu_enabled[bank].fetch_and(!(1 << bit), Ordering::Relaxed);
                }
            }
            Line::Basic(bit) => {
                if let Some(p) = self.peripheral() {
                    p.disable_basic.set(1 << bit);
                    self.basic_enabled.fetch_and(!(1 << bit), Ordering::Relaxed);
                }
            }
        }
    }

    /// Nothing to do: every source here is level-sensitive with a fixed configuration.
    fn set_edge_triggered(&self, _intid: u32, _edge: bool) {}

    /// Returns the first pending source of the calling core, in this order: an SGI (whose
    /// mailbox bit it clears, so each SGI is taken once), a timer, a peripheral, the PMU.
    /// A level-sensitive source stays pending until its handler services the device.
    fn acknowledge(&self) -> Option<u32> {
        let core = self.this_core()?;
        let l = self.local();
        let pending = l.irq_source[core].get();
        if pending & 1 << source::MAILBOX0 != 0 {
            let mailbox = &l.mailbox_clear[4 * core];
            let bits = mailbox.get();
            let ours = bits & ((1 << SGI_COUNT) - 1);
            if ours != 0 {
                let sgi = ours.trailing_zeros();
                mailbox.set(1 << sgi);
                return Some(sgi);
            }
            // Bits no sender of this kernel sets: drop them so they cannot hold the IRQ.
            mailbox.set(bits);
        }
        let timers = pending & 0xf;
        if timers != 0 {
            return Some(LOCAL_BASE + timers.trailing_zeros());
        }
        if pending & 1 << source::GPU != 0 {
            if let Some(intid) = self.pending_peripheral() {
                return Some(intid);
            }
        }
        if pending & 1 << source::PMU != 0 {
            return Some(LOCAL_BASE + source::PMU);
        }
        None
    }

    /// Nothing to do: there is no active state to end (see [`Bcm2836::acknowledge`]).
    fn end_of_interrupt(&self, _intid: u32) {}

    fn send_sgi(&self, sgi: u32, target: SgiTarget) {
        if sgi >= SGI_COUNT {
            return;
        }
        let l = self.local();
        // The target's handler must see everything written before the SGI was raised.
        crate::drivers::dsb_ishst();
        match target {
            SgiTarget::Cpu(mpidr) => {
                if let Some(core) = core_of(mpidr) {
                    l.mailbox_set[4 * core].set(1 << sgi);
                }
            }
            SgiTarget::AllOthers => {
                let me = self.this_core();
                for core in (0..CORES).filter(|&c| Some(c) != me) {
                    l.mailbox_set[4 * core].set(1 << sgi);
                }
            }
        }
    }

    /// Not a GIC: 0.
    fn version(&self) -> u8 {
        0
    }
}

#[cfg(test)]
mod tests;
