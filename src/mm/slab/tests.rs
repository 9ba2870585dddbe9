//! Host tests of the slab logic on fake pages.
use super::*;
use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use alloc::vec::Vec;
use std::collections::HashSet;

/// Pages from the host heap, page-aligned, counted; `limit` caps the pages live at once.
struct FakePages {
    live: HashSet<usize>,
    limit: usize,
    allocs: usize,
    frees: usize,
}

impl FakePages {
    fn new(limit: usize) -> Self {
        Self {
            live: HashSet::new(),
            limit,
            allocs: 0,
            frees: 0,
        }
    }
}

fn page_layout() -> Layout {
    Layout::from_size_align(SLAB_BYTES, SLAB_BYTES).unwrap()
}

// SAFETY: pages come from the host allocator with the slab size and alignment, and are
// owned by the slab until freed.
unsafe impl SlabPages for FakePages {
    fn alloc_page(&mut self) -> Option<NonNull<u8>> {
        if self.live.len() >= self.limit {
            return None;
        }
        // SAFETY: non-zero size.
        let p = NonNull::new(unsafe { alloc_zeroed(page_layout()) })?;
        self.live.insert(p.as_ptr() as usize);
        self.allocs += 1;
        Some(p)
    }

    fn free_page(&mut self, page: NonNull<u8>) {
        assert!(
            self.live.remove(&(page.as_ptr() as usize)),
            "page freed twice"
        );
        self.frees += 1;
        // SAFETY: allocated above with this layout.
        unsafe { dealloc(page.as_ptr(), page_layout()) };
    }
}

fn cache(size: usize, align: usize, limit: usize) -> Slab<FakePages> {
    Slab::new(size, align, FakePages::new(limit)).unwrap()
}

#[test]
fn bad_layouts_are_refused() {
    assert_eq!(
        Slab::new(0, 8, FakePages::new(1)).err(),
        Some(SlabError::BadLayout)
    );
    assert_eq!(
        Slab::new(8, 3, FakePages::new(1)).err(),
        Some(SlabError::BadLayout)
    );
    assert_eq!(
        Slab::new(MAX_OBJECT + 1, 8, FakePages::new(1)).err(),
        Some(SlabError::BadLayout)
    );
    assert!(Slab::new(MAX_OBJECT, 8, FakePages::new(1)).is_ok());
}

#[test]
fn objects_are_aligned_disjoint_and_inside_their_slab() {
    for (size, align) in [(16, 8), (24, 8), (100, 16), (416, 16), (700, 64), (2000, 8)] {
        let mut c = cache(size, align, 64);
        let n = c.stats().per_slab * 3 + 1;
        let mut seen: Vec<usize> = Vec::new();
        for i in 0..n {
            let p = c.alloc().unwrap().as_ptr() as usize;
            assert_eq!(p % align, 0, "size {size} align {align}");
            let page = p & !(SLAB_BYTES - 1);
            assert!(p - page >= HEADER_BYTES && p - page + size <= SLAB_BYTES);
            // SAFETY: the object is ours and `size` bytes long.
            unsafe { core::ptr::write_bytes(p as *mut u8, i as u8, size) };
            seen.push(p);
        }
        seen.sort();
        for w in seen.windows(2) {
            assert!(w[1] - w[0] >= size, "overlap at size {size}");
        }
        assert_eq!(c.stats().objects, n as u64);
        assert_eq!(c.stats().slabs, 4);
        for p in seen {
            // SAFETY: each pointer came from this cache once.
            unsafe { c.free(NonNull::new(p as *mut u8).unwrap()) };
        }
    }
}

#[test]
fn stats_count_objects_slabs_and_bytes() {
    let mut c = cache(400, 16, 100);
    let per = c.stats().per_slab;
    assert!(per >= 9, "a 400-byte object fits {per} times in a page");
    let v: Vec<_> = (0..per + 1).map(|_| c.alloc().unwrap()).collect();
    let s = c.stats();
    assert_eq!(
        (s.objects, s.slabs, s.bytes),
        ((per + 1) as u64, 2, 2 * 4096)
    );
    assert_eq!(s.object_size, 400);
    for p in v {
        // SAFETY: from this cache, freed once.
        unsafe { c.free(p) };
    }
    assert_eq!(c.stats().objects, 0);
}

