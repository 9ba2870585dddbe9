//! Registers preserved across preemption, and park/unpark.
use super::*;

// -------------------------------------------------------------------------------------------
// Registers across preemption

/// Fills x0..x29 from `table`, then checks them all against it `iters` times, taking a
/// yield (`svc #1`) every `period` iterations (0: never). x30 is the only scratch register;
/// the loop state lives on the stack. On return, `dump` holds x0..x29 as they were at the
/// end (or at the first mismatch) and the result is 0, or 1 for a mismatch.
#[inline(never)]
pub(crate) fn reg_chunk(table: &[u64; 30], iters: u64, period: u64, dump: &mut [u64; 30]) -> u64 {
    let code: u64;
    // SAFETY: saves and restores x19 and x29 itself, declares every other register it
    // changes, and leaves sp as it found it. Memory: reads `table`, writes `dump`.
    unsafe {
        asm!(
            "sub sp, sp, #64",
            "stp x19, x29, [sp, #0]",
            "stp x0, x1, [sp, #16]",
            "stp x2, x2, [sp, #32]",
            "str x3, [sp, #48]",
            "mov x30, x0",
            "ldp x0, x1, [x30, #0]",
            "ldp x2, x3, [x30, #16]",
            "ldp x4, x5, [x30, #32]",
            "ldp x6, x7, [x30, #48]",
            "ldp x8, x9, [x30, #64]",
            "ldp x10, x11, [x30, #80]",
            "ldp x12, x13, [x30, #96]",
            "ldp x14, x15, [x30, #112]",
            "ldp x16, x17, [x30, #128]",
            "ldp x18, x19, [x30, #144]",
            "ldp x20, x21, [x30, #160]",
            "ldp x22, x23, [x30, #176]",
            "ldp x24, x25, [x30, #192]",
            "ldp x26, x27, [x30, #208]",
            "ldp x28, x29, [x30, #224]",
            "1:",
            ".irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29",
            "ldr x30, [sp, #16]",
            "ldr x30, [x30, #(8*\\n)]",
            "cmp x\\n, x30",
            "b.ne 8f",
            ".endr",
            "ldr x30, [sp, #24]",
            "subs x30, x30, #1",
            "str x30, [sp, #24]",
            "b.eq 7f",
            "ldr x30, [sp, #40]",
            "subs x30, x30, #1",
            "str x30, [sp, #40]",
            "b.ne 1b",
            "ldr x30, [sp, #32]",
            "str x30, [sp, #40]",
            "svc #1",
            "ldr x30, [sp, #16]",
            "ldr x0, [x30]",
            "b 1b",
            "7:",
            "mov x30, #0",
            "b 9f",
            "8:",
            "mov x30, #1",
            "9:",
            "str x30, [sp, #56]",
            "ldr x30, [sp, #48]",
            "stp x0, x1, [x30, #0]",
            "stp x2, x3, [x30, #16]",
            "stp x4, x5, [x30, #32]",
            "stp x6, x7, [x30, #48]",
            "stp x8, x9, [x30, #64]",
            "stp x10, x11, [x30, #80]",
            "stp x12, x13, [x30, #96]",
            "stp x14, x15, [x30, #112]",
            "stp x16, x17, [x30, #128]",
            "stp x18, x19, [x30, #144]",
            "stp x20, x21, [x30, #160]",
            "stp x22, x23, [x30, #176]",
            "stp x24, x25, [x30, #192]",
            "stp x26, x27, [x30, #208]",
            "stp x28, x29, [x30, #224]",
            "ldr x0, [sp, #56]",
            "ldp x19, x29, [sp, #0]",
            "add sp, sp, #64",
            inout("x0") table.as_ptr() => code,
            inout("x1") iters => _,
            inout("x2") period => _,
            inout("x3") dump.as_mut_ptr() => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _, out("x18") _,
            out("x20") _, out("x21") _, out("x22") _, out("x23") _,
            out("x24") _, out("x25") _, out("x26") _, out("x27") _,
            out("x28") _, out("x30") _,
        );
    }
    code
}

/// Per-checker outcome.
pub(crate) struct Checker {
    pub(crate) chunks: AtomicU64,
    pub(crate) failure: IrqMutex<Option<String>>,
}

/// Chunks of 3000 checks each never-yielding checker must do; it then goes on until its
/// pair partner on the same CPU has done as many.
pub(crate) const REG_CHUNKS: u64 = 300;

