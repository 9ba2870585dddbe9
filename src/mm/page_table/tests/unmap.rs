//! Unmapping and protecting: invalidation order, batching, block splits, table reclaim.
use super::*;

#[test]
fn unmap_invalidates_every_page_then_reports_it() {
    let (mut mem, tlb, mut pt) = setup();
    pt.map(
        &mut mem,
        &tlb,
        KVA,
        0x8000_0000,
        4 * PAGE,
        Attributes::DATA,
        false,
    )
    .unwrap();
    tlb.take();
    pt.unmap(
        &mut mem,
        &tlb,
        KVA + PAGE,
        3 * PAGE,
        Reclaim::KeepTables,
        |va, pa| tlb.push(Event::Unmapped(va, pa)),
    )
    .unwrap();
    let mut expected: Vec<Event> = (1..4).map(|i| Event::Invalidate(KVA + i * PAGE)).collect();
    expected.push(Event::Sync);
    expected.extend((1..4).map(|i| Event::Unmapped(KVA + i * PAGE, 0x8000_0000 + i * PAGE)));
    assert_eq!(tlb.take(), expected);
    assert!(pt.query(&mem, KVA).is_some());
    for i in 1..4 {
        assert_eq!(pt.query(&mem, KVA + i * PAGE), None);
    }
    // Tables kept: the slot is still there for the growth path.
    assert!(pt.leaf_slot(&mem, KVA + PAGE).is_some());
    assert_eq!(mem.frees, 0);
}

#[test]
fn unmap_of_many_pages_batches_syncs_before_reporting() {
    let (mut mem, tlb, mut pt) = setup();
    let pages = 40;
    pt.map(
        &mut mem,
        &tlb,
        KVA,
        0x8000_0000,
        pages * PAGE,
        Attributes::DATA,
        false,
    )
    .unwrap();
    tlb.take();
    pt.unmap(
        &mut mem,
        &tlb,
        KVA,
        pages * PAGE,
        Reclaim::KeepTables,
        |va, pa| tlb.push(Event::Unmapped(va, pa)),
    )
    .unwrap();
    let events = tlb.take();
    let mut invalidated = Vec::new();
    let mut synced = 0;
    let mut reported = Vec::new();
    for event in events {
        match event {
            Event::Invalidate(va) => invalidated.push(va),
            Event::Sync => synced = invalidated.len(),
            Event::Unmapped(va, pa) => {
                assert!(
                    invalidated[..synced].contains(&va),
                    "{va:#x} reported before its sync"
                );
                assert_eq!(pa - 0x8000_0000, va - KVA);
                reported.push(va);
            }
            Event::AfterMap => panic!("unmap made something valid"),
        }
    }
    let all: Vec<u64> = (0..pages).map(|i| KVA + i * PAGE).collect();
    assert_eq!(invalidated, all);
    assert_eq!(reported, all);
}

#[test]
fn unmap_of_a_hole_changes_nothing() {
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
    pt.map(
        &mut mem,
        &tlb,
        KVA + 2 * PAGE,
        0x8000_2000,
        PAGE,
        Attributes::DATA,
        false,
    )
    .unwrap();
    tlb.take();
    let mut reported = 0;
    let err = pt.unmap(
        &mut mem,
        &tlb,
        KVA,
        3 * PAGE,
        Reclaim::FreeEmptyTables,
        |_, _| reported += 1,
    );
    assert_eq!(err, Err(MapError::NotMapped { va: KVA + PAGE }));
    assert_eq!(reported, 0);
    assert!(tlb.take().is_empty());
    assert_eq!(mappings(&pt, &mem).len(), 2);
    let err = pt.protect(&mut mem, &tlb, KVA, 3 * PAGE, RO);
    assert_eq!(err, Err(MapError::NotMapped { va: KVA + PAGE }));
    assert_eq!(pt.query(&mem, KVA).unwrap().attributes, Attributes::DATA);
}

#[test]
fn partial_unmap_splits_a_block_and_keeps_the_rest() {
    let (mut mem, tlb, mut pt) = setup();
    let block_va = KVA + 2 * MIB;
    let block_pa = 0x8020_0000;
    pt.map(&mut mem, &tlb, block_va, block_pa, 2 * MIB, RX, true)
        .unwrap();
    assert_eq!(pt.query(&mem, block_va).unwrap().level, 2);
    tlb.take();
    let allocs = mem.allocs;
    let hole = block_va + 5 * PAGE;
    let mut reported = Vec::new();
    pt.unmap(&mut mem, &tlb, hole, PAGE, Reclaim::KeepTables, |va, pa| {
        reported.push((va, pa))
    })
    .unwrap();
    assert_eq!(reported, vec![(hole, block_pa + 5 * PAGE)]);
    assert_eq!(mem.allocs, allocs + 1);
    // Break (invalidate the block, wait), make (publish the table), then the page.
    assert_eq!(
        tlb.take(),
        vec![
            Event::Invalidate(block_va),
            Event::Sync,
            Event::AfterMap,
            Event::Invalidate(hole),
            Event::Sync,
        ]
    );
    assert_eq!(pt.query(&mem, hole), None);
    let all = mappings(&pt, &mem);
    assert_eq!(all.len(), 511);
    for (va, pa, level) in all {
        assert_eq!(level, 3);
        assert_eq!(pa - block_pa, va - block_va);
        assert_eq!(pt.query(&mem, va).unwrap().attributes, RX);
    }
}

