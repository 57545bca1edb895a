//! Server hints read from a response head: how long to wait, whether to
//! retry at all. Parsing never panics; a value that is garbage, negative,
//! overflowing, in the past or absurdly far ahead is `None`.
//!
//! A peer controls every byte of a head, so the work per hint is bounded
//! whatever the head holds: each hint header is looked up by name (never by
//! walking the map), a value longer than [`MAX_HINT_VALUE_LEN`] is garbage
//! before it is read, and a hint header that appears more than once is
//! garbage too. Each of these headers takes a single value (RFC 9110
//! §10.2.3 for `retry-after`); two copies may disagree, and picking one
//! would be a guess, so sturdy falls back on its own backoff — or, for
//! `grpc-retry-pushback-ms`, on gRPC's rule that a malformed pushback means
//! "do not retry".

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use crate::GrpcCode;

/// Hints further ahead than this are treated as garbage (`None`): no real
/// server asks a client to come back a day later on the same call.
pub const MAX_HINT: Duration = Duration::from_secs(86_400);

/// Hint values longer than this many bytes are garbage. The longest valid
/// one, an asctime or RFC 850 HTTP-date, is under 40 bytes; 64 leaves room
/// for surrounding whitespace and long fractional milliseconds.
pub const MAX_HINT_VALUE_LEN: usize = 64;

/// A single-valued hint header, as a head carries it.
pub(crate) enum Field<'a> {
    /// Not there.
    Absent,
    /// There, but more than once or longer than [`MAX_HINT_VALUE_LEN`].
    Garbage,
    /// There once, with these bytes.
    Value(&'a [u8]),
}

impl<'a> Field<'a> {
    /// Reads `name` from `headers`: two lookups at most, whatever the map
    /// holds.
    pub(crate) fn of(headers: &'a HeaderMap, name: &str) -> Field<'a> {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (None, _) => Field::Absent,
            (Some(_), Some(_)) => Field::Garbage,
            (Some(v), None) if v.len() > MAX_HINT_VALUE_LEN => Field::Garbage,
            (Some(v), None) => Field::Value(v.as_bytes()),
        }
    }

    /// The value, if it is one.
    pub(crate) fn value(self) -> Option<&'a [u8]> {
        match self {
            Field::Value(v) => Some(v),
            Field::Absent | Field::Garbage => None,
        }
    }
}

/// What a gRPC server's `grpc-retry-pushback-ms` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushback {
    /// Retry after this long.
    After(Duration),
    /// Do not retry (a negative or malformed value: gRPC's own rule).
    Stop,
}

/// Hints a server gave in a response head.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::HeaderMap;
/// use sturdy_core::ServerHints;
/// let mut h = HeaderMap::new();
/// h.insert("retry-after", "2".parse().unwrap());
/// h.insert("retry-after-ms", "1500".parse().unwrap());
/// let hints = ServerHints::from_headers(&h, SystemTime::now());
/// // retry-after-ms is the more precise of the two and wins.
/// assert_eq!(hints.delay(), Some(Duration::from_millis(1500)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerHints {
    /// `retry-after`, in seconds or as an HTTP-date.
    pub retry_after: Option<Duration>,
    /// `retry-after-ms`, in (possibly fractional) milliseconds.
    pub retry_after_ms: Option<Duration>,
    /// `x-should-retry: true|false`.
    pub should_retry: Option<bool>,
    /// `grpc-retry-pushback-ms`.
    pub grpc_pushback: Option<Pushback>,
    /// `grpc-status` in the headers (a Trailers-Only gRPC response).
    pub grpc_status: Option<GrpcCode>,
}

impl ServerHints {
    /// Reads every hint from `headers`; `now` is the current wall-clock time,
    /// against which an HTTP-date `retry-after` is measured. A hint header
    /// given twice, or longer than [`MAX_HINT_VALUE_LEN`], counts as garbage
    /// (see the module docs).
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> ServerHints {
        let get = |name: &str| Field::of(headers, name).value();
        ServerHints {
            retry_after: get("retry-after").and_then(|v| parse_retry_after(v, now)),
            retry_after_ms: get("retry-after-ms").and_then(parse_millis),
            should_retry: get("x-should-retry").and_then(parse_bool),
            grpc_pushback: match Field::of(headers, "grpc-retry-pushback-ms") {
                Field::Absent => None,
                Field::Garbage => Some(Pushback::Stop),
                Field::Value(v) => Some(parse_pushback(v)),
            },
            grpc_status: GrpcCode::from_headers(headers),
        }
    }

    /// The delay the server asked for: `retry-after-ms`, else `retry-after`,
    /// else a gRPC pushback.
    pub fn delay(&self) -> Option<Duration> {
        self.retry_after_ms
            .or(self.retry_after)
            .or(match self.grpc_pushback {
                Some(Pushback::After(d)) => Some(d),
                _ => None,
            })
    }

    /// Whether the server said not to retry: `x-should-retry: false` or a
    /// negative gRPC pushback.
    pub fn forbids_retry(&self) -> bool {
        self.should_retry == Some(false) || self.grpc_pushback == Some(Pushback::Stop)
    }
}

