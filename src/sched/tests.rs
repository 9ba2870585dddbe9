//! Host tests of the scheduler's plain logic: the run queue, the sleep queue, the park list
//! and the balancing choices, on test nodes of their own, each against the order a simple
//! model (a `VecDeque`, a sorted `Vec`) says it must keep.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::vec::Vec;

use super::balance::{busiest, nth_online, steal_order};
use super::parklist::{ParkLinks, ParkList, ParkNode};
use super::runq::{RunNode, RunQueue};
use super::sleep::{SleepNode, SleepQueue};
use crate::rng::XorShift;

/// A control block for the tests: an id, and the fields each list needs.
struct Node {
    id: u64,
    next: AtomicPtr<Node>,
    pinned: AtomicBool,
    wake_at: AtomicU64,
    index: AtomicU32,
    park: ParkLinks<Node>,
}

impl RunNode for Node {
    fn run_link(&self) -> &AtomicPtr<Self> {
        &self.next
    }
    fn is_pinned(&self) -> bool {
        self.pinned.load(Ordering::Relaxed)
    }
}

impl SleepNode for Node {
    fn sleep_key(&self) -> (u64, u64) {
        (self.wake_at.load(Ordering::Relaxed), self.id)
    }
    fn sleep_index(&self) -> &AtomicU32 {
        &self.index
    }
}

impl ParkNode for Node {
    fn park_links(&self) -> &ParkLinks<Self> {
        &self.park
    }
}

/// Nodes that live as long as the test: ids 0..n, none pinned, deadline 0.
struct Nodes(Vec<Node>);

impl Nodes {
    fn new(n: usize) -> Self {
        Nodes(
            (0..n as u64)
                .map(|id| Node {
                    id,
                    next: AtomicPtr::new(core::ptr::null_mut()),
                    pinned: AtomicBool::new(false),
                    wake_at: AtomicU64::new(0),
                    index: AtomicU32::new(0),
                    park: ParkLinks::new(),
                })
                .collect(),
        )
    }

    fn ptr(&self, id: usize) -> *mut Node {
        &self.0[id] as *const Node as *mut Node
    }

    fn pin(&self, id: usize) {
        self.0[id].pinned.store(true, Ordering::Relaxed);
    }

    fn wake_at(&self, id: usize, deadline: u64) {
        self.0[id].wake_at.store(deadline, Ordering::Relaxed);
    }
}

fn id(t: *mut Node) -> u64 {
    // SAFETY: every pointer the lists hand back is one of a live `Nodes`.
    unsafe { (*t).id }
}

/// Queues node `i` at the back; the caller's test knows it is in no run queue.
fn back(q: &mut RunQueue<Node>, nodes: &Nodes, i: usize) {
    // SAFETY: the nodes live as long as the test; the test pushes only nodes in no queue.
    unsafe { q.push_back(nodes.ptr(i)) };
}

/// Queues node `i` at the front, as [`back`].
fn front(q: &mut RunQueue<Node>, nodes: &Nodes, i: usize) {
    // SAFETY: as in `back`.
    unsafe { q.push_front(nodes.ptr(i)) };
}

/// Pops everything: the ids in queue order.
fn drain(q: &mut RunQueue<Node>) -> Vec<u64> {
    let mut out = Vec::new();
    while let Some(t) = q.pop_front() {
        out.push(id(t));
    }
    out
}

// ---------------------------------------------------------------------------------------
// The run queue

#[test]
fn run_queue_is_first_in_first_out() {
    let nodes = Nodes::new(5);
    let mut q = RunQueue::new();
    assert!(q.is_empty());
    assert_eq!(q.pop_front().map(id), None);
    for i in 0..5 {
        back(&mut q, &nodes, i);
        assert_eq!(q.len(), i + 1);
    }
    assert_eq!(drain(&mut q), [0, 1, 2, 3, 4]);
    assert!(q.is_empty());
    assert_eq!(q.len(), 0);
}

#[test]
fn push_front_runs_next_and_an_emptied_queue_starts_over() {
    let nodes = Nodes::new(4);
    let mut q = RunQueue::new();
    back(&mut q, &nodes, 0);
    assert_eq!(q.pop_front().map(id), Some(0));
    // Emptied: the next push must be both head and tail.
    back(&mut q, &nodes, 1);
    back(&mut q, &nodes, 2);
    front(&mut q, &nodes, 3);
    assert_eq!(q.len(), 3);
    assert_eq!(drain(&mut q), [3, 1, 2]);
    // push_front into an empty queue sets the tail too: a push_back lands behind it.
    front(&mut q, &nodes, 0);
    back(&mut q, &nodes, 1);
    assert_eq!(drain(&mut q), [0, 1]);
}

