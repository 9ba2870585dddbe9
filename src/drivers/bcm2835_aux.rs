//! The BCM2835 auxiliary "mini UART" (`brcm,bcm2835-aux-uart`; UART1 on the Raspberry Pi).
//!
//! Owns the mini UART's registers in the auxiliary peripheral block and nothing else: it is
//! handed an already-mapped virtual address, does not map memory, does not know the board,
//! and takes no lock of its own. It calls only `tock-registers` for MMIO.
//!
//! Layout from the BCM2835 ARM Peripherals datasheet, section 2 (with its errata): offsets
//! are from the auxiliary block (0x7e21_5000 on the bus; 0x3f21_5000 on the Pi 3, 0xfe21_5000
//! on the Pi 4). A device tree's mini UART node has `reg` starting at `AUX_MU_IO` (0x40), so
//! the block starts [`IO_OFFSET`] bytes before it. `AUX_ENABLES` is shared with the two SPI
//! masters of the block; only its mini UART bit is touched.
//!
//! The baud rate is `core clock / (8 × (AUX_MU_BAUD + 1))`: the driver keeps the divisor the
//! firmware set (`enable_uart=1` sets it for 115200 at the core clock it fixes), because it
//! does not know the core clock.

use tock_registers::{
    interfaces::{ReadWriteable, Readable, Writeable},
    register_bitfields, register_structs,
    registers::{ReadOnly, ReadWrite},
};

/// Where `AUX_MU_IO`, the first register a device tree's `reg` names, is in the block.
pub const IO_OFFSET: u64 = 0x40;

/// How many bytes of the block, from its start, the driver uses.
pub const BLOCK_SIZE: u64 = 0x80;

register_bitfields! {u32,
    /// `AUX_ENABLES`: which of the block's three peripherals are on.
    ENABLES [
        MINI_UART OFFSET(0) NUMBITS(1) [],
        SPI1 OFFSET(1) NUMBITS(1) [],
        SPI2 OFFSET(2) NUMBITS(1) []
    ],

    /// `AUX_MU_IO`: the data register (with DLAB clear).
    IO [
        DATA OFFSET(0) NUMBITS(8) []
    ],

    /// `AUX_MU_IER`: interrupt enables. The datasheet swaps the two; its errata and every
    /// working driver have receive at bit 0. Bits 2 and 3 must be set on real hardware for
    /// the interrupt line to assert (errata).
    IER [
        RX OFFSET(0) NUMBITS(1) [],
        TX OFFSET(1) NUMBITS(1) [],
        LINE OFFSET(2) NUMBITS(2) []
    ],

    /// `AUX_MU_IIR`: interrupt status on read; FIFO clears on write.
    IIR [
        PENDING_N OFFSET(0) NUMBITS(1) [],
        CLEAR_RX OFFSET(1) NUMBITS(1) [],
        CLEAR_TX OFFSET(2) NUMBITS(1) []
    ],

    /// `AUX_MU_LCR`: line control.
    LCR [
        /// 0b11 is 8-bit mode (the datasheet documents bit 0 only; both are needed).
        DATA_SIZE OFFSET(0) NUMBITS(2) [
            SevenBit = 0b00,
            EightBit = 0b11
        ],
        BREAK OFFSET(6) NUMBITS(1) [],
        DLAB OFFSET(7) NUMBITS(1) []
    ],

    /// `AUX_MU_MCR`: modem control.
    MCR [
        RTS OFFSET(1) NUMBITS(1) []
    ],

    /// `AUX_MU_LSR`: line status.
    LSR [
        DATA_READY OFFSET(0) NUMBITS(1) [],
        RX_OVERRUN OFFSET(1) NUMBITS(1) [],
        TX_EMPTY OFFSET(5) NUMBITS(1) [],
        TX_IDLE OFFSET(6) NUMBITS(1) []
    ],

    /// `AUX_MU_CNTL`: extra control (enables and flow control).
    CNTL [
        RX_ENABLE OFFSET(0) NUMBITS(1) [],
        TX_ENABLE OFFSET(1) NUMBITS(1) [],
        RTS_FLOW OFFSET(2) NUMBITS(1) [],
        CTS_FLOW OFFSET(3) NUMBITS(1) []
    ],

    /// `AUX_MU_BAUD`: the 16-bit baud divisor.
    BAUD [
        DIVISOR OFFSET(0) NUMBITS(16) []
    ]
}

