//! The one judgement of an attempt. Retry decides with it and metrics label
//! with it, so an attempt's outcome label and its retry reason cannot
//! disagree: a [`Classifier`] puts the user's classifier first, then the
//! server's hints, then the tables of [`classify`](crate::classify_response),
//! then what a small error body says ([`Judgement::with_body`]: an LLM
//! quota error is not a rate limit).
//!
//! The retry layer puts its policy's classifier into the request's
//! [`CallPlan`](crate::CallPlan); the metrics layers judge with the
//! classifier they find there (the tables alone when there is none).

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, StatusCode};

use crate::{
    FailureKind, Reach, ServerHints, Verdict, classify_body_error, classify_error,
    classify_response, classify_status, verdict_of,
};

/// What an attempt came back with, as a [`Classify`] sees it.
#[derive(Clone, Copy)]
pub enum Answer<'a> {
    /// A response head.
    Response(StatusCode, &'a HeaderMap),
    /// An error from the inner service.
    Error(&'a (dyn StdError + 'static)),
}

impl fmt::Debug for Answer<'_> {
    // Never the header values: they may hold an API key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Response(s, _) => f.debug_tuple("Response").field(s).finish(),
            Answer::Error(_) => f.write_str("Error"),
        }
    }
}

/// A user classifier that may override the server's hints and the tables:
/// `Some(verdict)` decides, `None` leaves the decision to them.
///
/// Any `Fn(Answer<'_>) -> Option<Verdict>` is one:
///
/// ```
/// use sturdy_core::{Answer, Classifier, Verdict};
/// // Also retry 409 Conflict.
/// let classifier = Classifier::new(|a: Answer<'_>| match a {
///     Answer::Response(s, _) if s.as_u16() == 409 => Some(Verdict::Retryable),
///     _ => None,
/// });
/// let j = classifier.judge_response(http::StatusCode::CONFLICT, &http::HeaderMap::new(), false);
/// assert_eq!(j.verdict, Verdict::Retryable);
/// assert_eq!(j.failure.unwrap().label(), "409");
/// ```
pub trait Classify: Send + Sync + 'static {
    /// The verdict on one attempt's answer, or `None` to leave it to the
    /// hints and the tables.
    fn classify(&self, answer: Answer<'_>) -> Option<Verdict>;
}

impl<F> Classify for F
where
    F: Fn(Answer<'_>) -> Option<Verdict> + Send + Sync + 'static,
{
    fn classify(&self, answer: Answer<'_>) -> Option<Verdict> {
        self(answer)
    }
}

/// The handle every layer judges with: an optional user [`Classify`], then
/// the server's hints, then the tables. Cloning is an `Arc` increment at
/// most; the default is the tables alone.
#[derive(Clone, Default)]
pub struct Classifier {
    user: Option<Arc<dyn Classify>>,
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classifier")
            .field("user", &self.user.is_some())
            .finish()
    }
}

/// Which rule gave a [`Judgement`] its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Ruling {
    /// The user's classifier.
    User,
    /// The server's own word: `x-should-retry`, a gRPC pushback.
    Server,
    /// The tables.
    Tables,
    /// What the answer's body said (an error body, an error event).
    Body,
}

/// What a [`Classifier`] made of one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judgement {
    /// Success, a failure worth retrying, or a fatal one.
    pub verdict: Verdict,
    /// The failure, unless the verdict is a success: an HTTP status (even a
    /// 2xx a user classifier called a failure), a gRPC code, or what the
    /// error was.
    pub failure: Option<FailureKind>,
    /// How far the attempt got.
    pub reach: Reach,
    /// The hints of a response judged a failure (empty otherwise: a success
    /// is never read for hints).
    pub hints: ServerHints,
    /// Which rule decided.
    pub ruling: Ruling,
}

impl Judgement {
    /// Whether the body of this answer may still change the verdict: a
    /// failure the tables judged, whose status says an error body may tell
    /// more ([`body_may_refine`](crate::body_may_refine)).
    pub fn awaits_body(&self) -> bool {
        self.ruling == Ruling::Tables
            && matches!(self.failure, Some(FailureKind::Status(s)) if crate::body_may_refine(s))
    }

    /// This judgement, refined by the answer's (small) error body: the
    /// body's word comes after the user's, the server's and the tables', so
    /// it refines only what the tables decided.
    ///
    /// ```
    /// use sturdy_core::{Classifier, Verdict};
    /// let status = http::StatusCode::TOO_MANY_REQUESTS;
    /// let head = Classifier::tables().judge_response(status, &http::HeaderMap::new(), false);
    /// assert!(head.awaits_body());
    /// let j = head.with_body(br#"{"error":{"code":"insufficient_quota"}}"#);
    /// assert_eq!((j.verdict, j.failure.unwrap().label()), (Verdict::Fatal, "insufficient_quota"));
    /// ```
    pub fn with_body(self, body: &[u8]) -> Judgement {
        if !self.awaits_body() {
            return self;
        }
        match crate::classify_error_body(body) {
            Some(kind) => Judgement {
                verdict: verdict_of(&kind),
                failure: Some(kind),
                ruling: Ruling::Body,
                ..self
            },
            None => self,
        }
    }
}

impl Classifier {
    /// The tables alone (with the server's hints).
    pub const fn tables() -> Classifier {
        Classifier { user: None }
    }

    /// `classify` first, then the hints and the tables.
    pub fn new(classify: impl Classify) -> Classifier {
        Classifier {
            user: Some(Arc::new(classify)),
        }
    }

    /// Whether a user classifier is in force.
    pub fn has_user_classifier(&self) -> bool {
        self.user.is_some()
    }

