use super::*;

/// A backend that answers from fixed data and records every call, so tests can check
/// both what was printed and that a bad line changed nothing.
struct Fake {
    calls: Vec<String>,
    threads: Vec<ThreadRow>,
    stacks: StackStats,
    spawn_fails: usize,
}

impl Fake {
    fn new() -> Self {
        let threads = (0..50)
            .map(|i| ThreadRow {
                tid: i,
                name: if i == 0 {
                    ThreadName::new("idle/0")
                } else {
                    ThreadName::new(&format!("w{i}"))
                },
                state: if i % 2 == 0 { "sleeping" } else { "ready" },
                cpu: if i == 3 { None } else { Some(i as usize % 4) },
                policy: if i % 3 == 0 {
                    StackPolicy::Fixed
                } else {
                    StackPolicy::Dynamic
                },
                mapped_kib: 4 + i % 3 * 4,
                high_water_kib: 4 + i % 4 * 4,
                grow_faults: i * 1000,
            })
            .collect();
        Self {
            calls: Vec::new(),
            threads,
            stacks: StackStats {
                threads: 1000,
                mapped_kib: 4000,
                fixed_equiv_kib: 16000,
                grow_faults: 50,
                overflows: 1,
                oom_kills: 0,
                trimmed_kib: 12,
                pt_kib: 16,
                tcb_total_bytes: 320_000,
                reserve_kib: 0,
                pt_bytes_per_thread: 40,
                parked: 0,
                parked_bytes: 0,
                misses: 2,
                grow_ahead: 7,
            },
            spawn_fails: 0,
        }
    }
}

impl Backend for Fake {
    fn mem(&self) -> MemInfo {
        MemInfo {
            total_kib: 131072,
            free_kib: 120000,
            used_kib: 11072,
            kernel_kib: 2048,
        }
    }
    fn cpus(&self) -> CpuInfo {
        let mut c = CpuInfo::new(2);
        for (index, state) in ["online", "online", "failed"].into_iter().enumerate() {
            c.push(CpuRow {
                index,
                mpidr: 0x8000_0000 + index as u64,
                state,
            });
        }
        c
    }
    fn threads(&self, limit: usize, row: &mut dyn FnMut(&ThreadRow)) -> usize {
        self.threads.iter().take(limit).for_each(row);
        self.threads.len()
    }
    fn spawn(
        &mut self,
        count: usize,
        profile: &Profile,
        policy: Option<StackPolicy>,
        out: &mut dyn Write,
    ) -> SpawnReport {
        self.calls
            .push(format!("spawn {count} {profile} {policy:?}"));
        let _ = writeln!(out, "spawning...");
        let failed = self.spawn_fails.min(count);
        SpawnReport {
            requested: count,
            created: count - failed,
            failed,
            reason: (failed > 0).then(|| Message::of("out of memory")),
        }
    }
    fn settle(&mut self, _out: &mut dyn Write) -> u64 {
        self.calls.push(String::from("settle"));
        7
    }
    fn stacks(&self) -> StackStats {
        self.stacks
    }
    fn trim(&mut self) -> u64 {
        self.calls.push(String::from("trim"));
        96
    }
    fn kill(&mut self, target: &KillTarget) -> Result<u64, Message> {
        self.calls.push(format!("kill {target:?}"));
        match *target {
            KillTarget::All => Ok(49),
            KillTarget::Tid(0) => Err(Message::of("thread 0 is not a workload thread")),
            KillTarget::Tid(t) if t < 50 => Ok(1),
            KillTarget::Tid(t) => {
                let mut m = Message::new();
                let _ = write!(m, "no thread {t}");
                Err(m)
            }
        }
    }
    fn bench(&mut self, plan: BenchPlan, out: &mut dyn Write) {
        self.calls.push(format!("bench {plan:?}"));
        let _ = writeln!(out, "BENCH name=fake");
    }
    fn demo(&mut self, out: &mut dyn Write) {
        self.calls.push(String::from("demo"));
        let _ = writeln!(out, "demo!");
    }
    fn poweroff(&mut self, out: &mut dyn Write) {
        self.calls.push(String::from("poweroff"));
        let _ = writeln!(out, "bye");
    }
}

