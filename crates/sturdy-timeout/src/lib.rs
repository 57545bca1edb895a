//! Per-workload, per-phase timeouts as tower layers.
//!
//! A chat call should give up after a minute, an agentic or long-context
//! call may rightly take thirty, and a batch submission is done in one. And
//! "the server never answered" is not "the stream went silent". Two layers
//! turn that into one per-request setting:
//!
//! - [`WorkloadTimeoutLayer`], outermost (above retry): picks the request's
//!   [`Workload`](sturdy_core::Workload) (its extension, else a
//!   [classifier](ClassifyWorkload) over the head, else `Interactive`), looks
//!   up its [`Profile`](sturdy_core::Profile) (a per-request `Profile`
//!   extension wins), puts the `Workload` and a
//!   [`Deadline`](sturdy_core::Deadline) into the request extensions and the
//!   workload into the [`CallContext`](sturdy_core::CallContext), and
//!   enforces `ready` (waiting for the inner service's capacity) and `total`
//!   (the whole call, **the response body included**).
//! - [`AttemptTimeoutLayer`], innermost (at the client): limits each
//!   attempt's wait for the response head (`headers`) and every silence in
//!   its body (`read`, the wait for the first frame included: time to first
//!   token for an SSE stream), never past the `Deadline`. For gRPC requests
//!   (feature `grpc`) it also sets `grpc-timeout`.
//!
//! Every timeout is a [`TimeoutError`](sturdy_core::TimeoutError) naming its
//! phase, workload, limit and [`Reach`](sturdy_core::Reach), so
//! [`classify_error`](sturdy_core::classify_error) labels it exactly:
//!
//! | fires | phase | reach | kind |
//! |---|---|---|---|
//! | waiting for capacity | `ready` | `NotSent` | `ready_timeout` |
//! | before a connection (hyper-util, [`capture_connection`](AttemptTimeoutBuilder::capture_connection)) | `headers` | `NotSent` | `connect_timeout` |
//! | waiting for the head | `headers` | `Unknown` | `headers_timeout` |
//! | silence in the body | `read` | `Acknowledged` | `read_timeout` |
//! | the deadline, anywhere | `total` | where it was | `total_timeout` |
//!
//! When the deadline and a phase's own limit fall on the same instant, the
//! deadline wins (`total_timeout`). No timeout ever fabricates an HTTP
//! response: it is an error, from the future or from the body. Both layers
//! return `sturdy_core::BoxError`, like tower's `Timeout`. For a gRPC
//! request (feature `grpc`) the error is a `tonic::Status` with code
//! `DEADLINE_EXCEEDED` whose `source()` is the `TimeoutError`, so tonic's
//! generated clients report `DEADLINE_EXCEEDED`.
//!
//! Cheap on the hot path: a timer is made only when a phase actually has to
//! wait (a response that is ready at once makes none), the timers live
//! pinned inside the futures and bodies (no boxed future), the body's one
//! `read` timer is moved with `reset`, and nothing is put into the request
//! extensions but two small `Copy` values and the call context.
//!
//! `WorkloadTimeout` needs a `Clone` inner service: see
//! [`WorkloadTimeout`] for what that means for backpressure.
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use sturdy_core::{BoxError, CallContext, Workload};
//! use sturdy_timeout::{AttemptTimeoutLayer, WorkloadTimeoutLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let workloads = WorkloadTimeoutLayer::builder()
//!     .total(Workload::Interactive, Duration::from_secs(30))
//!     .build()?;
//! let attempts = AttemptTimeoutLayer::builder()
//!     .profiles(*workloads.profiles())
//!     .build()?;
//! let svc = ServiceBuilder::new()
//!     .layer(workloads)
//!     .layer(attempts)
//!     .service_fn(|req: http::Request<()>| async move {
//!         // Layers below see the workload the outer layer chose.
//!         assert_eq!(req.extensions().get::<Workload>(), Some(&Workload::Batch));
//!         Ok::<_, BoxError>(http::Response::new(Full::new(Bytes::from_static(b"done"))))
//!     });
//!
//! let mut req = http::Request::post("http://api.test/v1/batches").body(())?;
//! let ctx = CallContext::get_or_insert(req.extensions_mut());
//! let res = svc.oneshot(req).await?;
//! assert_eq!(res.into_body().collect().await?.to_bytes(), "done");
//! assert_eq!(ctx.workload(), Some(Workload::Batch));
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod attempt;
mod classify;
mod grpc;
mod workload;

pub use attempt::{
    AttemptTimeout, AttemptTimeoutBuilder, AttemptTimeoutLayer, ReadBody,
    ResponseFuture as AttemptFuture,
};
pub use classify::{
    ClassifyWorkload, FnClassifier, NoClassifier, PathClassifier, RequestHead, classify_by_path,
};
pub use grpc::grpc_timeout;
pub use workload::{
    ResponseFuture as WorkloadFuture, TotalBody, WorkloadTimeout, WorkloadTimeoutBuilder,
    WorkloadTimeoutLayer,
};
