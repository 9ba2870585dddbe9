use super::*;
use alloc::{format, vec};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

const VIRT_GICV2: &[u8] = include_bytes!("../../../data/dtb/qemu-virt-gicv2.dtb");
const VIRT_GICV3: &[u8] = include_bytes!("../../../data/dtb/qemu-virt-gicv3.dtb");
const VIRT_EL2: &[u8] = include_bytes!("../../../data/dtb/qemu-virt-el2.dtb");
const VIRT_SMP8: &[u8] = include_bytes!("../../../data/dtb/qemu-virt-smp8-1g.dtb");
const RPI3B: &[u8] = include_bytes!("../../../data/dtb/bcm2837-rpi-3-b.dtb");
const RPI4B: &[u8] = include_bytes!("../../../data/dtb/bcm2711-rpi-4-b.dtb");

fn region(base: u64, size: u64) -> Region {
    Region { base, size }
}

fn gic(kind: u32, number: u32, flags: u32) -> IrqSpec {
    IrqSpec {
        cells: [kind, number, flags],
        count: 3,
    }
}

fn two_cell(a: u32, b: u32) -> IrqSpec {
    IrqSpec {
        cells: [a, b, 0],
        count: 2,
    }
}

fn header_field(blob: &[u8], index: usize) -> u32 {
    be32(blob, index * 4).unwrap()
}

fn set_header_field(blob: &mut [u8], index: usize, value: u32) {
    blob[index * 4..index * 4 + 4].copy_from_slice(&value.to_be_bytes());
}

/// A QEMU tree without its zero padding: totalsize cut to the end of the strings.
fn compact(blob: &[u8]) -> Vec<u8> {
    let end = (header_field(blob, 3) + header_field(blob, 8)) as usize;
    let mut out = blob[..end].to_vec();
    set_header_field(&mut out, 1, end as u32);
    out
}

fn assert_virt_common(m: &MachineInfo) {
    assert_eq!(m.model, "linux,dummy-virt");
    assert_eq!(
        m.uart,
        Some(Uart {
            region: region(0x0900_0000, 0x1000),
            kind: UartKind::Pl011,
            irq: Some(gic(0, 1, 4)),
        })
    );
    assert_eq!(m.uart.unwrap().irq.unwrap().gic_intid(), Some(33));
    assert!(m.reserved.is_empty());
    assert_eq!(m.bootargs, None);
    let timer = m.timer.as_ref().unwrap();
    let intids: Vec<_> = timer.interrupts.iter().map(|i| i.gic_intid()).collect();
    assert_eq!(intids, [Some(29), Some(30), Some(27), Some(26)]);
    assert_eq!(timer.frequency, None);
    for (i, cpu) in m.cpus.iter().enumerate() {
        assert_eq!(cpu.mpidr, i as u64);
        assert_eq!(cpu.enable, EnableMethod::Psci);
    }
}

/// Builds device trees for tests.
#[derive(Default)]
struct Builder {
    structure: Vec<u8>,
    strings: Vec<u8>,
    reservations: Vec<(u64, u64)>,
}

impl Builder {
    fn token(&mut self, token: u32) -> &mut Self {
        self.structure.extend(token.to_be_bytes());
        self
    }

    fn pad(&mut self) {
        while !self.structure.len().is_multiple_of(4) {
            self.structure.push(0);
        }
    }

    fn begin(&mut self, name: &str) -> &mut Self {
        self.token(FDT_BEGIN_NODE);
        self.structure.extend(name.as_bytes());
        self.structure.push(0);
        self.pad();
        self
    }

    fn end(&mut self) -> &mut Self {
        self.token(FDT_END_NODE)
    }

    fn nop(&mut self) -> &mut Self {
        self.token(FDT_NOP)
    }

    fn name_offset(&mut self, name: &str) -> u32 {
        let mut wanted = name.as_bytes().to_vec();
        wanted.push(0);
        if let Some(at) = self
            .strings
            .windows(wanted.len())
            .position(|w| w == wanted.as_slice())
        {
            return at as u32;
        }
        let at = self.strings.len() as u32;
        self.strings.extend(wanted);
        at
    }

