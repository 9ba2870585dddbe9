//! Where threads go: the CPU a new thread is queued on, the order in which an idle CPU
//! looks for a thread to steal, and the CPU a busy one pulls from to even the load.
//!
//! Plain functions over queue lengths and the online set, so that the host tests run them;
//! the kernel's run queues (`queue`, `spawn`) call them with what they read from their
//! per-CPU counters, then lock and take. Calls nothing.

/// The CPUs an idle `cpu` (of `cpus`) tries to steal from, in order: the ones after it,
/// wrapping round, itself never. Each CPU starts at its right-hand neighbour, so idle CPUs
/// do not all fall on the same victim.
#[inline]
pub fn steal_order(cpu: usize, cpus: usize) -> impl Iterator<Item = usize> {
    (1..cpus).map(move |i| (cpu + i) % cpus)
}

/// The CPU a CPU with `own_len` threads queued pulls a thread from when balancing: the one
/// with the longest queue (`lens[i]` is CPU i's; on a tie the highest-numbered), itself
/// excepted, and only if that queue is longer than `own_len + 1`, so that balancing never
/// just moves the imbalance from one CPU to the other.
#[inline]
pub fn busiest(lens: impl IntoIterator<Item = usize>, cpu: usize, own_len: usize) -> Option<usize> {
    let (victim, len) = lens
        .into_iter()
        .enumerate()
        .filter(|&(i, _)| i != cpu)
        .max_by_key(|&(_, l)| l)?;
    (len >= own_len + 2).then_some(victim)
}

/// The `k`-th online CPU (counted from 0), where `online[i]` says whether CPU i is; `None`
/// if fewer than `k + 1` are. Spawn goes round the online CPUs in turn with `k` taken
/// modulo the online count.
#[inline]
pub fn nth_online(online: impl IntoIterator<Item = bool>, k: usize) -> Option<usize> {
    online
        .into_iter()
        .enumerate()
        .filter(|&(_, o)| o)
        .nth(k)
        .map(|(i, _)| i)
}
