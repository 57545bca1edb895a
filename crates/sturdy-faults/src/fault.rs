//! What one response should suffer: the [`Fault`] grammar, per-call [`Script`]s
//! and their parse errors.
//!
//! A fault is chosen for each request after its body has been read, either from
//! the request's own script (`x-sturdy-fault`) or from the server's random
//! [`Mix`](crate::Mix); `respond` then shapes the answer accordingly.
//!
//! # Grammar
//!
//! ```text
//! script = entry *( "," entry )
//! entry  = kind *( ";" param )
//! kind   = 3DIGIT (200..=599) / "delay" / "stall" / "slow" / "reset" / "close" / "hostile" / "streamerr"
//! param  = name "=" value
//! value  = token / DQUOTE *( any char but DQUOTE ) DQUOTE
//! ```
//!
//! Keywords and parameter names are case-insensitive; whitespace around items
//! is ignored. A value containing `,` or `;` (an HTTP-date) must be quoted.
//!
//! | kind        | parameters                                                    |
//! |-------------|---------------------------------------------------------------|
//! | `NNN`       | `retry-after`, `retry-after-ms`, `x-should-retry`, `chunks`, `early`, `quota` |
//! | `delay`     | `ms`, `chunks`                                                |
//! | `stall`     | `ms`, `chunks`, `at`                                          |
//! | `slow`      | `ms`, `chunks`                                                |
//! | `reset`     | `at`                                                          |
//! | `close`     | none                                                          |
//! | `hostile`   | `headers`                                                     |
//! | `streamerr` | `at`, `quota`, `chunks`                                       |
//!
//! `close` reads the request and does its work (a `POST /v1/batches`
//! creates its job, a `POST /v1/files` stores its file), then drops the
//! connection without a response: the answer, not the request, is lost.
//!
//! `at` counts the events of a stream sent before the fault (default 1; `0`
//! is "before the first token"); a JSON answer is cut in half whatever it
//! says. `quota=true` makes an error answer's body (and a `streamerr`
//! event) say `insufficient_quota` instead of a rate limit or a server
//! error.
//!
//! A parameter left out takes the server's [`FaultParams`](crate::FaultParams).
//!
//! ```
//! use sturdy_faults::{Fault, Script};
//!
//! let script: Script = "503;retry-after-ms=200, 503, 200".parse().unwrap();
//! assert_eq!(script.0.len(), 3);
//! assert_eq!(script.for_attempt(7), Some(&Fault::status(200)));
//! assert!("504;ms=3".parse::<Fault>().is_err());
//! ```

use std::fmt;
use std::str::FromStr;

use http::HeaderValue;

/// Largest `ms` a fault may ask for: one hour. A peer can send any script, so
/// durations are bounded.
pub const MAX_FAULT_MS: u64 = 3_600_000;

/// Largest `chunks` a fault may ask for.
pub const MAX_CHUNKS: usize = 1_000;

/// Largest `headers` a `hostile` fault may ask for.
pub const MAX_HOSTILE_HEADERS: usize = 10_000;

/// Junk headers of a `hostile` fault without `headers=`: far more than a
/// client parses (hyper's HTTP/1 limit is 100).
pub const DEFAULT_HOSTILE_HEADERS: usize = 2_000;

/// Server-wide defaults for fault parameters a script or mix entry leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultParams {
    /// `delay` without `ms`: milliseconds before the response head (3000).
    pub delay_ms: u64,
    /// `stall` without `ms`: length of the mid-body pause (500).
    pub stall_ms: u64,
    /// `slow` without `ms`: pause between chunks (50).
    pub slow_ms: u64,
    /// SSE chunks per streamed answer when the entry names none (5).
    pub chunks: usize,
    /// When set, added as `retry-after-ms` to 429 and 503 answers drawn from
    /// the mix that carry no hint of their own.
    pub retry_after_ms: Option<u64>,
}

