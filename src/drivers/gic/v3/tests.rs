//! The GICv3 driver against a fake distributor, a fake redistributor region and a fake CPU
//! interface (the `ICC_*` system registers, which the host tests cannot reach: [`fake_icc`]).
use super::*;
use crate::drivers::fake::FakeRegs;

/// The calling CPU's interface in the host tests: what `mrs` would read and what `msr`
/// wrote, one per test thread (the tests run in parallel, each on its own thread).
pub(super) mod fake_icc {
    use std::cell::Cell;

    /// The fake CPU interface's registers.
    pub struct Icc {
        /// `MPIDR_EL1` of the calling CPU (its affinity bits).
        pub mpidr: Cell<u64>,
        /// `ID_AA64PFR0_EL1`: bits 27:24 (GIC) say whether the interface exists.
        pub id_aa64pfr0: Cell<u64>,
        /// Whether `ICC_SRE_EL1.SRE` sticks when written (false: a higher EL forbids it).
        pub sre_allowed: Cell<bool>,
        pub sre: Cell<u64>,
        pub pmr: Cell<u64>,
        pub bpr1: Cell<u64>,
        pub ctlr: Cell<u64>,
        pub igrpen1: Cell<u64>,
        /// What the next acknowledge reads.
        pub iar1: Cell<u64>,
        /// Every value written to `ICC_EOIR1_EL1` and `ICC_SGI1R_EL1`, in order.
        pub eoir1: Cell<Option<u64>>,
        pub sgi1r: Cell<Option<u64>>,
        /// Barriers executed (`ISB`).
        pub isbs: Cell<u32>,
    }

    std::thread_local! {
        /// This test thread's CPU interface: a GICv3 system register interface that lets
        /// SRE be set, CPU 0.
        pub static ICC: Icc = const { Icc {
            mpidr: Cell::new(0),
            id_aa64pfr0: Cell::new(1 << 24),
            sre_allowed: Cell::new(true),
            sre: Cell::new(0),
            pmr: Cell::new(0),
            bpr1: Cell::new(0),
            ctlr: Cell::new(0),
            igrpen1: Cell::new(0),
            iar1: Cell::new(1023),
            eoir1: Cell::new(None),
            sgi1r: Cell::new(None),
            isbs: Cell::new(0),
        } };
    }

    fn with<R>(f: impl FnOnce(&Icc) -> R) -> R {
        ICC.with(f)
    }

    pub fn affinity() -> u64 {
        with(|i| super::super::super::affinity_of(i.mpidr.get()))
    }
    pub fn id_aa64pfr0_el1() -> u64 {
        with(|i| i.id_aa64pfr0.get())
    }
    pub fn sre_el1() -> u64 {
        with(|i| i.sre.get())
    }
    pub fn set_sre_el1(v: u64) {
        with(|i| i.sre.set(if i.sre_allowed.get() { v } else { v & !1 }));
    }
    pub fn set_pmr_el1(v: u64) {
        with(|i| i.pmr.set(v));
    }
    pub fn set_bpr1_el1(v: u64) {
        with(|i| i.bpr1.set(v));
    }
    pub fn ctlr_el1() -> u64 {
        with(|i| i.ctlr.get())
    }
    pub fn set_ctlr_el1(v: u64) {
        with(|i| i.ctlr.set(v));
    }
    pub fn igrpen1_el1() -> u64 {
        with(|i| i.igrpen1.get())
    }
    pub fn set_igrpen1_el1(v: u64) {
        with(|i| i.igrpen1.set(v));
    }
    pub fn iar1_el1() -> u64 {
        with(|i| i.iar1.get())
    }
    pub fn set_eoir1_el1(v: u64) {
        with(|i| i.eoir1.set(Some(v)));
    }
    pub fn set_sgi1r_el1(v: u64) {
        with(|i| i.sgi1r.set(Some(v)));
    }
    pub fn isb() {
        with(|i| i.isbs.set(i.isbs.get() + 1));
    }
    pub fn dsb_ishst() {
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    }
}

use fake_icc::ICC;

