//! The GICv2 driver against fake distributor and CPU-interface blocks.
use super::*;
use crate::drivers::fake::FakeRegs;

const CTLR: usize = 0x000;
const TYPER: usize = 0x004;
const IGROUPR: usize = 0x080;
const ISENABLER: usize = 0x100;
const ICENABLER: usize = 0x180;
const ICPENDR: usize = 0x280;
const ICACTIVER: usize = 0x380;
const IPRIORITYR: usize = 0x400;
const ITARGETSR: usize = 0x800;
const ICFGR: usize = 0xc00;
const SGIR: usize = 0xf00;
const GICC_CTLR: usize = 0x000;
const GICC_PMR: usize = 0x004;
const GICC_IAR: usize = 0x00c;
const GICC_EOIR: usize = 0x010;

type Gicd = FakeRegs<1024>;
type Gicc = FakeRegs<8>;

/// A GIC with 64 lines (ITLinesNumber 1) that looks Secure-less, as QEMU `virt`'s, with
/// CPU interface 0 as the boot CPU's.
fn gic() -> (alloc::boxed::Box<Gicd>, alloc::boxed::Box<Gicc>, GicV2) {
    let (d, c) = (Gicd::new(), Gicc::new());
    d.set(TYPER, 1);
    d.set_u8(ITARGETSR, 0x01);
    // SAFETY: the fake blocks live as long as the test uses the driver.
    let gic = unsafe { GicV2::new(d.base(), c.base()) };
    (d, c, gic)
}

#[test]
fn distributor_init_routes_every_spi_to_the_boot_cpu() {
    let (d, c, gic) = gic();
    d.set(ICFGR + 8, 0xaaaa_aaaa);
    gic.init_distributor();
    assert_eq!(d.get(CTLR), full_view::ENABLE_GRP1);
    // Word 1 holds SPIs 32..63: all disabled, unpended, inactive, Group 1.
    for reg in [ICENABLER, ICPENDR, ICACTIVER, IGROUPR] {
        assert_eq!(d.get(reg + 4), u32::MAX, "{reg:#x}");
    }
    for intid in SPI_BASE as usize..64 {
        assert_eq!(d.get_u8(IPRIORITYR + intid), DEFAULT_PRIORITY);
        assert_eq!(d.get_u8(ITARGETSR + intid), 0x01);
    }
    assert_eq!(d.get(ICFGR + 8), 0, "SPIs level-triggered");
    assert!(!gic.cpu_interface_ready());
    gic.init_cpu();
    assert!(gic.cpu_interface_ready());
    assert_eq!(c.get(GICC_PMR), u32::from(PRIORITY_MASK_OPEN));
    assert_eq!(
        c.get(GICC_CTLR),
        full_view::ENABLE_GRP1 | full_view::ACK_CTL | full_view::CBPR
    );
    assert_eq!(d.get(ISENABLER), 0x0000_ffff, "the SGIs enabled");
    assert_eq!(d.get(ICENABLER), 0xffff_0000, "the PPIs disabled");
}

#[test]
fn enable_disable_and_trigger() {
    let (d, _c, gic) = gic();
    gic.enable(33);
    assert_eq!(d.get(ISENABLER + 4), 1 << 1);
    gic.disable(40);
    assert_eq!(d.get(ICENABLER + 4), 1 << 8);
    gic.enable(64); // beyond the 64 lines: ignored
    assert_eq!(d.get(ISENABLER + 8), 0);
    gic.set_edge_triggered(33, true);
    assert_eq!(d.get(ICFGR + 8), 1 << 3, "ICFGR2, interrupt 33's upper bit");
    gic.set_edge_triggered(33, false);
    assert_eq!(d.get(ICFGR + 8), 0);
    gic.set_edge_triggered(27, true); // a PPI: fixed, left alone
    assert_eq!(d.get(ICFGR + 4), 0);
}

#[test]
fn acknowledge_and_end_of_interrupt_keep_the_sgi_source() {
    let (_d, c, gic) = gic();
    c.set(GICC_IAR, 1023);
    assert_eq!(gic.acknowledge(), None, "spurious");
    c.set(GICC_IAR, (2 << 10) | 1); // SGI 1 from CPU interface 2
    assert_eq!(gic.acknowledge(), Some(1));
    gic.end_of_interrupt(1);
    assert_eq!(c.get(GICC_EOIR), (2 << 10) | 1);
    c.set(GICC_IAR, 45);
    assert_eq!(gic.acknowledge(), Some(45));
    gic.end_of_interrupt(45);
    assert_eq!(c.get(GICC_EOIR), 45);
}

#[test]
fn sgis_by_target_list_or_to_all_others() {
    let (d, _c, gic) = gic();
    gic.init_distributor();
    gic.send_sgi(1, SgiTarget::AllOthers);
    assert_eq!(d.get(SGIR), (0b01 << 24) | 1);
    // Affinity 3 has not registered an interface: its index is assumed.
    gic.send_sgi(2, SgiTarget::Cpu(0x8000_0003));
    assert_eq!(d.get(SGIR), (1 << (16 + 3)) | 2);
    d.set(SGIR, 0);
    gic.send_sgi(16, SgiTarget::AllOthers); // not an SGI: nothing sent
    gic.send_sgi(1, SgiTarget::Cpu(0x100)); // no interface for it: nothing sent
    assert_eq!(d.get(SGIR), 0);
}
