//! The outer response future: the wait for capacity (`ready`), then the
//! inner call, both under the call's deadline (`total`); and, when nothing
//! below makes attempts, the one attempt's `headers`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;
use sturdy_core::{
    BoxError, CallContext, DeadlineLimit, InvalidProfile, Phase, Profile, Reach, TimeoutError,
    Workload,
};
use tokio::time::{Instant, Sleep, sleep_until};
use tower_service::Service;

use crate::body::{BodyLimits, TimeoutBody};
use crate::grpc::{is_expiry_answer, timeout_error};

/// What the future enforces, fixed when the call is made.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) workload: Workload,
    pub(crate) profile: Profile,
    /// When the call was made: the `ready` and `headers` limits count from
    /// it, and are added to it only when a wait needs them.
    pub(crate) start: Instant,
    pub(crate) deadline: Instant,
    pub(crate) deadline_limit: DeadlineLimit,
    pub(crate) grpc: bool,
}

impl Limits {
    fn error(&self, phase: Phase, reach: Reach) -> BoxError {
        let w = self.workload;
        let err = match phase {
            Phase::Ready => TimeoutError::new(phase, self.profile.ready, reach).with_workload(w),
            Phase::Headers => {
                TimeoutError::new(phase, self.profile.headers, reach).with_workload(w)
            }
            _ => self.deadline_limit.error(reach, Some(w)),
        };
        timeout_error(err, self.grpc)
    }

    /// What a wait for the response head is bounded by, given what the
    /// layers below said they enforce (read when the wait starts, and again
    /// when a `headers` limit comes, for layers behind a queue): nothing
    /// more when an attempt timeout below enforces the deadline on every
    /// attempt; the deadline when a retry layer below makes attempts (a
    /// `headers` limit across attempts would be wrong); else, the call
    /// being one attempt, `headers` too.
    fn head_wait(&self, ctx: &CallContext) -> Option<(Instant, Phase)> {
        if ctx.phases_enforced() {
            None
        } else {
            let headers_at = sturdy_core::clock::later(self.start, self.profile.headers);
            if ctx.attempts_managed() || self.deadline <= headers_at {
                Some((self.deadline, Phase::Total))
            } else {
                Some((headers_at, Phase::Headers))
            }
        }
    }

    /// What the response body is bounded by, by the same rule.
    fn body(&self, ctx: &CallContext) -> BodyLimits {
        if ctx.phases_enforced() {
            return BodyLimits::none();
        }
        BodyLimits {
            read: (!ctx.attempts_managed()).then_some(self.profile.read),
            deadline: Some(self.deadline),
            deadline_limit: self.deadline_limit,
            workload: Some(self.workload),
            grpc: self.grpc,
        }
    }
}

pin_project! {
    /// The response future of [`WorkloadTimeout`](crate::WorkloadTimeout):
    /// waits, when it was not ready at once, for the inner service to be
    /// ready (under `ready`), calls it, and waits for the response head
    /// (under `total`, and `headers` when the call is one attempt).
    ///
    /// One timer at most, made only when the inner service or its future is
    /// not ready at once, moved from one limit to the next; none at all
    /// while an attempt timeout below enforces the deadline.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
        // Inline: set whenever this layer is used without an attempt
        // timeout below (on the first `Pending`, so nearly always), where
        // a box would be an allocation per call; in the `Stack` it is never
        // set and costs its bytes in the moves of the future.
        #[pin]
        sleep: Option<Sleep>,
        // What `sleep` is set for, once set.
        armed: Option<Phase>,
        limits: Option<Limits>,
        ctx: Option<CallContext>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        // Waiting for the inner service (not ready at `call`) to have
        // capacity. Boxed: the service and the request are large, and
        // this rare state would otherwise size the future that every call
        // moves through the layers above.
        Ready { waiting: Box<(S, Option<Req>)> },
        // The inner service has the request.
        Called { #[pin] fut: S::Future },
        // The inner service failed its `poll_ready` when the call was made.
        Failed { err: Option<S::Error> },
        // A per-request profile with a zero phase.
        Invalid { err: Option<InvalidProfile> },
        Done,
    }
}

impl<S: Service<Req>, Req> ResponseFuture<S, Req> {
    fn with(state: State<S, Req>, limits: Option<Limits>, ctx: Option<CallContext>) -> Self {
        ResponseFuture {
            state,
            sleep: None,
            armed: None,
            limits,
            ctx,
        }
    }

    pub(crate) fn new(svc: S, req: Req, limits: Limits, ctx: CallContext) -> Self {
        let waiting = Box::new((svc, Some(req)));
        Self::with(State::Ready { waiting }, Some(limits), Some(ctx))
    }

    /// The inner service was ready at once and has the request.
    pub(crate) fn called(fut: S::Future, limits: Limits, ctx: CallContext) -> Self {
        Self::with(State::Called { fut }, Some(limits), Some(ctx))
    }

