//! The BCM2836 local and BCM2835 armctrl interrupt controllers against fake register blocks.
//! On the host the calling CPU is core 0 (see `drivers::current_affinity`).
use super::*;
use crate::drivers::fake::FakeRegs;

const GPU_ROUTING: usize = 0x0c;
const PMU_ROUTE_SET: usize = 0x10;
const TIMER_CONTROL: usize = 0x40;
const MAILBOX_CONTROL: usize = 0x50;
const IRQ_SOURCE: usize = 0x60;
const MAILBOX_SET: usize = 0x80;
const MAILBOX_CLEAR: usize = 0xc0;
const PENDING: usize = 0x04;
const ENABLE: usize = 0x10;
const DISABLE: usize = 0x1c;

type Local = FakeRegs<{ LOCAL_SIZE as usize / 4 }>;
type Peripheral = FakeRegs<{ PERIPHERAL_SIZE as usize / 4 }>;

fn intc() -> (
    alloc::boxed::Box<Local>,
    alloc::boxed::Box<Peripheral>,
    Bcm2836,
) {
    let (l, p) = (Local::new(), Peripheral::new());
    // SAFETY: the fake blocks live as long as the test uses the driver.
    let intc = unsafe { Bcm2836::new(l.base(), Some(p.base())) };
    (l, p, intc)
}

#[test]
fn init_masks_the_peripherals_and_routes_mailbox_0() {
    let (l, p, intc) = intc();
    l.set(GPU_ROUTING, 3);
    intc.init_distributor();
    assert_eq!(p.get(DISABLE), u32::MAX);
    assert_eq!(p.get(DISABLE + 4), u32::MAX);
    assert_eq!(l.get(GPU_ROUTING), 0, "GPU interrupts to this core");
    assert!(!intc.cpu_interface_ready());
    l.set(TIMER_CONTROL, 0xf);
    intc.init_cpu();
    assert!(intc.cpu_interface_ready());
    assert_eq!(l.get(TIMER_CONTROL), 0);
    assert_eq!(l.get(MAILBOX_CLEAR), u32::MAX);
    assert_eq!(l.get(MAILBOX_CONTROL), 1);
}

#[test]
fn enable_reaches_the_right_register() {
    let (l, p, intc) = intc();
    intc.enable(VIRTUAL_TIMER_INTID);
    assert_eq!(l.get(TIMER_CONTROL), 1 << 3);
    intc.disable(VIRTUAL_TIMER_INTID);
    assert_eq!(l.get(TIMER_CONTROL), 0);
    intc.enable(LOCAL_BASE + 9);
    assert_eq!(l.get(PMU_ROUTE_SET), 1, "the PMU to core 0");
    let uart = peripheral_intid(2, 25).unwrap(); // the PL011 on armctrl
    intc.enable(uart);
    assert_eq!(p.get(ENABLE + 4), 1 << 25);
    intc.disable(uart);
    assert_eq!(p.get(DISABLE + 4), 1 << 25);
}

#[test]
fn acknowledge_orders_sgis_timers_then_peripherals() {
    let (l, p, intc) = intc();
    assert_eq!(intc.acknowledge(), None);
    l.set(IRQ_SOURCE, 1 << 4); // mailbox 0
    l.set(MAILBOX_CLEAR, (1 << 5) | (1 << 2));
    assert_eq!(intc.acknowledge(), Some(2));
    assert_eq!(
        l.get(MAILBOX_CLEAR),
        1 << 2,
        "the SGI's bit written back to clear it"
    );
    l.set(IRQ_SOURCE, (1 << 8) | (1 << 3)); // the GPU and the virtual timer
    assert_eq!(intc.acknowledge(), Some(VIRTUAL_TIMER_INTID));
    let uart = peripheral_intid(2, 25).unwrap();
    intc.enable(uart);
    l.set(IRQ_SOURCE, 1 << 8);
    p.set(PENDING + 4, (1 << 25) | (1 << 7)); // bit 7 pends but was never enabled
    assert_eq!(intc.acknowledge(), Some(uart));
}

#[test]
fn sgis_go_through_the_mailboxes() {
    let (l, _p, intc) = intc();
    intc.send_sgi(1, SgiTarget::Cpu(2));
    assert_eq!(l.get(MAILBOX_SET + 4 * 4 * 2), 1 << 1);
    intc.send_sgi(3, SgiTarget::AllOthers);
    for core in 1..4 {
        assert_eq!(l.get(MAILBOX_SET + 4 * 4 * core), 1 << 3, "core {core}");
    }
    assert_eq!(l.get(MAILBOX_SET), 0, "not to this core");
    intc.send_sgi(16, SgiTarget::Cpu(1));
    assert_eq!(l.get(MAILBOX_SET + 16), 1 << 3, "not an SGI: nothing sent");
}
