//! What happens on an exception: system calls, stack growth and overflow, thread faults,
//! interrupts, and the reports for everything unexpected.
//!
//! Entered from `vectors.s` through `exception_dispatch` on the exception stack. A fault
//! that belongs to one thread ends that thread with a report and the kernel carries on; a
//! fault in the kernel's own exception context, or in a thread that holds locks, is a panic.
//! Calls `stack` (the fault path), `sched` (syscalls, termination), `irq` and `backtrace`.
use aarch64_cpu::registers::{Readable, ESR_EL1, FAR_EL1};

use crate::arch::trap::{ExceptionClass, Syndrome, TrapFrame};
use crate::sched::{self, Thread, ThreadKind};
use crate::stack::{self, FaultOutcome};
use crate::sync::IrqMutex;

/// The last fatal fault of a thread: (tid, ESR, FAR), for tests that provoke one. One record
/// under one lock, so faults on several CPUs at once never mix one thread's id with another's
/// ESR or FAR. Held only for the copy, with IRQs masked, by code that cannot fault.
static LAST_FAULT: IrqMutex<(u64, u64, u64)> = IrqMutex::new((0, 0, 0));

/// The thread id, ESR and FAR of the last thread that was ended by a fault, as one record.
pub fn last_fault() -> (u64, u64, u64) {
    *LAST_FAULT.lock()
}

/// Vector kinds, as `vectors.s` numbers them.
mod kind {
    pub const THREAD_SYNC: u64 = 0;
    pub const THREAD_IRQ: u64 = 1;
}

/// Called by every vector with the frame it pushed. Kept frameless for the system-call path:
/// everything that reports or panics is out of line, so a system call is a few compares
/// and a tail call to `sched::on_syscall`.
#[unsafe(no_mangle)]
extern "C" fn exception_dispatch(frame: &mut TrapFrame, kind: u64) {
    if crate::kernel::stop::is_stopping() {
        crate::kernel::stop::on_exception_while_stopping();
    }
    match kind {
        kind::THREAD_SYNC => thread_sync(frame),
        kind::THREAD_IRQ => crate::kernel::irq::dispatch(frame),
        _ => unexpected_exception(frame, kind),
    }
}

/// Any vector but a thread's synchronous exception and IRQ: a bug in the kernel.
#[cold]
#[inline(never)]
fn unexpected_exception(frame: &mut TrapFrame, kind: u64) -> ! {
    let syndrome = Syndrome(ESR_EL1.get());
    let far = FAR_EL1.get();
    panic!(
        "unexpected exception (vector {}: {}) in kernel context\n  {}\n  far={:#x}\n{}",
        kind,
        vector_name(kind),
        syndrome,
        far,
        frame
    );
}

fn vector_name(kind: u64) -> &'static str {
    match kind {
        0 => "synchronous, thread",
        1 => "IRQ, thread",
        2 => "FIQ, thread",
        3 => "SError, thread",
        4 => "synchronous, exception stack",
        5 => "IRQ, exception stack",
        6 => "FIQ, exception stack",
        7 => "SError, exception stack",
        _ => "from a lower exception level",
    }
}

#[inline(always)]
fn thread_sync(frame: &mut TrapFrame) {
    let syndrome = Syndrome(ESR_EL1.get());
    match syndrome.class() {
        #[cfg(feature = "test-hooks")]
        ExceptionClass::Svc
            if syndrome.svc_imm() == sched::syscall::TEST_EXHAUST_EXCEPTION_STACK =>
        {
            exhaust_exception_stack(frame.x[0]);
        }
        ExceptionClass::Svc => sched::on_syscall(frame, syndrome.svc_imm()),
        ExceptionClass::DataAbort => data_abort(frame, syndrome),
        _ => thread_fault(frame, syndrome),
    }
}

/// Any other synchronous exception of a thread: a fault that ends it.
#[cold]
#[inline(never)]
fn thread_fault(frame: &mut TrapFrame, syndrome: Syndrome) {
    let far = FAR_EL1.get();
    report_fault(frame, syndrome, far);
    end_thread(frame, "fault", syndrome, far);
}