fn exec(fake: &mut Fake, line: &str) -> String {
    let mut out = String::new();
    execute(fake, line, &mut out);
    out
}

/// The lines of `out` that start with `tag` followed by a space.
fn summary<'a>(out: &'a str, tag: &str) -> Vec<&'a str> {
    out.lines()
        .filter(|l| l.strip_prefix(tag).is_some_and(|r| r.starts_with(' ')))
        .collect()
}

fn only_summary<'a>(out: &'a str, tag: &str) -> &'a str {
    let lines = summary(out, tag);
    assert_eq!(lines.len(), 1, "{out}");
    lines[0]
}

#[test]
fn help_lists_every_command() {
    let out = exec(&mut Fake::new(), "help");
    for cmd in [
        "help", "mem", "cpus", "ps", "spawn", "settle", "stacks", "trim", "kill", "bench", "demo",
        "poweroff",
    ] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(cmd)),
            "{cmd} missing from\n{out}"
        );
    }
    assert!(out.contains("deep:SIZE"));
}

#[test]
fn quotients_round_half_up_and_pad_as_a_whole() {
    let q = |a, b, places| format!("{}", Quotient::new(a, b, places));
    assert_eq!(q(1, 3, 2), "0.33");
    assert_eq!(q(2, 3, 2), "0.67");
    assert_eq!(q(2, 3, 1), "0.7");
    assert_eq!(q(1, 8, 2), "0.13", "a half rounds up");
    assert_eq!(q(7, 2, 0), "4");
    assert_eq!(q(400, 100, 2), "4.00");
    assert_eq!(q(5, 0, 2), "0.00", "nothing to divide by");
    assert_eq!(q(u64::MAX, 1, 2), "18446744073709551615.00");
    assert_eq!(
        q(1, 1, 99),
        format!("1.{}", "0".repeat(Quotient::MAX_PLACES as usize))
    );
    assert_eq!(format!("[{:>7}]", Quotient::new(1, 3, 2)), "[   0.33]");
    assert_eq!(format!("[{:<6}]", Quotient::new(1, 3, 1)), "[0.3   ]");
}

#[test]
fn mem_summary() {
    let out = exec(&mut Fake::new(), "mem");
    assert_eq!(
        only_summary(&out, "MEM"),
        "MEM total_kib=131072 free_kib=120000 used_kib=11072 kernel_kib=2048"
    );
    assert!(out.contains("(128.0 MiB)"), "{out}");
    assert!(out.contains("(2.0 MiB)"), "{out}");
}

#[test]
fn cpus_summary_and_table() {
    let out = exec(&mut Fake::new(), "cpus");
    assert_eq!(only_summary(&out, "CPUS"), "CPUS online=2");
    assert!(out.contains("0x80000002  failed"), "{out}");
    assert!(out.contains("2 of 3 CPUs online"), "{out}");
}

#[test]
fn ps_default_limit_and_note() {
    let mut fake = Fake::new();
    let out = exec(&mut fake, "ps");
    assert_eq!(only_summary(&out, "PS"), "PS threads=50");
    assert!(out.contains("showing 20 of 50 threads"), "{out}");
    // Header plus 20 rows plus note plus summary.
    assert_eq!(out.lines().count(), 23, "{out}");

    let out = exec(&mut fake, "ps 3");
    assert_eq!(out.lines().count(), 6, "{out}");
    assert!(out.contains("showing 3 of 50 threads"), "{out}");

    let out = exec(&mut fake, "ps 1000000");
    assert!(!out.contains("showing"), "{out}");
    assert_eq!(only_summary(&out, "PS"), "PS threads=50");
}

#[test]
fn ps_columns_are_aligned() {
    let out = exec(&mut Fake::new(), "ps 12");
    let lines: Vec<&str> = out.lines().take(13).collect();
    assert!(lines[0].starts_with("TID  NAME    STATE"), "{out}");
    // Right-aligned numeric columns end at the same place as their header.
    let faults_end = lines[0].len();
    assert!(lines[0].ends_with("FAULTS"));
    for l in &lines[1..] {
        assert_eq!(l.len(), faults_end, "{l:?}\n{out}");
    }
    assert!(lines[4].contains(" -  "), "no cpu shown as '-': {out}");
    assert!(lines[1].contains("fixed"));
    assert!(lines[2].contains("dynamic"));
}

