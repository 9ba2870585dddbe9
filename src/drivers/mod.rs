//! Device drivers: the PL011 UART and the GIC (v2 and v3) interrupt controllers.
//!
//! Drivers own their MMIO register blocks and nothing else; they are handed virtual
//! addresses already mapped by `mm` and know nothing of the board they run on.
pub mod gic;
pub mod pl011;
