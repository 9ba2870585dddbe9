//! Thread stacks: the stack arena, growth on fault, the per-CPU page reserve, trim, and the
//! counters behind `stacks`.
//!
//! Every thread's stack is a reservation of `kstack.max` bytes in the stack arena with an
//! unmapped guard gap of `kstack.guard` below it. A `fixed` stack is mapped whole at
//! creation; a `dynamic` one only its top `kstack.initial` bytes. The arena's last-level
//! translation tables are created when a reservation is first handed out, so growing a
//! stack later is a descriptor store into a table that already exists.
//!
//! The fault path, top to bottom: the vector (`vectors.s`) → the fast path ([`fast`],
//! assembly: a growth of the current thread's stack is handled there and returns at once) →
//! for anything else, the full trap frame, `exception::dispatch` → [`on_fault`] →
//! reservation lookup (address arithmetic, no table) → this CPU's reserve of zeroed pages →
//! descriptor store through the arena's L3 table → `DSB ISHST; ISB` → return to retry the
//! instruction. Both paths take no lock and never allocate: the scheduler fills the reserve
//! (see [`prepare_switch_in`]) before it switches a dynamic thread in. [`on_fault`] is the
//! reference: the fast path does exactly what it does for a growth, and defers to it for
//! everything else (overflows, other faults, a short reserve, growth switched off).
//!
//! A sleeping thread's stack can also be *parked* (see [`park`]): its live bytes copied into
//! a small block and every page returned, until the thread is switched in again.
//!
//! Batched release (`release.rs`) is [`ReleaseBatch`]; trimming (`trim.rs`) is [`trim()`]
//! and [`trim_all`].
//!
//! Owns the arena's virtual space and tables, the reserve, parking, and the stack counters.
//! Calls `mm` (frames, the kernel address space, the heap) and `arch` (TLB maintenance).
pub mod arena;
pub mod fast;
pub mod park;
mod release;
pub mod reserve;
pub mod strategy;
mod trim;

pub use release::ReleaseBatch;
pub use trim::{give_back_unused, trim, trim_all};

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use crate::arch::trap::{Syndrome, TrapFrame};
use crate::cmdline::{StackConfig, StackPolicy};
use crate::mm::layout::{align_down, PAGE_SIZE};
use crate::percpu::{cpu_index, MAX_CPUS};

const PAGE: u64 = PAGE_SIZE as u64;

/// Stack of a system thread (idle, reaper, shell): its own size, not `kstack.max`.
pub const SYSTEM_STACK_BYTES: usize = 32 * 1024;

static CONFIG: crate::sync::Once<StackConfig> = crate::sync::Once::new();

/// Sets the stack configuration from the command line. Called once at boot, before the first
/// thread; later calls are ignored. A strategy this kernel cannot run (`check` without the
/// hook) is refused with the reason, and `fault` is used instead.
///
/// Stacks are parked only under `fault`: a restored stack gets back the pages of its live
/// part and no more, so an `expand_stack` made before it slept (`expand`) or the lookahead
/// its interrupted function was promised (`check`) would be gone, and its next deeper use a
/// miss. Under those strategies `kstack.park_after` is `off` and trim applies instead.
pub fn configure(mut config: StackConfig) -> Result<(), strategy::NeedsCheckBuild> {
    let refused = strategy::set(config.strategy, config.lookahead);
    if refused.is_err() {
        config.strategy = crate::cmdline::StackStrategy::Fault;
    }
    if config.strategy != crate::cmdline::StackStrategy::Fault {
        config.park_after_ms = None;
    }
    let config = CONFIG.call_once(|| config);
    MAX_BYTES.store(config.max as u64, Ordering::Relaxed);
    GUARD_BYTES.store(config.guard as u64, Ordering::Relaxed);
    refused
}

/// `kstack.max` and `kstack.guard`, read on the fault path without going through the
/// `Once` (set by [`configure`]; the defaults until then).
static MAX_BYTES: AtomicU64 = AtomicU64::new(16 * 1024);
static GUARD_BYTES: AtomicU64 = AtomicU64::new(4 * 1024);

