//! [`MetricsBody`]: carries a call's flight to the end of its response body.
//! The end of the stream records `ok` (for gRPC, the `grpc-status` of the
//! trailers), an error records what `classify_body_error` makes of it, and
//! a body dropped before its end records `cancelled` (acknowledged).

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use sturdy_core::{BoxError, GrpcCode, classify_body_error, classify_grpc_code};

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
        end(&mut self.flight, self.grpc, self.grpc_status);
    }
}

fn end<R: Recorder>(flight: &mut Option<Flight<R>>, grpc: bool, status: Option<GrpcCode>) {
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
    flight.finish(outcome);
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
                end(this.flight, *this.grpc, *this.grpc_status);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                let e: BoxError = e.into();
                if let Some(mut flight) = this.flight.take() {
                    flight.finish(Outcome::Failed(classify_body_error(&*e)));
                }
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(flight) = this.flight.as_mut() {
                    if let Some(data) = frame.data_ref() {
                        if data.has_remaining() {
                            flight.data_frame();
                        }
                    } else if let Some(code) = frame.trailers_ref().and_then(GrpcCode::from_headers)
                    {
                        *this.grpc_status = Some(code);
                    }
                    if this.inner.is_end_stream() {
                        end(this.flight, *this.grpc, *this.grpc_status);
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
