//! Host tests of the frame buddy allocator on a host buffer used as "physical" memory.
use super::*;
use alloc::vec::Vec;
use std::collections::HashSet;

/// Physical address = host address: the links live in the frame itself.
struct Identity;

// SAFETY: tests only hand the allocator frames of a live, leaked host buffer.
unsafe impl FrameAccess for Identity {
    fn links(&self, pa: u64) -> NonNull<[u64; 2]> {
        NonNull::new(pa as *mut [u64; 2]).unwrap()
    }
}

/// `pages` frames of leaked host memory aligned to 4 MiB; its first address.
fn memory(pages: usize) -> u64 {
    let v = Box::leak(vec![0u8; pages * 4096 + (4 << 20)].into_boxed_slice());
    (v.as_ptr() as u64).next_multiple_of(4 << 20)
}

fn buddy(pages: usize) -> (Buddy<Identity>, u64) {
    let base = memory(pages);
    let meta = Box::leak(vec![0u8; pages].into_boxed_slice());
    (Buddy::new(Identity, base, meta), base)
}

#[test]
fn all_frames_come_back_merged() {
    let (mut b, base) = buddy(1024);
    b.add(base, base + 1024 * PAGE);
    assert_eq!(b.free_pages(), 1024);
    let mut got = Vec::new();
    while let Some(pa) = b.alloc(1) {
        assert!(pa >= base && pa < base + 1024 * PAGE && pa % PAGE == 0);
        got.push(pa);
    }
    assert_eq!(got.len(), 1024);
    let set: HashSet<_> = got.iter().collect();
    assert_eq!(set.len(), 1024, "a frame handed out twice");
    for pa in got {
        b.free(pa, 1);
    }
    assert_eq!(b.free_pages(), 1024);
    // Merged back: the whole range is one block again.
    assert_eq!(b.alloc(1024), Some(base));
}

#[test]
fn blocks_are_aligned_to_their_size() {
    let (mut b, base) = buddy(4096);
    b.add(base + 3 * PAGE, base + 4000 * PAGE);
    for count in [1, 2, 3, 8, 100, 512] {
        let pa = b.alloc(count).unwrap();
        let size = PAGE << order_for(count);
        assert_eq!(pa % size, 0, "count {count}");
        assert!(pa >= base + 3 * PAGE && pa + size <= base + 4000 * PAGE);
    }
}

#[test]
fn fragmented_memory_serves_single_pages_not_runs() {
    let (mut b, base) = buddy(256);
    b.add(base, base + 256 * PAGE);
    let all: Vec<u64> = (0..256).map(|_| b.alloc(1).unwrap()).collect();
    // Free every other page: 128 free, no two adjacent.
    for pa in all
        .iter()
        .filter(|&&pa| ((pa - base) / PAGE).is_multiple_of(2))
    {
        b.free(*pa, 1);
    }
    assert_eq!(b.free_pages(), 128);
    assert_eq!(b.alloc(2), None);
    assert!(b.alloc(1).is_some());
}

#[test]
fn random_alloc_free_conserves_frames() {
    let mut rng = crate::rng::XorShift::new(5);
    let (mut b, base) = buddy(8192);
    b.add(base + PAGE, base + 8000 * PAGE);
    let total = b.free_pages();
    let mut live: Vec<(u64, usize)> = Vec::new();
    for _ in 0..20_000 {
        if live.is_empty() || rng.below(3) != 0 {
            let count = 1 << rng.below(6);
            if let Some(pa) = b.alloc(count) {
                // Write over the whole block: the allocator must keep nothing in it.
                // SAFETY: the block is ours, inside the leaked buffer.
                unsafe { core::ptr::write_bytes(pa as *mut u8, 0x5a, count * PAGE as usize) };
                live.push((pa, count));
            }
        } else {
            let (pa, count) = live.swap_remove(rng.below(live.len()));
            b.free(pa, count);
        }
        let held: u64 = live.iter().map(|&(_, c)| c as u64).sum();
        assert_eq!(b.free_pages() + held, total);
    }
    for (pa, count) in live {
        b.free(pa, count);
    }
    assert_eq!(b.free_pages(), total);
}
