//! The attempt's response future: the wait for the response head under
//! `headers` (or the deadline).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use hyper_util::client::legacy::connect::CaptureConnection;
use pin_project_lite::pin_project;
use sturdy_core::{BoxError, CallContext, InvalidProfile, Phase, Reach, TimeoutError};
use tokio::time::{Instant, Sleep, sleep_until};

use super::service::AttemptLimits;
use crate::TimeoutBody;
use crate::grpc::{is_expiry_answer, is_tonic_timeout, timeout_error};

pin_project! {
    /// The response future of [`AttemptTimeout`](crate::AttemptTimeout): the
    /// inner future under the attempt's `headers` limit (or the deadline,
    /// whichever comes first). Its timer is made only if the inner future is
    /// not ready at once.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
        #[pin]
        sleep: Option<Sleep>,
    }
}

/// How a timeout learns whether anything was sent.
pub(crate) enum Sent {
    /// The retry layer's request body records when a connection takes up
    /// this attempt (number `.1`).
    Tracked(CallContext, u32),
    /// hyper-util reports the connection as soon as it has one.
    Captured(CaptureConnection),
    /// Nothing tells.
    Unknown,
}

impl Sent {
    /// How far an attempt got whose response head has not come.
    fn reach(&self) -> Reach {
        match self {
            Sent::Tracked(ctx, attempt) if ctx.was_sending(*attempt) == Some(false) => {
                Reach::NotSent
            }
            Sent::Captured(c) if c.connection_metadata().is_none() => Reach::NotSent,
            _ => Reach::Unknown,
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called {
            #[pin]
            fut: F,
            headers_at: Instant,
            by_deadline: bool,
            limits: AttemptLimits,
            sent: Sent,
        },
        Invalid { err: Option<InvalidProfile> },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(
        fut: F,
        headers_at: Instant,
        by_deadline: bool,
        limits: AttemptLimits,
        sent: Sent,
    ) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                fut,
                headers_at,
                by_deadline,
                limits,
                sent,
            },
            sleep: None,
        }
    }

    pub(crate) fn invalid(err: InvalidProfile) -> Self {
        ResponseFuture {
            kind: Kind::Invalid { err: Some(err) },
            sleep: None,
        }
    }
}

impl<F, ResB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<TimeoutBody<ResB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let (fut, headers_at, by_deadline, limits, sent) = match this.kind.project() {
            KindProj::Called {
                fut,
                headers_at,
                by_deadline,
                limits,
                sent,
            } => (fut, *headers_at, *by_deadline, *limits, sent),
            KindProj::Invalid { err } => {
                return Poll::Ready(Err(match err.take() {
                    Some(e) => Box::new(e),
                    None => "polled after completion".into(),
                }));
            }
        };
        let fired = match fut.poll(cx) {
            // A server enforcing the grpc-timeout this layer set answered as
            // it fired: the same limit, reported as this layer's own.
            Poll::Ready(Ok(res)) if limits.grpc && is_expiry_answer(res.headers(), headers_at) => {
                Some(Reach::Acknowledged)
            }
            Poll::Ready(Ok(res)) => {
                return Poll::Ready(Ok(res.map(|b| TimeoutBody::new(b, limits.body()))));
            }
            Poll::Ready(Err(e)) => {
                let e = e.into();
                if !is_tonic_timeout(&e) {
                    return Poll::Ready(Err(e));
                }
                // tonic's Channel enforced the grpc-timeout this layer set:
                // the same limit, reported as this layer's own.
                Some(sent.reach())
            }
            Poll::Pending => None,
        };
        if fired.is_none() {
            if this.sleep.is_none() {
                this.sleep.set(Some(sleep_until(headers_at)));
            }
            if let Some(sleep) = this.sleep.as_mut().as_pin_mut() {
                ready!(sleep.poll(cx));
            }
        }
        let reach = fired.unwrap_or_else(|| sent.reach());
        let err = if by_deadline {
            limits.deadline_limit.error(reach, limits.workload)
        } else {
            let err = TimeoutError::new(Phase::Headers, limits.headers, reach);
            match limits.workload {
                Some(w) => err.with_workload(w),
                None => err,
            }
        };
        Poll::Ready(Err(timeout_error(err, limits.grpc)))
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Called { limits, .. } => f
                .debug_struct("ResponseFuture")
                .field("limits", limits)
                .finish(),
            Kind::Invalid { err } => f
                .debug_struct("ResponseFuture")
                .field("invalid", err)
                .finish(),
        }
    }
}
