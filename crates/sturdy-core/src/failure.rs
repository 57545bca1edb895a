//! What happened to an attempt or a call: how far it got ([`Reach`]) and why
//! it failed ([`FailureKind`]), with the stable labels metrics and reports use.

use std::fmt;

/// Where an attempt got to before it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reach {
    /// The request never left the client: DNS, a refused or timed-out
    /// connect, the TLS handshake, a ready timeout, a timeout before a
    /// connection was obtained, HTTP/2 REFUSED_STREAM. Always safe to retry;
    /// never on any server's dashboard.
    NotSent,
    /// It was sent, or partly sent, but no response head came back: a reset,
    /// a closed connection, a headers timeout on an established connection.
    /// The server may have processed it.
    Unknown,
    /// A response head arrived: the server saw it.
    Acknowledged,
}

impl Reach {
    /// Every reach, from least to most far.
    pub const ALL: [Reach; 3] = [Reach::NotSent, Reach::Unknown, Reach::Acknowledged];

    /// A stable label: `not_sent`, `unknown`, `acknowledged`.
    pub const fn label(self) -> &'static str {
        match self {
            Reach::NotSent => "not_sent",
            Reach::Unknown => "unknown",
            Reach::Acknowledged => "acknowledged",
        }
    }
}

impl fmt::Display for Reach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A gRPC status code (the wire numbers 0 to 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)] // the names are gRPC's own
pub enum GrpcCode {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl GrpcCode {
    /// Every code, in wire order.
    pub const ALL: [GrpcCode; 17] = [
        GrpcCode::Ok,
        GrpcCode::Cancelled,
        GrpcCode::Unknown,
        GrpcCode::InvalidArgument,
        GrpcCode::DeadlineExceeded,
        GrpcCode::NotFound,
        GrpcCode::AlreadyExists,
        GrpcCode::PermissionDenied,
        GrpcCode::ResourceExhausted,
        GrpcCode::FailedPrecondition,
        GrpcCode::Aborted,
        GrpcCode::OutOfRange,
        GrpcCode::Unimplemented,
        GrpcCode::Internal,
        GrpcCode::Unavailable,
        GrpcCode::DataLoss,
        GrpcCode::Unauthenticated,
    ];

    /// The code for a wire number, if it is one of the seventeen.
    pub fn from_i32(n: i32) -> Option<GrpcCode> {
        usize::try_from(n)
            .ok()
            .and_then(|i| GrpcCode::ALL.get(i).copied())
    }

    /// Parses a `grpc-status` header value (ASCII digits only).
    pub fn from_header(value: &[u8]) -> Option<GrpcCode> {
        if value.is_empty() || value.len() > 2 || !value.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = value.iter().fold(0i32, |n, d| n * 10 + i32::from(d - b'0'));
        GrpcCode::from_i32(n)
    }

    /// The `grpc-status` of a head or of trailers: `None` when absent,
    /// malformed, or given more than once (which of two would be a guess).
    pub fn from_headers(headers: &http::HeaderMap) -> Option<GrpcCode> {
        crate::hints::Field::of(headers, "grpc-status")
            .value()
            .and_then(GrpcCode::from_header)
    }

    /// The label metrics use: `grpc_` and the lowercase name (`grpc_unavailable`).
    pub const fn label(self) -> &'static str {
        match self {
            GrpcCode::Ok => "grpc_ok",
            GrpcCode::Cancelled => "grpc_cancelled",
            GrpcCode::Unknown => "grpc_unknown",
            GrpcCode::InvalidArgument => "grpc_invalid_argument",
            GrpcCode::DeadlineExceeded => "grpc_deadline_exceeded",
            GrpcCode::NotFound => "grpc_not_found",
            GrpcCode::AlreadyExists => "grpc_already_exists",
            GrpcCode::PermissionDenied => "grpc_permission_denied",
            GrpcCode::ResourceExhausted => "grpc_resource_exhausted",
            GrpcCode::FailedPrecondition => "grpc_failed_precondition",
            GrpcCode::Aborted => "grpc_aborted",
            GrpcCode::OutOfRange => "grpc_out_of_range",
            GrpcCode::Unimplemented => "grpc_unimplemented",
            GrpcCode::Internal => "grpc_internal",
            GrpcCode::Unavailable => "grpc_unavailable",
            GrpcCode::DataLoss => "grpc_data_loss",
            GrpcCode::Unauthenticated => "grpc_unauthenticated",
        }
    }
}

