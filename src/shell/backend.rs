//! The kernel's side of the shell: [`shell::Backend`] implemented with the real scheduler,
//! stacks and memory, and the main function of the dynstack binary.
//!
//! Owns nothing but the glue; calls `sched`, `stack`, `mm`, `workload` and `kernel`.
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::timer;
use crate::cmdline::StackPolicy;
use crate::shell::command::{BenchPlan, KillTarget, Profile};
use crate::shell::workload;
use crate::shell::{
    self, Backend, CpuInfo, CpuRow, MemInfo, Message, SpawnReport, StackStats, ThreadName,
    ThreadRow,
};
use crate::{kernel, sched, stack};

/// Draw number for the next workload thread (so every thread gets its own draws).
static SPAWN_INDEX: AtomicU64 = AtomicU64::new(0);

/// Prints a progress line about once a second (and at most every 10%) for long operations.
struct Progress {
    last_tick: u64,
    last_decile: u64,
}

impl Progress {
    fn new() -> Self {
        Self {
            last_tick: timer::now(),
            last_decile: 0,
        }
    }

    fn update(&mut self, out: &mut dyn Write, what: &str, done: u64, total: u64) {
        if total < 1000 {
            return;
        }
        let now = timer::now();
        let decile = done * 10 / total.max(1);
        if timer::ticks_to_ns(now - self.last_tick) >= 1_000_000_000 && decile > self.last_decile {
            let _ = writeln!(
                out,
                "  {}: {} of {} ({}%)",
                what,
                done,
                total,
                done * 100 / total.max(1)
            );
            self.last_tick = now;
            self.last_decile = decile;
        }
    }
}

/// The kernel as the shell sees it.
pub struct KernelBackend;

impl Backend for KernelBackend {
    fn mem(&self) -> MemInfo {
        let info = kernel::boot_info();
        let total_kib = info.ram_bytes / 1024;
        let free_kib = crate::mm::frame::free_pages() * 4;
        MemInfo {
            total_kib,
            free_kib,
            used_kib: total_kib.saturating_sub(free_kib),
            kernel_kib: info.image_bytes / 1024,
        }
    }

    fn cpus(&self) -> CpuInfo {
        let info = kernel::boot_info();
        let mut cpus = CpuInfo::new(sched::online_count());
        for (index, c) in info
            .machine
            .cpus
            .iter()
            .take(crate::percpu::MAX_CPUS)
            .enumerate()
        {
            cpus.push(CpuRow {
                index,
                mpidr: c.mpidr,
                state: if sched::is_online(index) {
                    "online"
                } else {
                    "offline"
                },
            });
        }
        cpus
    }

    fn threads(&self, limit: usize, row: &mut dyn FnMut(&ThreadRow)) -> usize {
        // Rows are copied out of the thread table a batch at a time into this buffer (no
        // allocation under the table lock, nor at all), then handed out with the lock
        // dropped, since `row` prints.
        const BATCH: usize = 32;
        let mut buf = [None::<ThreadRow>; BATCH];
        let mut next = 0usize;
        let mut left = limit;
        while left > 0 {
            let mut n = 0;
            let resume = sched::for_each_thread_from(next, BATCH.min(left), &mut |t| {
                buf[n] = Some(ThreadRow {
                    tid: t.tid,
                    name: ThreadName::new(t.name()),
                    state: t.state_name(),
                    cpu: Some(t.cpu.load(Ordering::Relaxed) as usize),
                    policy: t.stack.policy(),
                    mapped_kib: t.stack.mapped_bytes() / 1024,
                    high_water_kib: t.stack.high_water_bytes().div_ceil(1024),
                    grow_faults: t.stack.grow_faults() as u64,
                });
                n += 1;
            });
            for r in buf[..n].iter().flatten() {
                row(r);
            }
            left -= n;
            match resume {
                Some(slot) => next = slot,
                None => break,
            }
        }
        sched::thread_count()
    }

