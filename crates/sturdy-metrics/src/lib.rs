//! Failure metrics that tell the client's story: every call and every
//! attempt, why it failed and how far it got.
//!
//! A provider's dashboard counts the requests its servers acknowledged. DNS
//! failures, refused or timed-out connections and requests cut off before a
//! response never appear there. [`FailureMetricsLayer`] records one outcome
//! per logical call ([`FailureMetricsLayer::calls`], outermost) or per
//! attempt ([`FailureMetricsLayer::attempts`], under the retry layer), with
//! its [`Reach`](sturdy_core::Reach):
//!
//! - an error is classified by [`sturdy_core::classify_error`];
//! - a response head that fails classification (`503`, a Trailers-Only gRPC
//!   error) is recorded at the head;
//! - otherwise the outcome is recorded where the response body ends: `ok`
//!   (for gRPC, the `grpc-status` of the trailers), a body error (a stream
//!   cut mid-way: `response_body`, acknowledged), or the body dropped before
//!   its end (`cancelled`, acknowledged);
//! - a response future dropped before its response is `cancelled`, with
//!   reach `not_sent` if it was never polled, `unknown` otherwise.
//!
//! Every started call or attempt ends in exactly one outcome, and the
//! in-flight gauge of its scope goes back down exactly once. The exported
//! series, their labels and help texts are listed once, in [`series`].
//!
//! Dimensions: scope, workload, method (unknown methods are `_OTHER`; gRPC
//! methods are `service/method` from tonic's `GrpcMethod`, feature `grpc`),
//! server address (`host:port` from the URI, else the `Host` header, else
//! [`FailureMetricsLayer::server_label`], else `unknown` — never a path, a
//! query or any other header value), outcome and reach. Durations: to the
//! head, to the first body frame (time to first token), to the end.
//!
//! Backends: [`PrometheusRecorder`] (prometheus-client), the `metrics`
//! facade (`MetricsFacadeRecorder`, feature `metrics`), and the in-memory
//! [`SnapshotRecorder`], whose [`Snapshot`] becomes a [`Report`] that puts
//! the client's counts beside the server's.
//!
//! The rate control (`sturdy-rate`) is exported to the same registry by two
//! collectors, read at scrape time: [`PacerCollector`] (attempts the pacer
//! held, and for how long, per server) and [`ConcurrencyCollector`] (an
//! adaptive concurrency limit's current limit, in flight and waiting).
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use prometheus_client::registry::Registry;
//! use sturdy_metrics::{Both, FailureMetricsLayer, PrometheusRecorder, Report, Scope, SnapshotRecorder};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), sturdy_core::BoxError> {
//! let mut registry = Registry::default();
//! let snapshot = SnapshotRecorder::new();
//! let recorder = Both(PrometheusRecorder::new(&mut registry), snapshot.clone());
//! let inner = tower::service_fn(|_req: http::Request<Full<Bytes>>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"hi"))))
//! });
//! let mut client = ServiceBuilder::new()
//!     .layer(FailureMetricsLayer::calls(recorder).server_label("api.example:443")?)
//!     .service(inner);
//! let req = http::Request::post("/v1/chat/completions").body(Full::new(Bytes::new()))?;
//! let res = client.ready().await?.call(req).await?;
//! res.into_body().collect().await?; // the outcome is recorded at the end of the body
//!
//! assert_eq!(snapshot.snapshot().count(Scope::Call, "ok", sturdy_core::Reach::Acknowledged), 1);
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry)?;
//! assert!(text.contains(r#"sturdy_client_call_duration_seconds_count{http_request_method="POST",server_address="api.example",server_port="443",http_response_status_code="200",reach="acknowledged",workload="interactive"} 1"#));
//! println!("{}", Report::new(&snapshot.snapshot()));
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod body;
mod dimensions;
#[cfg(feature = "metrics")]
mod facade;
mod flight;
mod future;
mod layer;
mod prometheus;
mod rate;
mod recorder;
mod report;
pub mod series;
mod service;
mod slots;
mod snapshot;
mod span;

pub use body::MetricsBody;
pub use dimensions::{
    Dimensions, MethodLabel, OTHER_METHOD, Outcome, Scope, ServerAddress, UNKNOWN_SERVER,
};
#[cfg(feature = "metrics")]
pub use facade::MetricsFacadeRecorder;
pub use future::ResponseFuture;
pub use layer::{FailureMetricsLayer, InvalidServerLabel};
pub use prometheus::{BUCKETS, OPENMETRICS, PrometheusRecorder, TEXT_004, encode_text_004};
pub use rate::{ConcurrencyCollector, PacerCollector};
pub use recorder::{Both, CallSummary, Ended, Recorder};
pub use report::{
    DashboardGap, OutcomeCount, Percentiles, ReachCounts, Report, ScopeReport, ServerCounts,
};
pub use service::FailureMetrics;
pub use snapshot::{MAX_TRACKED, OutcomeKey, Snapshot, SnapshotRecorder, Timing};
