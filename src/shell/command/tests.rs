//! The command parser's tests: every command and option, and every error message.
use super::error::QUOTE_MAX;
use super::*;

fn ok(line: &str) -> Command {
    match parse(line) {
        Ok(Some(c)) => c,
        other => panic!("{line:?} parsed as {other:?}"),
    }
}

fn err(line: &str) -> String {
    match parse(line) {
        Err(e) => e.to_string(),
        other => panic!("{line:?} parsed as {other:?}"),
    }
}

#[test]
fn empty_lines_are_nothing() {
    assert_eq!(parse(""), Ok(None));
    assert_eq!(parse("   \t  "), Ok(None));
}

#[test]
fn argument_free_commands() {
    assert_eq!(ok("help"), Command::Help);
    assert_eq!(ok("mem"), Command::Mem);
    assert_eq!(ok("  cpus  "), Command::Cpus);
    assert_eq!(ok("settle"), Command::Settle);
    assert_eq!(ok("stacks"), Command::Stacks);
    assert_eq!(ok("trim"), Command::Trim);
    assert_eq!(ok("demo"), Command::Demo);
    assert_eq!(ok("poweroff"), Command::Poweroff);
    for name in [
        "help", "mem", "cpus", "settle", "stacks", "trim", "demo", "poweroff",
    ] {
        assert_eq!(
            err(&alloc::format!("{name} x")),
            alloc::format!("too many arguments for '{name}'")
        );
    }
}

#[test]
fn commands_are_lower_case() {
    assert_eq!(err("MEM"), "unknown command 'MEM' (type 'help')");
    assert_eq!(err("Help"), "unknown command 'Help' (type 'help')");
    assert_eq!(err("foo bar"), "unknown command 'foo' (type 'help')");
}

#[test]
fn ps_limits() {
    assert_eq!(ok("ps"), Command::Ps { limit: None });
    assert_eq!(ok("ps 5"), Command::Ps { limit: Some(5) });
    assert_eq!(err("ps 0"), "ps: limit '0' is out of range (at least 1)");
    assert_eq!(err("ps x"), "ps: limit 'x' is not a number");
    assert_eq!(err("ps -1"), "ps: limit '-1' is not a number");
    assert_eq!(
        err("ps 99999999999999999999"),
        "ps: limit '99999999999999999999' is out of range (at least 1)"
    );
    assert_eq!(err("ps 1 2"), "too many arguments for 'ps'");
}

#[test]
fn spawn_forms() {
    assert_eq!(
        ok("spawn 10 idle"),
        Command::Spawn {
            count: 10,
            profile: Profile::Idle,
            policy: None
        }
    );
    assert_eq!(
        ok("spawn 1 mix fixed"),
        Command::Spawn {
            count: 1,
            profile: Profile::Mix,
            policy: Some(StackPolicy::Fixed)
        }
    );
    assert_eq!(
        ok("spawn 10000000 churn dynamic"),
        Command::Spawn {
            count: MAX_SPAWN,
            profile: Profile::Churn,
            policy: Some(StackPolicy::Dynamic)
        }
    );
    assert_eq!(
        ok("spawn 3 overflow"),
        Command::Spawn {
            count: 3,
            profile: Profile::Overflow,
            policy: None
        }
    );
}

#[test]
fn spawn_errors() {
    assert_eq!(
        err("spawn"),
        "spawn: missing count (usage: spawn N PROFILE [dynamic|fixed])"
    );
    assert_eq!(
        err("spawn 4"),
        "spawn: missing profile (usage: spawn N PROFILE [dynamic|fixed])"
    );
    assert_eq!(err("spawn x idle"), "spawn: count 'x' is not a number");
    assert_eq!(err("spawn +4 idle"), "spawn: count '+4' is not a number");
    assert_eq!(
        err("spawn 0 idle"),
        "spawn: count '0' is out of range (1 to 10000000)"
    );
    assert_eq!(
        err("spawn 10000001 idle"),
        "spawn: count '10000001' is out of range (1 to 10000000)"
    );
    assert_eq!(
        err("spawn 99999999999999999999 idle"),
        "spawn: count '99999999999999999999' is out of range (1 to 10000000)"
    );
    assert_eq!(
        err("spawn 4 big"),
        "spawn: unknown profile 'big' (idle, mix, deep:SIZE, overflow, churn, chain, bigframe, inflate, json)"
    );
    assert_eq!(
        err("spawn 4 IDLE"),
        "spawn: unknown profile 'IDLE' (idle, mix, deep:SIZE, overflow, churn, chain, bigframe, inflate, json)"
    );
    assert_eq!(
        err("spawn 4 idle static"),
        "spawn: unknown policy 'static' (dynamic, fixed)"
    );
    assert_eq!(
        err("spawn 4 idle fixed x"),
        "too many arguments for 'spawn'"
    );
}

