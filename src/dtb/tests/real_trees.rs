//! The trees QEMU and the Raspberry Pi firmware really pass.
use super::*;

#[test]
fn qemu_virt_gicv2() {
    let m = parse(VIRT_GICV2).unwrap();
    assert_virt_common(&m);
    assert_eq!(m.memory, [region(0x4000_0000, 256 << 20)]);
    assert_eq!(
        m.interrupt_controller,
        Some(InterruptController::GicV2 {
            distributor: region(0x0800_0000, 0x1_0000),
            cpu_interface: region(0x0801_0000, 0x1_0000),
        })
    );
    assert_eq!(m.psci, Some(PsciConduit::Hvc));
    assert_eq!(m.cpus.len(), 4);
    assert_eq!(
        m.timer.unwrap().interrupts[1],
        gic(1, 14, 0xf04),
        "non-secure physical timer"
    );
}

#[test]
fn qemu_virt_gicv3() {
    let m = parse(VIRT_GICV3).unwrap();
    assert_virt_common(&m);
    assert_eq!(
        m.interrupt_controller,
        Some(InterruptController::GicV3 {
            distributor: region(0x0800_0000, 0x1_0000),
            redistributors: region(0x080a_0000, 0xf6_0000),
        })
    );
    assert_eq!(m.psci, Some(PsciConduit::Hvc));
    assert_eq!(m.cpus.len(), 4);
}

#[test]
fn qemu_virt_with_el2_uses_smc() {
    let m = parse(VIRT_EL2).unwrap();
    assert_virt_common(&m);
    assert_eq!(m.psci, Some(PsciConduit::Smc));
    assert_eq!(
        m.interrupt_controller,
        Some(InterruptController::GicV2 {
            distributor: region(0x0800_0000, 0x1_0000),
            cpu_interface: region(0x0801_0000, 0x1_0000),
        })
    );
}

#[test]
fn qemu_virt_8_cpus_1g() {
    let m = parse(VIRT_SMP8).unwrap();
    assert_virt_common(&m);
    assert_eq!(m.cpus.len(), 8);
    assert_eq!(m.memory, [region(0x4000_0000, 1 << 30)]);
}

#[test]
fn raspberry_pi_3b() {
    let m = parse(RPI3B).unwrap();
    // The power-management watchdog, translated from bus address 0x7e10_0000.
    assert_eq!(m.pm_watchdog.map(|r| r.base), Some(0x3f10_0000));
    assert_eq!(m.model, "Raspberry Pi 3 Model B");
    assert_eq!(m.memory, [region(0, 0x4000_0000)]);
    assert_eq!(m.reserved, [region(0, 0x1000)]);
    // stdout-path names the mini UART; the PL011 wins (see MachineInfo::uart).
    assert_eq!(
        m.uart,
        Some(Uart {
            region: region(0x3f20_1000, 0x200),
            kind: UartKind::Pl011,
            irq: Some(two_cell(2, 25)),
        })
    );
    assert_eq!(m.uart.unwrap().irq.unwrap().gic_intid(), None);
    // The mini UART is there too, for console=mini: armctrl bank 1, bit 29.
    assert_eq!(
        m.mini_uart,
        Some(Uart {
            region: region(0x3f21_5040, 0x40),
            kind: UartKind::Bcm2835Aux,
            irq: Some(two_cell(1, 29)),
        })
    );
    assert_eq!(
        m.interrupt_controller,
        Some(InterruptController::Bcm2836 {
            local: region(0x4000_0000, 0x100),
            peripheral: Some(region(0x3f00_b200, 0x200)),
        })
    );
    assert_eq!(m.psci, None);
    let release: Vec<_> = m.cpus.iter().map(|c| (c.mpidr, c.enable)).collect();
    assert_eq!(
        release,
        [0xd8, 0xe0, 0xe8, 0xf0]
            .iter()
            .enumerate()
            .map(|(i, &a)| (i as u64, EnableMethod::SpinTable { release_addr: a }))
            .collect::<Vec<_>>()
    );
    let timer = m.timer.unwrap();
    assert_eq!(
        timer.interrupts,
        [
            two_cell(0, 4),
            two_cell(1, 4),
            two_cell(3, 4),
            two_cell(2, 4)
        ]
    );
    assert_eq!(timer.frequency, None);
    assert_eq!(m.bootargs, None);
}