/// A data abort from a thread that the fast path (`stack::fast`) left to the slow path. Kept
/// out of line so that system calls, which share `thread_sync`, do not pay for its frame.
#[inline(never)]
fn data_abort(frame: &mut TrapFrame, syndrome: Syndrome) {
    let far = FAR_EL1.get();
    match stack::on_fault(frame, syndrome, far) {
        FaultOutcome::Grown => {}
        FaultOutcome::Overflow => {
            let t = current();
            crate::kernel::console::write_fmt_emergency(format_args!(
                "OVERFLOW tid={} name={} far={:#x} sp={:#x} elr={:#x}\n",
                t.tid,
                t.name(),
                far,
                frame.sp_el0,
                frame.elr
            ));
            end_thread(frame, "stack overflow", syndrome, far);
        }
        FaultOutcome::Miss => {
            // The same report as an overflow (the stack ran out of what was mapped), with
            // why: this strategy grows stacks only ahead of use.
            let t = current();
            crate::kernel::console::write_fmt_emergency(format_args!(
                "OVERFLOW tid={} name={} far={:#x} sp={:#x} elr={:#x} miss=1 strategy={}\n",
                t.tid,
                t.name(),
                far,
                frame.sp_el0,
                frame.elr,
                stack::strategy::current()
            ));
            end_thread(frame, "stack not grown in time", syndrome, far);
        }
        FaultOutcome::Wait => sched::wait_for_reserve(frame),
        FaultOutcome::OutOfMemory => {
            let t = current();
            crate::kernel::console::write_fmt_emergency(format_args!(
                "OOM tid={} name={}: out of memory growing its stack (far={:#x} elr={:#x})\n",
                t.tid,
                t.name(),
                far,
                frame.elr
            ));
            end_thread(frame, "out of memory", syndrome, far);
        }
        FaultOutcome::NotStack if crate::arch::probe::fixup(frame) => {}
        FaultOutcome::NotStack => {
            if let Some((tid, name)) = parked_owner(far) {
                let t = current();
                let name = core::str::from_utf8(&name).unwrap_or("?");
                let name = name.trim_end_matches('\0');
                crate::kernel::console::write_fmt_emergency(format_args!(
                    "PARKED tid={} name={} far={:#x} elr={:#x}: touched the parked stack of thread {} ({})\n",
                    t.tid, t.name(), far, frame.elr, tid, name
                ));
                end_thread(frame, "touched a parked stack", syndrome, far);
            } else {
                report_fault(frame, syndrome, far);
                end_thread(frame, "bad access", syndrome, far);
            }
        }
    }
}

/// The thread (tid, name) whose parked stack reservation holds `far`, if any: a touch of a
/// parked stack by another thread is a bug in that thread (only stacks nobody else touches are
/// parked, see `stack::park`), reported as such rather than as a plain bad access.
fn parked_owner(far: u64) -> Option<(u64, [u8; 15])> {
    use crate::mm::layout::{STACK_ARENA_BASE, STACK_ARENA_SIZE};
    if !(STACK_ARENA_BASE..STACK_ARENA_BASE + STACK_ARENA_SIZE).contains(&far) {
        return None;
    }
    let offset = far - STACK_ARENA_BASE;
    let stride = stack::arena::stride();
    if offset % stride < stack::config().guard as u64 {
        return None;
    }
    let slot = u32::try_from(offset / stride).ok()?;
    match sched::stack_owner(slot)? {
        (tid, name, true) => Some((tid, name)),
        _ => None,
    }
}

fn current() -> &'static Thread {
    // SAFETY: a thread was running when it trapped; its control block outlives this handler.
    unsafe { &*sched::current_ptr() }
}

fn report_fault(frame: &TrapFrame, syndrome: Syndrome, far: u64) {
    let t = current();
    crate::kernel::console::write_fmt_emergency(format_args!(
        "FAULT tid={} name={} far={:#x} sp={:#x} elr={:#x}\n  {}\n{}\n",
        t.tid,
        t.name(),
        far,
        frame.sp_el0,
        frame.elr,
        syndrome,
        frame
    ));
}

/// Terminates the current thread after a fatal fault of its own, or panics if that cannot
/// be done safely (it holds locks, or it is a CPU's idle thread).
fn end_thread(frame: &mut TrapFrame, what: &str, syndrome: Syndrome, far: u64) {
    let t = current();
    *LAST_FAULT.lock() = (t.tid, syndrome.0, far);
    crate::kernel::backtrace::print_within(
        frame.fp(),
        t.stack.mapped_bottom(),
        t.stack.top(),
        Some(frame.elr),
    );
    let locks = crate::sync::locks_held();
    if t.essential {
        panic!(
            "{} in thread {} ({}), one the kernel cannot do without\n  {}\n  far={:#x}\n{}",
            what,
            t.tid,
            t.name(),
            syndrome,
            far,
            frame
        );
    }
    if locks > 0 || t.kind == ThreadKind::Idle {
        panic!(
            "{} in thread {} ({}) holding {} lock(s): cannot end it safely\n  {}\n  far={:#x}\n{}",
            what,
            t.tid,
            t.name(),
            locks,
            syndrome,
            far,
            frame
        );
    }
    crate::kernel::console::write_fmt_emergency(format_args!(
        "thread {} ({}) terminated: {}\n",
        t.tid,
        t.name(),
        what
    ));
    sched::terminate_current(frame);
}

/// Test hook: recurses on the exception stack until it runs into its guard page, which
/// must end in the exception-stack overflow report (see `vectors.s`), never a hang. Only in
/// kernels built with the `test-hooks` feature (the test kernels).
#[cfg(feature = "test-hooks")]
#[inline(never)]
fn exhaust_exception_stack(depth: u64) -> u64 {
    let mut frame = [0u8; 512];
    core::hint::black_box(&mut frame);
    frame[0] = depth as u8;
    // Bounded only so the compiler accepts it: 2^20 frames are far beyond any stack.
    if depth > 1 << 20 {
        return depth;
    }
    exhaust_exception_stack(depth + 1) + frame[(depth % 512) as usize] as u64
}

/// The exception stack ran out (called by `vectors.s` on the emergency stack).
#[unsafe(no_mangle)]
extern "C" fn exception_stack_overflowed(x0: u64, esr: u64, far: u64, elr: u64) -> ! {
    let _ = x0;
    panic!(
        "exception stack overflow on cpu {}: a nested exception found no room for its frame\n  {}\n  far={:#x} elr={:#x}",
        crate::percpu::cpu_index(),
        Syndrome(esr),
        far,
        elr
    );
}