#[test]
fn empty_slabs_go_back_but_one_spare() {
    let mut c = cache(64, 8, 1000);
    let per = c.stats().per_slab;
    let v: Vec<_> = (0..per * 10).map(|_| c.alloc().unwrap()).collect();
    assert_eq!(c.pages().live.len(), 10);
    for p in v {
        // SAFETY: from this cache, freed once.
        unsafe { c.free(p) };
    }
    assert_eq!(c.stats().slabs, 1, "only the spare stays");
    assert_eq!(c.pages().live.len(), 1);
    assert_eq!(c.shrink(), 1);
    assert_eq!(c.pages().live.len(), 0);
    assert_eq!(
        c.stats(),
        SlabStats {
            object_size: 64,
            per_slab: per,
            ..Default::default()
        }
    );
}

#[test]
fn freed_objects_are_reused_before_new_pages() {
    let mut c = cache(128, 8, 1000);
    let per = c.stats().per_slab;
    let v: Vec<_> = (0..per * 4).map(|_| c.alloc().unwrap()).collect();
    // Free every other object: no slab empties, so no page goes back.
    for p in v.iter().step_by(2) {
        // SAFETY: from this cache, freed once.
        unsafe { c.free(*p) };
    }
    assert_eq!(c.pages().live.len(), 4);
    let allocs = c.pages().allocs;
    let again: Vec<_> = (0..per * 2).map(|_| c.alloc().unwrap()).collect();
    assert_eq!(c.pages().allocs, allocs, "the holes are filled first");
    for p in v.iter().skip(1).step_by(2).chain(again.iter()) {
        // SAFETY: each live object freed once.
        unsafe { c.free(*p) };
    }
    assert_eq!(c.stats().objects, 0);
}

#[test]
fn out_of_pages_is_none_and_recovers() {
    let mut c = cache(1000, 8, 2);
    let per = c.stats().per_slab;
    let v: Vec<_> = (0..per * 2).map(|_| c.alloc().unwrap()).collect();
    assert!(c.alloc().is_none());
    assert_eq!(c.stats().objects, (per * 2) as u64);
    // SAFETY: from this cache, freed once.
    unsafe { c.free(v[0]) };
    assert!(c.alloc().is_some());
}

#[test]
fn random_alloc_free_keeps_counts_and_returns_every_page() {
    let mut rng = crate::rng::XorShift::new(11);
    let mut c = cache(48, 16, 10_000);
    let mut live: Vec<NonNull<u8>> = Vec::new();
    for _ in 0..50_000 {
        if live.is_empty() || rng.below(3) != 0 {
            let p = c.alloc().unwrap();
            // SAFETY: 48 bytes of our own object.
            unsafe { core::ptr::write_bytes(p.as_ptr(), 0xa5, 48) };
            live.push(p);
        } else {
            let i = rng.below(live.len());
            // SAFETY: from this cache, removed from `live`, freed once.
            unsafe { c.free(live.swap_remove(i)) };
        }
        assert_eq!(c.stats().objects, live.len() as u64);
    }
    let per = c.stats().per_slab as u64;
    assert!(c.stats().slabs >= (live.len() as u64).div_ceil(per));
    for p in live.drain(..) {
        // SAFETY: as above.
        unsafe { c.free(p) };
    }
    c.shrink();
    assert_eq!(c.pages().live.len(), 0);
    assert_eq!(c.pages().allocs, c.pages().frees);
}

#[test]
#[should_panic(expected = "double free")]
fn double_free_is_caught() {
    let mut c = cache(32, 8, 10);
    let p = c.alloc().unwrap();
    let _keep = c.alloc().unwrap();
    // SAFETY: deliberately wrong: the second free must panic.
    unsafe {
        c.free(p);
        c.free(p);
    }
}

#[test]
#[should_panic(expected = "did not hand out")]
fn misaligned_free_is_caught() {
    let mut c = cache(32, 8, 10);
    let p = c.alloc().unwrap();
    let _keep = c.alloc().unwrap();
    // SAFETY: deliberately wrong: a pointer into the middle of an object.
    unsafe { c.free(NonNull::new(p.as_ptr().add(8)).unwrap()) };
}
