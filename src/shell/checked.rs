//! The workloads whose every run checks its result: `chain` (deep recursion through many
//! tiny frames), `bigframe` (one function with a multi-KiB local buffer), `inflate`
//! (`miniz_oxide` inflates a zlib stream) and `json` (`serde_json` parses and prints
//! a document). The last two run unmodified third-party `no_std` code on the thread's stack.
//!
//! Under `kstack.strategy=expand` the code written here is annotated where it knows it goes
//! deep ([`crate::stack::expand_stack`]), the way a careful developer would; the library
//! calls are not (nobody here knows how deep they go, and the libraries are not ours to
//! change). Owns the operations and the counts of checked and wrong results. Calls `stack`,
//! `sched::heap_scope` (the libraries' heap), `miniz_oxide` and `serde_json`.
use alloc::string::String;
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::rng::XorShift;
use crate::shell::command::Profile;
use crate::stack::expand_stack;

/// Links in one `chain`: each is a frame of a few words, below any frame-size threshold.
pub const CHAIN_LINKS: u32 = 320;
/// What the `expand` annotation budgets per link: a generous guess at a tiny frame.
const CHAIN_BYTES_PER_LINK: usize = 40;
/// The local buffer of `bigframe`.
pub const BIG_FRAME_BYTES: usize = 6 * 1024;
/// Items in a `json` document.
const JSON_ITEMS: u64 = 24;
/// The first chunk of the heap an `inflate` runs in: its output grows by doubling, and a
/// 64 KiB chunk less the heap's descriptor has no block for the last step.
const INFLATE_HEAP_BYTES: usize = 128 * 1024;
/// The first chunk of the heap a `json` runs in: about half the documents need a second
/// chunk of as much (the buddy blocks of the larger ones pass 128 KiB).
const JSON_HEAP_BYTES: usize = 128 * 1024;

static CHECKED: AtomicU64 = AtomicU64::new(0);
static WRONG: AtomicU64 = AtomicU64::new(0);

/// Operations whose result was checked and right, and those that came out wrong, since boot.
pub fn results() -> (u64, u64) {
    (
        CHECKED.load(Ordering::Relaxed),
        WRONG.load(Ordering::Relaxed),
    )
}

/// Runs one operation of `profile` (one of [`Profile::CHECKED`]) with draws from `rng` and
/// checks its result; counts it, and on a wrong result prints `error: ...`. True if right.
///
/// `inflate` and `json` run in a heap of their own (`sched::heap_scope`): the libraries
/// allocate without handling failure, so memory running out inside them ends just this
/// thread, and whatever they allocated goes back whole. Without memory for that heap the
/// operation does not start: `error: ...: out of memory ...`, counted neither way.
pub fn run_counted(profile: &Profile, rng: &mut XorShift) -> bool {
    let Some(bytes) = own_heap_bytes(profile) else {
        return count(profile, run(profile, rng));
    };
    match crate::sched::heap_scope::with_own_heap(bytes, || count(profile, run(profile, rng))) {
        Ok(right) => right,
        Err(e) => {
            crate::println!(
                "error: {} thread {}: {}",
                profile,
                crate::sched::current_tid(),
                e
            );
            false
        }
    }
}

/// The first chunk of the heap `profile` runs in, if it needs one: what one operation takes,
/// as the thread heap's `peak` and `pages` counters measured it, so that it seldom grows.
fn own_heap_bytes(profile: &Profile) -> Option<usize> {
    match profile {
        Profile::Inflate => Some(INFLATE_HEAP_BYTES),
        Profile::Json => Some(JSON_HEAP_BYTES),
        _ => None,
    }
}

