//! The rate-limit headers of a response head: how much room the server has
//! left, per dimension, and when it refills. See [`RateLimitHeaders`].

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};

use crate::parse::{self, Member};

/// Resets further ahead than this clamp to it: no rate-limit window of an
/// LLM API is longer than a day, and a pacer never holds an attempt longer.
pub const MAX_RESET: Duration = Duration::from_secs(86_400);

/// Header values longer than this many bytes are garbage, unread. The
/// longest valid single value, an RFC 3339 date-time with nanoseconds and
/// an offset, is 35 bytes.
pub const MAX_VALUE_LEN: usize = 64;

/// At most this many lines of a structured-field List (`RateLimit`,
/// `RateLimit-Policy`) are read; more make the field garbage.
pub const MAX_LIST_LINES: usize = 4;

/// What a server said about one dimension of its rate limit (requests,
/// tokens, ...).
///
/// ```
/// use std::time::Duration;
/// use sturdy_rate::Quota;
/// let q = Quota { limit: Some(60), remaining: Some(0), reset: Some(Duration::from_secs(2)) };
/// assert!(q.is_usable());
/// assert!(!Quota { reset: None, ..q }.is_usable());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quota {
    /// The window's whole quota, when given.
    pub limit: Option<u64>,
    /// What is left of it (a count too large for `u64` clamps to
    /// `u64::MAX`).
    pub remaining: Option<u64>,
    /// Time from the answer until the quota is back to its limit, at most
    /// [`MAX_RESET`].
    pub reset: Option<Duration>,
}

impl Quota {
    /// Whether nothing was said.
    pub fn is_empty(&self) -> bool {
        *self == Quota::default()
    }

    /// Whether it says both what is left and when it resets: all a pacer
    /// can act on.
    pub fn is_usable(&self) -> bool {
        self.remaining.is_some() && self.reset.is_some()
    }

    /// The more conservative of two readings of one dimension: a usable one
    /// over one that is not, then the smaller remaining, then the later
    /// reset. Each reading is kept whole (its limit, remaining and reset
    /// come from one source).
    fn tighter(self, other: Quota) -> Quota {
        if self.is_usable() != other.is_usable() {
            return if self.is_usable() { self } else { other };
        }
        match (self.remaining, other.remaining) {
            (Some(a), Some(b)) if a != b => {
                if a < b {
                    self
                } else {
                    other
                }
            }
            (Some(_), Some(_)) => {
                if other.reset > self.reset {
                    other
                } else {
                    self
                }
            }
            (Some(_), None) => self,
            (None, Some(_)) => other,
            (None, None) if self.is_empty() => other,
            (None, None) => self,
        }
    }
}

