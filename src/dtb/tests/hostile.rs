//! Malformed and mutated blobs: every one is an error or a description, never a panic.
use super::*;

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
    // A hang guard only (a loaded host makes any parse slow): a parse that never ends.
    assert!(
        elapsed < Duration::from_secs(60),
        "{what}: took {elapsed:?}"
    );
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
    // Only a hang guard: how fast a parse runs depends on the host's load (one took 1.08 s
    // on a loaded 2-core host), so this bounds nothing but a parse that never ends.
    assert!(
        slowest < Duration::from_secs(60),
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
