//! One started call or attempt, from `call` to its single recorded outcome.
//!
//! A `Flight` is created when the layer's `call` has handed the request to
//! the inner service, travels in the response future and then in the
//! response body, and records exactly one outcome: explicitly through
//! [`Flight::finish`], or — when the caller drops the future or the body
//! first — as `cancelled` from its `Drop`, with the reach it had got to.

use std::fmt;
use std::sync::Arc;

use sturdy_core::{CallContext, FailureKind, Reach};
use tokio::time::Instant;

use crate::layer::Shared;
use crate::{CallSummary, Dimensions, Outcome, Recorder};

pub(crate) struct Flight<R: Recorder> {
    shared: Arc<Shared<R>>,
    dims: Dimensions,
    start: Instant,
    /// The call's record, read when a `calls()` flight ends.
    ctx: Option<CallContext>,
    /// The reach a cancellation would have: `NotSent` until the inner future
    /// is first polled (hyper-util's and tonic's futures send nothing before
    /// that), `Unknown` after, `Acknowledged` once a head arrived.
    reach: Reach,
    first_frame_seen: bool,
    done: bool,
}

impl<R: Recorder> Flight<R> {
    pub(crate) fn start(
        shared: Arc<Shared<R>>,
        dims: Dimensions,
        ctx: Option<CallContext>,
    ) -> Self {
        shared.recorder.started(&dims);
        Flight {
            shared,
            dims,
            start: Instant::now(),
            ctx,
            reach: Reach::NotSent,
            first_frame_seen: false,
            done: false,
        }
    }

    /// The inner future has been polled: the request may be on its way.
    pub(crate) fn polled(&mut self) {
        if self.reach == Reach::NotSent {
            self.reach = Reach::Unknown;
        }
    }

    /// The response head arrived.
    pub(crate) fn head(&mut self) {
        self.reach = Reach::Acknowledged;
        self.shared.recorder.head(&self.dims, self.start.elapsed());
    }

    /// A data frame of the response body arrived.
    pub(crate) fn data_frame(&mut self) {
        if !self.first_frame_seen {
            self.first_frame_seen = true;
            self.shared
                .recorder
                .first_frame(&self.dims, self.start.elapsed());
        }
    }

    /// Whether the outcome has been recorded.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Records the outcome; later calls do nothing.
    pub(crate) fn finish(&mut self, outcome: Outcome) {
        if self.done {
            return;
        }
        self.done = true;
        let elapsed = self.start.elapsed();
        let recorder = &self.shared.recorder;
        if let Some(ctx) = &self.ctx {
            recorder.call_summary(self.dims.workload, &CallSummary::from_context(ctx));
        }
        recorder.finished(&self.dims, outcome, elapsed);
        // Labels only: never a header value, a path or a query.
        tracing::trace!(
            scope = self.dims.scope.label(),
            workload = self.dims.workload.label(),
            method = self.dims.method.as_str(),
            server = self.dims.server.as_str(),
            outcome = outcome.label(),
            reach = outcome.reach().label(),
            elapsed_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            "sturdy-metrics outcome"
        );
    }
}

impl<R: Recorder> Drop for Flight<R> {
    fn drop(&mut self) {
        if !self.done {
            self.finish(Outcome::Failed(FailureKind::Cancelled(self.reach)));
        }
    }
}

impl<R: Recorder> fmt::Debug for Flight<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flight")
            .field("dims", &self.dims)
            .field("elapsed", &self.start.elapsed())
            .field("reach", &self.reach)
            .field("done", &self.done)
            .finish()
    }
}
