//! How dynamic stacks grow (`kstack.strategy=`), the three options of the LWN article:
//!
//! - `fault`: the data-abort handler grows a stack when it runs off its mapped pages.
//! - `expand`: only code that says it goes deep grows its stack, through
//!   [`ensure`](super::ensure) / [`with_stack`](super::with_stack) (the article's
//!   `expand_stack()`); a fault below the mapped part is a *miss* and ends the thread.
//! - `check`: a build with `-Z instrument-mcount` calls `mcount` at every function entry; the
//!   hook below keeps at least `kstack.lookahead` bytes mapped under SP, growing ahead of use
//!   from this CPU's reserve. Faults do not grow (a miss ends the thread, as under `expand`).
//!
//! Owns the strategy in force, growth ahead of use (both `ensure` and the hook), the per-CPU
//! stack limit the hook compares SP with, and the miss and ahead-growth counters. Calls the
//! parent module (mapping from the reserve), `percpu` and `arch::irq`.
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use super::{Stack, GROWTH, PAGE};
use crate::cmdline::{StackPolicy, StackStrategy};
use crate::mm::layout::align_down;
use crate::percpu::cpu_index;

const FAULT: u8 = 0;
const EXPAND: u8 = 1;
const CHECK: u8 = 2;

static STRATEGY: AtomicU8 = AtomicU8::new(FAULT);
static LOOKAHEAD: AtomicU64 = AtomicU64::new(crate::cmdline::DEFAULT_LOOKAHEAD as u64);
/// Threads ended because their stack could not grow in time (a fault under `expand` or
/// `check` inside the reservation, below the mapped part).
static MISSES: AtomicU64 = AtomicU64::new(0);

/// Whether this kernel was built with the `mcount` hook (`make build-check`).
pub const HAS_CHECK_HOOK: bool = cfg!(feature = "kstack-check");

/// Why a strategy cannot be used by this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeedsCheckBuild;

impl core::fmt::Display for NeedsCheckBuild {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(
            "kstack.strategy=check needs the kernel built with function-entry hooks \
             (make build-check); kstack.strategy=fault kept",
        )
    }
}

/// Sets the strategy and lookahead. Called once at boot, before the first thread. `check`
/// is refused (and `fault` kept) by a kernel built without the hook.
pub fn set(strategy: StackStrategy, lookahead: usize) -> Result<(), NeedsCheckBuild> {
    LOOKAHEAD.store(lookahead as u64, Ordering::Relaxed);
    let value = match strategy {
        StackStrategy::Fault => FAULT,
        StackStrategy::Expand => EXPAND,
        StackStrategy::Check if HAS_CHECK_HOOK => CHECK,
        StackStrategy::Check => return Err(NeedsCheckBuild),
    };
    STRATEGY.store(value, Ordering::Relaxed);
    // The one switch both fault paths (the fast path in the vectors, `on_fault`) read.
    super::set_grow_on_fault(value == FAULT);
    Ok(())
}

/// The strategy in force.
pub fn current() -> StackStrategy {
    match STRATEGY.load(Ordering::Relaxed) {
        EXPAND => StackStrategy::Expand,
        CHECK => StackStrategy::Check,
        _ => StackStrategy::Fault,
    }
}

/// `kstack.lookahead` in bytes (used by `check` only).
pub fn lookahead() -> u64 {
    LOOKAHEAD.load(Ordering::Relaxed)
}

/// Whether a fault below a stack's mapped part grows it (`fault`) or is a miss: the
/// grow-on-fault switch of the fault paths, which [`set`] sets.
#[inline(always)]
pub fn grows_on_fault() -> bool {
    super::grow_on_fault()
}

/// Counts a miss (fault path, exception context).
pub(super) fn count_miss() {
    MISSES.fetch_add(1, Ordering::Relaxed);
}

/// Threads ended by a miss so far.
pub fn misses() -> u64 {
    MISSES.load(Ordering::Relaxed)
}

/// Maps the current thread's stack down to the page holding `addr` (clamped to the
/// reservation), ahead of use: no fault is taken. Returns the pages mapped. Thread context;
/// masks IRQs so that it runs on one CPU with that CPU's reserve, like the fault path.
pub fn grow_ahead_to(addr: u64) -> u32 {
    let daif = crate::arch::irq::save_and_disable();
    let pages = grow_current(addr);
    crate::arch::irq::restore(daif);
    pages
}

