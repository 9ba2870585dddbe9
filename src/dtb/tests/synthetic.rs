//! Built trees that exercise each feature: NOPs, version 16, stdout paths, ranges, cells.
use super::*;

#[test]
fn synthetic_board() {
    let blob = board("serial1:115200n8", false).build();
    assert_eq!(parse(&blob).unwrap(), expected_board());
}

#[test]
fn nops_anywhere_parse_the_same() {
    let blob = board("serial1:115200n8", true).build();
    assert_eq!(parse(&blob).unwrap(), expected_board());
    // Plain fdt 0.1.5 misreads these trees, which is why parse strips the NOPs: it
    // stops at a NOP between properties and loses the rest of the tree ...
    let children = |blob: &[u8]| {
        let fdt = Fdt::new(blob).unwrap();
        let total = fdt.all_nodes().map(|n| n.children().count()).sum::<usize>();
        total
    };
    let clean = board("serial1:115200n8", false).build();
    assert!(children(&blob) < children(&clean));
    // ... and panics when it skips over a node with one there.
    let mut b = Builder::default();
    b.begin("")
        .begin("a")
        .string("p", "1")
        .nop()
        .string("q", "2")
        .end()
        .end();
    let blob = b.build();
    assert!(catch_unwind(|| children(&blob)).is_err());
    assert!(parse(&blob).is_ok());
}

#[test]
fn version_16_blobs_parse() {
    let blob = board("serial1", true).build_version(16);
    assert_eq!(parse(&blob).unwrap(), expected_board());
    let blob = board("serial1", false).build_version(16);
    assert_eq!(parse(&blob).unwrap(), expected_board());
}

#[test]
fn stdout_path_forms() {
    let uart = |path: &str| parse(&board(path, false).build()).unwrap().uart;
    let mini = expected_board().uart;
    assert_eq!(uart("/soc/serial@7e215040"), mini);
    assert_eq!(uart("/soc/serial@7e215040:115200"), mini);
    assert_eq!(uart("serial1"), mini);
    assert_eq!(uart("soc/serial@7e215040"), mini, "alias plus a sub-path");
    // A self-referencing alias must not loop; nothing else names a usable UART
    // except the mini UART, which is then picked as the first enabled one.
    assert_eq!(uart("loop"), mini);
    assert_eq!(uart("serial0"), mini, "the PL011 it names is disabled");
    assert_eq!(uart("/nowhere"), mini);
    assert_eq!(uart(""), mini);
}

#[test]
fn ranges_translation() {
    let mut b = Builder::default();
    b.begin("")
        .cells("#address-cells", &[2])
        .cells("#size-cells", &[2])
        .begin("bus@0")
        .cells("#address-cells", &[1])
        .cells("#size-cells", &[1])
        .cells("ranges", &[0x1000_0000, 0x8, 0x0, 0x100_0000])
        .begin("inner")
        .cells("#address-cells", &[1])
        .cells("#size-cells", &[1])
        .prop("ranges", &[])
        .begin("serial@10001000")
        .string("compatible", "arm,pl011")
        .cells("reg", &[0x1000_1000, 0x1000])
        .end()
        .end()
        .begin("serial@20000000")
        .string("compatible", "arm,pl011")
        .string("status", "okay")
        .cells("reg", &[0x2000_0000, 0x1000])
        .end()
        .end()
        .end();
    let m = parse(&b.build()).unwrap();
    // The first PL011, behind an identity bus and a translating one.
    assert_eq!(m.uart.unwrap().region, region(0x8_0000_1000, 0x1000));
    assert_eq!(m.uart.unwrap().irq, None);
    assert_eq!(m.interrupt_controller, None);
    assert_eq!(m.timer, None);
    assert_eq!(m.psci, None);
    assert!(m.cpus.is_empty() && m.memory.is_empty() && m.reserved.is_empty());
    assert_eq!(m.model, "");
}

#[test]
fn address_outside_every_range_is_not_translated() {
    let mut b = Builder::default();
    b.begin("")
        .begin("bus")
        .cells("#address-cells", &[1])
        .cells("#size-cells", &[1])
        .cells("ranges", &[0x1000, 0x2000, 0x1000])
        .begin("serial@4000")
        .string("compatible", "arm,pl011")
        .cells("reg", &[0x4000, 0x100])
        .end()
        .end()
        .end();
    assert_eq!(parse(&b.build()).unwrap().uart, None);
}

#[test]
fn malformed_cells_are_skipped_not_fatal() {
    let mut b = Builder::default();
    b.begin("")
        .prop("#address-cells", &[0, 1])
        .string("compatible", "vendor,board")
        .begin("memory@0")
        .string("device_type", "memory")
        .cells("reg", &[0, 0x1000])
        .end()
        .begin("cpus")
        .cells("#address-cells", &[9])
        .begin("cpu@0")
        .cells("reg", &[0])
        .end()
        .end()
        .begin("psci")
        .string("compatible", "arm,psci-1.0")
        .string("method", "magic")
        .end()
        .begin("timer")
        .string("compatible", "arm,armv7-timer")
        .cells("interrupt-parent", &[77])
        .cells("interrupts", &[1, 2, 3])
        .prop("clock-frequency", &[1, 2])
        .end()
        .begin("gic")
        .string("compatible", "arm,gic-v3")
        .cells("reg", &[0, 0x1000])
        .end()
        .end();
    let m = parse(&b.build()).unwrap();
    assert_eq!(m.model, "vendor,board");
    assert!(m.memory.is_empty());
    assert!(m.cpus.is_empty());
    assert_eq!(m.psci, None);
    assert_eq!(
        m.timer,
        Some(Timer {
            interrupts: vec![],
            frequency: None
        })
    );
    assert_eq!(m.interrupt_controller, None);
}

#[test]
fn gic_intid_ranges() {
    assert_eq!(gic(0, 0, 4).gic_intid(), Some(32));
    assert_eq!(gic(0, 987, 4).gic_intid(), Some(1019));
    assert_eq!(gic(0, 988, 4).gic_intid(), None);
    assert_eq!(gic(1, 15, 4).gic_intid(), Some(31));
    assert_eq!(gic(1, 16, 4).gic_intid(), None);
    assert_eq!(gic(2, 1, 4).gic_intid(), None);
    assert_eq!(gic(0, u32::MAX, 4).gic_intid(), None);
    assert_eq!(two_cell(0, 1).gic_intid(), None);
}
