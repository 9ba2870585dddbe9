//! Bringing CPUs into the scheduler: each CPU's idle thread, the online set, and the first
//! switch into a thread.
use super::*;

/// Registers CPU `cpu`'s idle thread; the CPU counts as online from now on.
pub fn add_cpu(cpu: usize) -> Result<(), SpawnError> {
    // Fixed: the threads the kernel cannot do without must run even when no page can be
    // found for a dynamic stack's reserve.
    // Named after its CPU, so `ps` does not mix it up with `idle` workload threads.
    let mut name = NameBuf {
        bytes: [0; 15],
        len: 0,
    };
    let _ = core::fmt::Write::write_fmt(&mut name, format_args!("cpu{cpu}-idle"));
    let tid = spawn_thread(
        // ASCII only: cut anywhere, still UTF-8.
        core::str::from_utf8(&name.bytes[..name.len]).unwrap_or("idle"),
        ThreadKind::Idle,
        StackPolicy::Fixed,
        idle_loop,
        cpu,
        None,
        None,
        true,
        None,
    )?;
    let t = table::with_tid(tid, |t| t).expect("idle thread just inserted");
    // SAFETY: just created, not queued anywhere.
    unsafe { (*t).cpu.store(cpu as u32, Ordering::Relaxed) };
    IDLE[cpu].store(t, Ordering::Release);
    Ok(())
}

/// A thread name formatted on the stack (bring-up allocates nothing it need not); cut at
/// the 15 bytes a control block keeps.
struct NameBuf {
    bytes: [u8; 15],
    len: usize,
}

impl core::fmt::Write for NameBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Counts this CPU as online: new threads may be queued on it from now on (it runs them
/// once it calls [`start_this_cpu`]).
pub fn set_online() {
    let cpu = cpu_index();
    if !ONLINE[cpu].swap(true, Ordering::AcqRel) {
        ONLINE_COUNT.fetch_add(1, Ordering::AcqRel);
    }
}

/// Number of CPUs running the scheduler.
pub fn online_count() -> usize {
    ONLINE_COUNT.load(Ordering::Relaxed)
}

/// Whether CPU `cpu` runs the scheduler.
pub fn is_online(cpu: usize) -> bool {
    ONLINE[cpu].load(Ordering::Relaxed)
}

pub(super) fn idle_loop(_cpu: usize) {
    loop {
        aarch64_cpu::asm::wfi();
    }
}

/// Starts scheduling on this CPU: runs the first ready thread (or idle). Never returns.
/// Called with IRQs masked, on the boot stack or the CPU's initial stack.
pub fn start_this_cpu() -> ! {
    let cpu = cpu_index();
    let mut frame = TrapFrame::default();
    let q = QUEUES[cpu].lock();
    switch_to_next(&mut frame, cpu, q);
    let top = crate::mm::layout::exception_stack_top(cpu);
    // The guard from `lock()` restored DAIF to masked; the first thread's SPSR unmasks.
    extern "C" {
        fn enter_first_frame(frame: *const TrapFrame, exception_stack_top: u64) -> !;
    }
    // SAFETY: the frame is a valid thread context and the exception stack is mapped.
    unsafe { enter_first_frame(&frame, top) }
}
