//! The Arm PrimeCell PL011 UART (QEMU `virt`'s console, the Raspberry Pi's UART0).
//!
//! Owns the UART's register block and nothing else: it is handed an already-mapped virtual
//! address, does not map memory, does not know the board, and takes no lock of its own
//! (callers that share it wrap it in one). It calls only `tock-registers` for MMIO.
//!
//! Register layout and programming sequence follow the PL011 Technical Reference Manual
//! (Arm DDI 0183): the UART is disabled while the line is reprogrammed, and a write to
//! `UARTLCR_H` is what latches the baud divisors, so the divisor the firmware left behind is
//! kept simply by not writing `UARTIBRD`/`UARTFBRD`.

use core::fmt;

use tock_registers::{
    interfaces::{ReadWriteable, Readable, Writeable},
    register_bitfields, register_structs,
    registers::{ReadOnly, ReadWrite, WriteOnly},
};

register_bitfields! {u32,
    /// Data register: the received byte and the errors it arrived with.
    DR [
        DATA OFFSET(0) NUMBITS(8) [],
        FE OFFSET(8) NUMBITS(1) [],
        PE OFFSET(9) NUMBITS(1) [],
        BE OFFSET(10) NUMBITS(1) [],
        OE OFFSET(11) NUMBITS(1) []
    ],

    /// Flag register.
    FR [
        BUSY OFFSET(3) NUMBITS(1) [],
        RXFE OFFSET(4) NUMBITS(1) [],
        TXFF OFFSET(5) NUMBITS(1) [],
        RXFF OFFSET(6) NUMBITS(1) [],
        TXFE OFFSET(7) NUMBITS(1) []
    ],

    /// Integer baud rate divisor.
    IBRD [
        BAUD_DIVINT OFFSET(0) NUMBITS(16) []
    ],

    /// Fractional baud rate divisor.
    FBRD [
        BAUD_DIVFRAC OFFSET(0) NUMBITS(6) []
    ],

    /// Line control register.
    LCR_H [
        BRK OFFSET(0) NUMBITS(1) [],
        PEN OFFSET(1) NUMBITS(1) [],
        EPS OFFSET(2) NUMBITS(1) [],
        STP2 OFFSET(3) NUMBITS(1) [],
        FEN OFFSET(4) NUMBITS(1) [
            FifosDisabled = 0,
            FifosEnabled = 1
        ],
        WLEN OFFSET(5) NUMBITS(2) [
            FiveBit = 0b00,
            SixBit = 0b01,
            SevenBit = 0b10,
            EightBit = 0b11
        ],
        SPS OFFSET(7) NUMBITS(1) []
    ],

    /// Control register.
    CR [
        UARTEN OFFSET(0) NUMBITS(1) [],
        LBE OFFSET(7) NUMBITS(1) [],
        TXE OFFSET(8) NUMBITS(1) [],
        RXE OFFSET(9) NUMBITS(1) []
    ],

    /// Interrupt FIFO level select.
    IFLS [
        TXIFLSEL OFFSET(0) NUMBITS(3) [
            OneEighth = 0b000,
            OneQuarter = 0b001,
            OneHalf = 0b010
        ],
        RXIFLSEL OFFSET(3) NUMBITS(3) [
            OneEighth = 0b000,
            OneQuarter = 0b001,
            OneHalf = 0b010
        ]
    ],

    /// Interrupt bits, shared by IMSC, RIS, MIS and ICR.
    INT [
        RIM OFFSET(0) NUMBITS(1) [],
        CTSM OFFSET(1) NUMBITS(1) [],
        DCDM OFFSET(2) NUMBITS(1) [],
        DSRM OFFSET(3) NUMBITS(1) [],
        RX OFFSET(4) NUMBITS(1) [],
        TX OFFSET(5) NUMBITS(1) [],
        RT OFFSET(6) NUMBITS(1) [],
        FE OFFSET(7) NUMBITS(1) [],
        PE OFFSET(8) NUMBITS(1) [],
        BE OFFSET(9) NUMBITS(1) [],
        OE OFFSET(10) NUMBITS(1) [],
        ALL OFFSET(0) NUMBITS(11) []
    ]
}

