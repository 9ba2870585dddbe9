//! QEMU `virt`: the default board.
//!
//! QEMU builds the device tree from its command line, so this board needs no description of
//! its own.

/// Board name for the boot banner.
pub const NAME: &str = "QEMU virt";

/// With an ELF `-kernel`, QEMU passes no DTB pointer but puts the DTB at the start of RAM.
pub const DTB_FALLBACK_PA: u64 = 0x4000_0000;

/// No built-in description: QEMU always has a tree.
pub static BUILTIN_DTB: Option<&[u8]> = None;

/// The PL011 QEMU always has, for a boot failure reported before the DTB is understood.
pub const EARLY_UART_PA: u64 = 0x0900_0000;

/// Where the device tree is when the loader passed none.
pub fn dtb_fallback_pa() -> u64 {
    DTB_FALLBACK_PA
}
