//! Bodies across the boundary: async-openai's `reqwest::Body` into the
//! stack (whole when it is in memory, so a retry replays it by reference),
//! and the stack's streaming response body back into a `reqwest::Response`
//! frame by frame (an SSE stream reaches async-openai's parser as it
//! comes, never buffered).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use sturdy::BoxError;

use crate::RequestBody;

/// The stack's request body for `body`: its bytes when it is all in memory
/// (every JSON request async-openai makes), else the stream itself.
pub(crate) fn request(mut body: reqwest::Body) -> RequestBody {
    if body.as_bytes().is_some() {
        // An in-memory reqwest body yields all its bytes in its first frame,
        // whatever the context: the same `Bytes`, no copy.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let bytes = match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
            _ => Bytes::new(),
        };
        return Either::Left(Full::new(bytes));
    }
    Either::Right(sturdy::boxed(body))
}

/// `resp` as async-openai takes it, its body still streaming.
pub(crate) fn response<B>(resp: http::Response<B>) -> reqwest::Response
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    reqwest::Response::from(resp.map(|b| reqwest::Body::wrap(SyncBody::new(b))))
}

pin_project_lite::pin_project! {
    /// A body made `Sync` for `reqwest::Body::wrap` the only sound way: it
    /// is reachable only through a pinned `&mut`, so no two threads can
    /// ever touch it at once.
    pub(crate) struct SyncBody<B> {
        #[pin]
        inner: sync_wrapper::SyncWrapper<B>,
    }
}

impl<B> SyncBody<B> {
    pub(crate) fn new(body: B) -> Self {
        SyncBody {
            inner: sync_wrapper::SyncWrapper::new(body),
        }
    }
}

impl<B> Body for SyncBody<B>
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
        let inner = self.project().inner.get_pin_mut();
        inner
            .poll_frame(cx)
            .map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn size_hint(&self) -> SizeHint {
        // `SyncWrapper` gives no shared access: the hint is unknown.
        SizeHint::default()
    }
}