#[test]
fn ps_on_a_backend_that_ignores_the_limit() {
    struct Greedy(Fake);
    impl Backend for Greedy {
        fn mem(&self) -> MemInfo {
            self.0.mem()
        }
        fn cpus(&self) -> CpuInfo {
            self.0.cpus()
        }
        fn threads(&self, _limit: usize, row: &mut dyn FnMut(&ThreadRow)) -> usize {
            self.0.threads(usize::MAX, row)
        }
        fn spawn(
            &mut self,
            c: usize,
            p: &Profile,
            s: Option<StackPolicy>,
            o: &mut dyn Write,
        ) -> SpawnReport {
            self.0.spawn(c, p, s, o)
        }
        fn settle(&mut self, o: &mut dyn Write) -> u64 {
            self.0.settle(o)
        }
        fn stacks(&self) -> StackStats {
            self.0.stacks()
        }
        fn trim(&mut self) -> u64 {
            self.0.trim()
        }
        fn kill(&mut self, t: &KillTarget) -> Result<u64, Message> {
            self.0.kill(t)
        }
        fn bench(&mut self, q: BenchPlan, o: &mut dyn Write) {
            self.0.bench(q, o);
        }
        fn demo(&mut self, o: &mut dyn Write) {
            self.0.demo(o);
        }
        fn poweroff(&mut self, o: &mut dyn Write) {
            self.0.poweroff(o);
        }
    }
    let mut out = String::new();
    execute(&mut Greedy(Fake::new()), "ps 2", &mut out);
    assert_eq!(out.lines().count(), 5, "{out}");
}

#[test]
fn spawn_summary() {
    let mut fake = Fake::new();
    let out = exec(&mut fake, "spawn 100 deep:8k fixed");
    assert_eq!(fake.calls, ["spawn 100 deep:8k Some(Fixed)"]);
    assert!(out.starts_with("spawning...\n"), "{out}");
    assert_eq!(
        only_summary(&out, "SPAWN"),
        "SPAWN requested=100 created=100 failed=0"
    );
    assert!(!out.contains("not started"));

    fake.spawn_fails = 30;
    let out = exec(&mut fake, "spawn 100 idle");
    assert_eq!(fake.calls[1], "spawn 100 idle None");
    assert_eq!(
        only_summary(&out, "SPAWN"),
        "SPAWN requested=100 created=70 failed=30"
    );
    assert!(
        out.contains("30 threads not started: out of memory"),
        "{out}"
    );
}

#[test]
fn settle_trim_kill_summaries() {
    let mut fake = Fake::new();
    let out = exec(&mut fake, "settle");
    assert_eq!(only_summary(&out, "SETTLE"), "SETTLE threads=7");
    let out = exec(&mut fake, "trim");
    assert_eq!(only_summary(&out, "TRIM"), "TRIM freed_kib=96");
    let out = exec(&mut fake, "kill all");
    assert_eq!(only_summary(&out, "KILL"), "KILL killed=49");
    let out = exec(&mut fake, "kill 5");
    assert_eq!(only_summary(&out, "KILL"), "KILL killed=1");
    assert!(out.contains("killed 1 thread\n"), "{out}");
    assert_eq!(fake.calls, ["settle", "trim", "kill All", "kill Tid(5)"]);
}

#[test]
fn kill_refused_by_the_kernel_is_an_error() {
    let mut fake = Fake::new();
    let out = exec(&mut fake, "kill 42000");
    assert_eq!(out, "error: kill: no thread 42000\n");
    let out = exec(&mut fake, "kill 0");
    assert_eq!(out, "error: kill: thread 0 is not a workload thread\n");
    assert!(summary(&out, "KILL").is_empty());
}

