//! Resolvers the client can use, named once ([`Resolve`]), and the wrapper
//! that makes their failures typed ([`TypedResolver`]): a DNS failure would
//! otherwise be an opaque string; wrapped, it is a [`DnsError`] in the
//! chain that `classify_error` labels `dns`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use sturdy_core::{BoxError, DnsError};
use tower_service::Service;

/// A resolver `sturdy::client()` can use: any `tower::Service<Name>` that
/// answers socket addresses, is `Clone + Send + Sync + 'static`, and has a
/// `Send` future (hyper-util's `GaiResolver`, or a resolver of your own).
/// Implemented for every such service (and only by them): it names the
/// bound once.
pub trait Resolve:
    Service<Name, Response: Iterator<Item = SocketAddr>, Error: Into<BoxError>, Future: Send>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<R> Resolve for R
where
    R: Service<Name> + Clone + Send + Sync + 'static,
    R::Response: Iterator<Item = SocketAddr>,
    R::Error: Into<BoxError>,
    R::Future: Send,
{
}

/// Wraps a resolver (a `tower::Service<Name>`) so that every failure, and an
/// answer with no address, is a [`DnsError`] naming the host.
///
/// ```
/// use hyper_util::client::legacy::connect::dns::GaiResolver;
/// use hyper_util::client::legacy::connect::HttpConnector;
/// use sturdy::TypedResolver;
/// let connector = HttpConnector::new_with_resolver(TypedResolver::new(GaiResolver::new()));
/// # drop(connector);
/// ```
#[derive(Debug, Clone)]
pub struct TypedResolver<R> {
    inner: R,
}

impl<R> TypedResolver<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> TypedResolver<R> {
        TypedResolver { inner }
    }
}

impl<R> Service<Name> for TypedResolver<R>
where
    R: Service<Name>,
    R::Response: Iterator<Item = SocketAddr>,
    R::Error: Into<BoxError>,
{
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = DnsError;
    type Future = ResolveFuture<R::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), DnsError>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| DnsError::new("<resolver>", e))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        ResolveFuture {
            host: name.as_str().into(),
            inner: self.inner.call(name),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`TypedResolver`].
    pub struct ResolveFuture<F> {
        host: Box<str>,
        #[pin]
        inner: F,
    }
}

impl<F, I, E> Future for ResolveFuture<F>
where
    F: Future<Output = Result<I, E>>,
    I: Iterator<Item = SocketAddr>,
    E: Into<BoxError>,
{
    type Output = Result<std::vec::IntoIter<SocketAddr>, DnsError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = match std::task::ready!(this.inner.poll(cx)) {
            Ok(addrs) => {
                let addrs: Vec<SocketAddr> = addrs.collect();
                if addrs.is_empty() {
                    Err(DnsError::no_addresses(std::mem::take(this.host)))
                } else {
                    Ok(addrs.into_iter())
                }
            }
            Err(e) => Err(DnsError::new(std::mem::take(this.host), e)),
        };
        Poll::Ready(out)
    }
}
