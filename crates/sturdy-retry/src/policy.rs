//! The retry policy: what is retried, how often, how long to wait, which
//! requests may be sent twice, and the limits on bodies. Built once,
//! validated, then shared by every service the layer makes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method};
use sturdy_core::{Classifier, Classify, RequestHead, Safety};

use crate::{Backoff, BudgetConfig, RetryConfigError};

/// The most retries a policy may allow.
pub const MAX_RETRIES_LIMIT: u32 = 100;

type Pick = dyn Fn(&RequestHead<'_>) -> bool + Send + Sync;

/// Which requests may be sent again after an attempt whose fate is unknown
/// (sent, but no response head came back): the one rule for it. Failures
/// that never left the client are always retried, and answers follow their
/// verdict, whatever the rule.
///
/// ```
/// use sturdy_retry::{RetryPolicy, RetrySafeRule};
/// // An LLM API: every call may be repeated (billing is its only effect).
/// let llm = RetryPolicy::builder().retry_safe(RetrySafeRule::All).build().unwrap();
/// // Only the inference endpoints.
/// let some = RetryPolicy::builder()
///     .retry_safe(RetrySafeRule::when(|head| head.uri.path().ends_with("/chat/completions")))
///     .build()
///     .unwrap();
/// # let _ = (llm, some);
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum RetrySafeRule {
    /// An idempotent method (RFC 9110 §9.2.2), a request carrying the
    /// policy's idempotency-key header, or one the caller marked with the
    /// [`RetrySafe`](sturdy_core::RetrySafe) extension (the default).
    #[default]
    Standard,
    /// Every request.
    All,
    /// No request: only failures that never left the client, and answers,
    /// are retried.
    Never,
    /// The standard rule, or a request the predicate picks.
    When(Arc<Pick>),
}

impl RetrySafeRule {
    /// The standard rule widened by a predicate over the request head.
    pub fn when<F>(pick: F) -> RetrySafeRule
    where
        F: Fn(&RequestHead<'_>) -> bool + Send + Sync + 'static,
    {
        RetrySafeRule::When(Arc::new(pick))
    }
}

impl fmt::Debug for RetrySafeRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetrySafeRule::Standard => f.write_str("Standard"),
            RetrySafeRule::All => f.write_str("All"),
            RetrySafeRule::Never => f.write_str("Never"),
            RetrySafeRule::When(_) => f.write_str("When(..)"),
        }
    }
}

/// Methods that are safe to repeat by definition (RFC 9110 §9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// A validated retry policy. Build one with [`RetryPolicy::builder`].
#[derive(Clone)]
pub struct RetryPolicy {
    pub(crate) max_retries: u32,
    pub(crate) backoff: Backoff,
    pub(crate) max_delay: Duration,
    pub(crate) hint_cap: Duration,
    pub(crate) budget: Option<BudgetConfig>,
    pub(crate) classifier: Classifier,
    pub(crate) retry_safe: RetrySafeRule,
    pub(crate) idempotency_header: HeaderName,
    pub(crate) replay_cap: usize,
    pub(crate) in_memory_cap: usize,
    pub(crate) prefetch_cap: Option<u64>,
    pub(crate) drain_cap: u64,
    pub(crate) drain_time: Duration,
    pub(crate) attempt_header: Option<HeaderName>,
    pub(crate) retry_count_header: Option<HeaderName>,
    pub(crate) grpc_previous_attempts: bool,
    pub(crate) generated_key: Option<HeaderName>,
    pub(crate) seed: Option<u64>,
}

/// How much of a streamed request body is kept for replay by default: 1
/// MiB. The chunks sent are kept by reference (no copy), only while the
/// call is in flight, so the figure is the most one call can hold: a
/// hundred concurrent streamed uploads hold at most 100 MiB. Bodies all in
/// memory (what OpenAI clients send) are kept whole up to 16 MiB and cost
/// nothing extra: they are the caller's own bytes.
pub const DEFAULT_REPLAY_CAP: usize = 1024 * 1024;

