//! Mapping: pages and blocks, descriptor encodings, attributes, refusals.
use super::*;

#[test]
fn page_bits_are_the_page_descriptor_without_its_address() {
    for memory in [
        MemoryType::Normal,
        MemoryType::Device,
        MemoryType::NormalNonCacheable,
    ] {
        for permission in [
            Permission::ReadOnly,
            Permission::ReadWrite,
            Permission::ReadExecute,
        ] {
            let attrs = Attributes::new(memory, permission);
            for pa in [0, 0x4000_0000, 0x0000_ffff_ffff_f000] {
                assert_eq!(
                    PageTable::page_bits(attrs) | pa,
                    PageTable::page_descriptor(pa, attrs)
                );
            }
        }
    }
}

#[test]
fn maps_and_queries_pages() {
    let (mut mem, tlb, mut pt) = setup();
    pt.map(
        &mut mem,
        &tlb,
        KVA,
        0x8000_0000,
        3 * PAGE,
        Attributes::DATA,
        true,
    )
    .unwrap();
    for i in 0..3 {
        let t = pt.query(&mem, KVA + i * PAGE + 0x123).unwrap();
        assert_eq!(t.pa, 0x8000_0000 + i * PAGE + 0x123);
        assert_eq!(t.level, 3);
        assert_eq!(t.size(), PAGE);
        assert_eq!(t.attributes, Attributes::DATA);
    }
    assert_eq!(pt.query(&mem, KVA + 3 * PAGE), None);
    assert_eq!(pt.query(&mem, KVA - PAGE), None);
    // Root, L1, L2, L3.
    assert_eq!(mem.allocs, 4);
    let events = tlb.take();
    assert_eq!(events.last(), Some(&Event::AfterMap));
    assert!(!events.iter().any(|e| matches!(e, Event::Invalidate(_))));
}

#[test]
fn maps_blocks_where_aligned_and_allowed() {
    let (mut mem, tlb, mut pt) = setup();
    pt.map(
        &mut mem,
        &tlb,
        KVA,
        0x4000_0000,
        GIB,
        Attributes::DATA,
        true,
    )
    .unwrap();
    // A 1 GiB block needs only the L1 table.
    assert_eq!(mem.allocs, 2);
    let t = pt.query(&mem, KVA + 0x1234_5678).unwrap();
    assert_eq!((t.level, t.pa), (1, 0x4000_0000 + 0x1234_5678));

    pt.map(
        &mut mem,
        &tlb,
        KVA + GIB,
        0x20_0000,
        2 * MIB,
        Attributes::DATA,
        true,
    )
    .unwrap();
    let t = pt.query(&mem, KVA + GIB + 0x1000).unwrap();
    assert_eq!((t.level, t.pa), (2, 0x20_1000));

    // Blocks not allowed: pages.
    pt.map(
        &mut mem,
        &tlb,
        KVA + GIB + 2 * MIB,
        0x40_0000,
        2 * MIB,
        Attributes::DATA,
        false,
    )
    .unwrap();
    assert_eq!(pt.query(&mem, KVA + GIB + 2 * MIB).unwrap().level, 3);

    // VA aligned but PA not aligned to 2 MiB: pages.
    pt.map(
        &mut mem,
        &tlb,
        KVA + GIB + 4 * MIB,
        0x60_1000,
        2 * MIB,
        Attributes::DATA,
        true,
    )
    .unwrap();
    assert_eq!(pt.query(&mem, KVA + GIB + 4 * MIB).unwrap().level, 3);

    // A range spanning a 2 MiB boundary unevenly: pages, one block, pages.
    let va = KVA + 2 * GIB + 2 * MIB - 2 * PAGE;
    let pa = 0x1_0000_0000 + 2 * MIB - 2 * PAGE;
    pt.map(
        &mut mem,
        &tlb,
        va,
        pa,
        2 * MIB + 4 * PAGE,
        Attributes::DATA,
        true,
    )
    .unwrap();
    let levels: Vec<u8> = mappings(&pt, &mem)
        .into_iter()
        .filter(|&(v, _, _)| v >= va)
        .map(|(_, _, l)| l)
        .collect();
    assert_eq!(levels, vec![3, 3, 2, 3, 3]);
    for offset in [0, PAGE, 2 * PAGE, MIB, 2 * MIB + 3 * PAGE] {
        assert_eq!(pt.query(&mem, va + offset).unwrap().pa, pa + offset);
    }
}

