//! Classification, in one place: the HTTP status table, the gRPC table, and
//! the walk over an error's source chain. Retry decides with these; metrics
//! labels with these; nothing else matches on status codes or error kinds.

use std::error::Error as StdError;
use std::io;

use http::{HeaderMap, HeaderName, StatusCode};

use crate::error::{ConnectError, ConnectPart, DnsError, PacerError, TimeoutError};
use crate::workload::InvalidProfile;
use crate::{FailureKind, GrpcCode};

/// What the tables say about a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Not a failure.
    Success,
    /// A failure worth retrying (with backoff).
    Retryable,
    /// A failure that retrying will not fix.
    Fatal,
}

/// One row of the HTTP status table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRule {
    /// The status code.
    pub code: u16,
    /// What to do with it.
    pub verdict: Verdict,
    /// Why, in a few words (the guide's words where it has them).
    pub meaning: &'static str,
}

const fn rule(code: u16, verdict: Verdict, meaning: &'static str) -> StatusRule {
    StatusRule {
        code,
        verdict,
        meaning,
    }
}

/// The HTTP status table: the guide's five retryable statuses, 408 (a
/// timeout by definition), 409 (which the OpenAI and Anthropic SDKs retry),
/// and the overload family in front of LLM APIs (529, Cloudflare's
/// 520–524); the statuses the guide says never to retry, and 501 and 505
/// (retrying cannot make the server support a method or a version). Any
/// other status below 400 is a success; any other status from 400 up is a
/// failure that is not retried.
pub static STATUS_TABLE: &[StatusRule] = &[
    rule(
        408,
        Verdict::Retryable,
        "request timeout: a timeout by definition",
    ),
    rule(
        409,
        Verdict::Retryable,
        "conflict: the server's own lock contention; the OpenAI and Anthropic SDKs retry it",
    ),
    rule(429, Verdict::Retryable, "rate limited: retry with backoff"),
    rule(500, Verdict::Retryable, "internal server error: transient"),
    rule(502, Verdict::Retryable, "bad gateway: transient"),
    rule(
        503,
        Verdict::Retryable,
        "service unavailable: retry with backoff",
    ),
    rule(504, Verdict::Retryable, "gateway timeout: transient"),
    rule(
        520,
        Verdict::Retryable,
        "Cloudflare: the origin answered unexpectedly",
    ),
    rule(521, Verdict::Retryable, "Cloudflare: the origin is down"),
    rule(
        522,
        Verdict::Retryable,
        "Cloudflare: connecting to the origin timed out",
    ),
    rule(
        523,
        Verdict::Retryable,
        "Cloudflare: the origin is unreachable",
    ),
    rule(
        524,
        Verdict::Retryable,
        "Cloudflare: the origin took too long to answer",
    ),
    rule(
        529,
        Verdict::Retryable,
        "overloaded (Anthropic-style): retry with backoff",
    ),
    rule(400, Verdict::Fatal, "bad request: fix the request"),
    rule(401, Verdict::Fatal, "unauthorized: check the API key"),
    rule(403, Verdict::Fatal, "forbidden: check permissions"),
    rule(
        404,
        Verdict::Fatal,
        "not found: check the model or deployment",
    ),
    rule(
        422,
        Verdict::Fatal,
        "unprocessable entity: fix the request body",
    ),
    rule(
        501,
        Verdict::Fatal,
        "not implemented: the server does not support the method",
    ),
    rule(
        505,
        Verdict::Fatal,
        "HTTP version not supported: retrying cannot change it",
    ),
];

/// The verdict of [`STATUS_TABLE`] on a status code.
///
/// ```
/// use http::StatusCode;
/// use sturdy_core::{classify_status, Verdict};
/// assert_eq!(classify_status(StatusCode::TOO_MANY_REQUESTS), Verdict::Retryable);
/// assert_eq!(classify_status(StatusCode::UNAUTHORIZED), Verdict::Fatal);
/// assert_eq!(classify_status(StatusCode::OK), Verdict::Success);
/// ```
pub fn classify_status(status: StatusCode) -> Verdict {
    let code = status.as_u16();
    // The retryable rows come first and are the only ones that differ from
    // the rule for unlisted codes, so the lookup stops early on them.
    match STATUS_TABLE.iter().find(|r| r.code == code) {
        Some(r) => r.verdict,
        None if code < 400 => Verdict::Success,
        None => Verdict::Fatal,
    }
}

