//! The rate-limit mode: token buckets for requests and for tokens, in front
//! of `POST /v1/chat/completions`, answering as OpenAI's organisation limits
//! do.
//!
//! # Buckets
//!
//! The requests bucket holds at most `burst` requests and refills
//! continuously at the configured rate; each admitted request takes one. With
//! a token limit, a second bucket holds at most `token-burst` tokens, refills
//! at `tpm / 60` per second, and each admitted request takes its estimated
//! tokens. Both start full. A request is admitted only when both buckets
//! have room for it, and then takes from both; a refused request takes
//! nothing.
//!
//! The default burst is one second's worth of the rate, rounded up, at least
//! 1 (`rps=50` holds 50 requests; `tpm=6000` holds 100 tokens). Note the
//! consequence for tokens: a request estimated at more tokens than the token
//! bucket holds can never be admitted; it gets a `429` saying "Request too
//! large", without `retry-after` (OpenAI answers such a request the same
//! way). Raise `token-burst` when requests are big.
//!
//! # The token estimate
//!
//! The server's estimate of a request's tokens, as OpenAI counts a request
//! before running it: the request body's length in bytes divided by 4
//! (rounded up) for the prompt, plus the completion budget: the body's
//! `max_completion_tokens`, else its `max_tokens`, when it is a
//! non-negative whole number (anything else counts 0).
//!
//! # Headers
//!
//! Every answer the limiter decided (a normal answer or its `429`) carries,
//! as OpenAI's do:
//!
//! - `x-ratelimit-limit-requests`: the bucket's capacity (its burst);
//! - `x-ratelimit-remaining-requests`: whole requests left in it, after
//!   this one;
//! - `x-ratelimit-reset-requests`: how long until it is full again, in Go's
//!   duration format rounded up to the millisecond (`0s`, `20ms`, `1s`,
//!   `59.52s`, `6m0s`, `1h0m0s`);
//!
//! and the same three for `-tokens` when a token limit is set. A `429` also
//! carries `retry-after-ms` (milliseconds, rounded up) and `retry-after`
//! (whole seconds, rounded up) until the bucket that lacked room has room
//! for the request again, and an OpenAI error body:
//! `{"error":{"message":"Rate limit reached for requests ...","type":"requests","param":null,"code":"rate_limit_exceeded"}}`
//! (`"type":"tokens"` when the token bucket is the one that lacks room).
//! [`RateLimit::headers`] and [`RateLimit::retry_after`] turn either group
//! off, so a test can compare a client's pacing with and without them.

use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::spec::{self, SpecError};

/// Largest request rate, per second (or per minute for `rpm`).
const MAX_REQUEST_RATE: f64 = 1e9;

/// Largest token rate, per minute.
const MAX_TOKEN_RATE: f64 = 1e12;

/// Largest burst, requests or tokens.
const MAX_BURST: u64 = 1_000_000_000_000;

/// Longest wait the server computes (a year): a tiny rate must not overflow
/// a `Duration`.
const MAX_WAIT_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// The organisation named in error messages.
const ORGANIZATION: &str = "org-sturdy-faults";

