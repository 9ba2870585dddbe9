//! Workload threads for the shell's `spawn`: the profiles `idle`, `mix`, `deep:SIZE`,
//! `overflow`, `churn`, and the checked ones of `shell::checked` (`chain`, `bigframe`,
//! `inflate`, `json`), and the seeded generator their draws come from.
//!
//! Each profile recurses to some depth with frames of a known size (or runs one checked
//! operation), reaches its resting point (reported through `sched::mark_settled`, which
//! `settle` waits for), and then waits to be killed. Where a profile knows how deep it goes,
//! it says so first ([`crate::stack::expand_stack`], which only `kstack.strategy=expand`
//! acts on), as a careful developer would. Calls `sched` and `stack`.
use core::sync::atomic::{AtomicU64, Ordering};

use crate::rng::XorShift;
use crate::sched;
use crate::shell::command::Profile;

static SEED: AtomicU64 = AtomicU64::new(0x5eed_1234_abcd_0001);

/// Sets the seed for workload draws (`seed=` on the command line).
pub fn set_seed(seed: u64) {
    SEED.store(seed, Ordering::Relaxed);
}

/// Workload draws: a [`XorShift`] per thread, seeded from the `seed=` argument.
pub struct Rng;

impl Rng {
    /// The generator for workload thread number `index` of the configured seed.
    pub fn for_index(index: u64) -> XorShift {
        let mut r =
            XorShift::new(SEED.load(Ordering::Relaxed) ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        r.next_u64();
        r
    }
}

/// Bytes of stack one level of [`recurse`] uses (its frame, measured at run time is close).
const FRAME_BYTES: u64 = 256;
/// What the `expand` annotations add to a known recursion depth: the last frame, the calls
/// made at the bottom, a margin.
pub const ANNOTATION_MARGIN: usize = 1024;

fn sp() -> u64 {
    crate::arch::stack_pointer()
}

/// Recurses until SP is at or below `until`, writing a pattern into every frame, then calls
/// `at_bottom` there. Returns a checksum of the frames so nothing is optimised away.
#[inline(never)]
pub fn recurse(until: u64, at_bottom: &mut dyn FnMut()) -> u64 {
    let mut frame = [0u64; (FRAME_BYTES as usize - 64) / 8];
    let me = sp();
    for (i, w) in frame.iter_mut().enumerate() {
        *w = me ^ i as u64;
    }
    core::hint::black_box(&mut frame);
    let below = if me > until {
        recurse(until, at_bottom)
    } else {
        at_bottom();
        0
    };
    // Check the pattern survived whatever happened below (growth, preemption, migration).
    let mut sum = below;
    for (i, w) in frame.iter().enumerate() {
        assert_eq!(*w, me ^ i as u64, "stack frame corrupted at {:#x}", me);
        sum = sum.wrapping_add(*w);
    }
    sum
}

/// Waits, without spinning, until the thread is killed.
fn rest_until_killed() {
    sched::mark_settled();
    loop {
        sched::park();
    }
}

fn stack_top_and_max() -> (u64, u64) {
    // SAFETY: the running thread's control block.
    let t = unsafe { &*sched::current_ptr() };
    (t.stack.top(), crate::stack::config().max as u64)
}

/// `idle`: sleeps until killed.
fn idle(_: usize) {
    rest_until_killed();
}

/// Depth a `mix` thread reaches: 95% within 4 KiB, 4% between 4 and 8 KiB, 1% deeper, up
/// to just under `kstack.max`.
pub fn mix_depth(rng: &mut XorShift, max: u64) -> u64 {
    let roll = rng.range(0, 99);
    let deep_limit = max.saturating_sub(2048).max(8192);
    if roll < 95 {
        rng.range(256, 3 * 1024)
    } else if roll < 99 {
        rng.range(4 * 1024 + 512, 7 * 1024 + 512)
    } else {
        rng.range(8 * 1024 + 512, deep_limit)
    }
}

/// `mix`: recurses once to a drawn depth, returns to the top of its stack and sleeps.
fn mix(index: usize) {
    let (top, max) = stack_top_and_max();
    let mut rng = Rng::for_index(index as u64);
    let depth = mix_depth(&mut rng, max);
    crate::stack::expand_stack(depth as usize + ANNOTATION_MARGIN);
    core::hint::black_box(recurse(top - depth, &mut || {}));
    rest_until_killed();
}

/// `deep:SIZE`: recurses to SIZE bytes of stack and sleeps there.
fn deep(bytes: usize) {
    let (top, max) = stack_top_and_max();
    let depth = (bytes as u64).min(max.saturating_sub(1024));
    crate::stack::expand_stack(depth as usize + ANNOTATION_MARGIN);
    core::hint::black_box(recurse(top - depth, &mut rest_until_killed));
}

/// `overflow`: recurses without bound; the guard gap stops it.
fn overflow(_: usize) {
    core::hint::black_box(recurse(0, &mut || {}));
}

/// `churn`: recurses to random depths, sleeps, repeats, checking its frames every time.
fn churn(index: usize) {
    let (top, max) = stack_top_and_max();
    let mut rng = Rng::for_index(index as u64);
    let mut first = true;
    loop {
        let depth = rng.range(256, max.saturating_sub(2048).max(512));
        let sleep_ms = rng.range(1, 20);
        crate::stack::expand_stack(depth as usize + ANNOTATION_MARGIN);
        core::hint::black_box(recurse(top - depth, &mut || sched::sleep_ms(sleep_ms)));
        if first {
            sched::mark_settled();
            first = false;
        }
        sched::sleep_ms(rng.range(1, 10));
    }
}

/// `chain`, `bigframe`, `inflate`, `json`: one checked operation, then sleeps.
fn checked(profile: Profile, index: usize) {
    let mut rng = Rng::for_index(index as u64);
    crate::shell::checked::run_counted(&profile, &mut rng);
    rest_until_killed();
}

fn chain(index: usize) {
    checked(Profile::Chain, index);
}

fn bigframe(index: usize) {
    checked(Profile::Bigframe, index);
}

fn inflate(index: usize) {
    checked(Profile::Inflate, index);
}

fn json(index: usize) {
    checked(Profile::Json, index);
}

/// The entry point and argument for thread number `index` of `profile`.
pub fn entry_for(profile: &Profile, index: usize) -> (sched::Entry, usize) {
    match profile {
        Profile::Idle => (idle, index),
        Profile::Mix => (mix, index),
        Profile::Deep { bytes } => (deep, *bytes),
        Profile::Overflow => (overflow, index),
        Profile::Churn => (churn, index),
        Profile::Chain => (chain, index),
        Profile::Bigframe => (bigframe, index),
        Profile::Inflate => (inflate, index),
        Profile::Json => (json, index),
    }
}

/// The thread name for `profile`.
pub fn name_for(profile: &Profile) -> &'static str {
    match profile {
        Profile::Idle => "idle",
        Profile::Mix => "mix",
        Profile::Deep { .. } => "deep",
        Profile::Overflow => "overflow",
        Profile::Churn => "churn",
        Profile::Chain => "chain",
        Profile::Bigframe => "bigframe",
        Profile::Inflate => "inflate",
        Profile::Json => "json",
    }
}
