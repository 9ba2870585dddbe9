//! Board code: what the device tree does not say. One module per board; the build picks one
//! with a cargo feature (`board-rpi3`, `board-rpi4`; neither: QEMU `virt`), which the
//! Makefile's `BOARD=virt|rpi3|rpi4` sets, and a port touches only its own module (plus its
//! line here and its feature in `Cargo.toml`).
//!
//! Every board module is compiled (so each is linted and unit-tested in every build); the
//! selected one is re-exported. Each provides the same items:
//!
//! - `NAME`: the board, for the boot banner;
//! - `dtb_fallback_pa()`: where the device tree is when the loader passed none (QEMU
//!   `virt`: where QEMU puts it; a Pi: the board's built-in description inside the image,
//!   whose `model` says so in the banner);
//! - `BUILTIN_DTB`: that built-in description, if the board has one;
//! - `EARLY_UART_PA`: a PL011 for reporting a boot failure before the DTB is understood.
//!
//! Everything else — memory, CPUs and how to start them, the UART, the interrupt
//! controller, the timer — comes from the device tree. Calls only `mm::kspace` (the
//! physical address of the image). Builds for the host too, where the unit tests check each
//! built-in description against the board's real tree.

#[cfg(all(feature = "board-rpi3", feature = "board-rpi4"))]
compile_error!("select at most one board feature: board-rpi3 or board-rpi4");

pub mod rpi3;
pub mod rpi4;
pub mod virt;

#[cfg(feature = "board-rpi3")]
pub use rpi3::*;
#[cfg(feature = "board-rpi4")]
pub use rpi4::*;
#[cfg(not(any(feature = "board-rpi3", feature = "board-rpi4")))]
pub use virt::*;

/// A device tree blob embedded in the kernel image, aligned as the format requires.
#[repr(C, align(8))]
pub struct Blob<const N: usize>(pub [u8; N]);

/// The physical address of a blob embedded in the kernel image (the image is mapped at
/// its link address, wherever it was loaded).
#[cfg(target_os = "none")]
fn image_pa_of(blob: &'static [u8]) -> u64 {
    crate::mm::kspace::image_va_to_pa(blob.as_ptr() as u64)
}
