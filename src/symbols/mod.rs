//! The kernel's symbol table: function names for the addresses in a report, as Linux's
//! kallsyms gives them, without linking the kernel twice.
//!
//! `linker.ld` reserves a fixed-size read-only section, `.ksyms` (between `__ksyms_start` and
//! `__ksyms_end`), that is zero after the link. The build fills it afterwards
//! (`scripts/ksyms.py`: `llvm-nm` of the linked ELF, then `llvm-objcopy --update-section` with
//! exactly the section's size, so no address moves): the Makefile for the kernel and the Pi
//! images (before the raw image is made), `scripts/run_tests.py` for every kernel it boots.
//! A kernel whose section was never filled has no table ([`TableError::Empty`]) and its
//! reports print bare addresses, as before.
//!
//! The table, version 1, little-endian (the writer, `scripts/ksyms.py`, says the same):
//!
//! | offset | field | |
//! |---|---|---|
//! | 0 | magic | 8 bytes, [`MAGIC`] |
//! | 8 | version | `u32`, [`VERSION`] |
//! | 12 | count | `u32`, number of entries |
//! | 16 | base | `u64`, first address covered (`__text_start`) |
//! | 24 | end | `u64`, one past the last (`__text_end`) |
//! | 32 | names_len | `u32`, bytes of the name area |
//! | 36 | reserved | `u32` |
//! | 40 | entries | count × (`u32` address − base, `u32` start of its name in the name area), ascending, no two alike |
//! | 40 + 8 × count | names | names_len bytes, each name UTF-8 and ended by a NUL byte |
//!
//! Names are demangled without Rust's hash (`dynstack::shell::run`). The bytes are input like
//! any other: [`Table::parse`] checks the header, the sizes and the order of the entries, and
//! [`Table::lookup`] checks the one name it returns; a malformed table gives an error or
//! `None`, never a panic or a read out of bounds. Lookup is a binary search, allocates nothing
//! and takes no lock, so the panic path can use it with the heap gone.
//!
//! [`caller`] finds the frame an allocation failure belongs to. Host-tested (`tests.rs`); on
//! the target, [`kernel_table`] reads the kernel's own section.
pub mod caller;
#[cfg(test)]
mod tests;

use core::fmt;

/// The first eight bytes of a filled table.
pub const MAGIC: [u8; 8] = *b"DKSYMTAB";
/// The table layout this reader understands.
pub const VERSION: u32 = 1;
/// Bytes of the header, before the entries.
pub const HEADER_LEN: usize = 40;
/// Bytes of one entry.
pub const ENTRY_LEN: usize = 8;

/// Why bytes are not a symbol table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// All zero where the magic belongs: the section was never filled.
    Empty,
    /// Not the magic: not a table.
    BadMagic,
    /// A table of another layout version.
    Version(u32),
    /// The header says more entries or name bytes than the bytes hold.
    Truncated,
    /// The covered range is empty or wider than 32-bit offsets reach.
    BadRange,
    /// An entry is out of order, a duplicate, or lies outside the covered range.
    Unsorted,
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            TableError::Empty => write!(f, "empty (the build did not fill it)"),
            TableError::BadMagic => write!(f, "not a symbol table (bad magic)"),
            TableError::Version(v) => write!(f, "version {v}, expected {VERSION}"),
            TableError::Truncated => write!(f, "truncated"),
            TableError::BadRange => write!(f, "bad address range"),
            TableError::Unsorted => write!(f, "entries out of order or out of range"),
        }
    }
}

/// A checked symbol table over borrowed bytes.
#[derive(Clone, Copy, Debug)]
pub struct Table<'a> {
    base: u64,
    end: u64,
    entries: &'a [u8],
    names: &'a [u8],
}

/// The function an address lies in: its name and how far into it the address is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Symbol<'a> {
    /// The function's name, demangled.
    pub name: &'a str,
    /// The function's first address.
    pub start: u64,
    /// `address - start`.
    pub offset: u64,
}

impl fmt::Display for Symbol<'_> {
    /// `name+0xoff`, as Linux prints a frame.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}+{:#x}", self.name, self.offset)
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    let mut v = [0u8; 8];
    v.copy_from_slice(b);
    Some(u64::from_le_bytes(v))
}

