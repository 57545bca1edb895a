//! The per-call record that flows back up the stack: written by the layers
//! that know (timeout: the workload; retry: attempts, reasons, budget), read
//! by the metrics layer when the call ends, and by the caller. It travels
//! down inside the request's [`CallPlan`](crate::CallPlan).

use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::{CallPlan, Classifier, FailureKind, Workload};

/// One per logical call, shared by every layer that handles it (clones share
/// the same record).
///
/// Counters are atomics; the list of retry reasons sits behind a mutex that
/// is touched only when a retry happens, never on the success path.
///
/// A caller that wants to read it after the call attaches it first:
///
/// ```
/// use sturdy_core::{CallContext, FailureKind, Workload};
/// let mut req = http::Request::new(());
/// let ctx = CallContext::attach(&mut req);
/// ctx.set_workload(Workload::Agentic);
/// ctx.record_attempt();
/// // Another layer, further down, sees the same record.
/// let seen = CallContext::from_extensions(req.extensions()).unwrap();
/// assert_eq!(seen.workload(), Some(Workload::Agentic));
/// assert_eq!(seen.attempts(), 1);
/// ```
#[derive(Clone, Default)]
pub struct CallContext(Arc<Inner>);

#[derive(Default)]
struct Inner {
    /// 0 when unset, else the workload's index plus one.
    workload: AtomicU8,
    /// [`MANAGES_ATTEMPTS`] and [`ENFORCES_PHASES`], as layers below set them.
    below: AtomicU8,
    /// What the attempts-scope metrics saw of the latest attempt's event
    /// stream ([`STREAM_WATCHED`], [`STREAM_ENDED`], the error bits).
    stream: AtomicU8,
    attempts: AtomicU32,
    /// Retries refused, by [`RetryRefusal`].
    refusals: [AtomicU32; RetryRefusal::ALL.len()],
    /// The latest attempt whose request a connection took up (see
    /// [`CallContext::record_sending`]); 0 before any.
    sending: AtomicU32,
    /// The latest attempt whose request body reports being taken up (the
    /// retry layer arms each attempt's body once it is built).
    armed: AtomicU32,
    possibly_duplicated: AtomicU32,
    /// The latest attempt whose overload a full concurrency limit below
    /// took up (see [`CallContext::record_overload_queued`]); 0 before any.
    overload_queued: AtomicU32,
    /// Retries taken: the length of `retry_reasons`, read without its lock.
    retries: AtomicU32,
    retry_reasons: Mutex<Vec<FailureKind>>,
    /// The classifier the retry layer judges with, which the metrics
    /// layers, above and below it, judge with too.
    classifier: OnceLock<Classifier>,
}

/// The classifier of a call no retry layer judges: the tables.
static TABLES: Classifier = Classifier::tables();

/// A retry layer below makes the attempts.
const MANAGES_ATTEMPTS: u8 = 1;
/// An attempt timeout below enforces `headers` and `read` on every attempt.
const ENFORCES_PHASES: u8 = 2;

/// An attempts-scope metrics layer reads the latest attempt's answer as an
/// event stream.
const STREAM_WATCHED: u8 = 1;
/// ...and that attempt's outcome is recorded.
const STREAM_ENDED: u8 = 2;
/// ...and an event said the stream failed: a stream error.
const STREAM_ERROR: u8 = 4;
/// ...or the account's quota ran out.
const STREAM_QUOTA: u8 = 8;

/// What the attempts-scope metrics saw of the latest attempt's
/// server-sent-event stream ([`CallContext::stream_watch`]).
///
/// The call's answer is its last attempt's, so the call scope above takes
/// the stream's outcome from here rather than reading every event again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamWatch {
    /// The failure the first error event announced
    /// ([`FailureKind::StreamError`] or [`FailureKind::QuotaExhausted`]).
    pub error: Option<FailureKind>,
    /// The attempt's outcome is recorded: its stream ended, or said
    /// `[DONE]`.
    pub ended: bool,
}

impl CallContext {
    /// A fresh, empty record.
    pub fn new() -> CallContext {
        CallContext::default()
    }

    /// The record of the request's [`CallPlan`], if it carries one.
    pub fn from_extensions(ext: &http::Extensions) -> Option<CallContext> {
        CallPlan::from_extensions(ext).map(|p| p.context().clone())
    }

