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

/// A range of CPU physical addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First address.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

/// Which UART hardware a [`Uart`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UartKind {
    /// ARM PrimeCell PL011 (`arm,pl011`).
    Pl011,
    /// The BCM2835 auxiliary "mini UART" (`brcm,bcm2835-aux-uart`).
    Bcm2835Aux,
}

/// The console UART.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uart {
    /// Its register block.
    pub region: Region,
    /// Which hardware it is.
    pub kind: UartKind,
    /// Its first interrupt, in its interrupt parent's format.
    pub irq: Option<IrqSpec>,
}

/// The primary interrupt controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptController {
    /// A GICv2 (GIC-400, Cortex-A15 GIC and the like).
    GicV2 {
        /// The distributor (GICD).
        distributor: Region,
        /// The CPU interface (GICC).
        cpu_interface: Region,
    },
    /// A GICv3.
    GicV3 {
        /// The distributor (GICD).
        distributor: Region,
        /// The first redistributor region (GICR).
        redistributors: Region,
    },
    /// The BCM2836/7 per-core local controller (Raspberry Pi 2 and 3).
    Bcm2836 {
        /// The local controller (`brcm,bcm2836-l1-intc`).
        local: Region,
        /// The peripheral controller behind it (`brcm,bcm2836-armctrl-ic`), if present.
        peripheral: Option<Region>,
    },
}

/// The ARM generic timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    /// Its interrupts in DT order: secure physical, non-secure physical, virtual, hypervisor.
    pub interrupts: Vec<IrqSpec>,
    /// The `clock-frequency` property, present only where firmware fails to set `CNTFRQ_EL0`.
    pub frequency: Option<u32>,
}

/// One interrupt specifier, in the format of its interrupt parent (`#interrupt-cells`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqSpec {
    /// The cells; those at `count` and beyond are zero.
    pub cells: [u32; 3],
    /// How many cells are used (1 to 3).
    pub count: u8,
}

impl IrqSpec {
    /// The GIC interrupt ID of a three-cell GIC specifier: SPI n is 32 + n, PPI n is 16 + n.
    /// `None` for other formats (such as the BCM2836's two cells) and out-of-range numbers.
    pub fn gic_intid(&self) -> Option<u32> {
        if self.count != 3 {
            return None;
        }
        let [kind, number, _] = self.cells;
        match kind {
            // SPI IDs run 32..1020; 1020..1024 are special.
            0 if number < 988 => Some(32 + number),
            1 if number < 16 => Some(16 + number),
            _ => None,
        }
    }
}

/// How to call PSCI firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsciConduit {
    /// `HVC #0`: firmware at EL2.
    Hvc,
    /// `SMC #0`: firmware at EL3.
    Smc,
}

/// How a secondary CPU is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnableMethod {
    /// PSCI `CPU_ON`.
    Psci,
    /// Write the entry point to `release_addr`, then `SEV`.
    SpinTable {
        /// Physical address the CPU polls.
        release_addr: u64,
    },
    /// No method this kernel knows.
    None,
}

/// One CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpu {
    /// Its MPIDR affinity fields, from `reg`.
    pub mpidr: u64,
    /// How to start it.
    pub enable: EnableMethod,
}

/// What the kernel needs to know about the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineInfo {
    /// The root `model` (else its first `compatible`, else empty).
    pub model: String,
    /// Usable RAM; entries of size 0 are dropped (the Pi trees leave them for firmware).
    pub memory: Vec<Region>,
    /// `/memreserve/` entries, then enabled `/reserved-memory` children with `reg`; entries
    /// of size 0 are dropped.
    pub reserved: Vec<Region>,
    /// The console. Because the kernel's console driver is the PL011, a PL011 wins: the
    /// `/chosen` `stdout-path` node if it is an enabled PL011, else the first enabled PL011,
    /// else the `stdout-path` node if it is an enabled mini UART, else the first enabled
    /// mini UART. (The Pi trees point `stdout-path` at the mini UART; QEMU's `raspi3b` and
    /// `raspi4b` connect the first serial port to the PL011.)
    pub uart: Option<Uart>,
    /// The BCM2835 mini UART, whether or not a PL011 won [`MachineInfo::uart`]: the
    /// `/chosen` `stdout-path` node if it is an enabled mini UART, else the first enabled
    /// one. The console when the command line says `console=mini`.
    pub mini_uart: Option<Uart>,
    /// The primary interrupt controller: a GIC (the root's `interrupt-parent` if it is
    /// one, else the first enabled one), else the BCM2836 local controller.
    pub interrupt_controller: Option<InterruptController>,
    /// The first enabled `arm,armv8-timer` or `arm,armv7-timer` node.
    pub timer: Option<Timer>,
    /// The PSCI conduit, from an enabled `arm,psci-1.0`, `arm,psci-0.2` or `arm,psci` node.
    pub psci: Option<PsciConduit>,
    /// The `/cpus/cpu@*` nodes with a readable `reg`, in DT order.
    pub cpus: Vec<Cpu>,
    /// The BCM2835 power-management watchdog (`brcm,bcm2835-pm-wdt`, the Raspberry Pi's),
    /// which powers the machine off where there is no PSCI.
    pub pm_watchdog: Option<Region>,
    /// `/chosen` `bootargs` (invalid UTF-8 replaced), if present.
    pub bootargs: Option<String>,
}

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

/// Where everything is in a blob that passed [`check`].
#[derive(Debug, Clone, Copy)]
struct Layout {
    totalsize: usize,
    version: u32,
    boot_cpuid_phys: u32,
    reservations_offset: usize,
    /// Entries before the terminator.
    reservation_count: usize,
    struct_offset: usize,
    /// Bytes up to and including `FDT_END`.
    struct_size: usize,
    strings_offset: usize,
    strings_size: usize,
    nops: usize,
}

fn check(blob: &[u8]) -> Result<Layout, DtbError> {
    let totalsize = total_size(blob)?;
    if blob.len() < totalsize {
        return Err(DtbError::Truncated {
            totalsize,
            available: blob.len(),
        });
    }
    let blob = blob.get(..totalsize).unwrap_or_default();
    // total_size proved at least HEADER_SIZE bytes, so these reads succeed.
    let field = |i: usize| be32(blob, i * 4).unwrap_or(0);
    let version = field(5);
    if version < 16 {
        return Err(DtbError::UnsupportedVersion { version });
    }
    let last_comp_version = field(6);
    if last_comp_version > 17 {
        return Err(DtbError::IncompatibleVersion { last_comp_version });
    }
    let header_size = if version >= 17 {
        HEADER_SIZE
    } else {
        V16_HEADER_SIZE
    };
    let struct_offset = field(2) as usize;
    let strings_offset = field(3) as usize;
    let reservations_offset = field(4) as usize;
    let strings_size = field(8) as usize;

    let out_of_bounds = |block, offset, size| DtbError::BlockOutOfBounds {
        block,
        offset,
        size,
        totalsize,
    };
    let in_bounds = |offset: usize, size: usize| {
        offset >= header_size && offset.checked_add(size).is_some_and(|end| end <= totalsize)
    };

    if !reservations_offset.is_multiple_of(8) {
        return Err(DtbError::Misaligned {
            block: Block::ReservationMap,
            value: reservations_offset,
            align: 8,
        });
    }
    if !in_bounds(reservations_offset, RESERVATION_ENTRY_SIZE) {
        return Err(out_of_bounds(
            Block::ReservationMap,
            reservations_offset,
            RESERVATION_ENTRY_SIZE,
        ));
    }
    let reservation_count = count_reservations(blob, reservations_offset)?;

    if !in_bounds(strings_offset, strings_size) {
        return Err(out_of_bounds(Block::Strings, strings_offset, strings_size));
    }

    if !struct_offset.is_multiple_of(4) {
        return Err(DtbError::Misaligned {
            block: Block::Structure,
            value: struct_offset,
            align: 4,
        });
    }
    // Version 16 does not record the structure block's size: it ends at FDT_END, which
    // must lie inside the blob.
    let (struct_limit, exact) = if version >= 17 {
        let size = field(9) as usize;
        if !size.is_multiple_of(4) {
            return Err(DtbError::Misaligned {
                block: Block::Structure,
                value: size,
                align: 4,
            });
        }
        (size, true)
    } else {
        (totalsize.saturating_sub(struct_offset), false)
    };
    if !in_bounds(struct_offset, struct_limit) {
        return Err(out_of_bounds(Block::Structure, struct_offset, struct_limit));
    }
    let strings = blob
        .get(strings_offset..strings_offset + strings_size)
        .unwrap_or_default();
    let walk = walk_structure(
        blob,
        struct_offset,
        struct_offset + struct_limit,
        exact,
        strings,
        None,
    )?;
    Ok(Layout {
        totalsize,
        version,
        boot_cpuid_phys: field(7),
        reservations_offset,
        reservation_count,
        struct_offset,
        struct_size: walk.size,
        strings_offset,
        strings_size,
        nops: walk.nops,
    })
}