/// Why an attempt or a call failed, with how far it got ([`FailureKind::reach`])
/// and a stable, low-cardinality [`FailureKind::label`].
///
/// | label | reach | meaning |
/// |---|---|---|
/// | `dns` | not_sent | the resolver failed ([`DnsError`](crate::DnsError)) |
/// | `connect_refused` | not_sent | nobody listens on the port |
/// | `connect_timeout` | not_sent | the connect limit fired (DNS, TCP or TLS stalled), or an attempt timed out before it obtained a connection |
/// | `connect` | not_sent | any other connect failure, or a connection lost before the request was written |
/// | `tls` | not_sent | the TLS handshake failed |
/// | `refused_stream` | not_sent | HTTP/2 REFUSED_STREAM: the server did not process the stream |
/// | `goaway` | not_sent | the server's HTTP/2 GOAWAY left the stream out of what it processed (a server draining, or one at its per-connection request limit) |
/// | `ready_timeout` | not_sent | the inner service had no capacity within `ready` |
/// | `invalid_request` | not_sent | refused before it was sent: the request carried an invalid [`Profile`](crate::Profile) |
/// | `rate_limit_hold` | not_sent | refused before it was sent: the server's rate-limit headers left no room before the call's deadline ([`PacerError`](crate::PacerError)) |
/// | `write_timeout` | unknown | a socket write made no progress within the client's `write` limit |
/// | `headers_timeout` | unknown | no response head within `headers` on an established connection |
/// | `reset` | unknown | the connection was reset or closed before a response head |
/// | `request_body` | unknown | the request body failed while being sent |
/// | `malformed_response` | unknown | a response head came back that could not be read (bad bytes, over hyper's limits: 100 headers on HTTP/1, 16 KiB on HTTP/2; there h2 closes the connection, and every stream on it ends so) |
/// | `other` | unknown | anything not recognised |
/// | `read_timeout` | acknowledged | silence between body frames longer than `read` |
/// | `insufficient_quota` | acknowledged | the account is out of quota (an OpenAI-compatible error body): never retried |
/// | `stream_error` | acknowledged | an error object inside a stream that had begun |
/// | `response_body` | acknowledged | the response body failed after the head (a stream cut mid-way) |
/// | `total_timeout` | where it fired | the whole-call deadline passed |
/// | `cancelled` | where it happened | the caller dropped the future or the body |
/// | `503`, `429`, ... | acknowledged | an HTTP status that counts as a failure |
/// | `grpc_unavailable`, ... | acknowledged | a gRPC status other than OK |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The resolver failed.
    Dns,
    /// The connection was refused.
    ConnectRefused,
    /// Connecting (DNS + TCP + TLS) took longer than allowed.
    ConnectTimeout,
    /// Any other failure to obtain a connection.
    Connect,
    /// The TLS handshake failed.
    Tls,
    /// HTTP/2 REFUSED_STREAM.
    RefusedStream,
    /// The server sent an HTTP/2 GOAWAY whose last stream ID is below this
    /// stream's: by RFC 9113 (§6.8) it did not process the stream, and the
    /// request is safe to send again on another connection.
    GoAway,
    /// The inner service had no capacity in time.
    ReadyTimeout,
    /// Refused before it was sent, for what the request itself carried (an
    /// invalid per-request [`Profile`](crate::Profile)). Not retried.
    InvalidRequest,
    /// Refused before it was sent by a rate-limit pacer: the server's
    /// rate-limit headers said it had no room left until an instant past the
    /// call's deadline, so holding the attempt until then could only end in a
    /// timeout ([`PacerError`](crate::PacerError)). Not retried: a retry
    /// would meet the same wait.
    RateLimitHold,
    /// A socket write made no progress in time.
    WriteTimeout,
    /// No response head in time on an established connection.
    HeadersTimeout,
    /// Too long a silence between response body frames.
    ReadTimeout,
    /// The call's deadline passed; the reach says where it was.
    TotalTimeout(Reach),
    /// Reset or closed before a response head.
    Reset,
    /// The request body failed.
    RequestBody,
    /// A response head came back but could not be parsed (invalid bytes,
    /// too many or too large headers). The server saw the request, but what
    /// it answered is unknown, so the reach is `Unknown`. On HTTP/2, h2
    /// closes the connection such a head came on (a GOAWAY), and every
    /// stream on it ends with this failure.
    MalformedResponse,
    /// The response body failed after the head.
    ResponseBody,
    /// The account is out of quota or credit: an OpenAI-compatible error
    /// body whose `type` or `code` is `insufficient_quota` (on a 429 or a
    /// 403, or inside a stream). Not a rate limit: retrying only delays the
    /// error.
    QuotaExhausted,
    /// An error object the server sent inside a stream it had begun
    /// (`data: {"error": ...}` in server-sent events): the answer failed
    /// after its head said it would not.
    StreamError,
    /// The caller gave up; the reach says where it was.
    Cancelled(Reach),
    /// Not recognised.
    Other,
    /// An HTTP status that counts as a failure.
    Status(http::StatusCode),
    /// A gRPC status other than OK.
    Grpc(GrpcCode),
}

