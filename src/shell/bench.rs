//! The `bench` command: dynamic against fixed stacks, measured in one boot.
//!
//! Each benchmark alternates the two policies round by round, so drift in the machine (QEMU
//! translation caches, host load) hits both alike, and prints one `BENCH name=... key=value`
//! line. Times come from the generic timer over batches long enough that its resolution does
//! not matter; under `make bench` QEMU runs with `-icount shift=0`, so one instruction is one
//! nanosecond and the figures repeat exactly. Calls `sched`, `stack` and `mm::frame`.
//!
//! Nothing here takes memory from the heap (results live on the stack or in statics, and
//! are joined before they go); the threads the benchmarks start are their only memory,
//! taken fallibly. With too little free memory `bench` prints `error: out of memory ...`
//! and returns, before it starts or as soon as a benchmark cannot start its threads.
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

use crate::arch::timer;
use crate::cmdline::StackPolicy;
use crate::mm::frame;
use crate::sched::{self, SpawnError, ThreadKind};
use crate::shell::command::{BenchPlan, Profile};
use crate::stack;

mod updown;

/// Sizes of one run.
struct Plan {
    create_rounds: u32,
    fault_rounds: u32,
    svc_calls: u32,
    switch_rounds: u32,
    switch_yields: u32,
    density_kib: u64,
    park_rounds: u32,
    /// Free memory left for `density_after_fixed` (the rest is held back).
    exhaust_kib: u64,
    memory_threads: &'static [usize],
    scale_rounds: u32,
    updown: updown::Sizes,
}

const QUICK: Plan = Plan {
    create_rounds: 20,
    fault_rounds: 20,
    svc_calls: 2000,
    switch_rounds: 2,
    switch_yields: 200,
    density_kib: 4096,
    park_rounds: 20,
    exhaust_kib: 16 * 1024,
    memory_threads: &[100],
    scale_rounds: 200,
    updown: updown::Sizes {
        rounds: 10,
        trim_threads: 100,
        probes: 200,
    },
};

/// `memory` sizes past 10,000 threads need the memory `make bench` gives QEMU (`-m 2G`);
/// a smaller machine skips them with a note.
const FULL: Plan = Plan {
    create_rounds: 400,
    fault_rounds: 400,
    svc_calls: 50_000,
    switch_rounds: 10,
    switch_yields: 2000,
    density_kib: 32 * 1024,
    park_rounds: 400,
    exhaust_kib: 64 * 1024,
    memory_threads: &[100, 1000, 3000, 10_000, 30_000, 100_000],
    scale_rounds: 20_000,
    updown: updown::Sizes {
        rounds: 200,
        trim_threads: 1000,
        probes: 10_000,
    },
};

fn now_ns() -> u64 {
    timer::ticks_to_ns(timer::now())
}

/// `a / b` with two decimals, from integers (the kernel has no floating point): the
/// [`Quotient`](super::format::Quotient) the demo prints, as the BENCH lines spell it.
struct Ratio(u64, u64);

impl core::fmt::Display for Ratio {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(&super::format::Quotient::new(self.0, self.1, 2), f)
    }
}

/// Savings against fully mapped stacks, in tenths of a percent.
struct Pct(u64, u64);

impl core::fmt::Display for Pct {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", crate::shell::savings_pct(self.0, self.1))
    }
}

/// A benchmark stopped because it could not start its threads (the reason is printed).
pub(crate) struct Stopped;

/// What a benchmark that may have to stop returns.
pub(crate) type Outcome = Result<(), Stopped>;

/// Prints why a benchmark could not start a thread: `error: out of memory: ...` when memory
/// is out (what the console contract promises), the spawn error otherwise.
pub(crate) fn cannot_start(out: &mut dyn Write, what: &str, e: SpawnError) -> Stopped {
    let _ = match e {
        SpawnError::OutOfMemory => writeln!(
            out,
            "error: out of memory: {what} could not start its threads; stopping"
        ),
        _ => writeln!(out, "error: {what}: {e}; stopping"),
    };
    Stopped
}