#[test]
fn partial_unmap_of_a_gigabyte_block_splits_level_by_level() {
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
    let allocs = mem.allocs;
    let mut count = 0;
    // A 2 MiB-aligned 2 MiB piece: the 1 GiB block becomes 2 MiB blocks, one goes.
    pt.unmap(
        &mut mem,
        &tlb,
        KVA + 4 * MIB,
        2 * MIB,
        Reclaim::KeepTables,
        |_, _| count += 1,
    )
    .unwrap();
    assert_eq!(count, 512);
    assert_eq!(mem.allocs, allocs + 1);
    let all = mappings(&pt, &mem);
    assert_eq!(all.len(), 511);
    assert!(all.iter().all(|&(_, _, level)| level == 2));
    // One page out of another 2 MiB block: that block becomes pages.
    pt.unmap(
        &mut mem,
        &tlb,
        KVA + 10 * MIB + PAGE,
        PAGE,
        Reclaim::KeepTables,
        |_, pa| assert_eq!(pa, 0x4000_0000 + 10 * MIB + PAGE),
    )
    .unwrap();
    assert_eq!(mem.allocs, allocs + 2);
    assert_eq!(mappings(&pt, &mem).len(), 510 + 511);
    let t = pt.query(&mem, KVA + 10 * MIB).unwrap();
    assert_eq!((t.level, t.pa), (3, 0x4000_0000 + 10 * MIB));
    assert_eq!(pt.query(&mem, KVA + 12 * MIB).unwrap().level, 2);
}

#[test]
fn unmap_of_a_whole_block_reports_every_page() {
    let (mut mem, tlb, mut pt) = setup();
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
    tlb.take();
    let mut pages = Vec::new();
    pt.unmap(
        &mut mem,
        &tlb,
        KVA,
        2 * MIB,
        Reclaim::KeepTables,
        |va, pa| pages.push((va, pa)),
    )
    .unwrap();
    assert_eq!(pages.len(), 512);
    assert_eq!(
        pages[511],
        (KVA + 2 * MIB - PAGE, 0x8000_0000 + 2 * MIB - PAGE)
    );
    assert_eq!(tlb.take(), vec![Event::Invalidate(KVA), Event::Sync]);
}

#[test]
fn reclaim_frees_emptied_tables_after_invalidating_them() {
    let (mut mem, tlb, mut pt) = setup();
    pt.map(
        &mut mem,
        &tlb,
        KVA,
        0x8000_0000,
        2 * PAGE,
        Attributes::DATA,
        false,
    )
    .unwrap();
    assert_eq!(mem.live(), 4);
    pt.unmap(
        &mut mem,
        &tlb,
        KVA,
        PAGE,
        Reclaim::FreeEmptyTables,
        |_, _| {},
    )
    .unwrap();
    // Not empty yet.
    assert_eq!(mem.live(), 4);
    tlb.take();
    pt.unmap(
        &mut mem,
        &tlb,
        KVA + PAGE,
        PAGE,
        Reclaim::FreeEmptyTables,
        |_, _| {},
    )
    .unwrap();
    assert_eq!(mem.live(), 1);
    assert_eq!(mem.frees, 3);
    // The page and each unlinked table are invalidated before one sync.
    let events = tlb.take();
    assert_eq!(events.last(), Some(&Event::Sync));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Invalidate(_)))
            .count(),
        4
    );
    assert!(mappings(&pt, &mem).is_empty());
    assert_eq!(pt.leaf_slot(&mem, KVA), None);
    // And the tree is usable again.
    pt.map(&mut mem, &tlb, KVA, 0x8000_0000, PAGE, RO, false)
        .unwrap();
    assert_eq!(pt.query(&mem, KVA).unwrap().pa, 0x8000_0000);
}

#[test]
fn protect_changes_attributes_with_break_before_make() {
    let (mut mem, tlb, mut pt) = setup();
    pt.map(
        &mut mem,
        &tlb,
        KVA,
        0x8000_0000,
        2 * PAGE,
        Attributes::DATA,
        false,
    )
    .unwrap();
    tlb.take();
    pt.protect(&mut mem, &tlb, KVA, 2 * PAGE, RO).unwrap();
    assert_eq!(
        tlb.take(),
        vec![
            Event::Invalidate(KVA),
            Event::Sync,
            Event::Invalidate(KVA + PAGE),
            Event::Sync,
            Event::AfterMap,
        ]
    );
    for i in 0..2 {
        let t = pt.query(&mem, KVA + i * PAGE).unwrap();
        assert_eq!((t.pa, t.attributes), (0x8000_0000 + i * PAGE, RO));
    }
    assert_eq!(
        pt.protect(
            &mut mem,
            &tlb,
            KVA,
            PAGE,
            Attributes::new(MemoryType::Device, Permission::ReadExecute)
        ),
        Err(MapError::ExecutableDevice)
    );
}

#[test]
fn protect_of_part_of_a_block_splits_it() {
    let (mut mem, tlb, mut pt) = setup();
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
    pt.protect(&mut mem, &tlb, KVA, PAGE, RX).unwrap();
    let first = pt.query(&mem, KVA).unwrap();
    assert_eq!(
        (first.level, first.attributes, first.pa),
        (3, RX, 0x8000_0000)
    );
    let second = pt.query(&mem, KVA + PAGE).unwrap();
    assert_eq!((second.level, second.attributes), (3, Attributes::DATA));
    // A whole block keeps being a block.
    pt.map(
        &mut mem,
        &tlb,
        KVA + 2 * MIB,
        0x8020_0000,
        2 * MIB,
        Attributes::DATA,
        true,
    )
    .unwrap();
    pt.protect(&mut mem, &tlb, KVA + 2 * MIB, 2 * MIB, RO)
        .unwrap();
    let t = pt.query(&mem, KVA + 3 * MIB).unwrap();
    assert_eq!((t.level, t.attributes, t.pa), (2, RO, 0x8030_0000));
}
