//! Device drivers: the PL011 UART, the BCM2835 auxiliary mini UART, the GIC (v2 and v3)
//! interrupt controllers and the Raspberry Pi 3's BCM2836 local + BCM2835 peripheral
//! interrupt controllers.
//!
//! Drivers own their MMIO register blocks and nothing else; they are handed virtual
//! addresses already mapped by `mm` and know nothing of the board they run on.
pub mod bcm2835_aux;
pub mod bcm2835_pm;
pub mod bcm2836;
pub mod gic;
pub mod pl011;