/// Free memory (KiB) the frames that spawning keeps for the kernel leave to the benchmarks.
pub(crate) fn spare_kib() -> u64 {
    frame::free_pages().saturating_sub(sched::SPAWN_LOW_WATER_PAGES) * 4
}

/// Whether `need_kib` of memory are free beyond what spawning keeps for the kernel; if not,
/// says so (`error: out of memory: ...`).
pub(crate) fn has_memory(out: &mut dyn Write, what: &str, need_kib: u64) -> bool {
    let spare = spare_kib();
    if spare >= need_kib {
        return true;
    }
    let _ = writeln!(
        out,
        "error: out of memory: {what} needs {} KiB free, {} KiB are",
        need_kib + sched::SPAWN_LOW_WATER_PAGES * 4,
        frame::free_pages() * 4
    );
    false
}

/// Runs the benchmarks of `plan`, one `BENCH` line each: every benchmark at full size
/// (`Full`) or small sizes for tests (`Quick`), `scale` judged by instructions (`mode=icount`,
/// meant for a boot under `-icount`); or only `scale` at full size by wall-clock time
/// (`Scale`, `mode=wall`, for a boot without `-icount` on a host with a free core per CPU).
pub fn run(plan: BenchPlan, out: &mut dyn Write) {
    if sched::workload_threads() > 0 {
        let _ = writeln!(
            out,
            "error: bench: {} workload threads are running; `kill all` first",
            sched::workload_threads()
        );
        return;
    }
    if let BenchPlan::Strategies { quick } = plan {
        crate::shell::strategies::run(quick, out);
        return;
    }
    let sizes = if plan == BenchPlan::Quick {
        &QUICK
    } else {
        &FULL
    };
    // The least the benchmarks need to measure what they say: `density`'s budget (all but
    // `scale`) and a MiB for the threads of the others.
    let need_kib = match plan {
        BenchPlan::Scale => 1024,
        _ => sizes.density_kib + 1024,
    };
    if !has_memory(out, "bench", need_kib) {
        return;
    }
    let _ = writeln!(
        out,
        "benchmarks, dynamic against fixed stacks (kstack.initial={} KiB, kstack.max={} KiB), {} CPUs{}",
        stack::config().initial / 1024,
        stack::config().max / 1024,
        sched::online_count(),
        match plan {
            BenchPlan::Full => "",
            BenchPlan::Quick => ", quick",
            BenchPlan::Scale => ", scale only",
            BenchPlan::Strategies { .. } => "",
        }
    );
    let _ = run_all(plan, sizes, out);
}

fn run_all(plan: BenchPlan, sizes: &Plan, out: &mut dyn Write) -> Outcome {
    if plan != BenchPlan::Scale {
        create(sizes, out)?;
        fault(sizes, out)?;
        updown::run(&sizes.updown, out);
        switch(sizes, out)?;
        density(sizes, out);
        park(sizes, out)?;
        density_after_fixed(sizes, out);
        for &n in sizes.memory_threads {
            memory(n, out);
        }
    }
    let mode = if plan == BenchPlan::Scale {
        ScaleMode::Wall
    } else {
        ScaleMode::Icount
    };
    scale(sizes, mode, out)
}

fn policies() -> [StackPolicy; 2] {
    [StackPolicy::Fixed, StackPolicy::Dynamic]
}

fn index(p: StackPolicy) -> usize {
    match p {
        StackPolicy::Fixed => 0,
        StackPolicy::Dynamic => 1,
    }
}

