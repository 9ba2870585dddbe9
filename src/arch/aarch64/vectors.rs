//! The exception vector table, the trap-frame push and pop, and the first entry into a thread
//! (`vectors.s`), assembled with every layout and constant they use taken from Rust: the
//! frame from [`TrapFrame`], the syndrome fields from `trap`, the exception-stack geometry
//! from `mm::layout` and the per-CPU block from `percpu`. Change those and the assembly
//! follows. The stack growth fast path that vector 0 branches to lives with the stack code
//! (`crate::stack::fast`); it comes back to `thread_sync_full` for everything it does not
//! handle.
use core::mem::{offset_of, size_of};

use super::trap::{TrapFrame, EC_DATA_ABORT_SAME_EL, ESR_EC_SHIFT};
use crate::mm::layout::{EXCEPTION_STACK_SIZE, EXCEPTION_STACK_WINDOW};

/// The bit of SP that is set inside an exception stack and clear in the guard half of its
/// window below (windows are aligned to twice the stack size: see `mm::layout`).
const STACK_CHECK_BIT: u32 = EXCEPTION_STACK_SIZE.trailing_zeros();
const _: () = assert!(EXCEPTION_STACK_SIZE.is_power_of_two());
const _: () = assert!(EXCEPTION_STACK_WINDOW == 2 * EXCEPTION_STACK_SIZE as u64);
// `enter_first_frame` copies the frame 16 bytes at a time; SP stays 16-byte aligned.
const _: () = assert!(size_of::<TrapFrame>().is_multiple_of(16));

core::arch::global_asm!(
    include_str!("vectors.s"),
    FRAME_SIZE = const size_of::<TrapFrame>(),
    FRAME_X = const offset_of!(TrapFrame, x),
    FRAME_ELR = const offset_of!(TrapFrame, elr),
    STACK_CHECK_BIT = const STACK_CHECK_BIT,
    ESR_EC_SHIFT = const ESR_EC_SHIFT,
    EC_DATA_ABORT_SAME_EL = const EC_DATA_ABORT_SAME_EL,
    PERCPU_EMERGENCY_SP = const crate::percpu::EMERGENCY_SP_OFFSET,
);
