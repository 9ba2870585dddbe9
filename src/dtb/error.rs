//! What can be wrong with a blob: [`DtbError`] says which check failed, in which block,
//! at which offset.
use super::*;

/// Which block of the blob an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// The memory reservation block (`/memreserve/` entries).
    ReservationMap,
    /// The structure block (nodes and properties).
    Structure,
    /// The strings block (property names).
    Strings,
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Block::ReservationMap => "memory reservation block",
            Block::Structure => "structure block",
            Block::Strings => "strings block",
        })
    }
}

/// What is wrong inside the structure block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StructureError {
    /// A token or its payload runs past the end of the structure block.
    UnexpectedEnd,
    /// The structure block ends without an `FDT_END` token.
    MissingEnd,
    /// A token value that is not one of the five the format defines.
    UnknownToken(u32),
    /// A node name without a terminating NUL inside the structure block.
    NameUnterminated,
    /// A node name that is not UTF-8.
    NameNotUtf8,
    /// A property value that runs past the end of the structure block.
    PropertyTooLong {
        /// The length the property header claims.
        len: u32,
    },
    /// A property name offset outside the strings block.
    PropertyNameOffset {
        /// The offset into the strings block.
        nameoff: u32,
        /// The size of the strings block.
        strings_size: usize,
    },
    /// A property name without a terminating NUL inside the strings block.
    PropertyNameUnterminated {
        /// The offset into the strings block.
        nameoff: u32,
    },
    /// A property name that is not UTF-8.
    PropertyNameNotUtf8 {
        /// The offset into the strings block.
        nameoff: u32,
    },
    /// A property before the root node or after it closed.
    PropertyOutsideNode,
    /// A property after the first child node of its node.
    PropertyAfterChild,
    /// An `FDT_END_NODE` with no node open.
    UnbalancedEndNode,
    /// A second top-level node after the root closed.
    SecondRoot,
    /// `FDT_END` while nodes are still open.
    UnclosedNodes {
        /// How many nodes are open.
        depth: usize,
    },
    /// `FDT_END` before any node.
    MissingRoot,
    /// Bytes between `FDT_END` and the end of the structure block.
    TrailingData {
        /// How many bytes.
        bytes: usize,
    },
    /// Nodes nested deeper than [`MAX_DEPTH`].
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// More nodes than [`MAX_NODES`].
    TooManyNodes {
        /// The limit.
        limit: usize,
    },
    /// More properties than [`MAX_PROPERTIES`].
    TooManyProperties {
        /// The limit.
        limit: usize,
    },
}

impl fmt::Display for StructureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StructureError::UnexpectedEnd => {
                f.write_str("token runs past the end of the structure block")
            }
            StructureError::MissingEnd => f.write_str("structure block ends without FDT_END"),
            StructureError::UnknownToken(t) => write!(f, "unknown token {t:#x}"),
            StructureError::NameUnterminated => {
                f.write_str("node name is not NUL-terminated within the structure block")
            }
            StructureError::NameNotUtf8 => f.write_str("node name is not UTF-8"),
            StructureError::PropertyTooLong { len } => write!(
                f,
                "property value of {len} bytes runs past the end of the structure block"
            ),
            StructureError::PropertyNameOffset {
                nameoff,
                strings_size,
            } => write!(
                f,
                "property name offset {nameoff:#x} is outside the strings block \
                 ({strings_size:#x} bytes)"
            ),
            StructureError::PropertyNameUnterminated { nameoff } => write!(
                f,
                "property name at strings offset {nameoff:#x} is not NUL-terminated \
                 within the strings block"
            ),
            StructureError::PropertyNameNotUtf8 { nameoff } => write!(
                f,
                "property name at strings offset {nameoff:#x} is not UTF-8"
            ),
            StructureError::PropertyOutsideNode => f.write_str("property outside any node"),
            StructureError::PropertyAfterChild => {
                f.write_str("property after a child node (properties must come first)")
            }
            StructureError::UnbalancedEndNode => f.write_str("FDT_END_NODE with no node open"),
            StructureError::SecondRoot => f.write_str("second top-level node after the root"),
            StructureError::UnclosedNodes { depth } => {
                write!(f, "FDT_END with {depth} node(s) still open")
            }
            StructureError::MissingRoot => f.write_str("no root node"),
            StructureError::TrailingData { bytes } => {
                write!(f, "{bytes} bytes after FDT_END inside the structure block")
            }
            StructureError::TooDeep { limit } => {
                write!(f, "nodes nested deeper than {limit} levels")
            }
            StructureError::TooManyNodes { limit } => write!(f, "more than {limit} nodes"),
            StructureError::TooManyProperties { limit } => {
                write!(f, "more than {limit} properties")
            }
        }
    }
}

