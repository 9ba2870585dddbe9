//! Raspberry Pi 3 Model B / B+ (BCM2837, four Cortex-A53), on the Pi firmware or QEMU
//! `raspi3b`.
//!
//! The firmware loads `kernel8.img` at 0x80000, enters every core at EL2, passes its device
//! tree in `x0` and parks the secondaries on the spin table (0xd8, 0xe0, 0xe8, 0xf0); the
//! kernel learns all of that from the tree. What is left for this module: the banner name,
//! a built-in description for a boot without a tree (`rpi3.dts`, compiled to `rpi3.dtb` by
//! `make board-dtbs`), and the PL011 to report an early failure on.

use super::Blob;

/// Board name for the boot banner.
pub const NAME: &str = "Raspberry Pi 3";

static DTB: Blob<{ include_bytes!("rpi3.dtb").len() }> = Blob(*include_bytes!("rpi3.dtb"));

/// The built-in description (`src/board/rpi3.dts`).
pub static BUILTIN_DTB: Option<&[u8]> = Some(&DTB.0);

/// UART0, the PL011, for a boot failure reported before the DTB is understood.
pub const EARLY_UART_PA: u64 = 0x3f20_1000;

/// Where the device tree is when the loader passed none: the built-in description, inside
/// the kernel image. Needs `mm::kspace::init` first.
#[cfg(target_os = "none")]
pub fn dtb_fallback_pa() -> u64 {
    super::image_pa_of(&DTB.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtb::{self, EnableMethod, InterruptController, Region, UartKind};
    use alloc::vec::Vec;

    fn region(base: u64, size: u64) -> Region {
        Region { base, size }
    }

    /// The built-in tree says what the firmware's says, in the same bindings, with memory
    /// and the console filled in.
    #[test]
    fn builtin_description() {
        let blob = BUILTIN_DTB.unwrap();
        assert_eq!(blob.as_ptr() as usize % 8, 0);
        assert_eq!(dtb::total_size(&blob[..40]), Ok(blob.len()));
        let m = dtb::parse(blob).unwrap();
        assert!(
            m.model.starts_with("Raspberry Pi 3 [dynstack built-in"),
            "{}",
            m.model
        );
        assert!(m.model.contains("no device tree"), "{}", m.model);
        assert_eq!(m.memory, [region(0, 0x3b40_0000)]);
        assert_eq!(m.reserved, [region(0, 0x1000)]);
        let uart = m.uart.unwrap();
        assert_eq!(uart.region, region(EARLY_UART_PA, 0x200));
        assert_eq!(uart.kind, UartKind::Pl011);
        let irq = uart.irq.unwrap();
        assert_eq!((irq.count, irq.cells[0], irq.cells[1]), (2, 2, 25));
        assert_eq!(
            m.interrupt_controller,
            Some(InterruptController::Bcm2836 {
                local: region(0x4000_0000, 0x100),
                peripheral: Some(region(0x3f00_b200, 0x200)),
            })
        );
        assert_eq!(m.psci, None);
        let cpus: Vec<_> = m.cpus.iter().map(|c| (c.mpidr, c.enable)).collect();
        let expected: Vec<_> = [0xd8, 0xe0, 0xe8, 0xf0]
            .into_iter()
            .enumerate()
            .map(|(i, a)| (i as u64, EnableMethod::SpinTable { release_addr: a }))
            .collect();
        assert_eq!(cpus, expected);
        let virtual_timer = m.timer.unwrap().interrupts[2];
        assert_eq!((virtual_timer.count, virtual_timer.cells[0]), (2, 3));
        assert_eq!(m.bootargs, None);
    }

    /// What the built-in tree and Linux's tree for the board (data/dtb) agree on.
    #[test]
    fn agrees_with_the_real_tree() {
        let real = dtb::parse(include_bytes!("../../data/dtb/bcm2837-rpi-3-b.dtb")).unwrap();
        let ours = dtb::parse(BUILTIN_DTB.unwrap()).unwrap();
        assert_eq!(ours.uart, real.uart);
        assert_eq!(ours.interrupt_controller, real.interrupt_controller);
        assert_eq!(ours.timer, real.timer);
        assert_eq!(ours.cpus, real.cpus);
        assert_eq!(ours.reserved, real.reserved);
        assert_eq!(ours.psci, real.psci);
    }
}