    /// Judges a response head: the user's verdict if it gives one; else
    /// `x-should-retry` or a negative gRPC pushback, read only from a head
    /// the tables call a failure (either way: the server's own word
    /// overrides the table); else the tables. `grpc` says whether the call
    /// is gRPC ([`CallPlan::is_grpc`](crate::CallPlan::is_grpc)): only then
    /// is a gRPC answer judged by its `grpc-status`
    /// ([`classify_response`]); any other answer, by its HTTP status.
    pub fn judge_response(&self, status: StatusCode, headers: &HeaderMap, grpc: bool) -> Judgement {
        let (table, failure) = if grpc {
            classify_response(status, headers)
        } else {
            match classify_status(status) {
                Verdict::Success => (Verdict::Success, None),
                v => (v, Some(FailureKind::Status(status))),
            }
        };
        let user = self
            .user
            .as_ref()
            .and_then(|c| c.classify(Answer::Response(status, headers)));
        let success = |ruling| Judgement {
            verdict: Verdict::Success,
            failure: None,
            reach: Reach::Acknowledged,
            hints: ServerHints::default(),
            ruling,
        };
        if user.is_none() && table == Verdict::Success {
            return success(Ruling::Tables);
        }
        let hints = ServerHints::from_headers(headers, SystemTime::now());
        let (verdict, ruling) = match user {
            Some(v) => (v, Ruling::User),
            None if hints.forbids_retry() => (Verdict::Fatal, Ruling::Server),
            None if hints.should_retry == Some(true) => (Verdict::Retryable, Ruling::Server),
            None => (table, Ruling::Tables),
        };
        if verdict == Verdict::Success {
            return success(ruling);
        }
        Judgement {
            verdict,
            failure: Some(failure.unwrap_or(FailureKind::Status(status))),
            reach: Reach::Acknowledged,
            hints,
            ruling,
        }
    }

    /// Judges an error: its [`FailureKind`] by [`classify_error`], and the
    /// user's verdict, else the tables' ([`verdict_of`]).
    pub fn judge_error(&self, err: &(dyn StdError + 'static)) -> Judgement {
        self.judge_failure(classify_error(err), err)
    }

    /// Judges an error that ended a response body after its head: its
    /// [`FailureKind`] by [`classify_body_error`], then as
    /// [`judge_error`](Classifier::judge_error).
    pub fn judge_body_error(&self, err: &(dyn StdError + 'static)) -> Judgement {
        self.judge_failure(classify_body_error(err), err)
    }

    fn judge_failure(&self, kind: FailureKind, err: &(dyn StdError + 'static)) -> Judgement {
        let (verdict, ruling) = match self
            .user
            .as_ref()
            .and_then(|c| c.classify(Answer::Error(err)))
        {
            Some(v) => (v, Ruling::User),
            None => (verdict_of(&kind), Ruling::Tables),
        };
        Judgement {
            verdict,
            failure: Some(kind),
            reach: kind.reach(),
            hints: ServerHints::default(),
            ruling,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_classifier_comes_first_then_hints_then_tables() {
        let mut h = HeaderMap::new();
        h.insert("x-should-retry", "false".parse().unwrap());
        let tables = Classifier::tables();
        let j = tables.judge_response(StatusCode::SERVICE_UNAVAILABLE, &h, false);
        assert_eq!(
            j.verdict,
            Verdict::Fatal,
            "the server's word beats the table"
        );
        assert_eq!(j.failure.map(|f| f.label()), Some("503"));

        let user = Classifier::new(|a: Answer<'_>| match a {
            Answer::Response(s, _) if s == StatusCode::OK => Some(Verdict::Retryable),
            Answer::Response(s, _) if s.as_u16() == 503 => Some(Verdict::Retryable),
            _ => None,
        });
        let j = user.judge_response(StatusCode::SERVICE_UNAVAILABLE, &h, false);
        assert_eq!(
            j.verdict,
            Verdict::Retryable,
            "the user's word beats the server's"
        );
        let j = user.judge_response(StatusCode::OK, &HeaderMap::new(), false);
        assert_eq!(
            (j.verdict, j.failure.map(|f| f.label()), j.reach),
            (Verdict::Retryable, Some("200"), Reach::Acknowledged)
        );
        let j = tables.judge_response(StatusCode::OK, &HeaderMap::new(), false);
        assert_eq!((j.verdict, j.failure), (Verdict::Success, None));
        // A gRPC call is judged by the grpc-status of a Trailers-Only head;
        // any other call, by its HTTP status.
        let mut grpc = HeaderMap::new();
        grpc.insert("content-type", "application/grpc".parse().unwrap());
        grpc.insert("grpc-status", "14".parse().unwrap());
        let j = tables.judge_response(StatusCode::OK, &grpc, true);
        assert_eq!(j.failure.map(|f| f.label()), Some("grpc_unavailable"));
        let j = tables.judge_response(StatusCode::OK, &grpc, false);
        assert_eq!(j.verdict, Verdict::Success);
    }

    #[test]
    fn errors_keep_their_kind_and_reach_whatever_the_verdict() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let never = Classifier::new(|_: Answer<'_>| Some(Verdict::Fatal));
        let j = never.judge_error(&refused);
        assert_eq!(
            (j.verdict, j.failure, j.reach),
            (
                Verdict::Fatal,
                Some(FailureKind::ConnectRefused),
                Reach::NotSent
            )
        );
        let j = Classifier::tables().judge_error(&refused);
        assert_eq!(j.verdict, Verdict::Retryable);
        assert!(format!("{:?}", Answer::Error(&refused)).contains("Error"));
    }
}