// Distributor offsets.
const CTLR: usize = 0x0000;
const TYPER: usize = 0x0004;
const IGROUPR: usize = 0x0080;
const ISENABLER: usize = 0x0100;
const ICENABLER: usize = 0x0180;
const ICPENDR: usize = 0x0280;
const ICACTIVER: usize = 0x0380;
const IPRIORITYR: usize = 0x0400;
const ICFGR: usize = 0x0c00;
const IROUTER: usize = 0x6000;
const PIDR2: usize = 0xffe8;
// Redistributor offsets (RD_base frame, then SGI_base 64 KiB above).
const R_CTLR: usize = 0x0_0000;
const R_TYPER: usize = 0x0_0008;
const R_WAKER: usize = 0x0_0014;
const R_PIDR2: usize = 0x0_ffe8;
const R_IGROUPR0: usize = 0x1_0080;
const R_ISENABLER0: usize = 0x1_0100;
const R_ICENABLER0: usize = 0x1_0180;
const R_ICACTIVER0: usize = 0x1_0380;
const R_IPRIORITYR: usize = 0x1_0400;

const GICD_ARE: u32 = 1 << 4;
const GICD_ENABLE_GRP1: u32 = 1 << 1;
const GICD_ENABLE_GRP0_OR_1NS: u32 = 1 << 0;
const RWP: u32 = 1 << 31;
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
const TYPER_VLPIS: u32 = 1 << 1;
const TYPER_LAST: u32 = 1 << 4;

/// 64 KiB of distributor.
type Gicd = FakeRegs<0x4000>;
/// A redistributor region of 0xa0000 bytes: room for a plain one (two frames) at 0, a
/// GICv4 one with virtual LPIs (four frames) at 0x20000, a plain one at 0x60000 marked
/// Last, and behind it a stray frame that looks like CPU 0.0.0.3's but is not in the list.
type Gicr = FakeRegs<0x2_8000>;

const RD0: usize = 0x0_0000;
const RD1: usize = 0x2_0000;
const RD2: usize = 0x6_0000;
const STRAY: usize = 0x8_0000;
const REGION: usize = 0xa_0000;

/// The MPIDR of each redistributor's CPU: CPU 0, 0.0.1.0 and 1.0.0.2 (Aff3 at bits 39:32).
const MPIDR: [u64; 3] = [0x8000_0000, 0x8000_0100, 0x01_8000_0002];

/// A GIC with 64 lines (ITLinesNumber 1) and three redistributors, the last one marked
/// Last, the middle one with virtual LPIs (so the next is four frames on), and the stray
/// frame.
fn gic() -> (Box<Gicd>, Box<Gicr>, GicV3) {
    let (d, r) = (Gicd::new(), Gicr::new());
    d.set(TYPER, 1);
    d.set(PIDR2, 3 << 4);
    for (rd, affinity, flags) in [
        (RD0, 0, 0),
        (RD1, 0x0000_0100, TYPER_VLPIS),
        (RD2, 0x0100_0002, TYPER_LAST),
        (STRAY, 0x0000_0003, 0),
    ] {
        r.set(rd + R_PIDR2, 3 << 4);
        r.set(rd + R_TYPER, flags);
        r.set(rd + R_TYPER + 4, affinity);
        r.set(rd + R_WAKER, WAKER_PROCESSOR_SLEEP);
    }
    // SAFETY: the fake blocks live as long as the test uses the driver; the region is
    // exactly as large as the fake.
    let gic = unsafe { GicV3::new(d.base(), r.base(), REGION) };
    (d, r, gic)
}

/// Makes the test's thread CPU `mpidr`.
fn on_cpu(mpidr: u64) {
    ICC.with(|i| i.mpidr.set(mpidr));
}

fn irouter(d: &Gicd, intid: usize) -> u64 {
    let at = IROUTER + 8 * intid;
    u64::from(d.get(at)) | (u64::from(d.get(at + 4)) << 32)
}