    /// The inner service's `poll_ready` failed when the call was made.
    pub(crate) fn failed(err: S::Error, limits: Limits, ctx: CallContext) -> Self {
        Self::with(State::Failed { err: Some(err) }, Some(limits), Some(ctx))
    }

    pub(crate) fn invalid(err: InvalidProfile) -> Self {
        Self::with(State::Invalid { err: Some(err) }, None, None)
    }
}

impl<S, Req, ResB> Future for ResponseFuture<S, Req>
where
    S: Service<Req, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<TimeoutBody<ResB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let (Some(limits), Some(ctx)) = (this.limits.as_ref(), this.ctx.as_ref()) else {
            return Poll::Ready(Err(match this.state.as_mut().project() {
                StateProj::Invalid { err } => match err.take() {
                    Some(e) => Box::new(e),
                    None => polled_after_completion(),
                },
                _ => polled_after_completion(),
            }));
        };
        loop {
            match this.state.as_mut().project() {
                StateProj::Ready { waiting } => match waiting.0.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        let Some(req) = waiting.1.take() else {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(polled_after_completion()));
                        };
                        let fut = waiting.0.call(req);
                        this.state.set(State::Called { fut });
                        // The next wait is the head's, bounded otherwise.
                        this.sleep.set(None);
                        *this.armed = None;
                    }
                    Poll::Ready(Err(e)) => {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(e.into()));
                    }
                    Poll::Pending => {
                        if this.armed.is_none() {
                            let ready_at =
                                sturdy_core::clock::later(limits.start, limits.profile.ready);
                            let (at, phase) = if ready_at < limits.deadline {
                                (ready_at, Phase::Ready)
                            } else {
                                (limits.deadline, Phase::Total)
                            };
                            *this.armed = Some(phase);
                            this.sleep.set(Some(sleep_until(at)));
                        }
                        if let Some(sleep) = this.sleep.as_mut().as_pin_mut() {
                            ready!(sleep.poll(cx));
                        }
                        let phase = this.armed.unwrap_or(Phase::Total);
                        this.state.set(State::Done);
                        return Poll::Ready(Err(limits.error(phase, Reach::NotSent)));
                    }
                },
                StateProj::Called { fut } => {
                    // The answer is bound where the inner poll left it and
                    // wrapped straight into this layer's answer.
                    match fut.poll(cx) {
                        Poll::Ready(Ok(res)) => {
                            this.state.set(State::Done);
                            // A server enforcing the same limit answered as
                            // it fired: the limit is this layer's.
                            if limits.grpc
                                && let Some((at, phase)) = limits.head_wait(ctx)
                                && is_expiry_answer(res.headers(), at)
                            {
                                return Poll::Ready(Err(limits.error(phase, Reach::Acknowledged)));
                            }
                            let body = limits.body(ctx);
                            return Poll::Ready(Ok(res.map(|b| TimeoutBody::new(b, body))));
                        }
                        Poll::Ready(Err(e)) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(e.into()));
                        }
                        Poll::Pending => {}
                    }
                    loop {
                        if this.armed.is_none() {
                            let Some((at, phase)) = limits.head_wait(ctx) else {
                                return Poll::Pending;
                            };
                            *this.armed = Some(phase);
                            match this.sleep.as_mut().as_pin_mut() {
                                Some(sleep) => sleep.reset(at),
                                None => this.sleep.set(Some(sleep_until(at))),
                            }
                        }
                        if let Some(sleep) = this.sleep.as_mut().as_pin_mut() {
                            ready!(sleep.poll(cx));
                        }
                        let phase = this.armed.unwrap_or(Phase::Total);
                        // A `headers` limit is this layer's only while
                        // nothing below makes attempts; look again, for
                        // layers that a queue reached late.
                        if phase == Phase::Headers
                            && limits.head_wait(ctx).map(|w| w.1) != Some(phase)
                        {
                            *this.armed = None;
                            continue;
                        }
                        this.state.set(State::Done);
                        return Poll::Ready(Err(limits.error(phase, Reach::Unknown)));
                    }
                }
                StateProj::Failed { err } => {
                    let err = err.take();
                    this.state.set(State::Done);
                    return Poll::Ready(Err(match err {
                        Some(e) => e.into(),
                        None => polled_after_completion(),
                    }));
                }
                StateProj::Invalid { .. } | StateProj::Done => {
                    return Poll::Ready(Err(polled_after_completion()));
                }
            }
        }
    }
}

fn polled_after_completion() -> BoxError {
    "polled after completion".into()
}

impl<S: Service<Req>, Req> fmt::Debug for ResponseFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Ready { .. } => "ready",
            State::Called { .. } => "called",
            State::Failed { .. } => "failed",
            State::Invalid { .. } => "invalid",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("limits", &self.limits)
            .finish()
    }
}
