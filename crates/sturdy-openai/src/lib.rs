//! sturdy for [async-openai]: every request an async-openai `Client` makes
//! goes through sturdy's whole stack — workload timeouts, retries that
//! classify failures and back off with jitter under a budget, failure
//! metrics by reach — over `sturdy::client()` or a `reqwest::Client` of
//! your own.
//!
//! ```no_run
//! use async_openai::{Client, config::OpenAIConfig};
//! # fn main() -> Result<(), sturdy_openai::BuildError> {
//! let config = OpenAIConfig::new().with_api_base("https://api.fireworks.ai/inference/v1");
//! let client = Client::with_config(config).with_http_service(sturdy_openai::service()?);
//! # let _ = client; Ok(()) }
//! ```
//!
//! Installing the service replaces async-openai's own retries (no jitter,
//! no budget, no deadline), so nothing is retried twice.
//!
//! What each request is comes from its endpoint, whatever the base URL's
//! prefix ([`sturdy::openai`]): inference (`chat/completions`, `responses`,
//! `embeddings`, ...) may be sent again after an attempt of unknown reach;
//! batches and fine-tuning jobs are the `Batch` workload and, like file
//! uploads, are not repeated unless they never left the client. A streamed
//! answer is held until its first token: a stream cut before it is retried,
//! one cut after it is the caller's. Per call, three headers set through
//! async-openai's `RequestOptionsBuilder::header` steer the stack and are
//! removed before the request is sent: [`WORKLOAD_HEADER`],
//! [`RETRY_SAFE_HEADER`], [`MAX_RETRIES_HEADER`].
//!
//! A failure sturdy classified reaches the caller as
//! `OpenAIError::Boxed`, holding sturdy's typed error (a
//! [`RetryError`](sturdy::retry::RetryError) with the attempts and the
//! failure, a [`TimeoutError`](sturdy::TimeoutError), ...) for `downcast_ref`;
//! an API error answer (a 400, a 429 out of quota, a 503 after the retries)
//! is passed through as the response, so async-openai builds its usual
//! `OpenAIError::ApiError`.
//!
//! Request bodies: async-openai's JSON bodies are in memory and are kept
//! for replay by reference (no copy, up to 16 MiB); multipart uploads
//! stream, and are kept up to the streamed replay cap (1 MiB) as they go.
//!
//! [async-openai]: https://docs.rs/async-openai

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod body;
mod transport;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_openai::middleware::HttpRequestFactory;
use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{Either, Full};
use sturdy::metrics::{Recorder, SnapshotRecorder};
use sturdy::openai::EndpointClassifier;
use sturdy::{
    BoxBody, BoxError, ClientBuilder, ClientConfigError, MaxRetries, NotRetrySafe, RetrySafe,
    Stack, StackBuilder, StackError, StackService, Workload,
};
use tower_layer::Layer;
use tower_service::Service;

pub use transport::Transport;

/// Names the request's workload (`interactive`, `agentic`, `long_context`,
/// `batch`) for this call, in place of the endpoint's and the default.
pub const WORKLOAD_HEADER: &str = "x-sturdy-workload";
/// `true`: this call may be sent again after an attempt of unknown reach
/// (`RetrySafe`); `false`: it may not, whatever its endpoint.
pub const RETRY_SAFE_HEADER: &str = "x-sturdy-retry-safe";
/// At most this many retries for this call (`0`: sent once), as the
/// OpenAI SDK's per-request `max_retries`.
pub const MAX_RETRIES_HEADER: &str = "x-sturdy-max-retries";

/// The request body the stack is given: async-openai's JSON in memory,
/// kept whole for replay, or a multipart upload, streamed.
type RequestBody = Either<Full<Bytes>, BoxBody>;

/// The service for `async_openai::Client::with_http_service`; see the
/// [crate docs](crate). Cloning shares the connection pool, the recorder
/// and the retry budget.
pub struct SturdyService<R = SnapshotRecorder> {
    svc: StackService<Transport, R, EndpointClassifier>,
    recorder: R,
}

impl<R: Clone> Clone for SturdyService<R> {
    fn clone(&self) -> Self {
        SturdyService {
            svc: self.svc.clone(),
            recorder: self.recorder.clone(),
        }
    }
}

impl<R> fmt::Debug for SturdyService<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SturdyService").finish_non_exhaustive()
    }
}