#[test]
fn stealing_passes_over_pinned_threads_and_keeps_the_order() {
    let nodes = Nodes::new(6);
    nodes.pin(0);
    nodes.pin(1);
    nodes.pin(4);
    let mut q = RunQueue::new();
    for i in 0..5 {
        back(&mut q, &nodes, i);
    }
    // Pinned 0 and 1 at the head must not hide 2 and 3 behind them.
    assert_eq!(q.take_unpinned().map(id), Some(2));
    assert_eq!(q.take_unpinned().map(id), Some(3));
    assert_eq!(q.len(), 3);
    // Only pinned ones are left: nothing to steal, and nothing changes.
    assert_eq!(q.take_unpinned().map(id), None);
    assert_eq!(q.len(), 3);
    // The tail stayed right: a push lands after the pinned 4.
    back(&mut q, &nodes, 5);
    assert_eq!(q.take_unpinned().map(id), Some(5));
    // Taking the tail moved it back to 4: the next push lands after 4 again.
    back(&mut q, &nodes, 2);
    assert_eq!(drain(&mut q), [0, 1, 4, 2]);
}

#[test]
fn stealing_from_an_unpinned_head_takes_the_head() {
    let nodes = Nodes::new(2);
    let mut q = RunQueue::new();
    // SAFETY: live nodes, each in no queue.
    unsafe {
        q.push_back(nodes.ptr(0));
        q.push_back(nodes.ptr(1));
    }
    assert_eq!(q.take_unpinned().map(id), Some(0));
    assert_eq!(q.take_unpinned().map(id), Some(1));
    assert!(q.is_empty());
    assert_eq!(q.take_unpinned().map(id), None);
}

/// Random pushes, pops and steals against a `VecDeque`: the queue must agree with it on
/// every answer and on its length.
#[test]
fn run_queue_agrees_with_a_model() {
    const N: usize = 64;
    let nodes = Nodes::new(N);
    let mut rng = XorShift::new(13);
    for i in 0..N {
        if rng.below(3) == 0 {
            nodes.pin(i);
        }
    }
    let mut q = RunQueue::new();
    let mut model: VecDeque<usize> = VecDeque::new();
    for _ in 0..20_000 {
        let outside: Vec<usize> = (0..N).filter(|i| !model.contains(i)).collect();
        match rng.below(4) {
            0 | 1 if !outside.is_empty() => {
                let i = outside[rng.below(outside.len())];
                if rng.below(2) == 0 {
                    back(&mut q, &nodes, i);
                    model.push_back(i);
                } else {
                    front(&mut q, &nodes, i);
                    model.push_front(i);
                }
            }
            2 => assert_eq!(q.pop_front().map(id), model.pop_front().map(|i| i as u64)),
            _ => {
                let pos = model
                    .iter()
                    .position(|&i| !nodes.0[i].pinned.load(Ordering::Relaxed));
                let want = pos.map(|p| model.remove(p).unwrap() as u64);
                assert_eq!(q.take_unpinned().map(id), want);
            }
        }
        assert_eq!(q.len(), model.len());
        assert_eq!(q.is_empty(), model.is_empty());
    }
    let rest: Vec<u64> = model.iter().map(|&i| i as u64).collect();
    assert_eq!(drain(&mut q), rest);
}

// ---------------------------------------------------------------------------------------
// The sleep queue

fn sleepers(nodes: &Nodes, deadlines: &[u64]) -> SleepQueue<Node> {
    let mut q = SleepQueue::new();
    for (i, &d) in deadlines.iter().enumerate() {
        nodes.wake_at(i, d);
        assert!(q.make_room());
        // SAFETY: a live node in no sleep queue; its deadline is fixed from here on.
        assert!(unsafe { q.push(nodes.ptr(i)) });
    }
    q
}

/// Pops every sleeper due at `now`: the ids in wake order.
fn due(q: &mut SleepQueue<Node>, now: u64) -> Vec<u64> {
    let mut out = Vec::new();
    while let Some(t) = q.pop_due(now) {
        out.push(id(t));
    }
    out
}