fn count_reservations(blob: &[u8], offset: usize) -> Result<usize, DtbError> {
    for i in 0..=MAX_RESERVATIONS {
        let at = offset + i * RESERVATION_ENTRY_SIZE;
        let (Some(address), Some(size)) = (be64(blob, at), be64(blob, at + 8)) else {
            return Err(DtbError::ReservationsUnterminated { offset });
        };
        if address == 0 && size == 0 {
            return Ok(i);
        }
    }
    Err(DtbError::TooManyReservations {
        offset,
        limit: MAX_RESERVATIONS,
    })
}

struct Walk {
    size: usize,
    nops: usize,
}

/// Walks the structure tokens in `blob[start..end]`. With `exact`, `FDT_END` must be the
/// last token before `end`. With `out`, copies every token except `FDT_NOP` there.
fn walk_structure(
    blob: &[u8],
    start: usize,
    end: usize,
    exact: bool,
    strings: &[u8],
    mut out: Option<&mut Vec<u8>>,
) -> Result<Walk, DtbError> {
    let block = blob.get(..end).unwrap_or_default();
    let mut pos = start;
    let mut depth = 0usize;
    let mut props_allowed = false;
    let mut root_closed = false;
    let (mut nodes, mut props, mut nops) = (0usize, 0usize, 0usize);
    loop {
        let token_offset = pos;
        let fail = |problem| DtbError::Structure {
            offset: token_offset,
            problem,
        };
        let Some(token) = be32(block, pos) else {
            return Err(fail(if pos >= end {
                StructureError::MissingEnd
            } else {
                StructureError::UnexpectedEnd
            }));
        };
        pos += 4;
        match token {
            FDT_BEGIN_NODE => {
                if root_closed {
                    return Err(fail(StructureError::SecondRoot));
                }
                let rest = block.get(pos..).unwrap_or_default();
                let Some(len) = rest.iter().position(|&b| b == 0) else {
                    return Err(fail(StructureError::NameUnterminated));
                };
                if core::str::from_utf8(rest.get(..len).unwrap_or_default()).is_err() {
                    return Err(fail(StructureError::NameNotUtf8));
                }
                pos = align4(pos + len + 1)
                    .filter(|&p| p <= end)
                    .ok_or(fail(StructureError::UnexpectedEnd))?;
                depth += 1;
                nodes += 1;
                if depth > MAX_DEPTH {
                    return Err(fail(StructureError::TooDeep { limit: MAX_DEPTH }));
                }
                if nodes > MAX_NODES {
                    return Err(fail(StructureError::TooManyNodes { limit: MAX_NODES }));
                }
                props_allowed = true;
            }
            FDT_END_NODE => {
                if depth == 0 {
                    return Err(fail(StructureError::UnbalancedEndNode));
                }
                depth -= 1;
                root_closed = depth == 0;
                // The parent has now seen a child, so its property list is over.
                props_allowed = false;
            }
            FDT_PROP => {
                if depth == 0 {
                    return Err(fail(StructureError::PropertyOutsideNode));
                }
                if !props_allowed {
                    return Err(fail(StructureError::PropertyAfterChild));
                }
                let (Some(len), Some(nameoff)) = (be32(block, pos), be32(block, pos + 4)) else {
                    return Err(fail(StructureError::UnexpectedEnd));
                };
                pos = (pos + 8)
                    .checked_add(len as usize)
                    .and_then(align4)
                    .filter(|&p| p <= end)
                    .ok_or(fail(StructureError::PropertyTooLong { len }))?;
                check_property_name(strings, nameoff).map_err(fail)?;
                props += 1;
                if props > MAX_PROPERTIES {
                    return Err(fail(StructureError::TooManyProperties {
                        limit: MAX_PROPERTIES,
                    }));
                }
            }
            FDT_NOP => nops += 1,
            FDT_END => {
                if depth > 0 {
                    return Err(fail(StructureError::UnclosedNodes { depth }));
                }
                if !root_closed {
                    return Err(fail(StructureError::MissingRoot));
                }
                if exact && pos != end {
                    return Err(DtbError::Structure {
                        offset: pos,
                        problem: StructureError::TrailingData { bytes: end - pos },
                    });
                }
            }
            other => return Err(fail(StructureError::UnknownToken(other))),
        }
        if let Some(out) = out.as_deref_mut() {
            if token != FDT_NOP {
                out.extend_from_slice(block.get(token_offset..pos).unwrap_or_default());
            }
        }
        if token == FDT_END {
            return Ok(Walk {
                size: pos - start,
                nops,
            });
        }
    }
}

fn check_property_name(strings: &[u8], nameoff: u32) -> Result<(), StructureError> {
    let rest = strings
        .get(nameoff as usize..)
        .filter(|r| !r.is_empty())
        .ok_or(StructureError::PropertyNameOffset {
            nameoff,
            strings_size: strings.len(),
        })?;
    let len = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or(StructureError::PropertyNameUnterminated { nameoff })?;
    core::str::from_utf8(rest.get(..len).unwrap_or_default())
        .map_err(|_| StructureError::PropertyNameNotUtf8 { nameoff })?;
    Ok(())
}

/// The blob as `fdt` 0.1.5 can read it: borrowed when it is version 17 without NOPs,
/// otherwise rebuilt as a compact version 17 blob without NOPs (see the module doc).
fn fdt_image<'a>(blob: &'a [u8], layout: &Layout) -> Result<Cow<'a, [u8]>, DtbError> {
    let bounds = |block, offset: usize, size: usize| {
        offset
            .checked_add(size)
            .and_then(|end| blob.get(offset..end))
            .ok_or(DtbError::BlockOutOfBounds {
                block,
                offset,
                size,
                totalsize: layout.totalsize,
            })
    };
    if layout.version >= 17 && layout.nops == 0 {
        return Ok(Cow::Borrowed(bounds(
            Block::Structure,
            0,
            layout.totalsize,
        )?));
    }
    let reservations_size = (layout.reservation_count + 1) * RESERVATION_ENTRY_SIZE;
    let reservations = bounds(
        Block::ReservationMap,
        layout.reservations_offset,
        reservations_size,
    )?;
    let strings = bounds(Block::Strings, layout.strings_offset, layout.strings_size)?;

    let mut image = Vec::with_capacity(
        HEADER_SIZE + reservations_size + layout.struct_size + layout.strings_size,
    );
    image.resize(HEADER_SIZE, 0);
    image.extend_from_slice(reservations);
    let struct_offset = image.len();
    walk_structure(
        blob,
        layout.struct_offset,
        layout.struct_offset + layout.struct_size,
        true,
        strings,
        Some(&mut image),
    )?;
    let struct_size = image.len() - struct_offset;
    let strings_offset = image.len();
    image.extend_from_slice(strings);
    // Sizes are bounded by MAX_TOTAL_SIZE, so they fit the 32-bit header fields.
    let header = [
        MAGIC,
        image.len() as u32,
        struct_offset as u32,
        strings_offset as u32,
        HEADER_SIZE as u32,
        17,
        16,
        layout.boot_cpuid_phys,
        layout.strings_size as u32,
        struct_size as u32,
    ];
    for (slot, value) in image.chunks_exact_mut(4).zip(header) {
        slot.copy_from_slice(&value.to_be_bytes());
    }
    Ok(Cow::Owned(image))
}

/// The `/memreserve/` entries of size > 0.
fn reservations<'a>(blob: &'a [u8], layout: &Layout) -> impl Iterator<Item = Region> + 'a {
    let offset = layout.reservations_offset;
    (0..layout.reservation_count).filter_map(move |i| {
        let at = offset + i * RESERVATION_ENTRY_SIZE;
        usable(Region {
            base: be64(blob, at)?,
            size: be64(blob, at + 8)?,
        })
    })
}

/// Drops empty regions and regions that wrap around the address space.
fn usable(region: Region) -> Option<Region> {
    (region.size > 0 && region.base.checked_add(region.size - 1).is_some()).then_some(region)
}

/// Reads a value of `cells` 32-bit big-endian cells; `None` if it does not fit in 64 bits.
fn cells_value(bytes: &[u8]) -> Option<u64> {
    bytes.chunks_exact(4).try_fold(0u64, |acc, cell| {
        if acc >> 32 != 0 {
            return None;
        }
        let cell = u32::from_be_bytes(cell.try_into().ok()?);
        Some((acc << 32) | u64::from(cell))
    })
}

/// Splits a property value into consecutive groups of cells.
struct Cells<'a>(&'a [u8]);

impl<'a> Cells<'a> {
    fn take(&mut self, cells: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(cells.checked_mul(4)?)?;
        self.0 = tail;
        Some(head)
    }
}

/// The spec's limit on `#address-cells` and `#size-cells`.
const MAX_CELLS: u32 = 4;

/// One node of the tree, with the parent link that `fdt` does not expose.
struct TreeNode<'b, 'a> {
    node: FdtNode<'b, 'a>,
    name: &'a str,
    parent: Option<usize>,
}

/// The whole tree in DT (pre-)order, so a parent's index is always below its children's.
struct Tree<'b, 'a> {
    nodes: Vec<TreeNode<'b, 'a>>,
    phandles: Vec<(u32, usize)>,
}

const ROOT: usize = 0;

