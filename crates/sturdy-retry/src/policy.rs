//! The retry policy: what is retried, how often, how long to wait, and the
//! limits on bodies. Built once, validated, then shared by every service
//! the layer makes.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, StatusCode};
use sturdy_core::Verdict;

use crate::{Backoff, BudgetConfig, RetryConfigError};

/// The most retries a policy may allow.
pub const MAX_RETRIES_LIMIT: u32 = 100;

/// What an attempt came back with, as shown to a [`Classify`].
#[derive(Clone, Copy)]
pub enum Outcome<'a> {
    /// A response head.
    Response(StatusCode, &'a HeaderMap),
    /// An error from the inner service.
    Error(&'a (dyn StdError + 'static)),
}

impl fmt::Debug for Outcome<'_> {
    // Never the header values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Response(s, _) => f.debug_tuple("Response").field(s).finish(),
            Outcome::Error(_) => f.write_str("Error"),
        }
    }
}

/// A user classifier that may override the tables: `Some(verdict)` decides,
/// `None` leaves the decision to sturdy-core's tables.
///
/// Any `Fn(Outcome<'_>) -> Option<Verdict>` is one:
///
/// ```
/// use sturdy_core::Verdict;
/// use sturdy_retry::{Outcome, RetryPolicy};
/// // Also retry 409 Conflict.
/// let policy = RetryPolicy::builder()
///     .classifier(|o: Outcome<'_>| match o {
///         Outcome::Response(s, _) if s.as_u16() == 409 => Some(Verdict::Retryable),
///         _ => None,
///     })
///     .build()
///     .unwrap();
/// # let _ = policy;
/// ```
pub trait Classify: Send + Sync + 'static {
    /// The verdict on one attempt's outcome, or `None` for the table's.
    fn classify(&self, outcome: Outcome<'_>) -> Option<Verdict>;
}

impl<F> Classify for F
where
    F: Fn(Outcome<'_>) -> Option<Verdict> + Send + Sync + 'static,
{
    fn classify(&self, outcome: Outcome<'_>) -> Option<Verdict> {
        self(outcome)
    }
}

/// When a request whose fate is unknown (sent, no response head) may be
/// sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RepeatUnknown {
    /// When it is safe to repeat: an idempotent method, the idempotency-key
    /// header present, or the `RetrySafe` extension (the default).
    #[default]
    WhenSafe,
    /// Always (widens the rule).
    Always,
    /// Never (narrows the rule: only `NotSent` failures and responses are
    /// retried).
    Never,
}

/// A validated retry policy. Build one with [`RetryPolicy::builder`].
#[derive(Clone)]
pub struct RetryPolicy {
    pub(crate) max_retries: u32,
    pub(crate) backoff: Backoff,
    pub(crate) max_delay: Duration,
    pub(crate) hint_cap: Duration,
    pub(crate) budget: Option<BudgetConfig>,
    pub(crate) classifier: Option<Arc<dyn Classify>>,
    pub(crate) repeat_unknown: RepeatUnknown,
    pub(crate) idempotency_header: HeaderName,
    pub(crate) replay_cap: usize,
    pub(crate) prefetch_cap: Option<u64>,
    pub(crate) drain_cap: u64,
    pub(crate) drain_time: Duration,
    pub(crate) attempt_header: Option<HeaderName>,
    pub(crate) grpc_previous_attempts: bool,
    pub(crate) generated_key: Option<HeaderName>,
    pub(crate) seed: Option<u64>,
}

impl Default for RetryPolicy {
    /// DESIGN.md's defaults: the tables, 5 retries, the guide's backoff
    /// (base 1 s, up to 1 s jitter, 60 s cap), hints up to 120 s, the
    /// default budget, a 64 KiB replay cap, no prefetch, 64 KiB / 1 s drain.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            backoff: Backoff::default(),
            max_delay: Duration::from_secs(60),
            hint_cap: Duration::from_secs(120),
            budget: Some(BudgetConfig::default()),
            classifier: None,
            repeat_unknown: RepeatUnknown::WhenSafe,
            idempotency_header: HeaderName::from_static("idempotency-key"),
            replay_cap: 64 * 1024,
            prefetch_cap: None,
            drain_cap: 64 * 1024,
            drain_time: Duration::from_secs(1),
            attempt_header: None,
            grpc_previous_attempts: false,
            generated_key: None,
            seed: None,
        }
    }
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_retries", &self.max_retries)
            .field("backoff", &self.backoff)
            .field("max_delay", &self.max_delay)
            .field("hint_cap", &self.hint_cap)
            .field("budget", &self.budget)
            .field("classifier", &self.classifier.is_some())
            .field("repeat_unknown", &self.repeat_unknown)
            .field("idempotency_header", &self.idempotency_header)
            .field("replay_cap", &self.replay_cap)
            .field("prefetch_cap", &self.prefetch_cap)
            .field("drain_cap", &self.drain_cap)
            .field("drain_time", &self.drain_time)
            .field("attempt_header", &self.attempt_header)
            .field("grpc_previous_attempts", &self.grpc_previous_attempts)
            .field("generated_key", &self.generated_key)
            .finish()
    }
}