    fn spawn(
        &mut self,
        count: usize,
        profile: &Profile,
        policy: Option<StackPolicy>,
        out: &mut dyn Write,
    ) -> SpawnReport {
        let policy = policy.unwrap_or_else(stack::default_policy);
        let mut progress = Progress::new();
        let mut created = 0;
        let mut reason = None;
        for i in 0..count {
            let index = SPAWN_INDEX.fetch_add(1, Ordering::Relaxed) as usize;
            let (entry, arg) = workload::entry_for(profile, index);
            match sched::spawn_raw(
                workload::name_for(profile),
                sched::ThreadKind::Workload,
                policy,
                entry,
                arg,
                None,
            ) {
                Ok(_) => created += 1,
                Err(e) => {
                    // Memory may be out: the reason is written inline, not on the heap.
                    let mut text = Message::new();
                    let _ = write!(text, "{} after {} threads", e, created);
                    reason = Some(text);
                    break;
                }
            }
            progress.update(out, "spawned", i as u64 + 1, count as u64);
        }
        SpawnReport {
            requested: count,
            created,
            failed: count - created,
            reason,
        }
    }

    fn settle(&mut self, out: &mut dyn Write) -> u64 {
        let mut progress = Progress::new();
        let total = sched::unsettled() as u64;
        let mut last_left = total;
        let mut last_change = timer::now();
        loop {
            let left = sched::unsettled() as u64;
            if left == 0 {
                break;
            }
            if left != last_left {
                last_left = left;
                last_change = timer::now();
            } else if timer::ticks_to_ns(timer::now() - last_change) > 20_000_000_000 {
                let _ = writeln!(
                    out,
                    "error: {} threads made no progress for 20 s; not waiting for them",
                    left
                );
                break;
            }
            progress.update(out, "settled", total - left, total);
            sched::sleep_ms(2);
        }
        sched::resting_workload_threads() as u64
    }

    fn stacks(&self) -> StackStats {
        let s = stack::stats();
        let max_kib = stack::config().max as u64 / 1024;
        StackStats {
            threads: s.stacks,
            mapped_kib: s.mapped_pages * 4,
            fixed_equiv_kib: s.stacks * max_kib,
            grow_faults: s.grow_faults,
            overflows: s.overflows,
            oom_kills: s.oom_kills,
            trimmed_kib: s.trimmed_pages * 4,
            pt_kib: s.table_pages * 4,
            // The real figure: the pages the control blocks' slab cache holds.
            tcb_total_bytes: sched::thread_cache_stats().bytes,
            reserve_kib: s.reserve_pages * 4,
            // One 4 KiB last-level table maps 2 MiB of the arena, shared by the stacks in it.
            pt_bytes_per_thread: 4096 * stack::arena::stride() / (2 << 20),
            parked: s.park.parked,
            parked_bytes: s.park.parked_bytes,
            misses: s.misses,
            grow_ahead: s.ahead_growths,
        }
    }

    fn trim(&mut self) -> u64 {
        stack::trim_all() * 4
    }

    fn kill(&mut self, target: &KillTarget) -> Result<u64, Message> {
        match target {
            KillTarget::All => {
                let mut out = crate::kernel::console::Console;
                let mut progress = Progress::new();
                Ok(sched::kill_all(&mut |done, total| {
                    progress.update(&mut out, "killed", done as u64, total as u64)
                }))
            }
            KillTarget::Tid(tid) => sched::kill(*tid).map_err(|e| {
                let mut text = Message::new();
                let _ = write!(text, "{}", e);
                text
            }),
        }
    }

    fn bench(&mut self, plan: BenchPlan, out: &mut dyn Write) {
        crate::shell::bench::run(plan, out);
    }

    fn demo(&mut self, out: &mut dyn Write) {
        crate::shell::demo::run(self, out);
    }

    fn poweroff(&mut self, out: &mut dyn Write) {
        let _ = writeln!(out, "powering off");
        kernel::poweroff();
    }
}

/// The main function of the dynstack binary: runs the `init=` commands, then the shell.
pub fn run_shell() {
    let mut backend = KernelBackend;
    let mut out = crate::kernel::console::Console;
    let info = kernel::boot_info();
    workload::set_seed(info.args.seed);

    shell::run_init(&mut backend, &info.args.init, &mut out);
    shell::interactive(
        &mut backend,
        &mut crate::kernel::console::read_byte,
        &mut out,
    )
}
