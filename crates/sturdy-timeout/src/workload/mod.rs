//! The outer, per-call timeout: [`WorkloadTimeoutLayer`]. It sits above
//! retry, so its `total` covers every attempt and the whole response body;
//! it settles the call's workload, profile and
//! [`Deadline`](sturdy_core::Deadline) in the request's
//! [`CallPlan`](sturdy_core::CallPlan), where every layer below reads them.

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::{WorkloadTimeoutBuilder, WorkloadTimeoutLayer};
pub use service::WorkloadTimeout;
