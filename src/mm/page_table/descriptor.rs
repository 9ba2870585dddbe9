//! The descriptor formats: table and leaf descriptors as tock-registers fields, the
//! memory types and permissions a leaf encodes, what a leaf translates to, and reading and
//! writing one entry of a table.
use super::*;

register_bitfields! {u64,
    /// A table descriptor (levels 0 to 2): points at the next-level table.
    pub(super) TABLE_DESCRIPTOR [
        /// Physical address of the next-level table, bits 47:12.
        NEXT_LEVEL_TABLE_ADDR OFFSET(12) NUMBITS(36) [],
        /// At levels 0 to 2: 1 for a table, 0 for a block.
        TYPE OFFSET(1) NUMBITS(1) [
            Block = 0,
            Table = 1
        ],
        /// Whether the descriptor is used by the walker at all.
        VALID OFFSET(0) NUMBITS(1) [
            False = 0,
            True = 1
        ]
    ],

    /// A page descriptor (level 3) or a block descriptor (levels 1 and 2): same layout, the
    /// bits of OUTPUT_ADDR below the block size are RES0 in a block.
    pub(super) PAGE_DESCRIPTOR [
        /// Unprivileged (EL0) execute-never.
        UXN OFFSET(54) NUMBITS(1) [
            False = 0,
            True = 1
        ],
        /// Privileged (EL1) execute-never.
        PXN OFFSET(53) NUMBITS(1) [
            False = 0,
            True = 1
        ],
        /// Physical address of the page or block, bits 47:12.
        OUTPUT_ADDR OFFSET(12) NUMBITS(36) [],
        /// Not global: the entry belongs to one ASID. The kernel keeps every entry global.
        nG OFFSET(11) NUMBITS(1) [
            False = 0,
            True = 1
        ],
        /// Access flag: without it the first access faults.
        AF OFFSET(10) NUMBITS(1) [
            False = 0,
            True = 1
        ],
        /// Shareability.
        SH OFFSET(8) NUMBITS(2) [
            NonShareable = 0b00,
            OuterShareable = 0b10,
            InnerShareable = 0b11
        ],
        /// Access permissions: AP[2] makes it read-only, AP[1] opens it to EL0.
        AP OFFSET(6) NUMBITS(2) [
            RW_EL1 = 0b00,
            RW_EL1_EL0 = 0b01,
            RO_EL1 = 0b10,
            RO_EL1_EL0 = 0b11
        ],
        /// Index into MAIR_EL1, as programmed by the boot code.
        AttrIndx OFFSET(2) NUMBITS(3) [
            Normal = 0,
            Device = 1,
            NormalNonCacheable = 2,
            DeviceStrict = 3
        ],
        /// At level 3: 1 for a page (0 is reserved). At levels 1 and 2: 0 for a block.
        TYPE OFFSET(1) NUMBITS(1) [
            Block = 0,
            Page = 1
        ],
        /// Whether the descriptor is used by the walker at all.
        VALID OFFSET(0) NUMBITS(1) [
            False = 0,
            True = 1
        ]
    ]
}

pub(super) type TableDescriptor = LocalRegisterCopy<u64, TABLE_DESCRIPTOR::Register>;
pub(super) type LeafDescriptor = LocalRegisterCopy<u64, PAGE_DESCRIPTOR::Register>;

/// Memory type of a mapping: which MAIR_EL1 index its descriptors use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryType {
    /// Normal memory, write-back cacheable (MAIR index 0).
    Normal,
    /// Device nGnRE, for MMIO (MAIR index 1). Index 3 (nGnRnE) also decodes as this.
    Device,
    /// Normal memory, non-cacheable (MAIR index 2).
    NormalNonCacheable,
}

/// What EL1 may do with a mapping. There is no writable and executable variant (W^X), and
/// EL0 never has access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read only, never executed.
    ReadOnly,
    /// Read and write, never executed.
    ReadWrite,
    /// Read and execute at EL1, never written.
    ReadExecute,
}

/// Attributes of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes {
    /// Memory type (cacheability, device ordering).
    pub memory: MemoryType,
    /// Access permission.
    pub permission: Permission,
}

