//! The per-attempt timeout: [`AttemptTimeoutLayer`]. It sits below retry, at
//! the inner client, and limits each attempt's wait for the response head
//! (`headers`) and every silence in its body (`read`), never past the call's
//! [`Deadline`](sturdy_core::Deadline).

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::{AttemptTimeoutBuilder, AttemptTimeoutLayer};
pub use service::AttemptTimeout;