#[test]
fn deep_sizes() {
    let deep = |line: &str| match ok(line) {
        Command::Spawn {
            profile: Profile::Deep { bytes },
            ..
        } => bytes,
        other => panic!("{line:?} parsed as {other:?}"),
    };
    assert_eq!(deep("spawn 1 deep:4096"), 4096);
    assert_eq!(deep("spawn 1 deep:8k"), 8192);
    assert_eq!(deep("spawn 1 deep:16K"), 16384);
    assert_eq!(deep("spawn 1 deep:1m"), 1 << 20);
    assert_eq!(deep("spawn 1 deep:0x1000"), 4096);
    assert_eq!(deep("spawn 1 deep:1"), 1);
    assert_eq!(deep("spawn 1 deep:1073741823"), MAX_DEEP_BYTES - 1);
    assert_eq!(
        err("spawn 1 deep:"),
        "spawn: missing deep size (usage: deep:SIZE, e.g. deep:8k)"
    );
    assert_eq!(
        err("spawn 1 deep:0"),
        "spawn: deep size '0' is out of range (1 byte to under 1 GiB)"
    );
    assert_eq!(
        err("spawn 1 deep:1g"),
        "spawn: deep size '1g' is out of range (1 byte to under 1 GiB)"
    );
    assert_eq!(
        err("spawn 1 deep:1073741824"),
        "spawn: deep size '1073741824' is out of range (1 byte to under 1 GiB)"
    );
    assert_eq!(
        err("spawn 1 deep:99999999999999999999"),
        "spawn: deep size '99999999999999999999' is out of range (1 byte to under 1 GiB)"
    );
    assert_eq!(
        err("spawn 1 deep:4q"),
        "spawn: deep size '4q' is not a size: unexpected 'q' \
         (expected digits or 0x hex, then an optional k, m or g)"
    );
    for bad in ["x", "4q", "0x", "-1", "4kb", "+4"] {
        let e = err(&alloc::format!("spawn 1 deep:{bad}"));
        assert!(
            e.starts_with(&alloc::format!("spawn: deep size '{bad}' ")),
            "{e}"
        );
    }
}

#[test]
fn profile_display_round_trips() {
    let profiles = [
        Profile::Idle,
        Profile::Mix,
        Profile::Overflow,
        Profile::Churn,
        Profile::Chain,
        Profile::Bigframe,
        Profile::Inflate,
        Profile::Json,
        Profile::Deep { bytes: 1 },
        Profile::Deep { bytes: 1000 },
        Profile::Deep { bytes: 8192 },
        Profile::Deep { bytes: 3 << 20 },
        Profile::Deep {
            bytes: (1 << 20) + 1024,
        },
    ];
    for p in profiles {
        let text = p.to_string();
        assert_eq!(
            ok(&alloc::format!("spawn 1 {text}")),
            Command::Spawn {
                count: 1,
                profile: p,
                policy: None
            },
            "{text}"
        );
    }
    assert_eq!(Profile::Idle.to_string(), "idle");
    assert_eq!(Profile::Deep { bytes: 8192 }.to_string(), "deep:8k");
    assert_eq!(Profile::Deep { bytes: 1 << 20 }.to_string(), "deep:1m");
    assert_eq!(Profile::Deep { bytes: 1000 }.to_string(), "deep:1000");
}

#[test]
fn kill_targets() {
    assert_eq!(ok("kill all"), Command::Kill(KillTarget::All));
    assert_eq!(ok("kill 42"), Command::Kill(KillTarget::Tid(42)));
    assert_eq!(
        ok("kill 18446744073709551615"),
        Command::Kill(KillTarget::Tid(u64::MAX))
    );
    assert_eq!(err("kill"), "kill: expected 'all' or a thread id");
    assert_eq!(
        err("kill foo"),
        "kill: expected 'all' or a thread id, not 'foo'"
    );
    assert_eq!(
        err("kill -3"),
        "kill: expected 'all' or a thread id, not '-3'"
    );
    assert_eq!(
        err("kill 99999999999999999999"),
        "kill: thread id '99999999999999999999' is out of range (0 to 18446744073709551615)"
    );
    assert_eq!(err("kill all 3"), "too many arguments for 'kill'");
}

#[test]
fn bench_options() {
    assert_eq!(
        ok("bench"),
        Command::Bench {
            plan: BenchPlan::Full
        }
    );
    assert_eq!(
        ok("bench quick"),
        Command::Bench {
            plan: BenchPlan::Quick
        }
    );
    assert_eq!(
        ok("bench scale"),
        Command::Bench {
            plan: BenchPlan::Scale
        }
    );
    assert_eq!(
        err("bench slow"),
        "bench: unknown option 'slow' (expected 'quick', 'scale' or 'strategies')"
    );
    assert_eq!(err("bench quick quick"), "too many arguments for 'bench'");
    assert_eq!(
        ok("bench strategies"),
        Command::Bench {
            plan: BenchPlan::Strategies { quick: false }
        }
    );
    assert_eq!(
        ok("bench strategies quick"),
        Command::Bench {
            plan: BenchPlan::Strategies { quick: true }
        }
    );
    assert_eq!(
        err("bench strategies slow"),
        "bench strategies: unknown option 'slow' (expected 'quick')"
    );
    assert_eq!(
        err("bench strategies quick x"),
        "too many arguments for 'bench'"
    );
}

#[test]
fn long_and_non_ascii_input_is_quoted_safely() {
    // Multi-byte characters straddle the cut point; the message must stay valid.
    let word = "é".repeat(40);
    let e = err(&word);
    assert!(
        e.contains(&alloc::format!("'{}...'", "é".repeat(QUOTE_MAX))),
        "{e}"
    );
    // The message quotes the word cut short, then lists the nine profiles.
    let e = err(&alloc::format!("spawn 1 {}", "x".repeat(300)));
    assert!(e.len() < 140, "{e}");
    assert!(err("mem ünïcode").starts_with("too many arguments"));
}
