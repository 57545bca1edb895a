//! The shared vocabulary of sturdy.
//!
//! Every sturdy layer speaks in these types, and talks to the others only
//! through them, carried in `http::Extensions`:
//!
//! - what kind of work a request is ([`Workload`]) and how long each phase of
//!   it may take ([`Profile`]), by when the whole call must end ([`Deadline`]);
//! - the per-call plan, settled once by the layer that owns each fact
//!   ([`CallPlan`]: workload, profile, deadline, [`Safety`], the
//!   [`Classifier`]), and one record per logical call inside it, filled by
//!   the layers that know and read by metrics ([`CallContext`]);
//! - how far an attempt got ([`Reach`]) and why it failed ([`FailureKind`],
//!   found by [`classify_error`] and the status tables, judged once per
//!   attempt by a [`Classifier`]);
//! - what a server hinted ([`ServerHints`]);
//! - the body type handed to the inner service ([`InnerBody`]);
//! - the `tracing` spans of a call and of its attempts ([`span`]);
//! - one clock reading shared by the layers of one synchronous step
//!   ([`clock`]).
//!
//! ```
//! use sturdy_core::{classify_response, FailureKind, Reach, Verdict};
//! let headers = http::HeaderMap::new();
//! let (verdict, failure) = classify_response(http::StatusCode::SERVICE_UNAVAILABLE, &headers);
//! assert_eq!(verdict, Verdict::Retryable);
//! let failure = failure.unwrap();
//! assert_eq!((failure.label(), failure.reach()), ("503", Reach::Acknowledged));
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod answers;
mod body;
mod classify;
pub mod clock;
mod context;
mod error;
mod failure;
mod hints;
mod plan;
pub mod span;
mod verdict;
mod workload;

pub use answers::{
    BodyVerdict, MAX_ERROR_BODY, MAX_EVENT_LINE, SseScan, body_may_refine, classify_error_body,
    classify_event_data, is_event_stream,
};
pub use body::{BodyError, BoxBody, InnerBody, boxed};
pub use classify::{
    GRPC_TABLE, GrpcRule, STATUS_TABLE, StatusRule, Verdict, classify_body_error, classify_error,
    classify_grpc, classify_grpc_code, classify_response, classify_status, content_type, header,
    is_grpc, is_grpc_answer, verdict_of,
};
pub use context::{CallContext, MaxRetries, NotRetrySafe, RetryRefusal, RetrySafe, StreamWatch};
pub use error::{BoxError, ConnectError, ConnectPart, DnsError, PacerError, Phase, TimeoutError};
pub use failure::{FailureKind, GrpcCode, Reach, status_label};
pub use hints::{MAX_HINT, MAX_HINT_VALUE_LEN, Pushback, ServerHints};
pub use plan::{CallPlan, Markers, RequestHead, Safety};
pub use verdict::{Answer, Classifier, Classify, Judgement, Ruling};
pub use workload::{
    Deadline, DeadlineLimit, InvalidProfile, Profile, Profiles, UnknownWorkload, Workload,
    attempt_limit,
};