/// The rate-limit headers of one response head, per dimension.
///
/// Three families are read:
///
/// | family | headers | reset |
/// |---|---|---|
/// | OpenAI-compatible | `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` | a Go duration (`1s`, `6m0s`, `59.52s`, `20ms`, `1h2m3.5s`, `500us`/`µs`, `0s`) or plain seconds (`12`, `0.5`) |
/// | Anthropic | `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}` | an RFC 3339 date-time (`2026-12-02T10:00:30Z`, fractions and offsets allowed), measured from `now` |
/// | IETF, recent drafts (requests) | `RateLimit: "default";r=50;t=30` with `RateLimit-Policy: "default";q=100;w=60` | `t`, integer seconds |
/// | IETF, early drafts (requests) | `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` | delta seconds |
///
/// Rules, all per field, none of which ever panics:
///
/// - a value that does not parse, is negative, or is longer than
///   [`MAX_VALUE_LEN`] bytes is absent; the others still count;
/// - a single-valued header given twice is absent, whether or not the
///   copies agree (which one to believe would be a guess, as for
///   `retry-after` in sturdy-core);
/// - `RateLimit` and `RateLimit-Policy` are structured-field Lists, which
///   RFC 9651 allows to be split over several lines: up to
///   [`MAX_LIST_LINES`] lines are read as one list, and a syntax error
///   anywhere makes the whole field absent (RFC 9651 §4.2). Parameters come
///   in any order; of several policies the most conservative counts (the
///   smallest `r`, then the longest `t`); a policy whose `qu` is not
///   `"requests"` is not a request rate and is skipped; `q` of the
///   `RateLimit-Policy` member of the same name is the limit;
/// - huge counts clamp to `u64::MAX`, resets to [`MAX_RESET`]; a reset in
///   the past is zero;
/// - when several families speak of one dimension, the most conservative
///   reading counts: one with both a remaining count and a reset, then the
///   smallest remaining, then the latest reset.
///
/// Not read: GitHub-style `x-ratelimit-limit`/`-remaining`/`-reset`
/// (without a dimension; their reset is an epoch time), Azure's
/// remaining-only headers are read but, without a reset, are not
/// [usable](Quota::is_usable).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::HeaderMap;
/// use sturdy_rate::RateLimitHeaders;
/// let mut h = HeaderMap::new();
/// h.insert("x-ratelimit-limit-requests", "60".parse().unwrap());
/// h.insert("x-ratelimit-remaining-requests", "0".parse().unwrap());
/// h.insert("x-ratelimit-reset-requests", "1m2.5s".parse().unwrap());
/// h.insert("x-ratelimit-remaining-tokens", "banana".parse().unwrap());
/// let rl = RateLimitHeaders::from_headers(&h, SystemTime::now());
/// assert_eq!(rl.requests.limit, Some(60));
/// assert_eq!(rl.requests.remaining, Some(0));
/// assert_eq!(rl.requests.reset, Some(Duration::from_millis(62_500)));
/// assert!(rl.tokens.is_empty());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimitHeaders {
    /// Requests.
    pub requests: Quota,
    /// Tokens (input and output together, as OpenAI counts them; Anthropic's
    /// `tokens` is the most restrictive of its token limits).
    pub tokens: Quota,
    /// Input tokens (Anthropic).
    pub input_tokens: Quota,
    /// Output tokens (Anthropic).
    pub output_tokens: Quota,
}

// Each field's index in `HEADER_NAMES` (the `field_index_names_every_
// field` test holds the two together).
const OAI_LIMIT_REQUESTS: usize = 0;
const OAI_REMAINING_REQUESTS: usize = 1;
const OAI_RESET_REQUESTS: usize = 2;
const OAI_LIMIT_TOKENS: usize = 3;
const OAI_REMAINING_TOKENS: usize = 4;
const OAI_RESET_TOKENS: usize = 5;
const ANT_REQUESTS_LIMIT: usize = 6;
const ANT_REQUESTS_REMAINING: usize = 7;
const ANT_REQUESTS_RESET: usize = 8;
const ANT_TOKENS_LIMIT: usize = 9;
const ANT_TOKENS_REMAINING: usize = 10;
const ANT_TOKENS_RESET: usize = 11;
const ANT_INPUT_LIMIT: usize = 12;
const ANT_INPUT_REMAINING: usize = 13;
const ANT_INPUT_RESET: usize = 14;
const ANT_OUTPUT_LIMIT: usize = 15;
const ANT_OUTPUT_REMAINING: usize = 16;
const ANT_OUTPUT_RESET: usize = 17;
const IETF_RATELIMIT: usize = 18;
const IETF_POLICY: usize = 19;
const IETF_LIMIT: usize = 20;
const IETF_REMAINING: usize = 21;
const IETF_RESET: usize = 22;

/// Every header name read, for fuzzing and tests.
pub const HEADER_NAMES: [&str; 23] = [
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-limit",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-input-tokens-limit",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-input-tokens-reset",
    "anthropic-ratelimit-output-tokens-limit",
    "anthropic-ratelimit-output-tokens-remaining",
    "anthropic-ratelimit-output-tokens-reset",
    "ratelimit",
    "ratelimit-policy",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
];

