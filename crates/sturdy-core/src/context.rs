//! The per-call record that flows back up the stack: written by the layers
//! that know (timeout: the workload; retry: attempts, reasons, budget), read
//! by the metrics layer when the call ends, and by the caller.

use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crate::{FailureKind, Workload};

/// One per logical call, shared by every layer that handles it (clones share
/// the same record).
///
/// Counters are atomics; the list of retry reasons sits behind a mutex that
/// is touched only when a retry happens, never on the success path.
///
/// ```
/// use sturdy_core::{CallContext, FailureKind, Workload};
/// let mut req = http::Request::new(());
/// let ctx = CallContext::get_or_insert(req.extensions_mut());
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
    attempts: AtomicU32,
    budget_refusals: AtomicU32,
    possibly_duplicated: AtomicU32,
    retry_reasons: Mutex<Vec<FailureKind>>,
}

impl CallContext {
    /// A fresh, empty record.
    pub fn new() -> CallContext {
        CallContext::default()
    }

    /// The record a request carries, if any.
    pub fn from_extensions(ext: &http::Extensions) -> Option<CallContext> {
        ext.get::<CallContext>().cloned()
    }

    /// The record a request carries, inserting a fresh one when it has none.
    pub fn get_or_insert(ext: &mut http::Extensions) -> CallContext {
        ext.get_or_insert_with(CallContext::new).clone()
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

    /// Records a retry taken because of `reason`; `possibly_duplicated` when
    /// it followed an `Unknown` failure of a request that is not idempotent.
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
    }

    /// The reason of every retry taken, in order.
    pub fn retry_reasons(&self) -> Vec<FailureKind> {
        self.0
            .retry_reasons
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Retries taken.
    pub fn retries(&self) -> u32 {
        let reasons = self
            .0
            .retry_reasons
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        u32::try_from(reasons.len()).unwrap_or(u32::MAX)
    }

    /// Records that the retry budget refused a retry.
    pub fn record_budget_refusal(&self) {
        self.0.budget_refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// Retries the budget refused.
    pub fn budget_refusals(&self) -> u32 {
        self.0.budget_refusals.load(Ordering::Relaxed)
    }

    /// Retries that followed an `Unknown` failure of a non-idempotent request.
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
            .field("possibly_duplicated", &self.possibly_duplicated())
            .finish()
    }
}

/// A marker extension: the caller says this request may be sent twice
/// (for an LLM call: it has no side effect beyond billing). Retry then
/// repeats it after an `Unknown` failure, and counts such a retry as
/// possibly duplicated when the method is not idempotent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetrySafe;

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
        b.record_budget_refusal();
        assert_eq!(a.workload(), Some(Workload::Batch));
        assert_eq!(a.attempts(), 2);
        assert_eq!(a.retries(), 2);
        assert_eq!(a.possibly_duplicated(), 1);
        assert_eq!(a.budget_refusals(), 1);
        assert_eq!(a.retry_reasons()[0], FailureKind::Reset);
        assert!(format!("{a:?}").contains("attempts: 2"));
    }

    #[test]
    fn get_or_insert_keeps_an_existing_record() {
        let mut ext = http::Extensions::new();
        let first = CallContext::get_or_insert(&mut ext);
        first.record_attempt();
        assert_eq!(CallContext::get_or_insert(&mut ext).attempts(), 1);
    }
}
