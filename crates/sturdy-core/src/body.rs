//! Bodies at the inner edge. A layer that wraps request bodies (retry's
//! replayable body) must hand the inner service the body type *it* takes.
//! [`InnerBody`] is that one mechanism: a boxed body for clients built by
//! `sturdy::client()`, `tonic::body::Body` for a tonic `Channel` (feature
//! `grpc`). Both keep the wrapped body's `size_hint` and `is_end_stream`, so
//! a `Full` body still goes out with a content-length.

use bytes::Bytes;
use http_body::Body;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;

use crate::BoxError;

/// The request body type of `sturdy::client()`: any body, boxed.
pub type BoxBody = UnsyncBoxBody<Bytes, BodyError>;

/// The error of a [`BoxBody`]: the boxed body's own error, whose
/// [`source`](std::error::Error::source) it is.
///
/// A named type rather than a `Box<dyn Error>` so that `BoxBody` carries no
/// trait-object lifetime: rustc cannot prove `Send` for an `async` block
/// that holds a service's future over a request type with one (every
/// region in it is erased, and `Service<Request<UnsyncBoxBody<Bytes, Box<dyn
/// Error + Send + Sync + '_>>>>` must then hold for any lifetime, which no
/// impl does). With it, `tokio::spawn(async move { client.oneshot(req).await
/// })` compiles.
///
/// ```
/// use std::error::Error as _;
/// use sturdy_core::BodyError;
/// let err = BodyError::new(std::io::Error::other("disk gone"));
/// assert_eq!(err.to_string(), "disk gone");
/// assert!(err.source().unwrap().is::<std::io::Error>());
/// ```
pub struct BodyError(BoxError);

impl BodyError {
    /// Wraps `err`.
    pub fn new(err: impl Into<BoxError>) -> BodyError {
        BodyError(err.into())
    }

    /// The body's own error.
    pub fn into_inner(self) -> BoxError {
        self.0
    }
}

impl std::fmt::Debug for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// A body type an inner service takes, which any other body can become.
///
/// ```
/// use bytes::Bytes;
/// use http_body::Body;
/// use http_body_util::Full;
/// use sturdy_core::{BoxBody, InnerBody};
/// let body = BoxBody::from_body(Full::new(Bytes::from_static(b"hello")));
/// assert_eq!(body.size_hint().exact(), Some(5));
/// assert!(!body.is_end_stream());
/// ```
#[diagnostic::on_unimplemented(
    message = "the retry layer cannot send `{Self}` bodies to its inner service",
    label = "the inner service takes `http::Request<{Self}>`",
    note = "the retry layer replays request bodies and hands the inner service a `sturdy::BoxBody` (or, for a tonic `Channel`, a `tonic::body::Body`)",
    note = "build the client for `BoxBody` (`sturdy::client()` is one; with hyper-util: `Client::builder(exec).build::<_, sturdy::BoxBody>(connector)`) and send it any body: the layer boxes it"
)]
pub trait InnerBody: Body<Data = Bytes> + Send + Sized + 'static {
    /// Turns `body` into this type, keeping its size hint and end-of-stream.
    fn from_body<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>;
}

impl InnerBody for BoxBody {
    fn from_body<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        body.map_err(BodyError::new).boxed_unsync()
    }
}

#[cfg(feature = "grpc")]
impl InnerBody for tonic::body::Body {
    fn from_body<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        tonic::body::Body::new(body)
    }
}

/// Boxes any body into [`BoxBody`].
pub fn boxed<B>(body: B) -> BoxBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    BoxBody::from_body(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Empty, Full};

    fn keeps_hints<T: InnerBody>() {
        let full = T::from_body(Full::new(Bytes::from_static(b"abcdef")));
        assert_eq!(full.size_hint().exact(), Some(6));
        assert!(!full.is_end_stream());
        let empty = T::from_body(Empty::<Bytes>::new());
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
        let unknown = T::from_body(Unsized);
        assert_eq!(unknown.size_hint().exact(), None);
    }

    /// A body of unknown length.
    struct Unsized;
    impl Body for Unsized {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
            std::task::Poll::Ready(None)
        }
    }

    #[test]
    fn boxed_bodies_keep_size_hint_and_end_of_stream() {
        keeps_hints::<BoxBody>();
        #[cfg(feature = "grpc")]
        keeps_hints::<tonic::body::Body>();
    }
}
