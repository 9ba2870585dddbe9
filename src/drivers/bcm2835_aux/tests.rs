//! The mini UART driver against a fake auxiliary block.
use super::*;
use crate::drivers::fake::FakeRegs;

const ENABLES: usize = 0x04;
const IO: usize = 0x40;
const IER: usize = 0x44;
const IIR: usize = 0x48;
const LCR: usize = 0x4c;
const MCR: usize = 0x50;
const LSR: usize = 0x54;
const CNTL: usize = 0x60;
const BAUD: usize = 0x68;

fn uart() -> (
    alloc::boxed::Box<FakeRegs<{ BLOCK_SIZE as usize / 4 }>>,
    MiniUart,
) {
    let regs = FakeRegs::new();
    // SAFETY: the fake block lives as long as the test uses the driver.
    let uart = unsafe { MiniUart::new(regs.base()) };
    (regs, uart)
}

#[test]
fn init_enables_the_mini_uart_in_8_bit_mode() {
    let (regs, uart) = uart();
    regs.set(ENABLES, 0b110); // the SPIs are on and stay on
    regs.set(LSR, 1 << 6); // transmitter idle: flush returns at once
    regs.set(IER, 0b1111);
    regs.set(MCR, 1 << 1);
    regs.set(BAUD, 270);
    uart.init();
    assert_eq!(regs.get(ENABLES), 0b111);
    assert_eq!(regs.get(LCR), 0b11, "8 bits, DLAB clear");
    assert_eq!(regs.get(IER), 0, "interrupts off");
    assert_eq!(regs.get(MCR), 0);
    assert_eq!(
        regs.get(IIR),
        1 << 2,
        "transmit FIFO cleared, receive FIFO kept"
    );
    assert_eq!(
        regs.get(CNTL),
        0b11,
        "receiver and transmitter on, no flow control"
    );
    assert_eq!(uart.baud_divisor(), 270, "the firmware's divisor is kept");
}

#[test]
fn bytes_in_and_out() {
    let (regs, uart) = uart();
    regs.set(LSR, 1 << 5); // room to transmit, nothing received
    uart.write_byte(b'q');
    assert_eq!(regs.get(IO), u32::from(b'q'));
    assert_eq!(uart.try_read_byte(), None);
    regs.set(LSR, 1); // data ready
    regs.set(IO, 0x100 | u32::from(b'r')); // only the data bits are the byte
    assert_eq!(uart.try_read_byte(), Some(b'r'));
}

#[test]
fn receive_interrupt() {
    let (regs, uart) = uart();
    uart.enable_rx_interrupt();
    assert_eq!(
        regs.get(IER),
        0b1101,
        "receive, and the two line bits the errata needs"
    );
    uart.disable_rx_interrupt();
    assert_eq!(regs.get(IER), 0b1100);
    regs.set(IIR, 1); // PENDING_N set: nothing pending
    assert!(!uart.interrupt_pending());
    regs.set(IIR, 0b100);
    assert!(uart.interrupt_pending());
}

#[test]
fn flush_gives_up_on_a_stuck_transmitter() {
    let (regs, uart) = uart();
    regs.set(ENABLES, 1);
    uart.flush(); // LSR never says idle: bounded wait
    regs.set(ENABLES, 0);
    uart.flush(); // disabled: returns at once
}
