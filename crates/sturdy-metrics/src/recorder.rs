//! The [`Recorder`] trait: where the layer's events go. The layer calls it
//! synchronously, never while holding a lock of its own and never across an
//! await; backends decide how to store (Prometheus, `metrics`, a
//! [`SnapshotRecorder`](crate::SnapshotRecorder)).

use std::sync::Arc;
use std::time::Duration;

use sturdy_core::{CallContext, FailureKind, Workload};

use crate::{Dimensions, Outcome};

/// What the `calls()` scope read from the [`CallContext`] when a call ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallSummary {
    /// Attempts made (at least 1: without a retry layer nobody counts them,
    /// and a call is one attempt).
    pub attempts: u32,
    /// The reason of every retry taken, in order.
    pub retry_reasons: Vec<FailureKind>,
    /// Retries the budget refused.
    pub budget_refusals: u32,
    /// Retries that may have sent the request twice.
    pub possibly_duplicated: u32,
}

impl CallSummary {
    /// Reads a call's record. Touches the context's retry-reason lock once,
    /// when the call ends; the list is empty (no allocation) when no retry
    /// happened.
    pub fn from_context(ctx: &CallContext) -> CallSummary {
        CallSummary {
            attempts: ctx.attempts().max(1),
            retry_reasons: ctx.retry_reasons(),
            budget_refusals: ctx.budget_refusals(),
            possibly_duplicated: ctx.possibly_duplicated(),
        }
    }
}

/// Receives the layer's events. Every started call or attempt gets exactly
/// one [`Recorder::finished`]; [`Recorder::head`] and
/// [`Recorder::first_frame`] at most once each, before it.
///
/// Implementations must be cheap and must not block: they run inside `poll`.
pub trait Recorder: Send + Sync + 'static {
    /// A call or attempt started (in flight +1).
    fn started(&self, dims: &Dimensions);

    /// Its response head arrived after `elapsed`.
    fn head(&self, dims: &Dimensions, elapsed: Duration);

    /// The first data frame of its response body arrived after `elapsed`
    /// (time to first token, for a stream).
    fn first_frame(&self, dims: &Dimensions, elapsed: Duration);

    /// For the `calls()` scope only, just before [`Recorder::finished`]:
    /// what the layers below wrote into the call's context.
    fn call_summary(&self, workload: Workload, summary: &CallSummary);

    /// It ended with `outcome` after `elapsed` (in flight -1).
    fn finished(&self, dims: &Dimensions, outcome: Outcome, elapsed: Duration);
}

impl<T: Recorder + ?Sized> Recorder for Arc<T> {
    fn started(&self, dims: &Dimensions) {
        (**self).started(dims);
    }
    fn head(&self, dims: &Dimensions, elapsed: Duration) {
        (**self).head(dims, elapsed);
    }
    fn first_frame(&self, dims: &Dimensions, elapsed: Duration) {
        (**self).first_frame(dims, elapsed);
    }
    fn call_summary(&self, workload: Workload, summary: &CallSummary) {
        (**self).call_summary(workload, summary);
    }
    fn finished(&self, dims: &Dimensions, outcome: Outcome, elapsed: Duration) {
        (**self).finished(dims, outcome, elapsed);
    }
}

/// Two recorders at once (e.g. Prometheus for operators and a snapshot for a
/// report).
#[derive(Debug, Clone)]
pub struct Both<A, B>(pub A, pub B);

impl<A: Recorder, B: Recorder> Recorder for Both<A, B> {
    fn started(&self, dims: &Dimensions) {
        self.0.started(dims);
        self.1.started(dims);
    }
    fn head(&self, dims: &Dimensions, elapsed: Duration) {
        self.0.head(dims, elapsed);
        self.1.head(dims, elapsed);
    }
    fn first_frame(&self, dims: &Dimensions, elapsed: Duration) {
        self.0.first_frame(dims, elapsed);
        self.1.first_frame(dims, elapsed);
    }
    fn call_summary(&self, workload: Workload, summary: &CallSummary) {
        self.0.call_summary(workload, summary);
        self.1.call_summary(workload, summary);
    }
    fn finished(&self, dims: &Dimensions, outcome: Outcome, elapsed: Duration) {
        self.0.finished(dims, outcome, elapsed);
        self.1.finished(dims, outcome, elapsed);
    }
}
