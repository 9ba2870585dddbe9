use super::*;
use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::{RefCell, UnsafeCell};

const FAKE_BASE: u64 = 0x4000_0000;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
/// A TTBR1 address in the middle of the upper half.
const KVA: u64 = 0xFFFF_8000_0000_0000;

/// Fake physical memory: frames at FAKE_BASE + 4 KiB * i, counted.
struct FakeMemory {
    frames: Vec<Option<Box<UnsafeCell<[u64; ENTRIES]>>>>,
    limit: usize,
    allocs: usize,
    frees: usize,
}

impl FakeMemory {
    fn new() -> Self {
        Self::with_limit(usize::MAX)
    }

    fn with_limit(limit: usize) -> Self {
        FakeMemory {
            frames: Vec::new(),
            limit,
            allocs: 0,
            frees: 0,
        }
    }

    fn live(&self) -> usize {
        self.frames.iter().filter(|f| f.is_some()).count()
    }

    fn index(pa: u64) -> usize {
        assert_eq!(pa % PAGE, 0, "table address {pa:#x} not aligned");
        ((pa - FAKE_BASE) / PAGE) as usize
    }
}

// SAFETY: every frame is a boxed, zeroed 512-entry array that lives until freed, and
// table_ptr hands out a pointer from the UnsafeCell around it.
unsafe impl TableMemory for FakeMemory {
    fn alloc_table(&mut self) -> Option<u64> {
        if self.live() >= self.limit {
            return None;
        }
        self.allocs += 1;
        let frame = Some(Box::new(UnsafeCell::new([0u64; ENTRIES])));
        let slot = match self.frames.iter().position(|f| f.is_none()) {
            Some(i) => {
                self.frames[i] = frame;
                i
            }
            None => {
                self.frames.push(frame);
                self.frames.len() - 1
            }
        };
        Some(FAKE_BASE + slot as u64 * PAGE)
    }

    fn free_table(&mut self, pa: u64) {
        let i = Self::index(pa);
        assert!(self.frames[i].is_some(), "double free of {pa:#x}");
        self.frames[i] = None;
        self.frees += 1;
    }

    fn table_ptr(&self, pa: u64) -> *mut u64 {
        let frame = self.frames[Self::index(pa)]
            .as_ref()
            .unwrap_or_else(|| panic!("{pa:#x} is not a live table"));
        frame.get().cast()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    AfterMap,
    Invalidate(u64),
    Sync,
    Unmapped(u64, u64),
}

#[derive(Default)]
struct RecordingTlb {
    events: RefCell<Vec<Event>>,
}

impl RecordingTlb {
    fn take(&self) -> Vec<Event> {
        core::mem::take(&mut *self.events.borrow_mut())
    }

    fn push(&self, event: Event) {
        self.events.borrow_mut().push(event);
    }
}

impl TlbOps for RecordingTlb {
    fn after_map(&self) {
        self.push(Event::AfterMap);
    }
    fn invalidate_page(&self, va: u64) {
        self.push(Event::Invalidate(va));
    }
    fn sync(&self) {
        self.push(Event::Sync);
    }
}

fn setup() -> (FakeMemory, RecordingTlb, PageTable) {
    let mut mem = FakeMemory::new();
    let pt = PageTable::new(&mut mem, Half::Upper).unwrap();
    (mem, RecordingTlb::default(), pt)
}

fn mappings(pt: &PageTable, mem: &FakeMemory) -> Vec<(u64, u64, u8)> {
    let mut all = Vec::new();
    pt.walk(mem, |va, t| all.push((va, t.pa, t.level)));
    all
}

const RO: Attributes = Attributes::new(MemoryType::Normal, Permission::ReadOnly);
const RX: Attributes = Attributes::new(MemoryType::Normal, Permission::ReadExecute);

mod map;
mod regime;
mod tables;
mod unmap;
