//! One started call or attempt, from `call` to its single recorded outcome.
//!
//! A `Flight` is created when the layer's `call` has handed the request to
//! the inner service, travels in the response future and then in the
//! response body, and records exactly one outcome: explicitly through
//! [`Flight::finish`], or — when the caller drops the future or the body
//! first — as `cancelled` from its `Drop`, with the reach it had got to.
//!
//! It records once, at its end, with everything: the workload is read from
//! the call's context then (so a queue between this layer and the one that
//! settles the workload cannot change the label), and the times to the head
//! and to the first frame are kept until then.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sturdy_core::{CallContext, Classifier, FailureKind, Reach, StreamWatch, Workload, clock};
use tokio::time::Instant;
use tracing::Span;

use crate::layer::Shared;
use crate::{CallSummary, Dimensions, Ended, MethodLabel, Outcome, Recorder, Scope, ServerAddress};

pub(crate) struct Flight<R: Recorder> {
    shared: Arc<Shared<R>>,
    method: MethodLabel,
    server: ServerAddress,
    /// The workload when the context has none at the end: the caller's
    /// `Workload` extension, else the default.
    workload: Workload,
    /// The call's record: always for `calls()`, which creates it; for
    /// `attempts()` when a layer above did.
    ctx: Option<CallContext>,
    /// Whether the call is gRPC: its answers end with a `grpc-status`.
    pub(crate) grpc: bool,
    start: Instant,
    head: Option<Duration>,
    /// The status of the response head, once it came.
    status: Option<u16>,
    first_frame: Option<Duration>,
    /// The reach a cancellation would have: `NotSent` until the inner future
    /// is first polled (hyper-util's and tonic's futures send nothing before
    /// that), `Unknown` after, `Acknowledged` once a head arrived.
    reach: Reach,
    /// A failure already known before the end (a failure head whose body
    /// is still read, an error event in a stream): a drop records it
    /// rather than `cancelled`.
    known: Option<FailureKind>,
    done: bool,
    /// The call's or attempt's span: entered while the inner future and
    /// the body are polled, filled in as it goes, dropped with the flight.
    span: Span,
}

impl<R: Recorder> Flight<R> {
    pub(crate) fn start(
        shared: Arc<Shared<R>>,
        method: MethodLabel,
        server: ServerAddress,
        workload: Workload,
        ctx: Option<CallContext>,
        grpc: bool,
        span: Span,
    ) -> Self {
        shared.recorder.started(shared.scope);
        Flight {
            shared,
            method,
            server,
            workload,
            ctx,
            grpc,
            start: clock::now(),
            head: None,
            status: None,
            first_frame: None,
            reach: Reach::NotSent,
            known: None,
            done: false,
            span,
        }
    }

    /// The scope this flight records.
    pub(crate) fn scope(&self) -> Scope {
        self.shared.scope
    }

    /// The call's record when this flight is an attempt's: where what the
    /// attempt's event stream said is written for the calls scope.
    pub(crate) fn attempt_ctx(&self) -> Option<&CallContext> {
        self.ctx.as_ref().filter(|_| self.scope() == Scope::Attempt)
    }

    /// What the attempts scope below saw of the latest attempt's event
    /// stream, if one reads it.
    pub(crate) fn stream_below(&self) -> Option<StreamWatch> {
        self.ctx.as_ref().and_then(CallContext::stream_watch)
    }

    /// The call's or attempt's span.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// The classifier this call's answers are judged with.
    pub(crate) fn classifier(&self) -> &Classifier {
        static TABLES: Classifier = Classifier::tables();
        self.ctx.as_ref().map_or(&TABLES, CallContext::classifier)
    }

    /// The inner future has been polled: the request may be on its way.
    pub(crate) fn polled(&mut self) {
        if self.reach == Reach::NotSent {
            self.reach = Reach::Unknown;
        }
    }

    /// The time since the start, by the current step's clock reading
    /// ([`clock`]): the two scopes, seeing a head or an end in the same
    /// poll, read the clock once between them.
    fn elapsed(&self) -> Duration {
        clock::now().saturating_duration_since(self.start)
    }

    /// The response head arrived, with `status`.
    pub(crate) fn head(&mut self, status: http::StatusCode) {
        self.reach = Reach::Acknowledged;
        self.status = Some(status.as_u16());
        self.head = Some(self.elapsed());
        crate::span::record_status(&self.span, status);
    }

    /// A data frame of the response body arrived; `last` when it ends the
    /// body, which then ends at the same instant.
    pub(crate) fn data_frame(&mut self, last: bool) -> Option<Duration> {
        if self.first_frame.is_some() {
            return None;
        }
        let at = self.elapsed();
        self.first_frame = Some(at);
        last.then_some(at)
    }

    /// A failure known before the end.
    pub(crate) fn know(&mut self, kind: FailureKind) {
        self.known = Some(kind);
    }

    /// The failure known before the end, if any.
    pub(crate) fn known(&self) -> Option<FailureKind> {
        self.known
    }

    /// Whether the outcome has been recorded.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Records the outcome; later calls do nothing.
    pub(crate) fn finish(&mut self, outcome: Outcome) {
        self.finish_at(outcome, None);
    }

    /// Records the outcome, at `at` when the caller has just read the
    /// clock; later calls do nothing.
    pub(crate) fn finish_at(&mut self, outcome: Outcome, at: Option<Duration>) {
        if self.done {
            return;
        }
        self.done = true;
        let duration = at.unwrap_or_else(|| self.elapsed());
        let dims = Dimensions {
            scope: self.shared.scope,
            workload: self
                .ctx
                .as_ref()
                .and_then(CallContext::workload)
                .unwrap_or(self.workload),
            method: self.method.clone(),
            server: self.server.clone(),
        };
        let summary = match (dims.scope, &self.ctx) {
            (Scope::Call, Some(ctx)) => Some(CallSummary::from_context(ctx)),
            _ => None,
        };
        self.shared.recorder.finished(&Ended {
            dims: &dims,
            outcome,
            status: self.status,
            duration,
            time_to_head: self.head,
            time_to_first_frame: self.first_frame,
            call: summary.as_ref(),
        });
        let attempts = match dims.scope {
            Scope::Call => Some(summary.as_ref().map_or(1, |s| s.attempts)),
            Scope::Attempt => None,
        };
        crate::span::record_end(&self.span, outcome, dims.workload, attempts);
        // Labels only: never a header value, a path or a query; inside the
        // span it ends.
        let _entered = self.span.enter();
        tracing::trace!(
            scope = dims.scope.label(),
            workload = dims.workload.label(),
            method = dims.method.as_str(),
            server = dims.server.as_str(),
            outcome = outcome.label(),
            reach = outcome.reach().label(),
            elapsed_us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
            "sturdy-metrics outcome"
        );
    }
}

impl<R: Recorder> Drop for Flight<R> {
    fn drop(&mut self) {
        if !self.done {
            let kind = self.known.unwrap_or(FailureKind::Cancelled(self.reach));
            self.finish(Outcome::Failed(kind));
        }
    }
}

impl<R: Recorder> fmt::Debug for Flight<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flight")
            .field("scope", &self.shared.scope)
            .field("method", &self.method)
            .field("server", &self.server)
            .field("elapsed", &self.start.elapsed())
            .field("reach", &self.reach)
            .field("done", &self.done)
            .finish()
    }
}