/// One row of the gRPC table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcRule {
    /// The code.
    pub code: GrpcCode,
    /// What to do with it.
    pub verdict: Verdict,
}

/// The gRPC table: `OK` is a success; `UNAVAILABLE` (the server did not
/// process the call) and `RESOURCE_EXHAUSTED` (rate limited, like 429) are
/// retried with backoff; every other code is a failure not retried, as in
/// gRPC's own retry guidance.
pub static GRPC_TABLE: &[GrpcRule] = &[
    GrpcRule {
        code: GrpcCode::Ok,
        verdict: Verdict::Success,
    },
    GrpcRule {
        code: GrpcCode::Unavailable,
        verdict: Verdict::Retryable,
    },
    GrpcRule {
        code: GrpcCode::ResourceExhausted,
        verdict: Verdict::Retryable,
    },
];

/// The verdict of [`GRPC_TABLE`] on a gRPC code.
pub fn classify_grpc(code: GrpcCode) -> Verdict {
    GRPC_TABLE
        .iter()
        .find(|r| r.code == code)
        .map_or(Verdict::Fatal, |r| r.verdict)
}

/// Whether a response is gRPC (`content-type: application/grpc...`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    content_type(headers).is_some_and(|v| v.starts_with(b"application/grpc"))
}

/// The (first) `content-type` of a request or response head, as bytes
/// ([`header`]).
///
/// ```
/// let mut headers = http::HeaderMap::new();
/// assert_eq!(sturdy_core::content_type(&headers), None);
/// headers.insert("content-type", "text/event-stream".parse().unwrap());
/// assert_eq!(sturdy_core::content_type(&headers), Some(&b"text/event-stream"[..]));
/// ```
pub fn content_type(headers: &HeaderMap) -> Option<&[u8]> {
    header(headers, &http::header::CONTENT_TYPE).map(http::HeaderValue::as_bytes)
}

/// The first value of `name` in a request or response head: what
/// `HeaderMap::get` gives, found the cheaper way for the heads sturdy
/// reads on every call (a content type three to four times per call, an
/// idempotency key). A head of a few lines is scanned: a standard name
/// compares with the others by its index, a custom one by its bytes, where
/// a lookup hashes the name (a custom one byte by byte). A head of many
/// lines is looked up.
///
/// ```
/// let mut headers = http::HeaderMap::new();
/// headers.insert("idempotency-key", "k1".parse().unwrap());
/// let name = http::HeaderName::from_static("idempotency-key");
/// assert_eq!(sturdy_core::header(&headers, &name).unwrap(), "k1");
/// ```
pub fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a http::HeaderValue> {
    if headers.len() <= 16 {
        headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    } else {
        headers.get(name)
    }
}

/// Whether a response head is a gRPC answer, whose outcome is its
/// `grpc-status` (in the head for a Trailers-Only response, else in the
/// trailers): a gRPC content type with HTTP status 200. A gRPC content type
/// on any other status is not an answer gRPC defines, and is judged by its
/// HTTP status, as any response.
pub fn is_grpc_answer(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::OK && is_grpc(headers)
}

/// The failure a response head amounts to, if any, and the table's verdict.
///
/// A gRPC answer ([`is_grpc_answer`]) is judged by a `grpc-status` in its
/// headers (a Trailers-Only response); without one its outcome lies in the
/// trailers and the head is a success so far. Any other response is judged
/// by its status.
pub fn classify_response(
    status: StatusCode,
    headers: &HeaderMap,
) -> (Verdict, Option<FailureKind>) {
    if is_grpc_answer(status, headers) {
        return match GrpcCode::from_headers(headers) {
            Some(code) => classify_grpc_code(code),
            None => (Verdict::Success, None),
        };
    }
    match classify_status(status) {
        Verdict::Success => (Verdict::Success, None),
        v => (v, Some(FailureKind::Status(status))),
    }
}

/// The failure a gRPC code amounts to, if any, and the table's verdict.
pub fn classify_grpc_code(code: GrpcCode) -> (Verdict, Option<FailureKind>) {
    match classify_grpc(code) {
        Verdict::Success => (Verdict::Success, None),
        v => (v, Some(FailureKind::Grpc(code))),
    }
}

