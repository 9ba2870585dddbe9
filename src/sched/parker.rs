//! The parker: parks the stacks of threads that have slept longer than `kstack.park_after`.
//!
//! Every CPU keeps its parkable sleepers in a list in the order they went to sleep (a thread
//! joins the tail when it sleeps or blocks, and leaves wherever it is when it is woken or
//! killed, in O(1), under the CPU's queue lock). So the threads asleep longest are always at
//! the head, and the parker never looks at any other thread: it takes the heads that are due,
//! claims their stacks under the queue lock (where they are certainly asleep), then parks
//! them in one batch with the lock dropped (`stack::park::ParkBatch`). It sleeps until the
//! next head falls due, or blocks when no list holds anybody; the first sleeper to join an
//! empty list wakes it.
//!
//! A million threads that go to sleep at once are parked `kstack.park_after` later, a batch at
//! a time, so a mass spawn holds at most that long's worth of unparked new threads.
//!
//! Owns the parker thread; the lists are [`super::parklist`], one in each CPU's queue.
//! Calls the run queues (`super`) and `stack::park`.
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use super::parklist::ParkList;
use super::{Thread, ThreadState, QUEUES};
use crate::arch::timer;
use crate::percpu::MAX_CPUS;
use crate::stack::park::{ParkBatch, BATCH};

static PARKER: AtomicPtr<Thread> = AtomicPtr::new(core::ptr::null_mut());
/// The parker is blocked with every list empty: the next sleeper must wake it.
static PARKER_WAITING: AtomicBool = AtomicBool::new(false);
/// A sleeper asked for the parker (woken by `switch_to_next` once no queue lock is held).
static WAKE_PARKER: AtomicBool = AtomicBool::new(false);

/// `kstack.park_after` in timer ticks, or `None` when parking is off.
fn park_after_ticks() -> Option<u64> {
    crate::stack::config()
        .park_after_ms
        .map(|ms| timer::ns_to_ticks(ms as u64 * 1_000_000))
}

/// Puts `t`, which has just gone to sleep on this CPU, on its park list if it may be parked.
/// Called with the CPU's queue lock held (exception context).
pub(super) fn note_asleep(list: &mut ParkList<Thread>, t: *mut Thread) {
    // SAFETY: the thread just saved: alive; its CPU's queue lock is held.
    let th = unsafe { &*t };
    if !th.is_parkable() || PARKER.load(Ordering::Relaxed).is_null() {
        return;
    }
    th.slept_at.store(timer::now(), Ordering::Relaxed);
    let was_empty = list.is_empty();
    // SAFETY: it has just gone to sleep, so it is in no park list (it left it when it last
    // woke); it leaves this one before it is handed to the reaper.
    unsafe { list.push_back(t) };
    if was_empty && PARKER_WAITING.load(Ordering::Acquire) {
        WAKE_PARKER.store(true, Ordering::Release);
    }
}

/// Wakes the parker if a sleeper asked for it. Call with no queue lock held.
pub(super) fn wake_if_asked() {
    if WAKE_PARKER.load(Ordering::Relaxed) && WAKE_PARKER.swap(false, Ordering::AcqRel) {
        let p = PARKER.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: the parker never exits.
            unsafe { super::unpark(p) };
        }
    }
}

/// Starts the parker thread (when `kstack.park_after` is not `off`).
pub fn start() -> Result<(), super::SpawnError> {
    if park_after_ticks().is_none() {
        return Ok(());
    }
    // A system stack of its own size, not kstack.max (see `stack::SYSTEM_STACK_BYTES`).
    let tid = super::spawn_thread(
        "parker",
        super::ThreadKind::System,
        crate::cmdline::StackPolicy::Fixed,
        parker_loop,
        0,
        None,
        None,
        true,
        None,
    )?;
    let p = super::table::with_tid(tid, |t| t).expect("parker just inserted");
    PARKER.store(p, Ordering::Release);
    Ok(())
}