#[test]
fn descriptors_match_the_boot_code_encoding() {
    // The architecture's encoding, typed independently of the field definitions.
    let normal = 0x3 | (1 << 10) | (3 << 8);
    let (pxn, uxn, ro) = (1u64 << 53, 1u64 << 54, 1u64 << 7);
    let pa = 0x4008_1000;
    assert_eq!(
        PageTable::page_descriptor(pa, Attributes::DATA),
        pa | normal | pxn | uxn
    );
    assert_eq!(PageTable::page_descriptor(pa, RX), pa | normal | ro | uxn);
    assert_eq!(
        PageTable::page_descriptor(pa, RO),
        pa | normal | ro | pxn | uxn
    );
    // Device: AttrIndx 1, never executable; non-cacheable: AttrIndx 2.
    let device = PageTable::page_descriptor(pa, Attributes::DEVICE);
    assert_eq!((device >> 2) & 7, 1);
    assert_eq!(device & (pxn | uxn), pxn | uxn);
    let device_rx = Attributes::new(MemoryType::Device, Permission::ReadExecute);
    let device_rx = PageTable::page_descriptor(pa, device_rx);
    assert_eq!(device_rx & (pxn | uxn | ro), pxn | uxn | ro);
    let nc = Attributes::new(MemoryType::NormalNonCacheable, Permission::ReadWrite);
    assert_eq!((PageTable::page_descriptor(pa, nc) >> 2) & 7, 2);
    // Global, and the low bits of the address ignored.
    assert_eq!(PageTable::page_descriptor(pa + 0x7ff, RO) & (1 << 11), 0);
    assert_eq!(
        PageTable::page_descriptor(pa + 0x7ff, RO),
        PageTable::page_descriptor(pa, RO)
    );
}

#[test]
fn attributes_round_trip_and_keep_w_xor_x() {
    let (mut mem, tlb, mut pt) = setup();
    let memories = [
        MemoryType::Normal,
        MemoryType::Device,
        MemoryType::NormalNonCacheable,
    ];
    let permissions = [
        Permission::ReadOnly,
        Permission::ReadWrite,
        Permission::ReadExecute,
    ];
    let mut va = KVA;
    for memory in memories {
        for permission in permissions {
            let attrs = Attributes::new(memory, permission);
            let result = pt.map(&mut mem, &tlb, va, 0x9000_0000, PAGE, attrs, false);
            if memory == MemoryType::Device && permission == Permission::ReadExecute {
                assert_eq!(result, Err(MapError::ExecutableDevice));
                assert_eq!(pt.query(&mem, va), None);
                continue;
            }
            result.unwrap();
            let t = pt.query(&mem, va).unwrap();
            assert_eq!(t.attributes, attrs);
            assert_eq!(t.writable(), permission == Permission::ReadWrite);
            assert_eq!(t.executable(), permission == Permission::ReadExecute);
            assert!(!(t.writable() && t.executable()));
            va += PAGE;
        }
    }
    let mut seen = 0;
    pt.walk(&mem, |_, t| {
        assert!(!(t.writable() && t.executable()), "W^X violated: {t:?}");
        seen += 1;
    });
    assert_eq!(seen, 8);
}

#[test]
fn executable_decoding_catches_rwx() {
    // A writable and executable descriptor (never written by the manager) must show.
    let rw = PageTable::page_descriptor(0x1000, Attributes::DATA);
    let rwx = rw & !(1 << 53);
    let t = Translation::from_leaf(rwx, 3, 0);
    assert!(t.writable() && t.executable());
    assert_eq!(t.attributes.permission, Permission::ReadWrite);
    // EL0-writable memory is never executable at EL1.
    let el0_rw = rwx | (1 << 6);
    assert!(!Translation::from_leaf(el0_rw, 3, 0).executable());
}

