//! Device drivers: the PL011 UART, the BCM2835 auxiliary mini UART, the GIC (v2 and v3)
//! interrupt controllers and the Raspberry Pi 3's BCM2836 local + BCM2835 peripheral
//! interrupt controllers.
//!
//! Drivers own their MMIO register blocks and nothing else; they are handed virtual
//! addresses already mapped by `mm` and know nothing of the board they run on.
#[cfg(test)]
mod fake;

pub mod bcm2835_aux;
pub mod bcm2835_pm;
pub mod bcm2836;
pub mod gic;
pub mod pl011;

/// The calling CPU's MPIDR affinity, for the drivers that route by CPU. In the host tests,
/// which run the drivers against fake register blocks, every caller is CPU 0.
fn current_affinity() -> u64 {
    #[cfg(target_os = "none")]
    return crate::arch::aarch64::mpidr_affinity();
    #[cfg(not(target_os = "none"))]
    return 0;
}

/// `DSB ISHST` before raising an SGI, so the target's handler sees every earlier store. In
/// the host tests a fence stands in for it.
fn dsb_ishst() {
    #[cfg(target_os = "none")]
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ISHST);
    #[cfg(not(target_os = "none"))]
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}
