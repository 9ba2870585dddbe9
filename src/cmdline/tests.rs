use super::*;
use alloc::format;

fn messages(errors: &[ArgError]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

fn assert_valid(stack: &StackConfig) {
    assert_eq!(stack.initial % PAGE_SIZE, 0, "{stack}");
    assert_eq!(stack.max % PAGE_SIZE, 0, "{stack}");
    assert_eq!(stack.guard % PAGE_SIZE, 0, "{stack}");
    assert!(MIN_STACK <= stack.initial, "{stack}");
    assert!(stack.initial <= stack.max, "{stack}");
    assert!(stack.max <= MAX_STACK, "{stack}");
    assert!((MIN_GUARD..=MAX_GUARD).contains(&stack.guard), "{stack}");
}

#[test]
fn empty_line_gives_defaults() {
    for line in ["", "   ", "\t\n "] {
        let (args, errors) = parse(line);
        assert!(errors.is_empty());
        assert_eq!(args, KernelArgs::default());
    }
    let args = KernelArgs::default();
    assert_eq!(args.init, "demo");
    assert_eq!(args.seed, DEFAULT_SEED);
    assert_eq!(args.stack.policy, StackPolicy::Dynamic);
    assert_eq!(
        (args.stack.initial, args.stack.max, args.stack.guard),
        (4096, 16384, 4096)
    );
    assert_eq!(
        args.stack.to_string(),
        "policy=dynamic initial=4k max=16k guard=4k"
    );
}

#[test]
fn every_argument_applies() {
    let (args, errors) = parse(
        "kstack.policy=fixed kstack.initial=8k kstack.max=1M kstack.guard=0x2000 \
         seed=0xdeadBEEF init=ps",
    );
    assert!(errors.is_empty(), "{:?}", messages(&errors));
    assert_eq!(args.stack.policy, StackPolicy::Fixed);
    assert_eq!(args.stack.initial, 8192);
    assert_eq!(args.stack.max, 1 << 20);
    assert_eq!(args.stack.guard, 0x2000);
    assert_eq!(args.seed, 0xdead_beef);
    assert_eq!(args.init, "ps");
    let (args, _) = parse("seed=18446744073709551615 kstack.max=64m kstack.guard=1m");
    assert_eq!(args.seed, u64::MAX);
    assert_eq!(args.stack.max, 64 << 20);
    assert_eq!(args.stack.guard, 1 << 20);
}

#[test]
fn park_after_takes_off_or_milliseconds() {
    let (args, errors) = parse("");
    assert!(errors.is_empty());
    assert_eq!(args.stack.park_after_ms, Some(DEFAULT_PARK_AFTER_MS));
    let (args, errors) = parse("kstack.park_after=0");
    assert!(errors.is_empty(), "{:?}", messages(&errors));
    assert_eq!(args.stack.park_after_ms, Some(0));
    let (args, _) = parse("kstack.park_after=86400000");
    assert_eq!(args.stack.park_after_ms, Some(86_400_000));
    let (args, _) = parse("kstack.park_after=250 kstack.park_after=off");
    assert_eq!(args.stack.park_after_ms, None);
    for bad in [
        "x",
        "-1",
        "1.5",
        "86400001",
        "0x10",
        "",
        "99999999999999999999",
    ] {
        let (args, errors) = parse(&format!("kstack.park_after=5 kstack.park_after={bad}"));
        assert_eq!(args.stack.park_after_ms, Some(5), "{bad}");
        assert_eq!(
            messages(&errors),
            [format!(
                "kstack.park_after={bad}: expected off or milliseconds from 0 to 86400000 (5 kept)"
            )],
        );
    }
    let (_, errors) = parse("kstack.park_after=junk");
    assert_eq!(
        messages(&errors),
        ["kstack.park_after=junk: expected off or milliseconds from 0 to 86400000 (default 10000 kept)"]
    );
}

#[test]
fn later_arguments_override_earlier_ones() {
    let (args, errors) = parse("seed=1 seed=2 kstack.policy=fixed kstack.policy=dynamic");
    assert!(errors.is_empty());
    assert_eq!(args.seed, 2);
    assert_eq!(args.stack.policy, StackPolicy::Dynamic);
    // A bad later argument keeps the earlier good one, and says so.
    let (args, errors) = parse("kstack.max=32k kstack.max=junk");
    assert_eq!(args.stack.max, 32 << 10);
    assert_eq!(
        messages(&errors),
        [
            "kstack.max=junk: not a size: unexpected 'j' (expected digits or 0x hex, \
          then an optional k, m or g) (32k kept)"
        ]
    );
}

#[test]
fn both_quote_styles() {
    let (args, errors) = parse(r#"init="spawn 10 idle; stacks" seed=3"#);
    assert!(errors.is_empty());
    assert_eq!(args.init, "spawn 10 idle; stacks");
    assert_eq!(args.seed, 3);
    let (args, errors) = parse("init='spawn 10 idle;  stacks ;' quiet");
    assert!(errors.is_empty());
    assert_eq!(args.init, "spawn 10 idle;  stacks ;");
    assert_eq!(args.ignored, ["quiet"]);
    assert_eq!(
        split_commands(&args.init).collect::<Vec<_>>(),
        ["spawn 10 idle", "stacks"]
    );
}

#[test]
fn quotes_anywhere_as_in_a_shell() {
    let (args, _) = parse(r#"init=a" b "'c "d'"#);
    assert_eq!(args.init, r#"a b c "d"#);
    let (args, _) = parse(r#""init=x y""#);
    assert_eq!(args.init, "x y");
    let (args, _) = parse(r#"init="it's""#);
    assert_eq!(args.init, "it's");
    let (args, errors) = parse(r#"init="""#);
    assert!(errors.is_empty());
    assert_eq!(args.init, "");
    assert_eq!(split_commands(&args.init).count(), 0);
    let (args, _) = parse(r#"kstack.max="32k""#);
    assert_eq!(args.stack.max, 32 << 10);
}

#[test]
fn unterminated_quotes_are_errors() {
    let (args, errors) = parse(r#"seed=5 init="ps; stacks seed=9"#);
    assert_eq!(args.init, "demo");
    assert_eq!(args.seed, 5);
    assert_eq!(
        messages(&errors),
        [r#"init="ps; stacks seed=9: unterminated double quote (default "demo" kept)"#]
    );
    let (_, errors) = parse("foo='bar");
    assert_eq!(messages(&errors), ["foo='bar: unterminated single quote"]);
    let (args, errors) = parse("kstack.max='32k");
    assert_eq!(args.stack.max, 16 << 10);
    assert_eq!(
        messages(&errors),
        ["kstack.max='32k: unterminated single quote (default 16k kept)"]
    );
}

#[test]
fn firmware_words_are_ignored_not_errors() {
    let (args, errors) = parse(
        "console=ttyAMA0,115200 console=tty1 quiet 8250.nr_uarts=1 kstack \
         root=/dev/mmcblk0p2 kstackx.max=1 =x",
    );
    assert!(errors.is_empty(), "{:?}", messages(&errors));
    assert_eq!(args.console, ConsoleChoice::Pl011);
    assert_eq!(
        args.ignored,
        [
            "console=tty1",
            "quiet",
            "8250.nr_uarts=1",
            "kstack",
            "root=/dev/mmcblk0p2",
            "kstackx.max=1",
            "=x"
        ]
    );
    assert_eq!(args.stack, StackConfig::default());
}

#[test]
fn unknown_kstack_keys_are_errors() {
    let (args, errors) = parse("kstack.size=8k kstack. kstack.MAX=8k");
    assert_eq!(args.stack, StackConfig::default());
    assert_eq!(errors.len(), 3);
    assert_eq!(
        errors[0].to_string(),
        "kstack.size=8k: unknown setting kstack.size (known: kstack.policy, \
         kstack.initial, kstack.max, kstack.guard, kstack.park_after, kstack.strategy, \
         kstack.lookahead)"
    );
    assert_eq!(errors[1].kind, ArgErrorKind::UnknownStackKey(String::new()));
    assert_eq!(errors[2].kind, ArgErrorKind::UnknownStackKey("MAX".into()));
}

#[test]
fn error_kinds_and_messages() {
    let cases: &[(&str, ArgErrorKind, &str)] = &[
        (
            "kstack.max=3000",
            ArgErrorKind::NotPageMultiple,
            "kstack.max=3000: not a multiple of 4096 (default 16k kept)",
        ),
        (
            "kstack.initial=0",
            ArgErrorKind::TooSmall { min: 4096 },
            "kstack.initial=0: smaller than the 4k minimum (default 4k kept)",
        ),
        (
            "kstack.max=128m",
            ArgErrorKind::TooLarge { max: 64 << 20 },
            "kstack.max=128m: larger than the 64m maximum (default 16k kept)",
        ),
        (
            "kstack.guard=2m",
            ArgErrorKind::TooLarge { max: 1 << 20 },
            "kstack.guard=2m: larger than the 1m maximum (default 4k kept)",
        ),
        (
            "kstack.guard=0",
            ArgErrorKind::TooSmall { min: 4096 },
            "kstack.guard=0: smaller than the 4k minimum (default 4k kept)",
        ),
        (
            "kstack.guard=",
            ArgErrorKind::BadSize(SizeError::Empty),
            "kstack.guard=: not a size: empty (default 4k kept)",
        ),
        (
            "kstack.initial=-4k",
            ArgErrorKind::BadSize(SizeError::Negative),
            "kstack.initial=-4k: not a size: negative (default 4k kept)",
        ),
        (
            "kstack.policy=lazy",
            ArgErrorKind::BadPolicy(PolicyError {
                text: "lazy".into(),
            }),
            "kstack.policy=lazy: unknown policy \"lazy\" (expected dynamic or fixed) \
             (default dynamic kept)",
        ),
        (
            "seed=abc",
            ArgErrorKind::BadNumber,
            "seed=abc: not a number (expected decimal or 0x hex) (default 2024 kept)",
        ),
        (
            "seed=-1",
            ArgErrorKind::BadNumber,
            "seed=-1: not a number (expected decimal or 0x hex) (default 2024 kept)",
        ),
        (
            "seed=18446744073709551616",
            ArgErrorKind::NumberTooLarge,
            "seed=18446744073709551616: does not fit in 64 bits (default 2024 kept)",
        ),
        (
            "seed",
            ArgErrorKind::MissingValue,
            "seed: missing value (expected KEY=VALUE) (default 2024 kept)",
        ),
        (
            "init",
            ArgErrorKind::MissingValue,
            "init: missing value (expected KEY=VALUE) (default \"demo\" kept)",
        ),
    ];
    for (line, kind, message) in cases {
        let (args, errors) = parse(line);
        assert_eq!(errors.len(), 1, "{line}");
        assert_eq!(&errors[0].kind, kind, "{line}");
        assert_eq!(errors[0].to_string(), *message);
        assert_eq!(args.stack, StackConfig::default(), "{line}");
        assert_eq!(args.seed, DEFAULT_SEED, "{line}");
    }
}

#[test]
fn bad_arguments_do_not_stop_good_ones() {
    let (args, errors) =
        parse("kstack.max=3000 kstack.guard=8k seed=x seed=12 kstack.policy=fixed");
    assert_eq!(errors.len(), 2);
    assert_eq!(args.stack.max, 16 << 10);
    assert_eq!(args.stack.guard, 8 << 10);
    assert_eq!(args.seed, 12);
    assert_eq!(args.stack.policy, StackPolicy::Fixed);
}

#[test]
fn initial_above_max_restores_both_defaults() {
    let (args, errors) = parse("kstack.initial=32k");
    assert_eq!((args.stack.initial, args.stack.max), (4096, 16384));
    assert_eq!(
        messages(&errors),
        ["kstack.initial=32k: initial 32k is larger than max 16k \
          (defaults 4k and 16k kept)"]
    );
    let (args, errors) = parse("kstack.max=8k kstack.initial=12k kstack.guard=8k");
    assert_eq!((args.stack.initial, args.stack.max), (4096, 16384));
    assert_eq!(args.stack.guard, 8192);
    assert_eq!(
        messages(&errors),
        [
            "kstack.initial=12k kstack.max=8k: initial 12k is larger than max 8k \
          (defaults 4k and 16k kept)"
        ]
    );
    // Order does not matter: the check runs after the whole line.
    let (args, errors) = parse("kstack.initial=32k kstack.max=64k");
    assert!(errors.is_empty());
    assert_eq!((args.stack.initial, args.stack.max), (32 << 10, 64 << 10));
    let (args, errors) = parse("kstack.initial=16k kstack.max=16k");
    assert!(errors.is_empty());
    assert_eq!(args.stack.initial, args.stack.max);
}

#[test]
fn sizes() {
    let good = [
        ("4096", 4096),
        ("0", 0),
        ("4k", 4096),
        ("4K", 4096),
        ("16k", 16384),
        ("1m", 1 << 20),
        ("1M", 1 << 20),
        ("1g", 1 << 30),
        ("2G", 2 << 30),
        ("0x1000", 4096),
        ("0X1000", 4096),
        ("0x10k", 16 << 10),
        ("0xfffK", 0xfff << 10),
        ("007", 7),
    ];
    for (text, bytes) in good {
        assert_eq!(parse_size(text), Ok(bytes), "{text}");
    }
    let bad = [
        ("", SizeError::Empty),
        ("-4k", SizeError::Negative),
        ("-", SizeError::Negative),
        ("k", SizeError::NoDigits),
        ("0x", SizeError::NoDigits),
        ("0xk", SizeError::NoDigits),
        ("+4k", SizeError::Unexpected('+')),
        ("4kb", SizeError::Unexpected('k')),
        ("4q", SizeError::Unexpected('q')),
        (" 4k", SizeError::Unexpected(' ')),
        ("4 k", SizeError::Unexpected(' ')),
        ("4.5k", SizeError::Unexpected('.')),
        ("0x1g0", SizeError::Unexpected('g')),
        ("1e3", SizeError::Unexpected('e')),
        ("٤k", SizeError::Unexpected('٤')),
        ("18446744073709551616", SizeError::TooLarge),
        ("0x10000000000000000", SizeError::TooLarge),
        ("17179869184g", SizeError::TooLarge),
        ("99999999999999999999999999999k", SizeError::TooLarge),
    ];
    for (text, error) in bad {
        assert_eq!(parse_size(text), Err(error), "{text}");
    }
    assert_eq!(parse_size(&"9".repeat(1000)), Err(SizeError::TooLarge));
}

#[test]
fn huge_numbers_everywhere() {
    let huge = "9".repeat(500);
    let line =
        format!("seed={huge} kstack.max={huge}k kstack.initial=0x{huge} kstack.guard={huge}");
    let (args, errors) = parse(&line);
    assert_eq!(errors.len(), 4);
    assert_eq!(errors[0].kind, ArgErrorKind::NumberTooLarge);
    for e in &errors[1..] {
        assert_eq!(e.kind, ArgErrorKind::BadSize(SizeError::TooLarge));
    }
    assert_eq!(args.stack, StackConfig::default());
    // Fits in usize but is far above the limit.
    let (_, errors) = parse("kstack.max=16g");
    assert_eq!(errors[0].kind, ArgErrorKind::TooLarge { max: MAX_STACK });
}

#[test]
fn strategy_and_lookahead() {
    let (args, errors) = parse("");
    assert!(errors.is_empty());
    assert_eq!(args.stack.strategy, StackStrategy::Fault);
    assert_eq!(args.stack.lookahead, DEFAULT_LOOKAHEAD);
    for (word, strategy) in [
        ("fault", StackStrategy::Fault),
        ("expand", StackStrategy::Expand),
        ("check", StackStrategy::Check),
    ] {
        let (args, errors) = parse(&format!("kstack.strategy={word} kstack.lookahead=4k"));
        assert!(errors.is_empty(), "{word}: {errors:?}");
        assert_eq!(args.stack.strategy, strategy);
        assert_eq!(strategy.to_string(), word);
        assert_eq!(args.stack.lookahead, 4096);
    }
    let (args, _) = parse("kstack.lookahead=512 kstack.policy=fixed kstack.strategy=expand");
    assert_eq!(args.stack.lookahead, 512);
    assert_eq!(args.stack.strategy, StackStrategy::Expand);
    assert_eq!(args.stack.policy, StackPolicy::Fixed);
    for (line, message) in [
        (
            "kstack.strategy=lazy",
            "kstack.strategy=lazy: unknown strategy \"lazy\" (expected fault, expand or \
             check) (default fault kept)",
        ),
        (
            "kstack.strategy=expand kstack.strategy=Check",
            "kstack.strategy=Check: unknown strategy \"Check\" (expected fault, expand or \
             check) (expand kept)",
        ),
        (
            "kstack.strategy=",
            "kstack.strategy=: unknown strategy \"\" (expected fault, expand or check) \
             (default fault kept)",
        ),
        (
            "kstack.strategy",
            "kstack.strategy: missing value (expected KEY=VALUE) (default fault kept)",
        ),
        (
            "kstack.lookahead=8",
            "kstack.lookahead=8: smaller than the 16 minimum (default 2k kept)",
        ),
        (
            "kstack.lookahead=2m",
            "kstack.lookahead=2m: larger than the 1m maximum (default 2k kept)",
        ),
        (
            "kstack.lookahead=1000",
            "kstack.lookahead=1000: not a multiple of 16 (default 2k kept)",
        ),
        (
            "kstack.lookahead=4k kstack.lookahead=big",
            "kstack.lookahead=big: not a size: unexpected 'b' (expected digits or 0x hex, \
             then an optional k, m or g) (4k kept)",
        ),
    ] {
        let (args, errors) = parse(line);
        assert_eq!(messages(&errors), [message], "{line}");
        assert_valid(&args.stack);
    }
}

#[test]
fn policy_round_trips() {
    for policy in [StackPolicy::Dynamic, StackPolicy::Fixed] {
        assert_eq!(policy.to_string().parse::<StackPolicy>(), Ok(policy));
    }
    assert!("Dynamic".parse::<StackPolicy>().is_err());
    assert!("".parse::<StackPolicy>().is_err());
}

#[test]
fn split_commands_trims_and_skips_empties() {
    assert_eq!(
        split_commands(" help ;; ps;  ;stacks  ").collect::<Vec<_>>(),
        ["help", "ps", "stacks"]
    );
    assert_eq!(split_commands("").count(), 0);
    assert_eq!(split_commands(";;;").count(), 0);
    assert_eq!(split_commands("demo").collect::<Vec<_>>(), ["demo"]);
}

#[test]
fn size_text_prefers_the_largest_unit() {
    assert_eq!(size_text(0), "0");
    assert_eq!(size_text(3000), "3000");
    assert_eq!(size_text(4096), "4k");
    assert_eq!(size_text(1 << 20), "1m");
    assert_eq!(size_text(3 << 30), "3g");
    assert_eq!(size_text(1536 << 10), "1536k");
}

#[test]
fn random_lines_never_panic_and_stay_valid() {
    let pieces = [
        "kstack.policy=",
        "kstack.initial=",
        "kstack.max=",
        "kstack.guard=",
        "kstack.strategy=",
        "kstack.lookahead=",
        "kstack.",
        "seed=",
        "init=",
        "console=ttyAMA0",
        "dynamic",
        "fixed",
        "4k",
        "16k",
        "64m",
        "1g",
        "0x1000",
        "3000",
        "0",
        "-",
        "k",
        "0x",
        "\"",
        "'",
        " ",
        "\t",
        ";",
        "=",
        "99999999999999999999",
        "é",
        "\u{0}",
    ];
    let mut rng = crate::rng::XorShift::new(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let mut line = String::new();
        for _ in 0..rng.next_u64() % 12 {
            line.push_str(rng.pick(&pieces));
            if rng.next_u64().is_multiple_of(3) {
                line.push(' ');
            }
        }
        let outcome = std::panic::catch_unwind(|| parse(&line));
        let (args, errors) = outcome.unwrap_or_else(|_| panic!("panicked on {line:?}"));
        assert_valid(&args.stack);
        for e in &errors {
            assert!(!e.to_string().is_empty());
        }
        let words = line.split_whitespace().count();
        assert!(args.ignored.len() <= words, "{line:?}");
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = crate::rng::XorShift::new(12345);
    for _ in 0..5_000 {
        let len = (rng.next_u64() % 64) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| (rng.next_u64() % 128) as u8).collect();
        let line = String::from_utf8_lossy(&bytes).into_owned();
        let (args, _) = std::panic::catch_unwind(|| parse(&line))
            .unwrap_or_else(|_| panic!("panicked on {line:?}"));
        assert_valid(&args.stack);
        let _ = std::panic::catch_unwind(|| parse_size(&line))
            .unwrap_or_else(|_| panic!("parse_size panicked on {line:?}"));
    }
}

#[test]
fn console_choice_names() {
    assert_eq!(console_choice(""), ConsoleChoice::Pl011);
    assert_eq!(console_choice("init=cpus"), ConsoleChoice::Pl011);
    for line in [
        "console=mini",
        "console=ttyS0",
        "console=ttyS0,115200",
        "seed=3 console=\"mini\" init=\"cpus; poweroff\"",
        "console=pl011 console=mini",
    ] {
        assert_eq!(console_choice(line), ConsoleChoice::Mini, "{line}");
    }
    for line in [
        "console=pl011",
        "console=ttyAMA0,115200",
        "console=mini console=pl011",
    ] {
        assert_eq!(console_choice(line), ConsoleChoice::Pl011, "{line}");
    }
    // A bad value is ignored before the console exists; the earlier choice stays.
    assert_eq!(
        console_choice("console=mini console=tty9"),
        ConsoleChoice::Mini
    );
    assert_eq!(console_choice("console=serial1"), ConsoleChoice::Pl011);
    assert_eq!(console_choice("console"), ConsoleChoice::Pl011);
}

#[test]
fn console_is_a_known_argument() {
    let (args, errors) = parse("console=mini");
    assert!(errors.is_empty(), "{:?}", messages(&errors));
    assert!(args.ignored.is_empty());
    assert_eq!(args.console, ConsoleChoice::Mini);
    // Consoles this kernel does not drive are firmware words, reported as ignored.
    let (args, errors) = parse("console=mini console=tty1 console console=\"ttyS0");
    assert!(errors.is_empty(), "{:?}", messages(&errors));
    assert_eq!(args.console, ConsoleChoice::Mini);
    assert_eq!(args.ignored, ["console=tty1", "console", "console=\"ttyS0"]);
}

#[test]
fn semihosting_key() {
    let (args, errors) = parse("semihosting=off");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(args.semihosting, Some(false));
    let (args, _) = parse("semihosting=on");
    assert_eq!(args.semihosting, Some(true));
    assert_eq!(parse("").0.semihosting, None);
    let (args, errors) = parse("semihosting=maybe");
    assert_eq!(args.semihosting, None);
    assert_eq!(
        errors[0].to_string(),
        "semihosting=maybe: not on or off (default the board's kept)"
    );
}
