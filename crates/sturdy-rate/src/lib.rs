//! Rate control for tower clients of rate-limited servers (LLM inference
//! APIs above all): pace new attempts by the rate-limit headers the server
//! sends, and adapt the number of calls in flight to overload.
//!
//! Adaptive concurrency ([`AdaptiveConcurrencyLayer`]): a limit on the
//! requests in flight, shared by every clone, that grows while the server
//! serves (slow start, then `+1` per round trip) and shrinks by 10 % at
//! most once per round when it answers `429` (not a quota error), `503`,
//! `529` or times out. Callers beyond it wait in `poll_ready`, the `ready`
//! phase sturdy's workload timeout bounds; a permit is held until the
//! response body is over. See the [`limit`] module for the algorithm.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod limit;
pub use limit::{
    AdaptiveBody, AdaptiveConcurrency, AdaptiveConcurrencyBuilder, AdaptiveConcurrencyLayer,
    ConcurrencyGauge, LimitConfigError, is_overload,
};
