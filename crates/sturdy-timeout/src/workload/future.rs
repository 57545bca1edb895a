//! The outer response future: the wait for capacity (`ready`), then the
//! inner call, both under the call's deadline (`total`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::Response;
use pin_project_lite::pin_project;
use sturdy_core::{BoxError, InvalidProfile, Phase, Reach, TimeoutError, Workload};
use tokio::time::{Instant, Sleep, sleep_until};
use tower_service::Service;

use super::TotalBody;
use crate::grpc::timeout_error;

/// What the future enforces, fixed when the call is made.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) workload: Workload,
    pub(crate) ready: Duration,
    pub(crate) ready_at: Instant,
    pub(crate) total: Duration,
    pub(crate) deadline: Instant,
    pub(crate) grpc: bool,
}

impl Limits {
    fn error(&self, phase: Phase, reach: Reach) -> BoxError {
        let limit = match phase {
            Phase::Ready => self.ready,
            _ => self.total,
        };
        timeout_error(
            TimeoutError::new(phase, limit, reach).with_workload(self.workload),
            self.grpc,
        )
    }
}

pin_project! {
    /// The response future of [`WorkloadTimeout`](crate::WorkloadTimeout):
    /// waits, when it was not ready at once, for the inner service to be
    /// ready (under `ready`), calls it, and waits for the response head
    /// (under `total`).
    ///
    /// One timer at most, made only when the inner service or its future is
    /// not ready at once, and moved from the `ready` to the `total` instant.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
        #[pin]
        sleep: Option<Sleep>,
        // Whether `sleep` is set for the ready phase (else for the deadline).
        sleep_for_ready: bool,
        limits: Option<Limits>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        // Waiting for the inner service (not ready at `call`) to have capacity.
        Ready { svc: S, req: Option<Req> },
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
    pub(crate) fn new(svc: S, req: Req, limits: Limits) -> Self {
        ResponseFuture {
            state: State::Ready {
                svc,
                req: Some(req),
            },
            sleep: None,
            sleep_for_ready: false,
            limits: Some(limits),
        }
    }

    /// The inner service was ready at once and has the request.
    pub(crate) fn called(fut: S::Future, limits: Limits) -> Self {
        ResponseFuture {
            state: State::Called { fut },
            sleep: None,
            sleep_for_ready: false,
            limits: Some(limits),
        }
    }

    /// The inner service's `poll_ready` failed when the call was made.
    pub(crate) fn failed(err: S::Error, limits: Limits) -> Self {
        ResponseFuture {
            state: State::Failed { err: Some(err) },
            sleep: None,
            sleep_for_ready: false,
            limits: Some(limits),
        }
    }

    pub(crate) fn invalid(err: InvalidProfile) -> Self {
        ResponseFuture {
            state: State::Invalid { err: Some(err) },
            sleep: None,
            sleep_for_ready: false,
            limits: None,
        }
    }
}

impl<S, Req, ResB> Future for ResponseFuture<S, Req>
where
    S: Service<Req, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<TotalBody<ResB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(limits) = *this.limits else {
            return Poll::Ready(Err(match this.state.as_mut().project() {
                StateProj::Invalid { err } => match err.take() {
                    Some(e) => Box::new(e),
                    None => "polled after completion".into(),
                },
                _ => "polled after completion".into(),
            }));
        };
        loop {
            match this.state.as_mut().project() {
                StateProj::Ready { svc, req } => match svc.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        let Some(req) = req.take() else {
                            this.state.set(State::Done);
                            return Poll::Ready(Err("polled after completion".into()));
                        };
                        let fut = svc.call(req);
                        this.state.set(State::Called { fut });
                        if *this.sleep_for_ready {
                            *this.sleep_for_ready = false;
                            if let Some(sleep) = this.sleep.as_mut().as_pin_mut() {
                                sleep.reset(limits.deadline);
                            }
                        }
                    }
                    Poll::Ready(Err(e)) => {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(e.into()));
                    }
                    Poll::Pending => {
                        if this.sleep.is_none() {
                            *this.sleep_for_ready = limits.ready_at < limits.deadline;
                            let at = limits.ready_at.min(limits.deadline);
                            this.sleep.set(Some(sleep_until(at)));
                        }
                        if let Some(sleep) = this.sleep.as_mut().as_pin_mut() {
                            ready!(sleep.poll(cx));
                        }
                        let phase = if *this.sleep_for_ready {
                            Phase::Ready
                        } else {
                            Phase::Total
                        };
                        this.state.set(State::Done);
                        return Poll::Ready(Err(limits.error(phase, Reach::NotSent)));
                    }
                },
                StateProj::Called { fut } => {
                    match fut.poll(cx) {
                        Poll::Ready(result) => {
                            this.state.set(State::Done);
                            return Poll::Ready(match result {
                                Ok(res) => Ok(res.map(|body| {
                                    TotalBody::new(
                                        body,
                                        limits.deadline,
                                        limits.total,
                                        limits.workload,
                                        limits.grpc,
                                    )
                                })),
                                Err(e) => Err(e.into()),
                            });
                        }
                        Poll::Pending => {}
                    }
                    if this.sleep.is_none() {
                        this.sleep.set(Some(sleep_until(limits.deadline)));
                    }
                    if let Some(sleep) = this.sleep.as_mut().as_pin_mut() {
                        ready!(sleep.poll(cx));
                    }
                    this.state.set(State::Done);
                    return Poll::Ready(Err(limits.error(Phase::Total, Reach::Unknown)));
                }
                StateProj::Failed { err } => {
                    let err = err.take();
                    this.state.set(State::Done);
                    return Poll::Ready(Err(match err {
                        Some(e) => e.into(),
                        None => "polled after completion".into(),
                    }));
                }
                StateProj::Invalid { .. } | StateProj::Done => {
                    return Poll::Ready(Err("polled after completion".into()));
                }
            }
        }
    }
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