    fn prop(&mut self, name: &str, value: &[u8]) -> &mut Self {
        let nameoff = self.name_offset(name);
        self.token(FDT_PROP);
        self.structure.extend((value.len() as u32).to_be_bytes());
        self.structure.extend(nameoff.to_be_bytes());
        self.structure.extend(value);
        self.pad();
        self
    }

    fn cells(&mut self, name: &str, cells: &[u32]) -> &mut Self {
        let bytes: Vec<u8> = cells.iter().flat_map(|c| c.to_be_bytes()).collect();
        self.prop(name, &bytes)
    }

    fn string(&mut self, name: &str, value: &str) -> &mut Self {
        let mut bytes = value.as_bytes().to_vec();
        bytes.push(0);
        self.prop(name, &bytes)
    }

    fn reserve(&mut self, base: u64, size: u64) -> &mut Self {
        self.reservations.push((base, size));
        self
    }

    fn build(&self) -> Vec<u8> {
        self.build_version(17)
    }

    fn build_version(&self, version: u32) -> Vec<u8> {
        let mut blob = vec![0u8; HEADER_SIZE];
        for &(base, size) in self.reservations.iter().chain([(0, 0)].iter()) {
            blob.extend(base.to_be_bytes());
            blob.extend(size.to_be_bytes());
        }
        let struct_offset = blob.len();
        blob.extend(&self.structure);
        blob.extend(FDT_END.to_be_bytes());
        let struct_size = blob.len() - struct_offset;
        let strings_offset = blob.len();
        blob.extend(&self.strings);
        let fields = [
            MAGIC,
            blob.len() as u32,
            struct_offset as u32,
            strings_offset as u32,
            HEADER_SIZE as u32,
            version,
            16,
            0,
            self.strings.len() as u32,
            if version >= 17 { struct_size as u32 } else { 0 },
        ];
        for (i, f) in fields.into_iter().enumerate() {
            set_header_field(&mut blob, i, f);
        }
        blob
    }
}