#[test]
fn refuses_overlaps_and_changes_nothing() {
    let (mut mem, tlb, mut pt) = setup();
    pt.map(
        &mut mem,
        &tlb,
        KVA + 4 * PAGE,
        0x8000_0000,
        2 * PAGE,
        RO,
        false,
    )
    .unwrap();
    let before = mappings(&pt, &mem);
    let allocs = mem.allocs;
    // Overlaps the end of the new range: the first pages must not have been mapped.
    let err = pt.map(&mut mem, &tlb, KVA, 0x9000_0000, 6 * PAGE, RO, false);
    assert_eq!(err, Err(MapError::AlreadyMapped { va: KVA + 4 * PAGE }));
    assert_eq!(mappings(&pt, &mem), before);
    assert_eq!(mem.allocs, allocs);

    // Overlap with a block, from a range that would need new tables.
    pt.map(
        &mut mem,
        &tlb,
        KVA + GIB,
        0x4000_0000,
        GIB,
        Attributes::DATA,
        true,
    )
    .unwrap();
    let before = mappings(&pt, &mem);
    let (allocs, frees) = (mem.allocs, mem.frees);
    let err = pt.map(
        &mut mem,
        &tlb,
        KVA + GIB - PAGE,
        0x9000_0000,
        2 * PAGE,
        RO,
        false,
    );
    assert_eq!(err, Err(MapError::AlreadyMapped { va: KVA + GIB }));
    assert_eq!(mappings(&pt, &mem), before);
    assert_eq!((mem.allocs, mem.frees), (allocs, frees));
}

#[test]
fn rejects_bad_arguments() {
    let (mut mem, tlb, mut pt) = setup();
    let data = Attributes::DATA;
    let unaligned = |what, value| Err(MapError::Unaligned { what, value });
    assert_eq!(
        pt.map(&mut mem, &tlb, KVA + 1, 0, PAGE, data, false),
        unaligned("va", KVA + 1)
    );
    assert_eq!(
        pt.map(&mut mem, &tlb, KVA, 0x10, PAGE, data, false),
        unaligned("pa", 0x10)
    );
    assert_eq!(
        pt.map(&mut mem, &tlb, KVA, 0, 100, data, false),
        unaligned("size", 100)
    );
    assert_eq!(
        pt.unmap(&mut mem, &tlb, KVA, 1, Reclaim::KeepTables, |_, _| {}),
        unaligned("size", 1)
    );
    // Lower-half address in a TTBR1 table, a range running past the top, a PA past 48
    // bits.
    let low = 0x4000_0000;
    assert_eq!(
        pt.map(&mut mem, &tlb, low, 0, PAGE, data, false),
        Err(MapError::OutOfRange {
            va: low,
            size: PAGE
        })
    );
    let top = u64::MAX - PAGE + 1;
    assert_eq!(
        pt.map(&mut mem, &tlb, top, 0, 2 * PAGE, data, false),
        Err(MapError::OutOfRange {
            va: top,
            size: 2 * PAGE
        })
    );
    let pa = PA_LIMIT - PAGE;
    assert_eq!(
        pt.map(&mut mem, &tlb, KVA, pa, 2 * PAGE, data, false),
        Err(MapError::PhysOutOfRange { pa, size: 2 * PAGE })
    );
    assert_eq!(pt.query(&mem, low), None);
    assert_eq!(pt.leaf_slot(&mem, low), None);
    // Nothing was created by any of that; an empty range is a no-op.
    assert_eq!(mem.allocs, 1);
    assert_eq!(pt.map(&mut mem, &tlb, KVA, 0, 0, data, false), Ok(()));
    assert_eq!(mem.allocs, 1);
    // Every error has a message.
    let text = alloc::format!("{}", MapError::AlreadyMapped { va: KVA });
    assert_eq!(text, "0xffff800000000000 is already mapped");
}

#[test]
fn the_topmost_page_maps() {
    let (mut mem, tlb, mut pt) = setup();
    let top = u64::MAX - PAGE + 1;
    pt.map(&mut mem, &tlb, top, 0x5000, PAGE, RO, false)
        .unwrap();
    assert_eq!(pt.query(&mem, u64::MAX).unwrap().pa, 0x5fff);
    assert_eq!(mappings(&pt, &mem), vec![(top, 0x5000, 3)]);
}