/// The stack configuration in force.
pub fn config() -> &'static StackConfig {
    CONFIG.call_once(StackConfig::default)
}

/// The policy new threads get unless they ask for one.
pub fn default_policy() -> StackPolicy {
    config().policy
}

pub(crate) fn max_pages() -> u32 {
    (MAX_BYTES.load(Ordering::Relaxed) / PAGE) as u32
}

/// Pages mapped when a stack with `policy` is created.
pub fn initial_pages(policy: StackPolicy) -> u32 {
    match policy {
        StackPolicy::Dynamic => (config().initial / PAGE_SIZE) as u32,
        StackPolicy::Fixed => max_pages(),
    }
}

/// Growth counters, one cache line per CPU, summed by [`stats`]. Only the fault paths of
/// that CPU write them (in exception context, IRQs masked), so they need no atomic
/// read-modify-write: a load and a store. The fast path writes them too (`fast`).
#[repr(C, align(64))]
struct GrowthCounters {
    /// Pages mapped by growth faults (both paths).
    grown_pages: AtomicU64,
    /// Growth faults handled (both paths).
    grow_faults: AtomicU64,
    /// Of those, the ones the fast path handled.
    fast_faults: AtomicU64,
    /// Growths without a fault: `ensure` under `expand`/`check`, and the `check` hook.
    ahead_growths: AtomicU64,
}

static GROWTH: [GrowthCounters; MAX_CPUS] = [const {
    GrowthCounters {
        grown_pages: AtomicU64::new(0),
        grow_faults: AtomicU64::new(0),
        fast_faults: AtomicU64::new(0),
        ahead_growths: AtomicU64::new(0),
    }
}; MAX_CPUS];

/// What the fault paths may do, one word the fast path tests with a single compare: it
/// handles a fault only when the word is exactly [`CTL_FAST_GROWS`]; the slow path reads
/// the bits it needs.
static GROW_CTL: AtomicU32 = AtomicU32::new(CTL_FAST_GROWS);
/// A fault below the mapped part of the current thread's stack grows it (the `fault`
/// strategy). Without it such a fault is an overflow (`expand`, `check`: see
/// [`set_grow_on_fault`]).
const CTL_GROW_ON_FAULT: u32 = 1 << 0;
/// The fast path is enabled (tests and `bench` turn it off to measure the slow path).
const CTL_FAST_PATH: u32 = 1 << 1;
/// A test asked for a fault inside the growth path (`inject_fault_in_growth_path`, only
/// with the `test-hooks` feature).
#[cfg(feature = "test-hooks")]
const CTL_INJECT_SLOW: u32 = 1 << 2;
/// The fast path handles growths.
const CTL_FAST_GROWS: u32 = CTL_GROW_ON_FAULT | CTL_FAST_PATH;

fn set_ctl(bit: u32, on: bool) {
    if on {
        GROW_CTL.fetch_or(bit, Ordering::SeqCst);
    } else {
        GROW_CTL.fetch_and(!bit, Ordering::SeqCst);
    }
}

/// Whether a fault below the mapped part of a stack grows it (the default), or is an
/// overflow: the one switch `kstack.strategy` needs. Set it once at boot, before threads
/// fault: `expand` and `check` turn it off, `fault` leaves it on. Both fault paths read it.
pub fn set_grow_on_fault(on: bool) {
    set_ctl(CTL_GROW_ON_FAULT, on);
}

/// Whether faults grow stacks (see [`set_grow_on_fault`]).
pub fn grow_on_fault() -> bool {
    GROW_CTL.load(Ordering::Relaxed) & CTL_GROW_ON_FAULT != 0
}

/// Turns the growth fast path on (the default) or off, so that every growth takes the slow
/// path ([`on_fault`]): for tests of the slow path and for `bench`, which measures both.
pub fn set_fast_path(on: bool) {
    set_ctl(CTL_FAST_PATH, on);
}