impl Attributes {
    /// Normal memory, read-write, never executed: data, heap, stacks.
    pub const DATA: Attributes = Attributes::new(MemoryType::Normal, Permission::ReadWrite);
    /// Device memory, read-write, never executed: MMIO.
    pub const DEVICE: Attributes = Attributes::new(MemoryType::Device, Permission::ReadWrite);

    /// Attributes with this memory type and permission.
    pub const fn new(memory: MemoryType, permission: Permission) -> Self {
        Attributes { memory, permission }
    }
}

/// What a virtual address translates to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// The physical address the queried address translates to; for [`PageTable::walk`],
    /// where the address is the start of the page or block, its start.
    pub pa: u64,
    /// Memory type and permission, decoded from the descriptor. A descriptor that is both
    /// writable and executable (which this manager never writes) decodes as `ReadWrite`:
    /// use [`Translation::executable`] to catch it.
    pub attributes: Attributes,
    /// Level of the leaf descriptor: 1 (1 GiB block), 2 (2 MiB block) or 3 (4 KiB page).
    pub level: u8,
    /// The raw descriptor.
    pub descriptor: u64,
}

impl Translation {
    pub(super) fn from_leaf(raw: u64, level: u8, offset_in_leaf: u64) -> Self {
        let desc = LeafDescriptor::new(raw);
        let memory = match desc.read(PAGE_DESCRIPTOR::AttrIndx) {
            0 => MemoryType::Normal,
            2 => MemoryType::NormalNonCacheable,
            // Index 1 is Device nGnRE and 3 Device nGnRnE; indices 4..7 are zero in MAIR,
            // which also means Device nGnRnE.
            _ => MemoryType::Device,
        };
        let translation = Translation {
            pa: (desc.read(PAGE_DESCRIPTOR::OUTPUT_ADDR) << 12) + offset_in_leaf,
            attributes: Attributes::new(memory, Permission::ReadOnly),
            level,
            descriptor: raw,
        };
        let permission = if translation.writable() {
            Permission::ReadWrite
        } else if translation.executable() {
            Permission::ReadExecute
        } else {
            Permission::ReadOnly
        };
        Translation {
            attributes: Attributes::new(memory, permission),
            ..translation
        }
    }

    /// Size of the page or block this translation comes from.
    pub fn size(&self) -> u64 {
        level_size(self.level)
    }

    /// Whether EL1 may write through this mapping.
    pub fn writable(&self) -> bool {
        let desc = LeafDescriptor::new(self.descriptor);
        desc.matches_any(&[PAGE_DESCRIPTOR::AP::RW_EL1, PAGE_DESCRIPTOR::AP::RW_EL1_EL0])
    }

    /// Whether EL1 may execute from this mapping. A mapping writable at EL0 is never
    /// executable at EL1, whatever PXN says.
    pub fn executable(&self) -> bool {
        let desc = LeafDescriptor::new(self.descriptor);
        !desc.is_set(PAGE_DESCRIPTOR::PXN) && !desc.matches_all(PAGE_DESCRIPTOR::AP::RW_EL1_EL0)
    }
}

/// What a table entry holds, as far as the walker is concerned.
#[derive(Debug, Clone, Copy)]
pub(super) enum Entry {
    /// Faults. Also covers encodings that are reserved at this level.
    Invalid,
    /// Points at a next-level table at this physical address.
    Table(u64),
    /// A block or page descriptor (raw).
    Leaf(u64),
}

/// Bit position of the lowest address bit a level-`level` entry index uses.
pub(super) const fn level_shift(level: u8) -> u32 {
    12 + 9 * (3 - level as u32)
}

/// Bytes covered by one entry of a level-`level` table.
pub(super) const fn level_size(level: u8) -> u64 {
    1 << level_shift(level)
}

/// Whether a level may hold block descriptors with a 4 KiB granule.
pub(super) const fn level_has_blocks(level: u8) -> bool {
    level == 1 || level == 2
}

pub(super) fn decode(raw: u64, level: u8) -> Entry {
    let desc = TableDescriptor::new(raw);
    if !desc.is_set(TABLE_DESCRIPTOR::VALID) {
        return Entry::Invalid;
    }
    let table_type = desc.matches_all(TABLE_DESCRIPTOR::TYPE::Table);
    match level {
        0..=2 if table_type => {
            Entry::Table(desc.read(TABLE_DESCRIPTOR::NEXT_LEVEL_TABLE_ADDR) << 12)
        }
        1 | 2 => Entry::Leaf(raw),
        // At level 3 only TYPE = 1 is a page; at level 0 a block needs FEAT_LPA2.
        3 if table_type => Entry::Leaf(raw),
        _ => Entry::Invalid,
    }
}