/// The service with the `Stack`'s defaults over `sturdy::client()`, and the
/// OpenAI presets.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sturdy_openai::BuildError> {
/// let client = async_openai::Client::new().with_http_service(sturdy_openai::service()?);
/// # let _ = client; Ok(()) }
/// ```
pub fn service() -> Result<SturdyService, BuildError> {
    SturdyService::builder().build()
}

impl SturdyService {
    /// A builder, starting from the `Stack`'s defaults and the OpenAI
    /// presets.
    pub fn builder() -> SturdyServiceBuilder {
        SturdyServiceBuilder {
            stack: Stack::builder().openai_presets(),
            transport: TransportChoice::Sturdy(sturdy::client()),
        }
    }
}

impl<R> SturdyService<R> {
    /// The recorder both metrics scopes write to (a [`SnapshotRecorder`]
    /// by default: `snapshot()` for a report).
    pub fn recorder(&self) -> &R {
        &self.recorder
    }
}

enum TransportChoice {
    Sturdy(ClientBuilder),
    Reqwest(reqwest::Client),
}

/// Builds a [`SturdyService`].
pub struct SturdyServiceBuilder<R = SnapshotRecorder> {
    stack: StackBuilder<R, EndpointClassifier>,
    transport: TransportChoice,
}

impl<R> fmt::Debug for SturdyServiceBuilder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let transport = match self.transport {
            TransportChoice::Sturdy(_) => "sturdy::client()",
            TransportChoice::Reqwest(_) => "reqwest::Client",
        };
        f.debug_struct("SturdyServiceBuilder")
            .field("stack", &self.stack)
            .field("transport", &transport)
            .finish()
    }
}

impl<R: Recorder + Clone> SturdyServiceBuilder<R> {
    /// Changes the stack: profiles, retry policy, budget, recorder labels.
    ///
    /// ```
    /// use sturdy::Workload;
    /// let svc = sturdy_openai::SturdyService::builder()
    ///     .stack(|s| s.default_workload(Workload::Agentic).max_retries(2))
    ///     .build()
    ///     .unwrap();
    /// # let _ = svc;
    /// ```
    pub fn stack(
        mut self,
        f: impl FnOnce(StackBuilder<R, EndpointClassifier>) -> StackBuilder<R, EndpointClassifier>,
    ) -> Self {
        self.stack = f(self.stack);
        self
    }

    /// Records into `recorder` (a `PrometheusRecorder`, a
    /// `MetricsFacadeRecorder`, or any other [`Recorder`]).
    pub fn recorder<R2: Recorder + Clone>(self, recorder: R2) -> SturdyServiceBuilder<R2> {
        SturdyServiceBuilder {
            stack: self.stack.recorder(recorder),
            transport: self.transport,
        }
    }

    /// Sends over `sturdy::client()` built from `client` (the default:
    /// `sturdy::client()` as it comes).
    pub fn client(mut self, client: ClientBuilder) -> Self {
        self.transport = TransportChoice::Sturdy(client);
        self
    }

    /// Sends over a `reqwest::Client` of your own (its proxies, TLS roots
    /// and settings), under the same stack. Give it no timeout of its own:
    /// the stack's are per workload.
    pub fn reqwest_client(mut self, client: reqwest::Client) -> Self {
        self.transport = TransportChoice::Reqwest(client);
        self
    }

    /// The service, or what is wrong with the configuration.
    pub fn build(self) -> Result<SturdyService<R>, BuildError> {
        let stack = self.stack.build().map_err(BuildError::Stack)?;
        let transport = match self.transport {
            TransportChoice::Sturdy(b) => Transport::sturdy(b.build().map_err(BuildError::Client)?),
            TransportChoice::Reqwest(c) => Transport::reqwest(c),
        };
        Ok(SturdyService {
            svc: stack.layer(transport),
            recorder: stack.recorder().clone(),
        })
    }
}

/// A configuration that cannot work, found when the service is built.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// The stack's.
    Stack(StackError),
    /// `sturdy::client()`'s.
    Client(ClientConfigError),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Stack(e) => write!(f, "sturdy-openai: {e}"),
            BuildError::Client(e) => write!(f, "sturdy-openai: {e}"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Stack(e) => Some(e),
            BuildError::Client(e) => Some(e),
        }
    }
}