/// Whether the growth fast path is on.
pub fn fast_path() -> bool {
    GROW_CTL.load(Ordering::Relaxed) & CTL_FAST_PATH != 0
}
/// Pages mapped at creation and unmapped by trim or exit (thread context, any CPU).
static CREATED_PAGES: AtomicU64 = AtomicU64::new(0);
static RELEASED_PAGES: AtomicU64 = AtomicU64::new(0);
static STACKS: AtomicU64 = AtomicU64::new(0);
static OVERFLOWS: AtomicU64 = AtomicU64::new(0);
static OOM_KILLS: AtomicU64 = AtomicU64::new(0);

/// Counts a thread ended for lack of memory outside stack growth (its own heap ran out, see
/// `sched::heap_scope`), in [`Stats::oom_kills`] with the growth failures.
pub fn note_oom_kill() {
    OOM_KILLS.fetch_add(1, Ordering::Relaxed);
}
static TRIMMED_PAGES: AtomicU64 = AtomicU64::new(0);
static SHORTAGES: AtomicU64 = AtomicU64::new(0);
static CLAIM_RACES: AtomicU64 = AtomicU64::new(0);

fn count_mapped(pages: u64) {
    CREATED_PAGES.fetch_add(pages, Ordering::Relaxed);
}

fn count_unmapped(pages: u64) {
    RELEASED_PAGES.fetch_add(pages, Ordering::Relaxed);
}

/// Adds to a counter only this CPU writes, with IRQs masked.
fn bump(counter: &AtomicU64, by: u64) {
    counter.store(counter.load(Ordering::Relaxed) + by, Ordering::Relaxed);
}

/// CPU `cpu`'s growth faults so far, and how many of them the fast path handled: with IRQs
/// masked on that CPU, the difference across a fault says which path took it.
pub fn cpu_growth_faults(cpu: usize) -> (u64, u64) {
    let c = &GROWTH[cpu];
    (
        c.grow_faults.load(Ordering::Relaxed),
        c.fast_faults.load(Ordering::Relaxed),
    )
}

/// Stack memory now, from counters kept up to date (no walk over threads).
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Stacks that exist.
    pub stacks: u64,
    /// Pages mapped in all stacks.
    pub mapped_pages: u64,
    /// Growth faults handled.
    pub grow_faults: u64,
    /// Of those, the ones the fast path handled (the rest went through [`on_fault`]).
    pub fast_grow_faults: u64,
    /// Threads terminated for running into their guard gap.
    pub overflows: u64,
    /// Threads terminated for lack of memory: a growth that found no page while the thread
    /// held a lock, or its own heap running out ([`note_oom_kill`]).
    pub oom_kills: u64,
    /// Pages given back by trim.
    pub trimmed_pages: u64,
    /// Times a thread had to wait because its reserve could not be filled.
    pub shortages: u64,
    /// Pages of translation tables the arena uses.
    pub table_pages: u64,
    /// Pages held in the per-CPU reserves.
    pub reserve_pages: u64,
    /// Parking: stacks parked now, their blocks' bytes, and counts since boot.
    pub park: park::ParkStats,
    /// Times a claim on a stack found the other side working on it: a thread due to run
    /// whose stack trim held, or a trim (or the reaper) that found the stack taken.
    pub claim_races: u64,
    /// Growths ahead of use, without a fault (`ensure` under `expand`/`check`, the hook).
    pub ahead_growths: u64,
    /// Threads ended because their stack could not grow in time (`expand`, `check`).
    pub misses: u64,
}

