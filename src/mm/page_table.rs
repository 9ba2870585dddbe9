//! The translation-table manager: AArch64 stage 1 tables with a 4 KiB granule, 48-bit
//! virtual addresses and four levels (L0..L3), for either half of the address space.
//!
//! Owns the layout and encoding of translation-table descriptors and every edit of a table:
//! mapping (1 GiB and 2 MiB blocks or 4 KiB pages), unmapping (splitting blocks with
//! break-before-make), changing attributes, lookups, walks, and creating last-level tables
//! ahead of time so that the stack-growth path is a single descriptor store into an L3
//! table that already exists.
//!
//! It calls nothing outside this file: physical frames for tables come from a
//! [`TableMemory`] and every barrier or TLB invalidation goes through a [`TlbOps`], both
//! supplied by the caller (`arch::aarch64::tlb::HardwareTlb` on the machine, recording fakes
//! in the host tests). That keeps the module plain logic that builds and is tested on the
//! host.
//!
//! Every operation first surveys the range without writing anything (overlaps, holes, how
//! many tables it needs), then takes all the frames it needs, and only then edits the live
//! tables. So an operation that fails (`AlreadyMapped`, `NotMapped`, `OutOfMemory`, ...)
//! has changed nothing, and no failure can strike halfway through an edit.
//!
//! The manager keeps no software state besides the root: the tables are the truth, so the
//! boot tables can be adopted as they are ([`PageTable::from_root`]).

use core::fmt;

use tock_registers::{register_bitfields, LocalRegisterCopy};

/// Size of a page and of a translation table: the 4 KiB granule.
pub const PAGE_SIZE: usize = 4096;

const PAGE: u64 = PAGE_SIZE as u64;
const ENTRIES: usize = 512;
/// Each half of the address space spans 2^48 bytes; offsets inside it index the tables.
const HALF_SPAN: u64 = 1 << 48;
/// Output addresses are 48 bits wide (OUTPUT_ADDR is bits 47:12).
const PA_LIMIT: u64 = 1 << 48;
/// How many (va, pa) releases an unmap collects before it waits for the invalidations and
/// hands them to the caller: one `DSB ISH` per batch instead of one per page.
const RELEASE_BATCH: usize = 16;

register_bitfields! {u64,
    /// A table descriptor (levels 0 to 2): points at the next-level table.
    TABLE_DESCRIPTOR [
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
    PAGE_DESCRIPTOR [
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

type TableDescriptor = LocalRegisterCopy<u64, TABLE_DESCRIPTOR::Register>;
type LeafDescriptor = LocalRegisterCopy<u64, PAGE_DESCRIPTOR::Register>;

/// Physical memory the manager needs from its owner: frames for tables, and a way to reach
/// them.
///
/// # Safety
///
/// The manager reads and writes tables through the pointers this returns, so an
/// implementation must guarantee that:
/// - `alloc_table` returns the physical address of a 4 KiB-aligned frame below 2^48 that
///   is filled with zeros and used by nothing else until it is given back with
///   `free_table`;
/// - `table_ptr(pa)`, for every frame holding a translation table of a [`PageTable`] used
///   with this memory (its own frames and any adopted tables), returns a pointer valid for
///   reads and writes of the frame's 512 `u64` entries for as long as the table exists.
pub unsafe trait TableMemory {
    /// Physical address of a zeroed 4 KiB frame for a new table, or `None` when out of
    /// memory.
    fn alloc_table(&mut self) -> Option<u64>;
    /// Gives back a frame that `alloc_table` returned and no table uses any more.
    fn free_table(&mut self, pa: u64);
    /// Where the kernel can read and write the table at physical address `pa`.
    fn table_ptr(&self, pa: u64) -> *mut u64;
}

/// Barriers and TLB maintenance the manager issues: real ones on the target, recorded ones
/// in tests.
pub trait TlbOps {
    /// Makes newly written valid entries visible to the table walker: `DSB ISHST; ISB`.
    fn after_map(&self);
    /// Starts invalidating the translations of `va` on every CPU after its entry was
    /// cleared: `DSB ISHST; TLBI VAE1IS`. Covers every level of the walk for that address.
    fn invalidate_page(&self, va: u64);
    /// Waits until every invalidation issued so far has completed everywhere: `DSB ISH; ISB`.
    fn sync(&self);
}

/// Which half of the address space a table translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    /// TTBR0_EL1: virtual addresses 0 to 0x0000_FFFF_FFFF_FFFF.
    Lower,
    /// TTBR1_EL1: virtual addresses 0xFFFF_0000_0000_0000 and up, where the kernel runs.
    Upper,
}

impl Half {
    /// The lowest virtual address of this half.
    pub const fn base(self) -> u64 {
        match self {
            Half::Lower => 0,
            Half::Upper => !(HALF_SPAN - 1),
        }
    }

    /// Offset of `va` inside this half, which is what the table indices are taken from.
    fn offset_of(self, va: u64) -> Option<u64> {
        if va & !(HALF_SPAN - 1) == self.base() {
            Some(va & (HALF_SPAN - 1))
        } else {
            None
        }
    }
}

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

/// Whether `unmap` gives back tables that it leaves empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reclaim {
    /// Keep every table, even empty ones: required wherever tables were prepared with
    /// [`PageTable::prepare_tables`] for the lock-free growth path, and for tables that did
    /// not come from the [`TableMemory`] (the boot tables).
    KeepTables,
    /// Free every table (below the root) that holds no valid entry after the unmap.
    FreeEmptyTables,
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
    fn from_leaf(raw: u64, level: u8, offset_in_leaf: u64) -> Self {
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

/// Why a translation-table operation was refused. An operation that returns an error has
/// changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// An address or size is not a multiple of 4 KiB.
    Unaligned {
        /// Which argument: "va", "pa" or "size".
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// The virtual range does not lie within the half of the address space this table
    /// translates.
    OutOfRange {
        /// Start of the range.
        va: u64,
        /// Its size in bytes.
        size: u64,
    },
    /// The physical range does not fit in 48 bits.
    PhysOutOfRange {
        /// Start of the range.
        pa: u64,
        /// Its size in bytes.
        size: u64,
    },
    /// Device memory may not be executable.
    ExecutableDevice,
    /// Part of the range is already mapped; mappings are never overwritten.
    AlreadyMapped {
        /// The first mapped address in the range.
        va: u64,
    },
    /// Part of the range is covered by a block, so it has no last-level table.
    MappedByBlock {
        /// The first such address in the range.
        va: u64,
    },
    /// Part of the range is not mapped.
    NotMapped {
        /// The first unmapped address in the range.
        va: u64,
    },
    /// No frame for a translation table.
    OutOfMemory,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MapError::Unaligned { what, value } => {
                write!(f, "{what} {value:#x} is not a multiple of 4 KiB")
            }
            MapError::OutOfRange { va, size } => write!(
                f,
                "virtual range {va:#x} + {size:#x} is outside this table's half of the address space"
            ),
            MapError::PhysOutOfRange { pa, size } => {
                write!(f, "physical range {pa:#x} + {size:#x} does not fit in 48 bits")
            }
            MapError::ExecutableDevice => write!(f, "device memory cannot be executable"),
            MapError::AlreadyMapped { va } => write!(f, "{va:#x} is already mapped"),
            MapError::MappedByBlock { va } => {
                write!(f, "{va:#x} is mapped by a block and has no last-level table")
            }
            MapError::NotMapped { va } => write!(f, "{va:#x} is not mapped"),
            MapError::OutOfMemory => write!(f, "out of memory for translation tables"),
        }
    }
}

impl core::error::Error for MapError {}

/// One stage 1 translation table tree (a root and everything below it) for one half of the
/// address space.
#[derive(Debug)]
pub struct PageTable {
    root_pa: u64,
    half: Half,
}

/// What a table entry holds, as far as the walker is concerned.
#[derive(Debug, Clone, Copy)]
enum Entry {
    /// Faults. Also covers encodings that are reserved at this level.
    Invalid,
    /// Points at a next-level table at this physical address.
    Table(u64),
    /// A block or page descriptor (raw).
    Leaf(u64),
}

/// A table in the making during a survey: either a real one or one that the operation would
/// create.
#[derive(Debug, Clone, Copy)]
enum Node {
    /// A table that exists, at this physical address.
    Table(u64),
    /// A table that does not exist yet: every entry invalid.
    Missing,
    /// The table a block would be split into: every entry a leaf.
    Split,
}

/// Which entries of a table an operation touches: the range `[start, end)` of offsets in
/// the half, cut at the boundaries of the entries of a table at `level`.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    /// Index of the entry.
    index: usize,
    /// First offset the entry covers.
    entry_start: u64,
    /// First offset in both the entry and the range.
    start: u64,
    /// End (exclusive) of the part of the range inside the entry.
    end: u64,
    /// Whether the range covers the whole entry.
    whole: bool,
}

/// Iterates the entries of a level-`level` table that `[start, end)` touches.
fn chunks(level: u8, start: u64, end: u64) -> impl Iterator<Item = Chunk> {
    let size = level_size(level);
    let mut cursor = start;
    core::iter::from_fn(move || {
        if cursor >= end {
            return None;
        }
        let entry_start = cursor & !(size - 1);
        let entry_end = entry_start + size;
        let chunk_end = end.min(entry_end);
        let chunk = Chunk {
            index: ((cursor >> level_shift(level)) as usize) % ENTRIES,
            entry_start,
            start: cursor,
            end: chunk_end,
            whole: cursor == entry_start && chunk_end == entry_end,
        };
        cursor = chunk_end;
        Some(chunk)
    })
}

/// Bit position of the lowest address bit a level-`level` entry index uses.
const fn level_shift(level: u8) -> u32 {
    12 + 9 * (3 - level as u32)
}

