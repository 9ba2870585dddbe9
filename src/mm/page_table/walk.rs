//! How an operation walks the tree: the entries a range touches at each level ([`chunks`]),
//! the tables a survey imagines ([`Node`]), ranges turned into offsets, and [`PageTable::walk`]'s
//! recursion.
use super::*;

/// A table in the making during a survey: either a real one or one that the operation would
/// create.
#[derive(Debug, Clone, Copy)]
pub(super) enum Node {
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
pub(super) struct Chunk {
    /// Index of the entry.
    pub(super) index: usize,
    /// First offset the entry covers.
    pub(super) entry_start: u64,
    /// First offset in both the entry and the range.
    pub(super) start: u64,
    /// End (exclusive) of the part of the range inside the entry.
    pub(super) end: u64,
    /// Whether the range covers the whole entry.
    pub(super) whole: bool,
}

/// Iterates the entries of a level-`level` table that `[start, end)` touches.
pub(super) fn chunks(level: u8, start: u64, end: u64) -> impl Iterator<Item = Chunk> {
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

impl PageTable {
    pub(super) fn walk_table(
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
    pub(super) fn range(&self, va: u64, size: u64) -> Result<Option<(u64, u64)>, MapError> {
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

    pub(super) fn va(&self, offset: u64) -> u64 {
        self.half.base() | offset
    }

    pub(super) fn entry(
        &self,
        mem: &impl TableMemory,
        node: Node,
        index: usize,
        level: u8,
    ) -> Entry {
        match node {
            Node::Table(pa) => decode(read_entry(mem, pa, index), level),
            Node::Missing => Entry::Invalid,
            // Only the leaf-ness of a split block's entries matters to a survey.
            Node::Split => Entry::Leaf(0),
        }
    }
}
