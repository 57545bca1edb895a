//! Per-workload, per-phase timeouts as tower layers.
//!
//! A chat call should give up after a minute, an agentic or long-context
//! call may rightly take thirty, and a batch submission is done in one. And
//! "the server never answered" is not "the stream went silent". Two layers
//! turn that into one per-request setting:
//!
//! - [`WorkloadTimeoutLayer`], outermost (above retry): picks the request's
//!   [`Workload`](sturdy_core::Workload) (its extension, else a
//!   [classifier](ClassifyWorkload) over the head, else the default), looks
//!   up its [`Profile`](sturdy_core::Profile) (a per-request `Profile`
//!   extension wins), settles both and the
//!   [`Deadline`](sturdy_core::Deadline) in the request's
//!   [`CallPlan`](sturdy_core::CallPlan) (the workload reaches the
//!   [`CallContext`](sturdy_core::CallContext) too), and enforces `ready`
//!   (waiting for the inner service's capacity) and `total` (the whole call,
//!   **the response body included**).
//! - [`AttemptTimeoutLayer`], innermost (at the client): limits each
//!   attempt's wait for the response head (`headers`) and every silence in
//!   its body (`read`, the wait for the first frame included: time to first
//!   token for an SSE stream), never past the `Deadline`, with the profile
//!   the plan holds. For gRPC requests it also sets `grpc-timeout`.
//!
//! Each works alone: the attempt layer without a plan uses its own
//! profiles, and the workload layer with nothing below that makes attempts
//! enforces `headers` and `read` itself (the call is then one attempt).
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
//! timer is moved with `reset`, the workload layer makes none while the
//! attempt layer below enforces its deadline, and the only extension is
//! the plan.
//!
//! `WorkloadTimeout` needs a `Clone` inner service: see
//! [`WorkloadTimeout`] for what that means for backpressure.
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use sturdy_core::{BoxError, CallContext, CallPlan, Workload};
//! use sturdy_timeout::{AttemptTimeoutLayer, WorkloadTimeoutLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let workloads = WorkloadTimeoutLayer::builder()
//!     .total(Workload::Interactive, Duration::from_secs(30))
//!     .build()?;
//! // It reads the profile the workload layer settles: nothing to repeat.
//! let attempts = AttemptTimeoutLayer::new();
//! let svc = ServiceBuilder::new()
//!     .layer(workloads)
//!     .layer(attempts)
//!     .service_fn(|req: http::Request<()>| async move {
//!         // Layers below see the workload the outer layer chose.
//!         let plan = CallPlan::from_extensions(req.extensions()).unwrap();
//!         assert_eq!(plan.workload(), Some(Workload::Batch));
//!         Ok::<_, BoxError>(http::Response::new(Full::new(Bytes::from_static(b"done"))))
//!     });
//!
//! let mut req = http::Request::post("http://api.test/v1/batches").body(())?;
//! let ctx = CallContext::attach(&mut req);
//! let res = svc.oneshot(req).await?;
//! assert_eq!(res.into_body().collect().await?.to_bytes(), "done");
//! assert_eq!(ctx.workload(), Some(Workload::Batch));
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod attempt;
mod body;
mod classify;
mod grpc;
mod workload;

pub use attempt::{
    AttemptTimeout, AttemptTimeoutBuilder, AttemptTimeoutLayer, ResponseFuture as AttemptFuture,
};
pub use body::TimeoutBody;
pub use classify::{ClassifyWorkload, FnClassifier, NoClassifier, PathClassifier};
pub use grpc::grpc_timeout;
pub use workload::{
    ResponseFuture as WorkloadFuture, WorkloadTimeout, WorkloadTimeoutBuilder, WorkloadTimeoutLayer,
};