/// `create`: spawn a thread that returns at once and wait until it is gone.
fn create(plan: &Plan, out: &mut dyn Write) -> Outcome {
    let mut total = [0u64; 2];
    // Timed: spawning the thread and its first instruction. Not timed: its exit and the
    // reaper giving its memory back (that is tear-down, not creation). The new thread is
    // pinned to this CPU so that starting it is one switch, the same for both policies.
    // The cost of the two clock reads is taken off each round, as in `updown`.
    let clock = updown::clock_cost();
    let started = AtomicU64::new(0);
    let started_ptr = &started as *const AtomicU64 as usize;
    for _ in 0..plan.create_rounds {
        for p in policies() {
            let cpu = crate::percpu::cpu_index();
            started.store(0, Ordering::Relaxed);
            let t0 = now_ns();
            let h = sched::spawn_pinned("bench-create", p, cpu, move || {
                // SAFETY: `started` outlives this thread (the caller joins it).
                unsafe { &*(started_ptr as *const AtomicU64) }.store(now_ns(), Ordering::Release);
            });
            let h = match h {
                Ok(h) => h,
                Err(e) => return Err(cannot_start(out, "bench create", e)),
            };
            while started.load(Ordering::Acquire) == 0 {
                sched::yield_now();
            }
            total[index(p)] += (started.load(Ordering::Acquire) - t0).saturating_sub(clock);
            h.join();
            // Let the reaper finish with it before the next round: under -icount every CPU's
            // instructions count in the time measured, and the reaper may run on another CPU.
            sched::sleep_ms(1);
        }
    }
    let n = plan.create_rounds as u64;
    let _ = writeln!(
        out,
        "BENCH name=create fixed_ns={} dynamic_ns={} ratio={}",
        total[0] / n,
        total[1] / n,
        Ratio(total[0], total[1])
    );
    Ok(())
}

/// `fault`: one growth fault against an empty `svc` round trip.
fn fault(plan: &Plan, out: &mut dyn Write) -> Outcome {
    let grow_ns = AtomicU64::new(0);
    let grows = AtomicU64::new(0);
    let initial = stack::initial_pages(StackPolicy::Dynamic) as u64;
    let max = (stack::config().max / 4096) as u64;
    for _ in 0..plan.fault_rounds {
        let (ns, count) = (
            &grow_ns as *const AtomicU64 as usize,
            &grows as *const AtomicU64 as usize,
        );
        let h = sched::spawn_with("bench-fault", StackPolicy::Dynamic, move || {
            // SAFETY: the counters outlive this thread (the caller joins it).
            let (ns, count) =
                unsafe { (&*(ns as *const AtomicU64), &*(count as *const AtomicU64)) };
            // SAFETY: the running thread's control block.
            let stack = unsafe { &(*sched::current_ptr()).stack };
            let top = stack.top();
            let faults_before = stack.grow_faults();
            let t0 = now_ns();
            for page in initial..max {
                let addr = top - page * 4096 - 4096 + 64;
                // SAFETY: inside this thread's reservation; the first touch of each page is a
                // growth fault, which is what is measured.
                unsafe { core::ptr::write_volatile(addr as *mut u64, page) };
            }
            let t1 = now_ns();
            if stack.grow_faults() - faults_before == (max - initial) as u32 {
                ns.fetch_add(t1 - t0, Ordering::Relaxed);
                count.fetch_add(max - initial, Ordering::Relaxed);
            }
        });
        match h {
            Ok(h) => h.join(),
            Err(e) => return Err(cannot_start(out, "bench fault", e)),
        }
    }
    let svc = AtomicU64::new(0);
    let svc_ptr = &svc as *const AtomicU64 as usize;
    let calls = plan.svc_calls as u64;
    let h = sched::spawn("bench-svc", move || {
        let t0 = now_ns();
        for _ in 0..calls {
            sched::null_syscall();
        }
        // SAFETY: the caller joins this thread before `svc` goes out of scope.
        unsafe { &*(svc_ptr as *const AtomicU64) }.store(now_ns() - t0, Ordering::Relaxed);
    });
    match h {
        Ok(h) => h.join(),
        Err(e) => return Err(cannot_start(out, "bench fault", e)),
    }
    let grows = grows.load(Ordering::Relaxed).max(1);
    let grow = grow_ns.load(Ordering::Relaxed) / grows;
    let svc_ns = svc.load(Ordering::Relaxed) / calls.max(1);
    let _ = writeln!(
        out,
        "BENCH name=fault grow_ns={} svc_ns={} ratio={} faults={}",
        grow,
        svc_ns,
        Ratio(grow, svc_ns),
        grows
    );
    Ok(())
}