/// The index in [`HEADER_NAMES`] of the field `name` names, if it is one
/// (`name` is lowercase, as `HeaderName` keeps it); names that start as
/// none of the three families do are passed over at their first byte.
fn field_index(name: &str) -> Option<usize> {
    let i = match name.as_bytes().first()? {
        b'x' => match name.strip_prefix("x-ratelimit-")? {
            "limit-requests" => OAI_LIMIT_REQUESTS,
            "remaining-requests" => OAI_REMAINING_REQUESTS,
            "reset-requests" => OAI_RESET_REQUESTS,
            "limit-tokens" => OAI_LIMIT_TOKENS,
            "remaining-tokens" => OAI_REMAINING_TOKENS,
            "reset-tokens" => OAI_RESET_TOKENS,
            _ => return None,
        },
        b'a' => match name.strip_prefix("anthropic-ratelimit-")? {
            "requests-limit" => ANT_REQUESTS_LIMIT,
            "requests-remaining" => ANT_REQUESTS_REMAINING,
            "requests-reset" => ANT_REQUESTS_RESET,
            "tokens-limit" => ANT_TOKENS_LIMIT,
            "tokens-remaining" => ANT_TOKENS_REMAINING,
            "tokens-reset" => ANT_TOKENS_RESET,
            "input-tokens-limit" => ANT_INPUT_LIMIT,
            "input-tokens-remaining" => ANT_INPUT_REMAINING,
            "input-tokens-reset" => ANT_INPUT_RESET,
            "output-tokens-limit" => ANT_OUTPUT_LIMIT,
            "output-tokens-remaining" => ANT_OUTPUT_REMAINING,
            "output-tokens-reset" => ANT_OUTPUT_RESET,
            _ => return None,
        },
        b'r' => match name {
            "ratelimit" => IETF_RATELIMIT,
            "ratelimit-policy" => IETF_POLICY,
            "ratelimit-limit" => IETF_LIMIT,
            "ratelimit-remaining" => IETF_REMAINING,
            "ratelimit-reset" => IETF_RESET,
            _ => return None,
        },
        _ => return None,
    };
    Some(i)
}