impl<'b, 'a> Tree<'b, 'a> {
    fn build(fdt: &'b Fdt<'a>) -> Result<Self, DtbError> {
        let missing_root = DtbError::Structure {
            offset: 0,
            problem: StructureError::MissingRoot,
        };
        let root = fdt.all_nodes().next().ok_or(missing_root)?;
        let mut nodes: Vec<TreeNode<'b, 'a>> = Vec::new();
        let mut pending = Vec::from([(root, None)]);
        while let Some((node, parent)) = pending.pop() {
            if nodes.len() >= MAX_NODES {
                return Err(DtbError::Structure {
                    offset: 0,
                    problem: StructureError::TooManyNodes { limit: MAX_NODES },
                });
            }
            let index = nodes.len();
            nodes.push(TreeNode {
                node,
                name: if parent.is_none() { "" } else { node.name },
                parent,
            });
            let first = pending.len();
            pending.extend(node.children().map(|child| (child, Some(index))));
            // The stack pops the last child first; reversing keeps DT order.
            if let Some(children) = pending.get_mut(first..) {
                children.reverse();
            }
        }
        let mut tree = Tree {
            nodes,
            phandles: Vec::new(),
        };
        tree.phandles = (0..tree.nodes.len())
            .filter_map(|i| {
                let phandle = tree
                    .prop_u32(i, "phandle")
                    .or_else(|| tree.prop_u32(i, "linux,phandle"))?;
                Some((phandle, i))
            })
            .collect();
        Ok(tree)
    }

    fn prop(&self, i: usize, name: &str) -> Option<&'a [u8]> {
        Some(self.nodes.get(i)?.node.property(name)?.value)
    }

    fn prop_u32(&self, i: usize, name: &str) -> Option<u32> {
        let value = self.prop(i, name)?;
        (value.len() == 4).then(|| be32(value, 0)).flatten()
    }

    /// A string list property's entries.
    fn prop_strings(&self, i: usize, name: &str) -> impl Iterator<Item = &'a str> {
        let value = self.prop(i, name).unwrap_or_default();
        let value = value.strip_suffix(&[0]).unwrap_or(value);
        value
            .split(|&b| b == 0)
            .filter(move |_| !value.is_empty())
            .filter_map(|s| core::str::from_utf8(s).ok())
    }

    fn prop_str(&self, i: usize, name: &str) -> Option<&'a str> {
        self.prop_strings(i, name).next()
    }

    fn is_compatible(&self, i: usize, any_of: &[&str]) -> bool {
        self.prop_strings(i, "compatible")
            .any(|c| any_of.contains(&c))
    }

    fn is_enabled(&self, i: usize) -> bool {
        self.prop(i, "status").is_none()
            || matches!(self.prop_str(i, "status"), Some("okay" | "ok"))
    }

    fn parent(&self, i: usize) -> Option<usize> {
        self.nodes.get(i)?.parent
    }

    fn name(&self, i: usize) -> &'a str {
        self.nodes.get(i).map_or("", |n| n.name)
    }

    fn children(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter(move |(_, n)| n.parent == Some(i))
            .map(|(index, _)| index)
    }

    /// `i`'s child called `name`; without a unit address, `name` also matches the first
    /// child whose name before the `@` is `name`.
    fn child_named(&self, i: usize, name: &str) -> Option<usize> {
        let exact = self.children(i).find(|&c| self.name(c) == name);
        if exact.is_some() || name.contains('@') {
            return exact;
        }
        self.children(i).find(|&c| base_name(self.name(c)) == name)
    }

    /// All enabled nodes with one of the compatible strings, in DT order.
    fn compatible_nodes<'s>(&'s self, any_of: &'s [&'s str]) -> impl Iterator<Item = usize> + 's {
        (0..self.nodes.len()).filter(move |&i| self.is_compatible(i, any_of) && self.is_enabled(i))
    }

    fn by_phandle(&self, phandle: u32) -> Option<usize> {
        self.phandles
            .iter()
            .find(|&&(p, _)| p == phandle)
            .map(|&(_, i)| i)
    }

    /// `#address-cells` for `i`'s children: 2 when absent, `None` when malformed.
    fn address_cells(&self, i: usize) -> Option<usize> {
        self.cells(i, "#address-cells", 2)
    }

    /// `#size-cells` for `i`'s children: 1 when absent, `None` when malformed.
    fn size_cells(&self, i: usize) -> Option<usize> {
        self.cells(i, "#size-cells", 1)
    }

    fn cells(&self, i: usize, name: &str, default: u32) -> Option<usize> {
        let value = match self.prop(i, name) {
            None => default,
            Some(_) => self.prop_u32(i, name)?,
        };
        (value <= MAX_CELLS).then_some(value as usize)
    }

    /// `i`'s `reg` entries as CPU physical regions; `None` for entries that cannot be read
    /// or translated, so indices still match the property.
    fn reg(&self, i: usize) -> Vec<Option<Region>> {
        let Some(parent) = self.parent(i) else {
            return Vec::new();
        };
        let (Some(address_cells), Some(size_cells), Some(value)) = (
            self.address_cells(parent),
            self.size_cells(parent),
            self.prop(i, "reg"),
        ) else {
            return Vec::new();
        };
        if address_cells == 0 {
            return Vec::new();
        }
        let mut cells = Cells(value);
        let mut regions = Vec::new();
        while let (Some(address), Some(size)) = (cells.take(address_cells), cells.take(size_cells))
        {
            regions.push(self.reg_entry(address, size, parent));
        }
        regions
    }

    fn reg_entry(&self, address: &[u8], size: &[u8], bus: usize) -> Option<Region> {
        Some(Region {
            base: self.translate(cells_value(address)?, bus)?,
            size: cells_value(size)?,
        })
    }

    fn region(&self, i: usize, index: usize) -> Option<Region> {
        self.reg(i).get(index).copied().flatten()
    }

    /// Translates `address`, in the address space of `bus`'s children, to a CPU physical
    /// address through the `ranges` of `bus` and its ancestors.
    fn translate(&self, mut address: u64, mut bus: usize) -> Option<u64> {
        // Each step moves to a parent, whose index is smaller, so this ends.
        while let Some(up) = self.parent(bus) {
            // No `ranges`: the bus's children are not in the CPU's address space.
            let ranges = self.prop(bus, "ranges")?;
            if !ranges.is_empty() {
                let child_cells = self.address_cells(bus)?;
                let parent_cells = self.address_cells(up)?;
                let size_cells = self.size_cells(bus)?;
                if child_cells == 0 {
                    return None;
                }
                let mut cells = Cells(ranges);
                let mut translated = None;
                while let (Some(child), Some(parent), Some(size)) = (
                    cells.take(child_cells),
                    cells.take(parent_cells),
                    cells.take(size_cells),
                ) {
                    let (Some(child), Some(parent), Some(size)) =
                        (cells_value(child), cells_value(parent), cells_value(size))
                    else {
                        continue;
                    };
                    if let Some(offset) = address.checked_sub(child).filter(|&o| o < size) {
                        translated = parent.checked_add(offset);
                        break;
                    }
                }
                address = translated?;
            }
            bus = up;
        }
        Some(address)
    }

    /// The node whose interrupts `i`'s `interrupts` are in: the nearest `interrupt-parent`.
    fn interrupt_parent(&self, i: usize) -> Option<usize> {
        let mut node = Some(i);
        while let Some(n) = node {
            if self.prop(n, "interrupt-parent").is_some() {
                return self.by_phandle(self.prop_u32(n, "interrupt-parent")?);
            }
            node = self.parent(n);
        }
        None
    }

    fn interrupts(&self, i: usize) -> Vec<IrqSpec> {
        let count = self
            .interrupt_parent(i)
            .and_then(|p| self.prop_u32(p, "#interrupt-cells"))
            .filter(|n| (1..=3).contains(n))
            .unwrap_or(0) as usize;
        let value = self.prop(i, "interrupts").unwrap_or_default();
        if count == 0 {
            return Vec::new();
        }
        value
            .chunks_exact(count * 4)
            .map(|spec| {
                let mut cells = [0u32; 3];
                for (cell, bytes) in cells.iter_mut().zip(spec.chunks_exact(4)) {
                    *cell = be32(bytes, 0).unwrap_or(0);
                }
                IrqSpec {
                    cells,
                    count: count as u8,
                }
            })
            .collect()
    }

    /// Resolves an absolute path or an alias (optionally followed by `/more/path`).
    fn resolve(&self, path: &str) -> Option<usize> {
        let (start, rest) = match path.strip_prefix('/') {
            Some(rest) => (ROOT, rest),
            None => {
                let (alias, rest) = path.split_once('/').unwrap_or((path, ""));
                let aliases = self.child_named(ROOT, "aliases")?;
                // An alias must be an absolute path, so aliases cannot chain or loop.
                let target = self.prop_str(aliases, alias)?.strip_prefix('/')?;
                (self.descend(ROOT, target)?, rest)
            }
        };
        self.descend(start, rest)
    }

    fn descend(&self, from: usize, path: &str) -> Option<usize> {
        path.split('/')
            .filter(|c| !c.is_empty())
            .try_fold(from, |node, component| self.child_named(node, component))
    }

    fn model(&self) -> String {
        self.prop_str(ROOT, "model")
            .or_else(|| self.prop_str(ROOT, "compatible"))
            .unwrap_or("")
            .into()
    }

    fn memory(&self) -> Vec<Region> {
        self.children(ROOT)
            .filter(|&c| {
                (self.prop_str(c, "device_type") == Some("memory")
                    || base_name(self.name(c)) == "memory")
                    && self.is_enabled(c)
            })
            .flat_map(|c| self.reg(c))
            .filter_map(|r| r.and_then(usable))
            .collect()
    }

    fn reserved_memory(&self) -> Vec<Region> {
        let Some(node) = self.child_named(ROOT, "reserved-memory") else {
            return Vec::new();
        };
        self.children(node)
            .filter(|&c| self.is_enabled(c))
            .flat_map(|c| self.reg(c))
            .filter_map(|r| r.and_then(usable))
            .collect()
    }

    fn uart_at(&self, i: usize, kind: UartKind) -> Option<Uart> {
        let compatible = match kind {
            UartKind::Pl011 => "arm,pl011",
            UartKind::Bcm2835Aux => "brcm,bcm2835-aux-uart",
        };
        if !self.is_compatible(i, &[compatible]) || !self.is_enabled(i) {
            return None;
        }
        Some(Uart {
            region: self.region(i, 0)?,
            kind,
            irq: self.interrupts(i).first().copied(),
        })
    }

    fn uart(&self) -> Option<Uart> {
        [UartKind::Pl011, UartKind::Bcm2835Aux]
            .into_iter()
            .find_map(|kind| self.uart_of(kind))
    }

    /// The `stdout-path` node if it is an enabled UART of `kind`, else the first enabled one.
    fn uart_of(&self, kind: UartKind) -> Option<Uart> {
        let stdout = self.child_named(ROOT, "chosen").and_then(|chosen| {
            let path = self
                .prop_str(chosen, "stdout-path")
                .or_else(|| self.prop_str(chosen, "linux,stdout-path"))?;
            self.resolve(path.split(':').next().unwrap_or(path))
        });
        stdout
            .and_then(|node| self.uart_at(node, kind))
            .or_else(|| (0..self.nodes.len()).find_map(|i| self.uart_at(i, kind)))
    }

    fn gic_at(&self, i: usize) -> Option<InterruptController> {
        const GIC_V2: &[&str] = &[
            "arm,gic-400",
            "arm,cortex-a15-gic",
            "arm,cortex-a9-gic",
            "arm,cortex-a7-gic",
            "arm,cortex-a5-gic",
            "arm,arm11mp-gic",
            "arm,pl390",
            "arm,gic-v2",
        ];
        if !self.is_enabled(i) {
            return None;
        }
        let first = self.region(i, 0)?;
        let second = self.region(i, 1)?;
        if self.is_compatible(i, &["arm,gic-v3"]) {
            Some(InterruptController::GicV3 {
                distributor: first,
                redistributors: second,
            })
        } else if self.is_compatible(i, GIC_V2) {
            Some(InterruptController::GicV2 {
                distributor: first,
                cpu_interface: second,
            })
        } else {
            None
        }
    }

    fn interrupt_controller(&self) -> Option<InterruptController> {
        let gic = self
            .prop_u32(ROOT, "interrupt-parent")
            .and_then(|p| self.by_phandle(p))
            .and_then(|i| self.gic_at(i))
            .or_else(|| (0..self.nodes.len()).find_map(|i| self.gic_at(i)));
        gic.or_else(|| {
            let local = self
                .compatible_nodes(&["brcm,bcm2836-l1-intc"])
                .find_map(|i| self.region(i, 0))?;
            let peripheral = self
                .compatible_nodes(&["brcm,bcm2836-armctrl-ic"])
                .find_map(|i| self.region(i, 0));
            Some(InterruptController::Bcm2836 { local, peripheral })
        })
    }

    fn timer(&self) -> Option<Timer> {
        let node = self
            .compatible_nodes(&["arm,armv8-timer", "arm,armv7-timer"])
            .next()?;
        Some(Timer {
            interrupts: self.interrupts(node),
            frequency: self.prop_u32(node, "clock-frequency"),
        })
    }

    fn psci(&self) -> Option<PsciConduit> {
        self.compatible_nodes(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"])
            .find_map(|i| match self.prop_str(i, "method")? {
                "hvc" => Some(PsciConduit::Hvc),
                "smc" => Some(PsciConduit::Smc),
                _ => None,
            })
    }

    fn pm_watchdog(&self) -> Option<Region> {
        self.compatible_nodes(&["brcm,bcm2835-pm-wdt"])
            .find(|&i| self.is_enabled(i))
            .and_then(|i| self.region(i, 0))
    }

    fn cpus(&self) -> Vec<Cpu> {
        let Some(cpus) = self.child_named(ROOT, "cpus") else {
            return Vec::new();
        };
        let Some(address_cells) = self.address_cells(cpus).filter(|&n| n > 0) else {
            return Vec::new();
        };
        self.children(cpus)
            .filter(|&c| base_name(self.name(c)) == "cpu")
            .filter_map(|c| {
                let mpidr = cells_value(Cells(self.prop(c, "reg")?).take(address_cells)?)?;
                let enable = match self.prop_str(c, "enable-method") {
                    Some("psci") => EnableMethod::Psci,
                    Some("spin-table") => self
                        .prop(c, "cpu-release-addr")
                        .filter(|v| v.len() == 4 || v.len() == 8)
                        .and_then(cells_value)
                        .map_or(EnableMethod::None, |release_addr| EnableMethod::SpinTable {
                            release_addr,
                        }),
                    _ => EnableMethod::None,
                };
                Some(Cpu { mpidr, enable })
            })
            .collect()
    }

    fn bootargs(&self) -> Option<String> {
        let chosen = self.child_named(ROOT, "chosen")?;
        let value = self.prop(chosen, "bootargs")?;
        let text = value.split(|&b| b == 0).next().unwrap_or_default();
        Some(String::from_utf8_lossy(text).into_owned())
    }
}

