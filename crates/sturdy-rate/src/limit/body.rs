//! [`AdaptiveBody`]: holds a request's permit until its response body is
//! over, so a stream counts against the limit while it is open, and reads
//! on the way what decides a few verdicts: the small error body of a `429`
//! (a quota error is not overload), the `grpc-status` of gRPC trailers.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use sturdy_core::{
    BoxError, FailureKind, GrpcCode, Judgement, MAX_ERROR_BODY, Verdict, body_may_refine,
    classify_body_error, classify_error_body, classify_grpc_code, is_grpc_answer,
};

use super::future::Permit;
use super::is_overload;
use super::state::Signal;

/// What a body is read for before its permit is given back.
pub(crate) enum Watch {
    /// Nothing: the head's word stands.
    Plain,
    /// An overload status whose small error body may say it is a quota
    /// error: up to [`MAX_ERROR_BODY`] bytes of it.
    ErrorBody(Vec<u8>),
    /// A gRPC answer whose outcome is the `grpc-status` of its trailers.
    Grpc(Option<GrpcCode>),
}

/// What a failure kind says about capacity.
pub(crate) fn signal_of(kind: &FailureKind) -> Signal {
    if is_overload(kind) {
        Signal::Overload
    } else {
        Signal::Neutral
    }
}

impl Watch {
    /// The signal of a body read to its end.
    fn ended(&self, head: Signal) -> Signal {
        match self {
            Watch::Plain => head,
            Watch::ErrorBody(buf) => match classify_error_body(buf) {
                Some(FailureKind::QuotaExhausted) => Signal::Neutral,
                _ => head,
            },
            // A gRPC answer without a status has failed (tonic says the
            // same), but not for want of capacity.
            Watch::Grpc(None) => Signal::Neutral,
            Watch::Grpc(Some(code)) => match classify_grpc_code(*code).1 {
                None => Signal::Success,
                Some(kind) => signal_of(&kind),
            },
        }
    }

    /// The signal of a body dropped before its end (or a request dropped
    /// before its head): what was read decides, else the head's word. A
    /// success stays one: the server served it, the caller stopped reading
    /// (an OpenAI client stops at `data: [DONE]`).
    pub(crate) fn dropped(&self, head: Signal) -> Signal {
        match self {
            Watch::Grpc(None) => head,
            _ => self.ended(head),
        }
    }

    /// The signal of a body that failed with `kind`: overload if the
    /// failure is (a read timeout) or the head was; else nothing.
    fn failed(&self, head: Signal, kind: &FailureKind) -> Signal {
        match (signal_of(kind), head) {
            (Signal::Overload, _) | (_, Signal::Overload) => Signal::Overload,
            _ => Signal::Neutral,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response body of
    /// [`AdaptiveConcurrency`](super::AdaptiveConcurrency): frames pass
    /// through unchanged (errors boxed), and the request's permit is given
    /// back when the body ends, fails or is dropped.
    pub struct AdaptiveBody<B> {
        #[pin]
        inner: B,
        permit: Option<Permit>,
    }
}

impl<B: Body> AdaptiveBody<B> {
    pub(crate) fn new(
        inner: B,
        permit: Option<Permit>,
        parts: &http::response::Parts,
        judged: &Judgement,
    ) -> Self {
        let permit = permit.and_then(|mut permit| {
            let head = match (judged.verdict, &judged.failure) {
                (Verdict::Success, _) | (_, None) => Signal::Success,
                (_, Some(kind)) => signal_of(kind),
            };
            permit.head = head;
            permit.watch = watch_for(&inner, parts, judged, head);
            if inner.is_end_stream() {
                // An empty body may never be polled: its end is now.
                let signal = permit.watch.ended(head);
                permit.settle(signal);
                return None;
            }
            Some(permit)
        });
        AdaptiveBody { inner, permit }
    }
}

/// What the body of an answer judged `judged` (`head`) must be read for.
fn watch_for<B: Body>(
    body: &B,
    parts: &http::response::Parts,
    judged: &Judgement,
    head: Signal,
) -> Watch {
    match judged.failure {
        None if is_grpc_answer(parts.status, &parts.headers)
            && judged.hints.grpc_status.is_none() =>
        {
            Watch::Grpc(None)
        }
        Some(FailureKind::Status(s))
            if head == Signal::Overload
                && body_may_refine(s)
                && body.size_hint().lower() <= MAX_ERROR_BODY =>
        {
            let exact = body.size_hint().exact().unwrap_or(0);
            // At most MAX_ERROR_BODY: the cast cannot truncate what is kept.
            Watch::ErrorBody(Vec::with_capacity(exact.min(MAX_ERROR_BODY) as usize))
        }
        _ => Watch::Plain,
    }
}

impl<B> Body for AdaptiveBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        let Some(permit) = this.permit.as_mut() else {
            return polled.map(|f| f.map(|r| r.map_err(Into::into)));
        };
        let (out, signal) = match polled {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => (None, permit.watch.ended(permit.head)),
            Poll::Ready(Some(Err(e))) => {
                let e: BoxError = e.into();
                let signal = permit.watch.failed(permit.head, &classify_body_error(&*e));
                (Some(Err(e)), signal)
            }
            Poll::Ready(Some(Ok(frame))) => {
                watch_frame(&mut permit.watch, &frame);
                if !this.inner.is_end_stream() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                let signal = permit.watch.ended(permit.head);
                (Some(Ok(frame)), signal)
            }
        };
        if let Some(mut permit) = this.permit.take() {
            permit.settle(signal);
        }
        Poll::Ready(out)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Reads one frame for what the body is watched for.
fn watch_frame<D: Buf>(watch: &mut Watch, frame: &Frame<D>) {
    match watch {
        Watch::ErrorBody(buf) => {
            let Some(data) = frame.data_ref() else { return };
            let chunk = data.chunk();
            let room = (MAX_ERROR_BODY as usize).saturating_sub(buf.len());
            if chunk.len() < data.remaining() || chunk.len() > room {
                // Not contiguous, or more than an error body: the head's
                // word stands.
                *watch = Watch::Plain;
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        Watch::Grpc(status) => {
            if let Some(code) = frame.trailers_ref().and_then(GrpcCode::from_headers) {
                *status = Some(code);
            }
        }
        Watch::Plain => {}
    }
}

impl<B> std::fmt::Debug for AdaptiveBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdaptiveBody")
            .field("holds_permit", &self.permit.is_some())
            .finish_non_exhaustive()
    }
}