/// A rate limit for [`FaultServerBuilder::rate_limit`](crate::FaultServerBuilder::rate_limit):
/// token buckets per requests and, optionally, per tokens, like OpenAI's
/// organisation limits. See the crate docs for where it applies; the
/// buckets, the token estimate and the headers are described here.
///
/// Rates must be finite and above zero (requests at most 10⁹ per second,
/// tokens at most 10¹² per minute); bursts are whole numbers from 1 to
/// 10¹². A bad value makes [`FaultServerBuilder::start`](crate::FaultServerBuilder::start)
/// fail; a bad spec fails to parse.
///
/// The buckets hold at most their burst and refill continuously; both start
/// full. A request is admitted when the requests bucket holds at least one
/// request and the token bucket (if any) at least its estimated tokens
/// (the request body's length / 4, rounded up, plus its
/// `max_completion_tokens` or else `max_tokens`); it then takes from both.
/// A refused request takes nothing and gets a `429`. The default burst is
/// one second's worth of the rate, rounded up, at least 1; a request
/// estimated at more tokens than the token burst can never pass (a `429`
/// "Request too large", without `retry-after`).
///
/// Every answer the limiter decides carries `x-ratelimit-limit-requests`
/// (the burst), `x-ratelimit-remaining-requests` (whole requests left),
/// `x-ratelimit-reset-requests` (time until the bucket is full, Go duration
/// format such as `20ms`, `1s`, `59.52s`, `6m0s`, rounded up to the
/// millisecond) and the same for `-tokens` when a token limit is set; a
/// `429` also carries `retry-after-ms` and `retry-after` (when the lacking
/// bucket has room again, rounded up).
///
/// The spec (`--rate-limit`) is a comma list of `key=value`:
///
/// | key           | value                                                        |
/// |---------------|--------------------------------------------------------------|
/// | `rps`         | requests per second (a number above 0); or                   |
/// | `rpm`         | requests per minute; exactly one of `rps` and `rpm`          |
/// | `burst`       | the requests bucket's capacity (default: one second's worth) |
/// | `tpm`         | tokens per minute (optional: no token limit without it)      |
/// | `token-burst` | the token bucket's capacity (default: one second's worth)    |
/// | `headers`     | `true`/`false`: send the `x-ratelimit-*` headers (`true`)    |
/// | `retry-after` | `true`/`false`: send `retry-after(-ms)` on a 429 (`true`)    |
///
/// ```
/// use std::time::Duration;
/// use sturdy_faults::RateLimit;
///
/// let limit: RateLimit = "rps=50,burst=50,tpm=100000,headers=true".parse().unwrap();
/// assert_eq!(limit, RateLimit::per_second(50.0).burst(50).tokens_per_minute(100_000.0));
/// assert!("rps=-1".parse::<RateLimit>().is_err());
/// assert!("rps=NaN".parse::<RateLimit>().is_err());
/// assert!("rps=5,rpm=300".parse::<RateLimit>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    /// Requests per second.
    requests_per_second: f64,
    burst: Option<u64>,
    tokens_per_minute: Option<f64>,
    token_burst: Option<u64>,
    headers: bool,
    retry_after: bool,
}

impl RateLimit {
    /// A limit of `requests` per second, with the default burst (one
    /// second's worth) and no token limit.
    pub fn per_second(requests: f64) -> RateLimit {
        RateLimit {
            requests_per_second: requests,
            burst: None,
            tokens_per_minute: None,
            token_burst: None,
            headers: true,
            retry_after: true,
        }
    }

    /// A limit of `requests` per minute (OpenAI's RPM), with the default
    /// burst (one second's worth, `requests / 60` rounded up) and no token
    /// limit.
    pub fn per_minute(requests: f64) -> RateLimit {
        RateLimit::per_second(requests / 60.0)
    }

    /// The requests bucket's capacity: how many requests may come at once
    /// after a quiet spell.
    pub fn burst(mut self, requests: u64) -> Self {
        self.burst = Some(requests);
        self
    }

    /// Adds a token limit of `tokens` per minute (OpenAI's TPM), with the
    /// default token burst (one second's worth, `tokens / 60` rounded up)
    /// unless [`RateLimit::token_burst`] sets it.
    pub fn tokens_per_minute(mut self, tokens: f64) -> Self {
        self.tokens_per_minute = Some(tokens);
        self
    }

    /// The token bucket's capacity; requests estimated above it can never
    /// pass. Needs [`RateLimit::tokens_per_minute`].
    pub fn token_burst(mut self, tokens: u64) -> Self {
        self.token_burst = Some(tokens);
        self
    }

    /// Whether answers carry the `x-ratelimit-*` headers (default `true`).
    pub fn headers(mut self, on: bool) -> Self {
        self.headers = on;
        self
    }

