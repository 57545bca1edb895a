//! The [`Recorder`] trait: where the layer's events go. The layer calls it
//! synchronously, twice per call or attempt — when it starts, and once
//! with everything when it ends — never while holding a lock of its own
//! and never across an await; backends decide how to store (Prometheus,
//! `metrics`, a [`SnapshotRecorder`](crate::SnapshotRecorder)).

use std::sync::Arc;
use std::time::Duration;

use sturdy_core::{CallContext, FailureKind, RetryRefusal};

use crate::{Dimensions, Outcome, Scope};

/// What the `calls()` scope read from the [`CallContext`] when a call ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallSummary {
    /// Attempts made (at least 1: without a retry layer nobody counts them,
    /// and a call is one attempt).
    pub attempts: u32,
    /// The reason of every retry taken, in order.
    pub retry_reasons: Vec<FailureKind>,
    /// Retries refused, by reason (indexed by `RetryRefusal as usize`).
    pub refusals: [u32; RetryRefusal::ALL.len()],
    /// Retries that may have run twice on the server (see
    /// [`Safety::possibly_duplicated`](sturdy_core::Safety::possibly_duplicated)).
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
            refusals: RetryRefusal::ALL.map(|why| ctx.refusals(why)),
            possibly_duplicated: ctx.possibly_duplicated(),
        }
    }
}

impl CallSummary {
    /// Retries refused for `why`.
    pub fn refused(&self, why: RetryRefusal) -> u32 {
        self.refusals[why as usize]
    }

    /// Every reason a retry was refused for, with its count (reasons with
    /// none left out).
    pub fn refusal_counts(&self) -> impl Iterator<Item = (RetryRefusal, u32)> + '_ {
        RetryRefusal::ALL
            .into_iter()
            .map(|why| (why, self.refused(why)))
            .filter(|(_, n)| *n > 0)
    }
}

/// One call or attempt as it ended: everything a recorder stores about it,
/// handed over at once.
#[derive(Debug, Clone, Copy)]
pub struct Ended<'a> {
    /// Scope, workload (as settled when it ended), method and server.
    pub dims: &'a Dimensions,
    /// `ok` or the failure.
    pub outcome: Outcome,
    /// The status code of the response head, if one came (for a call: the
    /// head it returned).
    pub status: Option<u16>,
    /// From the start to the end of the response body (or the failure).
    pub duration: Duration,
    /// From the start to the response head, if one came.
    pub time_to_head: Option<Duration>,
    /// From the start to the first body frame with data, if one came (time
    /// to first token, for a stream).
    pub time_to_first_frame: Option<Duration>,
    /// For the `calls()` scope: what the layers below wrote into the call's
    /// context.
    pub call: Option<&'a CallSummary>,
}

/// Receives the layer's events. Every started call or attempt gets exactly
/// one [`Recorder::finished`].
///
/// Implementations must be cheap and must not block: they run inside `poll`.
pub trait Recorder: Send + Sync + 'static {
    /// A call or attempt of `scope` started (in flight +1).
    fn started(&self, scope: Scope);

    /// It ended (in flight -1).
    fn finished(&self, ended: &Ended<'_>);
}

impl<T: Recorder + ?Sized> Recorder for Arc<T> {
    fn started(&self, scope: Scope) {
        (**self).started(scope);
    }
    fn finished(&self, ended: &Ended<'_>) {
        (**self).finished(ended);
    }
}

/// Two recorders at once (e.g. Prometheus for operators and a snapshot for a
/// report).
#[derive(Debug, Clone)]
pub struct Both<A, B>(pub A, pub B);

impl<A: Recorder, B: Recorder> Recorder for Both<A, B> {
    fn started(&self, scope: Scope) {
        self.0.started(scope);
        self.1.started(scope);
    }
    fn finished(&self, ended: &Ended<'_>) {
        self.0.finished(ended);
        self.1.finished(ended);
    }
}
