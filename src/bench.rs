//! The `bench` command: dynamic against fixed stacks, in one boot.
use core::fmt::Write;

/// Runs the benchmarks (`quick`: a few rounds, for tests), one `BENCH` line each.
pub fn run(quick: bool, out: &mut dyn Write) {
    let _ = (
        quick,
        writeln!(out, "error: benchmarks are not part of this build yet"),
    );
}