#[test]
fn stacks_summary_and_breakdown() {
    let mut fake = Fake::new();
    let out = exec(&mut fake, "stacks");
    assert_eq!(
        only_summary(&out, "STACKS"),
        "STACKS threads=1000 mapped_kib=4000 fixed_equiv_kib=16000 savings_pct=75.0 \
         grow_faults=50 overflows=1 oom_kills=0 trimmed_kib=12 pt_kib=16 parked=0 parked_kib=0 \
         misses=2 grow_ahead=7 reserve_kib=0"
    );
    // Per thread: 4.0 KiB of stack, 40 B of page table (the backend's figure, not
    // pt_kib / threads), 320 B of control block, next to Linux's 16 KiB.
    assert!(out.contains("4.0 KiB"), "{out}");
    assert!(out.contains("40 B"), "{out}");
    assert!(out.contains("320 B"), "{out}");
    assert!(out.contains("Linux (fixed 16 KiB)"), "{out}");
    assert!(
        out.contains("75.0% less than fully mapped, 75.0% less than Linux's"),
        "{out}"
    );
    assert!(out.contains("16000 KiB"), "{out}");

    fake.stacks = StackStats::default();
    let out = exec(&mut fake, "stacks");
    assert_eq!(
        only_summary(&out, "STACKS"),
        "STACKS threads=0 mapped_kib=0 fixed_equiv_kib=0 savings_pct=0.0 \
         grow_faults=0 overflows=0 oom_kills=0 trimmed_kib=0 pt_kib=0 parked=0 parked_kib=0 \
         misses=0 grow_ahead=0 reserve_kib=0"
    );

    // Parked stacks count with their copies: 800 of 1000 parked in 128-byte blocks,
    // the other 200 with one page each.
    fake.stacks = StackStats {
        threads: 1000,
        mapped_kib: 800,
        fixed_equiv_kib: 16000,
        tcb_total_bytes: 320_000,
        pt_bytes_per_thread: 40,
        parked: 800,
        parked_bytes: 800 * 128,
        ..StackStats::default()
    };
    let out = exec(&mut fake, "stacks");
    // 100 × (1 − (800 + 100) / 16000) = 94.375
    assert_eq!(
        only_summary(&out, "STACKS"),
        "STACKS threads=1000 mapped_kib=800 fixed_equiv_kib=16000 savings_pct=94.4 \
         grow_faults=0 overflows=0 oom_kills=0 trimmed_kib=0 pt_kib=0 parked=800 parked_kib=100 \
         misses=0 grow_ahead=0 reserve_kib=0"
    );
    assert!(out.contains("parked copies"), "{out}");
    assert!(out.contains("102 B"), "{out}");
    // 819 B of stack + 102 B of copies + 40 B of table + 320 B of control block.
    assert!(out.contains("1281 B"), "{out}");
    assert!(out.contains("parked now 800"), "{out}");

    // Reserve pages are held stack memory: 100 × (1 − (800 + 100 + 64) / 16000) = 93.975.
    fake.stacks.reserve_kib = 64;
    let out = exec(&mut fake, "stacks");
    assert_eq!(
        only_summary(&out, "STACKS"),
        "STACKS threads=1000 mapped_kib=800 fixed_equiv_kib=16000 savings_pct=94.0 \
         grow_faults=0 overflows=0 oom_kills=0 trimmed_kib=0 pt_kib=0 parked=800 parked_kib=100 \
         misses=0 grow_ahead=0 reserve_kib=64"
    );
    // 64 KiB over 1000 threads: 0.1 KiB (65 B) each, in the breakdown and its sum.
    assert!(out.contains("0.1 KiB"), "{out}");
    assert!(out.contains("1346 B"), "{out}");
    assert!(out.contains("94.0% less than fully mapped"), "{out}");

    // Only fixed stacks (the system threads after `kill all`) and a reserve still held:
    // the reserve is more than fixed stacks would hold, so the savings are negative.
    fake.stacks = StackStats {
        threads: 4,
        mapped_kib: 64,
        fixed_equiv_kib: 64,
        reserve_kib: 16,
        ..StackStats::default()
    };
    let out = exec(&mut fake, "stacks");
    assert!(
        only_summary(&out, "STACKS").contains(" savings_pct=-25.0 "),
        "{out}"
    );
    assert!(
        out.contains("stacks hold 25.0% more than fully mapped, 25.0% more than Linux's"),
        "{out}"
    );
}