register_structs! {
    RegisterBlock {
        (0x00 => _aux_irq),
        (0x04 => enables: ReadWrite<u32, ENABLES::Register>),
        (0x08 => _reserved0),
        (0x40 => io: ReadWrite<u32, IO::Register>),
        (0x44 => ier: ReadWrite<u32, IER::Register>),
        (0x48 => iir: ReadWrite<u32, IIR::Register>),
        (0x4c => lcr: ReadWrite<u32, LCR::Register>),
        (0x50 => mcr: ReadWrite<u32, MCR::Register>),
        (0x54 => lsr: ReadOnly<u32, LSR::Register>),
        (0x58 => _msr_scratch),
        (0x60 => cntl: ReadWrite<u32, CNTL::Register>),
        (0x64 => _stat),
        (0x68 => baud: ReadWrite<u32, BAUD::Register>),
        (0x6c => @END),
    }
}

/// How many times the transmitter is polled before a flush gives up (a UART whose clock is
/// stopped never drains).
const SPIN_LIMIT: u32 = 1_000_000;

/// The mini UART of an auxiliary block at a mapped virtual address.
///
/// The struct holds only the address, so it is `Send + Sync`; concurrent use from several
/// CPUs needs the caller's lock.
pub struct MiniUart {
    base: usize,
}

impl MiniUart {
    /// Creates a driver for the mini UART of the auxiliary block mapped at `base` (the
    /// block's start, [`IO_OFFSET`] bytes before a device tree's `reg`).
    ///
    /// # Safety
    ///
    /// `base` must be the virtual address of a BCM2835 auxiliary block (at least
    /// [`BLOCK_SIZE`] bytes) mapped as Device memory for as long as the returned value is
    /// used, and no other code may program the mini UART behind the driver's back.
    pub const unsafe fn new(base: usize) -> Self {
        Self { base }
    }

    fn regs(&self) -> &RegisterBlock {
        // SAFETY: `new`'s contract guarantees `base` points to a mapped auxiliary block for
        // the driver's lifetime; all accesses go through volatile MMIO cells.
        unsafe { &*(self.base as *const RegisterBlock) }
    }

    /// Enables the mini UART and brings it up in 8-bit mode with no flow control, the
    /// transmit FIFO cleared, transmitter and receiver on and interrupts off. The baud
    /// divisor is kept as the firmware set it (QEMU ignores it).
    ///
    /// The receive FIFO is not cleared: that would drop input typed or piped before boot got
    /// here, as the PL011 driver avoids doing too.
    pub fn init(&self) {
        let regs = self.regs();
        regs.enables.modify(ENABLES::MINI_UART::SET);
        self.flush();
        regs.cntl.set(0);
        regs.ier.set(0);
        // DLAB clear, or IO and IER would address the divisor.
        regs.lcr.write(LCR::DATA_SIZE::EightBit);
        regs.mcr.set(0);
        regs.iir.write(IIR::CLEAR_TX::SET);
        regs.cntl.write(CNTL::RX_ENABLE::SET + CNTL::TX_ENABLE::SET);
    }

    /// The baud divisor register as the firmware left it.
    pub fn baud_divisor(&self) -> u32 {
        self.regs().baud.read(BAUD::DIVISOR)
    }

    /// Sends one byte, waiting while the transmit FIFO is full.
    ///
    /// Raw: no newline translation.
    pub fn write_byte(&self, b: u8) {
        let regs = self.regs();
        while !regs.lsr.is_set(LSR::TX_EMPTY) {
            core::hint::spin_loop();
        }
        regs.io.write(IO::DATA.val(u32::from(b)));
    }

    /// Waits until everything written has left the transmitter (or the wait bound runs out).
    pub fn flush(&self) {
        let regs = self.regs();
        if !regs.enables.is_set(ENABLES::MINI_UART) {
            return;
        }
        for _ in 0..SPIN_LIMIT {
            if regs.lsr.is_set(LSR::TX_IDLE) {
                return;
            }
            core::hint::spin_loop();
        }
    }

    /// Returns the next received byte, or `None` when the receive FIFO is empty.
    pub fn try_read_byte(&self) -> Option<u8> {
        let regs = self.regs();
        if regs.lsr.is_set(LSR::DATA_READY) {
            Some(regs.io.read(IO::DATA) as u8)
        } else {
            None
        }
    }

    /// Raises the auxiliary interrupt while the receive FIFO holds data (reading the FIFO
    /// empty is what clears it).
    pub fn enable_rx_interrupt(&self) {
        self.regs().ier.modify(IER::RX::SET + IER::LINE.val(0b11));
    }

    /// Stops receive interrupts.
    pub fn disable_rx_interrupt(&self) {
        self.regs().ier.modify(IER::RX::CLEAR);
    }

    /// Whether the mini UART has an interrupt pending.
    pub fn interrupt_pending(&self) -> bool {
        !self.regs().iir.is_set(IIR::PENDING_N)
    }
}

#[cfg(test)]
mod tests;