#[test]
fn sleepers_wake_in_deadline_order_and_not_before_it() {
    let nodes = Nodes::new(6);
    let mut q = sleepers(&nodes, &[50, 10, 30, 20, 40, 60]);
    assert_eq!(q.first_deadline(), Some(10));
    assert_eq!(due(&mut q, 9), [] as [u64; 0]);
    // A deadline equal to now is due.
    assert_eq!(due(&mut q, 20), [1, 3]);
    assert_eq!(q.first_deadline(), Some(30));
    assert_eq!(due(&mut q, 45), [2, 4]);
    assert_eq!(due(&mut q, u64::MAX), [0, 5]);
    assert_eq!(q.first_deadline(), None);
    assert!(q.is_empty());
}

#[test]
fn equal_deadlines_wake_in_tie_breaker_order() {
    let nodes = Nodes::new(5);
    let mut q = sleepers(&nodes, &[7, 7, 3, 7, 7]);
    assert_eq!(due(&mut q, 7), [2, 0, 1, 3, 4]);
}

#[test]
fn a_sleeper_taken_out_early_never_wakes_and_the_rest_keep_their_order() {
    let nodes = Nodes::new(8);
    let mut q = sleepers(&nodes, &[80, 10, 70, 20, 60, 30, 50, 40]);
    // SAFETY: live nodes (every remove here).
    unsafe {
        q.remove(nodes.ptr(3)); // deadline 20, inside the heap
        q.remove(nodes.ptr(1)); // 10, the root
        q.remove(nodes.ptr(0)); // 80
    }
    assert_eq!(q.len(), 5);
    // Taking one out twice (it is gone now: its stale index names another) changes nothing.
    // SAFETY: a live node.
    unsafe { q.remove(nodes.ptr(3)) };
    assert_eq!(q.len(), 5);
    assert_eq!(q.first_deadline(), Some(30));
    assert_eq!(due(&mut q, u64::MAX), [5, 7, 6, 4, 2]);
}

#[test]
fn no_sleeper_joins_without_room_made_first() {
    let nodes = Nodes::new(2);
    let mut q = SleepQueue::new();
    assert!(!q.has_room());
    // SAFETY: a live node in no sleep queue.
    assert!(!unsafe { q.push(nodes.ptr(0)) });
    assert!(q.is_empty());
    assert!(q.make_room());
    assert!(q.has_room());
    // SAFETY: as above.
    assert!(unsafe { q.push(nodes.ptr(0)) });
    assert_eq!(q.len(), 1);
    assert_eq!(due(&mut q, 0), [0]);
}

/// Random sleeps, wakes and early removals against a sorted list of (deadline, id).
#[test]
fn sleep_queue_agrees_with_a_model() {
    const N: usize = 100;
    let nodes = Nodes::new(N);
    let mut rng = XorShift::new(7);
    let mut q = SleepQueue::new();
    let mut model: Vec<(u64, u64)> = Vec::new();
    let mut now = 0u64;
    for _ in 0..20_000 {
        let asleep = |m: &Vec<(u64, u64)>, i: usize| m.iter().any(|&(_, t)| t == i as u64);
        match rng.below(3) {
            0 => {
                let i = rng.below(N);
                if !asleep(&model, i) {
                    let d = now + rng.range(0, 50);
                    nodes.wake_at(i, d);
                    assert!(q.make_room());
                    // SAFETY: a live node in no sleep queue (not in the model).
                    assert!(unsafe { q.push(nodes.ptr(i)) });
                    model.push((d, i as u64));
                    model.sort();
                }
            }
            1 => {
                let i = rng.below(N);
                // SAFETY: a live node, asleep here or not.
                unsafe { q.remove(nodes.ptr(i)) };
                model.retain(|&(_, t)| t != i as u64);
            }
            _ => {
                now += rng.range(0, 20);
                let cut = model.partition_point(|&(d, _)| d <= now);
                let want: Vec<u64> = model.drain(..cut).map(|(_, t)| t).collect();
                assert_eq!(due(&mut q, now), want);
            }
        }
        assert_eq!(q.len(), model.len());
        assert_eq!(q.first_deadline(), model.first().map(|&(d, _)| d));
    }
}

// ---------------------------------------------------------------------------------------
// The park list

/// Takes the heads one by one: the ids oldest first.
fn park_order(l: &mut ParkList<Node>) -> Vec<u64> {
    let mut out = Vec::new();
    while let Some(t) = l.head() {
        out.push(id(t));
        // SAFETY: the head is a live node of this list.
        unsafe { l.remove(t) };
        // SAFETY: as above; it is in no list now.
        assert!(!unsafe { &*t }.park_links().is_listed());
    }
    out
}