impl FailureKind {
    /// How far the attempt got.
    pub const fn reach(&self) -> Reach {
        match self {
            FailureKind::Dns
            | FailureKind::ConnectRefused
            | FailureKind::ConnectTimeout
            | FailureKind::Connect
            | FailureKind::Tls
            | FailureKind::RefusedStream
            | FailureKind::GoAway
            | FailureKind::ReadyTimeout
            | FailureKind::InvalidRequest
            | FailureKind::RateLimitHold => Reach::NotSent,
            FailureKind::WriteTimeout
            | FailureKind::HeadersTimeout
            | FailureKind::Reset
            | FailureKind::RequestBody
            | FailureKind::MalformedResponse
            | FailureKind::Other => Reach::Unknown,
            FailureKind::ReadTimeout
            | FailureKind::ResponseBody
            | FailureKind::QuotaExhausted
            | FailureKind::StreamError
            | FailureKind::Status(_)
            | FailureKind::Grpc(_) => Reach::Acknowledged,
            FailureKind::TotalTimeout(r) | FailureKind::Cancelled(r) => *r,
        }
    }

    /// The stable label (see the table on [`FailureKind`]). Status codes are
    /// their three digits.
    pub fn label(&self) -> &'static str {
        match self {
            FailureKind::Dns => "dns",
            FailureKind::ConnectRefused => "connect_refused",
            FailureKind::ConnectTimeout => "connect_timeout",
            FailureKind::Connect => "connect",
            FailureKind::Tls => "tls",
            FailureKind::RefusedStream => "refused_stream",
            FailureKind::GoAway => "goaway",
            FailureKind::ReadyTimeout => "ready_timeout",
            FailureKind::InvalidRequest => "invalid_request",
            FailureKind::RateLimitHold => "rate_limit_hold",
            FailureKind::WriteTimeout => "write_timeout",
            FailureKind::HeadersTimeout => "headers_timeout",
            FailureKind::ReadTimeout => "read_timeout",
            FailureKind::TotalTimeout(_) => "total_timeout",
            FailureKind::Reset => "reset",
            FailureKind::RequestBody => "request_body",
            FailureKind::MalformedResponse => "malformed_response",
            FailureKind::ResponseBody => "response_body",
            FailureKind::QuotaExhausted => "insufficient_quota",
            FailureKind::StreamError => "stream_error",
            FailureKind::Cancelled(_) => "cancelled",
            FailureKind::Other => "other",
            FailureKind::Status(s) => status_label(*s),
            FailureKind::Grpc(c) => c.label(),
        }
    }

    /// Whether this is one of the timeouts.
    pub const fn is_timeout(&self) -> bool {
        matches!(
            self,
            FailureKind::ConnectTimeout
                | FailureKind::ReadyTimeout
                | FailureKind::WriteTimeout
                | FailureKind::HeadersTimeout
                | FailureKind::ReadTimeout
                | FailureKind::TotalTimeout(_)
        )
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The three-digit label of a status code, without allocating.
pub fn status_label(status: http::StatusCode) -> &'static str {
    const DIGITS: &str = concat!(
        "100101102103104105106107108109110111112113114115116117118119120121122123124125126127128129",
        "130131132133134135136137138139140141142143144145146147148149150151152153154155156157158159",
        "160161162163164165166167168169170171172173174175176177178179180181182183184185186187188189",
        "190191192193194195196197198199200201202203204205206207208209210211212213214215216217218219",
        "220221222223224225226227228229230231232233234235236237238239240241242243244245246247248249",
        "250251252253254255256257258259260261262263264265266267268269270271272273274275276277278279",
        "280281282283284285286287288289290291292293294295296297298299300301302303304305306307308309",
        "310311312313314315316317318319320321322323324325326327328329330331332333334335336337338339",
        "340341342343344345346347348349350351352353354355356357358359360361362363364365366367368369",
        "370371372373374375376377378379380381382383384385386387388389390391392393394395396397398399",
        "400401402403404405406407408409410411412413414415416417418419420421422423424425426427428429",
        "430431432433434435436437438439440441442443444445446447448449450451452453454455456457458459",
        "460461462463464465466467468469470471472473474475476477478479480481482483484485486487488489",
        "490491492493494495496497498499500501502503504505506507508509510511512513514515516517518519",
        "520521522523524525526527528529530531532533534535536537538539540541542543544545546547548549",
        "550551552553554555556557558559560561562563564565566567568569570571572573574575576577578579",
        "580581582583584585586587588589590591592593594595596597598599",
    );
    let code = usize::from(status.as_u16());
    let i = (code.saturating_sub(100)) * 3;
    DIGITS.get(i..i + 3).unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_are_their_digits() {
        for code in 100..=599u16 {
            let s = http::StatusCode::from_u16(code).unwrap();
            assert_eq!(status_label(s), code.to_string());
        }
        // http allows 600..=999, which the table does not hold
        let odd = http::StatusCode::from_u16(999).unwrap();
        assert_eq!(status_label(odd), "other");
    }

    #[test]
    fn grpc_codes_parse_from_headers() {
        assert_eq!(GrpcCode::from_header(b"14"), Some(GrpcCode::Unavailable));
        assert_eq!(GrpcCode::from_header(b"0"), Some(GrpcCode::Ok));
        for bad in [&b""[..], b"17", b"-1", b"1a", b"999", b" 1"] {
            assert_eq!(GrpcCode::from_header(bad), None, "{bad:?}");
        }
        for (i, c) in GrpcCode::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            assert!(c.label().starts_with("grpc_"));
        }
    }

    #[test]
    fn every_label_has_its_documented_reach() {
        use FailureKind::*;
        let table = [
            (Dns, "dns", Reach::NotSent),
            (ConnectRefused, "connect_refused", Reach::NotSent),
            (ConnectTimeout, "connect_timeout", Reach::NotSent),
            (Connect, "connect", Reach::NotSent),
            (Tls, "tls", Reach::NotSent),
            (RefusedStream, "refused_stream", Reach::NotSent),
            (GoAway, "goaway", Reach::NotSent),
            (ReadyTimeout, "ready_timeout", Reach::NotSent),
            (InvalidRequest, "invalid_request", Reach::NotSent),
            (RateLimitHold, "rate_limit_hold", Reach::NotSent),
            (WriteTimeout, "write_timeout", Reach::Unknown),
            (HeadersTimeout, "headers_timeout", Reach::Unknown),
            (Reset, "reset", Reach::Unknown),
            (RequestBody, "request_body", Reach::Unknown),
            (MalformedResponse, "malformed_response", Reach::Unknown),
            (Other, "other", Reach::Unknown),
            (ReadTimeout, "read_timeout", Reach::Acknowledged),
            (ResponseBody, "response_body", Reach::Acknowledged),
            (QuotaExhausted, "insufficient_quota", Reach::Acknowledged),
            (StreamError, "stream_error", Reach::Acknowledged),
            (
                TotalTimeout(Reach::Unknown),
                "total_timeout",
                Reach::Unknown,
            ),
            (Cancelled(Reach::NotSent), "cancelled", Reach::NotSent),
            (
                Status(http::StatusCode::SERVICE_UNAVAILABLE),
                "503",
                Reach::Acknowledged,
            ),
            (
                Grpc(GrpcCode::Unavailable),
                "grpc_unavailable",
                Reach::Acknowledged,
            ),
        ];
        for (kind, label, reach) in table {
            assert_eq!((kind.label(), kind.reach()), (label, reach));
        }
    }
}
