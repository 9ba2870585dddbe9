//! Why an operation was refused: [`MapError`].
use super::*;

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