#[test]
fn raspberry_pi_4b() {
    let m = parse(RPI4B).unwrap();
    assert_eq!(m.pm_watchdog.map(|r| r.base), Some(0xfe10_0000));
    assert_eq!(m.model, "Raspberry Pi 4 Model B");
    // reg = <0 0 0> is left for the firmware to fill in.
    assert!(m.memory.is_empty());
    // The nvram@0 child is disabled and empty.
    assert_eq!(m.reserved, [region(0, 0x1000)]);
    let uart = m.uart.unwrap();
    assert_eq!(uart.region, region(0xfe20_1000, 0x200));
    assert_eq!(uart.kind, UartKind::Pl011);
    assert_eq!(uart.irq.unwrap().gic_intid(), Some(32 + 0x79));
    let mini = m.mini_uart.unwrap();
    assert_eq!(mini.region, region(0xfe21_5040, 0x40));
    assert_eq!(mini.kind, UartKind::Bcm2835Aux);
    // GIC_SPI 93.
    assert_eq!(mini.irq.unwrap().gic_intid(), Some(125));
    assert_eq!(
        m.interrupt_controller,
        Some(InterruptController::GicV2 {
            distributor: region(0xff84_1000, 0x1000),
            cpu_interface: region(0xff84_2000, 0x2000),
        })
    );
    assert_eq!(m.psci, None);
    assert_eq!(m.cpus.len(), 4);
    assert_eq!(
        m.cpus[3].enable,
        EnableMethod::SpinTable { release_addr: 0xf0 }
    );
    let timer = m.timer.unwrap();
    let intids: Vec<_> = timer.interrupts.iter().map(|i| i.gic_intid()).collect();
    assert_eq!(intids, [Some(29), Some(30), Some(27), Some(26)]);
}

#[test]
fn total_size_reads_only_the_header() {
    assert_eq!(total_size(&RPI3B[..40]), Ok(RPI3B.len()));
    assert_eq!(total_size(&VIRT_GICV2[..40]), Ok(1 << 20));
    assert_eq!(
        total_size(&RPI3B[..39]),
        Err(DtbError::TruncatedHeader { available: 39 })
    );
    let mut bad = RPI3B[..40].to_vec();
    set_header_field(&mut bad, 0, 0x1234_5678);
    let err = total_size(&bad).unwrap_err();
    assert_eq!(
        err.to_string(),
        "bad magic 0x12345678 (expected 0xd00dfeed)"
    );
    set_header_field(&mut bad, 0, MAGIC);
    set_header_field(&mut bad, 1, 39);
    assert_eq!(
        total_size(&bad),
        Err(DtbError::TotalSizeTooSmall { totalsize: 39 })
    );
    set_header_field(&mut bad, 1, (MAX_TOTAL_SIZE + 1) as u32);
    assert!(matches!(
        total_size(&bad),
        Err(DtbError::TotalSizeTooLarge { .. })
    ));
    set_header_field(&mut bad, 1, u32::MAX);
    assert!(total_size(&bad).is_err());
}

#[test]
fn truncated_message() {
    let mut blob = RPI3B[..4000].to_vec();
    set_header_field(&mut blob, 1, 8192);
    assert_eq!(
        parse(&blob).unwrap_err().to_string(),
        "truncated: header says 8192 bytes, 4000 available"
    );
}

#[test]
fn qemu_tree_parses_after_compaction_too() {
    let full = parse(VIRT_GICV3).unwrap();
    assert_eq!(parse(&compact(VIRT_GICV3)).unwrap(), full);
}