register_structs! {
    RegisterBlock {
        (0x000 => dr: ReadWrite<u32, DR::Register>),
        (0x004 => rsr_ecr: ReadWrite<u32>),
        (0x008 => _reserved0),
        (0x018 => fr: ReadOnly<u32, FR::Register>),
        (0x01c => _reserved1),
        (0x024 => ibrd: ReadWrite<u32, IBRD::Register>),
        (0x028 => fbrd: ReadWrite<u32, FBRD::Register>),
        (0x02c => lcr_h: ReadWrite<u32, LCR_H::Register>),
        (0x030 => cr: ReadWrite<u32, CR::Register>),
        (0x034 => ifls: ReadWrite<u32, IFLS::Register>),
        (0x038 => imsc: ReadWrite<u32, INT::Register>),
        (0x03c => ris: ReadOnly<u32, INT::Register>),
        (0x040 => mis: ReadOnly<u32, INT::Register>),
        (0x044 => icr: WriteOnly<u32, INT::Register>),
        (0x048 => @END),
    }
}

/// How many times a status bit is polled before the driver gives up waiting.
///
/// A bounded wait keeps a UART that never drains (disabled by firmware with bytes in its
/// FIFO, or a dead clock) from hanging the kernel; at 115200 baud a full 32-byte FIFO
/// drains in about 3 ms, far inside this bound.
const SPIN_LIMIT: u32 = 1_000_000;

/// A baud rate that cannot be produced from the given UART reference clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaudRateError;

impl fmt::Display for BaudRateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("baud rate out of range for the UART clock")
    }
}

/// A PL011 UART at a mapped virtual address.
///
/// The struct holds only the address, so it is `Send + Sync`; concurrent use from several
/// CPUs needs the caller's lock, because a transmitted line must not interleave with another.
pub struct Pl011 {
    base: usize,
}

impl Pl011 {
    /// Creates a driver for the UART whose registers are mapped at `base`.
    ///
    /// # Safety
    ///
    /// `base` must be the virtual address of a PL011 register block (at least 4 KiB) mapped
    /// as Device memory for as long as the returned value is used, and no other code may
    /// program this UART behind the driver's back.
    pub const unsafe fn new(base: usize) -> Self {
        Self { base }
    }

    fn regs(&self) -> &RegisterBlock {
        // SAFETY: `new`'s contract guarantees `base` points to a mapped PL011 register
        // block for the driver's lifetime; all accesses go through volatile MMIO cells.
        unsafe { &*(self.base as *const RegisterBlock) }
    }

    /// Brings the UART up as 8N1 with FIFOs on, transmitter and receiver enabled, and every
    /// interrupt masked and cleared.
    ///
    /// The baud divisor is left as the firmware set it (QEMU ignores it); use
    /// [`Pl011::set_baud_rate`] where nothing set one.
    pub fn init(&self) {
        let regs = self.regs();

        // The TRM forbids reprogramming the line while a character is going out.
        self.quiesce();

        // 8N1. FEN is left as the firmware (or reset) set it: changing it flushes the FIFOs,
        // losing input typed or piped before boot got here, and QEMU then stops delivering
        // the rest. Without FIFOs the receive interrupt fires per byte, which suits a
        // console. Each LCR_H write also latches whatever divisor IBRD/FBRD hold, i.e. the
        // firmware's.
        let fen = regs.lcr_h.read(LCR_H::FEN);
        regs.lcr_h
            .write(LCR_H::WLEN::EightBit + LCR_H::FEN.val(fen));

        // Receive interrupts fire at 1/8 full so bursts are picked up early; single
        // keystrokes are caught by the receive-timeout interrupt enabled alongside.
        regs.ifls
            .write(IFLS::RXIFLSEL::OneEighth + IFLS::TXIFLSEL::OneHalf);

        regs.imsc.set(0);
        regs.rsr_ecr.set(0);
        regs.icr.write(INT::ALL::SET);

        regs.cr.write(CR::UARTEN::SET + CR::TXE::SET + CR::RXE::SET);
    }

