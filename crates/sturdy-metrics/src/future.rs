//! [`ResponseFuture`]: waits for the inner response; records an error, or a
//! head that fails classification, at once; otherwise hands the flight to
//! the body, which records the outcome at its end.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use sturdy_core::{BoxError, GrpcCode, is_grpc_answer};

use crate::flight::Flight;
use crate::{MetricsBody, Outcome, Recorder};

pin_project_lite::pin_project! {
    /// The response future of [`FailureMetrics`](crate::FailureMetrics).
    ///
    /// Dropped before the inner future resolved, it records `cancelled`:
    /// with reach `not_sent` when it was never polled (the inner client
    /// sends nothing before its first poll), `unknown` otherwise.
    pub struct ResponseFuture<F, R: Recorder> {
        #[pin]
        inner: F,
        flight: Option<Flight<R>>,
    }
}

impl<F, R: Recorder> ResponseFuture<F, R> {
    pub(crate) fn new(inner: F, flight: Flight<R>) -> Self {
        ResponseFuture {
            inner,
            flight: Some(flight),
        }
    }
}

impl<F, E, ResB, R> Future for ResponseFuture<F, R>
where
    F: Future<Output = Result<http::Response<ResB>, E>>,
    E: Into<BoxError>,
    ResB: http_body::Body,
    R: Recorder,
{
    type Output = Result<http::Response<MetricsBody<ResB, R>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(flight) = this.flight.as_mut() else {
            // Polled after completion: the outcome is already recorded, and
            // the inner future must not be polled again.
            return Poll::Ready(Err(
                "sturdy-metrics: response future polled after completion".into(),
            ));
        };
        flight.polled();
        let result = ready!(this.inner.poll(cx));
        // Taken now: whatever happens next, this future records no more.
        let mut flight = this.flight.take();
        match result {
            Err(e) => {
                let e: BoxError = e.into();
                if let Some(flight) = flight.as_mut() {
                    let judged = flight.classifier().judge_error(&*e);
                    let kind = judged.failure.unwrap_or(sturdy_core::FailureKind::Other);
                    flight.finish(Outcome::Failed(kind));
                }
                Poll::Ready(Err(e))
            }
            Ok(res) => {
                let (parts, body) = res.into_parts();
                // A gRPC answer ends with its grpc-status: the head's (a
                // Trailers-Only answer) unless the trailers bring one.
                let grpc = flight
                    .as_ref()
                    .is_some_and(|f| f.grpc && is_grpc_answer(parts.status, &parts.headers))
                    .then(|| GrpcCode::from_headers(&parts.headers));
                if let Some(flight) = flight.as_mut() {
                    flight.head();
                    let judged = flight.classifier().judge_response(
                        parts.status,
                        &parts.headers,
                        flight.grpc,
                    );
                    if let Some(kind) = judged.failure {
                        flight.finish(Outcome::Failed(kind));
                    }
                }
                // A flight already finished at the head records nothing
                // more from the body.
                let flight = flight.filter(|f| !f.is_done());
                let body = MetricsBody::new(body, flight, grpc);
                Poll::Ready(Ok(http::Response::from_parts(parts, body)))
            }
        }
    }
}

impl<F, R: Recorder> fmt::Debug for ResponseFuture<F, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("flight", &self.flight)
            .finish_non_exhaustive()
    }
}
