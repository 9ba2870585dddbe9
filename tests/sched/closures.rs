//! Closures reach their threads whole: small ones travel at the top of the new thread's
//! stack, large or over-aligned ones in a box (`sched::spawn`); either way each is moved in
//! once, runs once and is dropped once, under both stack policies.
use super::*;

/// Captured by the over-aligned closure: more alignment than a thread's SP keeps.
#[repr(align(64))]
struct Aligned([u64; 4]);

/// The sum a thread reports for `words`, so that a word lost or moved shows.
fn weigh(words: &[u64]) -> u64 {
    words.iter().enumerate().fold(0u64, |acc, (i, w)| {
        acc.wrapping_mul(31).wrapping_add(w ^ i as u64)
    })
}

fn pattern<const N: usize>(seed: u64) -> [u64; N] {
    let mut words = [0u64; N];
    for (i, w) in words.iter_mut().enumerate() {
        *w = splitmix(seed + i as u64);
    }
    words
}

/// Runs `f` on a new thread with `policy` and waits for it; its result, or why not.
fn run_on(
    name: &str,
    policy: StackPolicy,
    f: impl FnOnce() -> u64 + Send + 'static,
) -> Result<u64, String> {
    let out = Arc::new(AtomicU64::new(0));
    let o = out.clone();
    let h = sched::spawn_with(name, policy, move || o.store(f(), Ordering::SeqCst))
        .map_err(|e| format!("spawn {} failed: {}", name, e))?;
    h.join();
    check!(
        Arc::strong_count(&out) == 1,
        "{}: the closure was not dropped exactly once (strong count {})",
        name,
        Arc::strong_count(&out)
    );
    Ok(out.load(Ordering::SeqCst))
}

static RAN: AtomicU64 = AtomicU64::new(0);

/// Closures of every kind the spawn path tells apart: capturing nothing, a few words, as
/// much as travels on the stack (256 bytes), more than that, and more aligned than 16.
pub(crate) fn closures_reach_their_threads() -> TestResult {
    for policy in [StackPolicy::Dynamic, StackPolicy::Fixed] {
        let before = RAN.load(Ordering::SeqCst);
        let r = run_on("cl-empty", policy, || {
            RAN.fetch_add(1, Ordering::SeqCst);
            7
        })?;
        check!(r == 7 && RAN.load(Ordering::SeqCst) == before + 1);

        let (a, b) = (splitmix(1), splitmix(2));
        let r = run_on("cl-small", policy, move || a ^ b.rotate_left(7))?;
        check!(
            r == a ^ b.rotate_left(7),
            "{:?}: small closure gave {:#x}",
            policy,
            r
        );

        // 31 words and the Arc `run_on` adds: exactly the most that travels on the stack.
        let words: [u64; 31] = pattern(10);
        let want = weigh(&words);
        let r = run_on("cl-limit", policy, move || weigh(&words))?;
        check!(
            r == want,
            "{:?}: 256-byte closure gave {:#x}, not {:#x}",
            policy,
            r,
            want
        );

        let words: [u64; 200] = pattern(20);
        let want = weigh(&words);
        let r = run_on("cl-large", policy, move || weigh(&words))?;
        check!(
            r == want,
            "{:?}: boxed closure gave {:#x}, not {:#x}",
            policy,
            r,
            want
        );

        let aligned = Aligned(pattern(30));
        let want = weigh(&aligned.0);
        let r = run_on("cl-aligned", policy, move || {
            let at = &aligned as *const Aligned as u64;
            if !at.is_multiple_of(64) {
                return at;
            }
            weigh(&aligned.0)
        })?;
        check!(
            r == want,
            "{:?}: over-aligned closure gave {:#x}, not {:#x}",
            policy,
            r,
            want
        );
    }
    Ok(())
}
