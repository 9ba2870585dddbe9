//! The per-CPU reserve of zeroed pages the growth fault path maps from.
//!
//! Only the owning CPU touches its reserve, and only in exception context (IRQs masked): the
//! scheduler fills it before switching a dynamic thread in, and the fault path takes from it.
//! So it needs no lock, and a growth never waits for the frame allocator.
//!
//! Bounded: a reserve holds at most [`RESERVE_MAX`] pages (256 KiB), whatever `kstack.max`
//! is. The scheduler fills it with what the incoming thread can still map, up to that bound;
//! a deeper growth empties it and then waits for a refill (see `stack::on_fault`). Drained:
//! while memory is low every dynamic switch-in keeps only what the incoming thread can still
//! map ([`fill`], `on_memory_low`) and each tick gives back what the running thread cannot
//! map ([`on_tick`]); a CPU where
//! for [`IDLE_DRAIN_NS`] no tick found a dynamic thread running or switched in since the
//! tick before gives back all of it at its next tick; the next dynamic thread switched in
//! refills it.
//! The pages held are counted (`reserve_kib=` in `stacks`).
//!
//! Why draining cannot race the fault path: every pop and push of a CPU's reserve (the fast
//! path, `stack::on_fault`, the switch-in fill, trim's `put`, both drains) runs on that CPU
//! with IRQs masked, so on one CPU they follow one another and no other CPU ever touches the
//! reserve. A drain started from anywhere else (another CPU, or a thread with IRQs on that
//! an interrupt could enter to fill or grow) would break that, so there is none.
//!
//! Calls `mm::frame` (to fill and drain).
//!
//! # The layout the fast path reads
//!
//! The growth fast path (`stack::fast`, assembly) reads the reserves directly; this is the
//! one place that layout is defined, and the constants below are what the assembly gets:
//!
//! - `RESERVES[cpu]` is a `Reserve` of `1 << SHIFT` bytes (`SHIFT`);
//! - at `LEN_OFFSET`, `len: usize`: how many pages the reserve holds;
//! - at `PAGES_OFFSET`, `pages: *mut u64`: the physical addresses of those pages are
//!   `pages[0..len]`, each a zeroed frame no one else uses.
//!
//! Taking `n` pages is: check `len >= n`, use `pages[len - n..len]`, store `len - n`. A
//! change to how the reserve is kept must keep this (or change the fast path with it).
use alloc::vec::Vec;
use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use crate::percpu::MAX_CPUS;

/// Most pages one CPU's reserve holds (256 KiB), whatever `kstack.max` is.
pub const RESERVE_MAX: usize = 64;

/// Free frames below which reserves keep only what their CPU's thread can still map.
pub const LOW_WATER_PAGES: u64 = 1024;

/// Whether memory is low enough that reserves keep only what their thread can still map.
pub fn memory_low() -> bool {
    crate::mm::frame::free_pages() < LOW_WATER_PAGES
}

/// One CPU's reserve: a fixed buffer of frame addresses allocated at boot, and how many of
/// its entries hold pages.
#[repr(C, align(64))]
pub(super) struct Reserve {
    /// Pages held. Written only by the owning CPU (exception context); read by anyone for
    /// `stacks`.
    len: AtomicUsize,
    /// Entries in `pages` (set once at boot).
    cap: AtomicUsize,
    /// What the scheduler's inline check counts as full ([`is_full_noting_use`]): `cap`
    /// while memory is plentiful, `usize::MAX` while it is low (set by the frame allocator's
    /// low-water watch, `on_memory_low`), so that every switch-in of a dynamic thread then
    /// goes to [`fill`], which gives back what the incoming thread cannot map. Next to `len`,
    /// so the check is one load pair.
    full_at: AtomicUsize,
    /// `cap` entries; `pages[..len]` are zeroed frames.
    pages: AtomicPtr<u64>,
    /// Set by every switch-in of a dynamic thread ([`is_full_noting_use`]), cleared by the
    /// tick that sees it ([`on_tick`]). Owner only; next to `len` and `cap`, so setting it
    /// costs the switch one store to a line it has just read.
    used: AtomicBool,
    /// Counter time at which a tick last found this CPU's reserve in use: a dynamic thread
    /// running, or one switched in since the tick before ([`on_tick`]). Owner only.
    quiet_since: AtomicU64,
}

/// log2 of the size of one [`Reserve`] (the fast path indexes `RESERVES` by shifting).
pub(super) const SHIFT: u32 = size_of::<Reserve>().trailing_zeros();
const _: () = assert!(size_of::<Reserve>() == 1 << SHIFT);
/// Offset of `len` in a [`Reserve`].
pub(super) const LEN_OFFSET: usize = offset_of!(Reserve, len);
/// Offset of `pages` in a [`Reserve`].
pub(super) const PAGES_OFFSET: usize = offset_of!(Reserve, pages);

