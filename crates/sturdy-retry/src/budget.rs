//! The retry budget: one per layer, shared by every clone of its services,
//! so that a server that is down sees at most a bounded share of extra
//! attempts. Each logical call deposits once; each retry (`NotSent` ones
//! included) withdraws once. The accounting is tower's `TpsBudget`; its
//! constructor asserts on bad numbers, so they are checked here first.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::{Budget as _, TpsBudget};

use crate::RetryConfigError;

/// The numbers of a retry budget: over a sliding `window`, retries may
/// number `retry_ratio` times the calls made, plus `min_per_sec` per second.
///
/// The default is tower's: 20 % of calls plus 10 retries per second over
/// 10 seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    /// How long a deposit or withdrawal counts (1..=60 s).
    pub window: Duration,
    /// Retries allowed per second whatever the traffic.
    pub min_per_sec: u32,
    /// Retries allowed per call, as a fraction (0.2: one retry per five
    /// calls; from 0 to 10).
    pub retry_ratio: f32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            window: Duration::from_secs(10),
            min_per_sec: 10,
            retry_ratio: 0.2,
        }
    }
}

impl BudgetConfig {
    pub(crate) fn validate(&self) -> Result<(), RetryConfigError> {
        if self.window < Duration::from_secs(1) || self.window > Duration::from_secs(60) {
            return Err(RetryConfigError::BudgetWindow);
        }
        if !self.retry_ratio.is_finite() || !(0.0..=10.0).contains(&self.retry_ratio) {
            return Err(RetryConfigError::BudgetRatio);
        }
        // TpsBudget multiplies this by the window's seconds and the
        // withdrawal amount; keep it far from any overflow.
        if self.min_per_sec > 1_000_000 {
            return Err(RetryConfigError::BudgetFloor);
        }
        Ok(())
    }
}

/// A live budget, shared by every clone (an `Arc`).
#[derive(Clone)]
pub(crate) struct SharedBudget(Arc<TpsBudget>);

impl SharedBudget {
    /// `config` must have been validated.
    pub(crate) fn new(config: &BudgetConfig) -> SharedBudget {
        SharedBudget(Arc::new(TpsBudget::new(
            config.window,
            config.min_per_sec,
            config.retry_ratio,
        )))
    }

    pub(crate) fn deposit(&self) {
        self.0.deposit();
    }

    pub(crate) fn withdraw(&self) -> bool {
        self.0.withdraw()
    }
}

impl fmt::Debug for SharedBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