/// Current stack statistics.
pub fn stats() -> Stats {
    let mut mapped = CREATED_PAGES.load(Ordering::Relaxed);
    let unmapped = RELEASED_PAGES.load(Ordering::Relaxed);
    let mut faults = 0u64;
    let mut fast = 0u64;
    for c in &GROWTH {
        mapped += c.grown_pages.load(Ordering::Relaxed);
        faults += c.grow_faults.load(Ordering::Relaxed);
        fast += c.fast_faults.load(Ordering::Relaxed);
    }
    Stats {
        stacks: STACKS.load(Ordering::Relaxed),
        mapped_pages: mapped.saturating_sub(unmapped),
        grow_faults: faults,
        fast_grow_faults: fast,
        overflows: OVERFLOWS.load(Ordering::Relaxed),
        oom_kills: OOM_KILLS.load(Ordering::Relaxed),
        trimmed_pages: TRIMMED_PAGES.load(Ordering::Relaxed),
        shortages: SHORTAGES.load(Ordering::Relaxed),
        table_pages: arena::table_pages(),
        reserve_pages: reserve::total_pages(),
        park: park::stats(),
        claim_races: CLAIM_RACES.load(Ordering::Relaxed),
        ahead_growths: strategy::ahead_growths(),
        misses: strategy::misses(),
    }
}

/// Why a stack could not be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackError {
    /// Every reservation in the arena is taken.
    ArenaFull,
    /// No frames for the initial pages or the arena's tables.
    OutOfMemory,
}

const CLAIM_FREE: u8 = 0;
const CLAIM_RUNNING: u8 = 1;
const CLAIM_TRIMMING: u8 = 2;
const CLAIM_PARKING: u8 = 3;

/// One thread's stack: a reservation in the arena and what is mapped of it.
pub struct Stack {
    /// Highest address + 1 (the fast path reads it: `fast`).
    top: u64,
    slot: u32,
    policy: StackPolicy,
    /// Pages mapped, counted from the top. Changed by the fault path (thread running), by
    /// trim (claim held) and at creation; read by anyone for reports.
    mapped_pages: AtomicU32,
    /// Most pages ever mapped at once.
    high_water_pages: AtomicU32,
    grow_faults: AtomicU32,
    /// Who may change the mapping: nobody, the CPU running the thread, trim, or parking.
    claim: AtomicU8,
    /// While parked: the block holding the live bytes (0 otherwise), and how many bytes they
    /// are (they end at the top). Changed only under the claim.
    parked_block: AtomicU64,
    parked_len: AtomicU32,
}

impl Stack {
    /// Reserves a slot in the arena and maps the initial pages (zeroed).
    pub fn create(policy: StackPolicy) -> Result<Stack, StackError> {
        Self::create_mapped(policy, initial_pages(policy))
    }

    fn create_mapped(policy: StackPolicy, pages: u32) -> Result<Stack, StackError> {
        let slot = arena::alloc_slot()?;
        let stack = Stack {
            top: arena::slot_base(slot) + MAX_BYTES.load(Ordering::Relaxed),
            slot,
            policy,
            mapped_pages: AtomicU32::new(0),
            high_water_pages: AtomicU32::new(0),
            grow_faults: AtomicU32::new(0),
            claim: AtomicU8::new(CLAIM_FREE),
            parked_block: AtomicU64::new(0),
            parked_len: AtomicU32::new(0),
        };
        let top = stack.top();
        for i in 1..=pages {
            let Some(pa) = crate::mm::frame::alloc_zeroed() else {
                arena::unmap_pages(top - (i as u64 - 1) * PAGE, i - 1);
                arena::free_slot(slot);
                return Err(StackError::OutOfMemory);
            };
            arena::map_page(top - i as u64 * PAGE, pa);
        }
        arena::publish();
        stack.mapped_pages.store(pages, Ordering::Relaxed);
        stack.high_water_pages.store(pages, Ordering::Relaxed);
        count_mapped(pages as u64);
        STACKS.fetch_add(1, Ordering::Relaxed);
        Ok(stack)
    }