/// `switch`: two threads on one CPU yielding to each other.
fn switch(plan: &Plan, out: &mut dyn Write) -> Outcome {
    let mut total = [0u64; 2];
    let cpu = 0;
    let yields = plan.switch_yields;
    for _ in 0..plan.switch_rounds {
        for p in policies() {
            let t0 = now_ns();
            let a = sched::spawn_pinned("bench-sw-a", p, cpu, move || {
                for _ in 0..yields {
                    sched::yield_now();
                }
            });
            let b = sched::spawn_pinned("bench-sw-b", p, cpu, move || {
                for _ in 0..yields {
                    sched::yield_now();
                }
            });
            match (a, b) {
                (Ok(a), Ok(b)) => {
                    a.join();
                    b.join();
                }
                (a, b) => {
                    // The one that did start yields its rounds and ends on its own: wait.
                    let mut why = SpawnError::OutOfMemory;
                    for h in [a, b] {
                        match h {
                            Ok(h) => h.join(),
                            Err(e) => why = e,
                        }
                    }
                    return Err(cannot_start(out, "bench switch", why));
                }
            }
            total[index(p)] += now_ns() - t0;
        }
    }
    let switches = (plan.switch_rounds * yields * 2) as u64;
    let _ = writeln!(
        out,
        "BENCH name=switch fixed_ns={} dynamic_ns={} ratio={}",
        total[0] / switches,
        total[1] / switches,
        Ratio(total[1], total[0])
    );
    Ok(())
}

fn wait_settled() {
    let deadline = timer::now() + timer::ns_to_ticks(60_000_000_000);
    while sched::unsettled() > 0 && timer::now() < deadline {
        sched::sleep_ms(1);
    }
}

/// Spawns `idle` threads with `policy` while `more()` says so and spawning succeeds, calling
/// `after(n)` with the count after each one; waits until they have all settled and returns
/// how many were created. The density benchmarks differ only in when they stop and in what
/// they do between spawns.
fn fill_idle(
    policy: StackPolicy,
    mut more: impl FnMut() -> bool,
    mut after: impl FnMut(u64),
) -> u64 {
    let mut n = 0u64;
    while more() {
        let (entry, arg) = crate::shell::workload::entry_for(&Profile::Idle, n as usize);
        if sched::spawn_raw(
            "bench-density",
            ThreadKind::Workload,
            policy,
            entry,
            arg,
            None,
        )
        .is_err()
        {
            break;
        }
        n += 1;
        after(n);
    }
    wait_settled();
    n
}

/// A `more` for [`fill_idle`]: true until `kib` of free memory, counted from now, are used.
fn within_budget(kib: u64) -> impl FnMut() -> bool {
    let free0 = frame::free_pages();
    let budget_pages = kib / 4;
    move || free0.saturating_sub(frame::free_pages()) < budget_pages
}

/// `density`: how many idle threads fit in the same memory under each policy.
fn density(plan: &Plan, out: &mut dyn Write) {
    let mut fit = [0u64; 2];
    for p in policies() {
        fit[index(p)] = fill_idle(p, within_budget(plan.density_kib), |_| {});
        sched::kill_all(&mut |_, _| {});
    }
    // Dynamic stacks again, parked as they go to sleep: every 64 threads, the sleepers
    // waiting to be parked are parked at once (what spawn does when memory runs low), so
    // the count does not depend on `kstack.park_after`.
    let mut parked_fit = 0u64;
    if stack::park::enabled() {
        parked_fit = fill_idle(StackPolicy::Dynamic, within_budget(plan.density_kib), |n| {
            if n.is_multiple_of(64) {
                wait_settled();
                sched::parker::park_listed_now();
            }
        });
        sched::kill_all(&mut |_, _| {});
    }
    let _ = writeln!(
        out,
        "BENCH name=density mem_kib={} fixed_threads={} dynamic_threads={} ratio={} parked_threads={} park_ratio={}",
        plan.density_kib,
        fit[0],
        fit[1],
        Ratio(fit[1], fit[0]),
        parked_fit,
        Ratio(parked_fit, fit[0])
    );
}