impl Default for FaultParams {
    fn default() -> FaultParams {
        FaultParams {
            delay_ms: 3000,
            stall_ms: 500,
            slow_ms: 50,
            chunks: 5,
            retry_after_ms: None,
        }
    }
}

/// One entry of a script or a mix: how a single response misbehaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status. `200` is a normal answer; anything else gets a
    /// small JSON error body and the given hint headers.
    Status {
        /// The status code, 200..=599.
        code: u16,
        /// Raw `retry-after` header value (seconds or an HTTP-date).
        retry_after: Option<String>,
        /// `retry-after-ms` header value.
        retry_after_ms: Option<u64>,
        /// `x-should-retry` header value.
        should_retry: Option<bool>,
        /// Number of SSE chunks for a streamed `200`.
        chunks: Option<usize>,
        /// Answer from the request head, before reading the body, then read
        /// and discard the body: a gateway that limits by headers. A client
        /// goes on sending the body after the answer. Not for `200`, whose
        /// answer needs the body.
        early: bool,
        /// The error body says the account is out of quota
        /// (`insufficient_quota`). Not for `200`.
        quota: bool,
    },
    /// Wait before sending the response head, then answer normally.
    Delay {
        /// Milliseconds to wait; `None` takes the server default.
        ms: Option<u64>,
        /// Number of SSE chunks.
        chunks: Option<usize>,
    },
    /// Send the first `at` events (or half a JSON body), pause, then the
    /// rest.
    Stall {
        /// Length of the pause; `None` takes the server default.
        ms: Option<u64>,
        /// Number of SSE chunks.
        chunks: Option<usize>,
        /// Events sent before the pause (default 1; 0: before the first).
        at: Option<usize>,
    },
    /// Pause between every chunk of the body.
    Slow {
        /// Pause between chunks; `None` takes the server default.
        ms: Option<u64>,
        /// Number of SSE chunks (or JSON pieces).
        chunks: Option<usize>,
    },
    /// Send the head and some body bytes (the first `at` events of a
    /// stream, half a JSON body), then fail the connection (HTTP/1) or
    /// reset the stream (HTTP/2).
    Reset {
        /// Events sent before the reset (default 1; 0: none, the head only).
        at: Option<usize>,
    },
    /// Read the whole request and do what it asks (a batch job is created,
    /// a file stored: the answer is computed), then close the connection
    /// without a response (HTTP/2: reset the stream). The server acted and
    /// the answer was lost: a failure of unknown reach, as a client sees it.
    Close,
    /// A 503 whose head is built to trip careless parsers: `headers` junk
    /// headers, two `retry-after` lines that disagree (`1` and `3600`), a
    /// `retry-after-ms` of non-ASCII bytes and an 8 KiB `x-should-retry`.
    /// With few junk headers a client reads the head and must ignore every
    /// hint; with more than it parses it must fail the attempt cleanly.
    Hostile {
        /// Junk headers; `None` takes [`DEFAULT_HOSTILE_HEADERS`].
        headers: Option<usize>,
    },
    /// A `200` stream that sends `at` events, then an OpenAI-style error
    /// event (`data: {"error": ...}`) and ends: the server failed after it
    /// began. A JSON answer is a `500` error body instead.
    StreamError {
        /// Events before the error (default 1).
        at: Option<usize>,
        /// The error says `insufficient_quota` instead of `server_error`.
        quota: bool,
        /// Number of SSE chunks the stream would have had.
        chunks: Option<usize>,
    },
}

impl Fault {
    /// A bare status entry (no hints, default chunks).
    pub fn status(code: u16) -> Fault {
        Fault::Status {
            code,
            retry_after: None,
            retry_after_ms: None,
            should_retry: None,
            chunks: None,
            early: false,
            quota: false,
        }
    }

