//! Interrupt routing: which controller, which interrupt IDs mean what, and dispatch.
//!
//! Owns the registered interrupt controller and the IDs of the timer, UART and reschedule
//! interrupts. Calls `drivers::gic` (acknowledge/EOI/SGIs), `sched` (tick, reschedule) and
//! `console` (input).
use core::sync::atomic::{AtomicU32, Ordering};

use crate::arch::trap::TrapFrame;
use crate::drivers::gic::{InterruptController, SgiTarget};

/// The SGI another CPU sends to make an idle CPU look at its run queue.
pub const SGI_RESCHEDULE: u32 = 1;

static CONTROLLER: crate::sync::Once<&'static dyn InterruptController> = crate::sync::Once::new();
static TIMER_INTID: AtomicU32 = AtomicU32::new(u32::MAX);
static UART_INTID: AtomicU32 = AtomicU32::new(u32::MAX);

/// Registers the interrupt controller and the timer and UART interrupt IDs.
pub fn init(controller: &'static dyn InterruptController, timer: u32, uart: Option<u32>) {
    CONTROLLER.call_once(|| controller);
    TIMER_INTID.store(timer, Ordering::Relaxed);
    if let Some(u) = uart {
        UART_INTID.store(u, Ordering::Relaxed);
        controller.enable(u);
    }
    crate::sched::set_kick(kick);
}

/// Per-CPU set-up: the controller's CPU interface and this CPU's timer interrupt.
pub fn init_this_cpu() {
    if let Some(c) = CONTROLLER.get() {
        c.init_cpu();
        if !c.cpu_interface_ready() {
            panic!(
                "cpu {}: the interrupt controller's CPU interface did not come up (no redistributor, or GIC system registers unusable)",
                crate::percpu::cpu_index()
            );
        }
        c.enable(TIMER_INTID.load(Ordering::Relaxed));
    }
}

/// The interrupt controller, once registered.
pub fn controller() -> Option<&'static dyn InterruptController> {
    CONTROLLER.get().copied()
}

fn kick(cpu: usize) {
    if let Some(c) = CONTROLLER.get() {
        let mpidr = crate::percpu::get(cpu).mpidr.load(Ordering::Relaxed);
        c.send_sgi(SGI_RESCHEDULE, SgiTarget::Cpu(mpidr));
    }
}

/// Handles every pending interrupt. `frame` is the interrupted thread's and may be switched.
pub fn dispatch(frame: &mut TrapFrame) {
    if crate::kernel::stop::is_stopping() {
        // Another CPU panicked and sent the SGI that stops this one.
        crate::kernel::stop::park();
    }
    let Some(c) = CONTROLLER.get() else { return };
    while let Some(intid) = c.acknowledge() {
        // EOI first: a handler may switch threads, and the next interrupt must not wait for
        // the switched-out one.
        c.end_of_interrupt(intid);
        if intid == TIMER_INTID.load(Ordering::Relaxed) {
            crate::sched::on_timer_tick(frame);
        } else if intid == UART_INTID.load(Ordering::Relaxed) {
            crate::kernel::console::on_input_interrupt();
        } else if intid == SGI_RESCHEDULE {
            crate::sched::on_reschedule(frame);
        }
    }
}
