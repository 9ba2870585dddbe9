//! Runs of pages for host tests of the heaps (`heap`, `thread_heap`): real host memory,
//! with limits on the run length and on the pages handed out, to play a fragmented or
//! exhausted machine.
use super::{ChunkPages, PAGE};
use alloc::alloc::{alloc_zeroed, dealloc};
use core::alloc::Layout;
use std::collections::HashMap;

/// Runs of pages from the host allocator; `longest` caps the run length it can find (a
/// fragmented machine), `budget` the pages it can hand out in all.
pub(crate) struct FakeFrames {
    live: HashMap<usize, usize>,
    /// The longest run it can find.
    pub longest: usize,
    /// The pages it can hand out in all.
    pub budget: usize,
    /// What `plenty` says.
    pub plenty: bool,
}

impl FakeFrames {
    /// A source with these limits.
    pub fn new(longest: usize, budget: usize) -> Self {
        Self {
            live: HashMap::new(),
            longest,
            budget,
            plenty: true,
        }
    }

    /// Pages handed out and not given back.
    pub fn pages_out(&self) -> usize {
        self.live.values().sum()
    }
}

impl ChunkPages for FakeFrames {
    fn alloc(&mut self, pages: usize) -> Option<usize> {
        assert!(pages.is_power_of_two());
        if pages > self.longest || self.pages_out() + pages > self.budget {
            return None;
        }
        let layout = Layout::from_size_align(pages * PAGE, pages * PAGE).unwrap();
        // SAFETY: non-zero size.
        let p = unsafe { alloc_zeroed(layout) } as usize;
        assert_ne!(p, 0);
        self.live.insert(p, pages);
        Some(p)
    }

    fn free(&mut self, addr: usize, pages: usize) {
        assert_eq!(
            self.live.remove(&addr),
            Some(pages),
            "bad free of {addr:#x}"
        );
        let layout = Layout::from_size_align(pages * PAGE, pages * PAGE).unwrap();
        // SAFETY: allocated above with this layout.
        unsafe { dealloc(addr as *mut u8, layout) };
    }

    fn plenty(&self) -> bool {
        self.plenty
    }
}
