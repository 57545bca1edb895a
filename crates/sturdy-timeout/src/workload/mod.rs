//! The outer, per-call timeout: [`WorkloadTimeoutLayer`]. It sits above
//! retry, so its `total` covers every attempt and the whole response body,
//! and its [`Deadline`](sturdy_core::Deadline) tells every layer below when
//! the call must be over.

mod body;
mod future;
mod layer;
mod service;

pub use body::TotalBody;
pub use future::ResponseFuture;
pub use layer::{WorkloadTimeoutBuilder, WorkloadTimeoutLayer};
pub use service::WorkloadTimeout;
