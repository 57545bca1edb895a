//! The response body the retry layer hands over: the inner body as it
//! streams, or, for a small response read in full before it was handed over
//! (prefetch), the buffered bytes and trailers — and, when the read failed
//! and the failure was not retried, the failure after the bytes that came,
//! as the caller would have seen it without prefetch.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use sturdy_core::BoxError;

pin_project! {
    /// A response body from [`RetryService`](crate::RetryService).
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Streaming {
            #[pin]
            inner: B,
        },
        // What was read ahead (a stream's first data line, or part of a
        // small body whose reading was cut short), then the rest as it
        // streams.
        Primed {
            prefix: Option<Bytes>,
            inner: Pin<Box<B>>,
        },
        Buffered {
            data: Option<Bytes>,
            trailers: Option<HeaderMap>,
            error: Option<BoxError>,
        },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn streaming(inner: B) -> ResponseBody<B> {
        ResponseBody {
            kind: Kind::Streaming { inner },
        }
    }

    pub(crate) fn buffered(data: Bytes, trailers: Option<HeaderMap>) -> ResponseBody<B> {
        ResponseBody {
            kind: Kind::Buffered {
                data: (!data.is_empty()).then_some(data),
                trailers,
                error: None,
            },
        }
    }

    /// `prefix`, already read, then the rest of `inner` as it streams.
    pub(crate) fn primed(prefix: Bytes, inner: Pin<Box<B>>) -> ResponseBody<B> {
        ResponseBody {
            kind: Kind::Primed {
                prefix: (!prefix.is_empty()).then_some(prefix),
                inner,
            },
        }
    }

    /// The bytes that came, then the error that ended the read.
    pub(crate) fn failed(data: Bytes, error: BoxError) -> ResponseBody<B> {
        ResponseBody {
            kind: Kind::Buffered {
                data: (!data.is_empty()).then_some(data),
                trailers: None,
                error: Some(error),
            },
        }
    }

    /// Whether the body was read in full before it was handed over.
    pub fn is_buffered(&self) -> bool {
        matches!(self.kind, Kind::Buffered { .. })
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Streaming { inner } => inner
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into))),
            KindProj::Primed { prefix, inner } => match prefix.take() {
                Some(d) => Poll::Ready(Some(Ok(Frame::data(d)))),
                None => inner
                    .as_mut()
                    .poll_frame(cx)
                    .map(|f| f.map(|r| r.map_err(Into::into))),
            },
            KindProj::Buffered {
                data,
                trailers,
                error,
            } => {
                if let Some(d) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                if let Some(e) = error.take() {
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Streaming { inner } => inner.is_end_stream(),
            Kind::Primed { prefix, inner } => prefix.is_none() && inner.is_end_stream(),
            Kind::Buffered {
                data,
                trailers,
                error,
            } => data.is_none() && trailers.is_none() && error.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Streaming { inner } => inner.size_hint(),
            Kind::Primed { prefix, inner } => {
                let n = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let rest = inner.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(n));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(n));
                }
                hint
            }
            Kind::Buffered { data, error, .. } => {
                let n = data.as_ref().map_or(0, |d| d.len() as u64);
                if error.is_some() {
                    SizeHint::default()
                } else {
                    SizeHint::with_exact(n)
                }
            }
        }
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Streaming { .. } => f.write_str("ResponseBody::Streaming"),
            Kind::Primed { prefix, .. } => f
                .debug_struct("ResponseBody::Primed")
                .field("prefix", &prefix.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Buffered { data, .. } => f
                .debug_struct("ResponseBody::Buffered")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
        }
    }
}