    /// Whether a `429` carries `retry-after-ms` and `retry-after` (default
    /// `true`).
    pub fn retry_after(mut self, on: bool) -> Self {
        self.retry_after = on;
        self
    }

    /// The requests bucket's capacity: the burst given, else one second's
    /// worth of the rate (rounded up, at least 1).
    fn request_capacity(&self) -> u64 {
        self.burst
            .unwrap_or_else(|| one_seconds_worth(self.requests_per_second))
    }

    /// The token bucket's rate per second and capacity, when there is one.
    fn token_bucket(&self) -> Option<(f64, u64)> {
        let per_second = self.tokens_per_minute? / 60.0;
        Some((
            per_second,
            self.token_burst
                .unwrap_or_else(|| one_seconds_worth(per_second)),
        ))
    }

    /// Checks the values a builder may have been given.
    pub(crate) fn validate(&self) -> Result<(), SpecError> {
        let rate_ok = |x: f64, max: f64| x.is_finite() && x > 0.0 && x <= max;
        if !rate_ok(self.requests_per_second, MAX_REQUEST_RATE) {
            return Err(SpecError::new(format!(
                "the request rate {} per second is not above 0 and at most {MAX_REQUEST_RATE}",
                self.requests_per_second
            )));
        }
        if let Some(tpm) = self.tokens_per_minute
            && !rate_ok(tpm, MAX_TOKEN_RATE)
        {
            return Err(SpecError::new(format!(
                "the token rate {tpm} per minute is not above 0 and at most {MAX_TOKEN_RATE}"
            )));
        }
        if self.token_burst.is_some() && self.tokens_per_minute.is_none() {
            return Err(SpecError::new(
                "a token burst needs a token rate (tokens per minute)",
            ));
        }
        for burst in [self.burst, self.token_burst].into_iter().flatten() {
            if !(1..=MAX_BURST).contains(&burst) {
                return Err(SpecError::new(format!(
                    "the burst {burst} is not in 1..={MAX_BURST}"
                )));
            }
        }
        Ok(())
    }
}

/// `per_second` rounded up, at least 1 (and at most [`MAX_BURST`]).
fn one_seconds_worth(per_second: f64) -> u64 {
    if per_second.is_finite() && per_second > 1.0 {
        // In range: validated rates are at most 10¹² / 60 per second.
        (per_second.ceil() as u64).min(MAX_BURST)
    } else {
        1
    }
}

impl FromStr for RateLimit {
    type Err = SpecError;

    /// Parses `rps=50,burst=50,tpm=100000,token-burst=2000,headers=true,retry-after=true`
    /// (see [`RateLimit`] for the keys).
    fn from_str(text: &str) -> Result<RateLimit, SpecError> {
        let known = [
            "rps",
            "rpm",
            "burst",
            "tpm",
            "token-burst",
            "headers",
            "retry-after",
        ];
        let pairs = spec::pairs("rate-limit", text, &known)?;
        let mut limit = None;
        let mut rest = Vec::new();
        for (key, value) in pairs {
            match key.as_str() {
                "rps" | "rpm" => {
                    if limit.is_some() {
                        return Err(SpecError::new("give one of rps and rpm, not both"));
                    }
                    limit = Some(if key == "rps" {
                        RateLimit::per_second(spec::rate(&key, value, MAX_REQUEST_RATE)?)
                    } else {
                        RateLimit::per_minute(spec::rate(&key, value, MAX_REQUEST_RATE * 60.0)?)
                    });
                }
                _ => rest.push((key, value)),
            }
        }
        let mut limit = limit.ok_or_else(|| {
            SpecError::new(format!(
                "rate-limit spec {text:?} lacks a rate: rps=N or rpm=N"
            ))
        })?;
        for (key, value) in rest {
            limit = match key.as_str() {
                "burst" => limit.burst(spec::whole(&key, value, 1, MAX_BURST)?),
                "tpm" => limit.tokens_per_minute(spec::rate(&key, value, MAX_TOKEN_RATE)?),
                "token-burst" => limit.token_burst(spec::whole(&key, value, 1, MAX_BURST)?),
                "headers" => limit.headers(spec::flag(&key, value)?),
                _ => limit.retry_after(spec::flag(&key, value)?),
            };
        }
        limit.validate()?;
        Ok(limit)
    }
}

