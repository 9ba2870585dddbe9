//! The PL011 driver against a fake register block.
use super::*;
use crate::drivers::fake::FakeRegs;

const DR: usize = 0x000;
const RSR: usize = 0x004;
const FR: usize = 0x018;
const IBRD: usize = 0x024;
const FBRD: usize = 0x028;
const LCR_H: usize = 0x02c;
const CR: usize = 0x030;
const IFLS: usize = 0x034;
const IMSC: usize = 0x038;
const MIS: usize = 0x040;
const ICR: usize = 0x044;

fn uart() -> (alloc::boxed::Box<FakeRegs<{ 0x48 / 4 }>>, Pl011) {
    let regs = FakeRegs::new();
    // SAFETY: the fake block lives as long as the test uses the driver.
    let uart = unsafe { Pl011::new(regs.base()) };
    (regs, uart)
}

#[test]
fn init_sets_8n1_keeps_the_fifo_setting_and_enables_the_line() {
    for fen in [0, 1 << 4] {
        let (regs, uart) = uart();
        regs.set(LCR_H, fen);
        regs.set(IMSC, 0x7ff);
        uart.init();
        assert_eq!(
            regs.get(LCR_H),
            (0b11 << 5) | fen,
            "8 bits, FIFOs as they were"
        );
        assert_eq!(regs.get(IFLS), 0b010, "receive at 1/8, transmit at 1/2");
        assert_eq!(regs.get(IMSC), 0, "every interrupt masked");
        assert_eq!(regs.get(ICR), 0x7ff, "every interrupt cleared");
        assert_eq!(regs.get(CR), (1 << 9) | (1 << 8) | 1, "RXE, TXE, UARTEN");
        assert_eq!(
            (regs.get(IBRD), regs.get(FBRD)),
            (0, 0),
            "the divisor is left alone"
        );
    }
}

#[test]
fn baud_rate_divisors() {
    let (regs, uart) = uart();
    regs.set(CR, 0x301);
    regs.set(LCR_H, 0x70);
    // 48 MHz / (16 × 115200) = 26.04: 26 and 3/64.
    assert_eq!(uart.set_baud_rate(48_000_000, 115_200), Ok(()));
    assert_eq!((regs.get(IBRD), regs.get(FBRD)), (26, 3));
    assert_eq!(
        regs.get(LCR_H),
        0x70,
        "rewritten unchanged, to latch the divisor"
    );
    assert_eq!(regs.get(CR), 0x301, "the control register is restored");
    // Out of range: nothing is touched.
    assert_eq!(uart.set_baud_rate(48_000_000, 0), Err(BaudRateError));
    assert_eq!(
        uart.set_baud_rate(48_000_000, 4_000_000),
        Err(BaudRateError)
    );
    assert_eq!(uart.set_baud_rate(u32::MAX, 1), Err(BaudRateError));
    assert_eq!((regs.get(IBRD), regs.get(FBRD)), (26, 3));
}

#[test]
fn writes_go_to_the_data_register() {
    let (regs, uart) = uart();
    uart.write_byte(b'x');
    assert_eq!(regs.get(DR), u32::from(b'x'));
    uart.write_bytes(b"yz");
    assert_eq!(regs.get(DR), u32::from(b'z'));
}

#[test]
fn reads_skip_bytes_with_errors_and_keep_overruns() {
    let (regs, uart) = uart();
    regs.set(FR, 1 << 4); // RXFE: nothing received
    assert_eq!(uart.try_read_byte(), None);
    regs.set(FR, 0);
    regs.set(DR, u32::from(b'a'));
    assert_eq!(uart.try_read_byte(), Some(b'a'));
    // An overrun is reported on the byte that carries it, and cleared.
    regs.set(RSR, 0xf);
    regs.set(DR, (1 << 11) | u32::from(b'b'));
    assert_eq!(uart.try_read_byte(), Some(b'b'));
    assert_eq!(regs.get(RSR), 0);
}

#[test]
fn receive_interrupts() {
    let (regs, uart) = uart();
    regs.set(IMSC, 1 << 1);
    uart.enable_rx_interrupt();
    assert_eq!(
        regs.get(IMSC),
        (1 << 1) | (1 << 4) | (1 << 6),
        "RX and RT added"
    );
    uart.disable_rx_interrupt();
    assert_eq!(regs.get(IMSC), 1 << 1, "only RX and RT removed");
    assert!(!uart.rx_interrupt_pending());
    regs.set(MIS, 1 << 6);
    assert!(uart.rx_interrupt_pending());
    regs.set(MIS, 1 << 5);
    assert!(
        !uart.rx_interrupt_pending(),
        "a transmit interrupt is not input"
    );
    uart.clear_interrupts();
    assert_eq!(regs.get(ICR), 0x7ff);
}

#[test]
fn flush_and_init_give_up_on_a_uart_that_stays_busy() {
    let (regs, uart) = uart();
    regs.set(CR, 1);
    regs.set(FR, 1 << 3); // BUSY, forever
    uart.flush();
    uart.init();
    assert_eq!(regs.get(CR), 0x301);
}
