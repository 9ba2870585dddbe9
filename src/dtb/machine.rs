//! What the kernel wants to know about the machine ([`MachineInfo`] and its parts), read
//! from the [`Tree`]: memory, UARTs, the interrupt controller, timer, PSCI, CPUs, bootargs.
use super::*;

/// A range of CPU physical addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First address.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

/// Which UART hardware a [`Uart`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UartKind {
    /// ARM PrimeCell PL011 (`arm,pl011`).
    Pl011,
    /// The BCM2835 auxiliary "mini UART" (`brcm,bcm2835-aux-uart`).
    Bcm2835Aux,
}

/// The console UART.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uart {
    /// Its register block.
    pub region: Region,
    /// Which hardware it is.
    pub kind: UartKind,
    /// Its first interrupt, in its interrupt parent's format.
    pub irq: Option<IrqSpec>,
}

/// The primary interrupt controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptController {
    /// A GICv2 (GIC-400, Cortex-A15 GIC and the like).
    GicV2 {
        /// The distributor (GICD).
        distributor: Region,
        /// The CPU interface (GICC).
        cpu_interface: Region,
    },
    /// A GICv3.
    GicV3 {
        /// The distributor (GICD).
        distributor: Region,
        /// The first redistributor region (GICR).
        redistributors: Region,
    },
    /// The BCM2836/7 per-core local controller (Raspberry Pi 2 and 3).
    Bcm2836 {
        /// The local controller (`brcm,bcm2836-l1-intc`).
        local: Region,
        /// The peripheral controller behind it (`brcm,bcm2836-armctrl-ic`), if present.
        peripheral: Option<Region>,
    },
}

/// The ARM generic timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    /// Its interrupts in DT order: secure physical, non-secure physical, virtual, hypervisor.
    pub interrupts: Vec<IrqSpec>,
    /// The `clock-frequency` property, present only where firmware fails to set `CNTFRQ_EL0`.
    pub frequency: Option<u32>,
}

/// One interrupt specifier, in the format of its interrupt parent (`#interrupt-cells`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqSpec {
    /// The cells; those at `count` and beyond are zero.
    pub cells: [u32; 3],
    /// How many cells are used (1 to 3).
    pub count: u8,
}

impl IrqSpec {
    /// The GIC interrupt ID of a three-cell GIC specifier: SPI n is 32 + n, PPI n is 16 + n.
    /// `None` for other formats (such as the BCM2836's two cells) and out-of-range numbers.
    pub fn gic_intid(&self) -> Option<u32> {
        if self.count != 3 {
            return None;
        }
        let [kind, number, _] = self.cells;
        match kind {
            // SPI IDs run 32..1020; 1020..1024 are special.
            0 if number < 988 => Some(32 + number),
            1 if number < 16 => Some(16 + number),
            _ => None,
        }
    }
}

/// How to call PSCI firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsciConduit {
    /// `hvc #0`: the firmware is a hypervisor at EL2 (or QEMU emulating one).
    Hvc,
    /// `smc #0`: the firmware is the secure monitor at EL3 (or QEMU emulating one).
    Smc,
}

/// How a secondary CPU is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnableMethod {
    /// PSCI `CPU_ON`.
    Psci,
    /// Write the entry point to `release_addr`, then `SEV`.
    SpinTable {
        /// Physical address the CPU polls.
        release_addr: u64,
    },
    /// No method this kernel knows.
    None,
}

/// One CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpu {
    /// Its MPIDR affinity fields, from `reg`.
    pub mpidr: u64,
    /// How to start it.
    pub enable: EnableMethod,
}

