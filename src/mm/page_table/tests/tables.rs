//! Tables: reuse, preparation for the growth path, leaf slots, out of memory, the upper
//! half, adoption and walks.
use super::*;

#[test]
fn mapping_next_to_a_mapping_reuses_its_tables() {
    let (mut mem, tlb, mut pt) = setup();
    pt.map(
        &mut mem,
        &tlb,
        KVA,
        0x8000_0000,
        PAGE,
        Attributes::DATA,
        false,
    )
    .unwrap();
    let allocs = mem.allocs;
    pt.map(
        &mut mem,
        &tlb,
        KVA + PAGE,
        0x8000_5000,
        PAGE,
        Attributes::DATA,
        false,
    )
    .unwrap();
    pt.map(&mut mem, &tlb, KVA + MIB, 0x8000_6000, 4 * PAGE, RO, false)
        .unwrap();
    assert_eq!(mem.allocs, allocs);
    // The next 2 MiB needs one more L3 table, nothing else.
    pt.map(&mut mem, &tlb, KVA + 2 * MIB, 0x8000_0000, PAGE, RO, false)
        .unwrap();
    assert_eq!(mem.allocs, allocs + 1);
}

#[test]
fn prepared_tables_make_later_maps_allocation_free() {
    let (mut mem, tlb, mut pt) = setup();
    let arena = KVA + 8 * GIB;
    let size = 6 * MIB;
    // Root exists: L1, L2 and three L3 tables.
    assert_eq!(pt.prepare_tables(&mut mem, &tlb, arena, size), Ok(5));
    assert_eq!(tlb.take().last(), Some(&Event::AfterMap));
    assert!(mappings(&pt, &mem).is_empty());
    assert_eq!(pt.prepare_tables(&mut mem, &tlb, arena, size), Ok(0));
    let allocs = mem.allocs;
    pt.map(
        &mut mem,
        &tlb,
        arena + size - 3 * PAGE,
        0x8000_0000,
        3 * PAGE,
        Attributes::DATA,
        true,
    )
    .unwrap();
    // Blocks are not put where a table already is.
    pt.map(
        &mut mem,
        &tlb,
        arena,
        0x8000_0000,
        2 * MIB,
        Attributes::DATA,
        true,
    )
    .unwrap();
    assert_eq!(pt.query(&mem, arena).unwrap().level, 3);
    assert_eq!(mem.allocs, allocs);
    for offset in (0..size).step_by(PAGE_SIZE) {
        assert!(pt.leaf_slot(&mem, arena + offset).is_some());
    }
    // A block in the way.
    pt.map(
        &mut mem,
        &tlb,
        KVA,
        0x8000_0000,
        2 * MIB,
        Attributes::DATA,
        true,
    )
    .unwrap();
    assert_eq!(
        pt.prepare_tables(&mut mem, &tlb, KVA + 2 * MIB - PAGE, 2 * PAGE),
        Err(MapError::MappedByBlock {
            va: KVA + 2 * MIB - PAGE
        })
    );
}

#[test]
fn leaf_slot_store_equals_map() {
    let (mut mem, tlb, mut pt) = setup();
    let (mut other_mem, mut other) = {
        let mut m = FakeMemory::new();
        let t = PageTable::new(&mut m, Half::Upper).unwrap();
        (m, t)
    };
    let va = KVA + 3 * GIB + 7 * PAGE;
    pt.prepare_tables(&mut mem, &tlb, va, PAGE).unwrap();
    let slot = pt.leaf_slot(&mem, va).unwrap();
    let desc = PageTable::page_descriptor(0x8765_4000, Attributes::DATA);
    // SAFETY: the slot is the L3 entry of a live fake table.
    unsafe { core::ptr::write_volatile(slot, desc) };
    other
        .map(
            &mut other_mem,
            &tlb,
            va,
            0x8765_4000,
            PAGE,
            Attributes::DATA,
            false,
        )
        .unwrap();
    assert_eq!(pt.query(&mem, va), other.query(&other_mem, va));
    let other_slot = other.leaf_slot(&other_mem, va).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { core::ptr::read_volatile(other_slot) }, desc);
    // A block has no slot.
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
    assert_eq!(pt.leaf_slot(&mem, KVA + PAGE), None);
}

