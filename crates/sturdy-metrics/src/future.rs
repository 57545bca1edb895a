//! [`ResponseFuture`]: waits for the inner response; records an error, or a
//! head that fails classification, at once; otherwise hands the flight to
//! the body, which records the outcome at its end.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use sturdy_core::{
    BodyVerdict, BoxError, GrpcCode, MAX_ERROR_BODY, is_event_stream, is_grpc_answer,
};

use crate::body::Watch;
use crate::flight::Flight;
use crate::{MetricsBody, Outcome, Recorder, Scope};

pin_project_lite::pin_project! {
    /// The response future of [`FailureMetrics`](crate::FailureMetrics).
    ///
    /// Dropped before the inner future resolved, it records `cancelled`:
    /// with reach `not_sent` when it was never polled (the inner client
    /// sends nothing before its first poll), `unknown` otherwise.
    pub struct ResponseFuture<F, R: Recorder> {
        #[pin]
        inner: F,
        // Boxed, here and in the body: the flight (160 bytes) would
        // otherwise be moved with the future and then the response by
        // every layer above and by the caller, several times each; in the
        // `Stack` one allocation per flight costs fewer instructions than
        // those moves (BENCHMARKS.md).
        flight: Option<Box<Flight<R>>>,
    }
}

impl<F, R: Recorder> ResponseFuture<F, R> {
    #[inline(always)]
    pub(crate) fn new(inner: F, flight: Box<Flight<R>>) -> Self {
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
        // One clock step: a head seen by both scopes in this poll is timed
        // by one reading.
        let _step = sturdy_core::clock::step();
        let this = self.project();
        let Some(flight) = this.flight.as_mut() else {
            // Polled after completion: the outcome is already recorded, and
            // the inner future must not be polled again.
            return Poll::Ready(Err(
                "sturdy-metrics: response future polled after completion".into(),
            ));
        };
        flight.polled();
        let result = {
            // Inner layers' spans and events nest in this one.
            let _entered = flight.span().enter();
            ready!(this.inner.poll(cx))
        };
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
                let watch = match flight.as_mut() {
                    Some(flight) => {
                        flight.head(parts.status);
                        judge_head(flight, &parts, &body)
                    }
                    None => Watch::Plain,
                };
                // A flight already finished at the head records nothing
                // more from the body.
                let flight = flight.filter(|f| !f.is_done());
                let body = MetricsBody::new(body, flight, watch);
                Poll::Ready(Ok(http::Response::from_parts(parts, body)))
            }
        }
    }
}

/// Judges a response head: a failure is recorded at once, unless its small
/// error body may still change the verdict (then the body is watched); a
/// success is watched to its end (for gRPC, its status; for server-sent
/// events, an error object). A verdict the retry layer below read from the
/// body stands.
fn judge_head<R: Recorder, B: http_body::Body>(
    flight: &mut Flight<R>,
    parts: &http::response::Parts,
    body: &B,
) -> Watch {
    if let Some(ctx) = flight.attempt_ctx()
        && ctx.stream_watch().is_some()
    {
        // Nothing an earlier attempt's stream said stands for this one.
        ctx.watch_stream(false);
    }
    if let Some(BodyVerdict(kind)) = parts.extensions.get::<BodyVerdict>() {
        flight.finish(Outcome::Failed(*kind));
        return Watch::Plain;
    }
    let judged = flight
        .classifier()
        .judge_response(parts.status, &parts.headers, flight.grpc);
    if let Some(kind) = judged.failure {
        let small = body
            .size_hint()
            .exact()
            .is_some_and(|n| n <= MAX_ERROR_BODY);
        if judged.awaits_body() && small && !body.is_end_stream() {
            flight.know(kind);
            return Watch::ErrorBody(Box::new((judged, Vec::new())));
        }
        flight.finish(Outcome::Failed(kind));
        return Watch::Plain;
    }
    // A gRPC answer ends with its grpc-status: the head's (a Trailers-Only
    // answer) unless the trailers bring one.
    if flight.grpc && is_grpc_answer(parts.status, &parts.headers) {
        return Watch::Grpc(GrpcCode::from_headers(&parts.headers));
    }
    if is_event_stream(&parts.headers) {
        return watch_events(flight);
    }
    Watch::Plain
}

/// How a scope reads an event stream: an attempt's, itself (and says so in
/// the call's context); the call's, from the attempts scope below when one
/// reads it (the call's answer is its last attempt's), else itself.
#[inline(never)]
fn watch_events<R: Recorder>(flight: &Flight<R>) -> Watch {
    if let Some(ctx) = flight.attempt_ctx() {
        ctx.watch_stream(true);
    } else if flight.scope() == Scope::Call && flight.stream_below().is_some() {
        return Watch::Below;
    }
    Watch::Events(Box::default())
}

impl<F, R: Recorder> fmt::Debug for ResponseFuture<F, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("flight", &self.flight)
            .finish_non_exhaustive()
    }
}
