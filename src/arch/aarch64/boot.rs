//! The boot entry (`boot.s`), assembled with every register value and descriptor bit it
//! uses taken from Rust: the translation regime and the boot descriptors from
//! [`crate::mm::page_table`] (which its host tests check), the MPIDR affinity mask from
//! [`super::MPIDR_AFFINITY_MASK`], and the EL3/EL2 set-up values below, built from
//! aarch64-cpu's register fields. Change those and the assembly follows.
use aarch64_cpu::registers::{
    CNTHCTL_EL2, HCR_EL2, ICC_SRE_EL2, ID_AA64MMFR0_EL1, SCR_EL3, SPSR_EL2, SPSR_EL3,
};

use crate::mm::page_table::{self, PAGE_SIZE};

/// SPSR for the `eret` down to EL1 (from EL3 or EL2): EL1h, with D, A, I and F masked.
const SPSR_EL1H_MASKED: u64 = SPSR_EL2::M::EL1h.value
    | SPSR_EL2::D::Masked.value
    | SPSR_EL2::A::Masked.value
    | SPSR_EL2::I::Masked.value
    | SPSR_EL2::F::Masked.value;
const _: () = assert!(
    SPSR_EL1H_MASKED
        == SPSR_EL3::M::EL1h.value
            | SPSR_EL3::D::Masked.value
            | SPSR_EL3::A::Masked.value
            | SPSR_EL3::I::Masked.value
            | SPSR_EL3::F::Masked.value
);

/// SCR_EL3 at EL3 without firmware: the lower levels are AArch64, and the CPU stays Secure
/// (NS clear), because only Secure code may configure the interrupt controller's groups.
const SCR_EL3_VALUE: u64 = SCR_EL3::RW::NextELIsAarch64.value;
/// HCR_EL2: EL1 is AArch64, nothing else trapped or virtualised.
const HCR_EL2_VALUE: u64 = HCR_EL2::RW::EL1IsAarch64.value;
/// CNTHCTL_EL2 bits that let EL1 use the physical counter and timer.
const CNTHCTL_EL1_ACCESS: u64 = CNTHCTL_EL2::EL1PCTEN::SET.value | CNTHCTL_EL2::EL1PCEN::SET.value;
/// CPTR_EL2: its RES1 bits (13:12 and 9:0) and nothing trapped (TFP, bit 10, clear: EL1
/// may use FP and SIMD). aarch64-cpu does not name the RES1 bits.
const CPTR_EL2_VALUE: u64 = 0x33ff;
/// ICC_SRE_EL2 bits that let EL1 use the GICv3 system registers: SRE and Enable.
const ICC_SRE_EL2_EL1_ACCESS: u64 = ICC_SRE_EL2::SRE::SET.value | ICC_SRE_EL2::ENABLE::SET.value;
/// ID_AA64PFR0_EL1.GIC (bits 27:24, nonzero: a GICv3 system-register CPU interface);
/// aarch64-cpu does not name it.
const PFR0_GIC_SHIFT: u32 = 24;
/// ID_AA64MMFR0_EL1.PARange, which `enable_mmu` turns into TCR_EL1.IPS.
const PARANGE_MASK: u64 = ID_AA64MMFR0_EL1::PARange.mask;

/// Bytes of the image `boot.s` can map: the image's L3 tables (`boot_l3_hi`) are this many
/// 4 KiB tables of 512 pages. The linker script refuses a larger image (`__boot_map_size`).
const BOOT_L3_TABLES: usize = 2;
/// The bytes those tables map.
const BOOT_MAP_SIZE: usize = BOOT_L3_TABLES * 512 * PAGE_SIZE;

core::arch::global_asm!(
    include_str!("boot.s"),
    PAGE_SIZE = const PAGE_SIZE,
    MPIDR_AFFINITY = const super::MPIDR_AFFINITY_MASK,
    SCR_EL3_VALUE = const SCR_EL3_VALUE,
    SPSR_EL1H_MASKED = const SPSR_EL1H_MASKED,
    HCR_EL2_VALUE = const HCR_EL2_VALUE,
    CNTHCTL_EL1_ACCESS = const CNTHCTL_EL1_ACCESS,
    CPTR_EL2_VALUE = const CPTR_EL2_VALUE,
    PFR0_GIC_SHIFT = const PFR0_GIC_SHIFT,
    ICC_SRE_EL2_EL1_ACCESS = const ICC_SRE_EL2_EL1_ACCESS,
    SCTLR_MMU_OFF = const page_table::SCTLR_MMU_OFF,
    SCTLR_MMU_ON = const page_table::SCTLR_MMU_ON,
    MAIR = const page_table::MAIR,
    TCR = const page_table::TCR,
    TCR_IPS_SHIFT = const page_table::TCR_IPS_SHIFT,
    TCR_IPS_MAX = const page_table::TCR_IPS_MAX,
    PARANGE_MASK = const PARANGE_MASK,
    TABLE_BITS = const page_table::TABLE_BITS,
    PAGE_TEXT = const page_table::BOOT_PAGE_TEXT,
    PAGE_RODATA = const page_table::BOOT_PAGE_RODATA,
    PAGE_DATA = const page_table::BOOT_PAGE_DATA,
    BLOCK_ID = const page_table::BOOT_IDENTITY_BLOCK,
    BOOT_L3_BYTES = const BOOT_L3_TABLES * PAGE_SIZE,
    BOOT_MAP_SIZE = const BOOT_MAP_SIZE,
);
