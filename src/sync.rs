//! Locks for kernel data shared between threads, CPUs and interrupt handlers.
//!
//! [`IrqMutex`] masks IRQs on the local CPU while held, so an interrupt handler (the
//! scheduler tick) can never spin on a lock its own CPU holds. It also counts the locks each
//! CPU holds: a thread that faults fatally while holding a lock cannot be terminated safely,
//! and the fault path asks [`locks_held`] to decide between terminating it and a panic.
//! The stack-growth fault path takes none of these locks. Calls `arch` for IRQ masking.
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
pub struct IrqMutex<T> {
    inner: spin::Mutex<T>,
}

/// Proof of holding an [`IrqMutex`]; unlocks and restores the IRQ mask on drop.
pub struct IrqMutexGuard<'a, T> {
    guard: core::mem::ManuallyDrop<spin::MutexGuard<'a, T>>,
    daif: u64,
    cpu: usize,
}

impl<T> IrqMutex<T> {
    /// A new unlocked mutex.
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
