//! Trim: giving back the pages of a sleeping thread's stack that lie wholly below its saved
//! SP, under the stack's claim (so a switch-in cannot race it), and the `trim` command's walk
//! over every thread.
//!
//! Owns [`trim`], [`trim_all`] and [`give_back_unused`]. Calls `arena`, `reserve`, `park`,
//! `strategy`, `sched` (the thread walk) and `arch::tlb`.
use core::sync::atomic::Ordering;

use super::{
    arena, count_unmapped, initial_pages, park, reserve, strategy, Stack, CLAIM_FREE, CLAIM_RACES,
    CLAIM_TRIMMING, PAGE, TRIMMED_PAGES,
};
use crate::cmdline::StackPolicy;
use crate::mm::layout::align_down;
use crate::percpu::cpu_index;

/// Bytes kept mapped below a sleeping thread's saved SP when trimming, so that returning
/// from the switch and a few calls do not fault at once.
const TRIM_MARGIN: u64 = 512;

/// Trims `stack` of a thread that is not running: unmaps pages wholly below its saved SP
/// (keeping `kstack.initial` and a small margin). Returns pages freed.
///
/// The margin follows the strategy: under `check` it is at least `kstack.lookahead`, which
/// the function that was interrupted counts on (its entry check is behind it); under
/// `expand` nothing is trimmed, since an `expand_stack` the thread made earlier may still
/// promise pages below its SP that a fault would not give back.
///
/// `saved_sp` is called only once the stack is claimed: read any earlier, the thread might
/// run and stop again in between, deeper, and trim would take pages it uses.
pub fn trim(stack: &Stack, saved_sp: impl FnOnce() -> u64) -> u32 {
    if stack.policy != StackPolicy::Dynamic {
        return 0;
    }
    if stack
        .claim
        .compare_exchange(
            CLAIM_FREE,
            CLAIM_TRIMMING,
            Ordering::Acquire,
            Ordering::Relaxed,
        )
        .is_err()
    {
        CLAIM_RACES.fetch_add(1, Ordering::Relaxed);
        return 0;
    }
    let freed = trim_claimed(stack, saved_sp());
    stack.claim.store(CLAIM_FREE, Ordering::Release);
    freed
}

/// [`trim`] with the claim already held (as trimming or parking).
pub(super) fn trim_claimed(stack: &Stack, saved_sp: u64) -> u32 {
    let margin = match strategy::current() {
        crate::cmdline::StackStrategy::Fault => TRIM_MARGIN,
        crate::cmdline::StackStrategy::Check => TRIM_MARGIN.max(strategy::lookahead()),
        crate::cmdline::StackStrategy::Expand => return 0,
    };
    let top = stack.top();
    let mapped = stack.mapped_pages.load(Ordering::Relaxed);
    let keep_from = align_down(saved_sp.saturating_sub(margin), PAGE)
        .min(top - initial_pages(StackPolicy::Dynamic) as u64 * PAGE);
    let bottom = top - mapped as u64 * PAGE;
    if saved_sp > bottom && saved_sp <= top && keep_from > bottom {
        let n = ((keep_from - bottom) / PAGE) as u32;
        arena::unmap_pages(bottom, n);
        stack.mapped_pages.store(mapped - n, Ordering::Relaxed);
        count_unmapped(n as u64);
        TRIMMED_PAGES.fetch_add(n as u64, Ordering::Relaxed);
        n
    } else {
        0
    }
}

/// Gives back the running thread's own stack pages wholly below its SP (less a small
/// margin, never the initial pages), zeroed, to this CPU's reserve rather than the frame
/// allocator: a thread that knows it will not go that deep again shrinks without sleeping
/// and without any lock (the TLB invalidation is broadcast, as trim's). Returns pages given
/// back. `bench scale` uses it so that growth faults repeat with nothing but the fault paths
/// and this in the loop.
pub fn give_back_unused() -> u32 {
    let daif = crate::arch::irq::save_and_disable();
    let cpu = cpu_index();
    // SAFETY: the running thread's control block; it holds its stack's claim while it runs,
    // so trim and parking stay away, and IRQs are masked, so nothing else runs here.
    let stack = unsafe { &(*crate::sched::current_ptr()).stack };
    let sp = crate::arch::stack_pointer();
    let top = stack.top();
    let keep_from = align_down(sp.saturating_sub(TRIM_MARGIN), PAGE)
        .min(top - initial_pages(StackPolicy::Dynamic) as u64 * PAGE);
    let bottom = stack.mapped_bottom();
    if stack.policy != StackPolicy::Dynamic || keep_from <= bottom {
        crate::arch::irq::restore(daif);
        return 0;
    }
    let n = ((keep_from - bottom) / PAGE) as u32;
    use crate::mm::page_table::TlbOps;
    let tlb = crate::arch::tlb::HardwareTlb;
    let mut frames = [0u64; 16];
    let mut given = 0u32;
    while given < n {
        let batch = (n - given).min(16);
        for (i, f) in frames.iter_mut().enumerate().take(batch as usize) {
            *f = arena::take_page(bottom + (given as u64 + i as u64) * PAGE);
            tlb.invalidate_page(bottom + (given as u64 + i as u64) * PAGE);
        }
        // The frames are reused only once no CPU can reach them through a stale entry.
        tlb.sync();
        for &pa in &frames[..batch as usize] {
            if pa != 0 {
                crate::mm::frame::zero(pa);
                if !reserve::put(cpu, pa) {
                    crate::mm::frame::free(pa, 1);
                }
            }
        }
        given += batch;
    }
    stack.mapped_pages.store(
        stack.mapped_pages.load(Ordering::Relaxed) - n,
        Ordering::Relaxed,
    );
    count_unmapped(n as u64);
    crate::arch::irq::restore(daif);
    n
}

/// Parks every sleeping thread whose stack may be parked (see [`park`]) and trims every other
/// thread that is not running. Returns pages freed.
pub fn trim_all() -> u64 {
    use crate::sched::{ThreadKind, ThreadState};
    let parking = park::enabled();
    park::with_trim_batch(|batch| {
        let mut freed = 0u64;
        crate::sched::for_each_thread_batched(&mut |seen| {
            let Some(t) = seen else {
                // A chunk is done and the table lock dropped: park what it claimed.
                if !batch.is_empty() {
                    freed += batch.finish().1;
                }
                return;
            };
            let state = t.state();
            // A dead thread's stack goes back whole with it, and its saved SP is stale (it
            // was not saved when it ended): neither parked nor trimmed.
            if t.kind == ThreadKind::Idle
                || matches!(state, ThreadState::Running | ThreadState::Dead)
            {
                return;
            }
            let asleep = matches!(state, ThreadState::Sleeping | ThreadState::Blocked);
            // SAFETY: the thread is parkable and not running (a racing wake only queues it;
            // its switch-in waits for the claim); the claim keeps the control block alive
            // until the batch is finished.
            if parking
                && asleep
                && t.is_parkable()
                // SAFETY: as just said: parkable, not running, claimed until the batch ends.
                && unsafe { batch.claim(&t.stack, t.saved_sp_ptr()) }
            {
                return;
            }
            // SAFETY: `trim` reads the saved SP only once it holds the stack's claim, which
            // keeps the thread from being switched in meanwhile.
            freed += trim(&t.stack, || unsafe { t.saved_sp() }) as u64;
        });
        freed
    })
    .unwrap_or(0)
}