/// The server's estimate of a chat request's tokens: its body's bytes / 4
/// (rounded up) plus `max_completion_tokens`, else `max_tokens`, when that
/// is a non-negative whole number.
pub(crate) fn token_cost(body: &[u8]) -> u64 {
    let prompt = body.len().div_ceil(4) as u64;
    let budget = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|value| {
            let field = |name: &str| value.get(name).and_then(Value::as_u64);
            field("max_completion_tokens").or_else(|| field("max_tokens"))
        })
        .unwrap_or(0);
    prompt.saturating_add(budget)
}

/// A wait in seconds as a `Duration`, clamped to [0, a year].
fn seconds(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs.clamp(0.0, MAX_WAIT_SECS))
        .unwrap_or(Duration::from_secs_f64(MAX_WAIT_SECS))
}

/// `d` rounded up to the millisecond, in Go's `time.Duration` format:
/// `0s`, `20ms`, `1s`, `1.5s`, `59.52s`, `6m0s`, `1h0m0s`.
pub(crate) fn go_duration(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000);
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (hours, minutes, secs, frac) =
        (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let mut out = String::new();
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    let _ = write!(out, "{secs}");
    if frac > 0 {
        let digits = format!("{frac:03}");
        let _ = write!(out, ".{}", digits.trim_end_matches('0'));
    }
    out.push('s');
    out
}

/// Milliseconds in `d`, rounded up.
fn ceil_ms(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// One bucket: its capacity, refill rate per second and current level.
#[derive(Debug)]
struct Bucket {
    capacity: f64,
    rate: f64,
    level: f64,
}

impl Bucket {
    fn full(capacity: u64, rate: f64) -> Bucket {
        Bucket {
            capacity: capacity as f64,
            rate,
            level: capacity as f64,
        }
    }

    fn refill(&mut self, secs: f64) {
        self.level = (self.level + secs * self.rate).min(self.capacity);
    }

    /// How long until it holds `n`.
    fn wait_for(&self, n: f64) -> Duration {
        seconds((n - self.level) / self.rate)
    }

    /// Adds its three headers, `x-ratelimit-{limit,remaining,reset}-{what}`.
    fn headers(&self, what: &str, headers: &mut HeaderMap) {
        let mut put = |name: String, value: String| {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.insert(name, value);
            }
        };
        put(
            format!("x-ratelimit-limit-{what}"),
            format!("{}", self.capacity as u64),
        );
        put(
            format!("x-ratelimit-remaining-{what}"),
            format!("{}", self.level.max(0.0).floor() as u64),
        );
        put(
            format!("x-ratelimit-reset-{what}"),
            go_duration(self.wait_for(self.capacity)),
        );
    }
}

#[derive(Debug)]
struct Buckets {
    at: Instant,
    requests: Bucket,
    tokens: Option<Bucket>,
}

/// A request's fate at the rate limiter: the headers to send either way,
/// and for a refused one the `429` body to send.
#[derive(Debug)]
pub(crate) struct Verdict {
    /// The `x-ratelimit-*` headers (unless suppressed) and, on a refusal,
    /// `retry-after-ms` and `retry-after` (unless suppressed).
    pub(crate) headers: HeaderMap,
    /// The `429` body when refused.
    pub(crate) refused: Option<Bytes>,
}

/// The live buckets of one server.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    headers: bool,
    retry_after: bool,
    buckets: Mutex<Buckets>,
}

impl RateLimiter {
    /// Full buckets for a validated `limit`.
    pub(crate) fn new(limit: &RateLimit) -> RateLimiter {
        RateLimiter {
            headers: limit.headers,
            retry_after: limit.retry_after,
            buckets: Mutex::new(Buckets {
                at: Instant::now(),
                requests: Bucket::full(limit.request_capacity(), limit.requests_per_second),
                tokens: limit
                    .token_bucket()
                    .map(|(rate, capacity)| Bucket::full(capacity, rate)),
            }),
        }
    }

