//! The response future of [`AdaptiveConcurrency`](super::AdaptiveConcurrency)
//! and the permit a request holds until its answer is over.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::Response;
use http_body::Body;
use sturdy_core::{BoxError, CallContext, Classifier, classify_error};

use super::body::{AdaptiveBody, Watch};
use super::is_overload;
use super::state::{Seq, Shared, Signal};

/// One request's place under the limit, from `call` until its answer is
/// over: given back once, with what the answer said, when it is settled or
/// dropped (a dropped permit reports what its watch makes of a drop).
pub(crate) struct Permit {
    shared: Arc<Shared>,
    seq: Seq,
    /// What the head said (before the body has its word); a cancellation
    /// until there is a head.
    pub(crate) head: Signal,
    pub(crate) watch: Watch,
    /// The call's record and which of its attempts this is (when the
    /// request carries a plan): told when its overload leaves the limit
    /// full, so that its retry waits for a permit instead of a backoff.
    attempt: Option<(CallContext, u32)>,
    settled: bool,
}

impl Permit {
    pub(crate) fn new(
        shared: Arc<Shared>,
        seq: Seq,
        attempt: Option<(CallContext, u32)>,
    ) -> Permit {
        Permit {
            shared,
            seq,
            head: Signal::Neutral,
            watch: Watch::Plain,
            attempt,
            settled: false,
        }
    }

    /// Gives the permit back with `signal` (once).
    pub(crate) fn settle(&mut self, signal: Signal) {
        if !self.settled {
            self.settled = true;
            if self.shared.release(self.seq, signal)
                && let Some((ctx, attempt)) = &self.attempt
            {
                ctx.record_overload_queued(*attempt);
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.settled {
            let signal = self.watch.dropped(self.head);
            self.settle(signal);
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`AdaptiveConcurrency`](super::AdaptiveConcurrency):
    /// the inner future, holding the request's permit. An error gives the
    /// permit back at once (a timeout after the request was sent counts as
    /// overload); a response hands it to its [`AdaptiveBody`]; dropped
    /// before either, it gives the permit back and says nothing.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        permit: Option<Permit>,
        classifier: Classifier,
        grpc: bool,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, permit: Permit, classifier: Classifier, grpc: bool) -> Self {
        ResponseFuture {
            inner,
            permit: Some(permit),
            classifier,
            grpc,
        }
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
    RB: Body,
    RB::Error: Into<BoxError>,
{
    type Output = Result<Response<AdaptiveBody<RB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match ready!(this.inner.poll(cx)) {
            Ok(resp) => {
                let judged =
                    this.classifier
                        .judge_response(resp.status(), resp.headers(), *this.grpc);
                let (parts, body) = resp.into_parts();
                let body = AdaptiveBody::new(body, this.permit.take(), &parts, &judged);
                Poll::Ready(Ok(Response::from_parts(parts, body)))
            }
            Err(e) => {
                let e: BoxError = e.into();
                if let Some(mut permit) = this.permit.take() {
                    let signal = if is_overload(&classify_error(&*e)) {
                        Signal::Overload
                    } else {
                        Signal::Neutral
                    };
                    permit.settle(signal);
                }
                Poll::Ready(Err(e))
            }
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("holds_permit", &self.permit.is_some())
            .finish_non_exhaustive()
    }
}