static PARK_A: AtomicPtr<sched::Thread> = AtomicPtr::new(core::ptr::null_mut());
static PARK_B: AtomicPtr<sched::Thread> = AtomicPtr::new(core::ptr::null_mut());
static PARK_WOKE_NS: AtomicU64 = AtomicU64::new(0);
static PARK_STOP: AtomicBool = AtomicBool::new(false);
/// What the driver measured: park time, wake times (unparked, parked), parks.
static PARK_RESULT: crate::sync::IrqMutex<(u64, [u64; 2], u32)> =
    crate::sync::IrqMutex::new((0, [0; 2], 0));

/// `park`: the cost of parking one sleeping stack, and of waking a thread whose stack is
/// parked against one whose stack is not. Two threads pinned to one CPU: the driver wakes the
/// sleeper and blocks; the sleeper notes the time it runs again, wakes the driver and blocks.
/// The wake is the time from the driver's `unpark` to the sleeper running: the unpark, the
/// driver's switch out, the sleeper's switch in (with the restore of its stack when parked).
/// Rounds alternate parked and unparked.
fn park(plan: &Plan, out: &mut dyn Write) -> Outcome {
    if !stack::park::enabled() {
        let _ = writeln!(out, "bench: park skipped: kstack.park_after=off");
        return Ok(());
    }
    let cpu = if sched::is_online(1) { 1 } else { 0 };
    PARK_STOP.store(false, Ordering::SeqCst);
    PARK_A.store(core::ptr::null_mut(), Ordering::SeqCst);
    let a = sched::spawn_pinned("bench-park-a", StackPolicy::Dynamic, cpu, || {
        sched::set_parkable(true);
        PARK_A.store(sched::current_ptr(), Ordering::SeqCst);
        loop {
            sched::park();
            if PARK_STOP.load(Ordering::SeqCst) {
                return;
            }
            PARK_WOKE_NS.store(now_ns(), Ordering::SeqCst);
            // SAFETY: the driver lives until it has stopped this thread.
            unsafe { sched::unpark(PARK_B.load(Ordering::SeqCst)) };
        }
    });
    let a = match a {
        Ok(a) => a,
        Err(e) => return Err(cannot_start(out, "bench park", e)),
    };
    let rounds = plan.park_rounds;
    *PARK_RESULT.lock() = (0, [0; 2], 0);
    let b = sched::spawn_pinned("bench-park-b", StackPolicy::Dynamic, cpu, move || {
        PARK_B.store(sched::current_ptr(), Ordering::SeqCst);
        while PARK_A.load(Ordering::SeqCst).is_null() {
            sched::yield_now();
        }
        let a = PARK_A.load(Ordering::SeqCst);
        let (mut park_ns, mut wake_ns, mut parks) = (0u64, [0u64; 2], 0u32);
        for round in 0..2 * rounds {
            // SAFETY: the sleeper lives until it is told to stop, below.
            while unsafe { (*a).state() } != sched::ThreadState::Blocked {
                sched::yield_now();
            }
            let parked = round % 2 == 1;
            if parked {
                let t0 = now_ns();
                // SAFETY: as above.
                if unsafe { sched::parker::park_now(a) } {
                    park_ns += now_ns() - t0;
                    parks += 1;
                }
            }
            let t0 = now_ns();
            // SAFETY: as above.
            unsafe { sched::unpark(a) };
            sched::park();
            wake_ns[parked as usize] += PARK_WOKE_NS.load(Ordering::SeqCst).saturating_sub(t0);
        }
        PARK_STOP.store(true, Ordering::SeqCst);
        // SAFETY: as above.
        unsafe { sched::unpark(a) };
        *PARK_RESULT.lock() = (park_ns, wake_ns, parks);
    });
    match b {
        Ok(b) => {
            b.join();
            a.join();
        }
        Err(e) => {
            // The sleeper started alone: tell it to stop, once it is there to be told.
            PARK_STOP.store(true, Ordering::SeqCst);
            while PARK_A.load(Ordering::SeqCst).is_null() {
                sched::yield_now();
            }
            // SAFETY: the sleeper lives until it has seen PARK_STOP, after this unpark.
            unsafe { sched::unpark(PARK_A.load(Ordering::SeqCst)) };
            a.join();
            return Err(cannot_start(out, "bench park", e));
        }
    }
    let (park_ns, wake_ns, parks) = *PARK_RESULT.lock();
    let n = rounds.max(1) as u64;
    let _ = writeln!(
        out,
        "BENCH name=park park_ns={} wake_ns={} wake_parked_ns={} ratio={} parks={}",
        park_ns / (parks.max(1) as u64),
        wake_ns[0] / n,
        wake_ns[1] / n,
        Ratio(wake_ns[1], wake_ns[0]),
        parks
    );
    Ok(())
}