#[test]
fn stacks_with_huge_counters_does_not_overflow() {
    let mut fake = Fake::new();
    fake.stacks = StackStats {
        threads: u64::MAX,
        mapped_kib: u64::MAX,
        fixed_equiv_kib: u64::MAX,
        grow_faults: u64::MAX,
        overflows: u64::MAX,
        oom_kills: u64::MAX,
        trimmed_kib: u64::MAX,
        pt_kib: u64::MAX,
        tcb_total_bytes: u64::MAX,
        reserve_kib: u64::MAX,
        pt_bytes_per_thread: u64::MAX,
        parked: u64::MAX,
        parked_bytes: u64::MAX,
        misses: u64::MAX,
        grow_ahead: u64::MAX,
    };
    let out = exec(&mut fake, "stacks");
    assert!(only_summary(&out, "STACKS").contains("savings_pct=0.0"));
}

#[test]
fn savings_rounding() {
    let pct = |m, f| savings_pct(m, f).to_string();
    assert_eq!(pct(4000, 16000), "75.0");
    assert_eq!(pct(1, 3), "66.7");
    assert_eq!(pct(2, 3), "33.3");
    assert_eq!(pct(0, 16), "100.0");
    assert_eq!(pct(16, 16), "0.0");
    assert_eq!(pct(5, 0), "0.0");
    // 100 × (1 − 1999/2000) = 0.05 rounds half up to 0.1.
    assert_eq!(pct(1999, 2000), "0.1");
    assert_eq!(pct(4004, 16000), "75.0");
    assert_eq!(pct(4008, 16000), "75.0");
    assert_eq!(pct(4009, 16000), "74.9");
    // More mapped than the fixed equivalent is reported, not hidden.
    assert_eq!(pct(17, 16), "-6.3");
    assert_eq!(
        pct(u64::MAX, 1),
        format!("-{}.0", (u128::from(u64::MAX) - 1) * 100)
    );
}

#[test]
fn long_commands_reach_the_backend() {
    let mut fake = Fake::new();
    let out = exec(&mut fake, "bench quick");
    assert_eq!(out, "BENCH name=fake\n");
    exec(&mut fake, "bench");
    exec(&mut fake, "bench scale");
    exec(&mut fake, "bench strategies");
    exec(&mut fake, "bench strategies quick");
    exec(&mut fake, "demo");
    exec(&mut fake, "poweroff");
    assert_eq!(
        fake.calls,
        [
            "bench Quick",
            "bench Full",
            "bench Scale",
            "bench Strategies { quick: false }",
            "bench Strategies { quick: true }",
            "demo",
            "poweroff"
        ]
    );
}

#[test]
fn errors_change_nothing() {
    let mut fake = Fake::new();
    for line in [
        "foo",
        "MEM",
        "mem x",
        "spawn",
        "spawn x idle",
        "spawn 99999999999999999999 idle",
        "spawn 10000001 idle",
        "spawn 4 big",
        "spawn 4 deep:0",
        "spawn 4 deep:2g",
        "spawn 4 idle static",
        "spawn 4 idle fixed extra",
        "kill",
        "kill bob",
        "kill 99999999999999999999",
        "kill all now",
        "trim now",
        "settle 1",
        "bench slow",
        "bench quick scale",
        "bench strategies slow",
        "bench strategies quick now",
        "demo 2",
        "poweroff now",
        "ps 0",
    ] {
        let out = exec(&mut fake, line);
        assert!(out.starts_with("error: "), "{line:?}: {out}");
        assert_eq!(out.lines().count(), 1, "{line:?}: {out}");
    }
    assert!(fake.calls.is_empty(), "{:?}", fake.calls);
    assert_eq!(
        exec(&mut fake, "foo"),
        "error: unknown command 'foo' (type 'help')\n"
    );
    assert_eq!(exec(&mut fake, "   "), "");
}