impl<'a> Table<'a> {
    /// Checks `bytes` (a whole `.ksyms` section: the table, then padding) and returns the
    /// table in it. Checks the magic, the version, that the entries and names fit in
    /// `bytes`, that the covered range is sane and that the entries ascend strictly inside
    /// it; names are checked when [`lookup`](Self::lookup) returns one.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, TableError> {
        let magic = bytes.get(..MAGIC.len()).ok_or(TableError::Truncated)?;
        if magic != MAGIC {
            return Err(if magic.iter().all(|&b| b == 0) {
                TableError::Empty
            } else {
                TableError::BadMagic
            });
        }
        let header = |at| u32_at(bytes, at).ok_or(TableError::Truncated);
        let version = header(8)?;
        if version != VERSION {
            return Err(TableError::Version(version));
        }
        let count = header(12)? as usize;
        let base = u64_at(bytes, 16).ok_or(TableError::Truncated)?;
        let end = u64_at(bytes, 24).ok_or(TableError::Truncated)?;
        let names_len = header(32)? as usize;
        if base >= end || end - base > u64::from(u32::MAX) {
            return Err(TableError::BadRange);
        }
        let entries_end = count
            .checked_mul(ENTRY_LEN)
            .and_then(|n| n.checked_add(HEADER_LEN))
            .ok_or(TableError::Truncated)?;
        let names_end = entries_end
            .checked_add(names_len)
            .ok_or(TableError::Truncated)?;
        let entries = bytes
            .get(HEADER_LEN..entries_end)
            .ok_or(TableError::Truncated)?;
        let names = bytes
            .get(entries_end..names_end)
            .ok_or(TableError::Truncated)?;
        let table = Table {
            base,
            end,
            entries,
            names,
        };
        let span = end - base;
        let mut previous: Option<u32> = None;
        for i in 0..table.len() {
            let (offset, _) = table.entry(i);
            if u64::from(offset) >= span || previous.is_some_and(|p| p >= offset) {
                return Err(TableError::Unsorted);
            }
            previous = Some(offset);
        }
        Ok(table)
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.entries.len() / ENTRY_LEN
    }

    /// Whether the table names no symbol at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The addresses the table covers: `[start, end)`.
    pub fn range(&self) -> (u64, u64) {
        (self.base, self.end)
    }

    /// Entry `i`: (address offset, name offset). `i` must be below [`len`](Self::len).
    fn entry(&self, i: usize) -> (u32, u32) {
        let at = i * ENTRY_LEN;
        (
            u32_at(self.entries, at).unwrap_or(u32::MAX),
            u32_at(self.entries, at + 4).unwrap_or(u32::MAX),
        )
    }

    /// The name that starts at `at` in the name area: up to its NUL, valid UTF-8, or `None`.
    fn name_at(&self, at: u32) -> Option<&'a str> {
        let rest = self.names.get(at as usize..)?;
        let len = rest.iter().position(|&b| b == 0)?;
        core::str::from_utf8(&rest[..len]).ok()
    }

    /// The function `addr` lies in: the last symbol at or below it, if `addr` is inside the
    /// covered range, above the first symbol, and that symbol's name is well formed.
    pub fn lookup(&self, addr: u64) -> Option<Symbol<'a>> {
        if addr < self.base || addr >= self.end {
            return None;
        }
        let offset = u32::try_from(addr - self.base).ok()?;
        // The entries ascend (checked by `parse`): the first one above `offset` ends the run.
        let (mut lo, mut hi) = (0usize, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.entry(mid).0 <= offset {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let i = lo.checked_sub(1)?;
        let (start, name) = self.entry(i);
        Some(Symbol {
            name: self.name_at(name)?,
            start: self.base + u64::from(start),
            offset: u64::from(offset - start),
        })
    }

    /// The function a return address (a frame's saved link register) returns into: the
    /// symbol of `addr - 1`, so that a call that is the last instruction of its function
    /// (a call to a function that never returns) is not put in the next function, with the
    /// offset of `addr` itself (as Linux prints a backtrace).
    pub fn lookup_return(&self, addr: u64) -> Option<Symbol<'a>> {
        let mut symbol = self.lookup(addr.checked_sub(1)?)?;
        symbol.offset += 1;
        Some(symbol)
    }

    /// The symbols in address order, for tests and tools.
    pub fn iter(&self) -> impl Iterator<Item = Symbol<'a>> + '_ {
        (0..self.len()).filter_map(move |i| {
            let (start, name) = self.entry(i);
            Some(Symbol {
                name: self.name_at(name)?,
                start: self.base + u64::from(start),
                offset: 0,
            })
        })
    }
}

/// The running kernel's own table (its `.ksyms` section), or why there is none.
#[cfg(target_os = "none")]
pub fn kernel_table() -> Result<Table<'static>, TableError> {
    extern "C" {
        static __ksyms_start: u8;
        static __ksyms_end: u8;
    }
    let start = core::ptr::addr_of!(__ksyms_start);
    let end = core::ptr::addr_of!(__ksyms_end) as usize;
    let len = end.saturating_sub(start as usize);
    // SAFETY: the linker script puts both symbols around .ksyms, which lies in the image's
    // read-only data, mapped for the kernel's whole life and never written after the build.
    let bytes = unsafe { core::slice::from_raw_parts(start, len) };
    Table::parse(bytes)
}

/// The function of the running kernel that `addr` lies in, if its table names one.
#[cfg(target_os = "none")]
pub fn lookup(addr: u64) -> Option<Symbol<'static>> {
    kernel_table().ok()?.lookup(addr)
}

/// The function of the running kernel that the return address `addr` returns into
/// ([`Table::lookup_return`]), if its table names one.
#[cfg(target_os = "none")]
pub fn lookup_return(addr: u64) -> Option<Symbol<'static>> {
    kernel_table().ok()?.lookup_return(addr)
}