#[test]
fn out_of_memory_leaves_no_trace() {
    let (mut mem, tlb, mut pt) = setup();
    pt.map(
        &mut mem,
        &tlb,
        KVA,
        0x8000_0000,
        PAGE,
        Attributes::DATA,
        false,
    )
    .unwrap();
    let before = mappings(&pt, &mem);
    let live = mem.live();
    // 6 MiB of pages from KVA + 2 MiB - 4 KiB needs three more L3 tables: allow two.
    mem.limit = live + 2;
    let err = pt.map(
        &mut mem,
        &tlb,
        KVA + 2 * MIB - PAGE,
        0x9000_0000,
        6 * MIB,
        Attributes::DATA,
        false,
    );
    assert_eq!(err, Err(MapError::OutOfMemory));
    assert_eq!(mappings(&pt, &mem), before);
    assert_eq!(mem.live(), live);
    assert_eq!(mem.allocs - mem.frees, live);
    mem.limit = live + 3;
    pt.map(
        &mut mem,
        &tlb,
        KVA + 2 * MIB - PAGE,
        0x9000_0000,
        6 * MIB,
        Attributes::DATA,
        false,
    )
    .unwrap();

    // prepare_tables and a splitting unmap fail whole too.
    let live = mem.live();
    mem.limit = live;
    assert_eq!(
        pt.prepare_tables(&mut mem, &tlb, KVA + 4 * GIB, PAGE),
        Err(MapError::OutOfMemory)
    );
    pt.map(
        &mut mem,
        &tlb,
        KVA + GIB,
        0x4000_0000,
        GIB,
        Attributes::DATA,
        true,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let before = mappings(&pt, &mem);
    let mut reported = 0;
    let err = pt.unmap(
        &mut mem,
        &tlb,
        KVA + GIB,
        PAGE,
        Reclaim::KeepTables,
        |_, _| reported += 1,
    );
    assert_eq!(err, Err(MapError::OutOfMemory));
    assert_eq!(reported, 0);
    assert_eq!(mappings(&pt, &mem), before);
    assert_eq!(mem.live(), live);
}

#[test]
fn upper_half_addresses_index_from_bit_47_down() {
    let (mut mem, tlb, mut pt) = setup();
    pt.map(&mut mem, &tlb, KVA, 0x8000_0000, PAGE, RO, false)
        .unwrap();
    let root = pt.root_pa();
    let entry = |mem: &FakeMemory, table, i| read_entry(mem, table, i);
    let used: Vec<usize> = (0..ENTRIES)
        .filter(|&i| entry(&mem, root, i) != 0)
        .collect();
    assert_eq!(used, vec![256]);
    let top = u64::MAX - PAGE + 1;
    pt.map(&mut mem, &tlb, top, 0x8000_1000, PAGE, RO, false)
        .unwrap();
    let mut table = root;
    for level in 0..3 {
        match decode(entry(&mem, table, 511), level) {
            Entry::Table(next) => table = next,
            other => panic!("level {level}: {other:?}"),
        }
    }
    assert_ne!(entry(&mem, table, 511), 0);
    // The kernel's boot layout: L0[511] -> L1[510] -> L2[0].
    let kernel = 0xFFFF_FFFF_8000_0000;
    pt.map(&mut mem, &tlb, kernel, 0x4008_0000, PAGE, RX, false)
        .unwrap();
    let l1 = match decode(entry(&mem, root, 511), 0) {
        Entry::Table(l1) => l1,
        other => panic!("{other:?}"),
    };
    assert!(matches!(decode(entry(&mem, l1, 510), 1), Entry::Table(_)));

    // A lower-half table indexes the same offsets from address 0.
    let mut low = PageTable::new(&mut mem, Half::Lower).unwrap();
    low.map(&mut mem, &tlb, 0x4000_0000, 0x4000_0000, PAGE, RO, false)
        .unwrap();
    assert_eq!(low.query(&mem, 0x4000_0000).unwrap().pa, 0x4000_0000);
    assert_eq!(low.query(&mem, KVA), None);
    assert_eq!(mappings(&low, &mem), vec![(0x4000_0000, 0x4000_0000, 3)]);
}

#[test]
fn adopted_tables_work_like_their_creator() {
    let (mut mem, tlb, mut pt) = setup();
    pt.map(&mut mem, &tlb, KVA, 0x8000_0000, 2 * PAGE, RO, false)
        .unwrap();
    // SAFETY: the root belongs to `pt`, which is not used again.
    let mut adopted = unsafe { PageTable::from_root(pt.root_pa(), Half::Upper) };
    assert_eq!(adopted.root_pa(), pt.root_pa());
    assert_eq!(adopted.half(), Half::Upper);
    assert_eq!(adopted.query(&mem, KVA + PAGE).unwrap().pa, 0x8000_1000);
    let allocs = mem.allocs;
    adopted
        .map(&mut mem, &tlb, KVA + 2 * PAGE, 0x8000_2000, PAGE, RO, false)
        .unwrap();
    assert_eq!(mem.allocs, allocs);
}

#[test]
fn walk_visits_exactly_the_mappings() {
    let (mut mem, tlb, mut pt) = setup();
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
    pt.map(&mut mem, &tlb, KVA + 2 * MIB, 0x20_0000, 2 * MIB, RX, true)
        .unwrap();
    pt.map(
        &mut mem,
        &tlb,
        KVA + 5 * PAGE,
        0x9000_0000,
        2 * PAGE,
        RO,
        true,
    )
    .unwrap();
    pt.prepare_tables(&mut mem, &tlb, KVA + 10 * GIB, 4 * MIB)
        .unwrap();
    assert_eq!(
        mappings(&pt, &mem),
        vec![
            (KVA + 5 * PAGE, 0x9000_0000, 3),
            (KVA + 6 * PAGE, 0x9000_1000, 3),
            (KVA + 2 * MIB, 0x20_0000, 2),
            (KVA + GIB, 0x4000_0000, 1),
        ]
    );
}
