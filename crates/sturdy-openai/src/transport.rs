//! What sends each attempt: `sturdy::client()`, or a `reqwest::Client` the
//! user already configured.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::Either;
use hyper::body::Incoming;
use sturdy::{BoxBody, BoxError};
use tower_service::Service;

/// The innermost service under the stack: `sturdy::client()` or a
/// `reqwest::Client`.
#[derive(Clone)]
pub struct Transport(Kind);

// The sturdy client is the common case; boxing it would add an allocation
// to every clone the stack makes for a retry.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Kind {
    Sturdy(sturdy::Client),
    Reqwest(reqwest::Client),
}

impl Transport {
    pub(crate) fn sturdy(client: sturdy::Client) -> Transport {
        Transport(Kind::Sturdy(client))
    }

    pub(crate) fn reqwest(client: reqwest::Client) -> Transport {
        Transport(Kind::Reqwest(client))
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Kind::Sturdy(_) => "Transport(sturdy::client())",
            Kind::Reqwest(_) => "Transport(reqwest::Client)",
        })
    }
}

/// A response body from either transport.
pub type TransportBody = Either<Incoming, reqwest::Body>;

type ReqwestFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<TransportBody>, BoxError>> + Send>>;

pin_project_lite::pin_project! {
    /// The response future of [`Transport`].
    #[project = FutProj]
    pub enum TransportFuture {
        /// hyper-util's.
        Sturdy { #[pin] fut: hyper_util::client::legacy::ResponseFuture },
        /// A converted reqwest call.
        Reqwest { fut: ReqwestFuture },
    }
}

impl Future for TransportFuture {
    type Output = Result<http::Response<TransportBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            FutProj::Sturdy { fut } => fut
                .poll(cx)
                .map(|r| r.map(|resp| resp.map(Either::Left)).map_err(Into::into)),
            FutProj::Reqwest { fut } => fut.as_mut().poll(cx),
        }
    }
}

impl Service<http::Request<BoxBody>> for Transport {
    type Response = http::Response<TransportBody>;
    type Error = BoxError;
    type Future = TransportFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match &mut self.0 {
            Kind::Sturdy(c) => c.poll_ready(cx).map_err(Into::into),
            Kind::Reqwest(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: http::Request<BoxBody>) -> TransportFuture {
        match &mut self.0 {
            Kind::Sturdy(c) => TransportFuture::Sturdy { fut: c.call(req) },
            Kind::Reqwest(c) => {
                let client = c.clone();
                TransportFuture::Reqwest {
                    fut: Box::pin(async move {
                        let req = req.map(|b| reqwest::Body::wrap(crate::body::SyncBody::new(b)));
                        let req = reqwest::Request::try_from(req)?;
                        let resp = client.execute(req).await?;
                        Ok(http::Response::<reqwest::Body>::from(resp).map(Either::Right))
                    }),
                }
            }
        }
    }
}