/// Why a blob was rejected.
#[derive(Debug, Clone, PartialEq)]
pub enum DtbError {
    /// Fewer bytes than a header.
    TruncatedHeader {
        /// Bytes available.
        available: usize,
    },
    /// The first word is not the FDT magic.
    BadMagic {
        /// The word found.
        found: u32,
    },
    /// The header's `totalsize` is smaller than the header itself.
    TotalSizeTooSmall {
        /// The header's `totalsize`.
        totalsize: usize,
    },
    /// The header's `totalsize` is above [`MAX_TOTAL_SIZE`].
    TotalSizeTooLarge {
        /// The header's `totalsize`.
        totalsize: usize,
        /// The limit.
        limit: usize,
    },
    /// Fewer bytes available than the header's `totalsize`.
    Truncated {
        /// The header's `totalsize`.
        totalsize: usize,
        /// Bytes available.
        available: usize,
    },
    /// A format version older than 16.
    UnsupportedVersion {
        /// The header's `version`.
        version: u32,
    },
    /// A blob that readers of version 17 cannot read.
    IncompatibleVersion {
        /// The header's `last_comp_version`.
        last_comp_version: u32,
    },
    /// A block that starts inside the header or runs past `totalsize`.
    BlockOutOfBounds {
        /// Which block.
        block: Block,
        /// Its offset from the header.
        offset: usize,
        /// Its size in bytes.
        size: usize,
        /// The header's `totalsize`.
        totalsize: usize,
    },
    /// A block whose offset or size breaks the format's alignment.
    Misaligned {
        /// Which block.
        block: Block,
        /// The misaligned offset or size.
        value: usize,
        /// The required alignment.
        align: usize,
    },
    /// The reservation block has no all-zero terminating entry before `totalsize`.
    ReservationsUnterminated {
        /// Offset of the reservation block.
        offset: usize,
    },
    /// More reservation entries than [`MAX_RESERVATIONS`].
    TooManyReservations {
        /// Offset of the reservation block.
        offset: usize,
        /// The limit.
        limit: usize,
    },
    /// The structure block is malformed.
    Structure {
        /// Offset of the offending token from the start of the blob.
        offset: usize,
        /// What is wrong.
        problem: StructureError,
    },
    /// The `fdt` crate refused a blob this module had accepted.
    Fdt(fdt::FdtError),
}

impl fmt::Display for DtbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtbError::TruncatedHeader { available } => write!(
                f,
                "truncated header: {available} bytes available, {HEADER_SIZE} needed"
            ),
            DtbError::BadMagic { found } => {
                write!(f, "bad magic {found:#010x} (expected {MAGIC:#010x})")
            }
            DtbError::TotalSizeTooSmall { totalsize } => write!(
                f,
                "header says {totalsize} bytes in total, less than the {HEADER_SIZE}-byte header"
            ),
            DtbError::TotalSizeTooLarge { totalsize, limit } => write!(
                f,
                "header says {totalsize} bytes in total, more than the {limit}-byte limit"
            ),
            DtbError::Truncated {
                totalsize,
                available,
            } => write!(
                f,
                "truncated: header says {totalsize} bytes, {available} available"
            ),
            DtbError::UnsupportedVersion { version } => {
                write!(f, "unsupported version {version} (need 16 or later)")
            }
            DtbError::IncompatibleVersion { last_comp_version } => write!(
                f,
                "last compatible version {last_comp_version} is newer than 17"
            ),
            DtbError::BlockOutOfBounds {
                block,
                offset,
                size,
                totalsize,
            } => write!(
                f,
                "{block} at offset {offset:#x} ({size:#x} bytes) lies outside \
                 the {totalsize:#x}-byte blob or inside its header"
            ),
            DtbError::Misaligned {
                block,
                value,
                align,
            } => write!(f, "{block}: {value:#x} is not a multiple of {align}"),
            DtbError::ReservationsUnterminated { offset } => write!(
                f,
                "{} at offset {offset:#x} has no terminating entry",
                Block::ReservationMap
            ),
            DtbError::TooManyReservations { offset, limit } => write!(
                f,
                "{} at offset {offset:#x} has more than {limit} entries",
                Block::ReservationMap
            ),
            DtbError::Structure { offset, problem } => {
                write!(f, "structure block at offset {offset:#x}: {problem}")
            }
            DtbError::Fdt(e) => write!(f, "fdt parser rejected the blob: {e}"),
        }
    }
}

impl core::error::Error for DtbError {}
