//! sturdy: tower middleware that keeps HTTP and gRPC clients up.
//!
//! Built first for clients of OpenAI-compatible LLM inference APIs, usable
//! around any `tower::Service<http::Request<B>>`: a hyper-util client, a
//! tonic `Channel`, or a hand-written service.
//!
//! - [`client()`] builds the innermost service: a hyper-util client whose
//!   failures say which part failed (DNS, TCP, TLS) and whose sockets carry
//!   the guide's client-wide `connect` and `write` limits.
//! - [`timeout`], [`retry`] and [`metrics`] are the layers: workload
//!   timeouts, classified retries, failure metrics by reach.
//! - the vocabulary they share ([`Workload`], [`Reach`], [`FailureKind`],
//!   [`classify_error`], ...) is re-exported from `sturdy-core`.
//!
//! ```no_run
//! use http_body_util::Full;
//! use bytes::Bytes;
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = sturdy::client().build()?;
//! let req = http::Request::get("http://127.0.0.1:8080/v1/models")
//!     .body(sturdy::boxed(Full::new(Bytes::new())))?;
//! match client.request(req).await {
//!     Ok(resp) => println!("{}", resp.status()),
//!     Err(e) => {
//!         let kind = sturdy::classify_error(&e);
//!         println!("failed: {} (reach: {})", kind.label(), kind.reach());
//!     }
//! }
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod batch;
mod client;
pub mod openai;
mod stack;

pub use client::{
    CONNECTION_ATTEMPT_DELAY, Client, ClientBuilder, ClientConfigError, ClientIo, Connector,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT, DEFAULT_TCP_KEEPALIVE,
    DEFAULT_TCP_KEEPALIVE_INTERVAL, DEFAULT_TCP_KEEPALIVE_RETRIES, DEFAULT_WRITE_TIMEOUT,
    MIN_LIMIT, Resolve, TypedResolver, client,
};
/// Re-exported so a custom resolver needs no extra imports.
pub use hyper_util::client::legacy::connect::dns::Name;
/// Re-exported so a proxy set-up needs no extra imports.
pub use hyper_util::client::proxy::matcher::Matcher as ProxyMatcher;
pub use stack::{DEFAULT_PREFETCH, Stack, StackBuilder, StackError, StackService};
#[cfg(feature = "grpc")]
pub use stack::{GrpcStack, GrpcStackService};
pub use sturdy_core::{
    Answer, BoxBody, BoxError, CallContext, CallPlan, Classifier, Classify, ConnectError,
    ConnectPart, Deadline, DnsError, FailureKind, GrpcCode, InvalidProfile, Judgement, MaxRetries,
    NotRetrySafe, Phase, Profile, Profiles, Reach, RequestHead, RetryRefusal, RetrySafe, Safety,
    ServerHints, TimeoutError, Verdict, Workload, boxed, classify_error,
};
pub use sturdy_retry::RetrySafeRule;

/// The shared vocabulary, whole: the status tables, the hint parser, the
/// inner-edge body types.
pub use sturdy_core as core;
/// Failure metrics by reach, Prometheus export, reports; with feature
/// `metrics-facade`, `MetricsFacadeRecorder` too (the `metrics` crate's
/// facade).
pub use sturdy_metrics as metrics;
/// Rate control: pacing by the server's rate-limit headers, adaptive
/// concurrency.
pub use sturdy_rate as rate;
/// Retries: classification, jittered backoff, server hints, budget, replay.
pub use sturdy_retry as retry;
/// Workload timeouts: the total deadline, `ready`, and per-attempt phases.
pub use sturdy_timeout as timeout;

// README.md's examples are compiled as doc-tests, so the README cannot rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