#[test]
fn distributor_init_turns_on_affinity_routing_and_routes_every_spi_to_the_boot_cpu() {
    let (d, _r, gic) = gic();
    on_cpu(MPIDR[2]);
    d.set(ICFGR + 8, 0xaaaa_aaaa);
    gic.init_distributor();
    assert_eq!(
        d.get(CTLR),
        GICD_ARE | GICD_ENABLE_GRP1 | GICD_ENABLE_GRP0_OR_1NS
    );
    // Word 1 holds SPIs 32..63: all disabled, unpended, inactive, Group 1. Word 0 (SGIs
    // and PPIs) is the redistributors' business under affinity routing: left alone.
    for reg in [ICENABLER, ICPENDR, ICACTIVER, IGROUPR] {
        assert_eq!(d.get(reg + 4), u32::MAX, "{reg:#x}");
        assert_eq!(d.get(reg), 0, "{reg:#x} word 0");
    }
    for intid in SPI_BASE as usize..64 {
        assert_eq!(d.get_u8(IPRIORITYR + intid), DEFAULT_PRIORITY);
        // Aff3 1, Aff0 2, routing mode 0 (to that CPU, not "any").
        assert_eq!(irouter(&d, intid), 0x01_0000_0002, "IROUTER{intid}");
    }
    assert_eq!(d.get_u8(IPRIORITYR + 31), 0, "a PPI's priority left alone");
    assert_eq!(irouter(&d, 64), 0, "no line 64");
    assert_eq!(d.get(ICFGR + 8), 0, "SPIs level-triggered");
    assert_eq!(gic.version(), 3);
    d.set(PIDR2, 4 << 4);
    assert_eq!(gic.version(), 4);
}

#[test]
fn each_cpu_finds_its_own_redistributor_past_a_gicv4_one() {
    for (cpu, (&mpidr, rd)) in MPIDR.iter().zip([RD0, RD1, RD2]).enumerate() {
        let (_d, r, gic) = gic();
        on_cpu(mpidr);
        gic.init_cpu();
        assert_eq!(r.get(rd + R_WAKER), 0, "cpu {cpu} awake");
        assert_eq!(r.get(rd + R_IGROUPR0), u32::MAX);
        assert_eq!(r.get(rd + R_ICACTIVER0), u32::MAX);
        assert_eq!(r.get(rd + R_ICENABLER0), 0xffff_0000, "the PPIs disabled");
        assert_eq!(r.get(rd + R_ISENABLER0), 0x0000_ffff, "the SGIs enabled");
        for intid in 0..SPI_BASE as usize {
            assert_eq!(r.get_u8(rd + R_IPRIORITYR + intid), DEFAULT_PRIORITY);
        }
        // The other CPUs' redistributors are untouched.
        for other in [RD0, RD1, RD2].into_iter().filter(|&o| o != rd) {
            assert_eq!(r.get(other + R_WAKER), WAKER_PROCESSOR_SLEEP);
            assert_eq!(r.get(other + R_ISENABLER0), 0);
        }
        assert!(gic.cpu_interface_ready(), "cpu {cpu}");
    }
}

#[test]
fn a_cpu_without_a_redistributor_is_left_alone_and_not_ready() {
    let (_d, r, gic) = gic();
    // 0.0.0.3 matches none in the list: the walk stops at the one marked Last and never
    // reaches the stray frame behind it.
    on_cpu(0x8000_0003);
    gic.init_cpu();
    for rd in [RD0, RD1, RD2, STRAY] {
        assert_eq!(r.get(rd + R_WAKER), WAKER_PROCESSOR_SLEEP);
        assert_eq!(r.get(rd + R_ISENABLER0), 0);
    }
    assert!(!gic.cpu_interface_ready());
    assert_eq!(ICC.with(|i| i.igrpen1.get()), 0, "CPU interface not opened");
    // Enabling a PPI on it goes nowhere.
    gic.enable(27);
    for rd in [RD0, RD1, RD2] {
        assert_eq!(r.get(rd + R_ISENABLER0), 0);
    }
}