/// A board with a bus behind `ranges`, aliases, a disabled PL011, an untranslatable
/// PL011, and a mini UART named by `stdout-path`.
fn board(stdout: &str, nops: bool) -> Builder {
    let mut b = Builder::default();
    let nop = |b: &mut Builder| {
        if nops {
            b.nop();
        }
    };
    nop(&mut b);
    b.reserve(0x1000, 0x2000).reserve(0x8000, 0);
    b.begin("")
        .cells("#address-cells", &[1])
        .cells("#size-cells", &[1]);
    nop(&mut b);
    b.string("model", "Test Board")
        .cells("interrupt-parent", &[1]);
    nop(&mut b);
    b.begin("aliases")
        .string("serial0", "/soc/serial@7e201000")
        .string("serial1", "/soc/serial@7e215040")
        .string("loop", "loop")
        .string("soc", "/soc")
        .end();
    nop(&mut b);
    b.begin("chosen")
        .string("stdout-path", stdout)
        .string("bootargs", "init=\"help\" seed=7")
        .end();
    b.begin("memory@0")
        .string("device_type", "memory")
        .cells("reg", &[0, 0x1000_0000, 0x2000_0000, 0, 0x3000_0000, 0x100])
        .end();
    b.begin("reserved-memory")
        .cells("#address-cells", &[1])
        .cells("#size-cells", &[1])
        .prop("ranges", &[]);
    nop(&mut b);
    b.begin("fw@100").cells("reg", &[0x100, 0x200]).end();
    nop(&mut b);
    b.begin("off@400")
        .cells("reg", &[0x400, 0x200])
        .string("status", "disabled")
        .end()
        .begin("cma")
        .cells("size", &[0x40_0000])
        .end()
        .end();
    b.begin("soc")
        .string("compatible", "simple-bus")
        .cells("#address-cells", &[1])
        .cells("#size-cells", &[1])
        .cells("ranges", &[0x7e00_0000, 0x3f00_0000, 0x100_0000]);
    b.begin("serial@7e201000")
        .prop("compatible", b"arm,pl011\0arm,primecell\0")
        .cells("reg", &[0x7e20_1000, 0x200])
        .cells("interrupts", &[0, 5, 4])
        .string("status", "disabled")
        .end();
    nop(&mut b);
    b.begin("serial@7e215040")
        .string("compatible", "brcm,bcm2835-aux-uart")
        .cells("reg", &[0x7e21_5040, 0x40])
        .cells("interrupts", &[0, 0x5d, 4])
        .string("status", "okay")
        .end()
        .begin("intc@7e001000")
        .string("compatible", "arm,gic-400")
        .cells("reg", &[0x7e00_1000, 0x1000, 0x7e00_2000, 0x2000])
        .cells("#interrupt-cells", &[3])
        .prop("interrupt-controller", &[])
        .cells("phandle", &[1])
        .end()
        .begin("nobus")
        .cells("#address-cells", &[1])
        .cells("#size-cells", &[1])
        .begin("serial@0")
        .string("compatible", "arm,pl011")
        .cells("reg", &[0, 0x1000])
        .end()
        .end();
    nop(&mut b);
    b.end();
    b.begin("psci")
        .prop("compatible", b"arm,psci-0.2\0arm,psci\0")
        .string("method", "smc")
        .end()
        .begin("timer")
        .string("compatible", "arm,armv8-timer")
        .cells("interrupts", &[1, 13, 8, 1, 14, 8, 1, 11, 8, 1, 10, 8])
        .cells("clock-frequency", &[19_200_000])
        .end()
        .begin("cpus")
        .cells("#address-cells", &[2])
        .cells("#size-cells", &[0])
        .begin("cpu@0")
        .cells("reg", &[0, 0])
        .string("enable-method", "psci")
        .end()
        .begin("cpu@100")
        .cells("reg", &[0, 0x100])
        .string("enable-method", "spin-table")
        .cells("cpu-release-addr", &[0, 0xd8])
        .end()
        .begin("cpu@200")
        .cells("reg", &[0, 0x200])
        .end()
        .begin("cpu@300")
        .cells("reg", &[0, 0x300])
        .string("enable-method", "spin-table")
        .end()
        .begin("cpu-map")
        .end()
        .end();
    nop(&mut b);
    b.end();
    nop(&mut b);
    b
}

fn expected_board() -> MachineInfo {
    let mini = Some(Uart {
        region: region(0x3f21_5040, 0x40),
        kind: UartKind::Bcm2835Aux,
        irq: Some(gic(0, 0x5d, 4)),
    });
    MachineInfo {
        model: "Test Board".into(),
        memory: vec![region(0, 0x1000_0000), region(0x3000_0000, 0x100)],
        reserved: vec![region(0x1000, 0x2000), region(0x100, 0x200)],
        uart: mini,
        mini_uart: mini,
        interrupt_controller: Some(InterruptController::GicV2 {
            distributor: region(0x3f00_1000, 0x1000),
            cpu_interface: region(0x3f00_2000, 0x2000),
        }),
        timer: Some(Timer {
            interrupts: vec![gic(1, 13, 8), gic(1, 14, 8), gic(1, 11, 8), gic(1, 10, 8)],
            frequency: Some(19_200_000),
        }),
        psci: Some(PsciConduit::Smc),
        cpus: vec![
            Cpu {
                mpidr: 0,
                enable: EnableMethod::Psci,
            },
            Cpu {
                mpidr: 0x100,
                enable: EnableMethod::SpinTable { release_addr: 0xd8 },
            },
            Cpu {
                mpidr: 0x200,
                enable: EnableMethod::None,
            },
            Cpu {
                mpidr: 0x300,
                enable: EnableMethod::None,
            },
        ],
        pm_watchdog: None,
        bootargs: Some("init=\"help\" seed=7".into()),
    }
}

fn minimal() -> Builder {
    let mut b = Builder::default();
    b.begin("").string("model", "m").end();
    b
}

fn structure_error(blob: &[u8]) -> StructureError {
    match validate(blob) {
        Err(DtbError::Structure { problem, .. }) => problem,
        other => panic!("expected a structure error, got {other:?}"),
    }
}

mod hostile;
mod real_trees;
mod synthetic;