/// The body of [`grow_ahead_to`] and of the hook's slow path: IRQs masked.
fn grow_current(addr: u64) -> u32 {
    let thread = crate::sched::current_ptr();
    if thread.is_null() {
        return 0;
    }
    // SAFETY: the current thread's control block outlives its time on this CPU.
    let stack = unsafe { &(*thread).stack };
    if stack.policy() != StackPolicy::Dynamic {
        return 0;
    }
    let cpu = cpu_index();
    let first = align_down(addr.max(stack.base()), PAGE);
    let bottom = stack.mapped_bottom();
    if first >= bottom {
        return 0;
    }
    let pages = ((bottom - first) / PAGE) as u32;
    // The reserve holds enough for the whole reservation (filled before the switch-in), so
    // this cannot come up short; if it ever did, nothing is mapped and a later fault decides.
    let pages = super::map_below(stack, cpu, pages);
    if pages == 0 {
        return 0;
    }
    let counters = &GROWTH[cpu];
    super::bump(&counters.ahead_growths, 1);
    update_limit(cpu, stack);
    pages
}

/// Growths ahead of use (by `ensure` under `expand`/`check`, or by the hook) on all CPUs.
pub fn ahead_growths() -> u64 {
    GROWTH
        .iter()
        .map(|c| c.ahead_growths.load(Ordering::Relaxed))
        .sum()
}

/// The SP below which a function entry must grow `stack` first: 0 (never) unless the
/// strategy is `check`, the stack is dynamic and not yet wholly mapped.
fn limit_for(stack: &Stack) -> u64 {
    if STRATEGY.load(Ordering::Relaxed) != CHECK || stack.policy() != StackPolicy::Dynamic {
        return 0;
    }
    let bottom = stack.mapped_bottom();
    if bottom <= stack.base() {
        return 0;
    }
    bottom + lookahead()
}

fn update_limit(cpu: usize, stack: &Stack) {
    if HAS_CHECK_HOOK {
        crate::percpu::get(cpu)
            .stack_limit
            .store(limit_for(stack), Ordering::Relaxed);
    }
}

/// The scheduler switches `stack`'s thread in on `cpu` (exception context): the hook's
/// limit follows. Nothing to do in a kernel without the hook.
#[inline(always)]
pub fn switched_in(cpu: usize, stack: &Stack) {
    if HAS_CHECK_HOOK {
        update_limit(cpu, stack);
    }
}

/// The hook's slow path, on this CPU's exception stack with IRQs masked: SP (`thread_sp`)
/// came within `kstack.lookahead` of the mapped bottom. Grows the stack to cover the
/// lookahead again (as far as the reservation goes).
#[cfg(feature = "kstack-check")]
#[unsafe(no_mangle)]
extern "C" fn dynstack_check_grow(thread_sp: u64) {
    grow_current(thread_sp.saturating_sub(lookahead()));
}

// The function-entry hook. `-Z instrument-mcount` puts `mov x0, x30; bl mcount` right after
// every function's prologue, as an ordinary call: x0-x17 are the hook's to clobber, and the
// frame of the function that called it is already allocated (so a frame larger than the
// lookahead has faulted before the hook can help: a miss).
//
// Fast path, six instructions and a return: on the exception stack (SPSel = 1: exception
// context, and early boot, which runs at EL1h) do nothing; otherwise compare SP with this
// CPU's limit. Slow path: mask IRQs, move to the exception stack (so the hook never writes
// to the stack it is checking), call `dynstack_check_grow(sp)`, come back.
#[cfg(feature = "kstack-check")]
core::arch::global_asm!(
    ".section .text.mcount, \"ax\"",
    ".global mcount",
    ".type mcount, %function",
    "mcount:",
    "    mrs     x9, spsel",
    "    cbnz    x9, 1f",
    "    mrs     x9, tpidr_el1",
    "    ldr     x9, [x9, #{limit}]",
    "    mov     x10, sp",
    "    cmp     x10, x9",
    "    b.lo    2f",
    "1:  ret",
    "2:  mrs     x11, daif",
    "    msr     daifset, #2",
    "    msr     spsel, #1",
    "    stp     x29, x30, [sp, #-32]!",
    "    mov     x29, sp",
    "    str     x11, [sp, #16]",
    "    mov     x0, x10",
    "    bl      {grow}",
    "    ldr     x11, [sp, #16]",
    "    ldp     x29, x30, [sp], #32",
    "    msr     spsel, #0",
    "    msr     daif, x11",
    "    ret",
    ".size mcount, . - mcount",
    limit = const crate::percpu::STACK_LIMIT_OFFSET,
    grow = sym dynstack_check_grow,
);