/// Counts a result (and reports a wrong one); whether it was right.
fn count(profile: &Profile, result: Result<(), String>) -> bool {
    match result {
        Ok(()) => {
            CHECKED.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(why) => {
            WRONG.fetch_add(1, Ordering::Relaxed);
            crate::println!(
                "error: {} thread {}: {}",
                profile,
                crate::sched::current_tid(),
                why
            );
            false
        }
    }
}

fn run(profile: &Profile, rng: &mut XorShift) -> Result<(), String> {
    match profile {
        Profile::Chain => chain(rng),
        Profile::Bigframe => bigframe(rng),
        Profile::Inflate => inflate(rng),
        Profile::Json => json(rng),
        _ => Err(alloc::format!("{profile} is not a checked workload")),
    }
}

/// One link: a frame record and one saved register. The call is not in tail position (the
/// result goes through `black_box` before the last step), so every link keeps its frame.
#[inline(never)]
fn link(n: u32, acc: u64) -> u64 {
    if n == 0 {
        return acc;
    }
    let below = core::hint::black_box(link(n - 1, acc.wrapping_mul(31).wrapping_add(n as u64)));
    below ^ n as u64
}

fn chain(rng: &mut XorShift) -> Result<(), String> {
    let seed = rng.next_u64();
    expand_stack(CHAIN_LINKS as usize * CHAIN_BYTES_PER_LINK);
    let got = link(CHAIN_LINKS, seed);
    let mut acc = seed;
    let mut xor = 0u64;
    for n in (1..=CHAIN_LINKS as u64).rev() {
        acc = acc.wrapping_mul(31).wrapping_add(n);
        xor ^= n;
    }
    let want = acc ^ xor;
    if got == want {
        Ok(())
    } else {
        Err(alloc::format!("chain gave {got:#x}, expected {want:#x}"))
    }
}

/// The whole buffer is one frame: the compiler's stack probes touch it page by page in the
/// prologue, before any function-entry hook runs.
#[inline(never)]
fn big_frame(seed: u64) -> u64 {
    let mut buf = [0u64; BIG_FRAME_BYTES / 8];
    for (i, w) in buf.iter_mut().enumerate() {
        *w = seed.wrapping_add(3 * i as u64);
    }
    core::hint::black_box(&mut buf);
    buf.iter().fold(0u64, |a, &w| a.wrapping_add(w))
}

fn bigframe(rng: &mut XorShift) -> Result<(), String> {
    let seed = rng.next_u64();
    expand_stack(BIG_FRAME_BYTES + 1024);
    let got = big_frame(seed);
    let n = (BIG_FRAME_BYTES / 8) as u64;
    let want = seed.wrapping_mul(n).wrapping_add(3 * n * (n - 1) / 2);
    if got == want {
        Ok(())
    } else {
        Err(alloc::format!("bigframe gave {got:#x}, expected {want:#x}"))
    }
}

/// What `inflate` inflates: 16 KiB of text (`data/workloads/words.txt`) and the same,
/// compressed with zlib at level 9 (`words.txt.zz`, Python's `zlib.compress`). The compressed
/// form is made ahead because deflating here would need more stack than a thread has:
/// `miniz_oxide`'s compressor keeps its 64 KiB LZ code buffer inside the compressor state,
/// which `compress_to_vec` builds on the stack (a thread dies in its guard even at
/// `kstack.max=64k`). Inflating needs far less.
const WORDS: &[u8] = include_bytes!("../../data/workloads/words.txt");
const WORDS_ZLIB: &[u8] = include_bytes!("../../data/workloads/words.txt.zz");

fn inflate(rng: &mut XorShift) -> Result<(), String> {
    // Where in the text to compare first: a draw, so that no two runs are alike to the
    // optimiser; the whole output is compared either way.
    let start = (rng.next_u64() % WORDS.len() as u64) as usize;
    let unpacked = miniz_oxide::inflate::decompress_to_vec_zlib(WORDS_ZLIB)
        .map_err(|e| alloc::format!("inflate failed: {:?}", e.status))?;
    if unpacked.len() != WORDS.len()
        || unpacked[start..] != WORDS[start..]
        || unpacked[..start] != WORDS[..start]
    {
        return Err(alloc::format!(
            "inflated {} bytes that differ from the {} of the original",
            unpacked.len(),
            WORDS.len()
        ));
    }
    Ok(())
}

/// A compact JSON document with keys in sorted order (as `serde_json` prints a map), items
/// with nested objects a few levels deep; returns it and the sum of its `n` fields.
fn json_document(rng: &mut XorShift) -> (String, u64) {
    let mut doc = String::from("{\"items\":[");
    let mut sum = 0u64;
    for id in 0..JSON_ITEMS {
        let n = rng.next_u64() % 100_000;
        sum += n;
        let depth = 1 + rng.next_u64() % 6;
        if id > 0 {
            doc.push(',');
        }
        doc.push('{');
        for _ in 0..depth {
            doc.push_str("\"child\":{");
        }
        doc.push_str("\"leaf\":true");
        for _ in 0..depth {
            doc.push('}');
        }
        let _ = write!(
            doc,
            ",\"id\":{id},\"n\":{n},\"tags\":[\"t{}\",\"u{}\"]}}",
            n % 7,
            n % 13
        );
    }
    doc.push_str("],\"name\":\"dynstack\"}");
    (doc, sum)
}

fn json(rng: &mut XorShift) -> Result<(), String> {
    let (doc, want) = json_document(rng);
    let value: serde_json::Value =
        serde_json::from_str(&doc).map_err(|e| alloc::format!("parse failed: {e}"))?;
    let items = value["items"]
        .as_array()
        .ok_or_else(|| String::from("no items array"))?;
    let got: u64 = items.iter().filter_map(|i| i["n"].as_u64()).sum();
    if items.len() as u64 != JSON_ITEMS || got != want {
        return Err(alloc::format!(
            "{} items summing to {got}, expected {JSON_ITEMS} summing to {want}",
            items.len()
        ));
    }
    let printed = serde_json::to_string(&value).map_err(|e| alloc::format!("print failed: {e}"))?;
    if printed != doc {
        return Err(String::from("printed document differs from the parsed one"));
    }
    Ok(())
}