/// What the kernel needs to know about the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineInfo {
    /// The root `model` (else its first `compatible`, else empty).
    pub model: String,
    /// Usable RAM; entries of size 0 are dropped (the Pi trees leave them for firmware).
    pub memory: Vec<Region>,
    /// `/memreserve/` entries, then enabled `/reserved-memory` children with `reg`; entries
    /// of size 0 are dropped.
    pub reserved: Vec<Region>,
    /// The console. Because the kernel's console driver is the PL011, a PL011 wins: the
    /// `/chosen` `stdout-path` node if it is an enabled PL011, else the first enabled PL011,
    /// else the `stdout-path` node if it is an enabled mini UART, else the first enabled
    /// mini UART. (The Pi trees point `stdout-path` at the mini UART; QEMU's `raspi3b` and
    /// `raspi4b` connect the first serial port to the PL011.)
    pub uart: Option<Uart>,
    /// The BCM2835 mini UART, whether or not a PL011 won [`MachineInfo::uart`]: the
    /// `/chosen` `stdout-path` node if it is an enabled mini UART, else the first enabled
    /// one. The console when the command line says `console=mini`.
    pub mini_uart: Option<Uart>,
    /// The primary interrupt controller: a GIC (the root's `interrupt-parent` if it is
    /// one, else the first enabled one), else the BCM2836 local controller.
    pub interrupt_controller: Option<InterruptController>,
    /// The first enabled `arm,armv8-timer` or `arm,armv7-timer` node.
    pub timer: Option<Timer>,
    /// The PSCI conduit, from an enabled `arm,psci-1.0`, `arm,psci-0.2` or `arm,psci` node.
    pub psci: Option<PsciConduit>,
    /// The `/cpus/cpu@*` nodes with a readable `reg`, in DT order.
    pub cpus: Vec<Cpu>,
    /// The BCM2835 power-management watchdog (`brcm,bcm2835-pm-wdt`, the Raspberry Pi's),
    /// which powers the machine off where there is no PSCI.
    pub pm_watchdog: Option<Region>,
    /// `/chosen` `bootargs` (invalid UTF-8 replaced), if present.
    pub bootargs: Option<String>,
}

impl<'b, 'a> Tree<'b, 'a> {
    pub(super) fn model(&self) -> String {
        self.prop_str(ROOT, "model")
            .or_else(|| self.prop_str(ROOT, "compatible"))
            .unwrap_or("")
            .into()
    }

    pub(super) fn memory(&self) -> Vec<Region> {
        self.children(ROOT)
            .filter(|&c| {
                (self.prop_str(c, "device_type") == Some("memory")
                    || base_name(self.name(c)) == "memory")
                    && self.is_enabled(c)
            })
            .flat_map(|c| self.reg(c))
            .filter_map(|r| r.and_then(usable))
            .collect()
    }

    pub(super) fn reserved_memory(&self) -> Vec<Region> {
        let Some(node) = self.child_named(ROOT, "reserved-memory") else {
            return Vec::new();
        };
        self.children(node)
            .filter(|&c| self.is_enabled(c))
            .flat_map(|c| self.reg(c))
            .filter_map(|r| r.and_then(usable))
            .collect()
    }

    fn uart_at(&self, i: usize, kind: UartKind) -> Option<Uart> {
        let compatible = match kind {
            UartKind::Pl011 => "arm,pl011",
            UartKind::Bcm2835Aux => "brcm,bcm2835-aux-uart",
        };
        if !self.is_compatible(i, &[compatible]) || !self.is_enabled(i) {
            return None;
        }
        Some(Uart {
            region: self.region(i, 0)?,
            kind,
            irq: self.interrupts(i).first().copied(),
        })
    }

    pub(super) fn uart(&self) -> Option<Uart> {
        [UartKind::Pl011, UartKind::Bcm2835Aux]
            .into_iter()
            .find_map(|kind| self.uart_of(kind))
    }

    /// The `stdout-path` node if it is an enabled UART of `kind`, else the first enabled one.
    pub(super) fn uart_of(&self, kind: UartKind) -> Option<Uart> {
        let stdout = self.child_named(ROOT, "chosen").and_then(|chosen| {
            let path = self
                .prop_str(chosen, "stdout-path")
                .or_else(|| self.prop_str(chosen, "linux,stdout-path"))?;
            self.resolve(path.split(':').next().unwrap_or(path))
        });
        stdout
            .and_then(|node| self.uart_at(node, kind))
            .or_else(|| (0..self.nodes.len()).find_map(|i| self.uart_at(i, kind)))
    }