/// Frames held back from the frame allocator, in 2 MiB runs (or single pages) linked
/// through their own first word, so holding them needs no memory.
struct Ballast {
    head: u64,
    pages: u64,
}

impl Ballast {
    /// Takes frames until only `keep_kib` are free.
    fn leave_free(keep_kib: u64) -> Self {
        let mut b = Ballast {
            head: u64::MAX,
            pages: 0,
        };
        let keep = keep_kib / 4;
        while frame::free_pages() > keep {
            let run = if frame::free_pages() - keep >= 512 {
                512
            } else {
                1
            };
            let Some(pa) = frame::alloc(run) else { break };
            // SAFETY: a frame run just allocated, ours, reachable through the linear map.
            unsafe {
                let p = crate::mm::layout::phys_to_virt(pa) as *mut u64;
                p.write(b.head);
                p.add(1).write(run as u64);
            }
            b.head = pa;
            b.pages += run as u64;
        }
        b
    }

    fn release(self) {
        let mut pa = self.head;
        while pa != u64::MAX {
            // SAFETY: a run this ballast took; its first words hold the link and its size.
            let (next, run) = unsafe {
                let p = crate::mm::layout::phys_to_virt(pa) as *const u64;
                (p.read(), p.add(1).read())
            };
            frame::free(pa, run as usize);
            pa = next;
        }
    }
}

/// `density_after_fixed`: the path users take. With all but `exhaust_kib` of memory held
/// back, idle threads with fixed stacks are spawned until spawning fails, killed, and then
/// dynamic ones until spawning fails, in the same boot: memory the fixed round broke up must
/// serve the dynamic round as well as fresh memory would.
fn density_after_fixed(plan: &Plan, out: &mut dyn Write) {
    let ballast = Ballast::leave_free(plan.exhaust_kib);
    let mut fit = [0u64; 2];
    for p in policies() {
        fit[index(p)] = fill_idle(p, || true, |_| {});
        sched::kill_all(&mut |_, _| {});
    }
    ballast.release();
    let _ = writeln!(
        out,
        "BENCH name=density_after_fixed mem_kib={} fixed_threads={} dynamic_threads={} ratio={}",
        plan.exhaust_kib,
        fit[0],
        fit[1],
        Ratio(fit[1], fit[0])
    );
}

/// Stack memory (KiB) the threads started since `base` hold: mapped pages and parked copies.
/// The per-CPU reserves are left out here (`stacks` counts them): they do not grow with the
/// threads (at most 64 pages a CPU), and whether a CPU holds its pages at an instant depends
/// only on whether a tick found it idle just before (`stack::reserve::drain_idle`).
fn held_kib_since(base: &stack::Stats) -> u64 {
    let s = stack::stats();
    s.mapped_pages.saturating_sub(base.mapped_pages) * 4
        + s.park
            .parked_bytes
            .saturating_sub(base.park.parked_bytes)
            .div_ceil(1024)
}

/// Starts `n` workload threads of `profile` with `policy`; returns how many started.
fn spawn_workload(profile: &Profile, policy: StackPolicy, n: usize) -> usize {
    let mut created = 0;
    for i in 0..n {
        let (entry, arg) = crate::shell::workload::entry_for(profile, i);
        if sched::spawn_raw(
            "bench-memory",
            ThreadKind::Workload,
            policy,
            entry,
            arg,
            None,
        )
        .is_ok()
        {
            created += 1;
        }
    }
    created
}