impl RetryPolicy {
    /// A builder starting from the defaults.
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder {
            policy: RetryPolicy::default(),
            bad_header: false,
        }
    }

    /// Retries allowed after the first attempt.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The backoff strategy.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// The budget's numbers, if a budget is on.
    pub fn budget(&self) -> Option<BudgetConfig> {
        self.budget
    }
}

/// Builds a [`RetryPolicy`]; [`build`](RetryPolicyBuilder::build) checks it.
#[derive(Debug)]
pub struct RetryPolicyBuilder {
    policy: RetryPolicy,
    bad_header: bool,
}

impl RetryPolicyBuilder {
    /// Retries after the first attempt (default 5; at most
    /// [`MAX_RETRIES_LIMIT`]).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.policy.max_retries = n;
        self
    }

    /// The backoff strategy (default: the guide's).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.policy.backoff = backoff;
        self
    }

    /// The cap on one backoff delay (default 60 s).
    pub fn max_delay(mut self, cap: Duration) -> Self {
        self.policy.max_delay = cap;
        self
    }

    /// The longest server hint honoured (default 120 s); a longer one
    /// returns the response at once.
    pub fn hint_cap(mut self, cap: Duration) -> Self {
        self.policy.hint_cap = cap;
        self
    }

    /// The retry budget's numbers (default: [`BudgetConfig::default`]).
    pub fn budget(mut self, budget: BudgetConfig) -> Self {
        self.policy.budget = Some(budget);
        self
    }

    /// No retry budget.
    pub fn no_budget(mut self) -> Self {
        self.policy.budget = None;
        self
    }

    /// A classifier that may override the tables.
    pub fn classifier(mut self, classifier: impl Classify) -> Self {
        self.policy.classifier = Some(Arc::new(classifier));
        self
    }

    /// When a request sent without an answer may be sent again.
    pub fn repeat_unknown(mut self, rule: RepeatUnknown) -> Self {
        self.policy.repeat_unknown = rule;
        self
    }

    /// The header whose presence makes a request safe to repeat (default
    /// `idempotency-key`).
    pub fn idempotency_header(mut self, name: &str) -> Self {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => self.policy.idempotency_header = h,
            Err(_) => self.bad_header = true,
        }
        self
    }

    /// How much of a request body is kept for replay (default 64 KiB; at
    /// least 1 byte: to retry nothing, set [`max_retries`](Self::max_retries)
    /// to 0).
    pub fn replay_cap(mut self, bytes: usize) -> Self {
        self.policy.replay_cap = bytes;
        self
    }

    /// Reads successful responses of a known length up to `bytes` in full
    /// before handing them over, so a cut mid-body is retried (off by
    /// default; never for SSE).
    pub fn prefetch_up_to(mut self, bytes: u64) -> Self {
        self.policy.prefetch_cap = Some(bytes);
        self
    }

    /// Drains a retried response's body before the retry when its length is
    /// known and at most `bytes`, for at most `time` (default 64 KiB, 1 s).
    pub fn drain(mut self, bytes: u64, time: Duration) -> Self {
        self.policy.drain_cap = bytes;
        self.policy.drain_time = time;
        self
    }

    /// Sends the attempt number (1, 2, ...) in this header on every attempt.
    pub fn attempt_header(mut self, name: &str) -> Self {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => self.policy.attempt_header = Some(h),
            Err(_) => self.bad_header = true,
        }
        self
    }

    /// Sends `grpc-previous-rpc-attempts` (gRPC's own header) on every
    /// retry: the number of attempts before this one.
    pub fn grpc_previous_attempts(mut self, yes: bool) -> Self {
        self.policy.grpc_previous_attempts = yes;
        self
    }

    /// Gives every logical call that has no `name` header a fresh random
    /// key (UUID v4 form) under `name`, the same on every attempt. The
    /// request then counts as safe to repeat, as with any idempotency key.
    pub fn generate_idempotency_key(mut self, name: &str) -> Self {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => {
                self.policy.idempotency_header = h.clone();
                self.policy.generated_key = Some(h);
            }
            Err(_) => self.bad_header = true,
        }
        self
    }

    /// Seeds the jitter, so that delays are reproducible (tests).
    pub fn seed(mut self, seed: u64) -> Self {
        self.policy.seed = Some(seed);
        self
    }

    /// Checks every value: a zero backoff base, a cap below the base, a
    /// jitter above the cap, a zero hint cap, a budget out of range, a zero
    /// drain time, a zero replay cap, more than [`MAX_RETRIES_LIMIT`]
    /// retries and a bad header name are each a [`RetryConfigError`].
    pub fn build(self) -> Result<RetryPolicy, RetryConfigError> {
        let p = self.policy;
        if self.bad_header {
            return Err(RetryConfigError::InvalidHeaderName);
        }
        if p.max_retries > MAX_RETRIES_LIMIT {
            return Err(RetryConfigError::TooManyRetries(p.max_retries));
        }
        p.backoff.validate(p.max_delay)?;
        if p.hint_cap.is_zero() {
            return Err(RetryConfigError::ZeroHintCap);
        }
        if let Some(b) = &p.budget {
            b.validate()?;
        }
        if p.drain_cap > 0 && p.drain_time.is_zero() {
            return Err(RetryConfigError::ZeroDrainTime);
        }
        if p.replay_cap == 0 {
            return Err(RetryConfigError::ZeroReplayCap);
        }
        Ok(p)
    }
}
