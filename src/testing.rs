//! The harness of the test kernels under `tests/`: runs each case in its own thread,
//! reports `TEST <name> ... ok|FAILED: <reason>` lines and `TESTS passed= failed=`, and exits
//! QEMU through semihosting with status 0 only if every case passed.
//!
//! A case that faults is ended by the kernel like any thread (with its report on the
//! console) and counts as failed; the other cases go on. Calls `sched` and `console`.
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;

use crate::println;
use crate::sync::IrqMutex;

/// What a test case returns: `Err` says why it failed.
pub type TestResult = Result<(), String>;

/// A named test case.
pub struct TestCase {
    /// Name printed in the report.
    pub name: &'static str,
    /// The case itself; runs in a fresh system thread.
    pub run: fn() -> TestResult,
}

/// Fails the current case with a message unless `cond` holds.
#[macro_export]
macro_rules! check {
    ($cond:expr) => {
        if !$cond {
            return Err(alloc::format!("{}:{}: check failed: {}", file!(), line!(), stringify!($cond)));
        }
    };
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err(alloc::format!("{}:{}: {}", file!(), line!(), format_args!($($arg)*)));
        }
    };
}

/// `test_cases![f, g]`: the test cases named after their functions, in order.
///
/// `test_cases![via wrap; name => f, ...]`: cases that each run as `wrap("name", f)` (a
/// driver that runs the body on a thread of its own, say), named `name`.
#[macro_export]
macro_rules! test_cases {
    (via $wrap:path; $($name:ident => $f:path),* $(,)?) => {
        &[$($crate::testing::TestCase {
            name: stringify!($name),
            run: || $wrap(stringify!($name), $f),
        }),*]
    };
    ($($f:ident),* $(,)?) => {
        &[$($crate::testing::TestCase { name: stringify!($f), run: $f }),*]
    };
}

/// Where every frame the kernel handed out since boot is, and the stack counters, taken at
/// one instant (IRQs masked on this CPU), so tests can check that memory comes back.
#[derive(Clone, Copy, Debug)]
pub struct MemorySnapshot {
    /// Free frames.
    pub free: u64,
    /// Pages mapped in stacks.
    pub mapped: u64,
    /// Pages held in the per-CPU reserves.
    pub reserve: u64,
    /// Pages the heap and the slab caches took from the frame allocator.
    pub heap_pages: u64,
    /// Pages of translation tables the kernel address space allocated.
    pub tables: u64,
    /// Stacks that exist.
    pub stacks: u64,
    /// Threads in the thread table.
    pub threads: usize,
    /// Growth faults since boot.
    pub grow_faults: u64,
    /// Times a thread waited for its reserve.
    pub shortages: u64,
    /// Threads ended because a growth found no page.
    pub oom_kills: u64,
    /// Threads ended for running into their guard gap.
    pub overflows: u64,
    /// Pages trimmed since boot.
    pub trimmed: u64,
}

impl MemorySnapshot {
    /// The counters now: read twice in a row until both reads agree on where the frames are,
    /// since other CPUs move pages between their reserves and the frame allocator at any
    /// time (an idle CPU's tick drains its reserve) and one read of the counters is not
    /// atomic against that.
    pub fn take() -> Self {
        let mut last = Self::take_once();
        for _ in 0..1000 {
            let now = Self::take_once();
            if now.frames() == last.frames() {
                return now;
            }
            last = now;
        }
        last
    }

    fn frames(&self) -> [u64; 5] {
        [
            self.free,
            self.mapped,
            self.reserve,
            self.heap_pages,
            self.tables,
        ]
    }

    fn take_once() -> Self {
        let daif = crate::arch::irq::save_and_disable();
        let s = crate::stack::stats();
        let snap = Self {
            free: crate::mm::frame::free_pages(),
            mapped: s.mapped_pages,
            reserve: s.reserve_pages,
            heap_pages: crate::mm::heap::grown_bytes() / crate::mm::layout::PAGE_SIZE as u64
                + crate::mm::slab::frame_pages(),
            tables: crate::mm::kspace::table_pages(),
            stacks: s.stacks,
            threads: crate::sched::thread_count(),
            grow_faults: s.grow_faults,
            shortages: s.shortages,
            oom_kills: s.oom_kills,
            overflows: s.overflows,
            trimmed: s.trimmed_pages,
        };
        crate::arch::irq::restore(daif);
        snap
    }

    /// Frames accounted for: free, mapped in stacks, in reserves, in the heap or in tables.
    /// Constant unless frames leak (or a test holds some back).
    pub fn accounted(&self) -> u64 {
        self.free + self.mapped + self.reserve + self.heap_pages + self.tables
    }
}

/// Runs one case in its own thread and waits for it. `Err` if it failed or died.
pub fn run_case(case: &TestCase) -> TestResult {
    let slot: Arc<IrqMutex<Option<TestResult>>> = Arc::new(IrqMutex::new(None));
    let inner = slot.clone();
    let f = case.run;
    let handle = crate::sched::spawn(case.name, move || {
        let r = f();
        *inner.lock() = Some(r);
    })
    .map_err(|e| format!("cannot start the case's thread: {}", e))?;
    handle.join();
    let result = slot.lock().take();
    result.unwrap_or_else(|| {
        Err(String::from(
            "the case's thread died (see the report above)",
        ))
    })
}

/// Whether the command line leaves case `name` to run: every case, unless some
/// `test.only=NAME` (repeatable) is given, for running one case by hand while developing
/// (`make test` never passes it).
fn selected(name: &str) -> bool {
    let args = &crate::kernel::boot_info().args.ignored;
    let mut only = args
        .iter()
        .filter_map(|a| a.strip_prefix("test.only="))
        .peekable();
    only.peek().is_none() || only.any(|o| o == name)
}

/// Runs every case (or those `test.only=` names), prints the report and exits QEMU.
pub fn run(cases: &[TestCase]) -> ! {
    let (mut passed, mut failed) = (0u32, 0u32);
    for case in cases.iter().filter(|c| selected(c.name)) {
        match run_case(case) {
            Ok(()) => {
                passed += 1;
                println!("TEST {} ... ok", case.name);
            }
            Err(why) => {
                failed += 1;
                println!("TEST {} ... FAILED: {}", case.name, why);
            }
        }
    }
    println!("TESTS passed={} failed={}", passed, failed);
    semihosting::process::exit(if failed == 0 { 0 } else { 1 })
}
