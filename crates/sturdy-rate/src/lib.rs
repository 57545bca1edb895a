//! Rate control for tower clients of rate-limited servers (LLM inference
//! APIs above all): pace new attempts by the rate-limit headers the server
//! sends, and adapt the number of calls in flight to overload.
//!
//! LLM APIs tell a client ahead of time how much room is left, per
//! organisation: shared by every process of a fleet, so the server's
//! headers are the one coordination point that needs no shared store.
//!
//! - [`RateLimitHeaders`] reads them: the OpenAI-compatible
//!   `x-ratelimit-*` headers, Anthropic's `anthropic-ratelimit-*`, and the
//!   IETF draft's `RateLimit`/`RateLimit-Policy` fields (and its early
//!   `RateLimit-Limit`/`-Remaining`/`-Reset` triple), per dimension
//!   (requests, tokens, input and output tokens). Garbage is ignored field
//!   by field; nothing panics.
//! - [`PacerLayer`] acts on them: an attempt to a server with no room left
//!   is held until the server said the room comes back, never past the
//!   call's [`Deadline`](sturdy_core::Deadline) (it then fails at once with
//!   a [`PacerError`], `rate_limit_hold`, `NotSent`).
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use http::HeaderMap;
//! use sturdy_rate::RateLimitHeaders;
//! let mut h = HeaderMap::new();
//! h.insert("ratelimit", r#""default";r=0;t=30"#.parse().unwrap());
//! h.insert("ratelimit-policy", r#""default";q=100;w=60"#.parse().unwrap());
//! let rl = RateLimitHeaders::from_headers(&h, SystemTime::now());
//! assert_eq!(rl.requests.remaining, Some(0));
//! assert_eq!(rl.requests.limit, Some(100));
//! assert_eq!(rl.requests.reset, Some(Duration::from_secs(30)));
//! ```
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

mod future;
mod headers;
mod pacer;
mod parse;
mod state;
mod stats;

pub use future::ResponseFuture;
pub use headers::{
    HEADER_NAMES, MAX_LIST_LINES, MAX_RESET, MAX_VALUE_LEN, Quota, RateLimitHeaders,
};
pub use pacer::{MAX_SERVERS, Pacer, PacerLayer, TokenEstimate};
pub use stats::{PacerStats, ServerStats};
pub use sturdy_core::PacerError;
pub mod limit;
pub use limit::{
    AdaptiveBody, AdaptiveConcurrency, AdaptiveConcurrencyBuilder, AdaptiveConcurrencyLayer,
    ConcurrencyGauge, LimitConfigError, is_overload,
};
