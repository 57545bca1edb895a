//! [`MetricsBody`]: carries a call's flight to the end of its response body.
//! The end of the stream records `ok` (for gRPC, the `grpc-status` of the
//! trailers; for a failure whose small error body was watched, what the
//! body says; for server-sent events, the first error object an event
//! carried; a stream ends at its `data: [DONE]` line, where OpenAI
//! clients stop reading), an error records what `classify_body_error`
//! makes of it, and a body dropped before its end records `cancelled`
//! (acknowledged), or the failure already known.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use sturdy_core::{
    BoxError, FailureKind, GrpcCode, Judgement, MAX_ERROR_BODY, SseScan, classify_grpc_code,
};

use crate::flight::Flight;
use crate::{Outcome, Recorder};

/// What a body is watched for, beyond its end.
pub(crate) enum Watch {
    /// Nothing: its end is `ok`.
    Plain,
    /// A gRPC answer: its end is the `grpc-status` of the trailers, else of
    /// the head.
    Grpc(Option<GrpcCode>),
    /// A failure whose small error body may refine the head's verdict.
    /// Boxed: rare, and every response body of the layer carries a `Watch`
    /// (the body is moved whole through the layers above).
    ErrorBody(Box<(Judgement, Vec<u8>)>),
    /// A stream whose events may carry an error object.
    Events(Box<SseScan>),
    /// A call's event stream read by the attempts scope below, whose
    /// findings ([`StreamWatch`](sturdy_core::StreamWatch)) are the call's.
    Below,
}

pin_project_lite::pin_project! {
    /// The response body of [`FailureMetrics`](crate::FailureMetrics).
    /// Frames pass through unchanged; errors are boxed.
    pub struct MetricsBody<B, R: Recorder> {
        #[pin]
        inner: B,
        flight: Option<Box<Flight<R>>>,
        watch: Watch,
    }
}

impl<B: Body, R: Recorder> MetricsBody<B, R> {
    pub(crate) fn new(inner: B, mut flight: Option<Box<Flight<R>>>, watch: Watch) -> Self {
        // An empty body may never be polled: its end is now. Checked
        // before the body is built, so that it is built where it is
        // returned.
        if inner.is_end_stream() {
            end(&mut flight, &watch, None);
        }
        MetricsBody {
            inner,
            flight,
            watch,
        }
    }
}

/// Records the end of the body; `at` when the caller has just read the
/// clock (the last frame was also the first).
fn end<R: Recorder>(
    flight: &mut Option<Box<Flight<R>>>,
    watch: &Watch,
    at: Option<std::time::Duration>,
) {
    let Some(mut flight) = flight.take() else {
        return;
    };
    let failure = match watch {
        Watch::Plain => None,
        Watch::Below => flight.stream_below().and_then(|w| w.error),
        // A gRPC response without a status has failed (tonic says the same).
        Watch::Grpc(status) => classify_grpc_code(status.unwrap_or(GrpcCode::Unknown)).1,
        Watch::ErrorBody(e) => e.0.with_body(&e.1).failure,
        Watch::Events(scan) => {
            if let Some(ctx) = flight.attempt_ctx() {
                ctx.stream_ended();
            }
            scan.error()
        }
    };
    let outcome = match failure {
        Some(kind) => Outcome::Failed(kind),
        None => Outcome::Ok,
    };
    flight.finish_at(outcome, at);
}

impl<B, R> Body for MetricsBody<B, R>
where
    B: Body,
    B::Error: Into<BoxError>,
    R: Recorder,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        // One clock step: a frame or an end seen by both scopes in this
        // poll is timed by one reading.
        let _step = sturdy_core::clock::step();
        let mut this = self.project();
        let polled = {
            let _entered = this.flight.as_ref().map(|f| f.span().enter());
            this.inner.as_mut().poll_frame(cx)
        };
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                end(this.flight, this.watch, None);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                let e: BoxError = e.into();
                if let Some(mut flight) = this.flight.take() {
                    // What the stream said before it broke is the better
                    // account of its end.
                    let kind = flight.known().unwrap_or_else(|| {
                        let judged = flight.classifier().judge_body_error(&*e);
                        judged.failure.unwrap_or(FailureKind::ResponseBody)
                    });
                    flight.finish(Outcome::Failed(kind));
                }
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(flight) = this.flight.as_mut() {
                    let last = this.inner.is_end_stream();
                    let mut at = None;
                    if let Some(data) = frame.data_ref() {
                        if data.has_remaining() {
                            at = flight.data_frame(last);
                            if !matches!(this.watch, Watch::Plain) {
                                watch_data(this.watch, flight, data.chunk());
                            }
                        }
                    } else if let (Watch::Grpc(status), Some(code)) = (
                        &mut *this.watch,
                        frame.trailers_ref().and_then(GrpcCode::from_headers),
                    ) {
                        *status = Some(code);
                    }
                    // A stream that said `[DONE]` is complete: clients stop
                    // reading there, and a drop after it is no cancellation.
                    let done = match &*this.watch {
                        Watch::Events(scan) => scan.saw_done(),
                        Watch::Below => flight.stream_below().is_some_and(|w| w.ended),
                        _ => false,
                    };
                    if last || done {
                        end(this.flight, this.watch, at);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Reads a data frame for what the body is watched for. Only the frame's
/// first chunk is read: the bodies sturdy wraps yield contiguous frames.
fn watch_data<R: Recorder>(watch: &mut Watch, flight: &mut Flight<R>, data: &[u8]) {
    match watch {
        Watch::ErrorBody(e) => {
            let buf = &mut e.1;
            let room = (MAX_ERROR_BODY as usize).saturating_sub(buf.len());
            buf.extend_from_slice(&data[..data.len().min(room)]);
        }
        Watch::Events(scan) => {
            if scan.error().is_none() {
                scan.feed(data);
                if let Some(kind) = scan.error() {
                    flight.know(kind);
                    if let Some(ctx) = flight.attempt_ctx() {
                        ctx.stream_saw(kind);
                    }
                }
            }
        }
        Watch::Below => {
            if flight.known().is_none()
                && let Some(kind) = flight.stream_below().and_then(|w| w.error)
            {
                flight.know(kind);
            }
        }
        Watch::Plain | Watch::Grpc(_) => {}
    }
}

impl<B, R: Recorder> fmt::Debug for MetricsBody<B, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsBody")
            .field("flight", &self.flight)
            .finish_non_exhaustive()
    }
}