#[test]
fn init_commands_are_echoed_after_a_prompt() {
    let mut fake = Fake::new();
    let mut out = String::new();
    run_init(&mut fake, "spawn 2 idle; ; trim;bogus", &mut out);
    let prompts: Vec<&str> = out.lines().filter(|l| l.starts_with(PROMPT)).collect();
    assert_eq!(
        prompts,
        [
            "dynstack> spawn 2 idle",
            "dynstack> trim",
            "dynstack> bogus"
        ]
    );
    assert!(out.contains("error: unknown command 'bogus'"));
    assert_eq!(fake.calls, ["spawn 2 idle None", "trim"]);
}

#[test]
fn interactive_shell_runs_lines_and_prompts() {
    let mut fake = Fake::new();
    let mut shell = Shell::new();
    let mut out = String::new();
    shell.start(&mut out);
    assert!(out.ends_with(PROMPT));
    out.clear();
    for &b in b"tri\x1b[Dm\r\nkil\x03cpus x\n\n" {
        shell.feed(&mut fake, b, &mut out);
    }
    assert_eq!(
        out,
        format!(
            "trim\ntrimmed 96 KiB of stack from sleeping threads\nTRIM freed_kib=96\n\
             {PROMPT}kil^C\n{PROMPT}cpus x\nerror: too many arguments for 'cpus'\n\
             {PROMPT}\n{PROMPT}"
        )
    );
    assert_eq!(fake.calls, ["trim"]);
}

/// Input that is mostly command-like (so that parsing goes deep) with random bytes,
/// editing keys and escape sequences mixed in.
fn random_input(rng: &mut crate::rng::XorShift) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "help",
        "mem",
        "cpus",
        "ps",
        "spawn",
        "settle",
        "stacks",
        "trim",
        "kill",
        "bench",
        "demo",
        "poweroff",
        "all",
        "quick",
        "idle",
        "mix",
        "deep:",
        "deep:8k",
        "overflow",
        "churn",
        "dynamic",
        "fixed",
        "0",
        "1",
        "20",
        "-1",
        "0x",
        "4k",
        "1g",
        "16K",
        "99999999999999999999",
        "18446744073709551616",
        "10000000",
        "\u{e9}",
        " ",
        " ",
        "\t",
        "\r",
        "\n",
        "\r\n",
        "\x7f",
        "\x08",
        "\x03",
        "\x15",
        "\x1b[A",
        "\x1b[1;5C",
        "\x1b",
        "\x1bO",
        ";",
    ];
    let mut bytes = Vec::new();
    for _ in 0..rng.below(40) {
        match rng.below(4) {
            0 => bytes.push(rng.next_u64() as u8),
            1 => {
                let n = rng.below(300);
                bytes.extend((0..n).map(|_| b'0' + rng.below(10) as u8));
            }
            _ => bytes.extend_from_slice(WORDS[rng.below(WORDS.len())].as_bytes()),
        }
    }
    bytes
}

#[test]
fn random_input_never_panics_and_always_answers() {
    let mut rng = crate::rng::XorShift::new(0x9e37_79b9_7f4a_7c15);
    let mut fake = Fake::new();
    let mut shell = Shell::new();
    for _ in 0..3000 {
        let bytes = random_input(&mut rng);

        // The interactive path, byte by byte.
        let mut out = String::new();
        for &b in &bytes {
            shell.feed(&mut fake, b, &mut out);
        }

        // The same bytes as lines, each checked on its own.
        let mut editor = LineEditor::new();
        let mut echo = String::new();
        for &b in &bytes {
            let LineEvent::Line(line) = editor.feed(b, &mut echo) else {
                continue;
            };
            assert!(line.len() <= line::MAX_LINE);
            assert!(line.bytes().all(|b| (b' '..=b'~').contains(&b)), "{line:?}");
            let calls = fake.calls.len();
            let out = exec(&mut fake, &line);
            match parse(&line) {
                Ok(None) => assert_eq!(out, "", "{line:?}"),
                Ok(Some(_)) => assert!(!out.is_empty(), "{line:?}"),
                Err(e) => {
                    assert_eq!(out, format!("error: {e}\n"), "{line:?}");
                    assert_eq!(fake.calls.len(), calls, "{line:?}");
                }
            }
        }

        // And as `init=` text, which is not filtered by the editor.
        let text = String::from_utf8_lossy(&bytes);
        let mut out = String::new();
        run_init(&mut fake, &text, &mut out);
    }
}

mod noalloc;
