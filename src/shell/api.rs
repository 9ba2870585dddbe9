//! The boundary between the shell and the kernel: the [`Backend`] trait and the reports it
//! returns, which the kernel implements ([`backend`] on the target) and the
//! host tests fake.
use super::*;

/// Physical memory, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemInfo {
    /// All RAM the kernel manages.
    pub total_kib: u64,
    /// RAM not allocated.
    pub free_kib: u64,
    /// RAM allocated, kernel image included.
    pub used_kib: u64,
    /// The kernel image, its heap and its own page tables.
    pub kernel_kib: u64,
}

/// One CPU of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuRow {
    /// Logical CPU number, as the scheduler counts.
    pub index: usize,
    /// The CPU's MPIDR affinity value.
    pub mpidr: u64,
    /// What it is doing, e.g. "online", "offline", "failed".
    pub state: &'static str,
}

/// Most CPUs a [`CpuInfo`] lists.
pub const MAX_CPU_ROWS: usize = 16;

/// The CPUs the kernel knows about, held inline (no heap: `cpus` prints with memory out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuInfo {
    /// CPUs running the scheduler.
    pub online: usize,
    rows: [CpuRow; MAX_CPU_ROWS],
    count: usize,
}

impl CpuInfo {
    /// No CPUs listed yet, `online` of them running the scheduler.
    pub fn new(online: usize) -> Self {
        Self {
            online,
            ..Self::default()
        }
    }

    /// Lists one more CPU (ignored beyond [`MAX_CPU_ROWS`]).
    pub fn push(&mut self, row: CpuRow) {
        if let Some(slot) = self.rows.get_mut(self.count) {
            *slot = row;
            self.count += 1;
        }
    }

    /// Every CPU listed, online or not.
    pub fn cpus(&self) -> &[CpuRow] {
        &self.rows[..self.count]
    }
}

/// A short message from the kernel (why a spawn or a kill failed), held inline.
pub type Message = Text<96>;

/// A thread's name as `ps` shows it: at most 15 ASCII bytes, held inline so that rows can
/// be copied out of the thread table without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThreadName {
    bytes: [u8; 15],
    len: u8,
}

impl ThreadName {
    /// The first 15 ASCII characters of `name` (others are dropped).
    pub fn new(name: &str) -> Self {
        let mut n = Self::default();
        for (dst, c) in n.bytes.iter_mut().zip(name.chars().filter(char::is_ascii)) {
            *dst = c as u8;
            n.len += 1;
        }
        n
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("?")
    }
}

/// One thread as `ps` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadRow {
    /// Thread id.
    pub tid: u64,
    /// Thread name.
    pub name: ThreadName,
    /// Scheduler state, e.g. "running", "ready", "sleeping".
    pub state: &'static str,
    /// The CPU it runs on, or last ran on; `None` if it has not run yet.
    pub cpu: Option<usize>,
    /// Its stack policy.
    pub policy: StackPolicy,
    /// Stack bytes mapped now, in KiB.
    pub mapped_kib: u64,
    /// Most stack ever mapped at once, in KiB.
    pub high_water_kib: u64,
    /// Growth faults the thread has taken.
    pub grow_faults: u64,
}

/// What a `spawn` achieved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpawnReport {
    /// Threads asked for.
    pub requested: usize,
    /// Threads started.
    pub created: usize,
    /// Threads that could not be started.
    pub failed: usize,
    /// Why the first failure happened, when there was one.
    pub reason: Option<Message>,
}

/// Stack memory now, summed over all threads (O(1) counters in the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StackStats {
    /// Threads alive.
    pub threads: u64,
    /// Stack memory mapped, in KiB.
    pub mapped_kib: u64,
    /// What the same threads would map with every stack fully mapped (`threads × kstack.max`).
    pub fixed_equiv_kib: u64,
    /// Growth faults taken since boot.
    pub grow_faults: u64,
    /// Threads stopped by the guard gap since boot.
    pub overflows: u64,
    /// Threads terminated because a growth found no memory, since boot.
    pub oom_kills: u64,
    /// Stack memory given back by trims since boot, in KiB.
    pub trimmed_kib: u64,
    /// Page-table memory the stack arena uses, in KiB.
    pub pt_kib: u64,
    /// Bytes the thread control blocks take in total: the pages of their slab cache.
    pub tcb_total_bytes: u64,
    /// Zeroed pages held in the per-CPU growth reserves, in KiB: stack memory that no stack
    /// maps yet, held for the growth of the threads the CPUs run (counted in the savings with
    /// mapped stacks and parked copies).
    pub reserve_kib: u64,
    /// Page-table bytes one stack costs: its share of the last-level table that serves it
    /// and its neighbours (the tables stay when threads exit, so `pt_kib / threads` is not it).
    pub pt_bytes_per_thread: u64,
    /// Threads ended because their stack was not grown in time (`kstack.strategy=expand` or
    /// `check`), since boot.
    pub misses: u64,
    /// Growths ahead of use, without a fault (`ensure`, `expand_stack`, the `check` hook),
    /// since boot.
    pub grow_ahead: u64,
    /// Stacks parked now (live bytes in a block, no page mapped).
    pub parked: u64,
    /// Bytes of the blocks holding parked stacks.
    pub parked_bytes: u64,
}

impl StackStats {
    /// `parked_bytes` in KiB, rounded up.
    pub fn parked_kib(&self) -> u64 {
        self.parked_bytes.div_ceil(1024)
    }
}

/// What the shell needs from the kernel. Long operations get the console so they can print
/// progress. Implementations must accept any argument the parser lets through (it has
/// already checked the documented limits) and must not panic on it.
pub trait Backend {
    /// Physical memory now.
    fn mem(&self) -> MemInfo;
    /// The CPUs and which are online.
    fn cpus(&self) -> CpuInfo;
    /// Calls `row` for at most `limit` threads, in table order, and returns how many
    /// threads exist. Rows are streamed: nothing is collected, so `ps 100000` needs no
    /// memory, and `row` is not called with kernel locks held (it prints).
    fn threads(&self, limit: usize, row: &mut dyn FnMut(&ThreadRow)) -> usize;
    /// Starts `count` workload threads; `policy` `None` means the kernel's default.
    fn spawn(
        &mut self,
        count: usize,
        profile: &Profile,
        policy: Option<StackPolicy>,
        out: &mut dyn Write,
    ) -> SpawnReport;
    /// Waits until every workload thread has reached its resting point; returns how many
    /// threads that was.
    fn settle(&mut self, out: &mut dyn Write) -> u64;
    /// Stack memory now.
    fn stacks(&self) -> StackStats;
    /// Trims the stacks of sleeping threads; returns the KiB freed.
    fn trim(&mut self) -> u64;
    /// Terminates workload threads and returns how many.
    ///
    /// # Errors
    ///
    /// Why no thread could be killed (e.g. "no thread 42", "thread 3 is not a workload
    /// thread"); nothing changed then.
    fn kill(&mut self, target: &KillTarget) -> Result<u64, Message>;
    /// Runs the benchmarks of `plan`, printing one `BENCH name=...` line each.
    fn bench(&mut self, plan: BenchPlan, out: &mut dyn Write);
    /// Runs the showcase.
    fn demo(&mut self, out: &mut dyn Write);
    /// Stops the machine. Does not return on the kernel; returns in tests.
    fn poweroff(&mut self, out: &mut dyn Write);
}
