//! The Arm Generic Interrupt Controller: the interface the kernel programs interrupts
//! through, and its two implementations, GICv2 ([`v2::GicV2`], QEMU `virt` with
//! `gic-version=2`, the Pi 4's GIC-400) and GICv3 ([`v3::GicV3`], QEMU `virt`'s default).
//!
//! This module owns the [`InterruptController`] trait, the [`SgiTarget`] type and the
//! helpers both versions share (priorities, MPIDR affinity, bounded polling). The drivers
//! are handed already-mapped virtual addresses; they do not map memory or know the board.
//! They call only `tock-registers` (MMIO) and `aarch64-cpu` (system registers, barriers).
//!
//! Interrupts are configured as Group 1 (Non-secure, where the GIC has a Secure side) and
//! signalled as IRQs, all at one priority, so handlers never preempt one another.

pub mod v2;
pub mod v3;

/// Lowest interrupt ID of a Shared Peripheral Interrupt; 0..16 are SGIs, 16..32 PPIs.
pub const SPI_BASE: u32 = 32;

/// Number of Software Generated Interrupt IDs (0..16).
pub const SGI_COUNT: u32 = 16;

/// First of the special interrupt IDs (1020..=1023) an acknowledge returns for "nothing".
const SPECIAL_INTID_FIRST: u32 = 1020;

/// Priority given to every interrupt: the middle of the range, as Linux uses, so the mask
/// can be opened fully above it on both security views of the priority field.
const DEFAULT_PRIORITY: u8 = 0xa0;

/// Priority mask that lets every priority through.
const PRIORITY_MASK_OPEN: u8 = 0xff;

/// Polls of a "write pending" or "asleep" bit before a wait is abandoned, so a GIC that
/// never answers cannot hang boot (QEMU answers at once, hardware within microseconds).
/// Only GICv3 waits.
const SPIN_LIMIT: u32 = 1_000_000;

use crate::arch::aarch64::MPIDR_AFFINITY_MASK;

/// Where a Software Generated Interrupt is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SgiTarget {
    /// Every CPU except the sender.
    AllOthers,
    /// The one CPU with this MPIDR affinity (`MPIDR_EL1` value; bits other than
    /// Aff3..Aff0 are ignored).
    Cpu(u64),
}

/// What the kernel needs from an interrupt controller.
///
/// `init_distributor` runs once on the boot CPU before any other method; `init_cpu` then
/// runs on every CPU (boot CPU included) before that CPU unmasks IRQs. SGIs are enabled by
/// `init_cpu`; PPIs and SPIs stay disabled until [`InterruptController::enable`]. PPI and
/// SGI configuration is per CPU, so enabling a PPI affects only the calling CPU.
///
/// Out-of-range interrupt IDs are ignored rather than reported: the IDs come from the
/// device tree, and one wrong entry must not bring the kernel down.
pub trait InterruptController: Send + Sync {
    /// Configures the distributor: every SPI disabled, not pending, level-triggered, at the
    /// default priority, in Group 1 and routed to the calling (boot) CPU; then enables it.
    fn init_distributor(&self);

    /// Configures the calling CPU's interface (and, on GICv3, its redistributor): SGIs
    /// enabled, PPIs disabled, default priorities, priority mask open, Group 1 enabled.
    /// Check [`InterruptController::cpu_interface_ready`] afterwards.
    fn init_cpu(&self);

    /// Whether the calling CPU's interface is set up and will signal Group 1 interrupts.
    ///
    /// False after `init_cpu` means this CPU gets no interrupts: on GICv3, no
    /// redistributor matches its MPIDR, or `ICC_SRE_EL1.SRE` did not stick (boot code at
    /// EL2 must leave `ICC_SRE_EL2.{Enable,SRE}` set).
    fn cpu_interface_ready(&self) -> bool;

    /// Enables forwarding of `intid` (an SGI or PPI on the calling CPU only, or an SPI).
    fn enable(&self, intid: u32);

    /// Disables forwarding of `intid` (an SGI or PPI on the calling CPU only, or an SPI).
    fn disable(&self, intid: u32);

    /// Makes SPI `intid` edge-triggered (`true`) or level-sensitive (`false`); SGIs and
    /// PPIs have fixed or per-CPU configuration and are left alone.
    fn set_edge_triggered(&self, intid: u32, edge: bool);

    /// Acknowledges the highest-priority pending interrupt and returns its ID, or `None`
    /// when there is none (a spurious ID, 1020..=1023). Every `Some` must be followed by
    /// [`InterruptController::end_of_interrupt`] with the same ID on the same CPU.
    fn acknowledge(&self) -> Option<u32>;

    /// Signals the end of handling `intid` (priority drop and deactivation).
    fn end_of_interrupt(&self, intid: u32);

    /// Sends SGI `sgi` (0..16) to `target`. Memory writes made before the call are
    /// visible to the target's handler.
    fn send_sgi(&self, sgi: u32, target: SgiTarget);

    /// The GIC architecture version: 2, 3 or 4; 0 for a controller that is not a GIC.
    fn version(&self) -> u8;
}

/// The calling CPU's affinity, `MPIDR_EL1` reduced to Aff3..Aff0 in their MPIDR positions.
fn current_affinity() -> u64 {
    super::current_affinity()
}

/// Reduces an `MPIDR_EL1` value to its affinity fields.
fn affinity_of(mpidr: u64) -> u64 {
    mpidr & MPIDR_AFFINITY_MASK
}

/// Whether `intid` is one of the special "no interrupt" IDs 1020..=1023.
fn is_special(intid: u32) -> bool {
    (SPECIAL_INTID_FIRST..SPECIAL_INTID_FIRST + 4).contains(&intid)
}

/// Polls `busy` until it returns false or the spin bound runs out.
fn wait_while(mut busy: impl FnMut() -> bool) {
    for _ in 0..SPIN_LIMIT {
        if !busy() {
            return;
        }
        core::hint::spin_loop();
    }
}

/// Number of interrupt IDs the distributor implements, from `GICD_TYPER.ITLinesNumber`,
/// capped below the special IDs.
fn lines_from_typer(typer: u32) -> u32 {
    (32 * ((typer & 0x1f) + 1)).min(SPECIAL_INTID_FIRST)
}