    /// The dashboard's `faults` key for this entry, or `None` when it is a
    /// normal `200` answer.
    pub fn dashboard_kind(&self) -> Option<&'static str> {
        match self {
            Fault::Status { code: 200, .. } => None,
            Fault::Status { .. } => Some("status"),
            Fault::Delay { .. } => Some("delay"),
            Fault::Stall { .. } => Some("stall"),
            Fault::Slow { .. } => Some("slow"),
            Fault::Reset { .. } => Some("reset"),
            Fault::Close => Some("close"),
            Fault::Hostile { .. } => Some("hostile"),
            Fault::StreamError { .. } => Some("streamerr"),
        }
    }

    /// The chunk count this entry asks for, if any.
    pub fn chunks(&self) -> Option<usize> {
        match self {
            Fault::Status { chunks, .. }
            | Fault::Delay { chunks, .. }
            | Fault::Stall { chunks, .. }
            | Fault::Slow { chunks, .. }
            | Fault::StreamError { chunks, .. } => *chunks,
            Fault::Reset { .. } | Fault::Close | Fault::Hostile { .. } => None,
        }
    }
}

/// Why a fault entry, a script or a mix spec could not be parsed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ParseError {
    /// An entry (or the whole spec) is empty.
    Empty,
    /// The entry's kind is neither a status code nor a known keyword.
    UnknownKind(String),
    /// A status code outside 200..=599.
    StatusOutOfRange(u16),
    /// A parameter this kind does not take.
    UnknownParam {
        /// The entry's kind.
        kind: String,
        /// The offending parameter name.
        param: String,
    },
    /// A parameter given twice in one entry.
    DuplicateParam(String),
    /// A parameter without `=value`, or with a value that does not parse.
    BadParamValue {
        /// The parameter name.
        param: String,
        /// The offending value (empty when missing).
        value: String,
    },
    /// A `"` without its closing partner.
    UnbalancedQuote,
    /// A mix item without `=probability`.
    MissingProbability(String),
    /// A probability that is not a number in 0..=1.
    BadProbability(String),
    /// The mix's probabilities add up to more than 1.
    ProbabilitySumAboveOne(f64),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Empty => f.write_str("empty fault entry"),
            ParseError::UnknownKind(kind) => write!(
                f,
                "unknown fault {kind:?}: expected a status code or delay, stall, slow, reset, close, hostile, streamerr"
            ),
            ParseError::StatusOutOfRange(code) => {
                write!(f, "status {code} is outside 200..=599")
            }
            ParseError::UnknownParam { kind, param } => {
                write!(f, "fault {kind:?} takes no parameter {param:?}")
            }
            ParseError::DuplicateParam(param) => write!(f, "parameter {param:?} given twice"),
            ParseError::BadParamValue { param, value } => {
                write!(f, "bad value {value:?} for parameter {param:?}")
            }
            ParseError::UnbalancedQuote => f.write_str("unbalanced '\"' in fault spec"),
            ParseError::MissingProbability(item) => {
                write!(f, "mix item {item:?} lacks '=probability'")
            }
            ParseError::BadProbability(value) => {
                write!(f, "probability {value:?} is not a number in 0..=1")
            }
            ParseError::ProbabilitySumAboveOne(sum) => {
                write!(f, "mix probabilities add up to {sum}, more than 1")
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// Splits `s` on `sep`, ignoring separators inside double quotes.
pub(crate) fn split_unquoted(s: &str, sep: char) -> Result<Vec<&str>, ParseError> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    if quoted {
        return Err(ParseError::UnbalancedQuote);
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

fn parse_number<T: FromStr + PartialOrd>(
    param: &str,
    value: &str,
    max: T,
) -> Result<T, ParseError> {
    let bad = || ParseError::BadParamValue {
        param: param.to_owned(),
        value: value.to_owned(),
    };
    let n: T = value.parse().map_err(|_| bad())?;
    if n > max { Err(bad()) } else { Ok(n) }
}

/// A `true`/`false` parameter, or the error that names it.
fn flag(param: &str, value: &str) -> Result<bool, ParseError> {
    parse_flag(value).ok_or_else(|| ParseError::BadParamValue {
        param: param.to_owned(),
        value: value.to_owned(),
    })
}

/// `true` or `false`, in any case.
fn parse_flag(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn parse_chunks(value: &str) -> Result<usize, ParseError> {
    let n = parse_number("chunks", value, MAX_CHUNKS)?;
    if n == 0 {
        return Err(ParseError::BadParamValue {
            param: "chunks".to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(n)
}

fn set_once<T>(slot: &mut Option<T>, param: &str, value: T) -> Result<(), ParseError> {
    if slot.is_some() {
        return Err(ParseError::DuplicateParam(param.to_owned()));
    }
    *slot = Some(value);
    Ok(())
}

impl FromStr for Fault {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Fault, ParseError> {
        let mut pieces = split_unquoted(s, ';')?.into_iter();
        let kind = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
        if kind.is_empty() {
            return Err(ParseError::Empty);
        }
        let mut params = Vec::new();
        for piece in pieces {
            let piece = piece.trim();
            let (name, value) = piece
                .split_once('=')
                .ok_or_else(|| ParseError::BadParamValue {
                    param: piece.to_ascii_lowercase(),
                    value: String::new(),
                })?;
            params.push((name.trim().to_ascii_lowercase(), unquote(value.trim())));
        }
        let unknown = |param: &str| ParseError::UnknownParam {
            kind: kind.clone(),
            param: param.to_owned(),
        };

        match kind.as_str() {
            "delay" | "stall" | "slow" => {
                let (mut ms, mut chunks, mut at) = (None, None, None);
                for (name, value) in &params {
                    match name.as_str() {
                        "ms" => set_once(&mut ms, name, parse_number(name, value, MAX_FAULT_MS)?)?,
                        "chunks" => set_once(&mut chunks, name, parse_chunks(value)?)?,
                        "at" if kind == "stall" => {
                            set_once(&mut at, name, parse_number(name, value, MAX_CHUNKS)?)?
                        }
                        _ => return Err(unknown(name)),
                    }
                }
                Ok(match kind.as_str() {
                    "delay" => Fault::Delay { ms, chunks },
                    "stall" => Fault::Stall { ms, chunks, at },
                    _ => Fault::Slow { ms, chunks },
                })
            }
            "streamerr" => {
                let (mut at, mut quota, mut chunks) = (None, None, None);
                for (name, value) in &params {
                    match name.as_str() {
                        "at" => set_once(&mut at, name, parse_number(name, value, MAX_CHUNKS)?)?,
                        "quota" => set_once(&mut quota, name, flag(name, value)?)?,
                        "chunks" => set_once(&mut chunks, name, parse_chunks(value)?)?,
                        _ => return Err(unknown(name)),
                    }
                }
                Ok(Fault::StreamError {
                    at,
                    quota: quota.unwrap_or(false),
                    chunks,
                })
            }
            "hostile" => {
                let mut headers = None;
                for (name, value) in &params {
                    match name.as_str() {
                        "headers" => set_once(
                            &mut headers,
                            name,
                            parse_number(name, value, MAX_HOSTILE_HEADERS)?,
                        )?,
                        _ => return Err(unknown(name)),
                    }
                }
                Ok(Fault::Hostile { headers })
            }
            "reset" => {
                let mut at = None;
                for (name, value) in &params {
                    match name.as_str() {
                        "at" => set_once(&mut at, name, parse_number(name, value, MAX_CHUNKS)?)?,
                        _ => return Err(unknown(name)),
                    }
                }
                Ok(Fault::Reset { at })
            }
            "close" => {
                if let Some((name, _)) = params.first() {
                    return Err(unknown(name));
                }
                Ok(Fault::Close)
            }
            digits if digits.len() == 3 && digits.bytes().all(|b| b.is_ascii_digit()) => {
                let code: u16 = digits
                    .parse()
                    .map_err(|_| ParseError::UnknownKind(kind.clone()))?;
                if !(200..=599).contains(&code) {
                    return Err(ParseError::StatusOutOfRange(code));
                }
                let (mut retry_after, mut retry_after_ms, mut should_retry, mut chunks) =
                    (None, None, None, None);
                let (mut early, mut quota) = (None, None);
                for (name, value) in &params {
                    let bad = || ParseError::BadParamValue {
                        param: name.clone(),
                        value: (*value).to_owned(),
                    };
                    match name.as_str() {
                        "retry-after" => {
                            if value.is_empty()
                                || value.contains('"')
                                || HeaderValue::from_str(value).is_err()
                            {
                                return Err(bad());
                            }
                            set_once(&mut retry_after, name, (*value).to_owned())?;
                        }
                        "retry-after-ms" => set_once(
                            &mut retry_after_ms,
                            name,
                            parse_number(name, value, u64::MAX)?,
                        )?,
                        "x-should-retry" => {
                            set_once(&mut should_retry, name, parse_flag(value).ok_or_else(bad)?)?
                        }
                        "chunks" => set_once(&mut chunks, name, parse_chunks(value)?)?,
                        "early" if code != 200 => {
                            set_once(&mut early, name, parse_flag(value).ok_or_else(bad)?)?
                        }
                        "quota" if code != 200 => {
                            set_once(&mut quota, name, parse_flag(value).ok_or_else(bad)?)?
                        }
                        _ => return Err(unknown(name)),
                    }
                }
                Ok(Fault::Status {
                    code,
                    retry_after,
                    retry_after_ms,
                    should_retry,
                    chunks,
                    early: early.unwrap_or(false),
                    quota: quota.unwrap_or(false),
                })
            }
            _ => Err(ParseError::UnknownKind(kind)),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ms, chunks) = match self {
            Fault::Status {
                code,
                retry_after,
                retry_after_ms,
                should_retry,
                chunks,
                early,
                quota,
            } => {
                write!(f, "{code}")?;
                if let Some(value) = retry_after {
                    let needs_quotes = value.contains([',', ';', '=']) || value.trim() != value;
                    if needs_quotes {
                        write!(f, ";retry-after=\"{value}\"")?;
                    } else {
                        write!(f, ";retry-after={value}")?;
                    }
                }
                if let Some(ms) = retry_after_ms {
                    write!(f, ";retry-after-ms={ms}")?;
                }
                if let Some(flag) = should_retry {
                    write!(f, ";x-should-retry={flag}")?;
                }
                if *early {
                    f.write_str(";early=true")?;
                }
                if *quota {
                    f.write_str(";quota=true")?;
                }
                (None, *chunks)
            }
            Fault::Delay { ms, chunks } => {
                f.write_str("delay")?;
                (*ms, *chunks)
            }
            Fault::Stall { ms, chunks, at } => {
                f.write_str("stall")?;
                if let Some(at) = at {
                    write!(f, ";at={at}")?;
                }
                (*ms, *chunks)
            }
            Fault::Slow { ms, chunks } => {
                f.write_str("slow")?;
                (*ms, *chunks)
            }
            Fault::Reset { at: None } => return f.write_str("reset"),
            Fault::Reset { at: Some(at) } => return write!(f, "reset;at={at}"),
            Fault::StreamError { at, quota, chunks } => {
                f.write_str("streamerr")?;
                if let Some(at) = at {
                    write!(f, ";at={at}")?;
                }
                if *quota {
                    f.write_str(";quota=true")?;
                }
                (None, *chunks)
            }
            Fault::Close => return f.write_str("close"),
            Fault::Hostile { headers } => {
                f.write_str("hostile")?;
                if let Some(n) = headers {
                    write!(f, ";headers={n}")?;
                }
                return Ok(());
            }
        };
        if let Some(ms) = ms {
            write!(f, ";ms={ms}")?;
        }
        if let Some(chunks) = chunks {
            write!(f, ";chunks={chunks}")?;
        }
        Ok(())
    }
}

/// A per-call script: the n-th attempt of a call gets the n-th entry, the last
/// entry repeating. Sent as the `x-sturdy-fault` header value (its `Display`
/// form), next to `x-sturdy-call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script(pub Vec<Fault>);

impl Script {
    /// The entry for the zero-based `attempt`; `None` only for an empty script.
    pub fn for_attempt(&self, attempt: usize) -> Option<&Fault> {
        self.0.get(attempt).or_else(|| self.0.last())
    }
}

impl FromStr for Script {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Script, ParseError> {
        split_unquoted(s, ',')?
            .into_iter()
            .map(str::parse)
            .collect::<Result<Vec<Fault>, ParseError>>()
            .map(Script)
    }
}

impl fmt::Display for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, fault) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{fault}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_case_insensitively() {
        assert_eq!(
            "DELAY;MS=5".parse(),
            Ok(Fault::Delay {
                ms: Some(5),
                chunks: None
            })
        );
        assert_eq!(
            "stall".parse(),
            Ok(Fault::Stall {
                ms: None,
                chunks: None,
                at: None,
            })
        );
        assert_eq!(
            "stall;at=0;ms=9".parse(),
            Ok(Fault::Stall {
                ms: Some(9),
                chunks: None,
                at: Some(0),
            })
        );
        assert_eq!(
            " Slow ; ms = 7 ; Chunks=3 ".parse(),
            Ok(Fault::Slow {
                ms: Some(7),
                chunks: Some(3)
            })
        );
        assert_eq!("Reset".parse(), Ok(Fault::Reset { at: None }));
        assert_eq!("reset;at=0".parse(), Ok(Fault::Reset { at: Some(0) }));
        assert_eq!(
            "streamerr;at=2;quota=true".parse(),
            Ok(Fault::StreamError {
                at: Some(2),
                quota: true,
                chunks: None
            })
        );
        assert!(matches!(
            "delay;at=1".parse::<Fault>(),
            Err(ParseError::UnknownParam { .. })
        ));
        assert!(matches!(
            "200;quota=true".parse::<Fault>(),
            Err(ParseError::UnknownParam { .. })
        ));
        assert_eq!("hostile".parse(), Ok(Fault::Hostile { headers: None }));
        assert_eq!(
            "HOSTILE;Headers=0".parse(),
            Ok(Fault::Hostile { headers: Some(0) })
        );
        assert!(matches!(
            "hostile;headers=10001".parse::<Fault>(),
            Err(ParseError::BadParamValue { .. })
        ));
        assert!(matches!(
            "hostile;ms=1".parse::<Fault>(),
            Err(ParseError::UnknownParam { .. })
        ));
        assert_eq!("close".parse(), Ok(Fault::Close));
        assert_eq!(
            "429;Retry-After=2;retry-after-ms=150;x-should-retry=FALSE".parse(),
            Ok(Fault::Status {
                code: 429,
                retry_after: Some("2".to_owned()),
                retry_after_ms: Some(150),
                should_retry: Some(false),
                chunks: None,
                early: false,
                quota: false,
            })
        );
    }

    #[test]
    fn rejects_garbage_with_a_typed_error() {
        assert_eq!("".parse::<Fault>(), Err(ParseError::Empty));
        assert_eq!(
            "boom".parse::<Fault>(),
            Err(ParseError::UnknownKind("boom".into()))
        );
        assert_eq!(
            "199".parse::<Fault>(),
            Err(ParseError::StatusOutOfRange(199))
        );
        assert_eq!(
            "600".parse::<Fault>(),
            Err(ParseError::StatusOutOfRange(600))
        );
        assert!(matches!(
            "5030".parse::<Fault>(),
            Err(ParseError::UnknownKind(_))
        ));
        assert!(matches!(
            "reset;ms=3".parse::<Fault>(),
            Err(ParseError::UnknownParam { .. })
        ));
        assert!(matches!(
            "503;ms=3".parse::<Fault>(),
            Err(ParseError::UnknownParam { .. })
        ));
        assert!(matches!(
            "delay;ms".parse::<Fault>(),
            Err(ParseError::BadParamValue { .. })
        ));
        assert!(matches!(
            "delay;ms=-1".parse::<Fault>(),
            Err(ParseError::BadParamValue { .. })
        ));
        assert!(matches!(
            "delay;ms=99999999999".parse::<Fault>(),
            Err(ParseError::BadParamValue { .. })
        ));
        assert!(matches!(
            "slow;chunks=0".parse::<Fault>(),
            Err(ParseError::BadParamValue { .. })
        ));
        assert!(matches!(
            "503;x-should-retry=maybe".parse::<Fault>(),
            Err(ParseError::BadParamValue { .. })
        ));
        assert!(matches!(
            "delay;ms=1;ms=2".parse::<Fault>(),
            Err(ParseError::DuplicateParam(_))
        ));
        assert_eq!(
            "503;retry-after=\"x".parse::<Fault>(),
            Err(ParseError::UnbalancedQuote)
        );
        assert!("503,,200".parse::<Script>().is_err());
        assert!("\u{1F4A5}".parse::<Fault>().is_err());
    }

    #[test]
    fn quoted_http_date_survives_the_comma_split() {
        let script: Script = "503;retry-after=\"Wed, 21 Oct 2015 07:28:00 GMT\", 200"
            .parse()
            .unwrap();
        assert_eq!(
            script.0[0],
            Fault::Status {
                code: 503,
                retry_after: Some("Wed, 21 Oct 2015 07:28:00 GMT".to_owned()),
                retry_after_ms: None,
                should_retry: None,
                chunks: None,
                early: false,
                quota: false,
            }
        );
        assert_eq!(script.0[1], Fault::status(200));
    }

    #[test]
    fn early_is_a_flag_of_failure_statuses_only() {
        let Ok(Fault::Status { early, .. }) = "429;EARLY=True".parse() else {
            panic!("429;early parses");
        };
        assert!(early);
        assert_eq!("503;early=false".parse(), Ok(Fault::status(503)));
        assert!(matches!(
            "200;early=true".parse::<Fault>(),
            Err(ParseError::UnknownParam { .. })
        ));
        assert!(matches!(
            "503;early=yes".parse::<Fault>(),
            Err(ParseError::BadParamValue { .. })
        ));
        assert!(matches!(
            "503;early=true;early=true".parse::<Fault>(),
            Err(ParseError::DuplicateParam(_))
        ));
    }

    #[test]
    fn display_round_trips() {
        let text = "503;retry-after=\"Wed, 21 Oct 2015 07:28:00 GMT\";retry-after-ms=200;x-should-retry=true, \
                    200;chunks=2, delay;ms=5, stall, slow;ms=1;chunks=9, reset, close, hostile, hostile;headers=3, \
                    429;retry-after-ms=5;early=true";
        let script: Script = text.parse().unwrap();
        let again: Script = script.to_string().parse().unwrap();
        assert_eq!(script, again);
        assert_eq!(script.to_string(), text);
    }

    #[test]
    fn last_entry_repeats() {
        let script: Script = "503, 429, 200".parse().unwrap();
        assert_eq!(script.for_attempt(0), Some(&Fault::status(503)));
        assert_eq!(script.for_attempt(1), Some(&Fault::status(429)));
        assert_eq!(script.for_attempt(2), Some(&Fault::status(200)));
        assert_eq!(script.for_attempt(50), Some(&Fault::status(200)));
        assert_eq!(Script(Vec::new()).for_attempt(0), None);
    }
}
