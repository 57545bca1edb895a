//! A fault-injecting OpenAI-compatible HTTP server on loopback, used by
//! sturdy's tests, benchmarks and probe instead of mocks.
//!
//! It serves, over HTTP/1.1 and h2c:
//!
//! - `POST /v1/chat/completions` (JSON, or SSE with `"stream": true`) and
//!   `GET /v1/models`;
//! - files: `POST /v1/files` (a multipart form with `file` and `purpose`),
//!   `GET /v1/files/{id}` and `GET /v1/files/{id}/content`;
//! - batch jobs: `POST /v1/batches`, `GET /v1/batches/{id}`,
//!   `POST /v1/batches/{id}/cancel` and `GET /v1/batches?limit=N&after=ID`,
//!   jobs that move from `validating` through `in_progress` (their
//!   completed count growing) and `finalizing` to `completed` over
//!   [`FaultServerBuilder::job_duration`], with an output file at the end;
//!   metadata `"sturdy_fate": "failed"` or `"expired"` scripts another
//!   ending. Files and jobs are kept in memory (at most 1 000 files or
//!   256 MiB of them, and 10 000 jobs, the oldest forgotten first) and
//!   survive outages;
//! - `GET /dashboard` (the [`Dashboard`] as JSON);
//! - and `GET /metrics`: the counter `sturdy_faults_requests_total` in the
//!   Prometheus text format (0.0.4), labelled `route` (`chat_completions`,
//!   `models`, `files`, `batches`, `other`) and `code` (the status answered,
//!   `none` for a request dropped without an answer). It counts the requests
//!   the dashboard counts as `received`, each once it is over (a `reset`
//!   counts as the `200` whose head it sent), so at any quiescent moment its
//!   sum equals `received`: a server's own view, as a provider's exported
//!   metrics give it;
//!
//! and injects faults into everything but the dashboard and `/metrics`,
//! which are never counted either:
//!
//! - per call, from a [`Script`] in the [`FAULT_HEADER`] request header: the
//!   n-th attempt carrying the same [`CALL_HEADER`] gets the n-th entry, the
//!   last one repeating;
//! - otherwise from a seeded random [`Mix`];
//! - whole-server outages ([`FaultServer::outage`]) in which connections
//!   are refused and open ones dropped;
//! - and, at random, idle keep-alive connections closed just as a client
//!   reuses them ([`FaultServerBuilder::idle_close`]).
//!
//! Faults apply to the file and batch routes as to chat completions: the
//! fault is chosen before the request is routed. A [`Fault::Close`] does the
//! route's work before it drops the connection (a batch is created, a file
//! stored), so a client sees what a lost answer looks like in reality: the
//! server acted, the client cannot know it.
//!
//! Two modes put a provider's limits in front of `POST /v1/chat/completions`,
//! the inference route (models, files, batches, `/dashboard` and `/metrics`
//! are never limited):
//!
//! - a rate limit ([`FaultServerBuilder::rate_limit`], [`RateLimit`]):
//!   token buckets per requests and per tokens like OpenAI's organisation
//!   limits, the `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`
//!   headers on every answer it decides, and a `429`
//!   (`rate_limit_exceeded`, with `retry-after-ms` and `retry-after`) when a
//!   bucket lacks room;
//! - a capacity ([`FaultServerBuilder::capacity`], [`Capacity`]): at most N
//!   requests in service at once, each answered after a service time; the
//!   rest refused at once with a `429` or a `503` (an "overloaded" error,
//!   without rate-limit headers or `retry-after`).
//!
//! The fault is chosen first. A fault that replaces the answer (a non-200
//! status, `close`, `hostile`; scripted, from a window or drawn from the
//! mix) is applied, and neither mode sees the request. Any other request
//! (no fault, `200`, or a fault that only shapes the delivery: `delay`,
//! `stall`, `slow`, `reset`, `streamerr`) takes a capacity slot as it
//! arrives or is refused at once, then is admitted or refused by the rate
//! limiter from its body's token estimate; an admitted request waits the
//! service time and gets its normal answer, delivered as its fault says. A
//! refused one gets its refusal instead of its fault. Refusals are answers
//! like any other, on the dashboard and `/metrics`.
//!
//! It counts what it saw in a [`Dashboard`].
//!
//! ```
//! use sturdy_faults::{FaultServer, Mix};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = FaultServer::builder()
//!     .mix("503=0.05,reset=0.01".parse::<Mix>()?)
//!     .seed(7)
//!     .start()
//!     .await?;
//! println!("serving at {}", server.base_url());
//! // A request with `x-sturdy-call: c1` and `x-sturdy-fault: 503, 200` gets a
//! // 503 the first time and a normal answer after.
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod body;
mod capacity;
mod dashboard;
mod fault;
mod jobs;
mod metrics;
mod mix;
mod openai;
mod rate_limit;
mod respond;
mod server;
mod spec;

pub use capacity::{Capacity, OverCapacity};
pub use dashboard::Dashboard;
pub use fault::{
    DEFAULT_HOSTILE_HEADERS, Fault, FaultParams, MAX_CHUNKS, MAX_FAULT_MS, MAX_HOSTILE_HEADERS,
    ParseError, Script,
};
pub use mix::Mix;
pub use rate_limit::RateLimit;
pub use respond::BodyDigest;
pub use server::{FaultServer, FaultServerBuilder};
pub use spec::SpecError;

/// Request header naming a call, so its attempts can be told apart. The
/// server remembers the attempts of at least the last 65 536 calls (and at
/// most twice that many), so a long run on unique IDs stays in bounded
/// memory; a call whose next attempt comes after that many newer calls
/// starts its script again.
pub const CALL_HEADER: &str = "x-sturdy-call";

/// Request header carrying the call's [`Script`].
pub const FAULT_HEADER: &str = "x-sturdy-fault";

/// Request header (any value) asking the server to remember the digest of
/// the request body, by [`CALL_HEADER`]: see
/// [`FaultServer::received_bodies`].
pub const RECORD_HEADER: &str = "x-sturdy-record-body";