    /// A stack for a system thread (idle, reaper, shell): fixed, [`SYSTEM_STACK_BYTES`]
    /// mapped (or `kstack.max` if that is smaller) in a normal reservation, never grown: a
    /// fault below it is an overflow. Its size does not follow `kstack.max`, so a large
    /// `kstack.max` costs the kernel's own threads nothing.
    pub fn create_system() -> Result<Stack, StackError> {
        let pages = (SYSTEM_STACK_BYTES as u64 / PAGE).min(max_pages() as u64) as u32;
        Self::create_mapped(StackPolicy::Fixed, pages)
    }

    /// Unmaps every page (invalidating the TLB on all CPUs), returns them and the
    /// reservation.
    pub fn destroy(self) {
        let pages = self.mapped_pages.load(Ordering::Relaxed);
        let top = self.top();
        arena::unmap_pages(top - pages as u64 * PAGE, pages);
        count_unmapped(pages as u64);
        park::discard(&self);
        STACKS.fetch_sub(1, Ordering::Relaxed);
        arena::free_slot(self.slot);
    }

    /// Waits until nobody (trim, parking) works on this stack and keeps others out: for a
    /// stack whose thread is gone. The reaper calls it on the stack where it lives, before it
    /// moves the control block out: whoever holds the claim holds a pointer into it.
    pub fn claim_for_release(&self) {
        while !self.try_claim() {
            core::hint::spin_loop();
        }
    }

    /// Lowest address of the reservation (the guard gap lies below it).
    pub fn base(&self) -> u64 {
        arena::slot_base(self.slot)
    }

    /// Highest address + 1: a new thread's initial SP.
    pub fn top(&self) -> u64 {
        self.top
    }

    /// Lowest mapped address.
    pub fn mapped_bottom(&self) -> u64 {
        self.top() - self.mapped_pages.load(Ordering::Relaxed) as u64 * PAGE
    }

    /// The stack's policy.
    pub fn policy(&self) -> StackPolicy {
        self.policy
    }

    /// Bytes mapped now.
    pub fn mapped_bytes(&self) -> u64 {
        self.mapped_pages.load(Ordering::Relaxed) as u64 * PAGE
    }

    /// Most bytes ever mapped at once. For a fixed stack, everything is mapped, so this
    /// looks for the deepest non-zero word instead (pages start zeroed).
    pub fn high_water_bytes(&self) -> u64 {
        match self.policy {
            StackPolicy::Dynamic => self.high_water_pages.load(Ordering::Relaxed) as u64 * PAGE,
            StackPolicy::Fixed => self.touched_bytes(),
        }
    }

    fn touched_bytes(&self) -> u64 {
        let bottom = self.mapped_bottom();
        let top = self.top();
        let mut addr = bottom;
        while addr < top {
            // SAFETY: [bottom, top) is mapped for as long as the thread lives; callers hold
            // the thread table lock, which keeps it alive. Reads race benignly with the owner.
            if unsafe { core::ptr::read_volatile(addr as *const u64) } != 0 {
                return top - addr;
            }
            addr += 8;
        }
        0
    }

    /// Whether the stack is parked (no page mapped, its live bytes in a block).
    pub fn is_parked(&self) -> bool {
        self.parked_block.load(Ordering::Relaxed) != 0
    }

    /// Bytes of the block holding the parked stack (0 when not parked).
    pub fn parked_bytes(&self) -> u64 {
        if !self.is_parked() {
            return 0;
        }
        park::class_for(self.parked_len.load(Ordering::Relaxed) as usize)
            .map_or(0, |c| park::CLASSES[c] as u64)
    }

    /// The arena slot of this stack.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// Growth faults this stack has taken.
    pub fn grow_faults(&self) -> u32 {
        self.grow_faults.load(Ordering::Relaxed)
    }

