//! Host tests of the heap logic on fake frames.
use super::fake::FakeFrames;
use super::*;
use alloc::vec::Vec;

const BOOT: usize = 64 * 1024;

/// A heap with a 64 KiB boot region (leaked: it must outlive the heap) that may grow.
fn heap(frames: FakeFrames) -> Box<ChunkHeap<FakeFrames>> {
    let mut h = Box::new(ChunkHeap::new(frames));
    let region = Box::leak(vec![0u8; BOOT + PAGE].into_boxed_slice());
    let start = (region.as_mut_ptr() as usize).next_multiple_of(PAGE);
    // SAFETY: leaked, so valid and ours for ever.
    unsafe { h.init_boot(start, BOOT) };
    h.enable_growth();
    h
}

fn fill(h: &mut ChunkHeap<FakeFrames>, size: usize, n: usize) -> Vec<NonNull<u8>> {
    let layout = Layout::from_size_align(size, 8).unwrap();
    (0..n)
        .map(|i| {
            let p = h.alloc(layout).expect("allocation");
            // SAFETY: `size` bytes of our own block.
            unsafe { core::ptr::write_bytes(p.as_ptr(), i as u8, size) };
            p
        })
        .collect()
}

fn free_all(h: &mut ChunkHeap<FakeFrames>, size: usize, v: Vec<NonNull<u8>>) {
    let layout = Layout::from_size_align(size, 8).unwrap();
    for p in v {
        // SAFETY: from this heap with this layout, freed once.
        unsafe { h.dealloc(p, layout) };
    }
}

#[test]
fn chunks_go_back_when_empty_every_time() {
    let mut h = heap(FakeFrames::new(1 << 20, 1 << 20));
    for round in 0..3 {
        let v = fill(&mut h, 512, 20_000);
        assert!(h.stats().chunks >= 4, "round {round}: {:?}", h.stats());
        free_all(&mut h, 512, v);
        assert_eq!(h.stats().grown_bytes, 0, "round {round}: {:?}", h.stats());
        assert_eq!(h.pages().pages_out(), 0);
        assert_eq!(h.stats().chunks, 0);
    }
}

#[test]
fn fragmented_memory_still_grows_by_what_is_needed() {
    // No run longer than one page: 2 MiB chunks are impossible, one-page chunks are not.
    let mut h = heap(FakeFrames::new(1, 1000));
    let v = fill(&mut h, 288, 2000);
    let s = h.stats();
    assert!(s.chunks > 100, "{s:?}");
    assert_eq!(s.grown_bytes, s.chunks * PAGE as u64);
    free_all(&mut h, 288, v);
    assert_eq!(h.pages().pages_out(), 0);
}

#[test]
fn low_memory_takes_only_what_is_needed() {
    let mut frames = FakeFrames::new(1 << 20, 1 << 20);
    frames.plenty = false;
    let mut h = heap(frames);
    let v = fill(&mut h, 64, BOOT / 64 + 1);
    assert_eq!(h.stats().grown_bytes, PAGE as u64, "{:?}", h.stats());
    free_all(&mut h, 64, v);
}

#[test]
fn large_blocks_get_their_own_frames_and_give_them_back() {
    let mut h = heap(FakeFrames::new(1 << 20, 1 << 20));
    let layout = Layout::from_size_align(393_216, 8).unwrap();
    let p = h.alloc(layout).unwrap();
    assert_eq!(h.stats().large_bytes, 512 * 1024);
    assert_eq!(h.stats().chunks, 0);
    // SAFETY: from this heap with this layout.
    unsafe { h.dealloc(p, layout) };
    assert_eq!(h.stats().grown_bytes, 0);
    assert_eq!(h.pages().pages_out(), 0);
}

#[test]
fn exhaustion_is_none_not_a_panic_and_recovers() {
    let mut h = heap(FakeFrames::new(1 << 20, 64));
    let layout = Layout::from_size_align(1024, 8).unwrap();
    let mut v = Vec::new();
    while let Some(p) = h.alloc(layout) {
        v.push(p);
    }
    assert!(v.len() >= (BOOT + 64 * PAGE) / 1024 * 3 / 4, "{}", v.len());
    assert!(h
        .alloc(Layout::from_size_align(1 << 20, 8).unwrap())
        .is_none());
    free_all(&mut h, 1024, v);
    assert_eq!(h.pages().pages_out(), 0);
    assert!(h.alloc(layout).is_some());
}

#[test]
fn random_mix_returns_to_baseline() {
    let mut rng = crate::rng::XorShift::new(7);
    let mut h = heap(FakeFrames::new(1 << 20, 1 << 20));
    let mut live: Vec<(NonNull<u8>, Layout)> = Vec::new();
    for _ in 0..30_000 {
        if live.is_empty() || rng.below(5) < 3 {
            let size = match rng.below(10) {
                0 => 64 * 1024 + rng.below(200_000),
                1..=3 => 1 + rng.below(4096),
                _ => 8 + rng.below(600),
            };
            let align = 1 << rng.below(7);
            let layout = Layout::from_size_align(size, align).unwrap();
            let p = h.alloc(layout).unwrap();
            assert_eq!(p.as_ptr() as usize % align, 0);
            live.push((p, layout));
        } else {
            let (p, layout) = live.swap_remove(rng.below(live.len()));
            // SAFETY: from this heap with this layout, freed once.
            unsafe { h.dealloc(p, layout) };
        }
    }
    for (p, layout) in live.drain(..) {
        // SAFETY: as above.
        unsafe { h.dealloc(p, layout) };
    }
    assert_eq!(h.stats().grown_bytes, 0, "{:?}", h.stats());
    assert_eq!(h.stats().allocated_bytes, 0);
    assert_eq!(h.pages().pages_out(), 0);
}