/// A steering header ([`WORKLOAD_HEADER`], [`RETRY_SAFE_HEADER`],
/// [`MAX_RETRIES_HEADER`]) whose value means nothing: the call is not sent.
/// The value itself is not kept (it is the caller's text, not a secret, but
/// nothing needs it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSteering {
    header: &'static str,
    expected: &'static str,
}

impl fmt::Display for InvalidSteering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: expected {}", self.header, self.expected)
    }
}

impl std::error::Error for InvalidSteering {}

/// Reads and removes the steering headers, as request extensions.
fn steer(headers: &mut HeaderMap, ext: &mut http::Extensions) -> Result<(), InvalidSteering> {
    fn take(headers: &mut HeaderMap, name: &'static str) -> Option<http::HeaderValue> {
        let v = headers.remove(name);
        // A repeated header: only one value may steer.
        while headers.remove(name).is_some() {}
        v
    }
    if let Some(v) = take(headers, WORKLOAD_HEADER) {
        let w: Workload = v
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(InvalidSteering {
                header: WORKLOAD_HEADER,
                expected: "interactive, agentic, long_context or batch",
            })?;
        ext.insert(w);
    }
    if let Some(v) = take(headers, RETRY_SAFE_HEADER) {
        match v.as_bytes() {
            b"true" => {
                ext.insert(RetrySafe);
            }
            b"false" => {
                ext.insert(NotRetrySafe);
                ext.remove::<RetrySafe>();
            }
            _ => {
                return Err(InvalidSteering {
                    header: RETRY_SAFE_HEADER,
                    expected: "true or false",
                });
            }
        }
    }
    if let Some(v) = take(headers, MAX_RETRIES_HEADER) {
        let n = v
            .to_str()
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
            .filter(|n| *n <= sturdy::retry::MAX_RETRIES_LIMIT)
            .ok_or(InvalidSteering {
                header: MAX_RETRIES_HEADER,
                expected: "a number of retries from 0 to 100",
            })?;
        ext.insert(MaxRetries(n));
    }
    Ok(())
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<reqwest::Response, BoxError>> + Send>>;

impl<R> Service<HttpRequestFactory> for SturdyService<R>
where
    R: Recorder + Send + Sync + 'static,
{
    type Response = reqwest::Response;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The stack waits for capacity inside each call, under `ready`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, factory: HttpRequestFactory) -> ResponseFuture {
        let mut svc = self.svc.clone();
        Box::pin(async move {
            let req = factory.build().await.map_err(BoxError::from)?;
            let req = http::Request::<reqwest::Body>::try_from(req)?;
            let (mut parts, body) = req.into_parts();
            steer(&mut parts.headers, &mut parts.extensions)?;
            let req: http::Request<RequestBody> =
                http::Request::from_parts(parts, body::request(body));
            std::future::poll_fn(|cx| {
                Service::<http::Request<RequestBody>>::poll_ready(&mut svc, cx)
            })
            .await?;
            let resp = svc.call(req).await?;
            Ok(body::response(resp))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steering_headers_become_extensions_and_leave_the_request() {
        let mut h = HeaderMap::new();
        h.insert(WORKLOAD_HEADER, "long_context".parse().unwrap());
        h.insert(RETRY_SAFE_HEADER, "true".parse().unwrap());
        h.insert(MAX_RETRIES_HEADER, "0".parse().unwrap());
        h.insert("authorization", "Bearer sk-secret".parse().unwrap());
        let mut ext = http::Extensions::new();
        steer(&mut h, &mut ext).unwrap();
        assert_eq!(ext.get::<Workload>(), Some(&Workload::LongContext));
        assert!(ext.get::<RetrySafe>().is_some());
        assert_eq!(ext.get::<MaxRetries>(), Some(&MaxRetries(0)));
        assert_eq!(h.len(), 1, "only the caller's own headers are sent");

        for (name, bad) in [
            (WORKLOAD_HEADER, "siesta"),
            (RETRY_SAFE_HEADER, "yes"),
            (MAX_RETRIES_HEADER, "101"),
            (MAX_RETRIES_HEADER, "-1"),
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, bad.parse().unwrap());
            let err = steer(&mut h, &mut http::Extensions::new()).unwrap_err();
            assert!(err.to_string().starts_with(name), "{err}");
            assert!(!err.to_string().contains(bad), "{err}");
        }
    }
}