fn base_name(name: &str) -> &str {
    name.split('@').next().unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::{format, vec};
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::time::{Duration, Instant};

    const VIRT_GICV2: &[u8] = include_bytes!("../data/dtb/qemu-virt-gicv2.dtb");
    const VIRT_GICV3: &[u8] = include_bytes!("../data/dtb/qemu-virt-gicv3.dtb");
    const VIRT_EL2: &[u8] = include_bytes!("../data/dtb/qemu-virt-el2.dtb");
    const VIRT_SMP8: &[u8] = include_bytes!("../data/dtb/qemu-virt-smp8-1g.dtb");
    const RPI3B: &[u8] = include_bytes!("../data/dtb/bcm2837-rpi-3-b.dtb");
    const RPI4B: &[u8] = include_bytes!("../data/dtb/bcm2711-rpi-4-b.dtb");

    fn region(base: u64, size: u64) -> Region {
        Region { base, size }
    }

    fn gic(kind: u32, number: u32, flags: u32) -> IrqSpec {
        IrqSpec {
            cells: [kind, number, flags],
            count: 3,
        }
    }

    fn two_cell(a: u32, b: u32) -> IrqSpec {
        IrqSpec {
            cells: [a, b, 0],
            count: 2,
        }
    }

    fn header_field(blob: &[u8], index: usize) -> u32 {
        be32(blob, index * 4).unwrap()
    }

    fn set_header_field(blob: &mut [u8], index: usize, value: u32) {
        blob[index * 4..index * 4 + 4].copy_from_slice(&value.to_be_bytes());
    }

    /// A QEMU tree without its zero padding: totalsize cut to the end of the strings.
    fn compact(blob: &[u8]) -> Vec<u8> {
        let end = (header_field(blob, 3) + header_field(blob, 8)) as usize;
        let mut out = blob[..end].to_vec();
        set_header_field(&mut out, 1, end as u32);
        out
    }

    fn assert_virt_common(m: &MachineInfo) {
        assert_eq!(m.model, "linux,dummy-virt");
        assert_eq!(
            m.uart,
            Some(Uart {
                region: region(0x0900_0000, 0x1000),
                kind: UartKind::Pl011,
                irq: Some(gic(0, 1, 4)),
            })
        );
        assert_eq!(m.uart.unwrap().irq.unwrap().gic_intid(), Some(33));
        assert!(m.reserved.is_empty());
        assert_eq!(m.bootargs, None);
        let timer = m.timer.as_ref().unwrap();
        let intids: Vec<_> = timer.interrupts.iter().map(|i| i.gic_intid()).collect();
        assert_eq!(intids, [Some(29), Some(30), Some(27), Some(26)]);
        assert_eq!(timer.frequency, None);
        for (i, cpu) in m.cpus.iter().enumerate() {
            assert_eq!(cpu.mpidr, i as u64);
            assert_eq!(cpu.enable, EnableMethod::Psci);
        }
    }

    #[test]
    fn qemu_virt_gicv2() {
        let m = parse(VIRT_GICV2).unwrap();
        assert_virt_common(&m);
        assert_eq!(m.memory, [region(0x4000_0000, 256 << 20)]);
        assert_eq!(
            m.interrupt_controller,
            Some(InterruptController::GicV2 {
                distributor: region(0x0800_0000, 0x1_0000),
                cpu_interface: region(0x0801_0000, 0x1_0000),
            })
        );
        assert_eq!(m.psci, Some(PsciConduit::Hvc));
        assert_eq!(m.cpus.len(), 4);
        assert_eq!(
            m.timer.unwrap().interrupts[1],
            gic(1, 14, 0xf04),
            "non-secure physical timer"
        );
    }

    #[test]
    fn qemu_virt_gicv3() {
        let m = parse(VIRT_GICV3).unwrap();
        assert_virt_common(&m);
        assert_eq!(
            m.interrupt_controller,
            Some(InterruptController::GicV3 {
                distributor: region(0x0800_0000, 0x1_0000),
                redistributors: region(0x080a_0000, 0xf6_0000),
            })
        );
        assert_eq!(m.psci, Some(PsciConduit::Hvc));
        assert_eq!(m.cpus.len(), 4);
    }

    #[test]
    fn qemu_virt_with_el2_uses_smc() {
        let m = parse(VIRT_EL2).unwrap();
        assert_virt_common(&m);
        assert_eq!(m.psci, Some(PsciConduit::Smc));
        assert_eq!(
            m.interrupt_controller,
            Some(InterruptController::GicV2 {
                distributor: region(0x0800_0000, 0x1_0000),
                cpu_interface: region(0x0801_0000, 0x1_0000),
            })
        );
    }

    #[test]
    fn qemu_virt_8_cpus_1g() {
        let m = parse(VIRT_SMP8).unwrap();
        assert_virt_common(&m);
        assert_eq!(m.cpus.len(), 8);
        assert_eq!(m.memory, [region(0x4000_0000, 1 << 30)]);
    }

    #[test]
    fn raspberry_pi_3b() {
        let m = parse(RPI3B).unwrap();
        // The power-management watchdog, translated from bus address 0x7e10_0000.
        assert_eq!(m.pm_watchdog.map(|r| r.base), Some(0x3f10_0000));
        assert_eq!(m.model, "Raspberry Pi 3 Model B");
        assert_eq!(m.memory, [region(0, 0x4000_0000)]);
        assert_eq!(m.reserved, [region(0, 0x1000)]);
        // stdout-path names the mini UART; the PL011 wins (see MachineInfo::uart).
        assert_eq!(
            m.uart,
            Some(Uart {
                region: region(0x3f20_1000, 0x200),
                kind: UartKind::Pl011,
                irq: Some(two_cell(2, 25)),
            })
        );
        assert_eq!(m.uart.unwrap().irq.unwrap().gic_intid(), None);
        // The mini UART is there too, for console=mini: armctrl bank 1, bit 29.
        assert_eq!(
            m.mini_uart,
            Some(Uart {
                region: region(0x3f21_5040, 0x40),
                kind: UartKind::Bcm2835Aux,
                irq: Some(two_cell(1, 29)),
            })
        );
        assert_eq!(
            m.interrupt_controller,
            Some(InterruptController::Bcm2836 {
                local: region(0x4000_0000, 0x100),
                peripheral: Some(region(0x3f00_b200, 0x200)),
            })
        );
        assert_eq!(m.psci, None);
        let release: Vec<_> = m.cpus.iter().map(|c| (c.mpidr, c.enable)).collect();
        assert_eq!(
            release,
            [0xd8, 0xe0, 0xe8, 0xf0]
                .iter()
                .enumerate()
                .map(|(i, &a)| (i as u64, EnableMethod::SpinTable { release_addr: a }))
                .collect::<Vec<_>>()
        );
        let timer = m.timer.unwrap();
        assert_eq!(
            timer.interrupts,
            [
                two_cell(0, 4),
                two_cell(1, 4),
                two_cell(3, 4),
                two_cell(2, 4)
            ]
        );
        assert_eq!(timer.frequency, None);
        assert_eq!(m.bootargs, None);
    }

    #[test]
    fn raspberry_pi_4b() {
        let m = parse(RPI4B).unwrap();
        assert_eq!(m.pm_watchdog.map(|r| r.base), Some(0xfe10_0000));
        assert_eq!(m.model, "Raspberry Pi 4 Model B");
        // reg = <0 0 0> is left for the firmware to fill in.
        assert!(m.memory.is_empty());
        // The nvram@0 child is disabled and empty.
        assert_eq!(m.reserved, [region(0, 0x1000)]);
        let uart = m.uart.unwrap();
        assert_eq!(uart.region, region(0xfe20_1000, 0x200));
        assert_eq!(uart.kind, UartKind::Pl011);
        assert_eq!(uart.irq.unwrap().gic_intid(), Some(32 + 0x79));
        let mini = m.mini_uart.unwrap();
        assert_eq!(mini.region, region(0xfe21_5040, 0x40));
        assert_eq!(mini.kind, UartKind::Bcm2835Aux);
        // GIC_SPI 93.
        assert_eq!(mini.irq.unwrap().gic_intid(), Some(125));
        assert_eq!(
            m.interrupt_controller,
            Some(InterruptController::GicV2 {
                distributor: region(0xff84_1000, 0x1000),
                cpu_interface: region(0xff84_2000, 0x2000),
            })
        );
        assert_eq!(m.psci, None);
        assert_eq!(m.cpus.len(), 4);
        assert_eq!(
            m.cpus[3].enable,
            EnableMethod::SpinTable { release_addr: 0xf0 }
        );
        let timer = m.timer.unwrap();
        let intids: Vec<_> = timer.interrupts.iter().map(|i| i.gic_intid()).collect();
        assert_eq!(intids, [Some(29), Some(30), Some(27), Some(26)]);
    }

    #[test]
    fn total_size_reads_only_the_header() {
        assert_eq!(total_size(&RPI3B[..40]), Ok(RPI3B.len()));
        assert_eq!(total_size(&VIRT_GICV2[..40]), Ok(1 << 20));
        assert_eq!(
            total_size(&RPI3B[..39]),
            Err(DtbError::TruncatedHeader { available: 39 })
        );
        let mut bad = RPI3B[..40].to_vec();
        set_header_field(&mut bad, 0, 0x1234_5678);
        let err = total_size(&bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad magic 0x12345678 (expected 0xd00dfeed)"
        );
        set_header_field(&mut bad, 0, MAGIC);
        set_header_field(&mut bad, 1, 39);
        assert_eq!(
            total_size(&bad),
            Err(DtbError::TotalSizeTooSmall { totalsize: 39 })
        );
        set_header_field(&mut bad, 1, (MAX_TOTAL_SIZE + 1) as u32);
        assert!(matches!(
            total_size(&bad),
            Err(DtbError::TotalSizeTooLarge { .. })
        ));
        set_header_field(&mut bad, 1, u32::MAX);
        assert!(total_size(&bad).is_err());
    }

    #[test]
    fn truncated_message() {
        let mut blob = RPI3B[..4000].to_vec();
        set_header_field(&mut blob, 1, 8192);
        assert_eq!(
            parse(&blob).unwrap_err().to_string(),
            "truncated: header says 8192 bytes, 4000 available"
        );
    }

    #[test]
    fn qemu_tree_parses_after_compaction_too() {
        let full = parse(VIRT_GICV3).unwrap();
        assert_eq!(parse(&compact(VIRT_GICV3)).unwrap(), full);
    }

    /// Builds device trees for tests.
    #[derive(Default)]
    struct Builder {
        structure: Vec<u8>,
        strings: Vec<u8>,
        reservations: Vec<(u64, u64)>,
    }

    impl Builder {
        fn token(&mut self, token: u32) -> &mut Self {
            self.structure.extend(token.to_be_bytes());
            self
        }

        fn pad(&mut self) {
            while !self.structure.len().is_multiple_of(4) {
                self.structure.push(0);
            }
        }

        fn begin(&mut self, name: &str) -> &mut Self {
            self.token(FDT_BEGIN_NODE);
            self.structure.extend(name.as_bytes());
            self.structure.push(0);
            self.pad();
            self
        }

        fn end(&mut self) -> &mut Self {
            self.token(FDT_END_NODE)
        }

        fn nop(&mut self) -> &mut Self {
            self.token(FDT_NOP)
        }

        fn name_offset(&mut self, name: &str) -> u32 {
            let mut wanted = name.as_bytes().to_vec();
            wanted.push(0);
            if let Some(at) = self
                .strings
                .windows(wanted.len())
                .position(|w| w == wanted.as_slice())
            {
                return at as u32;
            }
            let at = self.strings.len() as u32;
            self.strings.extend(wanted);
            at
        }

        fn prop(&mut self, name: &str, value: &[u8]) -> &mut Self {
            let nameoff = self.name_offset(name);
            self.token(FDT_PROP);
            self.structure.extend((value.len() as u32).to_be_bytes());
            self.structure.extend(nameoff.to_be_bytes());
            self.structure.extend(value);
            self.pad();
            self
        }

        fn cells(&mut self, name: &str, cells: &[u32]) -> &mut Self {
            let bytes: Vec<u8> = cells.iter().flat_map(|c| c.to_be_bytes()).collect();
            self.prop(name, &bytes)
        }

        fn string(&mut self, name: &str, value: &str) -> &mut Self {
            let mut bytes = value.as_bytes().to_vec();
            bytes.push(0);
            self.prop(name, &bytes)
        }

        fn reserve(&mut self, base: u64, size: u64) -> &mut Self {
            self.reservations.push((base, size));
            self
        }

        fn build(&self) -> Vec<u8> {
            self.build_version(17)
        }

        fn build_version(&self, version: u32) -> Vec<u8> {
            let mut blob = vec![0u8; HEADER_SIZE];
            for &(base, size) in self.reservations.iter().chain([(0, 0)].iter()) {
                blob.extend(base.to_be_bytes());
                blob.extend(size.to_be_bytes());
            }
            let struct_offset = blob.len();
            blob.extend(&self.structure);
            blob.extend(FDT_END.to_be_bytes());
            let struct_size = blob.len() - struct_offset;
            let strings_offset = blob.len();
            blob.extend(&self.strings);
            let fields = [
                MAGIC,
                blob.len() as u32,
                struct_offset as u32,
                strings_offset as u32,
                HEADER_SIZE as u32,
                version,
                16,
                0,
                self.strings.len() as u32,
                if version >= 17 { struct_size as u32 } else { 0 },
            ];
            for (i, f) in fields.into_iter().enumerate() {
                set_header_field(&mut blob, i, f);
            }
            blob
        }
    }

    /// A board with a bus behind `ranges`, aliases, a disabled PL011, an untranslatable
    /// PL011, and a mini UART named by `stdout-path`.
    fn board(stdout: &str, nops: bool) -> Builder {
        let mut b = Builder::default();
        let nop = |b: &mut Builder| {
            if nops {
                b.nop();
            }
        };
        nop(&mut b);
        b.reserve(0x1000, 0x2000).reserve(0x8000, 0);
        b.begin("")
            .cells("#address-cells", &[1])
            .cells("#size-cells", &[1]);
        nop(&mut b);
        b.string("model", "Test Board")
            .cells("interrupt-parent", &[1]);
        nop(&mut b);
        b.begin("aliases")
            .string("serial0", "/soc/serial@7e201000")
            .string("serial1", "/soc/serial@7e215040")
            .string("loop", "loop")
            .string("soc", "/soc")
            .end();
        nop(&mut b);
        b.begin("chosen")
            .string("stdout-path", stdout)
            .string("bootargs", "init=\"help\" seed=7")
            .end();
        b.begin("memory@0")
            .string("device_type", "memory")
            .cells("reg", &[0, 0x1000_0000, 0x2000_0000, 0, 0x3000_0000, 0x100])
            .end();
        b.begin("reserved-memory")
            .cells("#address-cells", &[1])
            .cells("#size-cells", &[1])
            .prop("ranges", &[]);
        nop(&mut b);
        b.begin("fw@100").cells("reg", &[0x100, 0x200]).end();
        nop(&mut b);
        b.begin("off@400")
            .cells("reg", &[0x400, 0x200])
            .string("status", "disabled")
            .end()
            .begin("cma")
            .cells("size", &[0x40_0000])
            .end()
            .end();
        b.begin("soc")
            .string("compatible", "simple-bus")
            .cells("#address-cells", &[1])
            .cells("#size-cells", &[1])
            .cells("ranges", &[0x7e00_0000, 0x3f00_0000, 0x100_0000]);
        b.begin("serial@7e201000")
            .prop("compatible", b"arm,pl011\0arm,primecell\0")
            .cells("reg", &[0x7e20_1000, 0x200])
            .cells("interrupts", &[0, 5, 4])
            .string("status", "disabled")
            .end();
        nop(&mut b);
        b.begin("serial@7e215040")
            .string("compatible", "brcm,bcm2835-aux-uart")
            .cells("reg", &[0x7e21_5040, 0x40])
            .cells("interrupts", &[0, 0x5d, 4])
            .string("status", "okay")
            .end()
            .begin("intc@7e001000")
            .string("compatible", "arm,gic-400")
            .cells("reg", &[0x7e00_1000, 0x1000, 0x7e00_2000, 0x2000])
            .cells("#interrupt-cells", &[3])
            .prop("interrupt-controller", &[])
            .cells("phandle", &[1])
            .end()
            .begin("nobus")
            .cells("#address-cells", &[1])
            .cells("#size-cells", &[1])
            .begin("serial@0")
            .string("compatible", "arm,pl011")
            .cells("reg", &[0, 0x1000])
            .end()
            .end();
        nop(&mut b);
        b.end();
        b.begin("psci")
            .prop("compatible", b"arm,psci-0.2\0arm,psci\0")
            .string("method", "smc")
            .end()
            .begin("timer")
            .string("compatible", "arm,armv8-timer")
            .cells("interrupts", &[1, 13, 8, 1, 14, 8, 1, 11, 8, 1, 10, 8])
            .cells("clock-frequency", &[19_200_000])
            .end()
            .begin("cpus")
            .cells("#address-cells", &[2])
            .cells("#size-cells", &[0])
            .begin("cpu@0")
            .cells("reg", &[0, 0])
            .string("enable-method", "psci")
            .end()
            .begin("cpu@100")
            .cells("reg", &[0, 0x100])
            .string("enable-method", "spin-table")
            .cells("cpu-release-addr", &[0, 0xd8])
            .end()
            .begin("cpu@200")
            .cells("reg", &[0, 0x200])
            .end()
            .begin("cpu@300")
            .cells("reg", &[0, 0x300])
            .string("enable-method", "spin-table")
            .end()
            .begin("cpu-map")
            .end()
            .end();
        nop(&mut b);
        b.end();
        nop(&mut b);
        b
    }

    fn expected_board() -> MachineInfo {
        let mini = Some(Uart {
            region: region(0x3f21_5040, 0x40),
            kind: UartKind::Bcm2835Aux,
            irq: Some(gic(0, 0x5d, 4)),
        });
        MachineInfo {
            model: "Test Board".into(),
            memory: vec![region(0, 0x1000_0000), region(0x3000_0000, 0x100)],
            reserved: vec![region(0x1000, 0x2000), region(0x100, 0x200)],
            uart: mini,
            mini_uart: mini,
            interrupt_controller: Some(InterruptController::GicV2 {
                distributor: region(0x3f00_1000, 0x1000),
                cpu_interface: region(0x3f00_2000, 0x2000),
            }),
            timer: Some(Timer {
                interrupts: vec![gic(1, 13, 8), gic(1, 14, 8), gic(1, 11, 8), gic(1, 10, 8)],
                frequency: Some(19_200_000),
            }),
            psci: Some(PsciConduit::Smc),
            cpus: vec![
                Cpu {
                    mpidr: 0,
                    enable: EnableMethod::Psci,
                },
                Cpu {
                    mpidr: 0x100,
                    enable: EnableMethod::SpinTable { release_addr: 0xd8 },
                },
                Cpu {
                    mpidr: 0x200,
                    enable: EnableMethod::None,
                },
                Cpu {
                    mpidr: 0x300,
                    enable: EnableMethod::None,
                },
            ],
            pm_watchdog: None,
            bootargs: Some("init=\"help\" seed=7".into()),
        }
    }

    #[test]
    fn synthetic_board() {
        let blob = board("serial1:115200n8", false).build();
        assert_eq!(parse(&blob).unwrap(), expected_board());
    }

    #[test]
    fn nops_anywhere_parse_the_same() {
        let blob = board("serial1:115200n8", true).build();
        assert_eq!(parse(&blob).unwrap(), expected_board());
        // Plain fdt 0.1.5 misreads these trees, which is why parse strips the NOPs: it
        // stops at a NOP between properties and loses the rest of the tree ...
        let children = |blob: &[u8]| {
            let fdt = Fdt::new(blob).unwrap();
            let total = fdt.all_nodes().map(|n| n.children().count()).sum::<usize>();
            total
        };
        let clean = board("serial1:115200n8", false).build();
        assert!(children(&blob) < children(&clean));
        // ... and panics when it skips over a node with one there.
        let mut b = Builder::default();
        b.begin("")
            .begin("a")
            .string("p", "1")
            .nop()
            .string("q", "2")
            .end()
            .end();
        let blob = b.build();
        assert!(catch_unwind(|| children(&blob)).is_err());
        assert!(parse(&blob).is_ok());
    }

    #[test]
    fn version_16_blobs_parse() {
        let blob = board("serial1", true).build_version(16);
        assert_eq!(parse(&blob).unwrap(), expected_board());
        let blob = board("serial1", false).build_version(16);
        assert_eq!(parse(&blob).unwrap(), expected_board());
    }

    #[test]
    fn stdout_path_forms() {
        let uart = |path: &str| parse(&board(path, false).build()).unwrap().uart;
        let mini = expected_board().uart;
        assert_eq!(uart("/soc/serial@7e215040"), mini);
        assert_eq!(uart("/soc/serial@7e215040:115200"), mini);
        assert_eq!(uart("serial1"), mini);
        assert_eq!(uart("soc/serial@7e215040"), mini, "alias plus a sub-path");
        // A self-referencing alias must not loop; nothing else names a usable UART
        // except the mini UART, which is then picked as the first enabled one.
        assert_eq!(uart("loop"), mini);
        assert_eq!(uart("serial0"), mini, "the PL011 it names is disabled");
        assert_eq!(uart("/nowhere"), mini);
        assert_eq!(uart(""), mini);
    }

    #[test]
    fn ranges_translation() {
        let mut b = Builder::default();
        b.begin("")
            .cells("#address-cells", &[2])
            .cells("#size-cells", &[2])
            .begin("bus@0")
            .cells("#address-cells", &[1])
            .cells("#size-cells", &[1])
            .cells("ranges", &[0x1000_0000, 0x8, 0x0, 0x100_0000])
            .begin("inner")
            .cells("#address-cells", &[1])
            .cells("#size-cells", &[1])
            .prop("ranges", &[])
            .begin("serial@10001000")
            .string("compatible", "arm,pl011")
            .cells("reg", &[0x1000_1000, 0x1000])
            .end()
            .end()
            .begin("serial@20000000")
            .string("compatible", "arm,pl011")
            .string("status", "okay")
            .cells("reg", &[0x2000_0000, 0x1000])
            .end()
            .end()
            .end();
        let m = parse(&b.build()).unwrap();
        // The first PL011, behind an identity bus and a translating one.
        assert_eq!(m.uart.unwrap().region, region(0x8_0000_1000, 0x1000));
        assert_eq!(m.uart.unwrap().irq, None);
        assert_eq!(m.interrupt_controller, None);
        assert_eq!(m.timer, None);
        assert_eq!(m.psci, None);
        assert!(m.cpus.is_empty() && m.memory.is_empty() && m.reserved.is_empty());
        assert_eq!(m.model, "");
    }

    #[test]
    fn address_outside_every_range_is_not_translated() {
        let mut b = Builder::default();
        b.begin("")
            .begin("bus")
            .cells("#address-cells", &[1])
            .cells("#size-cells", &[1])
            .cells("ranges", &[0x1000, 0x2000, 0x1000])
            .begin("serial@4000")
            .string("compatible", "arm,pl011")
            .cells("reg", &[0x4000, 0x100])
            .end()
            .end()
            .end();
        assert_eq!(parse(&b.build()).unwrap().uart, None);
    }

    #[test]
    fn malformed_cells_are_skipped_not_fatal() {
        let mut b = Builder::default();
        b.begin("")
            .prop("#address-cells", &[0, 1])
            .string("compatible", "vendor,board")
            .begin("memory@0")
            .string("device_type", "memory")
            .cells("reg", &[0, 0x1000])
            .end()
            .begin("cpus")
            .cells("#address-cells", &[9])
            .begin("cpu@0")
            .cells("reg", &[0])
            .end()
            .end()
            .begin("psci")
            .string("compatible", "arm,psci-1.0")
            .string("method", "magic")
            .end()
            .begin("timer")
            .string("compatible", "arm,armv7-timer")
            .cells("interrupt-parent", &[77])
            .cells("interrupts", &[1, 2, 3])
            .prop("clock-frequency", &[1, 2])
            .end()
            .begin("gic")
            .string("compatible", "arm,gic-v3")
            .cells("reg", &[0, 0x1000])
            .end()
            .end();
        let m = parse(&b.build()).unwrap();
        assert_eq!(m.model, "vendor,board");
        assert!(m.memory.is_empty());
        assert!(m.cpus.is_empty());
        assert_eq!(m.psci, None);
        assert_eq!(
            m.timer,
            Some(Timer {
                interrupts: vec![],
                frequency: None
            })
        );
        assert_eq!(m.interrupt_controller, None);
    }

    #[test]
    fn gic_intid_ranges() {
        assert_eq!(gic(0, 0, 4).gic_intid(), Some(32));
        assert_eq!(gic(0, 987, 4).gic_intid(), Some(1019));
        assert_eq!(gic(0, 988, 4).gic_intid(), None);
        assert_eq!(gic(1, 15, 4).gic_intid(), Some(31));
        assert_eq!(gic(1, 16, 4).gic_intid(), None);
        assert_eq!(gic(2, 1, 4).gic_intid(), None);
        assert_eq!(gic(0, u32::MAX, 4).gic_intid(), None);
        assert_eq!(two_cell(0, 1).gic_intid(), None);
    }

    fn minimal() -> Builder {
        let mut b = Builder::default();
        b.begin("").string("model", "m").end();
        b
    }

    fn structure_error(blob: &[u8]) -> StructureError {
        match validate(blob) {
            Err(DtbError::Structure { problem, .. }) => problem,
            other => panic!("expected a structure error, got {other:?}"),
        }
    }

    #[test]
    fn structurally_odd_blobs() {
        assert!(parse(&minimal().build()).is_ok());

        // Header fields.
        let good = minimal().build();
        let patched = |index: usize, value: u32| {
            let mut blob = good.clone();
            set_header_field(&mut blob, index, value);
            validate(&blob).unwrap_err()
        };
        assert_eq!(patched(5, 15), DtbError::UnsupportedVersion { version: 15 });
        assert_eq!(
            patched(6, 18),
            DtbError::IncompatibleVersion {
                last_comp_version: 18
            }
        );
        assert!(matches!(patched(1, 0), DtbError::TotalSizeTooSmall { .. }));
        assert!(matches!(
            patched(1, good.len() as u32 + 4),
            DtbError::Truncated { .. }
        ));
        for (field, block) in [
            (2, Block::Structure),
            (3, Block::Strings),
            (4, Block::ReservationMap),
        ] {
            for value in [0, 8, good.len() as u32, good.len() as u32 + 8, u32::MAX - 7] {
                match patched(field, value) {
                    DtbError::BlockOutOfBounds { block: b, .. }
                    | DtbError::Misaligned { block: b, .. } => assert_eq!(b, block),
                    DtbError::Structure { .. } | DtbError::ReservationsUnterminated { .. } => {}
                    other => panic!("field {field} = {value:#x}: {other:?}"),
                }
            }
        }
        assert!(matches!(
            patched(2, header_field(&good, 2) + 2),
            DtbError::Misaligned { .. }
        ));
        assert!(matches!(
            patched(4, header_field(&good, 4) + 4),
            DtbError::Misaligned { .. }
        ));
        assert!(matches!(patched(9, 2), DtbError::Misaligned { .. }));
        assert!(matches!(
            patched(9, u32::MAX - 3),
            DtbError::BlockOutOfBounds { .. }
        ));
        assert!(matches!(
            patched(8, u32::MAX),
            DtbError::BlockOutOfBounds { .. }
        ));
        // Zero sizes.
        assert_eq!(
            structure_error(&{
                let mut blob = good.clone();
                set_header_field(&mut blob, 9, 0);
                blob
            }),
            StructureError::MissingEnd
        );
        assert!(matches!(
            structure_error(&{
                let mut blob = good.clone();
                set_header_field(&mut blob, 8, 0);
                blob
            }),
            StructureError::PropertyNameOffset {
                nameoff: 0,
                strings_size: 0
            }
        ));

        // Structure tokens.
        let check = |build: &dyn Fn(&mut Builder), expected: StructureError| {
            let mut b = Builder::default();
            build(&mut b);
            assert_eq!(structure_error(&b.build()), expected);
        };
        check(&|_| {}, StructureError::MissingRoot);
        check(
            &|b| {
                b.nop();
            },
            StructureError::MissingRoot,
        );
        check(
            &|b| {
                b.begin("");
            },
            StructureError::UnclosedNodes { depth: 1 },
        );
        check(
            &|b| {
                b.begin("").begin("a").end();
            },
            StructureError::UnclosedNodes { depth: 1 },
        );
        check(
            &|b| {
                b.begin("").end().end();
            },
            StructureError::UnbalancedEndNode,
        );
        check(
            &|b| {
                b.end();
            },
            StructureError::UnbalancedEndNode,
        );
        check(
            &|b| {
                b.begin("").end().begin("again").end();
            },
            StructureError::SecondRoot,
        );
        check(
            &|b| {
                b.string("x", "y").begin("").end();
            },
            StructureError::PropertyOutsideNode,
        );
        check(
            &|b| {
                b.begin("").begin("a").end().string("late", "x").end();
            },
            StructureError::PropertyAfterChild,
        );
        check(
            &|b| {
                b.begin("").token(7).end();
            },
            StructureError::UnknownToken(7),
        );
        check(
            &|b| {
                b.begin("").token(5).end();
            },
            StructureError::UnknownToken(5),
        );
        check(
            &|b| {
                b.begin("").token(FDT_END).end();
            },
            StructureError::UnclosedNodes { depth: 1 },
        );
        check(
            &|b| {
                b.begin("").end().token(FDT_END);
            },
            StructureError::TrailingData { bytes: 4 },
        );
        check(
            &|b| {
                b.begin("").token(FDT_BEGIN_NODE);
                b.structure.extend([0xff, 0xfe, 0, 0]);
                b.end().end();
            },
            StructureError::NameNotUtf8,
        );
        check(
            &|b| {
                b.begin("").token(FDT_PROP);
                b.structure.extend(0xffff_fff0u32.to_be_bytes());
                b.structure.extend(0u32.to_be_bytes());
                b.end();
            },
            StructureError::PropertyTooLong { len: 0xffff_fff0 },
        );
        check(
            &|b| {
                b.begin("").token(FDT_PROP);
            },
            StructureError::UnexpectedEnd,
        );
        check(
            &|b| {
                b.strings.extend(b"x\0");
                b.begin("").token(FDT_PROP);
                b.structure.extend(0u32.to_be_bytes());
                b.structure.extend(2u32.to_be_bytes());
                b.end();
            },
            StructureError::PropertyNameOffset {
                nameoff: 2,
                strings_size: 2,
            },
        );
        check(
            &|b| {
                b.strings.extend(b"abc");
                b.begin("").token(FDT_PROP);
                b.structure.extend(0u32.to_be_bytes());
                b.structure.extend(1u32.to_be_bytes());
                b.end();
            },
            StructureError::PropertyNameUnterminated { nameoff: 1 },
        );
        check(
            &|b| {
                b.strings.extend(b"\xc3\x28\0");
                b.begin("").token(FDT_PROP);
                b.structure.extend(0u32.to_be_bytes());
                b.structure.extend(0u32.to_be_bytes());
                b.end();
            },
            StructureError::PropertyNameNotUtf8 { nameoff: 0 },
        );

        // An unterminated node name: the block ends inside it.
        let mut b = Builder::default();
        b.begin("").token(FDT_BEGIN_NODE);
        b.structure.extend(b"abcd");
        let mut blob = b.build();
        let end = header_field(&blob, 2) as usize + b.structure.len();
        blob[end..end + 4].copy_from_slice(b"efgh");
        assert_eq!(structure_error(&blob), StructureError::NameUnterminated);

        // Depth and counts.
        let nested = |depth: usize| {
            let mut b = Builder::default();
            for _ in 0..depth {
                b.begin("n");
            }
            for _ in 0..depth {
                b.end();
            }
            b.build()
        };
        assert!(parse(&nested(MAX_DEPTH)).is_ok());
        assert_eq!(
            structure_error(&nested(MAX_DEPTH + 1)),
            StructureError::TooDeep { limit: MAX_DEPTH }
        );
        assert!(validate(&nested(100_000)).is_err());
        let siblings = |count: usize| {
            let mut b = Builder::default();
            b.begin("");
            for _ in 1..count {
                b.begin("n").end();
            }
            b.end().build()
        };
        assert!(parse(&siblings(MAX_NODES)).is_ok());
        assert_eq!(
            structure_error(&siblings(MAX_NODES + 1)),
            StructureError::TooManyNodes { limit: MAX_NODES }
        );
        let mut b = Builder::default();
        b.begin("");
        for _ in 0..=MAX_PROPERTIES {
            b.prop("p", &[]);
        }
        b.end();
        assert_eq!(
            structure_error(&b.build()),
            StructureError::TooManyProperties {
                limit: MAX_PROPERTIES
            }
        );

        // Reservations.
        let mut b = minimal();
        for i in 0..=MAX_RESERVATIONS as u64 {
            b.reserve(i << 12, 0x1000);
        }
        assert!(matches!(
            validate(&b.build()),
            Err(DtbError::TooManyReservations { .. })
        ));
        let mut blob = minimal().reserve(0x1000, 0x1000).build();
        // Point the map at the last 16 bytes, which are not all zero.
        let last = (blob.len() - 16) & !7;
        set_header_field(&mut blob, 4, last as u32);
        blob.extend([0xff; 8]);
        let len = blob.len() as u32;
        set_header_field(&mut blob, 1, len);
        let err = validate(&blob).unwrap_err();
        assert!(
            matches!(
                err,
                DtbError::ReservationsUnterminated { .. } | DtbError::BlockOutOfBounds { .. }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn errors_say_where() {
        let mut b = Builder::default();
        b.begin("").token(0x42).end();
        let blob = b.build();
        assert_eq!(
            validate(&blob).unwrap_err().to_string(),
            "structure block at offset 0x40: unknown token 0x42"
        );
        let mut blob = RPI3B.to_vec();
        set_header_field(&mut blob, 3, 0x7000_0000);
        assert_eq!(
            validate(&blob).unwrap_err().to_string(),
            "strings block at offset 0x70000000 (0x441 bytes) lies outside the 0x3a91-byte \
             blob or inside its header"
        );
    }

    /// Runs every entry point on `blob`, proving it neither panics nor takes long, and
    /// that `validate` and `parse` agree.
    fn survives(blob: &[u8], what: &str) -> Duration {
        let start = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let _ = total_size(blob);
            let valid = validate(blob);
            let parsed = parse(blob);
            assert_eq!(
                valid.is_ok(),
                parsed.is_ok(),
                "{what}: {valid:?} {parsed:?}"
            );
            if let Err(e) = parsed {
                assert!(!e.to_string().is_empty());
            }
        }));
        let elapsed = start.elapsed();
        assert!(outcome.is_ok(), "{what}: panicked");
        assert!(elapsed < Duration::from_secs(2), "{what}: took {elapsed:?}");
        elapsed
    }

    fn corpus() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("rpi3b", RPI3B.to_vec()),
            ("rpi4b", RPI4B.to_vec()),
            ("virt-gicv2", compact(VIRT_GICV2)),
            ("virt-gicv3", compact(VIRT_GICV3)),
            ("board", board("serial1", true).build()),
        ]
    }

    #[test]
    fn truncation_at_every_length() {
        for (name, blob) in corpus() {
            for len in 0..=blob.len() {
                // As handed over: the header still claims the full size.
                survives(&blob[..len], name);
                // As if the header agreed, so the walk goes as far as the bytes do.
                if len >= HEADER_SIZE {
                    let mut cut = blob[..len].to_vec();
                    set_header_field(&mut cut, 1, len as u32);
                    survives(&cut, name);
                }
            }
            // The structure block cut at every word.
            let size = header_field(&blob, 9);
            for cut in (0..=size).step_by(4) {
                let mut short = blob.clone();
                set_header_field(&mut short, 9, cut);
                survives(&short, name);
            }
        }
        // The 1 MiB QEMU trees as mapped: every prefix of the meaningful part.
        let end = (header_field(VIRT_EL2, 3) + header_field(VIRT_EL2, 8)) as usize;
        for len in 0..=end {
            survives(&VIRT_EL2[..len], "virt-el2");
        }
    }

    #[test]
    fn blobs_at_every_limit_parse_in_bounded_time() {
        // Deepest chain, with the most nodes and properties at its bottom: the shape that
        // costs the `fdt` crate's node skipper the most.
        let mut b = Builder::default();
        for _ in 0..MAX_DEPTH - 1 {
            b.begin("bus").prop("ranges", &[]);
        }
        let leaves = MAX_NODES - MAX_DEPTH;
        let per_leaf = (MAX_PROPERTIES - MAX_DEPTH) / leaves;
        for i in 0..leaves {
            b.begin(&format!("serial@{i:x}"));
            for _ in 0..per_leaf - 2 {
                b.string("compatible", "arm,pl011");
            }
            b.string("status", "disabled")
                .cells("reg", &[0, i as u32, 0, 16]);
            b.end();
        }
        for _ in 0..MAX_DEPTH - 1 {
            b.end();
        }
        let blob = b.build();
        assert!(blob.len() <= MAX_TOTAL_SIZE);
        let elapsed = survives(&blob, "limits");
        assert_eq!(parse(&blob).unwrap().uart, None);
        std::println!("limits blob: {} bytes, parsed in {elapsed:?}", blob.len());
    }

    #[test]
    fn seeded_bit_flips() {
        let mut rng = crate::rng::XorShift::new(0x2545_f491_4f6c_dd1d);
        let mut slowest = Duration::ZERO;
        for (name, blob) in corpus() {
            for _ in 0..1500 {
                let mut flipped = blob.clone();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(flipped.len());
                    flipped[at] ^= 1 << rng.below(8);
                }
                slowest = slowest.max(survives(&flipped, name));
            }
        }
        assert!(
            slowest < Duration::from_secs(1),
            "slowest parse {slowest:?}"
        );
    }

    #[test]
    fn seeded_word_mutations_in_the_structure_block() {
        let mut rng = crate::rng::XorShift::new(0xdead_beef_cafe_f00d);
        let words = [1, 2, 3, 4, 9, 0, 5, 0xffff_ffff, 0x8000_0000, 0x10, 0x1000];
        for (name, blob) in corpus() {
            let start = header_field(&blob, 2) as usize;
            let size = header_field(&blob, 9) as usize;
            for _ in 0..1500 {
                let mut mutated = blob.clone();
                for _ in 0..1 + rng.below(3) {
                    let at = start + 4 * rng.below(size / 4);
                    let word = if rng.below(4) == 0 {
                        rng.next_u64() as u32
                    } else {
                        words[rng.below(words.len())]
                    };
                    mutated[at..at + 4].copy_from_slice(&word.to_be_bytes());
                }
                survives(&mutated, name);
            }
        }
    }

    #[test]
    fn random_bytes_with_a_valid_header() {
        let mut rng = crate::rng::XorShift::new(7);
        for _ in 0..3000 {
            let len = HEADER_SIZE + rng.below(512);
            let mut blob: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            set_header_field(&mut blob, 0, MAGIC);
            set_header_field(&mut blob, 1, len as u32);
            set_header_field(&mut blob, 5, 16 + rng.below(2) as u32);
            set_header_field(&mut blob, 6, 16);
            for field in [2, 3, 4, 8, 9] {
                let value = (rng.below(len) & !3) as u32;
                set_header_field(&mut blob, field, value);
            }
            survives(&blob, "random");
        }
    }
}
