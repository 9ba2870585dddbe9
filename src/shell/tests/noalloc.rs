//! The shell's side of "memory exhaustion prints an error and carries on": parsing a line,
//! every command's output and the line editor take nothing from the heap. A counting
//! allocator (this test binary's global allocator) counts the allocations of each test
//! thread; a backend that allocates nothing either stands in for the kernel.
use super::*;
use core::cell::Cell;
use std::alloc::{GlobalAlloc, Layout, System};

std::thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: passes everything on to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Output that goes nowhere but is counted, so the test sees the commands printed.
struct Sink {
    bytes: usize,
    lines: usize,
}

impl Write for Sink {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.bytes += s.len();
        self.lines += s.matches('\n').count();
        Ok(())
    }
}

/// A kernel that answers without allocating: what the real backend does with memory out.
struct Frugal;

fn row_of() -> ThreadRow {
    ThreadRow {
        tid: 7,
        name: ThreadName::new("idle"),
        state: "sleeping",
        cpu: Some(1),
        policy: StackPolicy::Dynamic,
        mapped_kib: 4,
        high_water_kib: 8,
        grow_faults: 1,
    }
}

impl Backend for Frugal {
    fn mem(&self) -> MemInfo {
        MemInfo {
            total_kib: 65536,
            free_kib: 0,
            used_kib: 65536,
            kernel_kib: 2768,
        }
    }
    fn cpus(&self) -> CpuInfo {
        let mut c = CpuInfo::new(4);
        for index in 0..4 {
            c.push(CpuRow {
                index,
                mpidr: 0x8000_0000 + index as u64,
                state: "online",
            });
        }
        c
    }
    fn threads(&self, limit: usize, row: &mut dyn FnMut(&ThreadRow)) -> usize {
        let r = row_of();
        for _ in 0..limit.min(1000) {
            row(&r);
        }
        100_000
    }
    fn spawn(
        &mut self,
        count: usize,
        _: &Profile,
        _: Option<StackPolicy>,
        _: &mut dyn Write,
    ) -> SpawnReport {
        SpawnReport {
            requested: count,
            created: 0,
            failed: count,
            reason: Some(Message::of("out of memory after 0 threads")),
        }
    }
    fn settle(&mut self, _: &mut dyn Write) -> u64 {
        0
    }
    fn stacks(&self) -> StackStats {
        StackStats {
            threads: 100_000,
            mapped_kib: 400_000,
            fixed_equiv_kib: 1_600_000,
            reserve_kib: 64,
            parked: 10,
            parked_bytes: 1280,
            tcb_total_bytes: 32_000_000,
            pt_bytes_per_thread: 40,
            ..StackStats::default()
        }
    }
    fn trim(&mut self) -> u64 {
        0
    }
    fn kill(&mut self, target: &KillTarget) -> Result<u64, Message> {
        match target {
            KillTarget::All => Ok(100_000),
            KillTarget::Tid(_) => Err(Message::of("no thread 12345")),
        }
    }
    fn bench(&mut self, _: BenchPlan, out: &mut dyn Write) {
        let _ = writeln!(out, "error: out of memory: bench needs free memory");
    }
    fn demo(&mut self, _: &mut dyn Write) {}
    fn poweroff(&mut self, _: &mut dyn Write) {}
}

#[test]
fn commands_and_errors_allocate_nothing() {
    let long_typo = "x".repeat(300);
    let lines = [
        "help",
        "mem",
        "cpus",
        "ps",
        "ps 100000",
        "stacks",
        "trim",
        "settle",
        "spawn 100 idle",
        "spawn 10 deep:12k fixed",
        "kill 12345",
        "kill all",
        "bench quick",
        "frobnicate",
        long_typo.as_str(),
        "spawn",
        "spawn 0 idle",
        "spawn 10 nosuch",
        "spawn 10 deep:zz",
        "spawn 10 deep:99999999g",
        "spawn 10 idle sideways",
        "ps -1",
        "ps many",
        "kill",
        "kill none",
        "kill 99999999999999999999999",
        "bench slow",
        "bench strategies slow",
        "mem extra",
        "",
    ];
    let mut out = Sink { bytes: 0, lines: 0 };
    let mut backend = Frugal;
    for line in lines {
        let before = allocations();
        execute(&mut backend, line, &mut out);
        assert_eq!(allocations(), before, "{line:?} allocated");
    }
    assert!(out.lines > 1000, "the commands printed too little");
}

#[test]
fn typing_allocates_nothing() {
    let mut shell = Shell::new();
    let mut out = Sink { bytes: 0, lines: 0 };
    let mut backend = Frugal;
    // Built before counting: a line past the editor's limit, Ctrl-C, an escape sequence,
    // backspaces, and commands.
    let mut bytes = std::vec::Vec::new();
    bytes.extend(std::iter::repeat_n(b'y', line::MAX_LINE + 50));
    bytes.extend_from_slice(b"\r\nstacks\rps 3\n\x1b[A\x08\x08mem\x03help\r");
    let before = allocations();
    shell.start(&mut out);
    for &b in &bytes {
        shell.feed(&mut backend, b, &mut out);
    }
    assert_eq!(allocations(), before, "typing allocated");
    assert!(out.lines > 10, "nothing was run");
}

#[test]
fn quotients_format_without_allocating() {
    let mut out = Sink { bytes: 0, lines: 0 };
    let before = allocations();
    for (a, b, places) in [(1, 3, 2), (u64::MAX, 7, 18), (5, 0, 1), (123_456, 789, 0)] {
        let _ = writeln!(out, "{:>30}", Quotient::new(a, b, places));
    }
    assert_eq!(allocations(), before, "formatting a quotient allocated");
    assert_eq!(out.lines, 4);
}
