//! The machine description, read from the flattened device tree (DTB) the boot loader or
//! QEMU hands over.
//!
//! Owns three total functions over untrusted bytes: [`total_size`] (how much to map before
//! looking further), [`validate`] (a structural pre-pass) and [`parse`] (validate, then the
//! `fdt` crate, then a [`MachineInfo`] with every address translated to a CPU physical
//! address). None of them panics, reads out of bounds or loops without bound, whatever the
//! bytes are; every problem comes back as a [`DtbError`] that says what is wrong and where.
//!
//! May call: the `fdt` crate (only on a blob that [`validate`] accepted, because `fdt` 0.1.5
//! panics or recurses without limit on malformed input) and `alloc`. It touches no hardware
//! and no global state; the caller maps the blob and decides which missing parts are fatal.
//!
//! Why `fdt` 0.1.5 needs the pre-pass, and what this module therefore avoids:
//! - it slices property values, names and blocks without bounds checks and unwraps UTF-8
//!   conversions of node and property names;
//! - it mishandles `FDT_NOP` between properties or between sibling nodes (an assertion in its
//!   node skipper fires), so [`parse`] hands it a copy with the NOPs removed when there are any;
//! - it only understands the version 17 header, so a version 16 blob is rewritten the same way;
//! - its `find_node` retries through `/aliases`, which recurses forever on an alias that names
//!   itself, and its `memory()`, `chosen()`, `cpus()` and `root()` panic when a node is missing.
//!   This module resolves paths and aliases itself and only uses `all_nodes`, `children` and
//!   `property`, which are sound on a validated, NOP-free blob.
//!
//! The files: `error` (what can be wrong), `validate` (the pre-pass), `tree` (the
//! indexed tree and generic property reads), `machine` (what the kernel learns from it).

mod error;
mod machine;
mod tree;
mod validate;

pub use error::*;
pub use machine::*;
use tree::*;
use validate::*;

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use fdt::node::FdtNode;
use fdt::Fdt;

/// Largest blob accepted, in bytes. QEMU pads its own trees to 1 MiB and adds 64 KiB more
/// to a tree given with `-dtb`; real trees are far smaller.
pub const MAX_TOTAL_SIZE: usize = 8 << 20;
/// Deepest node nesting accepted, counting the root as depth 1. Real trees stay under 10;
/// the bound keeps the `fdt` crate's recursive node skipper on a short stack.
pub const MAX_DEPTH: usize = 32;
/// Most nodes accepted. Bounds the quadratic-in-depth work of walking the tree with `fdt`.
pub const MAX_NODES: usize = 8192;
/// Most properties accepted.
pub const MAX_PROPERTIES: usize = 65536;
/// Most `/memreserve/` entries accepted.
pub const MAX_RESERVATIONS: usize = 256;

/// The first four bytes of every device tree blob (big-endian).
pub const MAGIC: u32 = 0xd00d_feed;
/// Size of the version 17 header, the one `fdt` reads.
const HEADER_SIZE: usize = 40;
/// Version 16 headers lack the final `size_dt_struct` field.
const V16_HEADER_SIZE: usize = 36;
const RESERVATION_ENTRY_SIZE: usize = 16;

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

/// The size the header claims for the whole blob, checked against sane limits, so the
/// kernel knows how much to map before it looks further. Reads the first 40 bytes only.
pub fn total_size(header: &[u8]) -> Result<usize, DtbError> {
    if header.len() < HEADER_SIZE {
        return Err(DtbError::TruncatedHeader {
            available: header.len(),
        });
    }
    let magic = be32(header, 0).unwrap_or(0);
    if magic != MAGIC {
        return Err(DtbError::BadMagic { found: magic });
    }
    let totalsize = be32(header, 4).unwrap_or(0) as usize;
    if totalsize < HEADER_SIZE {
        return Err(DtbError::TotalSizeTooSmall { totalsize });
    }
    if totalsize > MAX_TOTAL_SIZE {
        return Err(DtbError::TotalSizeTooLarge {
            totalsize,
            limit: MAX_TOTAL_SIZE,
        });
    }
    Ok(totalsize)
}

/// Checks the whole blob's structure: after `Ok`, [`parse`] cannot fail inside the `fdt`
/// crate. Checks the header (magic, sizes, version 16 or 17 compatible, block offsets and
/// alignment), the reservation block (terminated in bounds), and every structure token:
/// names and property values in bounds, property names inside the strings block,
/// properties before child nodes, nodes balanced, exactly one root, `FDT_END` last, depth
/// at most [`MAX_DEPTH`], at most [`MAX_NODES`] nodes and [`MAX_PROPERTIES`] properties.
pub fn validate(blob: &[u8]) -> Result<(), DtbError> {
    check(blob).map(|_| ())
}

/// Validates the blob, reads it with `fdt`, and describes the machine. Parts that are
/// missing or malformed (an unknown UART, a `reg` that cannot be translated) give `None` or
/// are left out; only a blob that fails [`validate`] is an error.
pub fn parse(blob: &[u8]) -> Result<MachineInfo, DtbError> {
    let layout = check(blob)?;
    let image = fdt_image(blob, &layout)?;
    let fdt = Fdt::new(&image).map_err(DtbError::Fdt)?;
    let tree = Tree::build(&fdt)?;
    Ok(MachineInfo {
        model: tree.model(),
        memory: tree.memory(),
        reserved: reservations(blob, &layout)
            .chain(tree.reserved_memory())
            .collect(),
        uart: tree.uart(),
        mini_uart: tree.uart_of(UartKind::Bcm2835Aux),
        interrupt_controller: tree.interrupt_controller(),
        timer: tree.timer(),
        psci: tree.psci(),
        cpus: tree.cpus(),
        pm_watchdog: tree.pm_watchdog(),
        bootargs: tree.bootargs(),
    })
}

fn be32(bytes: &[u8], offset: usize) -> Option<u32> {
    let word = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_be_bytes(word.try_into().ok()?))
}

fn be64(bytes: &[u8], offset: usize) -> Option<u64> {
    let word = bytes.get(offset..offset.checked_add(8)?)?;
    Some(u64::from_be_bytes(word.try_into().ok()?))
}

fn align4(n: usize) -> Option<usize> {
    Some(n.checked_add(3)? & !3)
}

#[cfg(test)]
mod tests;
