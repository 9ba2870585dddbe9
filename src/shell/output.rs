//! What each command prints: the tables people read and the summary lines scripts read
//! (the console contract).
use super::*;

/// Every command with one line of description, in the order `help` prints them.
pub(super) const HELP: &[(&str, &str)] = &[
    ("help", "list these commands"),
    ("mem", "physical memory"),
    ("cpus", "CPUs online"),
    (
        "ps [N]",
        "threads: tid, state, cpu, stack (first 20 rows, or N)",
    ),
    (
        "spawn N PROFILE [dynamic|fixed]",
        "start N workload threads (N up to 10000000)",
    ),
    (
        "  PROFILE",
        "idle, mix, deep:SIZE (e.g. deep:8k), overflow, churn, chain, bigframe, inflate, json",
    ),
    (
        "settle",
        "wait until workload threads reach their resting point",
    ),
    ("stacks", "stack memory now, dynamic against fixed"),
    ("trim", "give back stack pages below sleeping threads' SP"),
    ("kill all|TID", "terminate workload threads"),
    ("bench [quick|scale]", "benchmarks, dynamic against fixed"),
    (
        "bench strategies [quick]",
        "workloads under this boot's kstack.strategy against fixed",
    ),
    ("demo", "the showcase: dynamic stacks against fixed ones"),
    ("poweroff", "stop the machine"),
];

pub(super) fn help(out: &mut dyn Write) {
    let width = HELP.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
    say!(out, "commands:");
    for (cmd, what) in HELP {
        say!(out, "  {cmd:<width$}  {what}");
    }
}

pub(super) fn mem(m: &MemInfo, out: &mut dyn Write) {
    say!(out, "memory");
    for (name, kib) in [
        ("total", m.total_kib),
        ("free", m.free_kib),
        ("used", m.used_kib),
        ("kernel", m.kernel_kib),
    ] {
        say!(out, "  {name:<7}{kib:>12} KiB  {}", Human(kib));
    }
    say!(
        out,
        "MEM total_kib={} free_kib={} used_kib={} kernel_kib={}",
        m.total_kib,
        m.free_kib,
        m.used_kib,
        m.kernel_kib
    );
}

pub(super) fn cpus(c: &CpuInfo, out: &mut dyn Write) {
    table(
        out,
        &["CPU", "MPIDR", "STATE"],
        &[true, false, false],
        &|row| {
            for r in c.cpus() {
                row([&r.index, &format_args!("{:#x}", r.mpidr), &r.state]);
            }
        },
    );
    say!(out, "{} of {} CPUs online", c.online, c.cpus().len());
    say!(out, "CPUS online={}", c.online);
}

/// Column headers of `ps` and whether each is right-aligned.
const PS_HEADER: [&str; 8] = [
    "TID",
    "NAME",
    "STATE",
    "CPU",
    "POLICY",
    "MAPPED_KIB",
    "HIGH_KIB",
    "FAULTS",
];
const PS_RIGHT: [bool; 8] = [true, false, false, true, false, true, true, true];

/// Decimal digits of `n`.
fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

fn ps_widths(t: &ThreadRow) -> [usize; 8] {
    [
        digits(t.tid),
        t.name.as_str().len(),
        t.state.len(),
        t.cpu.map_or(1, |c| digits(c as u64)),
        t.policy.as_str().len(),
        digits(t.mapped_kib),
        digits(t.high_water_kib),
        digits(t.grow_faults),
    ]
}

/// Prints one `ps` line cell by cell, without building it in memory.
fn ps_line(out: &mut dyn Write, widths: &[usize; 8], cells: [&dyn core::fmt::Display; 8]) {
    for (i, cell) in cells.iter().enumerate() {
        let width = widths[i];
        let sep = if i > 0 { "  " } else { "" };
        // The last column is right-aligned, so no line ends in spaces.
        let _ = if PS_RIGHT[i] {
            write!(out, "{sep}{cell:>width$}")
        } else {
            write!(out, "{sep}{cell:<width$}")
        };
    }
    let _ = writeln!(out);
}

/// `ps`: two passes over the thread table, one for the column widths and one to print,
/// so that even 100,000 rows need no memory (a row that changed in between still prints,
/// only its column may be wider).
pub(super) fn ps(backend: &mut dyn Backend, limit: usize, out: &mut dyn Write) {
    let mut widths = PS_HEADER.map(str::len);
    let mut shown = 0usize;
    backend.threads(limit, &mut |t| {
        if shown < limit {
            shown += 1;
            for (w, c) in widths.iter_mut().zip(ps_widths(t)) {
                *w = (*w).max(c);
            }
        }
    });
    let h = &PS_HEADER;
    ps_line(
        out,
        &widths,
        [&h[0], &h[1], &h[2], &h[3], &h[4], &h[5], &h[6], &h[7]],
    );
    let mut printed = 0usize;
    let total = backend.threads(limit, &mut |t| {
        // A backend that returns more than asked must not flood the console.
        if printed >= limit {
            return;
        }
        printed += 1;
        let cpu: &dyn core::fmt::Display = match &t.cpu {
            Some(c) => c,
            None => &"-",
        };
        ps_line(
            out,
            &widths,
            [
                &t.tid,
                &t.name.as_str(),
                &t.state,
                cpu,
                &t.policy.as_str(),
                &t.mapped_kib,
                &t.high_water_kib,
                &t.grow_faults,
            ],
        );
    });
    if printed < total {
        say!(
            out,
            "showing {printed} of {total} threads (ps N shows more)"
        );
    }
    say!(out, "PS threads={total}");
}

