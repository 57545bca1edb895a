//! [`MetricsBody`]: carries a call's flight to the end of its response body.
//! The end of the stream records `ok` (for gRPC, the `grpc-status` of the
//! trailers), an error records what `classify_body_error` makes of it, and
//! a body dropped before its end records `cancelled` (acknowledged).

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use sturdy_core::{BoxError, FailureKind, GrpcCode, classify_grpc_code};

use crate::flight::Flight;
use crate::{Outcome, Recorder};

pin_project_lite::pin_project! {
    /// The response body of [`FailureMetrics`](crate::FailureMetrics).
    /// Frames pass through unchanged; errors are boxed.
    pub struct MetricsBody<B, R: Recorder> {
        #[pin]
        inner: B,
        flight: Option<Flight<R>>,
        grpc: bool,
        grpc_status: Option<GrpcCode>,
    }
}

impl<B: Body, R: Recorder> MetricsBody<B, R> {
    /// `grpc` is `None` for a response that is not a gRPC answer, else the
    /// `grpc-status` its head carried, if any.
    pub(crate) fn new(inner: B, flight: Option<Flight<R>>, grpc: Option<Option<GrpcCode>>) -> Self {
        let mut body = MetricsBody {
            inner,
            flight,
            grpc: grpc.is_some(),
            grpc_status: grpc.flatten(),
        };
        // An empty body may never be polled: its end is now.
        if body.inner.is_end_stream() {
            body.end();
        }
        body
    }

    fn end(&mut self) {
        end(&mut self.flight, self.grpc, self.grpc_status, None);
    }
}

/// Records the end of the body; `at` when the caller has just read the
/// clock (the last frame was also the first).
fn end<R: Recorder>(
    flight: &mut Option<Flight<R>>,
    grpc: bool,
    status: Option<GrpcCode>,
    at: Option<std::time::Duration>,
) {
    let Some(mut flight) = flight.take() else {
        return;
    };
    let outcome = if grpc {
        // A gRPC response without a status has failed (tonic says the same).
        match classify_grpc_code(status.unwrap_or(GrpcCode::Unknown)) {
            (_, Some(kind)) => Outcome::Failed(kind),
            (_, None) => Outcome::Ok,
        }
    } else {
        Outcome::Ok
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
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                end(this.flight, *this.grpc, *this.grpc_status, None);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                let e: BoxError = e.into();
                if let Some(mut flight) = this.flight.take() {
                    let judged = flight.classifier().judge_body_error(&*e);
                    let kind = judged.failure.unwrap_or(FailureKind::ResponseBody);
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
                        }
                    } else if let Some(code) = frame.trailers_ref().and_then(GrpcCode::from_headers)
                    {
                        *this.grpc_status = Some(code);
                    }
                    if last {
                        end(this.flight, *this.grpc, *this.grpc_status, at);
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

impl<B, R: Recorder> fmt::Debug for MetricsBody<B, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsBody")
            .field("flight", &self.flight)
            .field("grpc", &self.grpc)
            .finish_non_exhaustive()
    }
}