    fn gic_at(&self, i: usize) -> Option<InterruptController> {
        const GIC_V2: &[&str] = &[
            "arm,gic-400",
            "arm,cortex-a15-gic",
            "arm,cortex-a9-gic",
            "arm,cortex-a7-gic",
            "arm,cortex-a5-gic",
            "arm,arm11mp-gic",
            "arm,pl390",
            "arm,gic-v2",
        ];
        if !self.is_enabled(i) {
            return None;
        }
        let first = self.region(i, 0)?;
        let second = self.region(i, 1)?;
        if self.is_compatible(i, &["arm,gic-v3"]) {
            Some(InterruptController::GicV3 {
                distributor: first,
                redistributors: second,
            })
        } else if self.is_compatible(i, GIC_V2) {
            Some(InterruptController::GicV2 {
                distributor: first,
                cpu_interface: second,
            })
        } else {
            None
        }
    }

    pub(super) fn interrupt_controller(&self) -> Option<InterruptController> {
        let gic = self
            .prop_u32(ROOT, "interrupt-parent")
            .and_then(|p| self.by_phandle(p))
            .and_then(|i| self.gic_at(i))
            .or_else(|| (0..self.nodes.len()).find_map(|i| self.gic_at(i)));
        gic.or_else(|| {
            let local = self
                .compatible_nodes(&["brcm,bcm2836-l1-intc"])
                .find_map(|i| self.region(i, 0))?;
            let peripheral = self
                .compatible_nodes(&["brcm,bcm2836-armctrl-ic"])
                .find_map(|i| self.region(i, 0));
            Some(InterruptController::Bcm2836 { local, peripheral })
        })
    }

    pub(super) fn timer(&self) -> Option<Timer> {
        let node = self
            .compatible_nodes(&["arm,armv8-timer", "arm,armv7-timer"])
            .next()?;
        Some(Timer {
            interrupts: self.interrupts(node),
            frequency: self.prop_u32(node, "clock-frequency"),
        })
    }

    pub(super) fn psci(&self) -> Option<PsciConduit> {
        self.compatible_nodes(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"])
            .find_map(|i| match self.prop_str(i, "method")? {
                "hvc" => Some(PsciConduit::Hvc),
                "smc" => Some(PsciConduit::Smc),
                _ => None,
            })
    }

    pub(super) fn pm_watchdog(&self) -> Option<Region> {
        self.compatible_nodes(&["brcm,bcm2835-pm-wdt"])
            .find(|&i| self.is_enabled(i))
            .and_then(|i| self.region(i, 0))
    }

    pub(super) fn cpus(&self) -> Vec<Cpu> {
        let Some(cpus) = self.child_named(ROOT, "cpus") else {
            return Vec::new();
        };
        let Some(address_cells) = self.address_cells(cpus).filter(|&n| n > 0) else {
            return Vec::new();
        };
        self.children(cpus)
            .filter(|&c| base_name(self.name(c)) == "cpu")
            .filter_map(|c| {
                let mpidr = cells_value(Cells(self.prop(c, "reg")?).take(address_cells)?)?;
                let enable = match self.prop_str(c, "enable-method") {
                    Some("psci") => EnableMethod::Psci,
                    Some("spin-table") => self
                        .prop(c, "cpu-release-addr")
                        .filter(|v| v.len() == 4 || v.len() == 8)
                        .and_then(cells_value)
                        .map_or(EnableMethod::None, |release_addr| EnableMethod::SpinTable {
                            release_addr,
                        }),
                    _ => EnableMethod::None,
                };
                Some(Cpu { mpidr, enable })
            })
            .collect()
    }

    pub(super) fn bootargs(&self) -> Option<String> {
        let chosen = self.child_named(ROOT, "chosen")?;
        let value = self.prop(chosen, "bootargs")?;
        let text = value.split(|&b| b == 0).next().unwrap_or_default();
        Some(String::from_utf8_lossy(text).into_owned())
    }
}