impl Default for RetryPolicy {
    /// The defaults: the tables, 5 retries, the guide's backoff (base 1 s,
    /// up to 1 s jitter, 60 s cap), hints up to 120 s, the default budget,
    /// the standard safety rule, request bodies in memory kept whole up to
    /// 16 MiB and streamed ones up to 1 MiB, no prefetch, 64 KiB / 1 s
    /// drain.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            backoff: Backoff::default(),
            max_delay: Duration::from_secs(60),
            hint_cap: Duration::from_secs(120),
            budget: Some(BudgetConfig::default()),
            classifier: Classifier::tables(),
            retry_safe: RetrySafeRule::Standard,
            idempotency_header: HeaderName::from_static("idempotency-key"),
            replay_cap: DEFAULT_REPLAY_CAP,
            in_memory_cap: 16 * 1024 * 1024,
            prefetch_cap: None,
            drain_cap: 64 * 1024,
            drain_time: Duration::from_secs(1),
            attempt_header: None,
            retry_count_header: None,
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
            .field("classifier", &self.classifier)
            .field("retry_safe", &self.retry_safe)
            .field("idempotency_header", &self.idempotency_header)
            .field("replay_cap", &self.replay_cap)
            .field("in_memory_cap", &self.in_memory_cap)
            .field("prefetch_cap", &self.prefetch_cap)
            .field("drain_cap", &self.drain_cap)
            .field("drain_time", &self.drain_time)
            .field("attempt_header", &self.attempt_header)
            .field("retry_count_header", &self.retry_count_header)
            .field("grpc_previous_attempts", &self.grpc_previous_attempts)
            .field("generated_key", &self.generated_key)
            .finish()
    }
}

impl RetryPolicy {
    /// A builder starting from the defaults.
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder::default()
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

    /// Responses of a known length up to this many bytes are read in full
    /// before they are handed over.
    pub fn prefetch_cap(&self) -> Option<u64> {
        self.prefetch_cap
    }

    /// The classifier answers are judged with.
    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    /// Whether `head` (`marked` when it carries the caller's
    /// [`RetrySafe`](sturdy_core::RetrySafe)) may
    /// be sent again after an attempt of unknown reach, by this policy's
    /// one rule.
    pub fn safety(&self, head: &RequestHead<'_>, marked: bool) -> Safety {
        let idempotent = is_idempotent(head.method);
        let keyed = sturdy_core::header(head.headers, &self.idempotency_header).is_some();
        let standard = idempotent || keyed || marked;
        let repeatable = match &self.retry_safe {
            RetrySafeRule::Standard => standard,
            RetrySafeRule::All => true,
            RetrySafeRule::Never => false,
            RetrySafeRule::When(pick) => standard || pick(head),
        };
        Safety::new(repeatable, idempotent || keyed)
    }
}

/// One setting of a [`RetryPolicyBuilder`]: `None` until it is set, so a
/// builder knows what it was told and can take the rest from another
/// ([`RetryPolicyBuilder::or`]).
type Set<T> = Option<T>;

/// Builds a [`RetryPolicy`]; [`build`](RetryPolicyBuilder::build) checks it.
///
/// It records which settings were given: [`or`](RetryPolicyBuilder::or)
/// fills the others from another builder, so a builder handed to a stack
/// keeps every stack default it did not set.
#[derive(Debug, Default, Clone)]
pub struct RetryPolicyBuilder {
    max_retries: Set<u32>,
    backoff: Set<Backoff>,
    max_delay: Set<Duration>,
    hint_cap: Set<Duration>,
    budget: Set<Option<BudgetConfig>>,
    classifier: Set<ClassifierSetting>,
    retry_safe: Set<RetrySafeRule>,
    idempotency_header: Set<Result<HeaderName, ()>>,
    replay_cap: Set<usize>,
    in_memory_cap: Set<usize>,
    prefetch_cap: Set<Option<u64>>,
    drain: Set<(u64, Duration)>,
    attempt_header: Set<Result<HeaderName, ()>>,
    retry_count_header: Set<Result<HeaderName, ()>>,
    grpc_previous_attempts: Set<bool>,
    generated_key: Set<Result<HeaderName, ()>>,
    seed: Set<u64>,
}