    /// The record of the request's [`CallPlan`], inserting a plan when it
    /// has none: a caller keeps the returned handle to read the call's
    /// story once it has ended.
    pub fn attach<B>(req: &mut http::Request<B>) -> CallContext {
        CallPlan::of_request(req).context().clone()
    }

    /// Sets the classifier this call's answers are judged with, once: a
    /// second call keeps the first (the retry layer nearest the caller
    /// sets it).
    pub fn set_classifier(&self, classifier: Classifier) {
        let _ = self.0.classifier.set(classifier);
    }

    /// The classifier this call's answers are judged with: the retry
    /// layer's, else the tables.
    pub fn classifier(&self) -> &Classifier {
        self.0.classifier.get().unwrap_or(&TABLES)
    }

    /// Records that a retry layer below makes this call's attempts: the
    /// per-attempt phases (`headers`, `read`) cannot be enforced across it
    /// by a layer above.
    pub fn mark_attempts_managed(&self) {
        self.0.below.fetch_or(MANAGES_ATTEMPTS, Ordering::Relaxed);
    }

    /// Records that an attempt timeout below enforces `headers` and `read`
    /// (and the deadline) on every attempt.
    pub fn mark_phases_enforced(&self) {
        self.0.below.fetch_or(ENFORCES_PHASES, Ordering::Relaxed);
    }

    /// Arms the request body of `attempt` to record when a connection
    /// takes it up (see [`record_sending`](CallContext::record_sending)).
    /// The retry layer arms each attempt's body once it is built, so that a
    /// wrapper that inspects the body on the way (tonic's checks whether it
    /// is empty) does not count.
    pub fn arm_sending(&self, attempt: u32) {
        self.0.armed.fetch_max(attempt, Ordering::Relaxed);
    }

    /// Records that a connection took up the request of `attempt`: its body
    /// was asked for its length or its first frame, which hyper does only
    /// once it writes the request on a connection (HTTP/1.1 and HTTP/2). No
    /// byte of an attempt below this mark can have reached a server.
    pub fn record_sending(&self, attempt: u32) {
        if self.0.armed.load(Ordering::Relaxed) >= attempt
            && self.0.sending.load(Ordering::Relaxed) < attempt
        {
            self.0.sending.fetch_max(attempt, Ordering::Relaxed);
        }
    }

    /// Whether a connection took up the request of `attempt` (when the
    /// retry layer arms the bodies; `None` when nobody does).
    pub fn was_sending(&self, attempt: u32) -> Option<bool> {
        if attempt == 0 || self.0.armed.load(Ordering::Relaxed) < attempt {
            return None;
        }
        Some(self.0.sending.load(Ordering::Relaxed) >= attempt)
    }

    /// Records whether the latest attempt's answer is an event stream that
    /// an attempts-scope metrics layer reads (set at each attempt's head:
    /// `false` clears what an earlier attempt's stream said).
    #[inline]
    pub fn watch_stream(&self, watched: bool) {
        let state = if watched { STREAM_WATCHED } else { 0 };
        self.0.stream.store(state, Ordering::Relaxed);
    }