/// `memory`: stack memory of `n` threads, measured from the stack counters: `idle` with
/// fixed stacks, then with dynamic ones `idle`, `mix` after settle and `mix` after trim.
/// `pt_kib` is the page-table memory of the whole stack arena once the dynamic `idle`
/// threads exist (tables are made as slots are first used and stay).
fn memory(n: usize, out: &mut dyn Write) {
    let max_pages = stack::config().max as u64 / 4096;
    let max_kib = max_pages * 4;
    // Fixed stacks map all of `kstack.max`; one more page each covers the control block and
    // heap, and the rest is what spawning keeps free.
    let need = n as u64 * (max_pages + 1) + 2048;
    let free = frame::free_pages();
    if free < need {
        let _ = writeln!(
            out,
            "bench: memory at {} threads skipped: needs {} MiB free, {} MiB are (boot with more -m)",
            n,
            need / 256,
            free / 256
        );
        return;
    }
    let run = |profile: &Profile, policy: StackPolicy| {
        let base = stack::stats();
        let created = spawn_workload(profile, policy, n) as u64;
        wait_settled();
        (created, base)
    };
    let (fixed, base) = run(&Profile::Idle, StackPolicy::Fixed);
    let fixed_kib = held_kib_since(&base);
    sched::kill_all(&mut |_, _| {});
    let (idle, base) = run(&Profile::Idle, StackPolicy::Dynamic);
    let idle_kib = held_kib_since(&base);
    let pt_kib = stack::stats().table_pages * 4;
    // A trim parks every sleeping thread (unless kstack.park_after=off).
    stack::trim_all();
    let idle_trim_kib = held_kib_since(&base);
    sched::kill_all(&mut |_, _| {});
    let (mix, base) = run(&Profile::Mix, StackPolicy::Dynamic);
    let mix_kib = held_kib_since(&base);
    stack::trim_all();
    let trim_kib = held_kib_since(&base);
    sched::kill_all(&mut |_, _| {});
    let _ = writeln!(
        out,
        "BENCH name=memory threads={} fixed_kib={} idle_kib={} mix_kib={} trim_kib={} idle_pct={} mix_pct={} mix_trim_pct={} fixed_threads={} pt_kib={} idle_trim_kib={} idle_trim_pct={}",
        n,
        fixed_kib,
        idle_kib,
        mix_kib,
        trim_kib,
        Pct(idle_kib, idle * max_kib),
        Pct(mix_kib, mix * max_kib),
        Pct(trim_kib, mix * max_kib),
        fixed,
        pt_kib,
        idle_trim_kib,
        Pct(idle_trim_kib, idle * max_kib)
    );
}

/// How `scale` is judged.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ScaleMode {
    /// Under `-icount`: QEMU runs every CPU round robin on one host thread and virtual time
    /// counts the instructions of all of them, so growth faults per 10^9 instructions with N
    /// CPUs against 1 shows serialisation (spinning costs instructions), whatever the host.
    Icount,
    /// Without `-icount`: growth faults per second of wall time, each CPU on its own host
    /// thread; meaningful only with at least N free host cores.
    Wall,
}

/// The CPU counts `scale` measures (those that are online).
const SCALE_CPUS: [usize; 4] = [1, 2, 4, 8];

/// The most CPUs `scale` runs on at once.
const SCALE_MAX_CPUS: usize = 8;

