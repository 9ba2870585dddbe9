//! Board code: what the device tree does not say. One module per board; the build picks one
//! (`BOARD=virt|rpi3|rpi4`), and a port touches only its own module.
//!
//! Each board provides the same constants: where to look for a DTB when the loader passed
//! none, and an early UART for reporting a boot failure before the DTB is understood.
//! Calls nothing.
pub mod virt;
pub use virt::*;
