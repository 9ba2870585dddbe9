//! The translation-table manager: AArch64 stage 1 tables with a 4 KiB granule, 48-bit
//! virtual addresses and four levels (L0..L3), for either half of the address space.
//!
//! Owns the layout and encoding of translation-table descriptors and every edit of a table:
//! mapping (1 GiB and 2 MiB blocks or 4 KiB pages), unmapping (splitting blocks with
//! break-before-make), changing attributes, lookups, walks, and creating last-level tables
//! ahead of time so that the stack-growth path is a single descriptor store into an L3
//! table that already exists.
//!
//! It calls nothing outside this folder: physical frames for tables come from a
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
//!
//! The files: this one (the traits, [`PageTable`] and its public operations), `descriptor`
//! (the formats), `walk` (how a range is cut into entries, level by level), `map`
//! (mapping and preparing tables), `unmap` (unmapping and changing attributes), `error`,
//! `regime` (MAIR, TCR and SCTLR as the boot code programs them, and the boot descriptors).

mod descriptor;
mod error;
mod map;
mod regime;
mod unmap;
mod walk;

pub use descriptor::*;
pub use error::*;
use map::*;
pub use regime::*;
pub use unmap::*;
use walk::*;

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

/// One stage 1 translation table tree (a root and everything below it) for one half of the
/// address space.
#[derive(Debug)]
pub struct PageTable {
    root_pa: u64,
    half: Half,
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
}

fn check_aligned(what: &'static str, value: u64) -> Result<(), MapError> {
    if value.is_multiple_of(PAGE) {
        Ok(())
    } else {
        Err(MapError::Unaligned { what, value })
    }
}

#[cfg(test)]
mod tests;