/// Every CPU's reserve (see the module doc for what the fast path relies on).
pub(super) static RESERVES: [Reserve; MAX_CPUS] = [const {
    Reserve {
        len: AtomicUsize::new(0),
        cap: AtomicUsize::new(0),
        full_at: AtomicUsize::new(0),
        pages: AtomicPtr::new(core::ptr::null_mut()),
        used: AtomicBool::new(false),
        quiet_since: AtomicU64::new(0),
    }
}; MAX_CPUS];

/// Gives each CPU room for `capacity` pages, at most [`RESERVE_MAX`] (so filling never
/// allocates).
pub fn init(cpus: usize, capacity: usize) {
    let capacity = capacity.min(RESERVE_MAX);
    for r in RESERVES.iter().take(cpus) {
        let buf: &'static mut [u64] = Vec::leak(alloc::vec![0u64; capacity]);
        r.pages.store(buf.as_mut_ptr(), Ordering::Relaxed);
        r.cap.store(buf.len(), Ordering::Release);
        r.full_at.store(buf.len(), Ordering::Release);
    }
    crate::mm::frame::watch_low(LOW_WATER_PAGES, on_memory_low);
}

/// The frame allocator's low-water watch (under its lock, IRQs masked): free memory fell
/// below [`LOW_WATER_PAGES`] (`low`) or rose to it again. While it is low no reserve counts
/// as full for the scheduler's inline check, so the next switch-in on each CPU gives back
/// what its thread cannot map, at once rather than at that CPU's next tick (which a CPU
/// switching between two threads that yield to each other may not see for a long time).
fn on_memory_low(low: bool) {
    for r in RESERVES.iter() {
        let full = if low {
            usize::MAX
        } else {
            r.cap.load(Ordering::Relaxed)
        };
        r.full_at.store(full, Ordering::Relaxed);
    }
}

/// CPU `cpu`'s buffer and its length now.
fn parts(cpu: usize) -> (*mut u64, usize, usize) {
    let r = &RESERVES[cpu];
    (
        r.pages.load(Ordering::Relaxed),
        r.len.load(Ordering::Relaxed),
        r.cap.load(Ordering::Relaxed),
    )
}

/// Whether CPU `cpu`'s reserve holds as many pages as it can (never while memory is low:
/// see `on_memory_low`), noting that a dynamic thread is being switched in (so the CPU is
/// not quiet, see [`on_tick`]). When full, [`fill`] with
/// any `need` of at least the capacity (the scheduler's: `kstack.max` pages) has nothing to
/// do: the check the scheduler makes inline before every switch-in of a dynamic thread, the
/// common case.
#[inline(always)]
pub fn is_full_noting_use(cpu: usize) -> bool {
    let r = &RESERVES[cpu];
    r.used.store(true, Ordering::Relaxed);
    r.len.load(Ordering::Relaxed) >= r.full_at.load(Ordering::Relaxed)
}

/// Fills CPU `cpu`'s reserve up to `need` pages (at most its capacity). False if memory ran
/// out first. While memory is low, pages above `need` go back to the frame allocator.
pub fn fill(cpu: usize, need: usize) -> bool {
    let (pages, mut len, cap) = parts(cpu);
    let need = need.min(cap);
    // The common case on every switch-in: nothing to do.
    if len >= need {
        if len > need && memory_low() {
            let freed = drain_to(cpu, need);
            LOW_DRAINED.fetch_add(freed as u64, Ordering::Relaxed);
        }
        return true;
    }
    let mut ok = true;
    while len < need {
        match crate::mm::frame::alloc_zeroed() {
            // SAFETY: `len < cap`: inside the buffer, which only this CPU writes (module doc).
            Some(pa) => unsafe {
                pages.add(len).write(pa);
                len += 1;
            },
            None => {
                ok = false;
                break;
            }
        }
    }
    RESERVES[cpu].len.store(len, Ordering::Relaxed);
    ok
}

/// Takes up to `n` zeroed pages from CPU `cpu`'s reserve, handing each to `map`; returns
/// how many it took (fewer than `n` when the reserve runs dry).
pub fn take(cpu: usize, n: usize, mut map: impl FnMut(u64)) -> usize {
    let (pages, mut len, _) = parts(cpu);
    let taken = n.min(len);
    for _ in 0..taken {
        len -= 1;
        // SAFETY: `len` < the old length: an entry that holds a page (module doc).
        map(unsafe { pages.add(len).read() });
    }
    RESERVES[cpu].len.store(len, Ordering::Relaxed);
    taken
}

/// Takes exactly `n` zeroed pages from CPU `cpu`'s reserve, handing each to `map`; false
/// (and nothing taken) if the reserve holds fewer.
pub fn take_all(cpu: usize, n: usize, map: impl FnMut(u64)) -> bool {
    if pages(cpu) < n {
        return false;
    }
    take(cpu, n, map) == n
}

/// How long a CPU must go without switching a dynamic thread in before a tick drains its
/// reserve: much longer than a time slice, so that threads that sleep and wake on an
/// otherwise idle CPU keep finding their pages there, and short enough that an idle machine
/// soon holds none.
pub const IDLE_DRAIN_NS: u64 = 100_000_000;