/// A classifier as a setting (its `Debug` says only whether there is one).
#[derive(Clone)]
struct ClassifierSetting(Classifier);

impl fmt::Debug for ClassifierSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

fn header(name: &str) -> Result<HeaderName, ()> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| ())
}

impl RetryPolicyBuilder {
    /// Retries after the first attempt (default 5; at most
    /// [`MAX_RETRIES_LIMIT`]).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = Some(n);
        self
    }

    /// The backoff strategy (default: the guide's).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// The cap on one backoff delay (default 60 s).
    pub fn max_delay(mut self, cap: Duration) -> Self {
        self.max_delay = Some(cap);
        self
    }

    /// The longest server hint honoured (default 120 s); a longer one
    /// returns the response at once.
    pub fn hint_cap(mut self, cap: Duration) -> Self {
        self.hint_cap = Some(cap);
        self
    }

    /// The retry budget's numbers (default: [`BudgetConfig::default`]).
    pub fn budget(mut self, budget: BudgetConfig) -> Self {
        self.budget = Some(Some(budget));
        self
    }

    /// No retry budget.
    pub fn no_budget(mut self) -> Self {
        self.budget = Some(None);
        self
    }

    /// A classifier that judges answers before the server's hints and the
    /// tables (see [`Classifier`]); the metrics layers judge with it too.
    pub fn classifier(mut self, classifier: impl Classify) -> Self {
        self.classifier = Some(ClassifierSetting(Classifier::new(classifier)));
        self
    }

    /// Which requests may be sent again after an attempt of unknown reach
    /// (default [`RetrySafeRule::Standard`]).
    pub fn retry_safe(mut self, rule: RetrySafeRule) -> Self {
        self.retry_safe = Some(rule);
        self
    }

    /// The header whose presence makes a request safe to repeat, and lets
    /// the server recognise a repeat (default `idempotency-key`).
    pub fn idempotency_header(mut self, name: &str) -> Self {
        self.idempotency_header = Some(header(name));
        self
    }

    /// How much of a streamed request body (one not all in memory) is kept
    /// for replay as it is sent (default [`DEFAULT_REPLAY_CAP`], 1 MiB; at
    /// least 1 byte: to retry nothing, set
    /// [`max_retries`](Self::max_retries) to 0).
    pub fn replay_cap(mut self, bytes: usize) -> Self {
        self.replay_cap = Some(bytes);
        self
    }

    /// The largest request body all in memory (`Full<Bytes>`, `String`)
    /// kept whole for replay, by reference, without a copy (default 16
    /// MiB); a larger one is replayed as a streamed body.
    pub fn replay_in_memory_up_to(mut self, bytes: usize) -> Self {
        self.in_memory_cap = Some(bytes);
        self
    }

    /// Reads successful responses of a known length up to `bytes` in full
    /// before handing them over, so a cut mid-body is retried (off by
    /// default; never for SSE).
    pub fn prefetch_up_to(mut self, bytes: u64) -> Self {
        self.prefetch_cap = Some(Some(bytes));
        self
    }

    /// Hands every response over as it streams (the default).
    pub fn no_prefetch(mut self) -> Self {
        self.prefetch_cap = Some(None);
        self
    }

    /// Drains a retried response's body before the retry when its length is
    /// known and at most `bytes`, for at most `time` (default 64 KiB, 1 s).
    pub fn drain(mut self, bytes: u64, time: Duration) -> Self {
        self.drain = Some((bytes, time));
        self
    }

    /// Sends the attempt number (1, 2, ...) in this header on every attempt.
    pub fn attempt_header(mut self, name: &str) -> Self {
        self.attempt_header = Some(header(name));
        self
    }

    /// Sends the number of retries before this attempt (0, 1, ...) in this
    /// header on every attempt: `x-stainless-retry-count` is the OpenAI
    /// SDK's.
    pub fn retry_count_header(mut self, name: &str) -> Self {
        self.retry_count_header = Some(header(name));
        self
    }

    /// Sends `grpc-previous-rpc-attempts` (gRPC's own header) on every
    /// retry: the number of attempts before this one.
    pub fn grpc_previous_attempts(mut self, yes: bool) -> Self {
        self.grpc_previous_attempts = Some(yes);
        self
    }

    /// Gives every logical call that has no `name` header a fresh random
    /// key (UUID v4 form) under `name`, the same on every attempt, and
    /// makes `name` the idempotency header: the request then counts as safe
    /// to repeat, as with any idempotency key.
    pub fn generate_idempotency_key(mut self, name: &str) -> Self {
        self.generated_key = Some(header(name));
        self
    }

    /// Seeds the jitter, so that delays are reproducible (tests).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// This builder, with every setting it was not given taken from
    /// `defaults`.
    ///
    /// ```
    /// use sturdy_retry::RetryPolicy;
    /// let stack_defaults = RetryPolicy::builder().prefetch_up_to(256 * 1024).max_retries(5);
    /// let mine = RetryPolicy::builder().max_retries(2).or(stack_defaults).build().unwrap();
    /// assert_eq!((mine.max_retries(), mine.prefetch_cap()), (2, Some(256 * 1024)));
    /// ```
    pub fn or(self, defaults: RetryPolicyBuilder) -> RetryPolicyBuilder {
        RetryPolicyBuilder {
            max_retries: self.max_retries.or(defaults.max_retries),
            backoff: self.backoff.or(defaults.backoff),
            max_delay: self.max_delay.or(defaults.max_delay),
            hint_cap: self.hint_cap.or(defaults.hint_cap),
            budget: self.budget.or(defaults.budget),
            classifier: self.classifier.or(defaults.classifier),
            retry_safe: self.retry_safe.or(defaults.retry_safe),
            idempotency_header: self.idempotency_header.or(defaults.idempotency_header),
            replay_cap: self.replay_cap.or(defaults.replay_cap),
            in_memory_cap: self.in_memory_cap.or(defaults.in_memory_cap),
            prefetch_cap: self.prefetch_cap.or(defaults.prefetch_cap),
            drain: self.drain.or(defaults.drain),
            attempt_header: self.attempt_header.or(defaults.attempt_header),
            retry_count_header: self.retry_count_header.or(defaults.retry_count_header),
            grpc_previous_attempts: self
                .grpc_previous_attempts
                .or(defaults.grpc_previous_attempts),
            generated_key: self.generated_key.or(defaults.generated_key),
            seed: self.seed.or(defaults.seed),
        }
    }

    /// Checks every value: a zero backoff base, a cap below the base, a
    /// jitter above the cap, a zero hint cap, a budget out of range, a zero
    /// drain time, a zero replay cap, more than [`MAX_RETRIES_LIMIT`]
    /// retries and a bad header name are each a [`RetryConfigError`].
    pub fn build(self) -> Result<RetryPolicy, RetryConfigError> {
        let d = RetryPolicy::default();
        let bad =
            |h: Option<Result<HeaderName, ()>>| -> Result<Option<HeaderName>, RetryConfigError> {
                h.transpose()
                    .map_err(|()| RetryConfigError::InvalidHeaderName)
            };
        let generated_key = bad(self.generated_key)?;
        let idempotency_header = match (&generated_key, bad(self.idempotency_header)?) {
            (Some(generated), _) => generated.clone(),
            (None, Some(h)) => h,
            (None, None) => d.idempotency_header,
        };
        let (drain_cap, drain_time) = self.drain.unwrap_or((d.drain_cap, d.drain_time));
        let p = RetryPolicy {
            max_retries: self.max_retries.unwrap_or(d.max_retries),
            backoff: self.backoff.unwrap_or(d.backoff),
            max_delay: self.max_delay.unwrap_or(d.max_delay),
            hint_cap: self.hint_cap.unwrap_or(d.hint_cap),
            budget: self.budget.unwrap_or(d.budget),
            classifier: self.classifier.map_or(d.classifier, |c| c.0),
            retry_safe: self.retry_safe.unwrap_or(d.retry_safe),
            idempotency_header,
            replay_cap: self.replay_cap.unwrap_or(d.replay_cap),
            in_memory_cap: self.in_memory_cap.unwrap_or(d.in_memory_cap),
            prefetch_cap: self.prefetch_cap.unwrap_or(d.prefetch_cap),
            drain_cap,
            drain_time,
            attempt_header: bad(self.attempt_header)?,
            retry_count_header: bad(self.retry_count_header)?,
            grpc_previous_attempts: self
                .grpc_previous_attempts
                .unwrap_or(d.grpc_previous_attempts),
            generated_key,
            seed: self.seed,
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(req: &http::Request<()>) -> RequestHead<'_> {
        RequestHead::of(req)
    }

    #[test]
    fn the_one_safety_rule() {
        let post = http::Request::post("http://h/v1/chat/completions")
            .body(())
            .unwrap();
        let keyed = http::Request::post("http://h/v1/files")
            .header("idempotency-key", "k")
            .body(())
            .unwrap();
        let put = http::Request::put("http://h/x").body(()).unwrap();
        let standard = RetryPolicy::default();
        assert_eq!(
            standard.safety(&head_of(&post), false),
            Safety::new(false, false)
        );
        assert_eq!(
            standard.safety(&head_of(&post), true),
            Safety::new(true, false)
        );
        assert_eq!(
            standard.safety(&head_of(&keyed), false),
            Safety::new(true, true)
        );
        assert_eq!(
            standard.safety(&head_of(&put), false),
            Safety::new(true, true)
        );
        let all = RetryPolicy::builder()
            .retry_safe(RetrySafeRule::All)
            .build()
            .unwrap();
        assert_eq!(all.safety(&head_of(&post), false), Safety::new(true, false));
        let never = RetryPolicy::builder()
            .retry_safe(RetrySafeRule::Never)
            .build()
            .unwrap();
        assert!(!never.safety(&head_of(&put), true).is_repeatable());
        let chat = RetryPolicy::builder()
            .retry_safe(RetrySafeRule::when(|h| {
                h.uri.path().ends_with("/completions")
            }))
            .build()
            .unwrap();
        assert!(chat.safety(&head_of(&post), false).is_repeatable());
        assert!(
            !chat
                .safety(
                    &head_of(&http::Request::post("http://h/v1/files").body(()).unwrap()),
                    false
                )
                .is_repeatable()
        );
    }

    #[test]
    fn or_keeps_what_was_set_and_fills_the_rest() {
        let defaults = RetryPolicy::builder()
            .prefetch_up_to(100)
            .max_retries(3)
            .no_budget();
        let p = RetryPolicy::builder()
            .max_retries(1)
            .or(defaults.clone())
            .build()
            .unwrap();
        assert_eq!(
            (p.max_retries, p.prefetch_cap, p.budget),
            (1, Some(100), None)
        );
        let p = RetryPolicy::builder()
            .no_prefetch()
            .or(defaults)
            .build()
            .unwrap();
        assert_eq!(p.prefetch_cap, None, "an explicit `no` is a setting too");
        assert_eq!(p.max_retries, 3);
    }

    #[test]
    fn a_bad_header_name_is_a_build_error() {
        for b in [
            RetryPolicy::builder().attempt_header("bad header"),
            RetryPolicy::builder().idempotency_header("bad\n"),
            RetryPolicy::builder().generate_idempotency_key(""),
        ] {
            assert_eq!(b.build().unwrap_err(), RetryConfigError::InvalidHeaderName);
        }
        let p = RetryPolicy::builder()
            .generate_idempotency_key("x-key")
            .build()
            .unwrap();
        assert_eq!(p.idempotency_header, "x-key");
    }
}
