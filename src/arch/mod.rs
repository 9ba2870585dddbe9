//! Architecture code. Only AArch64 exists; everything that knows about system registers,
//! exception levels, vectors, translation-table descriptors or barriers lives below here.
pub mod aarch64;
#[cfg(target_os = "none")]
pub use aarch64::{irq, probe, psci, stack_pointer, timer, tlb, trap};
