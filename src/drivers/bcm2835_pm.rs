//! The BCM2835 power-management block's watchdog (Raspberry Pi 3 and 4), used to power the
//! machine off where there is no PSCI: the same "halt" Linux's `bcm2835-wdt` does. The reset
//! status register is given the Pi firmware's "halt" partition (63), then the watchdog is
//! fired; the firmware (and QEMU) stop instead of restarting.
//!
//! Owns only the register block it is handed (mapped by the caller); calls nothing.
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::ReadWrite;

register_structs! {
    /// The registers used, from the block's base.
    Regs {
        (0x00 => _reserved0),
        (0x1c => rstc: ReadWrite<u32>),
        (0x20 => rsts: ReadWrite<u32>),
        (0x24 => wdog: ReadWrite<u32>),
        (0x28 => @END),
    }
}

/// Every write must carry this in its top byte.
const PASSWORD: u32 = 0x5a00_0000;
/// RSTS bits naming partition 63, which the firmware reads as "halt".
const RSTS_HALT: u32 = 0x555;
/// RSTC: the watchdog-reset configuration field, and "full reset" in it.
const RSTC_WRCFG_CLR: u32 = 0xffff_ffcf;
const RSTC_WRCFG_FULL_RESET: u32 = 0x0000_0020;
/// Ticks (of 16 µs) before the watchdog fires.
const WDOG_TICKS: u32 = 10;

/// The power-management block at a mapped virtual address.
pub struct Bcm2835Pm {
    base: usize,
}

impl Bcm2835Pm {
    /// # Safety
    /// `base` must map the block's registers (at least 0x28 bytes) as device memory for as
    /// long as this value is used.
    pub const unsafe fn new(base: usize) -> Self {
        Self { base }
    }

    fn regs(&self) -> &Regs {
        // SAFETY: `new`'s contract: the registers are mapped; accesses are volatile cells.
        unsafe { &*(self.base as *const Regs) }
    }

    /// Asks for a halt (partition 63) and fires the watchdog. Returns if nothing happened,
    /// so the caller can try something else.
    pub fn power_off(&self) {
        let r = self.regs();
        r.rsts
            .set(PASSWORD | (r.rsts.get() & !PASSWORD & 0x00ff_ffff) | RSTS_HALT);
        r.wdog.set(PASSWORD | WDOG_TICKS);
        r.rstc
            .set(PASSWORD | (r.rstc.get() & RSTC_WRCFG_CLR & 0x00ff_ffff) | RSTC_WRCFG_FULL_RESET);
        // The watchdog fires within a few hundred microseconds.
        for _ in 0..10_000_000 {
            core::hint::spin_loop();
        }
    }
}