    /// Takes the right to run on this stack. Fails while trim works on it.
    pub fn try_claim(&self) -> bool {
        let ok = self
            .claim
            .compare_exchange(
                CLAIM_FREE,
                CLAIM_RUNNING,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok();
        if !ok {
            CLAIM_RACES.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Gives up the right taken by [`try_claim`](Self::try_claim), once the registers are saved.
    pub fn release_claim(&self) {
        self.claim.store(CLAIM_FREE, Ordering::Release);
    }
}

/// Makes sure this CPU's reserve holds the zeroed pages `stack` may still map, up to the
/// reserve's bound ([`reserve::RESERVE_MAX`] pages), and restores the stack if it is parked.
/// Called by the scheduler (exception context, claim held) before it switches a thread in.
/// Returns false if memory could not be found; the thread must wait then.
///
/// While memory is plentiful the reserve is filled to `kstack.max` pages (at most the bound)
/// whatever the stack holds: that is what a parked stack needs (its top page and room to
/// grow), and refilling after every growth or restore on the next switch-in keeps the
/// zeroing of a page out of a parked thread's wake. While memory is low
/// ([`reserve::memory_low`]) a refill takes only what this stack can still map (`kstack.max`
/// less its mapped pages; all of it for a parked stack, which has none mapped), and a fuller
/// reserve gives the rest back: while memory is low no reserve counts as full for the inline
/// check below ([`reserve::is_full_noting_use`]), so every switch-in of a dynamic thread
/// comes here. Both keep the guarantee below.
///
/// The guarantee, exactly: a thread whose stack can grow by at most `RESERVE_MAX` more pages
/// (every thread while `kstack.max - kstack.initial` ≤ 256 KiB) never takes a growth that
/// waits or fails. A deeper stack maps from the reserve until it is empty; its next growth
/// tops the reserve up from the fault path when the thread holds no lock, or else switches
/// it out with the faulting instruction to be retried, and it runs again only once the
/// scheduler has refilled the reserve for it ([`FaultOutcome::Wait`]). A growth never fails
/// silently: the only failure left is a thread that holds a lock when the reserve runs dry
/// (it can be neither switched out nor served), which is reported as an OOM.
///
/// Inline, the common case: a fixed stack needs nothing, nor does a dynamic one that is not
/// parked while this CPU's reserve is full; so a switch to a dynamic thread that needs
/// nothing costs what a switch to a fixed one does (`bench switch`), a few loads more.
#[inline(always)]
pub fn prepare_switch_in(cpu: usize, stack: &Stack) -> bool {
    if stack.policy == StackPolicy::Fixed
        || (reserve::is_full_noting_use(cpu) && !stack.is_parked())
    {
        return true;
    }
    refill_for_switch_in(cpu, stack)
}

/// The timer tick's part for stacks, on CPU `cpu` (exception context, IRQs masked):
/// `current` is the stack of the thread the tick interrupted. Lets the CPU's reserve drain
/// when memory is low or the CPU has gone quiet, keeping what a running dynamic stack can
/// still map ([`reserve::on_tick`]).
pub fn on_tick(cpu: usize, now: u64, current: Option<&Stack>) {
    let can_map = current
        .filter(|s| s.policy == StackPolicy::Dynamic)
        .map(|s| {
            (max_pages() as usize).saturating_sub(s.mapped_pages.load(Ordering::Relaxed) as usize)
        });
    reserve::on_tick(cpu, now, can_map);
}

/// [`prepare_switch_in`] for a dynamic stack that needs something: a refill, a restore.
#[inline(never)]
fn refill_for_switch_in(cpu: usize, stack: &Stack) -> bool {
    let mut need = max_pages() as usize;
    if reserve::memory_low() {
        need -= (stack.mapped_pages.load(Ordering::Relaxed) as usize).min(need);
    }
    if reserve::fill(cpu, need) && park::restore(cpu, stack) {
        true
    } else {
        SHORTAGES.fetch_add(1, Ordering::Relaxed);
        if stack.is_parked() {
            park::count_wait();
        }
        // Memory ran low: have the reaper give back what sleeping threads do not use.
        crate::sched::request_trim();
        false
    }
}

/// What a data abort turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultOutcome {
    /// The stack grew; return and retry the instruction.
    Grown,
    /// The address is in the guard gap below the current thread's stack.
    Overflow,
    /// The stack should grow but the reserve ran dry (what it held is mapped): switch the
    /// thread out; it retries the access once the scheduler refilled the reserve.
    Wait,
    /// The stack should grow, the reserve is empty and the thread cannot wait (it holds a
    /// lock).
    OutOfMemory,
    /// Below the mapped part, but this strategy does not grow on a fault (`expand`,
    /// `check`): the stack was not grown in time.
    Miss,
    /// Not a stack fault of the current thread.
    NotStack,
}

/// Test hook: the next growth faults inside the slow fault path itself (a wild read), which
/// must end in a clear report of a fault in exception context, never a hang. While it is
/// pending the fast path stays out of the way, so the next fault reaches [`on_fault`]. Only
/// in kernels built with the `test-hooks` feature (the test kernels).
#[cfg(feature = "test-hooks")]
pub fn inject_fault_in_growth_path() {
    set_ctl(CTL_INJECT_SLOW, true);
}

/// The stack-growth fault path (exception context, IRQs masked, no locks). The fast path
/// (`fast`) handles most growths before the trap frame is even pushed; this handles every
/// fault it leaves, growths included (a short reserve, the fast path switched off).
pub fn on_fault(frame: &TrapFrame, syndrome: Syndrome, far: u64) -> FaultOutcome {
    if !frame.from_thread() || !syndrome.is_translation_fault() {
        return FaultOutcome::NotStack;
    }
    let ctl = GROW_CTL.load(Ordering::Relaxed);
    #[cfg(feature = "test-hooks")]
    if ctl & CTL_INJECT_SLOW != 0 {
        set_ctl(CTL_INJECT_SLOW, false);
        // SAFETY: deliberately not safe: an unmapped address, to test the nested-fault report.
        unsafe { core::ptr::read_volatile(0xdead_0000 as *const u64) };
    }
    let cpu = cpu_index();
    let thread = crate::sched::current_on(cpu);
    if thread.is_null() {
        return FaultOutcome::NotStack;
    }
    // SAFETY: the current thread's control block outlives its time on this CPU.
    let stack = unsafe { &(*thread).stack };
    let base = stack.base();
    if far < base && far >= base - GUARD_BYTES.load(Ordering::Relaxed) {
        OVERFLOWS.fetch_add(1, Ordering::Relaxed);
        return FaultOutcome::Overflow;
    }
    let bottom = stack.mapped_bottom();
    if far < base || far >= bottom {
        return FaultOutcome::NotStack;
    }
    if stack.policy == StackPolicy::Fixed {
        // A fixed stack smaller than its reservation (a system thread's) never grows: below
        // its mapped part is as good as its guard.
        OVERFLOWS.fetch_add(1, Ordering::Relaxed);
        return FaultOutcome::Overflow;
    }
    if ctl & CTL_GROW_ON_FAULT == 0 {
        // Stacks grow only ahead of use (`kstack.strategy=expand`: `ensure`, `expand_stack`;
        // `check`: the entry hook): running past the mapped part is a miss, whatever is
        // left of the reservation.
        strategy::count_miss();
        return FaultOutcome::Miss;
    }
    let first = align_down(far, PAGE);
    let wanted = ((bottom - first) / PAGE) as u32;
    let pages = map_below(stack, cpu, wanted);
    if pages == 0 {
        if crate::sync::locks_held() > 0 {
            // Cannot be switched out while it holds a spin lock: nothing else can be done.
            OOM_KILLS.fetch_add(1, Ordering::Relaxed);
            return FaultOutcome::OutOfMemory;
        }
        // No memory now: the thread waits in its run queue until a refill succeeds.
        return FaultOutcome::Wait;
    }
    // The CPU running the thread is the only writer of its stack's counters.
    stack.grow_faults.store(
        stack.grow_faults.load(Ordering::Relaxed) + 1,
        Ordering::Relaxed,
    );
    bump(&GROWTH[cpu].grow_faults, 1);
    if pages < wanted {
        // Part of the way there: the retry faults again, and waits for a refill then.
        return FaultOutcome::Wait;
    }
    FaultOutcome::Grown
}

/// Maps up to `wanted` more pages of the running thread's `stack` below its mapped part,
/// from CPU `cpu`'s reserve (IRQs masked, on that CPU), topped up from the frame allocator
/// when the thread holds no lock. Returns how many it mapped: fewer when memory is short (the
/// reserve is bounded, see `reserve`). Shared by the fault path and growth ahead of use.
fn map_below(stack: &Stack, cpu: usize, wanted: u32) -> u32 {
    let mut va = stack.mapped_bottom();
    let mut map = |pa| {
        va -= PAGE;
        arena::map_page(va, pa);
    };
    // From the mapped part downwards, as far as the reserve goes.
    let mut pages = reserve::take(cpu, wanted as usize, &mut map) as u32;
    if pages < wanted && crate::sync::locks_held() == 0 {
        // The reserve is short (the fast path left this fault here for that). The
        // interrupted thread holds no lock, so the frame allocator's cannot be held on this
        // CPU: top the reserve up as the scheduler would (bounded), then go on.
        reserve::fill(cpu, (wanted - pages) as usize);
        pages += reserve::take(cpu, (wanted - pages) as usize, &mut map) as u32;
    }
    if pages == 0 {
        return 0;
    }
    arena::publish();
    let mapped = stack.mapped_pages.load(Ordering::Relaxed) + pages;
    stack.mapped_pages.store(mapped, Ordering::Relaxed);
    if mapped > stack.high_water_pages.load(Ordering::Relaxed) {
        stack.high_water_pages.store(mapped, Ordering::Relaxed);
    }
    bump(&GROWTH[cpu].grown_pages, pages as u64);
    pages
}

/// Maps enough of the current thread's stack that `bytes` more below the current SP can be
/// used without a fault (the article's `expand_stack()`), for code that must not fault.
/// Under `kstack.strategy=fault` it touches the pages (each touch that faults grows the
/// stack); under `expand` and `check`, where faults do not grow, it maps them directly.
pub fn ensure(bytes: usize) {
    let sp = crate::arch::stack_pointer();
    let target = sp.saturating_sub(bytes as u64);
    if !strategy::grows_on_fault() {
        strategy::grow_ahead_to(target);
    }
    let mut addr = align_down(sp, PAGE);
    // Touch each page from the top down, as the compiler's stack probes do: every touch that
    // faults grows the stack by one page (under `expand`/`check` they are mapped already). A
    // request larger than the reservation reaches the guard gap first and ends the thread as
    // an overflow: it never runs on with less stack than it asked for.
    while addr > target {
        addr -= PAGE;
        // SAFETY: an address in this thread's own reservation; a fault here is a growth.
        unsafe { core::ptr::read_volatile(addr as *const u8) };
    }
}

/// The annotation a developer puts where code knows it goes `bytes` deep (the article's
/// `expand_stack()`): under `kstack.strategy=expand` it maps that much below SP now (as far
/// as the reservation goes); the other strategies grow by themselves, so it does nothing.
pub fn expand_stack(bytes: usize) {
    if strategy::current() == crate::cmdline::StackStrategy::Expand {
        let sp = crate::arch::stack_pointer();
        strategy::grow_ahead_to(sp.saturating_sub(bytes as u64));
    }
}

/// Runs `f` with at least `bytes` of stack mapped below the current SP. Asking for more than
/// the reservation holds is a stack overflow (the thread ends with an `OVERFLOW` report).
pub fn with_stack<R>(bytes: usize, f: impl FnOnce() -> R) -> R {
    ensure(bytes);
    f()
}

/// Initialises the arena and the per-CPU reserves (bounded: see `reserve`) for `cpus` CPUs.
pub fn init(cpus: usize) {
    arena::init();
    park::init();
    reserve::init(cpus, max_pages() as usize);
}
