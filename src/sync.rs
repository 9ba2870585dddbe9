//! Locks for kernel data shared between threads, CPUs and interrupt handlers.
//!
//! [`IrqMutex`] masks IRQs on the local CPU while held, so an interrupt handler (the
//! scheduler tick) can never spin on a lock its own CPU holds. It also counts the locks each
//! CPU holds: a thread that faults fatally while holding a lock cannot be terminated safely,
//! and the fault path asks [`locks_held`] to decide between terminating it and a panic.
//! [`Once`] counts as a lock while its initializer runs, for the same reason (a thread that
//! overflowed in there would leave every later caller spinning). The kernel uses no other
//! spin lock (`clippy.toml` forbids `spin::Mutex` and `spin::Once` elsewhere), so every lock
//! a faulting thread can hold is counted. The stack-growth fault path takes none of these
//! locks. Calls `arch` for IRQ masking.
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering};

use crate::arch::irq;

const MAX_CPUS: usize = crate::percpu::MAX_CPUS;

/// Locks held per CPU (only that CPU writes its counter, with IRQs masked).
static LOCKS_HELD: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// How many [`IrqMutex`]es the current CPU holds.
pub fn locks_held() -> u32 {
    LOCKS_HELD[crate::percpu::cpu_index()].load(Ordering::Relaxed)
}

/// A spin lock that masks IRQs on the local CPU while it is held.
#[allow(clippy::disallowed_types)] // the one place spin::Mutex is wrapped and counted
pub struct IrqMutex<T> {
    inner: spin::Mutex<T>,
}

/// Proof of holding an [`IrqMutex`]; unlocks and restores the IRQ mask on drop.
#[allow(clippy::disallowed_types)]
pub struct IrqMutexGuard<'a, T> {
    guard: core::mem::ManuallyDrop<spin::MutexGuard<'a, T>>,
    daif: u64,
    cpu: usize,
}

impl<T> IrqMutex<T> {
    /// A new unlocked mutex.
    #[allow(clippy::disallowed_types)]
    pub const fn new(value: T) -> Self {
        Self {
            inner: spin::Mutex::new(value),
        }
    }

    /// Masks IRQs, then spins until the lock is free.
    pub fn lock(&self) -> IrqMutexGuard<'_, T> {
        let daif = irq::save_and_disable();
        let guard = self.inner.lock();
        let cpu = crate::percpu::cpu_index();
        LOCKS_HELD[cpu].fetch_add(1, Ordering::Relaxed);
        IrqMutexGuard {
            guard: core::mem::ManuallyDrop::new(guard),
            daif,
            cpu,
        }
    }

    /// Takes the lock if it is free, without spinning.
    pub fn try_lock(&self) -> Option<IrqMutexGuard<'_, T>> {
        let daif = irq::save_and_disable();
        match self.inner.try_lock() {
            Some(guard) => {
                let cpu = crate::percpu::cpu_index();
                LOCKS_HELD[cpu].fetch_add(1, Ordering::Relaxed);
                Some(IrqMutexGuard {
                    guard: core::mem::ManuallyDrop::new(guard),
                    daif,
                    cpu,
                })
            }
            None => {
                irq::restore(daif);
                None
            }
        }
    }

    /// Whether somebody holds the lock now (for reports only: it may change at once).
    pub fn is_locked(&self) -> bool {
        self.inner.is_locked()
    }
}

impl<T> Deref for IrqMutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for IrqMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T> Drop for IrqMutexGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the guard is dropped exactly once, here, before IRQs are restored.
        unsafe { core::mem::ManuallyDrop::drop(&mut self.guard) };
        LOCKS_HELD[self.cpu].fetch_sub(1, Ordering::Relaxed);
        irq::restore(self.daif);
    }
}

/// A value initialized once, by the first caller of [`call_once`](Self::call_once); later
/// callers wait for it. While the initializer runs, IRQs are masked and it counts as a lock
/// held (see [`locks_held`]): a thread that faults fatally in there cannot be ended safely.
#[allow(clippy::disallowed_types)] // the one place spin::Once is wrapped and counted
pub struct Once<T> {
    inner: spin::Once<T>,
}

impl<T> Once<T> {
    /// A new, uninitialized value.
    #[allow(clippy::disallowed_types)]
    pub const fn new() -> Self {
        Self {
            inner: spin::Once::new(),
        }
    }

    /// The value, initialized by `f` if nobody has done it yet.
    pub fn call_once(&self, f: impl FnOnce() -> T) -> &T {
        if let Some(v) = self.inner.get() {
            return v;
        }
        let daif = irq::save_and_disable();
        let cpu = crate::percpu::cpu_index();
        LOCKS_HELD[cpu].fetch_add(1, Ordering::Relaxed);
        let v = self.inner.call_once(f);
        LOCKS_HELD[cpu].fetch_sub(1, Ordering::Relaxed);
        irq::restore(daif);
        v
    }

    /// The value, if it has been initialized.
    pub fn get(&self) -> Option<&T> {
        self.inner.get()
    }
}

impl<T> Default for Once<T> {
    fn default() -> Self {
        Self::new()
    }
}
