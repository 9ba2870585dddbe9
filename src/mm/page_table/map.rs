//! Mapping and preparing tables: survey first (overlaps, tables needed), take every frame
//! up front ([`FramePool`]), then edit.
use super::*;

/// Frames taken before an edit starts, so the edit itself cannot run out of memory. They
/// are chained through their first word, which holds a page-aligned address and therefore
/// reads as an invalid descriptor should a walker ever see it.
pub(super) struct FramePool {
    pub(super) head: u64,
    pub(super) count: usize,
}

impl FramePool {
    /// Takes `count` frames from `mem`, or none at all.
    pub(super) fn fill(mem: &mut impl TableMemory, count: usize) -> Result<Self, MapError> {
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
    pub(super) fn take(&mut self, mem: &impl TableMemory) -> Result<u64, MapError> {
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
    pub(super) fn release(&mut self, mem: &mut impl TableMemory) {
        while let Ok(pa) = self.take(mem) {
            mem.free_table(pa);
        }
    }
}

/// A validated mapping request, in offsets within the half.
#[derive(Debug, Clone, Copy)]
pub(super) struct MapRequest {
    pub(super) start: u64,
    pub(super) pa: u64,
    pub(super) attrs: Attributes,
    pub(super) allow_blocks: bool,
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
    /// Counts the tables mapping `[start, end)` below `node` needs, or finds a mapped
    /// address in the range.
    pub(super) fn survey_map(
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
    pub(super) fn apply_map(
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

    /// Counts the tables (of levels 1 to 3) missing below `node` for `[start, end)`.
    pub(super) fn survey_prepare(
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

    pub(super) fn apply_prepare(
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
