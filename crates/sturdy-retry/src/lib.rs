//! Classified retries for HTTP and gRPC clients: sturdy-core's status
//! tables, jittered backoff, server hints, a deadline, a shared budget and
//! replayable request bodies, in one tower layer that wraps any
//! `Service<http::Request<_>>` — a `sturdy::client()`, a tonic `Channel`, or
//! your own.
//!
//! In the request flow it sits below the workload timeout (whose
//! [`Deadline`](sturdy_core::Deadline) it reads from the request's
//! [`CallPlan`](sturdy_core::CallPlan)) and above the per-attempt layers. It
//! settles its own part of the plan — whether the request may be sent
//! again ([`Safety`](sturdy_core::Safety), by the policy's one
//! [`RetrySafeRule`]) and the [`Classifier`](sturdy_core::Classifier) that
//! judges answers, which the metrics layers use too — and writes attempts,
//! retry reasons and budget refusals to the call's
//! [`CallContext`](sturdy_core::CallContext).
//!
//! What is retried, in order:
//!
//! 1. The verdict: a user [`Classify`](sturdy_core::Classify) if it
//!    answers, else server hints (`x-should-retry`, a negative
//!    `grpc-retry-pushback-ms`), else the tables (429, 408 and 5xx gateway
//!    statuses; gRPC `UNAVAILABLE`, `RESOURCE_EXHAUSTED`; transport
//!    failures). Hints are read only from responses the tables call
//!    failures.
//! 2. Safety by reach: `NotSent` always; `Unknown` only when the
//!    [`RetrySafeRule`] allows it (by default: an idempotent method, the
//!    idempotency-key header, or [`RetrySafe`](sturdy_core::RetrySafe));
//!    `Acknowledged` by the verdict. A response handed to the caller is
//!    never retried (a gRPC call is committed at its first non-Trailers-Only
//!    head).
//! 3. Retries left, and a request body that can still be replayed.
//! 4. The delay: the server's hint (over the hint cap: give up at once), else
//!    none when a full adaptive concurrency limit below took the attempt's
//!    overload up (the retry waits in its queue instead:
//!    [`CallContext::overload_queued`](sturdy_core::CallContext::overload_queued)),
//!    else the [`Backoff`]; a delay that would end past the deadline gives
//!    up at once.
//! 5. The budget, shared by every clone of the layer's services.
//!
//! When it gives up, the caller gets the last response, or the last error
//! wrapped in [`RetryError`] with the attempt count.
//!
//! An attempt's request body can outlive its response: an HTTP/1.1 client
//! goes on sending it after an early answer (a gateway that rejects from the
//! headers). A retry decided while an earlier attempt still reads the body
//! waits, after its backoff, until that attempt lets go of it (never past
//! the call's deadline: then the call ends with a `total` timeout); if the
//! body passed the replay cap meanwhile, the failure the retry was for is
//! the call's answer. A retry is recorded in the
//! [`CallContext`](sturdy_core::CallContext) when it is sent, never when it
//! is only decided.
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use sturdy_core::BoxBody;
//! use sturdy_retry::{Backoff, RetryLayer, RetryPolicy};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let policy = RetryPolicy::builder()
//!     .max_retries(3)
//!     .backoff(Backoff::guide(Duration::from_millis(10), Duration::from_millis(10)))
//!     .build()
//!     .unwrap();
//! let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let seen = calls.clone();
//! // A fake inner service: 503 twice, then 200.
//! let inner = service_fn(move |_req: http::Request<BoxBody>| {
//!     let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!     async move {
//!         let status = if n < 2 { 503 } else { 200 };
//!         Ok::<_, std::convert::Infallible>(
//!             http::Response::builder().status(status).body(Full::new(Bytes::new())).unwrap(),
//!         )
//!     }
//! });
//! let svc = ServiceBuilder::new().layer(RetryLayer::new(policy)).service(inner);
//! let req = http::Request::get("http://127.0.0.1/").body(Full::new(Bytes::new())).unwrap();
//! let resp = svc.oneshot(req).await.unwrap();
//! assert_eq!(resp.status(), 200);
//! assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
//! # }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod attempts;
mod backoff;
mod body;
mod budget;
mod error;
mod future;
mod head;
mod layer;
mod policy;
mod prefetch;
pub mod replay;
mod service;

pub use backoff::Backoff;
pub use body::ResponseBody;
pub use budget::BudgetConfig;
pub use error::{RetryConfigError, RetryError};
pub use future::ResponseFuture;
pub use layer::RetryLayer;
pub use policy::{
    DEFAULT_REPLAY_CAP, MAX_RETRIES_LIMIT, RetryPolicy, RetryPolicyBuilder, RetrySafeRule,
};
pub use replay::ReplayBody;
pub use service::RetryService;