/// Threads fill x0..x29 with their own patterns and check them continuously: on every CPU,
/// two that never yield and one that also yields through `svc` in the middle of its pattern,
/// all pinned there, beside a thread sleeping 1 ms in a loop (timer interrupts all the
/// time). No register (nor the flags, nor SP) ever changes under them. A never-yielding
/// checker ends only once its pair partner on the same CPU has done its `REG_CHUNKS` too,
/// which the partner can do only if the timer preempts the other: without preemption the
/// first to run keeps its CPU forever (the case gives up after a minute and says so). So
/// preemption is shown by an event, whatever the host's speed or load.
pub(crate) fn registers_preserved() -> TestResult {
    let n = sched::online_count();
    let checkers = 3 * n;
    let stop = Arc::new(AtomicBool::new(false));
    let state: Arc<Vec<Checker>> = Arc::new(
        (0..checkers)
            .map(|_| Checker {
                chunks: AtomicU64::new(0),
                failure: IrqMutex::new(None),
            })
            .collect(),
    );
    let switches_before = sched::switches();
    let mut tickers = Vec::new();
    let policy = stack::default_policy();
    for cpu in 0..n {
        let s = stop.clone();
        let h = sched::spawn_pinned("ticker", policy, cpu, move || {
            while !s.load(Ordering::Relaxed) {
                sched::sleep_ms(1);
            }
        });
        tickers.push(h.map_err(|e| format!("spawn_pinned: {}", e))?);
    }
    let mut hs = Vec::new();
    for k in 0..checkers {
        let (st, stop) = (state.clone(), stop.clone());
        let h = sched::spawn_pinned("regcheck", policy, k % n, move || {
            let mut table = [0u64; 30];
            for (r, v) in table.iter_mut().enumerate() {
                *v = splitmix(((k as u64) << 8) | r as u64);
            }
            let yields = k / n == 2;
            let period = if yields { 499 } else { 0 };
            // The other never-yielding checker on this CPU.
            let partner = if yields { k } else { (k + n) % (2 * n) };
            let me = &st[k];
            let mut dump = [0u64; 30];
            loop {
                let code = reg_chunk(&table, 3000, period, &mut dump);
                let bad: Vec<String> = (0..30)
                    .filter(|&r| dump[r] != table[r])
                    .map(|r| format!("x{}={:#x} (expected {:#x})", r, dump[r], table[r]))
                    .collect();
                if code != 0 || !bad.is_empty() {
                    *me.failure.lock() = Some(format!(
                        "checker {} (svc {}) after {} chunks: {}",
                        k,
                        if period > 0 { "yes" } else { "no" },
                        me.chunks.load(Ordering::SeqCst),
                        bad.join(", ")
                    ));
                    return;
                }
                let done = me.chunks.fetch_add(1, Ordering::SeqCst) + 1;
                if done >= REG_CHUNKS && st[partner].chunks.load(Ordering::SeqCst) >= REG_CHUNKS
                    || stop.load(Ordering::Relaxed)
                {
                    return;
                }
            }
        });
        hs.push(h.map_err(|e| format!("spawn_pinned: {}", e))?);
    }
    // The limit only keeps a kernel that does not preempt from hanging the suite.
    let finished = wait_for(60_000, || hs.iter().all(|h| h.is_finished()));
    stop.store(true, Ordering::Relaxed);
    for h in tickers {
        h.join();
    }
    for h in hs {
        h.join();
    }
    let switched = sched::switches() - switches_before;
    for c in state.iter() {
        if let Some(f) = c.failure.lock().take() {
            return Err(format!("register corrupted: {}", f));
        }
    }
    let done: Vec<u64> = state
        .iter()
        .map(|c| c.chunks.load(Ordering::SeqCst))
        .collect();
    check!(
        finished,
        "after a minute the checkers were at {:?} chunks: a never-yielding checker kept its CPU from its partner (no preemption)",
        done
    );
    check!(
        done.iter().all(|&d| d >= REG_CHUNKS),
        "some checkers ended short of {} chunks: {:?}",
        REG_CHUNKS,
        done
    );
    dynstack::println!(
        "  registers_preserved: {} checkers, {} chunks of 3000 checks, {} context switches",
        checkers,
        done.iter().sum::<u64>(),
        switched
    );
    Ok(())
}

// -------------------------------------------------------------------------------------------
// Park / unpark