/// The values of every field read, gathered in one pass over a head's
/// headers (an OpenAI answer carries six of them: looking each of the 23
/// names up would hash it, 23 times per answer).
struct Fields<'a> {
    /// How many values each field has (counted to 255).
    count: [u8; HEADER_NAMES.len()],
    /// The first value of each.
    first: [Option<&'a HeaderValue>; HEADER_NAMES.len()],
    /// The first [`MAX_LIST_LINES`] values of the two List fields,
    /// `RateLimit` and `RateLimit-Policy`.
    lists: [[Option<&'a HeaderValue>; MAX_LIST_LINES]; 2],
}

impl<'a> Fields<'a> {
    /// The fields `headers` holds; `None` when it holds none.
    fn of(headers: &'a HeaderMap) -> Option<Fields<'a>> {
        let mut fields = Fields {
            count: [0; HEADER_NAMES.len()],
            first: [None; HEADER_NAMES.len()],
            lists: [[None; MAX_LIST_LINES]; 2],
        };
        let mut any = false;
        for (name, value) in headers {
            let Some(i) = field_index(name.as_str()) else {
                continue;
            };
            any = true;
            let n = fields.count[i];
            if n == 0 {
                fields.first[i] = Some(value);
            }
            if let Some(list) = fields.list_mut(i)
                && let Some(slot) = list.get_mut(usize::from(n))
            {
                *slot = Some(value);
            }
            fields.count[i] = n.saturating_add(1);
        }
        any.then_some(fields)
    }

    fn list_mut(&mut self, i: usize) -> Option<&mut [Option<&'a HeaderValue>; MAX_LIST_LINES]> {
        self.lists.get_mut(i.checked_sub(IETF_RATELIMIT)?)
    }

    /// The quota of one family's `[limit, remaining, reset]` fields, the
    /// limit and the reset read by `limit` and `reset`; empty, without
    /// reading anything, when none of the three is there (most answers
    /// name one family). Inlined into each of its nine uses: as a call it
    /// cost ~150 Ir more per OpenAI answer (`stack_openai_headers`).
    #[inline(always)]
    fn quota(
        &self,
        [l, r, s]: [usize; 3],
        limit: impl Fn(&[u8]) -> Option<u64>,
        reset: impl Fn(&[u8]) -> Option<Duration>,
    ) -> Quota {
        if [l, r, s].iter().all(|&i| self.count[i] == 0) {
            return Quota::default();
        }
        Quota {
            limit: self.single(l).and_then(limit),
            remaining: self.single(r).and_then(parse::count),
            reset: self.single(s).and_then(reset),
        }
    }

    /// A single-valued field: its bytes when it is there once and no
    /// longer than [`MAX_VALUE_LEN`].
    fn single(&self, i: usize) -> Option<&'a [u8]> {
        self.first[i]
            .map(HeaderValue::as_bytes)
            .filter(|v| self.count[i] == 1 && v.len() <= MAX_VALUE_LEN)
    }

    /// The lines of a List field (`RateLimit` or `RateLimit-Policy`), or
    /// `None` when it is absent or garbage (too many lines, one too long).
    fn lines(&self, i: usize) -> Option<[Option<&'a [u8]>; MAX_LIST_LINES]> {
        let n = usize::from(self.count[i]);
        if n == 0 || n > MAX_LIST_LINES {
            return None;
        }
        let out = self
            .lists
            .get(i.checked_sub(IETF_RATELIMIT)?)?
            .map(|v| v.map(HeaderValue::as_bytes));
        out.iter()
            .flatten()
            .all(|v| v.len() <= MAX_VALUE_LEN)
            .then_some(out)
    }
}

/// Calls `f` on every member of a List header; `false` when the field is
/// garbage (what `f` saw must then be dropped).
fn each_member<'a>(
    lines: &[Option<&'a [u8]>; MAX_LIST_LINES],
    mut f: impl FnMut(Member<'a>),
) -> bool {
    lines
        .iter()
        .flatten()
        .all(|line| parse::list(line, &mut f).is_ok())
}

impl RateLimitHeaders {
    /// Reads every family from `headers`; `now` is the current wall-clock
    /// time, against which Anthropic's date-time resets are measured. See
    /// the type's docs for the rules.
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> RateLimitHeaders {
        RateLimitHeaders::read(headers, || now).unwrap_or_default()
    }

    /// [`from_headers`](Self::from_headers), with the wall clock read
    /// (`now`) only when `headers` name a field; `None` when they name
    /// none (most answers): one pass over the names, no hashing, no clock.
    pub(crate) fn read(
        headers: &HeaderMap,
        now: impl FnOnce() -> SystemTime,
    ) -> Option<RateLimitHeaders> {
        let fields = Fields::of(headers)?;
        let now = now();
        let openai = |limit, remaining, reset| {
            fields.quota(
                [limit, remaining, reset],
                parse::count,
                parse::reset_duration,
            )
        };
        let anthropic = |limit, remaining, reset| {
            fields.quota([limit, remaining, reset], parse::count, |v| {
                parse::reset_at_date(v, now)
            })
        };
        let early_ietf = fields.quota(
            [IETF_LIMIT, IETF_REMAINING, IETF_RESET],
            leading_count,
            parse::delta_seconds,
        );
        let requests = openai(
            OAI_LIMIT_REQUESTS,
            OAI_REMAINING_REQUESTS,
            OAI_RESET_REQUESTS,
        )
        .tighter(anthropic(
            ANT_REQUESTS_LIMIT,
            ANT_REQUESTS_REMAINING,
            ANT_REQUESTS_RESET,
        ))
        .tighter(ietf(&fields))
        .tighter(early_ietf);
        let tokens = openai(OAI_LIMIT_TOKENS, OAI_REMAINING_TOKENS, OAI_RESET_TOKENS).tighter(
            anthropic(ANT_TOKENS_LIMIT, ANT_TOKENS_REMAINING, ANT_TOKENS_RESET),
        );
        Some(RateLimitHeaders {
            requests,
            tokens,
            input_tokens: anthropic(ANT_INPUT_LIMIT, ANT_INPUT_REMAINING, ANT_INPUT_RESET),
            output_tokens: anthropic(ANT_OUTPUT_LIMIT, ANT_OUTPUT_REMAINING, ANT_OUTPUT_RESET),
        })
    }

    /// Whether no dimension was said anything about.
    pub fn is_empty(&self) -> bool {
        self.dimensions().iter().all(Quota::is_empty)
    }

    /// The four dimensions in one order: requests, tokens, input tokens,
    /// output tokens.
    pub fn dimensions(&self) -> [Quota; 4] {
        [
            self.requests,
            self.tokens,
            self.input_tokens,
            self.output_tokens,
        ]
    }
}

/// `RateLimit-Limit` of the early drafts: a count, possibly followed by a
/// list of quota policies (`10, 10;w=1, 50;w=60`), of which the first
/// member is the limit that applies.
fn leading_count(v: &[u8]) -> Option<u64> {
    let end = v
        .iter()
        .position(|b| matches!(b, b',' | b';'))
        .unwrap_or(v.len());
    parse::count(&v[..end])
}

/// The requests quota of the recent drafts' `RateLimit` and
/// `RateLimit-Policy` fields.
fn ietf(fields: &Fields<'_>) -> Quota {
    let Some(limits) = fields.lines(IETF_RATELIMIT) else {
        return Quota::default();
    };
    let policies = fields.lines(IETF_POLICY);
    // The policy of that name, if the field parses: its quota, and whether
    // it counts requests (no `qu`, or `qu="requests"`).
    let policy = |name: Option<&[u8]>| -> (Option<u64>, bool) {
        let (Some(name), Some(policies)) = (name, &policies) else {
            return (None, true);
        };
        let mut found = (None, true);
        let ok = each_member(policies, |p| {
            if p.name == Some(name) {
                let requests = match p.qu {
                    None => true,
                    Some(parse::Param::Text(unit)) => unit == b"requests",
                    Some(_) => false,
                };
                found = (Member::count(p.q), requests);
            }
        });
        if ok { found } else { (None, true) }
    };
    let mut best = Quota::default();
    let ok = each_member(&limits, |m| {
        let (limit, requests) = policy(m.name);
        if !requests {
            return;
        }
        let t = Member::count(m.t).map(|secs| Duration::from_secs(secs).min(MAX_RESET));
        let q = Quota {
            limit,
            remaining: Member::count(m.r),
            reset: t,
        };
        best = best.tighter(q);
    });
    if ok { best } else { Quota::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    fn now() -> SystemTime {
        // 2026-12-02T10:00:00Z
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_205_600)
    }

    fn read(pairs: &[(&'static str, &[u8])]) -> RateLimitHeaders {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_bytes(value).unwrap());
        }
        RateLimitHeaders::from_headers(&h, now())
    }

    fn quota(limit: Option<u64>, remaining: Option<u64>, reset_ms: Option<u64>) -> Quota {
        Quota {
            limit,
            remaining,
            reset: reset_ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn field_index_names_every_field() {
        for (i, name) in HEADER_NAMES.iter().enumerate() {
            assert_eq!(field_index(name), Some(i), "{name}");
        }
        for other in [
            "",
            "x-ratelimit-",
            "x-ratelimit-limit-request",
            "x-ratelimit-limit-requestsx",
            "anthropic-ratelimit-tokens",
            "ratelimit-",
            "ratelimits",
            "content-type",
            "retry-after",
        ] {
            assert_eq!(field_index(other), None, "{other}");
        }
    }

    /// The one pass reads what a lookup per name reads: each field's value
    /// when it is there once and short enough, a List's lines when there
    /// are at most four, none too long; over maps of every shape (fields
    /// absent, repeated up to six times, values around the length limit,
    /// other headers between them).
    #[test]
    fn one_pass_reads_what_a_lookup_per_name_reads() {
        let single = |h: &HeaderMap, name: &str| -> Option<Vec<u8>> {
            let mut all = h.get_all(name).iter();
            match (all.next(), all.next()) {
                (Some(v), None) if v.len() <= MAX_VALUE_LEN => Some(v.as_bytes().to_vec()),
                _ => None,
            }
        };
        let lines = |h: &HeaderMap, name: &str| -> Option<Vec<Vec<u8>>> {
            let all: Vec<_> = h.get_all(name).iter().collect();
            let ok = (1..=MAX_LIST_LINES).contains(&all.len())
                && all.iter().all(|v| v.len() <= MAX_VALUE_LEN);
            ok.then(|| all.iter().map(|v| v.as_bytes().to_vec()).collect())
        };
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..2_000 {
            let mut h = HeaderMap::new();
            h.append("content-type", HeaderValue::from_static("application/json"));
            // Names from a run of `k` of them, so that some repeat often.
            let all = HEADER_NAMES.len() as u64;
            let (from, k) = (next(all), 1 + next(4));
            for _ in 0..next(12) {
                let name = HEADER_NAMES[((from + next(k)) % all) as usize];
                let len = [1, 5, MAX_VALUE_LEN, MAX_VALUE_LEN + 1][next(4) as usize];
                let value = "7".repeat(len);
                h.append(name, HeaderValue::from_str(&value).unwrap());
                if next(3) == 0 {
                    h.append("x-request-id", HeaderValue::from_static("req_1"));
                }
            }
            let fields = Fields::of(&h);
            for (i, name) in HEADER_NAMES.iter().enumerate() {
                let (one, list) = match &fields {
                    Some(f) => (
                        f.single(i).map(<[u8]>::to_vec),
                        f.lines(i)
                            .map(|l| l.iter().flatten().map(|v| v.to_vec()).collect()),
                    ),
                    None => (None, None),
                };
                let list_field = [IETF_RATELIMIT, IETF_POLICY].contains(&i);
                assert_eq!(one, single(&h, name), "{name} in {h:?}");
                assert_eq!(
                    list,
                    lines(&h, name).filter(|_| list_field),
                    "{name} in {h:?}"
                );
            }
        }
    }

    #[test]
    fn openai_family() {
        let rl = read(&[
            ("x-ratelimit-limit-requests", b"500"),
            ("x-ratelimit-remaining-requests", b"499"),
            ("x-ratelimit-reset-requests", b"120ms"),
            ("x-ratelimit-limit-tokens", b"30000"),
            ("x-ratelimit-remaining-tokens", b"29900"),
            ("x-ratelimit-reset-tokens", b"6m0s"),
        ]);
        assert_eq!(rl.requests, quota(Some(500), Some(499), Some(120)));
        assert_eq!(rl.tokens, quota(Some(30_000), Some(29_900), Some(360_000)));
        assert!(rl.input_tokens.is_empty() && rl.output_tokens.is_empty());
        // Each Go form, and plain seconds.
        for (v, ms) in [
            (&b"1s"[..], 1000),
            (b"59.52s", 59_520),
            (b"20ms", 20),
            (b"1h2m3.5s", 3_723_500),
            (b"0s", 0),
            (b"12", 12_000),
            (b"0.5", 500),
        ] {
            let rl = read(&[("x-ratelimit-reset-tokens", v)]);
            assert_eq!(rl.tokens.reset, Some(Duration::from_millis(ms)), "{v:?}");
        }
        for v in [&b"500us"[..], "500µs".as_bytes()] {
            let rl = read(&[("x-ratelimit-reset-requests", v)]);
            assert_eq!(rl.requests.reset, Some(Duration::from_micros(500)));
        }
    }

    #[test]
    fn anthropic_family() {
        let rl = read(&[
            ("anthropic-ratelimit-requests-limit", b"50"),
            ("anthropic-ratelimit-requests-remaining", b"0"),
            (
                "anthropic-ratelimit-requests-reset",
                b"2026-12-02T10:00:30Z",
            ),
            ("anthropic-ratelimit-tokens-limit", b"80000"),
            ("anthropic-ratelimit-tokens-remaining", b"1000"),
            (
                "anthropic-ratelimit-tokens-reset",
                b"2026-12-02T11:00:01.5+01:00",
            ),
            ("anthropic-ratelimit-input-tokens-remaining", b"700"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                b"2026-12-02T04:30:02-05:30",
            ),
            ("anthropic-ratelimit-output-tokens-limit", b"16000"),
            ("anthropic-ratelimit-output-tokens-remaining", b"16000"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                b"2026-12-02T09:00:00Z",
            ),
        ]);
        assert_eq!(rl.requests, quota(Some(50), Some(0), Some(30_000)));
        assert_eq!(rl.tokens, quota(Some(80_000), Some(1000), Some(1500)));
        assert_eq!(rl.input_tokens, quota(None, Some(700), Some(2000)));
        // A reset in the past: zero, the quota is back.
        assert_eq!(rl.output_tokens, quota(Some(16_000), Some(16_000), Some(0)));
        let rl = read(&[("anthropic-ratelimit-requests-reset", b"in 30 seconds")]);
        assert!(rl.is_empty());
    }

    #[test]
    fn ietf_structured_fields_with_parameters_in_any_order() {
        for (limit, policy) in [
            (
                &br#""default";r=50;t=30"#[..],
                &br#""default";q=100;w=60"#[..],
            ),
            (
                br#""default";t=30;r=50"#,
                br#""default";w=60;q=100;qu="requests""#,
            ),
            (
                br#""default";t=30;pk=:cHsx:;r=50"#,
                br#""other";q=5, "default";q=100"#,
            ),
        ] {
            let rl = read(&[("ratelimit", limit), ("ratelimit-policy", policy)]);
            assert_eq!(
                rl.requests,
                quota(Some(100), Some(50), Some(30_000)),
                "{:?}",
                String::from_utf8_lossy(limit)
            );
        }
        // Without a policy: no limit, the rest stands.
        let rl = read(&[("RateLimit", br#""default";r=0;t=2"#)]);
        assert_eq!(rl.requests, quota(None, Some(0), Some(2000)));
        // Several policies: the most conservative.
        let rl = read(&[("ratelimit", br#""burst";r=5;t=1, "day";r=3;t=3600"#)]);
        assert_eq!(rl.requests, quota(None, Some(3), Some(3_600_000)));
        let rl = read(&[("ratelimit", br#""a";r=0;t=1, "b";r=0;t=9"#)]);
        assert_eq!(rl.requests.reset, Some(Duration::from_secs(9)));
        // Split over lines, as RFC 9651 allows.
        let rl = read(&[
            ("ratelimit", br#""burst";r=5;t=1"#),
            ("ratelimit", br#""day";r=0;t=60"#),
        ]);
        assert_eq!(rl.requests, quota(None, Some(0), Some(60_000)));
        // A policy that is not a request rate is not read as one.
        let rl = read(&[
            ("ratelimit", br#""bytes";r=0;t=60"#),
            ("ratelimit-policy", br#""bytes";q=1000;qu="content-bytes""#),
        ]);
        assert!(rl.requests.is_empty());
        // A negative or non-integer r or t is absent; the member's rest stays.
        let rl = read(&[("ratelimit", br#""d";r=-1;t=30"#)]);
        assert_eq!(rl.requests, quota(None, None, Some(30_000)));
        let rl = read(&[("ratelimit", br#""d";r=1.5;t="30""#)]);
        assert!(rl.requests.is_empty());
        // A syntax error anywhere: the whole field is absent.
        for bad in [
            &br#""default";r=50;t=30,"#[..],
            br#""default";r=50;t=30, limit=5"#,
            b"limit=100, remaining=50, reset=5",
            br#""d";r=9999999999999999;t=1"#,
        ] {
            assert!(read(&[("ratelimit", bad)]).is_empty(), "{bad:?}");
        }
        // A garbage policy costs only the limit.
        let rl = read(&[
            ("ratelimit", br#""default";r=50;t=30"#),
            ("ratelimit-policy", b"(((("),
        ]);
        assert_eq!(rl.requests, quota(None, Some(50), Some(30_000)));
        // Huge t clamps.
        let rl = read(&[("ratelimit", br#""d";r=1;t=999999999999999"#)]);
        assert_eq!(rl.requests.reset, Some(MAX_RESET));
    }

    #[test]
    fn ietf_early_triple() {
        let rl = read(&[
            ("ratelimit-limit", b"100"),
            ("ratelimit-remaining", b"7"),
            ("ratelimit-reset", b"50"),
        ]);
        assert_eq!(rl.requests, quota(Some(100), Some(7), Some(50_000)));
        let rl = read(&[("ratelimit-limit", b"10, 10;w=1, 50;w=60")]);
        assert_eq!(rl.requests.limit, Some(10));
        let rl = read(&[("ratelimit-reset", b"-5"), ("ratelimit-remaining", b"-5")]);
        assert!(rl.is_empty());
    }

    #[test]
    fn garbage_is_absent_field_by_field() {
        let rl = read(&[
            ("x-ratelimit-remaining-requests", b"lots"),
            ("x-ratelimit-reset-requests", b"2s"),
            ("x-ratelimit-limit-tokens", b"1e6"),
            ("x-ratelimit-remaining-tokens", b"10"),
            ("x-ratelimit-reset-tokens", b"soon"),
        ]);
        assert_eq!(rl.requests, quota(None, None, Some(2000)));
        assert_eq!(rl.tokens, quota(None, Some(10), None));
        assert!(!rl.tokens.is_usable());
        for bad in [
            &b"-1"[..],
            b"-1s",
            b"1.5.5s",
            b"\xff\xfe",
            b"caf\xc3\xa9",
            b"",
            b" ",
            b"0x10",
        ] {
            let rl = read(&[
                ("x-ratelimit-remaining-requests", bad),
                ("x-ratelimit-reset-requests", bad),
                ("anthropic-ratelimit-tokens-reset", bad),
                ("ratelimit", bad),
                ("ratelimit-reset", bad),
            ]);
            assert!(rl.is_empty(), "{bad:?}");
        }
    }

    #[test]
    fn huge_numbers_clamp() {
        let rl = read(&[
            (
                "x-ratelimit-limit-requests",
                b"340282366920938463463374607431768211456",
            ),
            ("x-ratelimit-remaining-requests", b"18446744073709551616"),
            ("x-ratelimit-reset-requests", b"99999999999h"),
        ]);
        assert_eq!(
            rl.requests,
            Quota {
                limit: Some(u64::MAX),
                remaining: Some(u64::MAX),
                reset: Some(MAX_RESET),
            }
        );
        let rl = read(&[("anthropic-ratelimit-tokens-reset", b"9999-12-31T23:59:59Z")]);
        assert_eq!(rl.tokens.reset, Some(MAX_RESET));
    }

    #[test]
    fn duplicated_and_oversized_values_are_garbage() {
        for (a, b) in [(&b"5"[..], &b"5"[..]), (b"5", b"0")] {
            let rl = read(&[
                ("x-ratelimit-remaining-requests", a),
                ("x-ratelimit-remaining-requests", b),
                ("x-ratelimit-reset-requests", b"1s"),
            ]);
            assert_eq!(rl.requests, quota(None, None, Some(1000)), "{a:?} {b:?}");
        }
        let padded = format!("{}7", " ".repeat(MAX_VALUE_LEN - 1));
        let rl = read(&[("x-ratelimit-remaining-requests", padded.as_bytes())]);
        assert_eq!(rl.requests.remaining, Some(7), "exactly the limit is read");
        let over = format!("{}7", " ".repeat(MAX_VALUE_LEN));
        assert!(read(&[("x-ratelimit-remaining-requests", over.as_bytes())]).is_empty());
        let long_list = format!(r#""default";r=5;t=30{}"#, " ".repeat(MAX_VALUE_LEN));
        assert!(read(&[("ratelimit", long_list.as_bytes())]).is_empty());
        // Too many lines of a list.
        let line = &br#""d";r=1;t=1"#[..];
        let five = [("ratelimit", line); MAX_LIST_LINES + 1];
        assert!(read(&five).is_empty());
        assert!(!read(&five[..MAX_LIST_LINES]).is_empty());
    }

    #[test]
    fn families_together_give_the_most_conservative_reading() {
        let rl = read(&[
            ("x-ratelimit-remaining-requests", b"10"),
            ("x-ratelimit-reset-requests", b"1s"),
            ("ratelimit", br#""default";r=3;t=30"#),
            ("ratelimit-remaining", b"3"),
            ("ratelimit-reset", b"5"),
        ]);
        assert_eq!(rl.requests, quota(None, Some(3), Some(30_000)));
        // A reading without a reset loses to one with both.
        let rl = read(&[
            ("x-ratelimit-remaining-requests", b"0"),
            ("ratelimit-remaining", b"9"),
            ("ratelimit-reset", b"5"),
        ]);
        assert_eq!(rl.requests, quota(None, Some(9), Some(5000)));
    }

    #[test]
    fn thousands_of_headers_cost_a_bounded_look() {
        let mut h = HeaderMap::new();
        for i in 0..5_000 {
            let name = HeaderName::from_bytes(format!("x-junk-{i}").as_bytes()).unwrap();
            h.append(name, HeaderValue::from_static("1"));
        }
        h.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from_static("4"),
        );
        h.insert("x-ratelimit-reset-requests", HeaderValue::from_static("1s"));
        for _ in 0..5_000 {
            h.append("ratelimit", HeaderValue::from_static(r#""d";r=0;t=9"#));
        }
        let rl = RateLimitHeaders::from_headers(&h, now());
        assert_eq!(rl.requests, quota(None, Some(4), Some(1000)));
    }

    #[test]
    fn every_name_is_a_valid_lowercase_header_name() {
        for name in HEADER_NAMES {
            assert_eq!(HeaderName::from_static(name).as_str(), name);
        }
    }
}
