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

/// Runs every case, prints the report and exits QEMU.
pub fn run(cases: &[TestCase]) -> ! {
    let (mut passed, mut failed) = (0u32, 0u32);
    for case in cases {
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
