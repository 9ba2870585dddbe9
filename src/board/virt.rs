//! QEMU `virt`.

/// Board name for the boot banner.
pub const NAME: &str = "QEMU virt";
/// With an ELF `-kernel`, QEMU passes no DTB pointer but puts the DTB at the start of RAM.
pub const DTB_FALLBACK_PA: u64 = 0x4000_0000;
/// The PL011 QEMU always has, for a boot failure reported before the DTB is understood.
pub const EARLY_UART_PA: u64 = 0x0900_0000;