/// `scale`: growth faults with 1, 2, 4 and 8 CPUs (as many as are online) faulting at once,
/// each CPU's thread growing to `kstack.max` and giving the pages back `scale_rounds` times.
fn scale(plan: &Plan, mode: ScaleMode, out: &mut dyn Write) -> Outcome {
    let online = sched::online_count();
    let mut measured = [(0usize, 0u64); SCALE_CPUS.len()];
    let mut count = 0;
    for cpus in SCALE_CPUS {
        if cpus > online {
            break;
        }
        // Nanoseconds and faults of each CPU's thread.
        let results = [const { AtomicU64::new(0) }; 2 * SCALE_MAX_CPUS];
        let results_ptr = results.as_ptr() as usize;
        let rounds = plan.scale_rounds;
        let mut handles: [Option<sched::JoinHandle>; SCALE_MAX_CPUS] = Default::default();
        let mut failed = None;
        let phase0 = now_ns();
        for cpu in 0..cpus {
            // One long-lived thread per CPU grows its stack to `kstack.max` and gives the
            // pages back to its CPU's reserve (`stack::give_back_unused`), `rounds` times:
            // nothing in the loop but the fault paths and that, no lock, no allocation.
            let h = sched::spawn_pinned("bench-scale", StackPolicy::Dynamic, cpu, move || {
                // SAFETY: `results` outlives every thread here (the caller joins them).
                let slots = unsafe {
                    core::slice::from_raw_parts(results_ptr as *const AtomicU64, cpus * 2)
                };
                // SAFETY: the running thread's control block.
                let stack = unsafe { &(*sched::current_ptr()).stack };
                let top = stack.top();
                let initial = stack::initial_pages(StackPolicy::Dynamic) as u64;
                let max = (stack::config().max / 4096) as u64;
                let (mut ns, mut faults) = (0u64, 0u64);
                for _ in 0..rounds {
                    let f0 = stack.grow_faults();
                    let t0 = now_ns();
                    for page in initial..max {
                        // SAFETY: inside this thread's reservation (a growth fault).
                        unsafe {
                            core::ptr::write_volatile(
                                (top - page * 4096 - 4096 + 64) as *mut u64,
                                page,
                            )
                        };
                    }
                    ns += now_ns() - t0;
                    faults += (stack.grow_faults() - f0) as u64;
                    stack::give_back_unused();
                }
                slots[cpu * 2].fetch_add(ns, Ordering::Relaxed);
                slots[cpu * 2 + 1].fetch_add(faults, Ordering::Relaxed);
            });
            match h {
                Ok(h) => handles[cpu] = Some(h),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        for h in handles.into_iter().flatten() {
            h.join();
        }
        if let Some(e) = failed {
            return Err(cannot_start(out, "bench scale", e));
        }
        let phase_ns = (now_ns() - phase0).max(1);
        let rate = match mode {
            // Every fault of every CPU over the instructions of all of them.
            ScaleMode::Icount => {
                let faults: u64 = (0..cpus)
                    .map(|c| results[c * 2 + 1].load(Ordering::Relaxed))
                    .sum();
                faults * 1_000_000_000 / phase_ns
            }
            // Each CPU's rate over its own time spent faulting, summed: what the CPUs
            // achieve together while faulting at the same time.
            ScaleMode::Wall => (0..cpus)
                .map(|c| {
                    let ns = results[c * 2].load(Ordering::Relaxed).max(1);
                    results[c * 2 + 1].load(Ordering::Relaxed) * 1_000_000_000 / ns
                })
                .sum(),
        };
        measured[count] = (cpus, rate);
        count += 1;
    }
    let rates = &measured[..count];
    let one = rates.first().map(|r| r.1).unwrap_or(0);
    let (mode_name, unit) = match mode {
        ScaleMode::Icount => ("icount", "faults_per_ginstr"),
        ScaleMode::Wall => ("wall", "faults_per_sec"),
    };
    if mode == ScaleMode::Wall {
        let _ = writeln!(
            out,
            "bench: scale mode=wall needs at least {} free host cores to mean anything (one per virtual CPU)",
            rates.last().map(|r| r.0).unwrap_or(1)
        );
    }
    let _ = write!(out, "BENCH name=scale mode={}", mode_name);
    for (cpus, rate) in rates {
        let _ = write!(out, " cpus{}_{}={}", cpus, unit, rate);
    }
    for (cpus, rate) in rates.iter().skip(1) {
        let _ = write!(out, " ratio{}={}", cpus, Ratio(*rate, one));
    }
    if mode == ScaleMode::Wall {
        let _ = write!(
            out,
            " min_host_cores={}",
            rates.last().map(|r| r.0).unwrap_or(1)
        );
    }
    let _ = writeln!(out);
    Ok(())
}
