//! AArch64: boot entry, exception vectors, trap frames, system registers, TLB maintenance.
core::arch::global_asm!(include_str!("boot.s"));