/// Bytes covered by one entry of a level-`level` table.
const fn level_size(level: u8) -> u64 {
    1 << level_shift(level)
}

/// Whether a level may hold block descriptors with a 4 KiB granule.
const fn level_has_blocks(level: u8) -> bool {
    level == 1 || level == 2
}

fn decode(raw: u64, level: u8) -> Entry {
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

fn table_descriptor(table_pa: u64) -> u64 {
    let mut desc = TableDescriptor::new(0);
    desc.write(
        TABLE_DESCRIPTOR::VALID::True
            + TABLE_DESCRIPTOR::TYPE::Table
            + TABLE_DESCRIPTOR::NEXT_LEVEL_TABLE_ADDR.val(table_pa >> 12),
    );
    desc.get()
}

/// The leaf descriptor for `pa` with `attrs` at `level` (a page at 3, a block at 1 and 2).
fn leaf_descriptor(pa: u64, attrs: Attributes, level: u8) -> u64 {
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
fn relocate_leaf(raw: u64, pa: u64, level: u8) -> u64 {
    use PAGE_DESCRIPTOR::*;
    let kind = if level == 3 { TYPE::Page } else { TYPE::Block };
    let mut desc = LeafDescriptor::new(raw);
    desc.modify(OUTPUT_ADDR.val(pa >> 12) + kind);
    desc.get()
}

fn leaf_output(raw: u64) -> u64 {
    LeafDescriptor::new(raw).read(PAGE_DESCRIPTOR::OUTPUT_ADDR) << 12
}

fn entry_ptr(mem: &impl TableMemory, table_pa: u64, index: usize) -> *mut u64 {
    // `index` is always below ENTRIES (it is masked when computed), so this stays inside
    // the 4 KiB frame; `wrapping_add` keeps the pointer arithmetic itself safe.
    mem.table_ptr(table_pa).wrapping_add(index % ENTRIES)
}

fn read_entry(mem: &impl TableMemory, table_pa: u64, index: usize) -> u64 {
    // SAFETY: `table_pa` holds a table of this tree, so by the `TableMemory` contract the
    // pointer is valid for reads of its 512 entries, and `entry_ptr` stays below 512.
    // Volatile because the walker and the lock-free growth path share the entries.
    unsafe { core::ptr::read_volatile(entry_ptr(mem, table_pa, index)) }
}

fn write_entry(mem: &impl TableMemory, table_pa: u64, index: usize, value: u64) {
    // SAFETY: as in `read_entry`, the pointer is valid for writes of this entry. Volatile
    // so the store is a single 64-bit write the walker observes whole and in program order.
    unsafe { core::ptr::write_volatile(entry_ptr(mem, table_pa, index), value) }
}

fn table_is_empty(mem: &impl TableMemory, table_pa: u64, level: u8) -> bool {
    (0..ENTRIES).all(|i| matches!(decode(read_entry(mem, table_pa, i), level), Entry::Invalid))
}

/// Frames taken before an edit starts, so the edit itself cannot run out of memory. They
/// are chained through their first word, which holds a page-aligned address and therefore
/// reads as an invalid descriptor should a walker ever see it.
struct FramePool {
    head: u64,
    count: usize,
}

impl FramePool {
    /// Takes `count` frames from `mem`, or none at all.
    fn fill(mem: &mut impl TableMemory, count: usize) -> Result<Self, MapError> {
        let mut pool = FramePool { head: 0, count: 0 };
        for _ in 0..count {
            match mem.alloc_table() {
                Some(pa) => {
                    write_entry(mem, pa, 0, pool.head);
                    pool.head = pa;
                    pool.count += 1;
                }
                None => {
                    pool.release(mem);
                    return Err(MapError::OutOfMemory);
                }
            }
        }
        Ok(pool)
    }

    /// A zeroed frame from the pool.
    fn take(&mut self, mem: &impl TableMemory) -> Result<u64, MapError> {
        if self.count == 0 {
            // The survey counted the frames this edit needs under `&mut PageTable`, so the
            // pool cannot run dry unless the tables changed behind the manager's back.
            return Err(MapError::OutOfMemory);
        }
        let pa = self.head;
        self.head = read_entry(mem, pa, 0);
        write_entry(mem, pa, 0, 0);
        self.count -= 1;
        Ok(pa)
    }

    /// Gives every frame still in the pool back to `mem`.
    fn release(&mut self, mem: &mut impl TableMemory) {
        while let Ok(pa) = self.take(mem) {
            mem.free_table(pa);
        }
    }
}

/// Something an unmap gives back once its invalidations have completed.
#[derive(Debug, Clone, Copy)]
enum Released {
    /// A page or block, reported to the caller page by page.
    Pages { va: u64, pa: u64, size: u64 },
    /// A table frame, returned to the `TableMemory`.
    Table(u64),
}

/// Releases waiting for the `DSB ISH` that completes their invalidations: a frame must not
/// be reused while another CPU may still hold a translation to it.
struct ReleaseBatch {
    items: [Released; RELEASE_BATCH],
    len: usize,
}

impl ReleaseBatch {
    fn new() -> Self {
        ReleaseBatch {
            items: [Released::Table(0); RELEASE_BATCH],
            len: 0,
        }
    }

    fn push(
        &mut self,
        item: Released,
        mem: &mut impl TableMemory,
        tlb: &impl TlbOps,
        on_unmapped: &mut impl FnMut(u64, u64),
    ) {
        if self.len == RELEASE_BATCH {
            self.flush(mem, tlb, on_unmapped);
        }
        self.items[self.len] = item;
        self.len += 1;
    }

    fn flush(
        &mut self,
        mem: &mut impl TableMemory,
        tlb: &impl TlbOps,
        on_unmapped: &mut impl FnMut(u64, u64),
    ) {
        if self.len == 0 {
            return;
        }
        tlb.sync();
        for item in &self.items[..self.len] {
            match *item {
                Released::Pages { va, pa, size } => {
                    for offset in (0..size).step_by(PAGE_SIZE) {
                        on_unmapped(va + offset, pa + offset);
                    }
                }
                Released::Table(pa) => mem.free_table(pa),
            }
        }
        self.len = 0;
    }
}

/// A validated mapping request, in offsets within the half.
#[derive(Debug, Clone, Copy)]
struct MapRequest {
    start: u64,
    pa: u64,
    attrs: Attributes,
    allow_blocks: bool,
}

impl MapRequest {
    fn pa_at(&self, offset: u64) -> u64 {
        self.pa + (offset - self.start)
    }

    /// Whether `chunk` of a level-`level` table becomes one block.
    fn block_fits(&self, chunk: &Chunk, level: u8) -> bool {
        self.allow_blocks
            && level_has_blocks(level)
            && chunk.whole
            && self.pa_at(chunk.start).is_multiple_of(level_size(level))
    }
}

impl PageTable {
    /// A new, empty tree for `half`, with a root table from `mem`.
    pub fn new(mem: &mut impl TableMemory, half: Half) -> Result<Self, MapError> {
        let root_pa = mem.alloc_table().ok_or(MapError::OutOfMemory)?;
        Ok(PageTable { root_pa, half })
    }

    /// Adopts an existing tree, such as the boot tables, without changing it.
    ///
    /// # Safety
    ///
    /// `root_pa` must be a level-0 table for `half` whose tables are all reachable through
    /// the `TableMemory` passed to every later call, and nothing else may edit the tree
    /// while this `PageTable` does (the growth path's single-entry stores excepted).
    pub unsafe fn from_root(root_pa: u64, half: Half) -> Self {
        PageTable { root_pa, half }
    }

    /// Physical address of the root (level-0) table, for TTBR0_EL1 or TTBR1_EL1.
    pub fn root_pa(&self) -> u64 {
        self.root_pa
    }

    /// The half of the address space this tree translates.
    pub fn half(&self) -> Half {
        self.half
    }

    /// Maps `[va, va + size)` to `[pa, pa + size)` with `attrs`.
    ///
    /// Uses 1 GiB and 2 MiB blocks where `allow_blocks` is set and the addresses are aligned
    /// for them (and no table already exists there), 4 KiB pages otherwise. Never overwrites
    /// a valid entry. Either everything is mapped, or nothing is and an error says why
    /// (`AlreadyMapped` names the first mapped address). Ends with `after_map`.
    #[allow(clippy::too_many_arguments)] // each is an independent part of the request
    pub fn map(
        &mut self,
        mem: &mut impl TableMemory,
        tlb: &impl TlbOps,
        va: u64,
        pa: u64,
        size: u64,
        attrs: Attributes,
        allow_blocks: bool,
    ) -> Result<(), MapError> {
        check_aligned("pa", pa)?;
        let Some((start, end)) = self.range(va, size)? else {
            return Ok(());
        };
        if pa.checked_add(size).is_none_or(|pa_end| pa_end > PA_LIMIT) {
            return Err(MapError::PhysOutOfRange { pa, size });
        }
        if attrs.memory == MemoryType::Device && attrs.permission == Permission::ReadExecute {
            return Err(MapError::ExecutableDevice);
        }
        let request = MapRequest {
            start,
            pa,
            attrs,
            allow_blocks,
        };
        let tables = self.survey_map(mem, Node::Table(self.root_pa), 0, &request, start, end)?;
        let mut pool = FramePool::fill(mem, tables)?;
        if tables > 0 {
            // The frames were zeroed by their owner: that must be visible to the walker
            // before any table descriptor points at them.
            tlb.after_map();
        }
        let result = self.apply_map(mem, &mut pool, self.root_pa, 0, &request, start, end);
        pool.release(mem);
        tlb.after_map();
        result
    }

    /// Unmaps `[va, va + size)`, which must be mapped throughout.
    ///
    /// Clears each entry, invalidates it on every CPU (`invalidate_page`, broadcast), and,
    /// once the invalidations have completed (`sync`), calls `on_unmapped(va, pa)` for each
    /// 4 KiB page given back, in address order, blocks included. A block only partly in the
    /// range is first split into next-level entries with break-before-make; the rest of it
    /// stays mapped, though it is unmapped for the instant between break and make. With
    /// [`Reclaim::FreeEmptyTables`], tables left empty are unlinked, invalidated and freed.
    /// Nothing is changed if an error is returned (`NotMapped` names the first hole).
    pub fn unmap(
        &mut self,
        mem: &mut impl TableMemory,
        tlb: &impl TlbOps,
        va: u64,
        size: u64,
        reclaim: Reclaim,
        mut on_unmapped: impl FnMut(u64, u64),
    ) -> Result<(), MapError> {
        let Some((start, end)) = self.range(va, size)? else {
            return Ok(());
        };
        let tables = self.survey_mapped(mem, Node::Table(self.root_pa), 0, start, end)?;
        let mut pool = FramePool::fill(mem, tables)?;
        let mut batch = ReleaseBatch::new();
        let mut ctx = UnmapContext {
            mem,
            tlb,
            pool: &mut pool,
            batch: &mut batch,
            reclaim,
            on_unmapped: &mut on_unmapped,
        };
        let result = self.apply_unmap(&mut ctx, self.root_pa, 0, start, end);
        batch.flush(mem, tlb, &mut on_unmapped);
        pool.release(mem);
        result
    }

    /// Changes the attributes of `[va, va + size)`, which must be mapped throughout, to
    /// `attrs`, keeping each page's or block's physical address.
    ///
    /// Each entry goes through break-before-make: cleared, invalidated on every CPU and
    /// waited for, then written anew (so the range is briefly unmapped). Blocks only partly
    /// in the range are split first. Changing the memory type of memory in use also needs
    /// cache maintenance, which is the caller's. Nothing is changed if an error is returned.
    pub fn protect(
        &mut self,
        mem: &mut impl TableMemory,
        tlb: &impl TlbOps,
        va: u64,
        size: u64,
        attrs: Attributes,
    ) -> Result<(), MapError> {
        let Some((start, end)) = self.range(va, size)? else {
            return Ok(());
        };
        if attrs.memory == MemoryType::Device && attrs.permission == Permission::ReadExecute {
            return Err(MapError::ExecutableDevice);
        }
        let tables = self.survey_mapped(mem, Node::Table(self.root_pa), 0, start, end)?;
        let mut pool = FramePool::fill(mem, tables)?;
        let result = self.apply_protect(mem, tlb, &mut pool, self.root_pa, 0, attrs, start, end);
        pool.release(mem);
        tlb.after_map();
        result
    }

    /// What `va` translates to, if it is mapped.
    pub fn query(&self, mem: &impl TableMemory, va: u64) -> Option<Translation> {
        let offset = self.half.offset_of(va)?;
        let mut table = self.root_pa;
        for level in 0..=3 {
            let index = ((offset >> level_shift(level)) as usize) % ENTRIES;
            match decode(read_entry(mem, table, index), level) {
                Entry::Invalid => return None,
                Entry::Table(next) => table = next,
                Entry::Leaf(raw) => {
                    let within = offset & (level_size(level) - 1);
                    return Some(Translation::from_leaf(raw, level, within));
                }
            }
        }
        None
    }

    /// Creates every last-level (L3) table covering `[va, va + size)` without mapping
    /// anything, so that later maps there allocate nothing and [`PageTable::leaf_slot`]
    /// finds a slot for every page. Returns how many tables of any level were created.
    /// Fails with `MappedByBlock` where a block covers part of the range, and changes
    /// nothing if it fails.
    pub fn prepare_tables(
        &mut self,
        mem: &mut impl TableMemory,
        tlb: &impl TlbOps,
        va: u64,
        size: u64,
    ) -> Result<usize, MapError> {
        let Some((start, end)) = self.range(va, size)? else {
            return Ok(0);
        };
        let tables = self.survey_prepare(mem, Node::Table(self.root_pa), 0, start, end)?;
        if tables == 0 {
            return Ok(0);
        }
        let mut pool = FramePool::fill(mem, tables)?;
        // Zeroed frames visible before the descriptors that point at them.
        tlb.after_map();
        let result = self.apply_prepare(mem, &mut pool, self.root_pa, 0, start, end);
        pool.release(mem);
        tlb.after_map();
        result.map(|()| tables)
    }

    /// Pointer to the L3 descriptor for `va`, if its L3 table exists.
    ///
    /// For the lock-free growth path: storing [`PageTable::page_descriptor`] there (then
    /// `DSB ISHST; ISB`) maps the page exactly as [`PageTable::map`] would. The pointer
    /// stays valid until the table is freed, which only an unmap with
    /// [`Reclaim::FreeEmptyTables`] does.
    pub fn leaf_slot(&self, mem: &impl TableMemory, va: u64) -> Option<*mut u64> {
        let offset = self.half.offset_of(va)?;
        let mut table = self.root_pa;
        for level in 0..3 {
            let index = ((offset >> level_shift(level)) as usize) % ENTRIES;
            match decode(read_entry(mem, table, index), level) {
                Entry::Table(next) => table = next,
                Entry::Invalid | Entry::Leaf(_) => return None,
            }
        }
        let index = ((offset >> level_shift(3)) as usize) % ENTRIES;
        Some(entry_ptr(mem, table, index))
    }

    /// The L3 page descriptor [`PageTable::map`] writes for the page at `pa` (its low 12
    /// bits are ignored) with `attrs`: valid, access flag set, inner shareable, global,
    /// EL1-only access, never executable at EL0, executable at EL1 only for Normal
    /// `ReadExecute` memory (Device memory is never executable).
    pub fn page_descriptor(pa: u64, attrs: Attributes) -> u64 {
        leaf_descriptor(pa, attrs, 3)
    }

    /// Every bit of the L3 page descriptor for `attrs` but the output address, as a
    /// constant: `page_descriptor(pa, attrs) == page_bits(attrs) | pa` for a page-aligned
    /// `pa`. Assembly that maps pages by itself (the stack growth fast path) ORs a frame in.
    pub const fn page_bits(attrs: Attributes) -> u64 {
        use PAGE_DESCRIPTOR::*;
        let memory = match attrs.memory {
            MemoryType::Normal => AttrIndx::Normal.value,
            MemoryType::Device => AttrIndx::Device.value,
            MemoryType::NormalNonCacheable => AttrIndx::NormalNonCacheable.value,
        };
        let device = matches!(attrs.memory, MemoryType::Device);
        let (access, pxn) = match attrs.permission {
            Permission::ReadOnly => (AP::RO_EL1.value, PXN::True.value),
            Permission::ReadWrite => (AP::RW_EL1.value, PXN::True.value),
            Permission::ReadExecute if device => (AP::RO_EL1.value, PXN::True.value),
            Permission::ReadExecute => (AP::RO_EL1.value, PXN::False.value),
        };
        VALID::True.value
            | TYPE::Page.value
            | AF::True.value
            | SH::InnerShareable.value
            | access
            | memory
            | nG::False.value
            | pxn
            | UXN::True.value
    }

    /// Calls `f(va, translation)` for every page and block, in address order, with `va`
    /// the start of the page or block.
    pub fn walk(&self, mem: &impl TableMemory, mut f: impl FnMut(u64, Translation)) {
        self.walk_table(mem, self.root_pa, 0, 0, &mut f);
    }

    fn walk_table(
        &self,
        mem: &impl TableMemory,
        table: u64,
        level: u8,
        base: u64,
        f: &mut impl FnMut(u64, Translation),
    ) {
        for index in 0..ENTRIES {
            let offset = base + index as u64 * level_size(level);
            match decode(read_entry(mem, table, index), level) {
                Entry::Invalid => {}
                Entry::Table(next) => self.walk_table(mem, next, level + 1, offset, f),
                Entry::Leaf(raw) => f(
                    self.half.base() | offset,
                    Translation::from_leaf(raw, level, 0),
                ),
            }
        }
    }

    /// Validates `[va, va + size)` and turns it into offsets within the half; `None` for an
    /// empty range.
    fn range(&self, va: u64, size: u64) -> Result<Option<(u64, u64)>, MapError> {
        check_aligned("va", va)?;
        check_aligned("size", size)?;
        if size == 0 {
            return Ok(None);
        }
        let start = self
            .half
            .offset_of(va)
            .ok_or(MapError::OutOfRange { va, size })?;
        match start.checked_add(size) {
            Some(end) if end <= HALF_SPAN => Ok(Some((start, end))),
            _ => Err(MapError::OutOfRange { va, size }),
        }
    }

    fn va(&self, offset: u64) -> u64 {
        self.half.base() | offset
    }

    fn entry(&self, mem: &impl TableMemory, node: Node, index: usize, level: u8) -> Entry {
        match node {
            Node::Table(pa) => decode(read_entry(mem, pa, index), level),
            Node::Missing => Entry::Invalid,
            // Only the leaf-ness of a split block's entries matters to a survey.
            Node::Split => Entry::Leaf(0),
        }
    }

    /// Counts the tables mapping `[start, end)` below `node` needs, or finds a mapped
    /// address in the range.
    fn survey_map(
        &self,
        mem: &impl TableMemory,
        node: Node,
        level: u8,
        request: &MapRequest,
        start: u64,
        end: u64,
    ) -> Result<usize, MapError> {
        let mut tables = 0;
        for chunk in chunks(level, start, end) {
            match self.entry(mem, node, chunk.index, level) {
                Entry::Leaf(_) => {
                    return Err(MapError::AlreadyMapped {
                        va: self.va(chunk.start),
                    })
                }
                Entry::Table(child) => {
                    tables += self.survey_map(
                        mem,
                        Node::Table(child),
                        level + 1,
                        request,
                        chunk.start,
                        chunk.end,
                    )?;
                }
                Entry::Invalid if level == 3 || request.block_fits(&chunk, level) => {}
                Entry::Invalid => {
                    tables += 1 + self.survey_map(
                        mem,
                        Node::Missing,
                        level + 1,
                        request,
                        chunk.start,
                        chunk.end,
                    )?;
                }
            }
        }
        Ok(tables)
    }

    #[allow(clippy::too_many_arguments)] // one recursion step: the table and its range
    fn apply_map(
        &self,
        mem: &impl TableMemory,
        pool: &mut FramePool,
        table: u64,
        level: u8,
        request: &MapRequest,
        start: u64,
        end: u64,
    ) -> Result<(), MapError> {
        for chunk in chunks(level, start, end) {
            let child = match decode(read_entry(mem, table, chunk.index), level) {
                Entry::Leaf(_) => {
                    return Err(MapError::AlreadyMapped {
                        va: self.va(chunk.start),
                    })
                }
                Entry::Table(child) => child,
                Entry::Invalid if level == 3 || request.block_fits(&chunk, level) => {
                    let desc = leaf_descriptor(request.pa_at(chunk.start), request.attrs, level);
                    write_entry(mem, table, chunk.index, desc);
                    continue;
                }
                Entry::Invalid => {
                    let child = pool.take(mem)?;
                    write_entry(mem, table, chunk.index, table_descriptor(child));
                    child
                }
            };
            self.apply_map(mem, pool, child, level + 1, request, chunk.start, chunk.end)?;
        }
        Ok(())
    }

    /// Counts the tables splitting blocks at the edges of `[start, end)` needs, or finds an
    /// unmapped address in the range.
    fn survey_mapped(
        &self,
        mem: &impl TableMemory,
        node: Node,
        level: u8,
        start: u64,
        end: u64,
    ) -> Result<usize, MapError> {
        let mut tables = 0;
        for chunk in chunks(level, start, end) {
            match self.entry(mem, node, chunk.index, level) {
                Entry::Invalid => {
                    return Err(MapError::NotMapped {
                        va: self.va(chunk.start),
                    })
                }
                Entry::Table(child) => {
                    tables += self.survey_mapped(
                        mem,
                        Node::Table(child),
                        level + 1,
                        chunk.start,
                        chunk.end,
                    )?;
                }
                Entry::Leaf(_) if chunk.whole => {}
                Entry::Leaf(_) => {
                    tables += 1 + self.survey_mapped(
                        mem,
                        Node::Split,
                        level + 1,
                        chunk.start,
                        chunk.end,
                    )?;
                }
            }
        }
        Ok(tables)
    }

    /// Replaces the block in entry `index` of `table` (at `level`) with a next-level table
    /// mapping the same memory with the same attributes, break-before-make. Returns the new
    /// table.
    #[allow(clippy::too_many_arguments)] // the entry, where it is, and what to edit it with
    fn split_block(
        &self,
        mem: &impl TableMemory,
        tlb: &impl TlbOps,
        pool: &mut FramePool,
        table: u64,
        index: usize,
        level: u8,
        raw: u64,
        entry_start: u64,
    ) -> Result<u64, MapError> {
        let child = pool.take(mem)?;
        let child_level = level + 1;
        let base_pa = leaf_output(raw);
        for i in 0..ENTRIES {
            let pa = base_pa + i as u64 * level_size(child_level);
            write_entry(mem, child, i, relocate_leaf(raw, pa, child_level));
        }
        write_entry(mem, table, index, 0);
        tlb.invalidate_page(self.va(entry_start));
        // Completes the invalidation, and orders the new table's contents before the
        // descriptor that publishes it.
        tlb.sync();
        write_entry(mem, table, index, table_descriptor(child));
        tlb.after_map();
        Ok(child)
    }

    fn apply_unmap<M: TableMemory, T: TlbOps, F: FnMut(u64, u64)>(
        &self,
        ctx: &mut UnmapContext<'_, M, T, F>,
        table: u64,
        level: u8,
        start: u64,
        end: u64,
    ) -> Result<(), MapError> {
        for chunk in chunks(level, start, end) {
            match decode(read_entry(ctx.mem, table, chunk.index), level) {
                Entry::Invalid => {
                    return Err(MapError::NotMapped {
                        va: self.va(chunk.start),
                    })
                }
                Entry::Leaf(raw) if chunk.whole => {
                    write_entry(ctx.mem, table, chunk.index, 0);
                    ctx.tlb.invalidate_page(self.va(chunk.start));
                    let released = Released::Pages {
                        va: self.va(chunk.start),
                        pa: leaf_output(raw),
                        size: level_size(level),
                    };
                    ctx.batch.push(released, ctx.mem, ctx.tlb, ctx.on_unmapped);
                }
                Entry::Leaf(raw) => {
                    let child = self.split_block(
                        ctx.mem,
                        ctx.tlb,
                        ctx.pool,
                        table,
                        chunk.index,
                        level,
                        raw,
                        chunk.entry_start,
                    )?;
                    self.apply_unmap(ctx, child, level + 1, chunk.start, chunk.end)?;
                }
                Entry::Table(child) => {
                    self.apply_unmap(ctx, child, level + 1, chunk.start, chunk.end)?;
                    if ctx.reclaim == Reclaim::FreeEmptyTables
                        && table_is_empty(ctx.mem, child, level + 1)
                    {
                        write_entry(ctx.mem, table, chunk.index, 0);
                        // A by-VA invalidation also drops walk-cache entries for the table
                        // descriptor, so no walker can reach the frame once it is reused.
                        ctx.tlb.invalidate_page(self.va(chunk.entry_start));
                        ctx.batch
                            .push(Released::Table(child), ctx.mem, ctx.tlb, ctx.on_unmapped);
                    }
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)] // one recursion step: the table and its range
    fn apply_protect(
        &self,
        mem: &impl TableMemory,
        tlb: &impl TlbOps,
        pool: &mut FramePool,
        table: u64,
        level: u8,
        attrs: Attributes,
        start: u64,
        end: u64,
    ) -> Result<(), MapError> {
        for chunk in chunks(level, start, end) {
            match decode(read_entry(mem, table, chunk.index), level) {
                Entry::Invalid => {
                    return Err(MapError::NotMapped {
                        va: self.va(chunk.start),
                    })
                }
                Entry::Leaf(raw) if chunk.whole => {
                    write_entry(mem, table, chunk.index, 0);
                    tlb.invalidate_page(self.va(chunk.start));
                    tlb.sync();
                    let desc = leaf_descriptor(leaf_output(raw), attrs, level);
                    write_entry(mem, table, chunk.index, desc);
                }
                Entry::Leaf(raw) => {
                    let child = self.split_block(
                        mem,
                        tlb,
                        pool,
                        table,
                        chunk.index,
                        level,
                        raw,
                        chunk.entry_start,
                    )?;
                    self.apply_protect(
                        mem,
                        tlb,
                        pool,
                        child,
                        level + 1,
                        attrs,
                        chunk.start,
                        chunk.end,
                    )?;
                }
                Entry::Table(child) => {
                    self.apply_protect(
                        mem,
                        tlb,
                        pool,
                        child,
                        level + 1,
                        attrs,
                        chunk.start,
                        chunk.end,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Counts the tables (of levels 1 to 3) missing below `node` for `[start, end)`.
    fn survey_prepare(
        &self,
        mem: &impl TableMemory,
        node: Node,
        level: u8,
        start: u64,
        end: u64,
    ) -> Result<usize, MapError> {
        let mut tables = 0;
        for chunk in chunks(level, start, end) {
            match self.entry(mem, node, chunk.index, level) {
                Entry::Leaf(_) => {
                    return Err(MapError::MappedByBlock {
                        va: self.va(chunk.start),
                    })
                }
                Entry::Table(_) if level == 2 => {}
                Entry::Table(child) => {
                    tables += self.survey_prepare(
                        mem,
                        Node::Table(child),
                        level + 1,
                        chunk.start,
                        chunk.end,
                    )?;
                }
                Entry::Invalid if level == 2 => tables += 1,
                Entry::Invalid => {
                    tables += 1 + self.survey_prepare(
                        mem,
                        Node::Missing,
                        level + 1,
                        chunk.start,
                        chunk.end,
                    )?;
                }
            }
        }
        Ok(tables)
    }

    fn apply_prepare(
        &self,
        mem: &impl TableMemory,
        pool: &mut FramePool,
        table: u64,
        level: u8,
        start: u64,
        end: u64,
    ) -> Result<(), MapError> {
        for chunk in chunks(level, start, end) {
            let child = match decode(read_entry(mem, table, chunk.index), level) {
                Entry::Leaf(_) => {
                    return Err(MapError::MappedByBlock {
                        va: self.va(chunk.start),
                    })
                }
                Entry::Table(child) => child,
                Entry::Invalid => {
                    let child = pool.take(mem)?;
                    write_entry(mem, table, chunk.index, table_descriptor(child));
                    child
                }
            };
            if level < 2 {
                self.apply_prepare(mem, pool, child, level + 1, chunk.start, chunk.end)?;
            }
        }
        Ok(())
    }
}

/// What an unmap carries down the tree.
struct UnmapContext<'a, M, T, F> {
    mem: &'a mut M,
    tlb: &'a T,
    pool: &'a mut FramePool,
    batch: &'a mut ReleaseBatch,
    reclaim: Reclaim,
    on_unmapped: &'a mut F,
}

fn check_aligned(what: &'static str, value: u64) -> Result<(), MapError> {
    if value.is_multiple_of(PAGE) {
        Ok(())
    } else {
        Err(MapError::Unaligned { what, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::boxed::Box;
    use alloc::vec;
    use alloc::vec::Vec;
    use core::cell::{RefCell, UnsafeCell};

    const FAKE_BASE: u64 = 0x4000_0000;
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    const GIB: u64 = 1024 * MIB;
    /// A TTBR1 address in the middle of the upper half.
    const KVA: u64 = 0xFFFF_8000_0000_0000;

    /// Fake physical memory: frames at FAKE_BASE + 4 KiB * i, counted.
    struct FakeMemory {
        frames: Vec<Option<Box<UnsafeCell<[u64; ENTRIES]>>>>,
        limit: usize,
        allocs: usize,
        frees: usize,
    }

    impl FakeMemory {
        fn new() -> Self {
            Self::with_limit(usize::MAX)
        }

        fn with_limit(limit: usize) -> Self {
            FakeMemory {
                frames: Vec::new(),
                limit,
                allocs: 0,
                frees: 0,
            }
        }

        fn live(&self) -> usize {
            self.frames.iter().filter(|f| f.is_some()).count()
        }

        fn index(pa: u64) -> usize {
            assert_eq!(pa % PAGE, 0, "table address {pa:#x} not aligned");
            ((pa - FAKE_BASE) / PAGE) as usize
        }
    }

    // SAFETY: every frame is a boxed, zeroed 512-entry array that lives until freed, and
    // table_ptr hands out a pointer from the UnsafeCell around it.
    unsafe impl TableMemory for FakeMemory {
        fn alloc_table(&mut self) -> Option<u64> {
            if self.live() >= self.limit {
                return None;
            }
            self.allocs += 1;
            let frame = Some(Box::new(UnsafeCell::new([0u64; ENTRIES])));
            let slot = match self.frames.iter().position(|f| f.is_none()) {
                Some(i) => {
                    self.frames[i] = frame;
                    i
                }
                None => {
                    self.frames.push(frame);
                    self.frames.len() - 1
                }
            };
            Some(FAKE_BASE + slot as u64 * PAGE)
        }

        fn free_table(&mut self, pa: u64) {
            let i = Self::index(pa);
            assert!(self.frames[i].is_some(), "double free of {pa:#x}");
            self.frames[i] = None;
            self.frees += 1;
        }

        fn table_ptr(&self, pa: u64) -> *mut u64 {
            let frame = self.frames[Self::index(pa)]
                .as_ref()
                .unwrap_or_else(|| panic!("{pa:#x} is not a live table"));
            frame.get().cast()
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Event {
        AfterMap,
        Invalidate(u64),
        Sync,
        Unmapped(u64, u64),
    }

    #[derive(Default)]
    struct RecordingTlb {
        events: RefCell<Vec<Event>>,
    }

    impl RecordingTlb {
        fn take(&self) -> Vec<Event> {
            core::mem::take(&mut *self.events.borrow_mut())
        }

        fn push(&self, event: Event) {
            self.events.borrow_mut().push(event);
        }
    }

    impl TlbOps for RecordingTlb {
        fn after_map(&self) {
            self.push(Event::AfterMap);
        }
        fn invalidate_page(&self, va: u64) {
            self.push(Event::Invalidate(va));
        }
        fn sync(&self) {
            self.push(Event::Sync);
        }
    }

    fn setup() -> (FakeMemory, RecordingTlb, PageTable) {
        let mut mem = FakeMemory::new();
        let pt = PageTable::new(&mut mem, Half::Upper).unwrap();
        (mem, RecordingTlb::default(), pt)
    }

    fn mappings(pt: &PageTable, mem: &FakeMemory) -> Vec<(u64, u64, u8)> {
        let mut all = Vec::new();
        pt.walk(mem, |va, t| all.push((va, t.pa, t.level)));
        all
    }

    const RO: Attributes = Attributes::new(MemoryType::Normal, Permission::ReadOnly);
    const RX: Attributes = Attributes::new(MemoryType::Normal, Permission::ReadExecute);

    #[test]
    fn page_bits_are_the_page_descriptor_without_its_address() {
        for memory in [
            MemoryType::Normal,
            MemoryType::Device,
            MemoryType::NormalNonCacheable,
        ] {
            for permission in [
                Permission::ReadOnly,
                Permission::ReadWrite,
                Permission::ReadExecute,
            ] {
                let attrs = Attributes::new(memory, permission);
                for pa in [0, 0x4000_0000, 0x0000_ffff_ffff_f000] {
                    assert_eq!(
                        PageTable::page_bits(attrs) | pa,
                        PageTable::page_descriptor(pa, attrs)
                    );
                }
            }
        }
    }

    #[test]
    fn maps_and_queries_pages() {
        let (mut mem, tlb, mut pt) = setup();
        pt.map(
            &mut mem,
            &tlb,
            KVA,
            0x8000_0000,
            3 * PAGE,
            Attributes::DATA,
            true,
        )
        .unwrap();
        for i in 0..3 {
            let t = pt.query(&mem, KVA + i * PAGE + 0x123).unwrap();
            assert_eq!(t.pa, 0x8000_0000 + i * PAGE + 0x123);
            assert_eq!(t.level, 3);
            assert_eq!(t.size(), PAGE);
            assert_eq!(t.attributes, Attributes::DATA);
        }
        assert_eq!(pt.query(&mem, KVA + 3 * PAGE), None);
        assert_eq!(pt.query(&mem, KVA - PAGE), None);
        // Root, L1, L2, L3.
        assert_eq!(mem.allocs, 4);
        let events = tlb.take();
        assert_eq!(events.last(), Some(&Event::AfterMap));
        assert!(!events.iter().any(|e| matches!(e, Event::Invalidate(_))));
    }

    #[test]
    fn maps_blocks_where_aligned_and_allowed() {
        let (mut mem, tlb, mut pt) = setup();
        pt.map(
            &mut mem,
            &tlb,
            KVA,
            0x4000_0000,
            GIB,
            Attributes::DATA,
            true,
        )
        .unwrap();
        // A 1 GiB block needs only the L1 table.
        assert_eq!(mem.allocs, 2);
        let t = pt.query(&mem, KVA + 0x1234_5678).unwrap();
        assert_eq!((t.level, t.pa), (1, 0x4000_0000 + 0x1234_5678));

        pt.map(
            &mut mem,
            &tlb,
            KVA + GIB,
            0x20_0000,
            2 * MIB,
            Attributes::DATA,
            true,
        )
        .unwrap();
        let t = pt.query(&mem, KVA + GIB + 0x1000).unwrap();
        assert_eq!((t.level, t.pa), (2, 0x20_1000));

        // Blocks not allowed: pages.
        pt.map(
            &mut mem,
            &tlb,
            KVA + GIB + 2 * MIB,
            0x40_0000,
            2 * MIB,
            Attributes::DATA,
            false,
        )
        .unwrap();
        assert_eq!(pt.query(&mem, KVA + GIB + 2 * MIB).unwrap().level, 3);

        // VA aligned but PA not aligned to 2 MiB: pages.
        pt.map(
            &mut mem,
            &tlb,
            KVA + GIB + 4 * MIB,
            0x60_1000,
            2 * MIB,
            Attributes::DATA,
            true,
        )
        .unwrap();
        assert_eq!(pt.query(&mem, KVA + GIB + 4 * MIB).unwrap().level, 3);

        // A range spanning a 2 MiB boundary unevenly: pages, one block, pages.
        let va = KVA + 2 * GIB + 2 * MIB - 2 * PAGE;
        let pa = 0x1_0000_0000 + 2 * MIB - 2 * PAGE;
        pt.map(
            &mut mem,
            &tlb,
            va,
            pa,
            2 * MIB + 4 * PAGE,
            Attributes::DATA,
            true,
        )
        .unwrap();
        let levels: Vec<u8> = mappings(&pt, &mem)
            .into_iter()
            .filter(|&(v, _, _)| v >= va)
            .map(|(_, _, l)| l)
            .collect();
        assert_eq!(levels, vec![3, 3, 2, 3, 3]);
        for offset in [0, PAGE, 2 * PAGE, MIB, 2 * MIB + 3 * PAGE] {
            assert_eq!(pt.query(&mem, va + offset).unwrap().pa, pa + offset);
        }
    }

    #[test]
    fn descriptors_match_the_boot_code_encoding() {
        // boot.s: PAGE_DATA, PAGE_TEXT and PAGE_RODATA.
        let normal = 0x3 | (1 << 10) | (3 << 8);
        let (pxn, uxn, ro) = (1u64 << 53, 1u64 << 54, 1u64 << 7);
        let pa = 0x4008_1000;
        assert_eq!(
            PageTable::page_descriptor(pa, Attributes::DATA),
            pa | normal | pxn | uxn
        );
        assert_eq!(PageTable::page_descriptor(pa, RX), pa | normal | ro | uxn);
        assert_eq!(
            PageTable::page_descriptor(pa, RO),
            pa | normal | ro | pxn | uxn
        );
        // Device: AttrIndx 1, never executable; non-cacheable: AttrIndx 2.
        let device = PageTable::page_descriptor(pa, Attributes::DEVICE);
        assert_eq!((device >> 2) & 7, 1);
        assert_eq!(device & (pxn | uxn), pxn | uxn);
        let device_rx = Attributes::new(MemoryType::Device, Permission::ReadExecute);
        let device_rx = PageTable::page_descriptor(pa, device_rx);
        assert_eq!(device_rx & (pxn | uxn | ro), pxn | uxn | ro);
        let nc = Attributes::new(MemoryType::NormalNonCacheable, Permission::ReadWrite);
        assert_eq!((PageTable::page_descriptor(pa, nc) >> 2) & 7, 2);
        // Global, and the low bits of the address ignored.
        assert_eq!(PageTable::page_descriptor(pa + 0x7ff, RO) & (1 << 11), 0);
        assert_eq!(
            PageTable::page_descriptor(pa + 0x7ff, RO),
            PageTable::page_descriptor(pa, RO)
        );
    }

    #[test]
    fn attributes_round_trip_and_keep_w_xor_x() {
        let (mut mem, tlb, mut pt) = setup();
        let memories = [
            MemoryType::Normal,
            MemoryType::Device,
            MemoryType::NormalNonCacheable,
        ];
        let permissions = [
            Permission::ReadOnly,
            Permission::ReadWrite,
            Permission::ReadExecute,
        ];
        let mut va = KVA;
        for memory in memories {
            for permission in permissions {
                let attrs = Attributes::new(memory, permission);
                let result = pt.map(&mut mem, &tlb, va, 0x9000_0000, PAGE, attrs, false);
                if memory == MemoryType::Device && permission == Permission::ReadExecute {
                    assert_eq!(result, Err(MapError::ExecutableDevice));
                    assert_eq!(pt.query(&mem, va), None);
                    continue;
                }
                result.unwrap();
                let t = pt.query(&mem, va).unwrap();
                assert_eq!(t.attributes, attrs);
                assert_eq!(t.writable(), permission == Permission::ReadWrite);
                assert_eq!(t.executable(), permission == Permission::ReadExecute);
                assert!(!(t.writable() && t.executable()));
                va += PAGE;
            }
        }
        let mut seen = 0;
        pt.walk(&mem, |_, t| {
            assert!(!(t.writable() && t.executable()), "W^X violated: {t:?}");
            seen += 1;
        });
        assert_eq!(seen, 8);
    }

    #[test]
    fn executable_decoding_catches_rwx() {
        // A writable and executable descriptor (never written by the manager) must show.
        let rw = PageTable::page_descriptor(0x1000, Attributes::DATA);
        let rwx = rw & !(1 << 53);
        let t = Translation::from_leaf(rwx, 3, 0);
        assert!(t.writable() && t.executable());
        assert_eq!(t.attributes.permission, Permission::ReadWrite);
        // EL0-writable memory is never executable at EL1.
        let el0_rw = rwx | (1 << 6);
        assert!(!Translation::from_leaf(el0_rw, 3, 0).executable());
    }

    #[test]
    fn refuses_overlaps_and_changes_nothing() {
        let (mut mem, tlb, mut pt) = setup();
        pt.map(
            &mut mem,
            &tlb,
            KVA + 4 * PAGE,
            0x8000_0000,
            2 * PAGE,
            RO,
            false,
        )
        .unwrap();
        let before = mappings(&pt, &mem);
        let allocs = mem.allocs;
        // Overlaps the end of the new range: the first pages must not have been mapped.
        let err = pt.map(&mut mem, &tlb, KVA, 0x9000_0000, 6 * PAGE, RO, false);
        assert_eq!(err, Err(MapError::AlreadyMapped { va: KVA + 4 * PAGE }));
        assert_eq!(mappings(&pt, &mem), before);
        assert_eq!(mem.allocs, allocs);

        // Overlap with a block, from a range that would need new tables.
        pt.map(
            &mut mem,
            &tlb,
            KVA + GIB,
            0x4000_0000,
            GIB,
            Attributes::DATA,
            true,
        )
        .unwrap();
        let before = mappings(&pt, &mem);
        let (allocs, frees) = (mem.allocs, mem.frees);
        let err = pt.map(
            &mut mem,
            &tlb,
            KVA + GIB - PAGE,
            0x9000_0000,
            2 * PAGE,
            RO,
            false,
        );
        assert_eq!(err, Err(MapError::AlreadyMapped { va: KVA + GIB }));
        assert_eq!(mappings(&pt, &mem), before);
        assert_eq!((mem.allocs, mem.frees), (allocs, frees));
    }

    #[test]
    fn rejects_bad_arguments() {
        let (mut mem, tlb, mut pt) = setup();
        let data = Attributes::DATA;
        let unaligned = |what, value| Err(MapError::Unaligned { what, value });
        assert_eq!(
            pt.map(&mut mem, &tlb, KVA + 1, 0, PAGE, data, false),
            unaligned("va", KVA + 1)
        );
        assert_eq!(
            pt.map(&mut mem, &tlb, KVA, 0x10, PAGE, data, false),
            unaligned("pa", 0x10)
        );
        assert_eq!(
            pt.map(&mut mem, &tlb, KVA, 0, 100, data, false),
            unaligned("size", 100)
        );
        assert_eq!(
            pt.unmap(&mut mem, &tlb, KVA, 1, Reclaim::KeepTables, |_, _| {}),
            unaligned("size", 1)
        );
        // Lower-half address in a TTBR1 table, a range running past the top, a PA past 48
        // bits.
        let low = 0x4000_0000;
        assert_eq!(
            pt.map(&mut mem, &tlb, low, 0, PAGE, data, false),
            Err(MapError::OutOfRange {
                va: low,
                size: PAGE
            })
        );
        let top = u64::MAX - PAGE + 1;
        assert_eq!(
            pt.map(&mut mem, &tlb, top, 0, 2 * PAGE, data, false),
            Err(MapError::OutOfRange {
                va: top,
                size: 2 * PAGE
            })
        );
        let pa = PA_LIMIT - PAGE;
        assert_eq!(
            pt.map(&mut mem, &tlb, KVA, pa, 2 * PAGE, data, false),
            Err(MapError::PhysOutOfRange { pa, size: 2 * PAGE })
        );
        assert_eq!(pt.query(&mem, low), None);
        assert_eq!(pt.leaf_slot(&mem, low), None);
        // Nothing was created by any of that; an empty range is a no-op.
        assert_eq!(mem.allocs, 1);
        assert_eq!(pt.map(&mut mem, &tlb, KVA, 0, 0, data, false), Ok(()));
        assert_eq!(mem.allocs, 1);
        // Every error has a message.
        let text = alloc::format!("{}", MapError::AlreadyMapped { va: KVA });
        assert_eq!(text, "0xffff800000000000 is already mapped");
    }

    #[test]
    fn the_topmost_page_maps() {
        let (mut mem, tlb, mut pt) = setup();
        let top = u64::MAX - PAGE + 1;
        pt.map(&mut mem, &tlb, top, 0x5000, PAGE, RO, false)
            .unwrap();
        assert_eq!(pt.query(&mem, u64::MAX).unwrap().pa, 0x5fff);
        assert_eq!(mappings(&pt, &mem), vec![(top, 0x5000, 3)]);
    }

    #[test]
    fn unmap_invalidates_every_page_then_reports_it() {
        let (mut mem, tlb, mut pt) = setup();
        pt.map(
            &mut mem,
            &tlb,
            KVA,
            0x8000_0000,
            4 * PAGE,
            Attributes::DATA,
            false,
        )
        .unwrap();
        tlb.take();
        pt.unmap(
            &mut mem,
            &tlb,
            KVA + PAGE,
            3 * PAGE,
            Reclaim::KeepTables,
            |va, pa| tlb.push(Event::Unmapped(va, pa)),
        )
        .unwrap();
        let mut expected: Vec<Event> = (1..4).map(|i| Event::Invalidate(KVA + i * PAGE)).collect();
        expected.push(Event::Sync);
        expected.extend((1..4).map(|i| Event::Unmapped(KVA + i * PAGE, 0x8000_0000 + i * PAGE)));
        assert_eq!(tlb.take(), expected);
        assert!(pt.query(&mem, KVA).is_some());
        for i in 1..4 {
            assert_eq!(pt.query(&mem, KVA + i * PAGE), None);
        }
        // Tables kept: the slot is still there for the growth path.
        assert!(pt.leaf_slot(&mem, KVA + PAGE).is_some());
        assert_eq!(mem.frees, 0);
    }

    #[test]
    fn unmap_of_many_pages_batches_syncs_before_reporting() {
        let (mut mem, tlb, mut pt) = setup();
        let pages = 40;
        pt.map(
            &mut mem,
            &tlb,
            KVA,
            0x8000_0000,
            pages * PAGE,
            Attributes::DATA,
            false,
        )
        .unwrap();
        tlb.take();
        pt.unmap(
            &mut mem,
            &tlb,
            KVA,
            pages * PAGE,
            Reclaim::KeepTables,
            |va, pa| tlb.push(Event::Unmapped(va, pa)),
        )
        .unwrap();
        let events = tlb.take();
        let mut invalidated = Vec::new();
        let mut synced = 0;
        let mut reported = Vec::new();
        for event in events {
            match event {
                Event::Invalidate(va) => invalidated.push(va),
                Event::Sync => synced = invalidated.len(),
                Event::Unmapped(va, pa) => {
                    assert!(
                        invalidated[..synced].contains(&va),
                        "{va:#x} reported before its sync"
                    );
                    assert_eq!(pa - 0x8000_0000, va - KVA);
                    reported.push(va);
                }
                Event::AfterMap => panic!("unmap made something valid"),
            }
        }
        let all: Vec<u64> = (0..pages).map(|i| KVA + i * PAGE).collect();
        assert_eq!(invalidated, all);
        assert_eq!(reported, all);
    }

    #[test]
    fn unmap_of_a_hole_changes_nothing() {
        let (mut mem, tlb, mut pt) = setup();
        pt.map(
            &mut mem,
            &tlb,
            KVA,
            0x8000_0000,
            PAGE,
            Attributes::DATA,
            false,
        )
        .unwrap();
        pt.map(
            &mut mem,
            &tlb,
            KVA + 2 * PAGE,
            0x8000_2000,
            PAGE,
            Attributes::DATA,
            false,
        )
        .unwrap();
        tlb.take();
        let mut reported = 0;
        let err = pt.unmap(
            &mut mem,
            &tlb,
            KVA,
            3 * PAGE,
            Reclaim::FreeEmptyTables,
            |_, _| reported += 1,
        );
        assert_eq!(err, Err(MapError::NotMapped { va: KVA + PAGE }));
        assert_eq!(reported, 0);
        assert!(tlb.take().is_empty());
        assert_eq!(mappings(&pt, &mem).len(), 2);
        let err = pt.protect(&mut mem, &tlb, KVA, 3 * PAGE, RO);
        assert_eq!(err, Err(MapError::NotMapped { va: KVA + PAGE }));
        assert_eq!(pt.query(&mem, KVA).unwrap().attributes, Attributes::DATA);
    }

    #[test]
    fn partial_unmap_splits_a_block_and_keeps_the_rest() {
        let (mut mem, tlb, mut pt) = setup();
        let block_va = KVA + 2 * MIB;
        let block_pa = 0x8020_0000;
        pt.map(&mut mem, &tlb, block_va, block_pa, 2 * MIB, RX, true)
            .unwrap();
        assert_eq!(pt.query(&mem, block_va).unwrap().level, 2);
        tlb.take();
        let allocs = mem.allocs;
        let hole = block_va + 5 * PAGE;
        let mut reported = Vec::new();
        pt.unmap(&mut mem, &tlb, hole, PAGE, Reclaim::KeepTables, |va, pa| {
            reported.push((va, pa))
        })
        .unwrap();
        assert_eq!(reported, vec![(hole, block_pa + 5 * PAGE)]);
        assert_eq!(mem.allocs, allocs + 1);
        // Break (invalidate the block, wait), make (publish the table), then the page.
        assert_eq!(
            tlb.take(),
            vec![
                Event::Invalidate(block_va),
                Event::Sync,
                Event::AfterMap,
                Event::Invalidate(hole),
                Event::Sync,
            ]
        );
        assert_eq!(pt.query(&mem, hole), None);
        let all = mappings(&pt, &mem);
        assert_eq!(all.len(), 511);
        for (va, pa, level) in all {
            assert_eq!(level, 3);
            assert_eq!(pa - block_pa, va - block_va);
            assert_eq!(pt.query(&mem, va).unwrap().attributes, RX);
        }
    }

    #[test]
    fn partial_unmap_of_a_gigabyte_block_splits_level_by_level() {
        let (mut mem, tlb, mut pt) = setup();
        pt.map(
            &mut mem,
            &tlb,
            KVA,
            0x4000_0000,
            GIB,
            Attributes::DATA,
            true,
        )
        .unwrap();
        let allocs = mem.allocs;
        let mut count = 0;
        // A 2 MiB-aligned 2 MiB piece: the 1 GiB block becomes 2 MiB blocks, one goes.
        pt.unmap(
            &mut mem,
            &tlb,
            KVA + 4 * MIB,
            2 * MIB,
            Reclaim::KeepTables,
            |_, _| count += 1,
        )
        .unwrap();
        assert_eq!(count, 512);
        assert_eq!(mem.allocs, allocs + 1);
        let all = mappings(&pt, &mem);
        assert_eq!(all.len(), 511);
        assert!(all.iter().all(|&(_, _, level)| level == 2));
        // One page out of another 2 MiB block: that block becomes pages.
        pt.unmap(
            &mut mem,
            &tlb,
            KVA + 10 * MIB + PAGE,
            PAGE,
            Reclaim::KeepTables,
            |_, pa| assert_eq!(pa, 0x4000_0000 + 10 * MIB + PAGE),
        )
        .unwrap();
        assert_eq!(mem.allocs, allocs + 2);
        assert_eq!(mappings(&pt, &mem).len(), 510 + 511);
        let t = pt.query(&mem, KVA + 10 * MIB).unwrap();
        assert_eq!((t.level, t.pa), (3, 0x4000_0000 + 10 * MIB));
        assert_eq!(pt.query(&mem, KVA + 12 * MIB).unwrap().level, 2);
    }

    #[test]
    fn unmap_of_a_whole_block_reports_every_page() {
        let (mut mem, tlb, mut pt) = setup();
        pt.map(
            &mut mem,
            &tlb,
            KVA,
            0x8000_0000,
            2 * MIB,
            Attributes::DATA,
            true,
        )
        .unwrap();
        tlb.take();
        let mut pages = Vec::new();
        pt.unmap(
            &mut mem,
            &tlb,
            KVA,
            2 * MIB,
            Reclaim::KeepTables,
            |va, pa| pages.push((va, pa)),
        )
        .unwrap();
        assert_eq!(pages.len(), 512);
        assert_eq!(
            pages[511],
            (KVA + 2 * MIB - PAGE, 0x8000_0000 + 2 * MIB - PAGE)
        );
        assert_eq!(tlb.take(), vec![Event::Invalidate(KVA), Event::Sync]);
    }

    #[test]
    fn reclaim_frees_emptied_tables_after_invalidating_them() {
        let (mut mem, tlb, mut pt) = setup();
        pt.map(
            &mut mem,
            &tlb,
            KVA,
            0x8000_0000,
            2 * PAGE,
            Attributes::DATA,
            false,
        )
        .unwrap();
        assert_eq!(mem.live(), 4);
        pt.unmap(
            &mut mem,
            &tlb,
            KVA,
            PAGE,
            Reclaim::FreeEmptyTables,
            |_, _| {},
        )
        .unwrap();
        // Not empty yet.
        assert_eq!(mem.live(), 4);
        tlb.take();
        pt.unmap(
            &mut mem,
            &tlb,
            KVA + PAGE,
            PAGE,
            Reclaim::FreeEmptyTables,
            |_, _| {},
        )
        .unwrap();
        assert_eq!(mem.live(), 1);
        assert_eq!(mem.frees, 3);
        // The page and each unlinked table are invalidated before one sync.
        let events = tlb.take();
        assert_eq!(events.last(), Some(&Event::Sync));
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, Event::Invalidate(_)))
                .count(),
            4
        );
        assert!(mappings(&pt, &mem).is_empty());
        assert_eq!(pt.leaf_slot(&mem, KVA), None);
        // And the tree is usable again.
        pt.map(&mut mem, &tlb, KVA, 0x8000_0000, PAGE, RO, false)
            .unwrap();
        assert_eq!(pt.query(&mem, KVA).unwrap().pa, 0x8000_0000);
    }

    #[test]
    fn protect_changes_attributes_with_break_before_make() {
        let (mut mem, tlb, mut pt) = setup();
        pt.map(
            &mut mem,
            &tlb,
            KVA,
            0x8000_0000,
            2 * PAGE,
            Attributes::DATA,
            false,
        )
        .unwrap();
        tlb.take();
        pt.protect(&mut mem, &tlb, KVA, 2 * PAGE, RO).unwrap();
        assert_eq!(
            tlb.take(),
            vec![
                Event::Invalidate(KVA),
                Event::Sync,
                Event::Invalidate(KVA + PAGE),
                Event::Sync,
                Event::AfterMap,
            ]
        );
        for i in 0..2 {
            let t = pt.query(&mem, KVA + i * PAGE).unwrap();
            assert_eq!((t.pa, t.attributes), (0x8000_0000 + i * PAGE, RO));
        }
        assert_eq!(
            pt.protect(
                &mut mem,
                &tlb,
                KVA,
                PAGE,
                Attributes::new(MemoryType::Device, Permission::ReadExecute)
            ),
            Err(MapError::ExecutableDevice)
        );
    }

    #[test]
    fn protect_of_part_of_a_block_splits_it() {
        let (mut mem, tlb, mut pt) = setup();
        pt.map(
            &mut mem,
            &tlb,
            KVA,
            0x8000_0000,
            2 * MIB,
            Attributes::DATA,
            true,
        )
        .unwrap();
        pt.protect(&mut mem, &tlb, KVA, PAGE, RX).unwrap();
        let first = pt.query(&mem, KVA).unwrap();
        assert_eq!(
            (first.level, first.attributes, first.pa),
            (3, RX, 0x8000_0000)
        );
        let second = pt.query(&mem, KVA + PAGE).unwrap();
        assert_eq!((second.level, second.attributes), (3, Attributes::DATA));
        // A whole block keeps being a block.
        pt.map(
            &mut mem,
            &tlb,
            KVA + 2 * MIB,
            0x8020_0000,
            2 * MIB,
            Attributes::DATA,
            true,
        )
        .unwrap();
        pt.protect(&mut mem, &tlb, KVA + 2 * MIB, 2 * MIB, RO)
            .unwrap();
        let t = pt.query(&mem, KVA + 3 * MIB).unwrap();
        assert_eq!((t.level, t.attributes, t.pa), (2, RO, 0x8030_0000));
    }

    #[test]
    fn mapping_next_to_a_mapping_reuses_its_tables() {
        let (mut mem, tlb, mut pt) = setup();
        pt.map(
            &mut mem,
            &tlb,
            KVA,
            0x8000_0000,
            PAGE,
            Attributes::DATA,
            false,
        )
        .unwrap();
        let allocs = mem.allocs;
        pt.map(
            &mut mem,
            &tlb,
            KVA + PAGE,
            0x8000_5000,
            PAGE,
            Attributes::DATA,
            false,
        )
        .unwrap();
        pt.map(&mut mem, &tlb, KVA + MIB, 0x8000_6000, 4 * PAGE, RO, false)
            .unwrap();
        assert_eq!(mem.allocs, allocs);
        // The next 2 MiB needs one more L3 table, nothing else.
        pt.map(&mut mem, &tlb, KVA + 2 * MIB, 0x8000_0000, PAGE, RO, false)
            .unwrap();
        assert_eq!(mem.allocs, allocs + 1);
    }

    #[test]
    fn prepared_tables_make_later_maps_allocation_free() {
        let (mut mem, tlb, mut pt) = setup();
        let arena = KVA + 8 * GIB;
        let size = 6 * MIB;
        // Root exists: L1, L2 and three L3 tables.
        assert_eq!(pt.prepare_tables(&mut mem, &tlb, arena, size), Ok(5));
        assert_eq!(tlb.take().last(), Some(&Event::AfterMap));
        assert!(mappings(&pt, &mem).is_empty());
        assert_eq!(pt.prepare_tables(&mut mem, &tlb, arena, size), Ok(0));
        let allocs = mem.allocs;
        pt.map(
            &mut mem,
            &tlb,
            arena + size - 3 * PAGE,
            0x8000_0000,
            3 * PAGE,
            Attributes::DATA,
            true,
        )
        .unwrap();
        // Blocks are not put where a table already is.
        pt.map(
            &mut mem,
            &tlb,
            arena,
            0x8000_0000,
            2 * MIB,
            Attributes::DATA,
            true,
        )
        .unwrap();
        assert_eq!(pt.query(&mem, arena).unwrap().level, 3);
        assert_eq!(mem.allocs, allocs);
        for offset in (0..size).step_by(PAGE_SIZE) {
            assert!(pt.leaf_slot(&mem, arena + offset).is_some());
        }
        // A block in the way.
        pt.map(
            &mut mem,
            &tlb,
            KVA,
            0x8000_0000,
            2 * MIB,
            Attributes::DATA,
            true,
        )
        .unwrap();
        assert_eq!(
            pt.prepare_tables(&mut mem, &tlb, KVA + 2 * MIB - PAGE, 2 * PAGE),
            Err(MapError::MappedByBlock {
                va: KVA + 2 * MIB - PAGE
            })
        );
    }

    #[test]
    fn leaf_slot_store_equals_map() {
        let (mut mem, tlb, mut pt) = setup();
        let (mut other_mem, mut other) = {
            let mut m = FakeMemory::new();
            let t = PageTable::new(&mut m, Half::Upper).unwrap();
            (m, t)
        };
        let va = KVA + 3 * GIB + 7 * PAGE;
        pt.prepare_tables(&mut mem, &tlb, va, PAGE).unwrap();
        let slot = pt.leaf_slot(&mem, va).unwrap();
        let desc = PageTable::page_descriptor(0x8765_4000, Attributes::DATA);
        // SAFETY: the slot is the L3 entry of a live fake table.
        unsafe { core::ptr::write_volatile(slot, desc) };
        other
            .map(
                &mut other_mem,
                &tlb,
                va,
                0x8765_4000,
                PAGE,
                Attributes::DATA,
                false,
            )
            .unwrap();
        assert_eq!(pt.query(&mem, va), other.query(&other_mem, va));
        let other_slot = other.leaf_slot(&other_mem, va).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { core::ptr::read_volatile(other_slot) }, desc);
        // A block has no slot.
        pt.map(
            &mut mem,
            &tlb,
            KVA,
            0x4000_0000,
            GIB,
            Attributes::DATA,
            true,
        )
        .unwrap();
        assert_eq!(pt.leaf_slot(&mem, KVA + PAGE), None);
    }

    #[test]
    fn out_of_memory_leaves_no_trace() {
        let (mut mem, tlb, mut pt) = setup();
        pt.map(
            &mut mem,
            &tlb,
            KVA,
            0x8000_0000,
            PAGE,
            Attributes::DATA,
            false,
        )
        .unwrap();
        let before = mappings(&pt, &mem);
        let live = mem.live();
        // 6 MiB of pages from KVA + 2 MiB - 4 KiB needs three more L3 tables: allow two.
        mem.limit = live + 2;
        let err = pt.map(
            &mut mem,
            &tlb,
            KVA + 2 * MIB - PAGE,
            0x9000_0000,
            6 * MIB,
            Attributes::DATA,
            false,
        );
        assert_eq!(err, Err(MapError::OutOfMemory));
        assert_eq!(mappings(&pt, &mem), before);
        assert_eq!(mem.live(), live);
        assert_eq!(mem.allocs - mem.frees, live);
        mem.limit = live + 3;
        pt.map(
            &mut mem,
            &tlb,
            KVA + 2 * MIB - PAGE,
            0x9000_0000,
            6 * MIB,
            Attributes::DATA,
            false,
        )
        .unwrap();

        // prepare_tables and a splitting unmap fail whole too.
        let live = mem.live();
        mem.limit = live;
        assert_eq!(
            pt.prepare_tables(&mut mem, &tlb, KVA + 4 * GIB, PAGE),
            Err(MapError::OutOfMemory)
        );
        pt.map(
            &mut mem,
            &tlb,
            KVA + GIB,
            0x4000_0000,
            GIB,
            Attributes::DATA,
            true,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let before = mappings(&pt, &mem);
        let mut reported = 0;
        let err = pt.unmap(
            &mut mem,
            &tlb,
            KVA + GIB,
            PAGE,
            Reclaim::KeepTables,
            |_, _| reported += 1,
        );
        assert_eq!(err, Err(MapError::OutOfMemory));
        assert_eq!(reported, 0);
        assert_eq!(mappings(&pt, &mem), before);
        assert_eq!(mem.live(), live);
    }

    #[test]
    fn upper_half_addresses_index_from_bit_47_down() {
        let (mut mem, tlb, mut pt) = setup();
        pt.map(&mut mem, &tlb, KVA, 0x8000_0000, PAGE, RO, false)
            .unwrap();
        let root = pt.root_pa();
        let entry = |mem: &FakeMemory, table, i| read_entry(mem, table, i);
        let used: Vec<usize> = (0..ENTRIES)
            .filter(|&i| entry(&mem, root, i) != 0)
            .collect();
        assert_eq!(used, vec![256]);
        let top = u64::MAX - PAGE + 1;
        pt.map(&mut mem, &tlb, top, 0x8000_1000, PAGE, RO, false)
            .unwrap();
        let mut table = root;
        for level in 0..3 {
            match decode(entry(&mem, table, 511), level) {
                Entry::Table(next) => table = next,
                other => panic!("level {level}: {other:?}"),
            }
        }
        assert_ne!(entry(&mem, table, 511), 0);
        // The kernel's boot layout: L0[511] -> L1[510] -> L2[0].
        let kernel = 0xFFFF_FFFF_8000_0000;
        pt.map(&mut mem, &tlb, kernel, 0x4008_0000, PAGE, RX, false)
            .unwrap();
        let l1 = match decode(entry(&mem, root, 511), 0) {
            Entry::Table(l1) => l1,
            other => panic!("{other:?}"),
        };
        assert!(matches!(decode(entry(&mem, l1, 510), 1), Entry::Table(_)));

        // A lower-half table indexes the same offsets from address 0.
        let mut low = PageTable::new(&mut mem, Half::Lower).unwrap();
        low.map(&mut mem, &tlb, 0x4000_0000, 0x4000_0000, PAGE, RO, false)
            .unwrap();
        assert_eq!(low.query(&mem, 0x4000_0000).unwrap().pa, 0x4000_0000);
        assert_eq!(low.query(&mem, KVA), None);
        assert_eq!(mappings(&low, &mem), vec![(0x4000_0000, 0x4000_0000, 3)]);
    }

    #[test]
    fn adopted_tables_work_like_their_creator() {
        let (mut mem, tlb, mut pt) = setup();
        pt.map(&mut mem, &tlb, KVA, 0x8000_0000, 2 * PAGE, RO, false)
            .unwrap();
        // SAFETY: the root belongs to `pt`, which is not used again.
        let mut adopted = unsafe { PageTable::from_root(pt.root_pa(), Half::Upper) };
        assert_eq!(adopted.root_pa(), pt.root_pa());
        assert_eq!(adopted.half(), Half::Upper);
        assert_eq!(adopted.query(&mem, KVA + PAGE).unwrap().pa, 0x8000_1000);
        let allocs = mem.allocs;
        adopted
            .map(&mut mem, &tlb, KVA + 2 * PAGE, 0x8000_2000, PAGE, RO, false)
            .unwrap();
        assert_eq!(mem.allocs, allocs);
    }

    #[test]
    fn walk_visits_exactly_the_mappings() {
        let (mut mem, tlb, mut pt) = setup();
        pt.map(
            &mut mem,
            &tlb,
            KVA + GIB,
            0x4000_0000,
            GIB,
            Attributes::DATA,
            true,
        )
        .unwrap();
        pt.map(&mut mem, &tlb, KVA + 2 * MIB, 0x20_0000, 2 * MIB, RX, true)
            .unwrap();
        pt.map(
            &mut mem,
            &tlb,
            KVA + 5 * PAGE,
            0x9000_0000,
            2 * PAGE,
            RO,
            true,
        )
        .unwrap();
        pt.prepare_tables(&mut mem, &tlb, KVA + 10 * GIB, 4 * MIB)
            .unwrap();
        assert_eq!(
            mappings(&pt, &mem),
            vec![
                (KVA + 5 * PAGE, 0x9000_0000, 3),
                (KVA + 6 * PAGE, 0x9000_1000, 3),
                (KVA + 2 * MIB, 0x20_0000, 2),
                (KVA + GIB, 0x4000_0000, 1),
            ]
        );
    }
}
