//! dynstack: a bare-metal AArch64 kernel whose thread stacks grow on demand.
//!
//! The library holds the whole kernel; `main.rs` and each test kernel under `tests/` only
//! choose what runs after boot. Modules that are plain logic (device tree, command line,
//! translation tables, shell parsing) build for the host too and carry the unit tests;
//! everything that touches the machine is compiled for the bare-metal target only.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod cmdline;
pub mod dtb;
pub mod mm;
pub mod rng;
pub mod shell;

#[cfg(target_os = "none")]
pub mod arch;
pub mod board;
#[cfg(target_os = "none")]
pub mod drivers;
#[cfg(target_os = "none")]
pub mod kernel;
#[cfg(target_os = "none")]
pub mod percpu;
#[cfg(target_os = "none")]
pub mod sched;
#[cfg(target_os = "none")]
pub mod stack;
#[cfg(target_os = "none")]
pub mod sync;
#[cfg(target_os = "none")]
pub mod testing;