#[test]
fn the_walk_stops_at_a_frame_that_is_not_a_redistributor_and_at_the_region_end() {
    let (_d, r, full) = gic();
    // RD1 is no GICv3/v4 frame: CPU 2's redistributor beyond it is not reached.
    r.set(RD1 + R_PIDR2, 2 << 4);
    on_cpu(MPIDR[2]);
    full.init_cpu();
    assert_eq!(r.get(RD2 + R_WAKER), WAKER_PROCESSOR_SLEEP);
    assert!(!full.cpu_interface_ready());
    // Without Last and without a match, the walk ends with the region (a region that
    // ends right after RD1's four frames: RD2 lies outside it).
    let (d, r, _) = gic();
    r.set(RD2 + R_TYPER, 0);
    // SAFETY: a region smaller than the fake, so still inside it.
    let short = unsafe { GicV3::new(d.base(), r.base(), RD2) };
    on_cpu(MPIDR[2]);
    short.init_cpu();
    assert_eq!(r.get(RD2 + R_WAKER), WAKER_PROCESSOR_SLEEP);
    assert!(!short.cpu_interface_ready());
}

#[test]
fn the_cpu_interface_is_opened_to_group_1_with_eoi_mode_0() {
    let (_d, _r, gic) = gic();
    on_cpu(MPIDR[0]);
    // EOImode 1 and another bit (CBPR) left by firmware: only EOImode is cleared.
    ICC.with(|i| i.ctlr.set((1 << 1) | (1 << 0)));
    gic.init_cpu();
    ICC.with(|i| {
        assert_eq!(i.sre.get() & 1, 1, "system register interface on");
        assert_eq!(i.pmr.get(), u64::from(PRIORITY_MASK_OPEN));
        assert_eq!(i.bpr1.get(), 0);
        assert_eq!(i.ctlr.get(), 1 << 0);
        assert_eq!(i.igrpen1.get(), 1);
        assert!(i.isbs.get() >= 3, "each step synchronised");
    });
    assert!(gic.cpu_interface_ready());
}

#[test]
fn no_cpu_interface_when_the_pe_has_none_or_sre_does_not_stick() {
    for case in ["no GIC system registers", "SRE refused by a higher EL"] {
        let (_d, _r, gic) = gic();
        on_cpu(MPIDR[0]);
        ICC.with(|i| {
            i.sre.set(0);
            i.igrpen1.set(0);
            i.pmr.set(0);
            if case.starts_with("no") {
                i.id_aa64pfr0.set(0);
            } else {
                i.id_aa64pfr0.set(1 << 24);
                i.sre_allowed.set(false);
            }
        });
        gic.init_cpu();
        ICC.with(|i| {
            assert_eq!(i.igrpen1.get(), 0, "{case}");
            assert_eq!(i.pmr.get(), 0, "{case}");
        });
        assert!(!gic.cpu_interface_ready(), "{case}");
    }
}

#[test]
fn sgis_and_ppis_are_enabled_at_the_redistributor_spis_at_the_distributor() {
    let (d, r, gic) = gic();
    on_cpu(MPIDR[1]);
    gic.enable(27);
    assert_eq!(r.get(RD1 + R_ISENABLER0), 1 << 27);
    gic.disable(30);
    assert_eq!(r.get(RD1 + R_ICENABLER0), 1 << 30);
    assert_eq!(r.get(RD0 + R_ISENABLER0), 0, "another CPU's");
    gic.enable(33);
    assert_eq!(d.get(ISENABLER + 4), 1 << 1);
    gic.disable(40);
    assert_eq!(d.get(ICENABLER + 4), 1 << 8);
    // Beyond the 64 lines: ignored.
    gic.enable(64);
    gic.disable(100);
    assert_eq!(d.get(ISENABLER + 8), 0);
    assert_eq!(d.get(ICENABLER + 12), 0);
}

