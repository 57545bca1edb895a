//! The errors of the retry layer: the one a caller sees when retries are
//! spent, and the one a builder returns for a configuration that makes no
//! sense.

use std::error::Error as StdError;
use std::fmt;

use sturdy_core::{BoxError, FailureKind, classify_error};

/// The last attempt's error, once the retry layer has given up, with the
/// number of attempts made. The original error is [`source()`](StdError::source).
pub struct RetryError {
    attempts: u32,
    source: BoxError,
}

impl RetryError {
    pub(crate) fn new(attempts: u32, source: BoxError) -> RetryError {
        RetryError { attempts, source }
    }

    /// Attempts made, the first one included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Why the last attempt failed (from the error's source chain).
    pub fn failure(&self) -> FailureKind {
        classify_error(&*self.source)
    }

    /// The last attempt's error.
    pub fn into_source(self) -> BoxError {
        self.source
    }
}

impl fmt::Debug for RetryError {
    // Only the attempt count and the failure label: an error from below may
    // carry anything in its own Debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryError")
            .field("attempts", &self.attempts)
            .field("failure", &self.failure().label())
            .finish()
    }
}

impl fmt::Display for RetryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.attempts == 1 { "" } else { "s" };
        write!(
            f,
            "request failed after {} attempt{s} ({})",
            self.attempts,
            self.failure().label()
        )
    }
}

impl StdError for RetryError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// A retry configuration that cannot work, found when the policy is built.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RetryConfigError {
    /// A backoff base of zero.
    ZeroBase,
    /// A delay cap below the backoff base.
    CapBelowBase,
    /// A jitter larger than the cap on one delay, which would swallow it.
    JitterAboveCap,
    /// A cap of zero on server hints.
    ZeroHintCap,
    /// More retries than [`MAX_RETRIES_LIMIT`](crate::MAX_RETRIES_LIMIT).
    TooManyRetries(u32),
    /// A multiplier or jitter that is not a finite number in range.
    InvalidFactor(&'static str),
    /// A budget window outside 1..=60 s.
    BudgetWindow,
    /// A budget retry ratio outside 0..=10 (or not a number).
    BudgetRatio,
    /// A budget floor of retries per second too large.
    BudgetFloor,
    /// A budget burst of zero, or too large.
    BudgetBurst,
    /// A drain time bound of zero with a non-zero drain cap.
    ZeroDrainTime,
    /// A header name that is not a valid HTTP header name.
    InvalidHeaderName,
    /// A replay cap of zero: no request body could ever be sent again.
    ZeroReplayCap,
}

impl fmt::Display for RetryConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryConfigError::ZeroBase => f.write_str("backoff base must be greater than zero"),
            RetryConfigError::CapBelowBase => {
                f.write_str("the cap on one delay must be at least the backoff base")
            }
            RetryConfigError::JitterAboveCap => {
                f.write_str("the backoff jitter must be at most the cap on one delay")
            }
            RetryConfigError::ZeroHintCap => {
                f.write_str("the cap on server hints must be greater than zero")
            }
            RetryConfigError::TooManyRetries(n) => write!(
                f,
                "max_retries {n} is above the limit of {}",
                crate::MAX_RETRIES_LIMIT
            ),
            RetryConfigError::InvalidFactor(what) => {
                write!(f, "{what} must be a finite number in its range")
            }
            RetryConfigError::BudgetWindow => {
                f.write_str("the budget window must be between 1 s and 60 s")
            }
            RetryConfigError::BudgetRatio => {
                f.write_str("the budget's retry ratio must be between 0 and 10")
            }
            RetryConfigError::BudgetFloor => {
                f.write_str("the budget floor of retries per second is too large")
            }
            RetryConfigError::BudgetBurst => {
                f.write_str("the budget burst must be between 1 and 1 000 000")
            }
            RetryConfigError::ZeroDrainTime => {
                f.write_str("the drain time bound must be greater than zero")
            }
            RetryConfigError::InvalidHeaderName => f.write_str("invalid header name"),
            RetryConfigError::ZeroReplayCap => f.write_str(
                "the replay cap must be at least one byte (to retry nothing, set max_retries to 0)",
            ),
        }
    }
}

impl StdError for RetryConfigError {}