/// The verdict of the tables on a failure kind: statuses and gRPC codes by
/// their table, transport failures as retryable (whether a retry is *safe*
/// is a separate question, answered by [`FailureKind::reach`]).
pub fn verdict_of(kind: &FailureKind) -> Verdict {
    match kind {
        FailureKind::Status(s) => classify_status(*s),
        FailureKind::Grpc(c) => classify_grpc(*c),
        FailureKind::Cancelled(_)
        | FailureKind::TotalTimeout(_)
        | FailureKind::InvalidRequest
        | FailureKind::RateLimitHold
        | FailureKind::QuotaExhausted
        | FailureKind::StreamError => Verdict::Fatal,
        _ => Verdict::Retryable,
    }
}

/// Why a request failed, read from the error's whole source chain by type,
/// never by message text.
///
/// Recognised: sturdy's [`TimeoutError`], [`DnsError`], [`ConnectError`],
/// [`InvalidProfile`] and [`PacerError`];
/// hyper-util's client error (`is_connect`); `hyper::Error`; h2's
/// REFUSED_STREAM, the server's GOAWAY, and resets; `io::Error` kinds (looking inside with
/// `get_ref`, since `io::Error::source` skips the error it wraps); rustls
/// errors (feature `tls`); tonic's `ConnectError`, `TimeoutExpired` and
/// `Status` (feature `grpc`). Anything else is [`FailureKind::Other`].
///
/// ```
/// use std::io;
/// use sturdy_core::{classify_error, FailureKind, Reach};
/// let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
/// assert_eq!(classify_error(&refused), FailureKind::ConnectRefused);
/// assert_eq!(classify_error(&refused).reach(), Reach::NotSent);
/// ```
pub fn classify_error(err: &(dyn StdError + 'static)) -> FailureKind {
    let mut connecting = false;
    let mut fallback = None;
    let mut cur = Some(err);
    while let Some(e) = cur {
        match one(e, &mut connecting) {
            Step::Done(kind) => return kind,
            Step::Fallback(kind) => fallback = fallback.or(Some(kind)),
            Step::Next => {}
        }
        cur = next_in_chain(e);
    }
    match fallback {
        Some(k) => k,
        None if connecting => FailureKind::Connect,
        None => FailureKind::Other,
    }
}

/// Like [`classify_error`], for an error that ended a response body: the
/// head had arrived, so anything but a timeout or a cancellation is
/// [`FailureKind::ResponseBody`].
pub fn classify_body_error(err: &(dyn StdError + 'static)) -> FailureKind {
    match classify_error(err) {
        k @ (FailureKind::ReadTimeout
        | FailureKind::TotalTimeout(_)
        | FailureKind::Cancelled(_)
        | FailureKind::Grpc(_)) => k,
        _ => FailureKind::ResponseBody,
    }
}

enum Step {
    Done(FailureKind),
    Fallback(FailureKind),
    Next,
}

fn next_in_chain<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a (dyn StdError + 'static)> {
    match e.downcast_ref::<io::Error>() {
        Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
        None => e.source(),
    }
}

fn one(e: &(dyn StdError + 'static), connecting: &mut bool) -> Step {
    if let Some(t) = e.downcast_ref::<TimeoutError>() {
        return Step::Done(t.kind());
    }
    if e.is::<DnsError>() {
        return Step::Done(FailureKind::Dns);
    }
    if e.is::<InvalidProfile>() {
        return Step::Done(FailureKind::InvalidRequest);
    }
    if e.is::<PacerError>() {
        return Step::Done(FailureKind::RateLimitHold);
    }
    if let Some(c) = e.downcast_ref::<ConnectError>() {
        *connecting = true;
        return match c.part() {
            _ if c.is_timeout() => Step::Done(FailureKind::ConnectTimeout),
            ConnectPart::Dns => Step::Done(FailureKind::Dns),
            ConnectPart::Tls => Step::Done(FailureKind::Tls),
            ConnectPart::Tcp | ConnectPart::Proxy => Step::Next,
        };
    }
    if let Some(c) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
        if c.is_connect() {
            *connecting = true;
        }
        return Step::Next;
    }
    if let Some(h) = e.downcast_ref::<hyper::Error>() {
        return hyper_step(h);
    }
    if let Some(h) = e.downcast_ref::<h2::Error>() {
        if h.reason() == Some(h2::Reason::REFUSED_STREAM) {
            return Step::Done(FailureKind::RefusedStream);
        }
        // h2 gives a stream the server's own GOAWAY only when the frame's
        // last stream ID is below it (or when the stream could not open
        // after the frame came): the server did not process it, whatever
        // the frame's reason. Streams the server did take end otherwise
        // (with its answer, or a broken pipe when the connection closes).
        if h.is_go_away() && h.is_remote() {
            return Step::Done(FailureKind::GoAway);
        }
        if h.is_io() {
            return Step::Next;
        }
        // A reset or GOAWAY this side's h2 sent because of what the server
        // sent (an oversized or undecodable header block): an answer was
        // unreadable. h2 answers a header block far over its limit with a
        // GOAWAY, which ends every stream on the connection: each of them
        // was lost to that unreadable answer, so each is labelled so.
        let malformed = matches!(
            h.reason(),
            Some(h2::Reason::PROTOCOL_ERROR | h2::Reason::COMPRESSION_ERROR)
        );
        if h.is_library() && malformed {
            return Step::Fallback(FailureKind::MalformedResponse);
        }
        return Step::Fallback(FailureKind::Reset);
    }
    if let Some(io) = e.downcast_ref::<io::Error>() {
        return io_step(io, *connecting);
    }
    #[cfg(feature = "tls")]
    if e.is::<rustls::Error>() {
        return Step::Done(FailureKind::Tls);
    }
    #[cfg(feature = "grpc")]
    if let Some(step) = tonic_step(e, connecting) {
        return step;
    }
    Step::Next
}

fn hyper_step(h: &hyper::Error) -> Step {
    if h.is_canceled() {
        // The dispatcher gave the request back unsent: its connection went
        // away before the request was written.
        Step::Fallback(FailureKind::Connect)
    } else if h.is_incomplete_message() || h.is_body_write_aborted() || h.is_closed() {
        Step::Fallback(FailureKind::Reset)
    } else if h.is_parse() {
        // The client parses only responses: a head came back unreadable.
        Step::Fallback(FailureKind::MalformedResponse)
    } else if h.is_user() && h.source().is_some() {
        // A user error with a cause is the request body's own error.
        Step::Fallback(FailureKind::RequestBody)
    } else {
        Step::Next
    }
}

fn io_step(io: &io::Error, connecting: bool) -> Step {
    use io::ErrorKind as E;
    let kind = match io.kind() {
        E::ConnectionRefused => FailureKind::ConnectRefused,
        E::TimedOut if connecting => FailureKind::ConnectTimeout,
        _ if connecting => FailureKind::Connect,
        E::ConnectionReset
        | E::ConnectionAborted
        | E::BrokenPipe
        | E::UnexpectedEof
        | E::NotConnected => FailureKind::Reset,
        _ => return Step::Next,
    };
    // A typed error inside the io::Error is more specific than its kind.
    if io.get_ref().is_some() {
        Step::Fallback(kind)
    } else {
        Step::Done(kind)
    }
}

#[cfg(feature = "grpc")]
fn tonic_step(e: &(dyn StdError + 'static), connecting: &mut bool) -> Option<Step> {
    if e.is::<tonic::ConnectError>() {
        *connecting = true;
        return Some(Step::Next);
    }
    if e.is::<tonic::TimeoutExpired>() {
        return Some(Step::Done(FailureKind::HeadersTimeout));
    }
    if let Some(status) = e.downcast_ref::<tonic::Status>() {
        let code = GrpcCode::from_i32(status.code() as i32).unwrap_or(GrpcCode::Unknown);
        return Some(Step::Fallback(FailureKind::Grpc(code)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_is_found_by_scan_and_by_lookup_alike() {
        let key = http::HeaderName::from_static("idempotency-key");
        for names in [0, 1, 8, 9, 30] {
            for present in [false, true] {
                let mut map = HeaderMap::new();
                for i in 0..names {
                    let name = http::HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap();
                    map.append(name.clone(), http::HeaderValue::from_static("a"));
                    // Second values do not count as names.
                    map.append(name, http::HeaderValue::from_static("b"));
                }
                map.insert(
                    http::header::CONTENT_TYPE,
                    "application/json".parse().unwrap(),
                );
                if present {
                    map.insert(key.clone(), "k".parse().unwrap());
                }
                assert_eq!(header(&map, &key).is_some(), present, "{names} names");
            }
        }
    }

    #[test]
    fn content_type_is_the_first_value_whether_scanned_or_looked_up() {
        for lines in [0, 3, 16, 17, 40] {
            for present in [false, true] {
                let mut headers = HeaderMap::new();
                for i in 0..lines {
                    let name = http::HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap();
                    headers.insert(name, "v".parse().unwrap());
                }
                if present {
                    headers.append(
                        http::header::CONTENT_TYPE,
                        "text/event-stream".parse().unwrap(),
                    );
                    headers.append(
                        http::header::CONTENT_TYPE,
                        "application/json".parse().unwrap(),
                    );
                }
                let want = present.then_some(&b"text/event-stream"[..]);
                assert_eq!(content_type(&headers), want, "{lines} lines");
                assert_eq!(
                    content_type(&headers),
                    headers
                        .get(http::header::CONTENT_TYPE)
                        .map(|v| v.as_bytes())
                );
            }
        }
    }
    use crate::{Phase, Reach};
    use std::time::Duration;

    #[derive(Debug)]
    struct Wrap(Box<dyn StdError + Send + Sync>);
    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl StdError for Wrap {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn every_status_row_is_applied() {
        for r in STATUS_TABLE {
            let s = StatusCode::from_u16(r.code).unwrap();
            assert_eq!(classify_status(s), r.verdict, "{}", r.code);
        }
        let retryable: Vec<u16> = (100..600)
            .filter(|c| classify_status(StatusCode::from_u16(*c).unwrap()) == Verdict::Retryable)
            .collect();
        assert_eq!(
            retryable,
            [
                408, 409, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529
            ]
        );
        for code in [200, 201, 204, 301, 304] {
            assert_eq!(
                classify_status(StatusCode::from_u16(code).unwrap()),
                Verdict::Success
            );
        }
        for code in [400, 401, 403, 404, 418, 422, 501, 505, 506, 511, 525, 530] {
            assert_eq!(
                classify_status(StatusCode::from_u16(code).unwrap()),
                Verdict::Fatal
            );
        }
    }

    #[test]
    fn every_grpc_code_has_a_verdict() {
        for c in GrpcCode::ALL {
            let expect = match c {
                GrpcCode::Ok => Verdict::Success,
                GrpcCode::Unavailable | GrpcCode::ResourceExhausted => Verdict::Retryable,
                _ => Verdict::Fatal,
            };
            assert_eq!(classify_grpc(c), expect, "{c:?}");
        }
    }

    #[test]
    fn grpc_trailers_only_heads_are_judged_by_grpc_status() {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/grpc".parse().unwrap());
        assert_eq!(
            classify_response(StatusCode::OK, &h),
            (Verdict::Success, None)
        );
        h.insert("grpc-status", "14".parse().unwrap());
        assert_eq!(
            classify_response(StatusCode::OK, &h),
            (
                Verdict::Retryable,
                Some(FailureKind::Grpc(GrpcCode::Unavailable))
            )
        );
        h.insert("grpc-status", "banana".parse().unwrap());
        assert_eq!(
            classify_response(StatusCode::OK, &h),
            (Verdict::Success, None)
        );
        // Two codes in one head: which one is a guess, so neither is read
        // and the outcome is left to the trailers, as with garbage.
        h.insert("grpc-status", "14".parse().unwrap());
        h.append("grpc-status", "0".parse().unwrap());
        assert_eq!(
            classify_response(StatusCode::OK, &h),
            (Verdict::Success, None)
        );
        let plain = HeaderMap::new();
        assert_eq!(
            classify_response(StatusCode::BAD_GATEWAY, &plain),
            (
                Verdict::Retryable,
                Some(FailureKind::Status(StatusCode::BAD_GATEWAY))
            )
        );
    }

    #[test]
    fn io_errors_are_classified_by_kind_and_by_what_they_wrap() {
        use io::ErrorKind as E;
        for (kind, expect) in [
            (E::ConnectionRefused, FailureKind::ConnectRefused),
            (E::ConnectionReset, FailureKind::Reset),
            (E::BrokenPipe, FailureKind::Reset),
            (E::UnexpectedEof, FailureKind::Reset),
            (E::PermissionDenied, FailureKind::Other),
        ] {
            assert_eq!(classify_error(&io::Error::from(kind)), expect, "{kind:?}");
        }
        let t = TimeoutError::new(Phase::Write, Duration::from_secs(30), Reach::Unknown);
        let io = io::Error::new(E::TimedOut, t);
        assert_eq!(classify_error(&io), FailureKind::WriteTimeout);
        let wrapped = Wrap(Box::new(io::Error::other(DnsError::no_addresses("x.test"))));
        assert_eq!(classify_error(&wrapped), FailureKind::Dns);
    }

    #[test]
    fn connect_errors_name_their_part() {
        let refused = ConnectError::new(
            ConnectPart::Tcp,
            io::Error::from(io::ErrorKind::ConnectionRefused),
        );
        assert_eq!(classify_error(&refused), FailureKind::ConnectRefused);
        let other = ConnectError::new(
            ConnectPart::Tcp,
            io::Error::from(io::ErrorKind::AddrNotAvailable),
        );
        assert_eq!(classify_error(&other), FailureKind::Connect);
        let tls = ConnectError::new(
            ConnectPart::Tls,
            io::Error::from(io::ErrorKind::InvalidData),
        );
        assert_eq!(classify_error(&tls), FailureKind::Tls);
        let t = TimeoutError::new(Phase::Connect, Duration::from_secs(10), Reach::NotSent);
        let stalled = ConnectError::new(ConnectPart::Dns, t);
        assert!(stalled.is_timeout());
        assert_eq!(classify_error(&stalled), FailureKind::ConnectTimeout);
        assert_eq!(stalled.to_string(), "connect timed out during dns");
    }

    #[test]
    fn timeouts_before_a_connection_are_not_sent() {
        let before = TimeoutError::new(Phase::Headers, Duration::from_secs(1), Reach::NotSent);
        assert_eq!(classify_error(&before), FailureKind::ConnectTimeout);
        let after = TimeoutError::new(Phase::Headers, Duration::from_secs(1), Reach::Unknown);
        assert_eq!(classify_error(&after), FailureKind::HeadersTimeout);
        let total = TimeoutError::new(Phase::Total, Duration::from_secs(1), Reach::Acknowledged);
        assert_eq!(classify_error(&total).reach(), Reach::Acknowledged);
    }

    #[test]
    fn h2_refused_stream_is_not_sent() {
        let e = h2::Error::from(h2::Reason::REFUSED_STREAM);
        assert_eq!(
            classify_error(&Wrap(Box::new(e))),
            FailureKind::RefusedStream
        );
        let e = h2::Error::from(h2::Reason::INTERNAL_ERROR);
        assert_eq!(classify_error(&e), FailureKind::Reset);
    }

    #[test]
    fn body_errors_are_response_body_unless_timed_out() {
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(classify_body_error(&reset), FailureKind::ResponseBody);
        let t = TimeoutError::new(Phase::Read, Duration::from_secs(1), Reach::Acknowledged);
        assert_eq!(classify_body_error(&t), FailureKind::ReadTimeout);
    }

    #[test]
    fn a_pacer_refusal_is_a_rate_limit_hold_never_sent_nor_retried() {
        let e = PacerError::reset_beyond_deadline(
            "api.test:443".into(),
            Duration::from_secs(30),
            Duration::from_secs(1),
        );
        let kind = classify_error(&Wrap(Box::new(e)));
        assert_eq!(kind, FailureKind::RateLimitHold);
        assert_eq!(
            (kind.label(), kind.reach()),
            ("rate_limit_hold", Reach::NotSent)
        );
        assert_eq!(verdict_of(&kind), Verdict::Fatal);
    }

    #[test]
    fn message_text_is_never_read() {
        let liar = io::Error::other("connection refused dns tls timeout");
        assert_eq!(classify_error(&liar), FailureKind::Other);
    }
}