/// An unpark that comes before the park is kept as a token: the park returns at once. The
/// token is used up: the next park blocks until the next unpark.
pub(crate) fn park_token_not_lost() -> TestResult {
    let ptr = Arc::new(AtomicPtr::new(core::ptr::null_mut::<Thread>()));
    let go = Arc::new(AtomicBool::new(false));
    let stage = Arc::new(AtomicU32::new(0));
    let (p, g, s) = (ptr.clone(), go.clone(), stage.clone());
    let h = spawn("token", move || {
        p.store(sched::current_ptr(), Ordering::SeqCst);
        while !g.load(Ordering::SeqCst) {
            sched::yield_now();
        }
        sched::park(); // the token is waiting: returns at once
        s.store(1, Ordering::SeqCst);
        sched::park(); // no token: blocks until unparked again
        s.store(2, Ordering::SeqCst);
    })?;
    let tid = h.tid();
    check!(
        wait_for(5_000, || !ptr.load(Ordering::SeqCst).is_null()),
        "the thread never started"
    );
    let t = ptr.load(Ordering::SeqCst);
    let st = state_of(tid);
    check!(
        matches!(st, Some(ThreadState::Ready) | Some(ThreadState::Running)),
        "thread is {:?} before the early unpark",
        st
    );
    // SAFETY: the thread cannot exit before its second park returns, which needs a later
    // unpark from here.
    unsafe { sched::unpark(t) };
    go.store(true, Ordering::SeqCst);
    if !wait_for(5_000, || stage.load(Ordering::SeqCst) >= 1) {
        // Leave it blocked: unparking it now could race with nothing, but the case failed.
        return Err(String::from(
            "the unpark before the park was lost: park did not return within 5 s",
        ));
    }
    let blocked = wait_for(5_000, || state_of(tid) == Some(ThreadState::Blocked));
    let stage_then = stage.load(Ordering::SeqCst);
    // SAFETY: as above: it is blocked (or about to be) in its second park.
    unsafe { sched::unpark(t) };
    let woke = wait_for(5_000, || stage.load(Ordering::SeqCst) == 2);
    check!(woke, "the second unpark did not wake the thread");
    h.join();
    check!(
        blocked && stage_then == 1,
        "the token was not used up: the second park did not block (stage {})",
        stage_then
    );
    Ok(())
}

/// Two threads hand a turn back and forth 3,000 times with park/unpark only, racing each
/// other on different CPUs (when there are several): a single lost wake-up stops both.
pub(crate) fn park_unpark_ping_pong() -> TestResult {
    const ROUNDS: u64 = 3000;
    struct Pp {
        turn: AtomicU32,
        ptr: [AtomicPtr<Thread>; 2],
        rounds: [AtomicU64; 2],
    }
    let pp = Arc::new(Pp {
        turn: AtomicU32::new(0),
        ptr: [
            AtomicPtr::new(core::ptr::null_mut()),
            AtomicPtr::new(core::ptr::null_mut()),
        ],
        rounds: [AtomicU64::new(0), AtomicU64::new(0)],
    });
    let mut hs = Vec::new();
    for me in 0..2usize {
        let pp = pp.clone();
        hs.push(spawn("pingpong", move || {
            pp.ptr[me].store(sched::current_ptr(), Ordering::SeqCst);
            while pp.ptr[1 - me].load(Ordering::SeqCst).is_null() {
                sched::yield_now();
            }
            let other = pp.ptr[1 - me].load(Ordering::SeqCst);
            for r in 0..ROUNDS {
                while pp.turn.load(Ordering::SeqCst) != me as u32 {
                    sched::park();
                }
                pp.rounds[me].fetch_add(1, Ordering::SeqCst);
                pp.turn.store(1 - me as u32, Ordering::SeqCst);
                // The partner is alive until it has done its last round; player 1 does not
                // wake player 0 after its own last round (player 0 is done by then).
                if !(me == 1 && r == ROUNDS - 1) {
                    // SAFETY: see above.
                    unsafe { sched::unpark(other) };
                }
            }
        })?);
    }
    let done = wait_for(30_000, || hs.iter().all(|h| h.is_finished()));
    let r0 = pp.rounds[0].load(Ordering::SeqCst);
    let r1 = pp.rounds[1].load(Ordering::SeqCst);
    if !done {
        // Leave both blocked: waking them now could touch a thread that is gone.
        return Err(format!(
            "a wake-up was lost: stuck after {} + {} of {} rounds each",
            r0, r1, ROUNDS
        ));
    }
    for h in hs {
        h.join();
    }
    check!(
        r0 == ROUNDS && r1 == ROUNDS,
        "rounds {} and {}, expected {} each",
        r0,
        r1,
        ROUNDS
    );
    Ok(())
}