/// Parks, on every CPU, the sleepers that went to sleep at or before `due_before` (timer
/// ticks), a batch at a time. Returns (stacks parked, earliest sleep time still listed).
fn sweep(batch: &mut ParkBatch, due_before: u64) -> (u64, Option<u64>) {
    let mut parked = 0u64;
    let mut next: Option<u64> = None;
    for (cpu, queue) in QUEUES.iter().enumerate() {
        if !super::is_online(cpu) {
            continue;
        }
        loop {
            {
                let mut q = queue.lock();
                while batch.has_room() {
                    let Some(t) = q.parkable.head() else {
                        break;
                    };
                    // SAFETY: listed control blocks are alive (a thread leaves its list
                    // before it is handed to the reaper), under this lock.
                    let th = unsafe { &*t };
                    let slept_at = th.slept_at.load(Ordering::Relaxed);
                    if slept_at > due_before {
                        next = Some(next.map_or(slept_at, |n| n.min(slept_at)));
                        break;
                    }
                    // SAFETY: in this list, alive (as above).
                    unsafe { q.parkable.remove(t) };
                    let asleep = matches!(th.state(), ThreadState::Sleeping | ThreadState::Blocked);
                    if asleep {
                        // SAFETY: asleep (this lock keeps it so while we claim), parkable (it
                        // was listed); the claim keeps it alive until the batch is finished.
                        unsafe { batch.claim(&th.stack, th.saved_sp_ptr()) };
                    }
                }
            }
            if batch.is_empty() {
                break;
            }
            let full = !batch.has_room();
            parked += batch.finish().0;
            if !full {
                break;
            }
        }
    }
    (parked, next)
}

/// Parks every listed sleeper now, whatever its age (spawn, when memory runs low). Returns
/// the stacks parked.
pub fn park_listed_now() -> u64 {
    crate::stack::park::with_trim_batch(|batch| sweep(batch, u64::MAX).0).unwrap_or(0)
}

fn parker_loop(_: usize) {
    let Some(after) = park_after_ticks() else {
        return;
    };
    let mut batch = ParkBatch::with_room_for(BATCH);
    loop {
        let now = timer::now();
        let (_, next) = sweep(&mut batch, now.saturating_sub(after));
        match next {
            Some(slept_at) => super::sleep_until(slept_at + after),
            None => {
                PARKER_WAITING.store(true, Ordering::Release);
                // A sleeper that joined a list before the flag was seen would not wake us:
                // look once more before blocking (an unpark in between leaves a token).
                if !any_listed() {
                    super::park();
                }
                PARKER_WAITING.store(false, Ordering::Release);
            }
        }
    }
}

fn any_listed() -> bool {
    (0..MAX_CPUS).any(|cpu| super::is_online(cpu) && !QUEUES[cpu].lock().parkable.is_empty())
}

/// Parks the stack of `t` now if it is asleep and parkable (benchmarks, tests). Returns
/// whether it was parked.
///
/// # Safety
/// `t` must be a live thread that cannot be reaped meanwhile (its creator keeps it alive).
pub unsafe fn park_now(t: *mut Thread) -> bool {
    crate::stack::park::with_trim_batch(|batch| {
        // SAFETY: the caller keeps `t` alive.
        let th = unsafe { &*t };
        loop {
            let cpu = th.cpu.load(Ordering::Acquire) as usize;
            let mut q = QUEUES[cpu].lock();
            if th.cpu.load(Ordering::Acquire) as usize != cpu {
                continue;
            }
            let asleep = matches!(th.state(), ThreadState::Sleeping | ThreadState::Blocked);
            if !asleep || !th.is_parkable() {
                return false;
            }
            // SAFETY: alive (the caller), asleep on this CPU: in its park list or in none.
            unsafe { q.parkable.remove(t) };
            // SAFETY: asleep under its queue lock, parkable; alive (the caller).
            if !unsafe { batch.claim(&th.stack, th.saved_sp_ptr()) } {
                return false;
            }
            break;
        }
        batch.finish().0 == 1
    })
    .unwrap_or(false)
}