    /// Records the failure an error event of the watched stream announced
    /// (the first one is kept; [`FailureKind::QuotaExhausted`], or else a
    /// stream error).
    #[inline]
    pub fn stream_saw(&self, kind: FailureKind) {
        let bit = match kind {
            FailureKind::QuotaExhausted => STREAM_QUOTA,
            _ => STREAM_ERROR,
        };
        let _ = self
            .0
            .stream
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                (s & (STREAM_ERROR | STREAM_QUOTA) == 0).then_some(s | bit)
            });
    }

    /// Records that the watched stream's attempt has its outcome.
    #[inline]
    pub fn stream_ended(&self) {
        self.0.stream.fetch_or(STREAM_ENDED, Ordering::Relaxed);
    }

    /// What the attempts-scope metrics saw of the latest attempt's event
    /// stream; `None` when none reads it.
    #[inline]
    pub fn stream_watch(&self) -> Option<StreamWatch> {
        let s = self.0.stream.load(Ordering::Relaxed);
        (s & STREAM_WATCHED != 0).then_some(StreamWatch {
            error: if s & STREAM_QUOTA != 0 {
                Some(FailureKind::QuotaExhausted)
            } else if s & STREAM_ERROR != 0 {
                Some(FailureKind::StreamError)
            } else {
                None
            },
            ended: s & STREAM_ENDED != 0,
        })
    }

    /// Whether a retry layer below makes the attempts.
    pub fn attempts_managed(&self) -> bool {
        self.0.below.load(Ordering::Relaxed) & MANAGES_ATTEMPTS != 0
    }

    /// Whether an attempt timeout below enforces the per-attempt phases.
    pub fn phases_enforced(&self) -> bool {
        self.0.below.load(Ordering::Relaxed) & ENFORCES_PHASES != 0
    }

    /// Records the call's workload.
    pub fn set_workload(&self, workload: Workload) {
        self.0
            .workload
            .store(workload.index() as u8 + 1, Ordering::Relaxed);
    }

    /// The call's workload, once a layer has recorded it.
    pub fn workload(&self) -> Option<Workload> {
        let i = self.0.workload.load(Ordering::Relaxed);
        Workload::ALL.get(usize::from(i).checked_sub(1)?).copied()
    }

    /// Counts one more attempt and returns the new count.
    pub fn record_attempt(&self) -> u32 {
        self.0.attempts.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.0.attempts.load(Ordering::Relaxed)
    }

    /// Records that a concurrency limit below answered attempt `attempt`'s
    /// overload by shrinking, and is full: the next attempt waits in its
    /// queue for a permit, which spaces it out as a backoff would. The
    /// retry layer then sends the retry without a backoff of its own (a
    /// server's `retry-after` is still honoured, and the budget still
    /// applies).
    pub fn record_overload_queued(&self, attempt: u32) {
        self.0.overload_queued.fetch_max(attempt, Ordering::Relaxed);
    }

    /// Whether the latest attempt's overload was taken up by a full
    /// concurrency limit below (see
    /// [`record_overload_queued`](CallContext::record_overload_queued)).
    pub fn overload_queued(&self) -> bool {
        let attempt = self.attempts();
        attempt != 0 && self.0.overload_queued.load(Ordering::Relaxed) == attempt
    }

    /// Records a retry sent because of `reason`; `possibly_duplicated` as
    /// [`Safety::possibly_duplicated`](crate::Safety::possibly_duplicated)
    /// defines it.
    pub fn record_retry(&self, reason: FailureKind, possibly_duplicated: bool) {
        if possibly_duplicated {
            self.0.possibly_duplicated.fetch_add(1, Ordering::Relaxed);
        }
        // A poisoned lock only means another thread panicked while pushing;
        // the vector itself is still sound.
        let mut reasons = self
            .0
            .retry_reasons
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        reasons.push(reason);
        self.0.retries.fetch_add(1, Ordering::Release);
    }

    /// The reason of every retry taken, in order (no lock taken when there
    /// was none).
    pub fn retry_reasons(&self) -> Vec<FailureKind> {
        if self.retries() == 0 {
            return Vec::new();
        }
        self.0
            .retry_reasons
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Retries taken.
    pub fn retries(&self) -> u32 {
        self.0.retries.load(Ordering::Acquire)
    }

    /// Records that a retry the verdict called for was not made, and why.
    pub fn record_refusal(&self, why: RetryRefusal) {
        self.0.refusals[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Retries refused for `why`.
    pub fn refusals(&self, why: RetryRefusal) -> u32 {
        self.0.refusals[why as usize].load(Ordering::Relaxed)
    }

    /// Retries the budget refused.
    pub fn budget_refusals(&self) -> u32 {
        self.refusals(RetryRefusal::Budget)
    }

    /// Retries that may have run twice on the server (see
    /// [`Safety::possibly_duplicated`](crate::Safety::possibly_duplicated)).
    pub fn possibly_duplicated(&self) -> u32 {
        self.0.possibly_duplicated.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for CallContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallContext")
            .field("workload", &self.workload())
            .field("attempts", &self.attempts())
            .field("retries", &self.retries())
            .field("budget_refusals", &self.budget_refusals())
            .field(
                "body_not_replayable",
                &self.refusals(RetryRefusal::BodyNotReplayable),
            )
            .field("possibly_duplicated", &self.possibly_duplicated())
            .finish()
    }
}

/// Why a retry the verdict called for was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RetryRefusal {
    /// The retry budget was spent.
    Budget,
    /// The request body could no longer be sent again (a streamed body read
    /// past the replay cap, or one that failed).
    BodyNotReplayable,
    /// The attempt's fate was unknown and the request may not be sent twice.
    NotRepeatable,
    /// The retries allowed were spent.
    RetriesSpent,
    /// The delay (backoff or the server's hint) would end past the deadline.
    PastDeadline,
    /// The server asked to wait longer than the hint cap.
    HintBeyondCap,
}

impl RetryRefusal {
    /// Every reason.
    pub const ALL: [RetryRefusal; 6] = [
        RetryRefusal::Budget,
        RetryRefusal::BodyNotReplayable,
        RetryRefusal::NotRepeatable,
        RetryRefusal::RetriesSpent,
        RetryRefusal::PastDeadline,
        RetryRefusal::HintBeyondCap,
    ];

    /// A stable label: `budget`, `body_not_replayable`, `not_repeatable`,
    /// `retries_spent`, `past_deadline`, `hint_beyond_cap`.
    pub const fn label(self) -> &'static str {
        match self {
            RetryRefusal::Budget => "budget",
            RetryRefusal::BodyNotReplayable => "body_not_replayable",
            RetryRefusal::NotRepeatable => "not_repeatable",
            RetryRefusal::RetriesSpent => "retries_spent",
            RetryRefusal::PastDeadline => "past_deadline",
            RetryRefusal::HintBeyondCap => "hint_beyond_cap",
        }
    }
}