#[test]
fn the_park_list_keeps_the_oldest_sleeper_at_the_head() {
    let nodes = Nodes::new(5);
    let mut l = ParkList::new();
    assert!(l.head().is_none());
    // SAFETY: live nodes, each pushed while in no list (every push and remove here).
    unsafe {
        for i in 0..5 {
            l.push_back(nodes.ptr(i));
        }
        // Woken from the middle, the head and the tail.
        l.remove(nodes.ptr(2));
        l.remove(nodes.ptr(0));
        l.remove(nodes.ptr(4));
        // Not listed any more: nothing happens.
        l.remove(nodes.ptr(4));
        // Asleep again: the newest.
        l.push_back(nodes.ptr(0));
    }
    assert_eq!(l.head().map(id), Some(1));
    assert_eq!(park_order(&mut l), [1, 3, 0]);
    assert!(l.is_empty());
}

/// Random sleeps and wakes against a `Vec` in the order they went to sleep.
#[test]
fn park_list_agrees_with_a_model() {
    const N: usize = 40;
    let nodes = Nodes::new(N);
    let mut rng = XorShift::new(99);
    let mut l = ParkList::new();
    let mut model: Vec<usize> = Vec::new();
    for _ in 0..20_000 {
        let i = rng.below(N);
        if let Some(p) = model.iter().position(|&m| m == i) {
            // SAFETY: a live node of this list.
            unsafe { l.remove(nodes.ptr(i)) };
            model.remove(p);
        } else {
            // SAFETY: a live node in no list.
            unsafe { l.push_back(nodes.ptr(i)) };
            model.push(i);
        }
        assert_eq!(l.head().map(id), model.first().map(|&i| i as u64));
        assert_eq!(nodes.0[i].park.is_listed(), model.contains(&i));
    }
    let want: Vec<u64> = model.iter().map(|&i| i as u64).collect();
    assert_eq!(park_order(&mut l), want);
}

// ---------------------------------------------------------------------------------------
// Balancing

#[test]
fn an_idle_cpu_looks_at_every_other_cpu_once_starting_at_its_neighbour() {
    assert_eq!(steal_order(1, 4).collect::<Vec<_>>(), [2, 3, 0]);
    assert_eq!(steal_order(3, 4).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(steal_order(0, 1).count(), 0);
    for cpus in 1..=8 {
        for cpu in 0..cpus {
            let mut seen: Vec<usize> = steal_order(cpu, cpus).collect();
            assert!(!seen.contains(&cpu));
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), cpus - 1);
        }
    }
}

#[test]
fn balancing_pulls_from_the_longest_other_queue() {
    assert_eq!(busiest([3, 0, 5, 1], 1, 0), Some(2));
    // The longest is this CPU's own: pull from the longest of the others, if long enough.
    assert_eq!(busiest([9, 0, 2], 0, 9), None);
    assert_eq!(busiest([9, 0, 2], 1, 0), Some(0));
    assert_eq!(busiest([9, 3, 2], 0, 1), Some(1));
    // A tie goes to the highest-numbered CPU.
    assert_eq!(busiest([4, 0, 4], 1, 0), Some(2));
    // Nothing else there.
    assert_eq!(busiest([5], 0, 0), None);
}

#[test]
fn balancing_only_moves_a_thread_that_evens_the_load() {
    // One more than ours: moving it would only swap the imbalance.
    assert_eq!(busiest([3, 4], 0, 3), None);
    // Two more: after the move both hold the same or differ by one.
    assert_eq!(busiest([3, 5], 0, 3), Some(1));
    assert_eq!(busiest([0, 1], 0, 0), None);
    assert_eq!(busiest([0, 2], 0, 0), Some(1));
}

#[test]
fn new_threads_go_round_the_online_cpus_only() {
    let online = [true, false, true, true, false];
    assert_eq!(nth_online(online, 0), Some(0));
    assert_eq!(nth_online(online, 1), Some(2));
    assert_eq!(nth_online(online, 2), Some(3));
    assert_eq!(nth_online(online, 3), None);
    assert_eq!(nth_online([false; 4], 0), None);
    // k taken modulo the online count, as spawn does, visits each online CPU equally.
    let count = online.iter().filter(|&&o| o).count();
    let mut per_cpu = [0usize; 5];
    for k in 0..30 {
        per_cpu[nth_online(online, k % count).unwrap()] += 1;
    }
    assert_eq!(per_cpu, [10, 0, 10, 10, 0]);
}