    /// Whether requests' tokens are counted (so their cost is worth
    /// estimating).
    pub(crate) fn counts_tokens(&self) -> bool {
        self.lock().tokens.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buckets> {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a request estimated at `cost` tokens (taking from the
    /// buckets), or refuses it (taking nothing).
    pub(crate) fn check(&self, cost: u64) -> Verdict {
        self.check_at(cost, Instant::now())
    }

    /// [`RateLimiter::check`] at `now`.
    fn check_at(&self, cost: u64, now: Instant) -> Verdict {
        let mut guard = self.lock();
        let buckets = &mut *guard;
        let secs = now.saturating_duration_since(buckets.at).as_secs_f64();
        buckets.at = now;
        buckets.requests.refill(secs);
        if let Some(tokens) = buckets.tokens.as_mut() {
            tokens.refill(secs);
        }
        let cost_f = cost as f64;

        let too_large = buckets
            .tokens
            .as_ref()
            .is_some_and(|tokens| cost_f > tokens.capacity);
        let request_wait = buckets.requests.wait_for(1.0);
        let token_wait = buckets
            .tokens
            .as_ref()
            .map_or(Duration::ZERO, |t| t.wait_for(cost_f));
        let admitted = !too_large && request_wait.is_zero() && token_wait.is_zero();
        if admitted {
            buckets.requests.level -= 1.0;
            if let Some(tokens) = buckets.tokens.as_mut() {
                tokens.level -= cost_f;
            }
        }

        let mut headers = HeaderMap::new();
        if self.headers {
            buckets.requests.headers("requests", &mut headers);
            if let Some(tokens) = &buckets.tokens {
                tokens.headers("tokens", &mut headers);
            }
        }
        if admitted {
            return Verdict {
                headers,
                refused: None,
            };
        }

        let (kind, message, retry) = if too_large {
            let capacity = buckets.tokens.as_ref().map_or(0, |t| t.capacity as u64);
            (
                "tokens",
                format!(
                    "Request too large for {ORGANIZATION} on tokens per min (TPM): Limit \
                     {capacity}, Requested {cost}. The input or output tokens must be reduced \
                     in order to run successfully."
                ),
                None,
            )
        } else {
            let (kind, bucket, wait, requested) = if request_wait >= token_wait {
                ("requests", &buckets.requests, request_wait, 1)
            } else {
                let tokens = buckets.tokens.as_ref().unwrap_or(&buckets.requests);
                ("tokens", tokens, token_wait, cost)
            };
            let used = (bucket.capacity - bucket.level.max(0.0).floor()) as u64;
            let per_minute = (bucket.rate * 60.0 * 1000.0).round() / 1000.0;
            let short = if kind == "requests" { "RPM" } else { "TPM" };
            (
                kind,
                format!(
                    "Rate limit reached for {kind} in organization {ORGANIZATION} on {kind} per \
                     min ({short}): Limit {per_minute}, Used {used}, Requested {requested}. \
                     Please try again in {}.",
                    go_duration(wait)
                ),
                Some(wait),
            )
        };
        drop(guard);
        if let (true, Some(wait)) = (self.retry_after, retry) {
            let ms = ceil_ms(wait).max(1);
            headers.insert(HeaderName::from_static("retry-after-ms"), ms.into());
            headers.insert(
                HeaderName::from_static("retry-after"),
                ms.div_ceil(1000).into(),
            );
        }
        let body = json!({
            "error": {
                "message": message,
                "type": kind,
                "param": null,
                "code": "rate_limit_exceeded",
            },
        });
        Verdict {
            headers,
            refused: Some(Bytes::from(body.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_read_as_go_writes_them() {
        let ms = Duration::from_millis;
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_nanos(1)), "1ms");
        assert_eq!(go_duration(ms(20)), "20ms");
        assert_eq!(go_duration(ms(999)), "999ms");
        assert_eq!(go_duration(ms(1000)), "1s");
        assert_eq!(go_duration(ms(1500)), "1.5s");
        assert_eq!(go_duration(ms(59_520)), "59.52s");
        assert_eq!(go_duration(ms(60_000)), "1m0s");
        assert_eq!(go_duration(ms(360_000)), "6m0s");
        assert_eq!(go_duration(ms(3_600_000)), "1h0m0s");
        assert_eq!(go_duration(ms(3_723_004)), "1h2m3.004s");
        assert_eq!(go_duration(Duration::from_micros(1_000_001)), "1.001s");
        // The longest wait the server computes still formats.
        assert_eq!(go_duration(seconds(f64::INFINITY)), "8760h0m0s");
    }

    #[test]
    fn token_cost_is_bytes_over_four_plus_the_budget() {
        assert_eq!(token_cost(b""), 0);
        assert_eq!(token_cost(b"abcde"), 2);
        let body = br#"{"max_tokens":100}"#;
        assert_eq!(token_cost(body), 5 + 100);
        let body = br#"{"max_tokens":100,"max_completion_tokens":7}"#;
        assert_eq!(token_cost(body), body.len().div_ceil(4) as u64 + 7);
        for ignored in [
            &br#"{"max_tokens":-5}"#[..],
            br#"{"max_tokens":1.5}"#,
            br#"{"max_tokens":"9"}"#,
            br#"[1,2]"#,
            b"not json",
        ] {
            assert_eq!(
                token_cost(ignored),
                ignored.len().div_ceil(4) as u64,
                "{}",
                String::from_utf8_lossy(ignored)
            );
        }
        let huge = format!(r#"{{"max_tokens":{}}}"#, u64::MAX);
        assert_eq!(token_cost(huge.as_bytes()), u64::MAX);
    }

    #[test]
    fn specs_parse_into_limits() {
        let limit: RateLimit =
            " RPS = 50 , burst=60, tpm=100000, token-burst=2000, headers=false, retry-after=FALSE"
                .parse()
                .unwrap();
        assert_eq!(
            limit,
            RateLimit::per_second(50.0)
                .burst(60)
                .tokens_per_minute(100_000.0)
                .token_burst(2000)
                .headers(false)
                .retry_after(false)
        );
        let limit: RateLimit = "rpm=3000".parse().unwrap();
        assert_eq!(limit.requests_per_second, 50.0);
        assert_eq!(limit.request_capacity(), 50);
        assert_eq!(limit.token_bucket(), None);
        let limit: RateLimit = "rps=0.5,tpm=90".parse().unwrap();
        assert_eq!(limit.request_capacity(), 1);
        assert_eq!(limit.token_bucket(), Some((1.5, 2)));
    }

    #[test]
    fn bad_specs_are_errors_not_panics() {
        for bad in [
            "",
            "rps",
            "burst=5",
            "rps=0",
            "rps=-1",
            "rps=NaN",
            "rps=inf",
            "rps=1e10",
            "rps=1e999",
            "rpm=-3",
            "rps=5,rpm=300",
            "rps=5,rps=6",
            "rps=5,burst=0",
            "rps=5,burst=-1",
            "rps=5,burst=1.5",
            "rps=5,burst=99999999999999999999999",
            "rps=5,burst=1000000000001",
            "rps=5,tpm=0",
            "rps=5,tpm=NaN",
            "rps=5,tpm=-100",
            "rps=5,tpm=1e13",
            "rps=5,token-burst=10",
            "rps=5,headers=yes",
            "rps=5,retry-after=1",
            "rps=5,colour=blue",
            "rps=5,,burst=2",
            "rps=5,",
            "rps==5",
        ] {
            let parsed = bad.parse::<RateLimit>();
            assert!(parsed.is_err(), "{bad:?} parsed as {parsed:?}");
            assert!(!parsed.unwrap_err().message().is_empty());
        }
    }

    #[test]
    fn builder_values_are_validated() {
        assert!(RateLimit::per_second(5.0).validate().is_ok());
        for bad in [
            RateLimit::per_second(f64::NAN),
            RateLimit::per_second(-1.0),
            RateLimit::per_second(0.0),
            RateLimit::per_second(f64::INFINITY),
            RateLimit::per_second(5.0).burst(0),
            RateLimit::per_second(5.0).tokens_per_minute(f64::NAN),
            RateLimit::per_second(5.0).token_burst(5),
            RateLimit::per_second(5.0)
                .tokens_per_minute(60.0)
                .token_burst(u64::MAX),
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn buckets_admit_refuse_and_refill() {
        let limiter = RateLimiter::new(
            &RateLimit::per_second(10.0)
                .burst(2)
                .tokens_per_minute(6000.0)
                .token_burst(200),
        );
        let mut now = limiter.lock().at;
        let header = |v: &Verdict, name: &str| {
            v.headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        let first = limiter.check_at(50, now);
        assert!(first.refused.is_none());
        assert_eq!(header(&first, "x-ratelimit-limit-requests"), "2");
        assert_eq!(header(&first, "x-ratelimit-remaining-requests"), "1");
        assert_eq!(header(&first, "x-ratelimit-reset-requests"), "100ms");
        assert_eq!(header(&first, "x-ratelimit-limit-tokens"), "200");
        assert_eq!(header(&first, "x-ratelimit-remaining-tokens"), "150");
        assert_eq!(header(&first, "x-ratelimit-reset-tokens"), "500ms");
        assert!(first.headers.get("retry-after-ms").is_none());

        assert!(limiter.check_at(50, now).refused.is_none());
        let refused = limiter.check_at(50, now);
        let body: Value = serde_json::from_slice(refused.refused.as_ref().unwrap()).unwrap();
        assert_eq!(body["error"]["type"], "requests");
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert_eq!(header(&refused, "retry-after-ms"), "100");
        assert_eq!(header(&refused, "retry-after"), "1");
        assert_eq!(header(&refused, "x-ratelimit-remaining-requests"), "0");
        assert_eq!(header(&refused, "x-ratelimit-reset-requests"), "200ms");
        // Refused: nothing taken.
        assert_eq!(header(&refused, "x-ratelimit-remaining-tokens"), "100");

        // Too large for the token bucket, ever: no retry hint.
        now += Duration::from_secs(5);
        let large = limiter.check_at(201, now);
        let body: Value = serde_json::from_slice(large.refused.as_ref().unwrap()).unwrap();
        assert_eq!(body["error"]["type"], "tokens");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Request too large")
        );
        assert!(large.headers.get("retry-after-ms").is_none());
        assert_eq!(header(&large, "x-ratelimit-remaining-requests"), "2");

        // The token bucket lacks room: it names the wait.
        assert!(limiter.check_at(150, now).refused.is_none());
        let short = limiter.check_at(100, now);
        let body: Value = serde_json::from_slice(short.refused.as_ref().unwrap()).unwrap();
        assert_eq!(body["error"]["type"], "tokens");
        assert_eq!(header(&short, "retry-after-ms"), "500");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("Please try again in 500ms."), "{message}");

        // After the reset, full again.
        now += Duration::from_secs(2);
        let again = limiter.check_at(0, now);
        assert!(again.refused.is_none());
        assert_eq!(header(&again, "x-ratelimit-remaining-requests"), "1");
        assert_eq!(header(&again, "x-ratelimit-remaining-tokens"), "200");
        assert_eq!(header(&again, "x-ratelimit-reset-tokens"), "0s");
    }

    #[test]
    fn suppressed_headers_stay_out() {
        let limiter =
            RateLimiter::new(&RateLimit::per_second(1.0).headers(false).retry_after(false));
        let ok = limiter.check(0);
        assert!(ok.headers.is_empty());
        let refused = limiter.check(0);
        assert!(refused.refused.is_some());
        assert!(refused.headers.is_empty());
    }
}