/// A marker extension: the caller says this request may be sent twice
/// (for an LLM call: it has no side effect beyond billing). The retry layer
/// folds it into the plan's [`Safety`](crate::Safety): it then repeats the
/// request after an `Unknown` failure, and counts such a retry as possibly
/// duplicated unless the method is idempotent or the request carries an
/// idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetrySafe;

/// A marker extension: the caller says this request must not be sent again
/// once it may have reached the server (an attempt of `Unknown` reach),
/// whatever the retry policy's rule says of its method, endpoint or
/// idempotency key: a call whose effects must not happen twice. Failures
/// that never left the client, and answers the server gave, are retried
/// as usual. It wins over [`RetrySafe`].
///
/// ```
/// let mut req = http::Request::post("http://api.test/v1/chat/completions").body(()).unwrap();
/// req.extensions_mut().insert(sturdy_core::NotRetrySafe);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NotRetrySafe;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_record() {
        let a = CallContext::new();
        let b = a.clone();
        assert_eq!(a.workload(), None);
        b.set_workload(Workload::Batch);
        b.record_attempt();
        b.record_attempt();
        b.record_retry(FailureKind::Reset, true);
        b.record_retry(
            FailureKind::Status(http::StatusCode::SERVICE_UNAVAILABLE),
            false,
        );
        b.record_refusal(RetryRefusal::Budget);
        b.record_refusal(RetryRefusal::BodyNotReplayable);
        assert_eq!(a.was_sending(1), None, "nobody armed the bodies");
        a.record_sending(1);
        a.arm_sending(1);
        assert_eq!(
            a.was_sending(1),
            Some(false),
            "taken up before it was armed"
        );
        b.record_sending(1);
        assert_eq!((a.was_sending(1), a.was_sending(2)), (Some(true), None));
        assert_eq!(a.workload(), Some(Workload::Batch));
        assert_eq!(a.attempts(), 2);
        assert_eq!(a.retries(), 2);
        assert_eq!(a.possibly_duplicated(), 1);
        assert_eq!(a.budget_refusals(), 1);
        assert_eq!(a.retry_reasons()[0], FailureKind::Reset);
        assert!(format!("{a:?}").contains("attempts: 2"));
    }

    #[test]
    fn attach_keeps_an_existing_record() {
        let mut req = http::Request::new(());
        let first = CallContext::attach(&mut req);
        first.record_attempt();
        assert_eq!(CallContext::attach(&mut req).attempts(), 1);
        assert!(!first.attempts_managed() && !first.phases_enforced());
        first.mark_phases_enforced();
        assert!(CallContext::attach(&mut req).phases_enforced());
        assert!(!first.attempts_managed());
    }
}

/// A marker extension: the caller's own limit on this request's retries,
/// in place of the retry policy's (at most
/// 100; `MaxRetries(0)` sends it once). The OpenAI SDK's per-request
/// `max_retries`.
///
/// ```
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(sturdy_core::MaxRetries(0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaxRetries(pub u32);