    /// Programs the baud rate divisor for a UART reference clock of `uart_clock_hz`.
    ///
    /// For boards whose firmware leaves no divisor behind (the Pi 4's UART0 runs from a
    /// 48 MHz clock). The UART is briefly disabled and re-enabled as it was.
    pub fn set_baud_rate(&self, uart_clock_hz: u32, baud: u32) -> Result<(), BaudRateError> {
        if baud == 0 {
            return Err(BaudRateError);
        }
        // Divisor in 1/64ths: clock / (16 × baud) × 64, rounded to nearest.
        let div64 = (u64::from(uart_clock_hz) * 4 + u64::from(baud) / 2) / u64::from(baud);
        let integer = div64 >> 6;
        let fraction = div64 & 0x3f;
        if integer == 0 || integer > 0xffff {
            return Err(BaudRateError);
        }

        let regs = self.regs();
        let saved_cr = regs.cr.get();
        self.quiesce();
        regs.ibrd.write(IBRD::BAUD_DIVINT.val(integer as u32));
        regs.fbrd.write(FBRD::BAUD_DIVFRAC.val(fraction as u32));
        // The new divisor only takes effect on the next LCR_H write.
        regs.lcr_h.set(regs.lcr_h.get());
        regs.cr.set(saved_cr);
        Ok(())
    }

    /// Sends one byte, waiting while the transmit FIFO is full.
    ///
    /// Raw: no newline translation (the `fmt::Write` impl does that).
    pub fn write_byte(&self, b: u8) {
        let regs = self.regs();
        while regs.fr.is_set(FR::TXFF) {
            core::hint::spin_loop();
        }
        regs.dr.set(u32::from(b));
    }

    /// Sends every byte of `bytes` in order, without newline translation.
    pub fn write_bytes(&self, bytes: &[u8]) {
        for &b in bytes {
            self.write_byte(b);
        }
    }

    /// Waits until everything written so far has left the UART (or the wait bound runs out),
    /// so output survives a following power-off or reset.
    pub fn flush(&self) {
        let regs = self.regs();
        if !regs.cr.is_set(CR::UARTEN) {
            return;
        }
        for _ in 0..SPIN_LIMIT {
            if !regs.fr.is_set(FR::BUSY) {
                return;
            }
            core::hint::spin_loop();
        }
    }

    /// Returns the next received byte, or `None` when the receive FIFO is empty.
    ///
    /// Bytes that arrived with a framing, parity or break error are garbage and are skipped;
    /// an overrun only means earlier bytes were lost, so the byte that carries it is kept.
    pub fn try_read_byte(&self) -> Option<u8> {
        let regs = self.regs();
        while !regs.fr.is_set(FR::RXFE) {
            let data = regs.dr.extract();
            if data.is_set(DR::FE) || data.is_set(DR::PE) || data.is_set(DR::BE) {
                regs.rsr_ecr.set(0);
                continue;
            }
            if data.is_set(DR::OE) {
                regs.rsr_ecr.set(0);
            }
            return Some(data.read(DR::DATA) as u8);
        }
        None
    }

    /// Unmasks the receive and receive-timeout interrupts.
    ///
    /// Both are needed: with FIFOs on, the receive interrupt alone fires only at the FIFO
    /// threshold, and a single keystroke would sit unseen until the timeout raises it.
    pub fn enable_rx_interrupt(&self) {
        self.regs().imsc.modify(INT::RX::SET + INT::RT::SET);
    }

    /// Masks the receive and receive-timeout interrupts.
    pub fn disable_rx_interrupt(&self) {
        self.regs().imsc.modify(INT::RX::CLEAR + INT::RT::CLEAR);
    }

    /// Clears every latched interrupt.
    ///
    /// Receive interrupts re-assert while the FIFO is above its threshold, so a handler
    /// drains with [`Pl011::try_read_byte`] before calling this.
    pub fn clear_interrupts(&self) {
        self.regs().icr.write(INT::ALL::SET);
    }

    /// Reports whether a receive or receive-timeout interrupt is asserted after masking.
    pub fn rx_interrupt_pending(&self) -> bool {
        let mis = self.regs().mis.extract();
        mis.is_set(INT::RX) || mis.is_set(INT::RT)
    }

    /// Reports the raw (unmasked) interrupt status bits, for diagnostics.
    pub fn raw_interrupt_status(&self) -> u32 {
        self.regs().ris.get()
    }

    /// Lets a transmission in progress finish, then disables the UART.
    fn quiesce(&self) {
        let regs = self.regs();
        if regs.cr.is_set(CR::UARTEN) {
            // BUSY stays set forever if the UART is disabled with bytes queued, so only a
            // running UART is waited for, and never without bound.
            for _ in 0..SPIN_LIMIT {
                if !regs.fr.is_set(FR::BUSY) {
                    break;
                }
                core::hint::spin_loop();
            }
        }
        regs.cr.set(0);
    }
}

/// Formatted output for a terminal: `\n` is sent as `\r\n`.
impl fmt::Write for Pl011 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