/// CPU `cpu`'s timer tick (exception context, IRQs masked, on CPU `cpu`, under that CPU's
/// run-queue lock, which the switch-in fill also holds when it allocates): the drains that
/// do not wait for a switch-in. `running_can_map` is what the thread the tick interrupted
/// can still map: `Some(pages)` for a dynamic stack, `None` for a fixed one (this CPU's idle
/// thread, a system thread), which needs no reserve. `now` is the tick's counter reading.
///
/// - Memory low: the reserve keeps only what the running thread can still map and gives
///   the rest back (under a fixed-stack thread, which no switch-in of a dynamic one
///   follows, this is where a reserve drains; the next dynamic switch-in drains it too,
///   see `on_memory_low`).
/// - Quiet: when for [`IDLE_DRAIN_NS`] no tick here found a dynamic thread running or
///   switched in since the tick before, all of it goes back (never under a dynamic thread).
///   A CPU that switches short-lived dynamic threads in between its ticks (a thread that is
///   created, runs and exits; one that wakes for a moment) is not quiet: draining it would
///   only make the next switch-in zero the same pages again.
///
/// Keeping what the running thread can still map keeps the guarantee its switch-in gave
/// (see `stack::prepare_switch_in`). Returns the pages given back.
pub fn on_tick(cpu: usize, now: u64, running_can_map: Option<usize>) -> usize {
    let r = &RESERVES[cpu];
    if r.used.swap(false, Ordering::Relaxed) || running_can_map.is_some() {
        r.quiet_since.store(now, Ordering::Relaxed);
    }
    let low = memory_low();
    let keep = if low {
        running_can_map.unwrap_or(0)
    } else if running_can_map.is_none()
        && now.wrapping_sub(r.quiet_since.load(Ordering::Relaxed))
            >= crate::arch::timer::ns_to_ticks(IDLE_DRAIN_NS)
    {
        0
    } else {
        return 0;
    };
    if pages(cpu) <= keep {
        return 0;
    }
    let freed = drain_to(cpu, keep);
    let counter = if low { &LOW_DRAINED } else { &IDLE_DRAINED };
    counter.fetch_add(freed as u64, Ordering::Relaxed);
    freed
}

/// Pages given back by [`on_tick`] since boot.
static IDLE_DRAINED: AtomicU64 = AtomicU64::new(0);
/// Pages given back because memory was low ([`fill`], [`on_tick`]), since boot.
static LOW_DRAINED: AtomicU64 = AtomicU64::new(0);

/// Pages the reserves gave back since boot: (idle CPUs, memory low).
pub fn drained_pages() -> (u64, u64) {
    (
        IDLE_DRAINED.load(Ordering::Relaxed),
        LOW_DRAINED.load(Ordering::Relaxed),
    )
}

/// Gives CPU `cpu`'s pages above `keep` back to the frame allocator (memory is low, the CPU
/// is idle, or a test hook). On that CPU, IRQs masked; returns the pages given back.
pub fn drain_to(cpu: usize, keep: usize) -> usize {
    let held = pages(cpu);
    let mut freed = 0;
    take(cpu, held.saturating_sub(keep), |pa| {
        crate::mm::frame::free(pa, 1);
        freed += 1;
    });
    freed
}

/// Puts the zeroed frame `pa` back into CPU `cpu`'s reserve (the caller is CPU `cpu` with
/// IRQs masked); false, and nothing done, if the reserve is full.
pub fn put(cpu: usize, pa: u64) -> bool {
    let (pages, len, cap) = parts(cpu);
    if len >= cap {
        return false;
    }
    // SAFETY: `len < cap`: inside the buffer, which only this CPU writes (module doc).
    unsafe { pages.add(len).write(pa) };
    RESERVES[cpu].len.store(len + 1, Ordering::Relaxed);
    true
}

/// Pages held by CPU `cpu`'s reserve.
pub fn pages(cpu: usize) -> usize {
    RESERVES[cpu].len.load(Ordering::Relaxed)
}

/// Pages held in all reserves.
pub fn total_pages() -> u64 {
    RESERVES
        .iter()
        .map(|r| r.len.load(Ordering::Relaxed) as u64)
        .sum()
}

/// Test hook: takes every page out of CPU `cpu`'s reserve and gives it back to the frame
/// allocator, so that the next growth finds the reserve short. Call it on CPU `cpu` with
/// IRQs masked (the reserve's rule); returns the pages taken.
pub fn drain(cpu: usize) -> usize {
    drain_to(cpu, 0)
}

/// Test hook behind `fast::inject_fault_in_fast_path`: points CPU `cpu`'s buffer at an
/// unmapped address, so the next growth that takes a page faults in exception context. The
/// pages it held are lost (the kernel stops at that fault anyway).
#[cfg(feature = "test-hooks")]
pub(super) fn poison(cpu: usize) {
    RESERVES[cpu]
        .pages
        .store(0xdead_0000 as *mut u64, Ordering::SeqCst);
}