fn trimmed(v: &[u8]) -> Option<&str> {
    std::str::from_utf8(v)
        .ok()
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn within_bounds(d: Duration) -> Option<Duration> {
    (d <= MAX_HINT).then_some(d)
}

/// `retry-after`: delta-seconds or an HTTP-date. RFC 9110 §10.2.3 allows
/// digits only; fractional seconds (`1.5`), which some servers send and
/// the OpenAI SDK reads, are accepted too and bounded the same way.
fn parse_retry_after(v: &[u8], now: SystemTime) -> Option<Duration> {
    let s = trimmed(v)?;
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
            .and_then(within_bounds);
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = s.parse().ok()?;
        if !secs.is_finite() || secs < 0.0 || secs > MAX_HINT.as_secs_f64() {
            return None;
        }
        return Some(Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(s).ok()?;
    // A date in the past gives an error here, hence None.
    at.duration_since(now).ok().and_then(within_bounds)
}

/// `retry-after-ms`: non-negative, possibly fractional, milliseconds.
fn parse_millis(v: &[u8]) -> Option<Duration> {
    let s = trimmed(v)?;
    if !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let ms: f64 = s.parse().ok()?;
    if !ms.is_finite() || ms < 0.0 || ms > MAX_HINT.as_millis() as f64 {
        return None;
    }
    Some(Duration::from_secs_f64(ms / 1000.0))
}

fn parse_bool(v: &[u8]) -> Option<bool> {
    let s = trimmed(v)?;
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// `grpc-retry-pushback-ms`: an integer; negative or malformed means stop.
fn parse_pushback(v: &[u8]) -> Pushback {
    let parsed = trimmed(v)
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_millis)
        .and_then(within_bounds);
    match parsed {
        Some(d) => Pushback::After(d),
        None => Pushback::Stop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn now() -> SystemTime {
        // Sun, 06 Nov 1994 08:49:37 GMT, the RFC's example date.
        SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777)
    }

    fn hints(name: &'static str, value: &[u8]) -> ServerHints {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_bytes(value).unwrap());
        ServerHints::from_headers(&h, now())
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"0", Some(0)),
            (b"120", Some(120)),
            (b" 7 ", Some(7)),
            (b"86400", Some(86_400)),
            (b"86401", None),
            (b"-1", None),
            (b"99999999999999999999999", None),
            (b"soon", None),
            (b"", None),
            (b"\xff\xfe", None),
            (b"Sun, 06 Nov 1994 08:49:47 GMT", Some(10)),
            (b"Sun, 06 Nov 1994 08:49:37 GMT", Some(0)),
            (b"Sun, 06 Nov 1994 08:49:27 GMT", None), // past
            (b"Sunday, 06-Nov-94 08:50:37 GMT", Some(60)),
            (b"Sun Nov  6 08:51:37 1994", Some(120)),
            (b"Fri, 31 Dec 9999 23:59:59 GMT", None), // far future
            (b"Sun, 32 Nov 1994 08:49:37 GMT", None),
        ];
        // Fractional seconds, as some servers send them.
        for (value, want) in [
            (&b"1.5"[..], Some(Duration::from_millis(1500))),
            (b"0.25", Some(Duration::from_millis(250))),
            (b"86400.5", None),
            (b"1.2.3", None),
            (b".", None),
        ] {
            assert_eq!(hints("retry-after", value).retry_after, want, "{value:?}");
        }
        for (value, secs) in cases {
            let got = hints("retry-after", value).retry_after;
            assert_eq!(
                got,
                secs.map(Duration::from_secs),
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn retry_after_ms() {
        let cases: &[(&[u8], Option<Duration>)] = &[
            (b"200", Some(Duration::from_millis(200))),
            (b"1.5", Some(Duration::from_micros(1500))),
            (b"0", Some(Duration::ZERO)),
            (b"-5", None),
            (b"NaN", None),
            (b"inf", None),
            (b"1e3", None),
            (b"86400001", None),
            (b"1.2.3", None),
            (b"", None),
        ];
        for (value, expect) in cases {
            assert_eq!(
                hints("retry-after-ms", value).retry_after_ms,
                *expect,
                "{value:?}"
            );
        }
    }

    #[test]
    fn should_retry_and_grpc_headers() {
        assert_eq!(hints("x-should-retry", b"true").should_retry, Some(true));
        assert_eq!(hints("x-should-retry", b"FALSE").should_retry, Some(false));
        assert_eq!(hints("x-should-retry", b"yes").should_retry, None);
        assert!(hints("x-should-retry", b"false").forbids_retry());
        let after = |ms| Some(Pushback::After(Duration::from_millis(ms)));
        assert_eq!(
            hints("grpc-retry-pushback-ms", b"250").grpc_pushback,
            after(250)
        );
        assert_eq!(
            hints("grpc-retry-pushback-ms", b"-1").grpc_pushback,
            Some(Pushback::Stop)
        );
        assert_eq!(
            hints("grpc-retry-pushback-ms", b"x").grpc_pushback,
            Some(Pushback::Stop)
        );
        assert_eq!(
            hints("grpc-retry-pushback-ms", b"99999999999999999999").grpc_pushback,
            Some(Pushback::Stop)
        );
        assert!(hints("grpc-retry-pushback-ms", b"-1").forbids_retry());
        assert_eq!(
            hints("grpc-status", b"14").grpc_status,
            Some(GrpcCode::Unavailable)
        );
        assert_eq!(hints("grpc-status", b"99").grpc_status, None);
    }

    #[test]
    fn the_delay_prefers_milliseconds_then_seconds_then_pushback() {
        let mut h = HeaderMap::new();
        h.insert("grpc-retry-pushback-ms", HeaderValue::from_static("300"));
        assert_eq!(
            ServerHints::from_headers(&h, now()).delay(),
            Some(Duration::from_millis(300))
        );
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(
            ServerHints::from_headers(&h, now()).delay(),
            Some(Duration::from_secs(2))
        );
        h.insert("retry-after-ms", HeaderValue::from_static("100"));
        assert_eq!(
            ServerHints::from_headers(&h, now()).delay(),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            ServerHints::from_headers(&HeaderMap::new(), now()),
            ServerHints::default()
        );
    }

    #[test]
    fn a_hint_given_twice_is_garbage() {
        for (name, a, b) in [
            ("retry-after", "2", "2"),
            ("retry-after", "1", "soon"),
            ("retry-after-ms", "100", "200"),
            ("x-should-retry", "true", "false"),
            ("grpc-status", "14", "14"),
        ] {
            let mut h = HeaderMap::new();
            h.append(name, HeaderValue::from_static(a));
            h.append(name, HeaderValue::from_static(b));
            assert_eq!(
                ServerHints::from_headers(&h, now()),
                ServerHints::default(),
                "{name}: {a} and {b}"
            );
        }
        // A malformed pushback means "stop" in gRPC; so does a repeated one.
        let mut h = HeaderMap::new();
        h.append("grpc-retry-pushback-ms", HeaderValue::from_static("10"));
        h.append("grpc-retry-pushback-ms", HeaderValue::from_static("10"));
        let hints = ServerHints::from_headers(&h, now());
        assert_eq!(hints.grpc_pushback, Some(Pushback::Stop));
        assert!(hints.forbids_retry());
    }

    #[test]
    fn oversized_and_non_ascii_values_are_garbage() {
        let padded = format!("{}7", " ".repeat(MAX_HINT_VALUE_LEN - 1));
        assert_eq!(
            hints("retry-after", padded.as_bytes()).retry_after,
            Some(Duration::from_secs(7)),
            "a value of exactly the limit is read"
        );
        let over = format!("{}7", " ".repeat(MAX_HINT_VALUE_LEN));
        assert_eq!(hints("retry-after", over.as_bytes()).retry_after, None);
        let huge = "9".repeat(1 << 20);
        for name in [
            "retry-after",
            "retry-after-ms",
            "x-should-retry",
            "grpc-status",
        ] {
            assert_eq!(
                hints(name, huge.as_bytes()),
                ServerHints::default(),
                "{name}"
            );
        }
        assert_eq!(
            hints("grpc-retry-pushback-ms", huge.as_bytes()).grpc_pushback,
            Some(Pushback::Stop)
        );
        for bytes in [&b"\xff5"[..], b"5\x80", b"Sun, 06 Nov 1994 08:49:47 GM\xd4"] {
            assert_eq!(hints("retry-after", bytes).retry_after, None, "{bytes:?}");
            assert_eq!(hints("retry-after-ms", bytes).retry_after_ms, None);
        }
    }

    #[test]
    fn thousands_of_headers_do_not_hide_or_fake_a_hint() {
        let mut h = HeaderMap::new();
        for i in 0..5_000 {
            let name = http::HeaderName::from_bytes(format!("x-junk-{i}").as_bytes()).unwrap();
            h.append(name, HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        }
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(
            ServerHints::from_headers(&h, now()).delay(),
            Some(Duration::from_millis(250))
        );
        for _ in 0..5_000 {
            h.append("retry-after", HeaderValue::from_static("1"));
        }
        h.remove("retry-after-ms");
        assert_eq!(ServerHints::from_headers(&h, now()).delay(), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_header_bytes(
            values in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..40), 5),
            secs in 0u64..u64::MAX,
        ) {
            let mut h = HeaderMap::new();
            let names = ["retry-after", "retry-after-ms", "x-should-retry", "grpc-retry-pushback-ms", "grpc-status"];
            for (name, v) in names.iter().zip(values) {
                if let Ok(v) = HeaderValue::from_bytes(&v) {
                    h.insert(*name, v);
                }
            }
            let now = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs)).unwrap_or(SystemTime::UNIX_EPOCH);
            let hints = ServerHints::from_headers(&h, now);
            if let Some(d) = hints.delay() {
                proptest::prop_assert!(d <= MAX_HINT);
            }
        }
    }
}
