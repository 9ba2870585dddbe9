//! The translation regime the tables are built for, as the boot code programs it: MAIR_EL1
//! (what each [`AttrIndx`](PAGE_DESCRIPTOR::AttrIndx) value means), TCR_EL1 (two 48-bit
//! halves, 4 KiB granules, cacheable walks) and SCTLR_EL1 (MMU and caches off, then on), and
//! the descriptor bits `boot.s` writes into the boot tables. All of them are built here from
//! the register crates' field names; `arch::aarch64::boot` hands them to `boot.s` as `const`
//! operands and the host tests read the same constants.
use aarch64_cpu::registers::{MAIR_EL1, SCTLR_EL1, TCR_EL1};

use super::*;

/// MAIR_EL1: attribute `i` is the memory type of descriptors whose AttrIndx is `i`.
pub const MAIR: u64 = MAIR_EL1::Attr0_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc.value
    | MAIR_EL1::Attr0_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc.value
    | MAIR_EL1::Attr1_Device::nonGathering_nonReordering_EarlyWriteAck.value
    | MAIR_EL1::Attr2_Normal_Outer::NonCacheable.value
    | MAIR_EL1::Attr2_Normal_Inner::NonCacheable.value
    | MAIR_EL1::Attr3_Device::nonGathering_nonReordering_noEarlyWriteAck.value;

// The attribute slots above are the AttrIndx values the descriptors use.
const _: () = assert!(PAGE_DESCRIPTOR::AttrIndx::Normal.value >> 2 == 0);
const _: () = assert!(PAGE_DESCRIPTOR::AttrIndx::Device.value >> 2 == 1);
const _: () = assert!(PAGE_DESCRIPTOR::AttrIndx::NormalNonCacheable.value >> 2 == 2);
const _: () = assert!(PAGE_DESCRIPTOR::AttrIndx::DeviceStrict.value >> 2 == 3);

/// TnSZ for a half of [`HALF_SPAN`] bytes.
const HALF_SIZE_OFFSET: u64 = 64 - HALF_SPAN.trailing_zeros() as u64;

/// TCR_EL1 as the boot code sets it, without IPS (which `boot.s` fills in from
/// ID_AA64MMFR0_EL1.PARange, at most [`TCR_IPS_MAX`]): both halves 2^48 bytes with
/// 4 KiB granules, table walks inner shareable and write-back cacheable.
pub const TCR: u64 = TCR_EL1::T0SZ.val(HALF_SIZE_OFFSET).value
    | TCR_EL1::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable.value
    | TCR_EL1::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable.value
    | TCR_EL1::SH0::Inner.value
    | TCR_EL1::TG0::KiB_4.value
    | TCR_EL1::T1SZ.val(HALF_SIZE_OFFSET).value
    | TCR_EL1::IRGN1::WriteBack_ReadAlloc_WriteAlloc_Cacheable.value
    | TCR_EL1::ORGN1::WriteBack_ReadAlloc_WriteAlloc_Cacheable.value
    | TCR_EL1::SH1::Inner.value
    | TCR_EL1::TG1::KiB_4.value;
/// Where TCR_EL1.IPS starts.
pub const TCR_IPS_SHIFT: usize = TCR_EL1::IPS.shift;
/// The largest IPS the tables support: output addresses are 48 bits (`PA_LIMIT`).
pub const TCR_IPS_MAX: u64 = TCR_EL1::IPS::Bits_48.value >> TCR_EL1::IPS.shift;
const _: () = assert!(PA_LIMIT == 1 << 48);

/// SCTLR_EL1 bits that are RES1 on cores without the features that define them (EOS 11,
/// TSCXT 20, EIS 22, SPAN 23, nTLSMD 28, LSMAOE 29): set, which is also what those features
/// define as the compatible behaviour. aarch64-cpu does not name them.
pub const SCTLR_RES1: u64 = (1 << 11) | (1 << 20) | (1 << 22) | (1 << 23) | (1 << 28) | (1 << 29);
/// SCTLR_EL1 before the MMU is on (set at EL2, before the drop to EL1): MMU and caches off.
pub const SCTLR_MMU_OFF: u64 = SCTLR_RES1;
/// SCTLR_EL1 with the MMU on: data and instruction caches on, SP alignment checked.
pub const SCTLR_MMU_ON: u64 = SCTLR_RES1
    | SCTLR_EL1::M::Enable.value
    | SCTLR_EL1::C::Cacheable.value
    | SCTLR_EL1::SA::Enable.value
    | SCTLR_EL1::I::Cacheable.value;

/// A table descriptor without its address: what `boot.s` ORs a next-level table into.
pub const TABLE_BITS: u64 =
    TABLE_DESCRIPTOR::VALID::True.value | TABLE_DESCRIPTOR::TYPE::Table.value;

/// The boot map of the kernel's text, without its address: read-only, executable at EL1.
pub const BOOT_PAGE_TEXT: u64 =
    PageTable::page_bits(Attributes::new(MemoryType::Normal, Permission::ReadExecute));
/// The boot map of the kernel's read-only data.
pub const BOOT_PAGE_RODATA: u64 =
    PageTable::page_bits(Attributes::new(MemoryType::Normal, Permission::ReadOnly));
/// The boot map of the kernel's data and bss.
pub const BOOT_PAGE_DATA: u64 = PageTable::page_bits(Attributes::DATA);

/// The level-2 block descriptor, without its address, of the boot code's identity map of the
/// 2 MiB holding `enable_mmu`: Normal memory, writable and executable at EL1. It is the only
/// mapping that is both, and it lives only until boot turns TTBR0 walks off, so the manager
/// (which keeps W^X) has no [`Attributes`] for it.
pub const BOOT_IDENTITY_BLOCK: u64 = PAGE_DESCRIPTOR::VALID::True.value
    | PAGE_DESCRIPTOR::TYPE::Block.value
    | PAGE_DESCRIPTOR::AF::True.value
    | PAGE_DESCRIPTOR::SH::InnerShareable.value
    | PAGE_DESCRIPTOR::AP::RW_EL1.value
    | PAGE_DESCRIPTOR::AttrIndx::Normal.value
    | PAGE_DESCRIPTOR::PXN::False.value
    | PAGE_DESCRIPTOR::UXN::True.value;

/// Bits 47:12 of a descriptor: a leaf's output address, a table descriptor's next table.
pub const OUTPUT_ADDRESS_MASK: u64 =
    PAGE_DESCRIPTOR::OUTPUT_ADDR.mask << PAGE_DESCRIPTOR::OUTPUT_ADDR.shift;
const _: () = assert!(
    OUTPUT_ADDRESS_MASK
        == TABLE_DESCRIPTOR::NEXT_LEVEL_TABLE_ADDR.mask
            << TABLE_DESCRIPTOR::NEXT_LEVEL_TABLE_ADDR.shift
);