pub(super) fn spawn(
    r: &SpawnReport,
    profile: &Profile,
    policy: Option<StackPolicy>,
    out: &mut dyn Write,
) {
    let policy = policy.map_or("the default stack policy", |p| match p {
        StackPolicy::Dynamic => "dynamic stacks",
        StackPolicy::Fixed => "fixed stacks",
    });
    say!(
        out,
        "started {} of {} {profile} {} ({policy})",
        r.created,
        r.requested,
        plural(r.requested as u64, "thread", "threads")
    );
    if r.failed > 0 {
        // No reason given: say what it almost always is.
        let reason = r.reason.as_ref().map_or("out of memory", |m| m.as_str());
        say!(
            out,
            "{} {} not started: {reason}",
            r.failed,
            plural(r.failed as u64, "thread", "threads")
        );
    }
    say!(
        out,
        "SPAWN requested={} created={} failed={}",
        r.requested,
        r.created,
        r.failed
    );
}

pub(super) fn stacks(s: &StackStats, out: &mut dyn Write) {
    let n = s.threads;
    say!(
        out,
        "{n} {} alive; stack memory now, per thread and in total:",
        plural(n, "thread", "threads")
    );
    // Per thread: "-" with no threads.
    let per_thread = |kib: u64| PerThread(kib, n);
    let dash_or = |b: Option<u64>| OrDash(b);
    table(
        out,
        &["", "PER THREAD", "TOTAL"],
        &[false, true, true],
        &|row| {
            row([
                &"stack mapped",
                &per_thread(s.mapped_kib),
                &format_args!("{} KiB", s.mapped_kib),
            ]);
            row([
                &"parked copies",
                &dash_or(s.parked_bytes.checked_div(n)),
                &format_args!("{} KiB", s.parked_kib()),
            ]);
            row([
                &"growth reserves (per CPU)",
                &per_thread(s.reserve_kib),
                &format_args!("{} KiB", s.reserve_kib),
            ]);
            row([
                &"page tables",
                &format_args!("{} B", s.pt_bytes_per_thread),
                &format_args!("{} KiB", s.pt_kib),
            ]);
            row([
                &"control block",
                &dash_or(s.tcb_total_bytes.checked_div(n)),
                &format_args!("{} KiB", s.tcb_total_bytes / 1024),
            ]);
            let all_per_thread = (n != 0).then(|| {
                u128::from(s.mapped_kib) * 1024 / u128::from(n)
                    + u128::from(s.parked_bytes / n)
                    + u128::from(s.reserve_kib) * 1024 / u128::from(n)
                    + u128::from(s.pt_bytes_per_thread)
                    + u128::from(s.tcb_total_bytes / n)
            });
            row([
                &"all of the above",
                &OrDash(all_per_thread),
                &format_args!(
                    "{} KiB",
                    u128::from(s.mapped_kib)
                        + u128::from(s.parked_kib())
                        + u128::from(s.reserve_kib)
                        + u128::from(s.pt_kib)
                        + u128::from(s.tcb_total_bytes) / 1024
                ),
            ]);
            row([
                &"fully mapped (kstack.max)",
                &per_thread(s.fixed_equiv_kib),
                &format_args!("{} KiB", s.fixed_equiv_kib),
            ]);
            row([
                &"Linux (fixed 16 KiB)",
                &format_args!("{LINUX_STACK_KIB}.0 KiB"),
                &format_args!("{} KiB", u128::from(n) * u128::from(LINUX_STACK_KIB)),
            ]);
        },
    );
    // The console contract's savings: what stacks hold against fully mapped ones. Held are
    // the mapped pages, the parked copies and the reserves' pages: those are stack memory
    // too (zeroed pages kept for growth; fixed stacks need none), so they count.
    let held = s
        .mapped_kib
        .saturating_add(s.parked_kib())
        .saturating_add(s.reserve_kib);
    let savings = savings_pct(held, s.fixed_equiv_kib);
    if n > 0 {
        let linux = savings_pct(held, n.saturating_mul(LINUX_STACK_KIB));
        // Negative savings (reserve pages held while only fixed stacks are left) read as more.
        let than = |p: Tenths| if p.is_negative() { "more" } else { "less" };
        say!(
            out,
            "stacks hold {}% {} than fully mapped, {}% {} than Linux's",
            savings.abs(),
            than(savings),
            linux.abs(),
            than(linux)
        );
    }
    say!(
        out,
        "since boot: grow faults {}, overflows {}, OOM kills {}, trimmed {} KiB; parked now {}",
        s.grow_faults,
        s.overflows,
        s.oom_kills,
        s.trimmed_kib,
        s.parked
    );
    say!(
        out,
        "STACKS threads={n} mapped_kib={} fixed_equiv_kib={} savings_pct={savings} grow_faults={} overflows={} oom_kills={} trimmed_kib={} pt_kib={} parked={} parked_kib={} misses={} grow_ahead={} reserve_kib={}",
        s.mapped_kib,
        s.fixed_equiv_kib,
        s.grow_faults,
        s.overflows,
        s.oom_kills,
        s.trimmed_kib,
        s.pt_kib,
        s.parked,
        s.parked_kib(),
        s.misses,
        s.grow_ahead,
        s.reserve_kib
    );
}

/// `kib / n` KiB with one decimal, or "-" with no threads.
struct PerThread(u64, u64);

impl fmt::Display for PerThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.1 == 0 {
            f.write_str("-")
        } else {
            write!(f, "{} KiB", Tenths::ratio(self.0, self.1))
        }
    }
}

/// Bytes, or "-" when there is nothing to divide by.
struct OrDash<T>(Option<T>);

impl<T: fmt::Display> fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(b) => write!(f, "{b} B"),
            None => f.write_str("-"),
        }
    }
}
