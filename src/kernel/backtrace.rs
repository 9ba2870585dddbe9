//! Backtraces for the reports (`PANIC`, `FAULT`, `OVERFLOW`): the return addresses found by
//! following frame pointers, each with the function it returns into, and the caller an
//! allocation failure is reported against.
//!
//! Every function keeps a frame record (`-C force-frame-pointers=yes`; the prebuilt `core`
//! and `alloc` keep them too): two words at `x29`, the caller's `x29` and the return address.
//! The walk stays inside the one mapped stack it starts on, so a corrupt chain cannot fault a
//! second time, and stops after a bounded number of frames. Names come from the kernel's
//! symbol table ([`crate::symbols`]); without one (a kernel the build did not fill) the lines
//! are bare addresses, and `scripts/symbolize.py` can name them from the ELF. Nothing here
//! allocates or takes a lock: it runs in the panic path, possibly with the heap exhausted.
//! Calls `symbols`, `console`, `sched` (the current thread's stack) and `mm::layout`.
use crate::kernel::console::write_fmt_emergency;
use crate::symbols::{self, caller, Symbol, TableError};

/// Most frames a report prints (runs of one address count once).
const PRINTED_FRAMES: usize = 16;
/// Most frames searched for an allocation failure's caller: the panic and `alloc` take about
/// eight.
const CALLER_FRAMES: usize = 32;

/// The return addresses of a frame-pointer chain, innermost first.
pub struct Frames {
    fp: u64,
    low: u64,
    high: u64,
    left: usize,
}

impl Iterator for Frames {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.left == 0
            || self.fp < self.low
            || self.fp.saturating_add(16) > self.high
            || !self.fp.is_multiple_of(16)
        {
            return None;
        }
        self.left -= 1;
        // SAFETY: [fp, fp+16) lies inside a mapped stack (checked above).
        let (next, lr) = unsafe {
            (
                core::ptr::read_volatile(self.fp as *const u64),
                core::ptr::read_volatile((self.fp + 8) as *const u64),
            )
        };
        if lr == 0 {
            self.left = 0;
            return None;
        }
        self.fp = next;
        Some(lr)
    }
}

/// The chain from `fp`, on the mapped stack `[low, high)`, at most `max` frames.
pub fn frames_within(fp: u64, low: u64, high: u64, max: usize) -> Frames {
    Frames {
        fp,
        low,
        high,
        left: max,
    }
}

/// The chain from `fp` on the stack the caller runs on, at most `max` frames.
pub fn frames(fp: u64, max: usize) -> Frames {
    let (low, high) = stack_bounds(crate::arch::stack_pointer());
    frames_within(fp, low, high, max)
}

/// The mapped stack that holds `sp`: the current thread's, this CPU's exception stack, or
/// (early in boot) just the page above `sp`.
fn stack_bounds(sp: u64) -> (u64, u64) {
    let cpu = crate::percpu::cpu_index();
    let exc_top = crate::mm::layout::exception_stack_top(cpu);
    let exc_low = exc_top - crate::mm::layout::EXCEPTION_STACK_SIZE as u64;
    if sp >= exc_low && sp <= exc_top {
        return (exc_low, exc_top);
    }
    let t = crate::sched::current_ptr();
    if !t.is_null() {
        // SAFETY: the current thread's control block lives while it runs.
        let stack = unsafe { &(*t).stack };
        if sp >= stack.mapped_bottom() && sp <= stack.top() {
            return (stack.mapped_bottom(), stack.top());
        }
    }
    (sp, (sp | 0xfff) + 1)
}

/// Prints the backtrace from `fp` on the stack the caller runs on.
pub fn print(fp: u64) {
    let (low, high) = stack_bounds(crate::arch::stack_pointer());
    print_within(fp, low, high, None);
}

/// Prints the backtrace from `fp` on the mapped stack `[low, high)`; `pc`, if given, is where
/// the code stopped (a fault's `elr`) and comes first.
pub fn print_within(fp: u64, low: u64, high: u64, pc: Option<u64>) {
    let table = symbols::kernel_table();
    write_fmt_emergency(format_args!("  backtrace:\n"));
    if let Err(e) = table {
        if e != TableError::Empty {
            write_fmt_emergency(format_args!("    (symbol table unusable: {e})\n"));
        }
    }
    if let Some(pc) = pc {
        let name = table.ok().and_then(|t| t.lookup(pc));
        write_fmt_emergency(format_args!("    {:#018x}{} (elr)\n", pc, Named(name)));
    }
    // Runs of one return address (deep recursion, as in a stack overflow) print once, with
    // a count, so the report stays short.
    let mut last = 0u64;
    let mut repeats = 0u32;
    for lr in frames_within(fp, low, high, PRINTED_FRAMES) {
        if lr == last {
            repeats += 1;
            continue;
        }
        print_repeats(repeats);
        repeats = 0;
        let name = table.ok().and_then(|t| t.lookup_return(lr));
        write_fmt_emergency(format_args!("    {:#018x}{}\n", lr, Named(name)));
        last = lr;
    }
    print_repeats(repeats);
}

/// ` name+0xoff`, or nothing without a name.
struct Named<'a>(Option<Symbol<'a>>);

impl core::fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self.0 {
            Some(s) => write!(f, " {s}"),
            None => Ok(()),
        }
    }
}

fn print_repeats(repeats: u32) {
    if repeats > 0 {
        write_fmt_emergency(format_args!(
            "    (the same {} more time{})\n",
            repeats,
            if repeats == 1 { "" } else { "s" }
        ));
    }
}

/// The function an allocation failure that panicked belongs to: the first frame of the
/// chain from `fp` (on the stack the caller runs on) outside the allocator, `alloc`, `core`
/// and the panic path ([`caller::first_outside`]), or `None` without a symbol table.
pub fn allocation_caller(fp: u64) -> Option<Symbol<'static>> {
    let table = symbols::kernel_table().ok()?;
    caller::first_outside(&table, frames(fp, CALLER_FRAMES)).map(|(_, s)| s)
}
