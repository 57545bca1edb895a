//! How timeouts speak gRPC: the `grpc-timeout` request header, and timeout
//! errors shaped as `tonic::Status` so generated clients see
//! `DEADLINE_EXCEEDED` (feature `grpc`; without it the error is the plain
//! `TimeoutError`).

use sturdy_core::{BoxError, TimeoutError};

/// The error a timeout is returned as: the [`TimeoutError`] itself, or for
/// a gRPC request a `tonic::Status` `DEADLINE_EXCEEDED` whose source is it.
pub(crate) fn timeout_error(err: TimeoutError, grpc: bool) -> BoxError {
    #[cfg(feature = "grpc")]
    if grpc {
        let mut status = tonic::Status::deadline_exceeded(err.to_string());
        status.set_source(std::sync::Arc::new(err));
        return Box::new(status);
    }
    let _ = grpc;
    Box::new(err)
}

/// Whether a gRPC answer is the server's own expiry of the `grpc-timeout`
/// this call sent: a Trailers-Only `CANCELLED` (what a tonic server answers,
/// "Timeout expired") or `DEADLINE_EXCEEDED`, arriving once the limit it was
/// sent for (`limit_at`) has passed, give or take [`EXPIRY_SLACK`]. The
/// server's timer and the client's fire at the same instant; whichever
/// wins the race, the call ends as the client's own timeout, recorded and
/// returned as `DEADLINE_EXCEEDED`.
pub(crate) fn is_expiry_answer(headers: &http::HeaderMap, limit_at: tokio::time::Instant) -> bool {
    use sturdy_core::GrpcCode;
    matches!(
        GrpcCode::from_headers(headers),
        Some(GrpcCode::Cancelled | GrpcCode::DeadlineExceeded)
    ) && tokio::time::Instant::now() + EXPIRY_SLACK >= limit_at
}

/// How early a server's expiry may arrive and still be the same limit: the
/// `grpc-timeout` sent is rounded down to its unit (under a millisecond
/// below 100 seconds), and timers fire on millisecond ticks.
pub(crate) const EXPIRY_SLACK: std::time::Duration = std::time::Duration::from_millis(2);

/// Whether an inner error is tonic's own client-side `grpc-timeout` expiry,
/// which races the attempt's timer for the same instant (tonic's `Channel`
/// enforces the header this layer sets); the layer reports it as its own.
#[cfg(feature = "grpc")]
pub(crate) fn is_tonic_timeout(err: &BoxError) -> bool {
    // The Channel wraps it in its transport error.
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&**err);
    while let Some(e) = cur {
        if e.is::<tonic::TimeoutExpired>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// Without the `grpc` feature tonic's errors are not recognised.
#[cfg(not(feature = "grpc"))]
pub(crate) fn is_tonic_timeout(_: &BoxError) -> bool {
    false
}

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`). `None` for anything else.
///
/// ```
/// use std::time::Duration;
/// use sturdy_timeout::grpc_timeout;
/// assert_eq!(grpc_timeout::parse(b"250m"), Some(Duration::from_millis(250)));
/// assert_eq!(grpc_timeout::parse(b"123456789S"), None);
/// assert_eq!(grpc_timeout::encode(Duration::from_millis(1500)), "1500000u");
/// ```
pub mod grpc_timeout {
    use std::time::Duration;

    /// The header's name.
    pub const HEADER: &str = "grpc-timeout";

    /// Parses a `grpc-timeout` value; `None` when malformed.
    pub fn parse(value: &[u8]) -> Option<Duration> {
        let (&unit, digits) = value.split_last()?;
        if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        Some(match unit {
            b'H' => Duration::from_secs(n * 3600),
            b'M' => Duration::from_secs(n * 60),
            b'S' => Duration::from_secs(n),
            b'm' => Duration::from_millis(n),
            b'u' => Duration::from_micros(n),
            b'n' => Duration::from_nanos(n),
            _ => return None,
        })
    }

    /// Encodes `limit` in the finest unit whose value fits in 8 digits,
    /// rounded down (so the server never waits longer than the client),
    /// clamped at 99999999 hours.
    pub fn encode(limit: Duration) -> http::HeaderValue {
        const MAX: u128 = 99_999_999;
        let nanos = limit.as_nanos();
        let (value, unit) = [
            (1u128, b'n'),
            (1_000, b'u'),
            (1_000_000, b'm'),
            (1_000_000_000, b'S'),
            (60_000_000_000, b'M'),
            (3_600_000_000_000, b'H'),
        ]
        .into_iter()
        .map(|(per, unit)| (nanos / per, unit))
        .find(|(v, _)| *v <= MAX)
        .unwrap_or((MAX, b'H'));
        let mut buf = [0u8; 9];
        let mut v = value;
        let mut i = buf.len() - 1;
        buf[i] = unit;
        loop {
            i -= 1;
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        // Digits and a unit letter are always a valid header value.
        http::HeaderValue::from_bytes(&buf[i..])
            .unwrap_or_else(|_| http::HeaderValue::from_static("99999999H"))
    }
}

#[cfg(test)]
mod tests {
    use super::grpc_timeout::{encode, parse};
    use std::time::Duration;

    #[test]
    fn grpc_timeout_round_trips_within_one_unit() {
        for d in [
            Duration::from_nanos(1),
            Duration::from_nanos(99_999_999),
            Duration::from_millis(100),
            Duration::from_millis(1500),
            Duration::from_secs(60),
            Duration::from_secs(30 * 60),
            Duration::from_secs(10 * 365 * 86_400),
        ] {
            let v = encode(d);
            assert!(v.len() <= 9, "{v:?}");
            let back = parse(v.as_bytes()).unwrap();
            assert!(back <= d, "{d:?} -> {v:?} -> {back:?}");
            assert!(
                d - back < d / 1000 + Duration::from_nanos(1),
                "{d:?} -> {v:?}"
            );
        }
        assert_eq!(encode(Duration::ZERO).as_bytes(), b"0n");
        assert_eq!(encode(Duration::MAX).as_bytes(), b"99999999H");
    }

    #[test]
    fn malformed_grpc_timeouts_are_refused() {
        for bad in [
            &b""[..],
            b"m",
            b"10",
            b"10x",
            b"123456789m",
            b"-1m",
            b"1.5S",
            b" 1S",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            parse(b"99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        assert_eq!(parse(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse(b"7n"), Some(Duration::from_nanos(7)));
    }

    #[cfg(feature = "grpc")]
    #[test]
    fn grpc_timeouts_are_deadline_exceeded_and_still_classify_as_timeouts() {
        use std::error::Error as _;
        use sturdy_core::{FailureKind, Phase, Reach, TimeoutError, classify_error};
        let t = TimeoutError::new(Phase::Headers, Duration::from_millis(50), Reach::Unknown);
        let err = super::timeout_error(t, true);
        let status = err.downcast_ref::<tonic::Status>().unwrap();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        let source = status.source().unwrap();
        assert_eq!(source.downcast_ref::<TimeoutError>(), Some(&t));
        assert_eq!(classify_error(&*err), FailureKind::HeadersTimeout);
        // What a generated client does with the service's error keeps it.
        let seen = tonic::Status::from_error(err);
        assert_eq!(seen.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(classify_error(&seen), FailureKind::HeadersTimeout);
        let plain = super::timeout_error(t, false);
        assert!(plain.is::<TimeoutError>());
    }
}
