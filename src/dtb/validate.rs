//! The structural pre-pass over untrusted bytes ([`check`]): header, reservation block and
//! every structure token, so that the `fdt` crate only ever sees a blob it reads soundly;
//! and the NOP-free, version-17 copy ([`fdt_image`]) handed to it.
use super::*;

/// Where everything is in a blob that passed [`check`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Layout {
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

pub(super) fn check(blob: &[u8]) -> Result<Layout, DtbError> {
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

pub(super) fn count_reservations(blob: &[u8], offset: usize) -> Result<usize, DtbError> {
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

pub(super) struct Walk {
    size: usize,
    nops: usize,
}

/// Walks the structure tokens in `blob[start..end]`. With `exact`, `FDT_END` must be the
/// last token before `end`. With `out`, copies every token except `FDT_NOP` there.
pub(super) fn walk_structure(
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

pub(super) fn check_property_name(strings: &[u8], nameoff: u32) -> Result<(), StructureError> {
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
pub(super) fn fdt_image<'a>(blob: &'a [u8], layout: &Layout) -> Result<Cow<'a, [u8]>, DtbError> {
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
pub(super) fn reservations<'a>(
    blob: &'a [u8],
    layout: &Layout,
) -> impl Iterator<Item = Region> + 'a {
    let offset = layout.reservations_offset;
    (0..layout.reservation_count).filter_map(move |i| {
        let at = offset + i * RESERVATION_ENTRY_SIZE;
        usable(Region {
            base: be64(blob, at)?,
            size: be64(blob, at + 8)?,
        })
    })
}
