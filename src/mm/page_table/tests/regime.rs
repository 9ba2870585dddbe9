//! The translation regime: MAIR against the manager's AttrIndx, TCR against its geometry, and
//! every boot-time value against the one `boot.s` spelled by hand before they moved to Rust.
use super::*;

#[test]
fn mair_gives_each_memory_type_its_attribute() {
    // Attribute encodings of the Arm ARM (D19.2 MAIR_EL1): 0xff Normal write-back
    // read/write-allocate, 0x04 Device-nGnRE, 0x44 Normal non-cacheable.
    for (memory, attribute) in [
        (MemoryType::Normal, 0xff),
        (MemoryType::Device, 0x04),
        (MemoryType::NormalNonCacheable, 0x44),
    ] {
        let desc = PageTable::page_descriptor(0, Attributes::new(memory, Permission::ReadWrite));
        let index = (desc >> 2) & 7;
        assert_eq!((MAIR >> (8 * index)) & 0xff, attribute, "{memory:?}");
    }
}

#[test]
fn tcr_matches_the_tables_geometry() {
    let t0sz = TCR & 0x3f;
    let t1sz = (TCR >> 16) & 0x3f;
    assert_eq!(1u64 << (64 - t0sz), HALF_SPAN);
    assert_eq!(1u64 << (64 - t1sz), HALF_SPAN);
    // TG0 = 0b00 and TG1 = 0b10 both mean 4 KiB.
    assert_eq!((TCR >> 14) & 3, 0);
    assert_eq!((TCR >> 30) & 3, 2);
    assert_eq!(PAGE_SIZE, 4096);
    // IPS is left for boot.s; the largest it may set is 48 bits.
    assert_eq!((TCR >> TCR_IPS_SHIFT) & 7, 0);
    assert_eq!(TCR_IPS_MAX, 5);
}

#[test]
fn boot_values_are_the_ones_boot_s_spelled_by_hand() {
    assert_eq!(MAIR, 0x0044_04ff);
    let tcr = 16
        | (1 << 8)
        | (1 << 10)
        | (3 << 12)
        | (16 << 16)
        | (1 << 24)
        | (1 << 26)
        | (3 << 28)
        | (2 << 30);
    assert_eq!(TCR, tcr);
    assert_eq!(SCTLR_MMU_OFF, 0x30d0_0800);
    assert_eq!(
        SCTLR_MMU_ON,
        0x30d0_0800 | 1 | (1 << 2) | (1 << 3) | (1 << 12)
    );
    let normal_page = 0x3 | (1 << 10) | (3 << 8);
    let (ro, pxn, uxn) = (1u64 << 7, 1u64 << 53, 1u64 << 54);
    assert_eq!(BOOT_PAGE_TEXT, normal_page | ro | uxn);
    assert_eq!(BOOT_PAGE_RODATA, normal_page | ro | uxn | pxn);
    assert_eq!(BOOT_PAGE_DATA, normal_page | uxn | pxn);
    assert_eq!(BOOT_IDENTITY_BLOCK, 0x1 | (1 << 10) | (3 << 8) | uxn);
    assert_eq!(TABLE_BITS, 0x3);
    assert_eq!(OUTPUT_ADDRESS_MASK, 0x0000_ffff_ffff_f000);
}

#[test]
fn boot_descriptors_are_what_the_manager_writes() {
    let pa = 0x4008_1000;
    let rx = Attributes::new(MemoryType::Normal, Permission::ReadExecute);
    let ro = Attributes::new(MemoryType::Normal, Permission::ReadOnly);
    assert_eq!(BOOT_PAGE_TEXT | pa, PageTable::page_descriptor(pa, rx));
    assert_eq!(BOOT_PAGE_RODATA | pa, PageTable::page_descriptor(pa, ro));
    assert_eq!(
        BOOT_PAGE_DATA | pa,
        PageTable::page_descriptor(pa, Attributes::DATA)
    );
    // The manager reads the boot tables back as the kernel's: text executable, data not.
    let text = Translation::from_leaf(BOOT_PAGE_TEXT | pa, 3, 0);
    assert!(text.executable() && !text.writable());
    let data = Translation::from_leaf(BOOT_PAGE_DATA | pa, 3, 0);
    assert!(!data.executable() && data.writable());
    let block = Translation::from_leaf(BOOT_IDENTITY_BLOCK | 0x4000_0000, 2, 0);
    assert!(block.executable() && block.writable());
    assert_eq!(block.size(), 2 << 20);
}