pub(super) fn table_descriptor(table_pa: u64) -> u64 {
    let mut desc = TableDescriptor::new(0);
    desc.write(
        TABLE_DESCRIPTOR::VALID::True
            + TABLE_DESCRIPTOR::TYPE::Table
            + TABLE_DESCRIPTOR::NEXT_LEVEL_TABLE_ADDR.val(table_pa >> 12),
    );
    desc.get()
}

/// The leaf descriptor for `pa` with `attrs` at `level` (a page at 3, a block at 1 and 2).
pub(super) fn leaf_descriptor(pa: u64, attrs: Attributes, level: u8) -> u64 {
    use PAGE_DESCRIPTOR::*;
    let memory = match attrs.memory {
        MemoryType::Normal => AttrIndx::Normal,
        MemoryType::Device => AttrIndx::Device,
        MemoryType::NormalNonCacheable => AttrIndx::NormalNonCacheable,
    };
    let device = attrs.memory == MemoryType::Device;
    let (access, pxn) = match attrs.permission {
        Permission::ReadOnly => (AP::RO_EL1, PXN::True),
        Permission::ReadWrite => (AP::RW_EL1, PXN::True),
        Permission::ReadExecute if device => (AP::RO_EL1, PXN::True),
        Permission::ReadExecute => (AP::RO_EL1, PXN::False),
    };
    let kind = if level == 3 { TYPE::Page } else { TYPE::Block };
    let mut desc = LeafDescriptor::new(0);
    desc.write(
        VALID::True
            + kind
            + OUTPUT_ADDR.val(pa >> 12)
            + AF::True
            + SH::InnerShareable
            + access
            + memory
            + nG::False
            + pxn
            + UXN::True,
    );
    desc.get()
}

/// `raw` (a leaf) moved to `pa` and turned into a leaf of `level`, every other bit kept.
pub(super) fn relocate_leaf(raw: u64, pa: u64, level: u8) -> u64 {
    use PAGE_DESCRIPTOR::*;
    let kind = if level == 3 { TYPE::Page } else { TYPE::Block };
    let mut desc = LeafDescriptor::new(raw);
    desc.modify(OUTPUT_ADDR.val(pa >> 12) + kind);
    desc.get()
}

pub(super) fn leaf_output(raw: u64) -> u64 {
    LeafDescriptor::new(raw).read(PAGE_DESCRIPTOR::OUTPUT_ADDR) << 12
}

pub(super) fn entry_ptr(mem: &impl TableMemory, table_pa: u64, index: usize) -> *mut u64 {
    // `index` is always below ENTRIES (it is masked when computed), so this stays inside
    // the 4 KiB frame; `wrapping_add` keeps the pointer arithmetic itself safe.
    mem.table_ptr(table_pa).wrapping_add(index % ENTRIES)
}

pub(super) fn read_entry(mem: &impl TableMemory, table_pa: u64, index: usize) -> u64 {
    // SAFETY: `table_pa` holds a table of this tree, so by the `TableMemory` contract the
    // pointer is valid for reads of its 512 entries, and `entry_ptr` stays below 512.
    // Volatile because the walker and the lock-free growth path share the entries.
    unsafe { core::ptr::read_volatile(entry_ptr(mem, table_pa, index)) }
}

pub(super) fn write_entry(mem: &impl TableMemory, table_pa: u64, index: usize, value: u64) {
    // SAFETY: as in `read_entry`, the pointer is valid for writes of this entry. Volatile
    // so the store is a single 64-bit write the walker observes whole and in program order.
    unsafe { core::ptr::write_volatile(entry_ptr(mem, table_pa, index), value) }
}

pub(super) fn table_is_empty(mem: &impl TableMemory, table_pa: u64, level: u8) -> bool {
    (0..ENTRIES).all(|i| matches!(decode(read_entry(mem, table_pa, i), level), Entry::Invalid))
}
