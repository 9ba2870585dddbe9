//! Host tests of the thread heap on fake frames.
use super::*;
use crate::mm::heap::fake::FakeFrames;
use alloc::vec::Vec;

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// Allocates `n` blocks of `size`, each filled with its own byte; stops at the first `None`.
fn fill(h: &mut ThreadHeap, f: &mut FakeFrames, size: usize, n: usize) -> Vec<NonNull<u8>> {
    let mut v = Vec::new();
    for i in 0..n {
        let Some(p) = h.alloc(f, layout(size)) else {
            break;
        };
        // SAFETY: `size` bytes of our own block.
        unsafe { core::ptr::write_bytes(p.as_ptr(), i as u8, size) };
        v.push(p);
    }
    v
}

fn check(v: &[NonNull<u8>], size: usize) {
    for (i, p) in v.iter().enumerate() {
        // SAFETY: live blocks of `size` bytes.
        let s = unsafe { core::slice::from_raw_parts(p.as_ptr(), size) };
        assert!(s.iter().all(|&b| b == i as u8), "block {i} was overwritten");
    }
}

#[test]
fn first_chunk_holds_what_was_asked_and_the_descriptor() {
    let mut f = FakeFrames::new(1 << 20, 1 << 20);
    let mut h = ThreadHeap::create(&mut f, 24 * 1024).unwrap();
    // SAFETY: just created; used by this test only.
    let heap = unsafe { h.as_mut() };
    assert_eq!(f.pages_out(), 8, "24 KiB round to 8 pages");
    assert!(
        heap.owns(h.as_ptr() as usize),
        "the descriptor is in the first chunk"
    );
    let v = fill(heap, &mut f, 1024, 16);
    assert_eq!(v.len(), 16);
    assert_eq!(heap.pages(), 8, "16 KiB fit without a second chunk");
    assert!(v.iter().all(|p| heap.owns(p.as_ptr() as usize)));
    check(&v, 1024);
    assert_eq!(heap.allocated(), 16 * 1024);
    // SAFETY: nothing of it is used any more.
    unsafe { ThreadHeap::release(h, &mut f) };
    assert_eq!(f.pages_out(), 0);
}

#[test]
fn grows_by_doubling_and_release_gives_every_chunk_back() {
    let mut f = FakeFrames::new(1 << 20, 1 << 20);
    let mut h = ThreadHeap::create(&mut f, 4096).unwrap();
    // SAFETY: just created; used by this test only.
    let heap = unsafe { h.as_mut() };
    let v = fill(heap, &mut f, 512, 400);
    assert_eq!(v.len(), 400);
    check(&v, 512);
    let held = heap.pages();
    assert!(
        held.is_power_of_two(),
        "{held} pages: chunks double the heap"
    );
    assert!(
        held * PAGE >= 400 * 512 && held * PAGE <= 4 * 400 * 512,
        "{held}"
    );
    assert_eq!(f.pages_out(), held);
    // Released with every block still allocated: the chunks go back all the same.
    // SAFETY: the blocks are not used any more.
    unsafe { ThreadHeap::release(h, &mut f) };
    assert_eq!(f.pages_out(), 0);
}

#[test]
fn blocks_given_back_are_reused_and_peak_is_kept() {
    let mut f = FakeFrames::new(1 << 20, 1 << 20);
    let mut h = ThreadHeap::create(&mut f, 8192).unwrap();
    // SAFETY: just created; used by this test only.
    let heap = unsafe { h.as_mut() };
    for round in 0..5 {
        let v = fill(heap, &mut f, 256, 24);
        assert_eq!(v.len(), 24);
        for p in v {
            // SAFETY: from this heap with this layout, given back once.
            unsafe { heap.dealloc(p, layout(256)) };
        }
        assert_eq!(heap.allocated(), 0, "round {round}");
        assert_eq!(heap.pages(), 2, "round {round}: nothing grew");
    }
    assert_eq!(heap.peak(), 24 * 256);
    // SAFETY: nothing of it is used any more.
    unsafe { ThreadHeap::release(h, &mut f) };
    assert_eq!(f.pages_out(), 0);
}

