//! Unmapping and changing attributes: block splitting with break-before-make, batched
//! invalidation before anything is given back, and freeing emptied tables.
use super::*;

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

/// Something an unmap gives back once its invalidations have completed.
#[derive(Debug, Clone, Copy)]
pub(super) enum Released {
    /// A page or block, reported to the caller page by page.
    Pages { va: u64, pa: u64, size: u64 },
    /// A table frame, returned to the `TableMemory`.
    Table(u64),
}

/// Releases waiting for the `DSB ISH` that completes their invalidations: a frame must not
/// be reused while another CPU may still hold a translation to it.
pub(super) struct ReleaseBatch {
    pub(super) items: [Released; RELEASE_BATCH],
    pub(super) len: usize,
}

impl ReleaseBatch {
    pub(super) fn new() -> Self {
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

    pub(super) fn flush(
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

/// What an unmap carries down the tree.
pub(super) struct UnmapContext<'a, M, T, F> {
    pub(super) mem: &'a mut M,
    pub(super) tlb: &'a T,
    pub(super) pool: &'a mut FramePool,
    pub(super) batch: &'a mut ReleaseBatch,
    pub(super) reclaim: Reclaim,
    pub(super) on_unmapped: &'a mut F,
}

impl PageTable {
    /// Counts the tables splitting blocks at the edges of `[start, end)` needs, or finds an
    /// unmapped address in the range.
    pub(super) fn survey_mapped(
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

    pub(super) fn apply_unmap<M: TableMemory, T: TlbOps, F: FnMut(u64, u64)>(
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
    pub(super) fn apply_protect(
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
}
