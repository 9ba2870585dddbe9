//! The Arm generic timer as the kernel uses it: the virtual counter (`CNTVCT_EL0`) as the
//! clock, and the EL1 virtual timer (`CNTV_*_EL0`) as the calling CPU's one-shot deadline.
//!
//! Owns the calling CPU's virtual timer registers and nothing else: the interrupt ID the
//! timer raises (PPI 27 on QEMU `virt`) comes from the device tree and is enabled at the GIC
//! by the caller. Calls only `aarch64-cpu` (register definitions, `isb`).
//!
//! The virtual counter equals the physical counter minus `CNTVOFF_EL2`; boot code entered at
//! EL2 zeroes that offset on every CPU so all CPUs read the same clock.

use aarch64_cpu::{
    asm::barrier,
    registers::{Readable, Writeable, CNTFRQ_EL0, CNTVCT_EL0, CNTV_CTL_EL0, CNTV_CVAL_EL0},
};

/// Nanoseconds in a second.
const NS_PER_SEC: u64 = 1_000_000_000;

/// The counter frequency in Hz, as firmware programmed `CNTFRQ_EL0` (QEMU 7.2: 62.5 MHz,
/// Pi 4: 54 MHz). Zero means nothing set it; conversions then return 0.
pub fn frequency() -> u64 {
    CNTFRQ_EL0.get()
}

/// The current virtual counter value, in ticks.
///
/// The `isb` keeps the read from being taken early, ahead of instructions that come before
/// it in program order, so a measured interval covers exactly the code between two reads.
pub fn now() -> u64 {
    barrier::isb(barrier::SY);
    CNTVCT_EL0.get()
}

/// Converts counter ticks to nanoseconds, rounding down; saturates at `u64::MAX`.
pub fn ticks_to_ns(ticks: u64) -> u64 {
    scale(ticks, NS_PER_SEC, frequency(), Rounding::Down)
}

/// Converts nanoseconds to counter ticks, rounding up so a delay is never shortened;
/// saturates at `u64::MAX`.
pub fn ns_to_ticks(ns: u64) -> u64 {
    scale(ns, frequency(), NS_PER_SEC, Rounding::Up)
}

/// Arms the calling CPU's virtual timer to fire `ticks` from now.
pub fn arm_after(ticks: u64) {
    arm_at(now().saturating_add(ticks));
}

/// Arms the calling CPU's virtual timer to fire when the virtual counter reaches
/// `deadline`; a deadline already past fires at once.
pub fn arm_at(deadline: u64) {
    CNTV_CVAL_EL0.set(deadline);
    CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::SET + CNTV_CTL_EL0::IMASK::CLEAR);
    // The new deadline and enable must be in effect before the caller, for instance,
    // unmasks IRQs or waits with `wfi`.
    barrier::isb(barrier::SY);
}

/// Stops the calling CPU's virtual timer and withdraws its interrupt.
pub fn disable() {
    CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::CLEAR + CNTV_CTL_EL0::IMASK::SET);
    barrier::isb(barrier::SY);
}

/// Whether the calling CPU's virtual timer is enabled and its deadline has passed.
///
/// `ISTATUS` is meaningless while the timer is disabled, so both bits are checked.
pub fn is_pending() -> bool {
    CNTV_CTL_EL0.matches_all(CNTV_CTL_EL0::ENABLE::SET + CNTV_CTL_EL0::ISTATUS::SET)
}

/// Which way [`scale`] rounds.
#[derive(Clone, Copy)]
enum Rounding {
    Down,
    Up,
}

/// Computes `value × mul ÷ div` without overflow for any `value`, saturating at
/// `u64::MAX`; 0 if `div` is 0.
///
/// Whole multiples of `div` are scaled first, so only the remainder is multiplied; that
/// product fits in a `u64` for every real counter frequency (both operands stay below
/// about 2^32), and the 128-bit path is only a fallback.
fn scale(value: u64, mul: u64, div: u64, rounding: Rounding) -> u64 {
    if div == 0 {
        return 0;
    }
    let whole = (value / div).saturating_mul(mul);
    let rem = value % div;
    // `rem × mul < div × mul`, so `part <= mul` and always fits in a u64.
    let part = match rem.checked_mul(mul) {
        Some(rest) => match rounding {
            Rounding::Down => rest / div,
            Rounding::Up => rest.div_ceil(div),
        },
        None => {
            let rest = u128::from(rem) * u128::from(mul);
            let div = u128::from(div);
            (match rounding {
                Rounding::Down => rest / div,
                Rounding::Up => rest.div_ceil(div),
            }) as u64
        }
    };
    whole.saturating_add(part)
}
