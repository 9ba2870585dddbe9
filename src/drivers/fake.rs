//! Fake register blocks for the drivers' host tests, as Google's `arm-gic` crate tests its
//! drivers: plain memory where the device's registers would be. The driver reads and writes
//! it through the same volatile accesses it uses on the machine; a test sets what the device
//! would report (status bits, received data) and checks what the driver wrote.
use core::cell::UnsafeCell;

/// `WORDS` 32-bit registers, zeroed, page-aligned like a real block.
#[repr(C, align(4096))]
pub struct FakeRegs<const WORDS: usize>(UnsafeCell<[u32; WORDS]>);

impl<const WORDS: usize> FakeRegs<WORDS> {
    /// A block with every register zero, on the heap so its address is stable.
    pub fn new() -> alloc::boxed::Box<Self> {
        alloc::boxed::Box::new(Self(UnsafeCell::new([0; WORDS])))
    }

    /// The address to hand the driver as its register block.
    pub fn base(&self) -> usize {
        self.0.get() as usize
    }

    fn word(&self, offset: usize) -> *mut u32 {
        assert!(
            offset.is_multiple_of(4) && offset / 4 < WORDS,
            "offset {offset:#x}"
        );
        // In bounds (checked above) of the array the cell owns.
        self.0.get().cast::<u32>().wrapping_add(offset / 4)
    }

    /// The register at byte `offset`, as the driver last left it.
    pub fn get(&self, offset: usize) -> u32 {
        // SAFETY: an aligned word inside the block (`word` checks); the driver accesses it
        // only through volatile reads and writes too, and never concurrently with the test.
        unsafe { self.word(offset).read_volatile() }
    }

    /// Sets the register at byte `offset`, as the device would.
    pub fn set(&self, offset: usize, value: u32) {
        // SAFETY: as in `get`.
        unsafe { self.word(offset).write_volatile(value) }
    }
}

impl<const WORDS: usize> FakeRegs<WORDS> {
    /// The byte register at `offset` (GIC priority and target bytes).
    pub fn get_u8(&self, offset: usize) -> u8 {
        (self.get(offset & !3) >> (8 * (offset % 4))) as u8
    }

    /// Sets the byte register at `offset`.
    pub fn set_u8(&self, offset: usize, value: u8) {
        let shift = 8 * (offset % 4);
        let word = self.get(offset & !3) & !(0xff << shift);
        self.set(offset & !3, word | (u32::from(value) << shift));
    }
}