#[test]
fn out_of_pages_is_none_and_the_heap_stays_usable() {
    let mut f = FakeFrames::new(1 << 20, 12);
    let mut h = ThreadHeap::create(&mut f, 4096).unwrap();
    // SAFETY: just created; used by this test only.
    let heap = unsafe { h.as_mut() };
    let v = fill(heap, &mut f, 1024, 1000);
    assert!(
        v.len() >= 30 && v.len() < 48,
        "{} blocks in 12 pages",
        v.len()
    );
    assert!(f.pages_out() <= 12);
    check(&v, 1024);
    assert!(heap.alloc(&mut f, layout(1 << 20)).is_none());
    // A smaller block still fits where a larger one did not.
    let last = v[v.len() - 1];
    // SAFETY: from this heap with this layout, given back once.
    unsafe { heap.dealloc(last, layout(1024)) };
    assert!(heap.alloc(&mut f, layout(512)).is_some());
    // SAFETY: nothing of it is used any more.
    unsafe { ThreadHeap::release(h, &mut f) };
    assert_eq!(f.pages_out(), 0);
}

#[test]
fn fragmented_source_still_grows_by_what_is_needed() {
    // No run longer than two pages: doubling is impossible, two-page chunks are not.
    let mut f = FakeFrames::new(2, 1000);
    let mut h = ThreadHeap::create(&mut f, 4096).unwrap();
    // SAFETY: just created; used by this test only.
    let heap = unsafe { h.as_mut() };
    let v = fill(heap, &mut f, 2048, 8);
    assert_eq!(v.len(), 8, "8 blocks of 2 KiB in chunks of at most 2 pages");
    assert!(heap.pages() <= 2 * MAX_CHUNKS);
    check(&v, 2048);
    // SAFETY: nothing of it is used any more.
    unsafe { ThreadHeap::release(h, &mut f) };
    assert_eq!(f.pages_out(), 0);
}

#[test]
fn chunk_table_full_is_none() {
    let mut f = FakeFrames::new(1, 1 << 20);
    let mut h = ThreadHeap::create(&mut f, 1024).unwrap();
    // SAFETY: just created; used by this test only.
    let heap = unsafe { h.as_mut() };
    let v = fill(heap, &mut f, 4096, 100);
    assert_eq!(heap.pages(), MAX_CHUNKS, "one page per chunk");
    assert_eq!(
        v.len(),
        MAX_CHUNKS - 1,
        "the first page holds the descriptor"
    );
    // SAFETY: nothing of it is used any more.
    unsafe { ThreadHeap::release(h, &mut f) };
    assert_eq!(f.pages_out(), 0);
}

#[test]
fn owns_only_its_chunks() {
    let mut f = FakeFrames::new(1 << 20, 1 << 20);
    let mut h = ThreadHeap::create(&mut f, 4096).unwrap();
    // SAFETY: just created; used by this test only.
    let heap = unsafe { h.as_mut() };
    let outside = alloc::boxed::Box::new([0u8; 64]);
    assert!(!heap.owns(outside.as_ptr() as usize));
    let start = h.as_ptr() as usize;
    assert!(heap.owns(start + heap.pages() * PAGE - 1));
    assert!(!heap.owns(start + heap.pages() * PAGE));
    assert!(!heap.owns(start - 1));
    // SAFETY: nothing of it is used any more.
    unsafe { ThreadHeap::release(h, &mut f) };
}

#[test]
fn create_fails_cleanly_without_pages() {
    let mut f = FakeFrames::new(1 << 20, 0);
    assert!(ThreadHeap::create(&mut f, 8192).is_none());
    assert_eq!(f.pages_out(), 0);
}

#[test]
fn create_on_a_fragmented_source_takes_less_and_grows() {
    // Runs of two pages at most: a 64 KiB first chunk is impossible, a smaller one is not.
    let mut f = FakeFrames::new(2, 1000);
    let mut h = ThreadHeap::create(&mut f, 64 * 1024).unwrap();
    // SAFETY: just created; used by this test only.
    let heap = unsafe { h.as_mut() };
    assert_eq!(heap.pages(), 2);
    let v = fill(heap, &mut f, 1024, 12);
    assert_eq!(v.len(), 12);
    check(&v, 1024);
    // SAFETY: nothing of it is used any more.
    unsafe { ThreadHeap::release(h, &mut f) };
    assert_eq!(f.pages_out(), 0);
}
