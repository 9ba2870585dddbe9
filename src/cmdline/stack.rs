//! The stack settings: [`StackPolicy`] (`kstack.policy=`), [`StackStrategy`]
//! (`kstack.strategy=`) and [`StackConfig`] (those and the sizes `kstack.initial=`,
//! `kstack.max=`, `kstack.guard=`, `kstack.lookahead=`).
use super::*;

/// How a new thread's stack is backed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StackPolicy {
    /// Map `initial` bytes at creation and grow on demand up to `max`.
    #[default]
    Dynamic,
    /// Map the whole `max` reservation at creation (the baseline).
    Fixed,
}

impl StackPolicy {
    /// The name used on the command line and in the shell.
    pub fn as_str(self) -> &'static str {
        match self {
            StackPolicy::Dynamic => "dynamic",
            StackPolicy::Fixed => "fixed",
        }
    }
}

impl fmt::Display for StackPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is neither `dynamic` nor `fixed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The word given.
    pub text: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown policy \"{}\" (expected dynamic or fixed)",
            self.text
        )
    }
}

impl core::error::Error for PolicyError {}

impl FromStr for StackPolicy {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dynamic" => Ok(StackPolicy::Dynamic),
            "fixed" => Ok(StackPolicy::Fixed),
            _ => Err(PolicyError {
                text: s.to_string(),
            }),
        }
    }
}

/// How a dynamic stack grows (`kstack.strategy`): the article's three options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StackStrategy {
    /// On a fault below the mapped part (the data-abort handler grows it).
    #[default]
    Fault,
    /// Only through explicit `ensure`/`with_stack`/`expand_stack` calls (`expand_stack()`);
    /// a fault below the mapped part ends the thread.
    Expand,
    /// At every function entry, by the `check` build's hook, `kstack.lookahead` ahead of SP;
    /// a fault below the mapped part ends the thread.
    Check,
}

impl StackStrategy {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            StackStrategy::Fault => "fault",
            StackStrategy::Expand => "expand",
            StackStrategy::Check => "check",
        }
    }
}

impl fmt::Display for StackStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StackStrategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fault" => Ok(StackStrategy::Fault),
            "expand" => Ok(StackStrategy::Expand),
            "check" => Ok(StackStrategy::Check),
            _ => Err(s.to_string()),
        }
    }
}

/// Thread stack settings. Whatever [`parse`] returns satisfies: every size a multiple of
/// [`PAGE_SIZE`], [`MIN_STACK`] ≤ `initial` ≤ `max` ≤ [`MAX_STACK`], and
/// [`MIN_GUARD`] ≤ `guard` ≤ [`MAX_GUARD`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackConfig {
    /// Policy for new threads (`kstack.policy`).
    pub policy: StackPolicy,
    /// Bytes mapped at creation under the dynamic policy (`kstack.initial`).
    pub initial: usize,
    /// Bytes reserved, all of which may be mapped (`kstack.max`).
    pub max: usize,
    /// Unmapped bytes below each reservation (`kstack.guard`).
    pub guard: usize,
    /// Park the stacks of workload threads asleep at least this many milliseconds
    /// (`kstack.park_after=MS`); `None` (`off`) disables parking.
    pub park_after_ms: Option<u32>,
    /// How dynamic stacks grow (`kstack.strategy`).
    pub strategy: StackStrategy,
    /// Bytes the `check` strategy keeps mapped below SP (`kstack.lookahead`), between
    /// [`MIN_LOOKAHEAD`] and [`MAX_LOOKAHEAD`], a multiple of 16.
    pub lookahead: usize,
}

/// Default `kstack.park_after`: ten seconds. A thread asleep that long is one that waits for a
/// long time (an idle connection, a worker without work), and parking it saves a page for the
/// rest of its sleep; sleeps of milliseconds to seconds (a busy thread's timeouts, `churn`)
/// never pay the copy out and back. There is no hurry while memory is plentiful: when it runs
/// low, spawn and the reaper park sleeping stacks at once, whatever their age.
pub const DEFAULT_PARK_AFTER_MS: u32 = 10_000;
/// Largest `kstack.park_after`: one day.
pub const MAX_PARK_AFTER_MS: u64 = 86_400_000;

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            policy: StackPolicy::Dynamic,
            initial: 4 << 10,
            max: 16 << 10,
            guard: 4 << 10,
            park_after_ms: Some(DEFAULT_PARK_AFTER_MS),
            strategy: StackStrategy::Fault,
            lookahead: DEFAULT_LOOKAHEAD,
        }
    }
}

impl fmt::Display for StackConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "policy={} initial={} max={} guard={}",
            self.policy,
            size_text(self.initial),
            size_text(self.max),
            size_text(self.guard)
        )
    }
}