#[test]
fn the_trigger_of_an_enabled_spi_changes_only_while_it_is_disabled() {
    let (d, _r, gic) = gic();
    gic.set_edge_triggered(33, true);
    assert_eq!(d.get(ICFGR + 8), 1 << 3, "ICFGR2, interrupt 33's upper bit");
    assert_eq!(d.get(ICENABLER + 4), 0, "not enabled: not disabled either");
    // Enabled (the fake reads back the bit): disabled around the change, then enabled.
    d.set(ISENABLER + 4, 1 << 2);
    gic.set_edge_triggered(34, true);
    assert_eq!(d.get(ICENABLER + 4), 1 << 2);
    assert_eq!(d.get(ISENABLER + 4), 1 << 2);
    assert_eq!(d.get(ICFGR + 8), (1 << 3) | (1 << 5));
    gic.set_edge_triggered(33, false);
    assert_eq!(d.get(ICFGR + 8), 1 << 5);
    // SGIs and PPIs, and lines it does not have: left alone.
    gic.set_edge_triggered(27, true);
    gic.set_edge_triggered(64, true);
    assert_eq!(d.get(ICFGR + 4), 0);
    assert_eq!(d.get(ICFGR + 16), 0);
}

#[test]
fn acknowledge_and_end_of_interrupt_through_the_system_registers() {
    let (_d, _r, gic) = gic();
    ICC.with(|i| i.iar1.set(1023));
    assert_eq!(gic.acknowledge(), None, "spurious");
    gic.end_of_interrupt(1023);
    assert_eq!(ICC.with(|i| i.eoir1.get()), None, "no EOI for a special ID");
    // Bits above the 24-bit INTID are not part of it.
    ICC.with(|i| i.iar1.set((1 << 30) | 45));
    assert_eq!(gic.acknowledge(), Some(45));
    gic.end_of_interrupt(45);
    assert_eq!(ICC.with(|i| i.eoir1.get()), Some(45));
}

#[test]
fn sgis_by_affinity_or_to_all_others() {
    let (_d, _r, gic) = gic();
    let sent = || ICC.with(|i| i.sgi1r.take());
    gic.send_sgi(1, SgiTarget::AllOthers);
    assert_eq!(sent(), Some((1 << 40) | (1 << 24)));
    // Aff3 3, Aff2 2, Aff1 1, Aff0 5: target list bit 5 in cluster 3.2.1.
    gic.send_sgi(2, SgiTarget::Cpu(0x03_8002_0105));
    assert_eq!(
        sent(),
        Some((3 << 48) | (2 << 32) | (2 << 24) | (1 << 16) | (1 << 5))
    );
    // Aff0 20 needs range selectors: refused without RSS, RS 1 bit 4 with it.
    gic.send_sgi(3, SgiTarget::Cpu(0x8000_0014));
    assert_eq!(sent(), None);
    ICC.with(|i| i.ctlr.set(1 << 18));
    gic.send_sgi(3, SgiTarget::Cpu(0x8000_0014));
    assert_eq!(sent(), Some((1 << 44) | (3 << 24) | (1 << 4)));
    // Not an SGI: nothing sent.
    gic.send_sgi(16, SgiTarget::AllOthers);
    assert_eq!(sent(), None);
}

#[test]
fn a_gic_that_never_finishes_a_write_cannot_hang_boot() {
    let (d, r, gic) = gic();
    on_cpu(MPIDR[0]);
    gic.init_distributor();
    // RWP and ChildrenAsleep stuck at 1 (the driver never writes them): every wait gives
    // up after its bound.
    d.set(CTLR, d.get(CTLR) | RWP);
    r.set(RD0 + R_CTLR, 1 << 3);
    r.set(RD0 + R_WAKER, WAKER_PROCESSOR_SLEEP | WAKER_CHILDREN_ASLEEP);
    gic.init_cpu();
    gic.disable(40);
    gic.disable(20);
    // It went on regardless, and says the interface is not ready.
    assert_eq!(r.get(RD0 + R_WAKER), WAKER_CHILDREN_ASLEEP);
    assert_eq!(r.get(RD0 + R_ISENABLER0), 0x0000_ffff);
    assert_eq!(d.get(ICENABLER + 4), 1 << 8);
    assert!(!gic.cpu_interface_ready());
}
