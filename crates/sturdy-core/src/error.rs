//! The error types sturdy's layers and client produce, typed so that
//! [`classify_error`](crate::classify_error) recognises them without reading
//! message text.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use crate::{Reach, Workload};

/// A boxed, thread-safe error: what tower and hyper pass around.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Which timeout fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Client-wide: DNS + TCP + TLS took too long.
    Connect,
    /// Client-wide: a socket write made no progress.
    Write,
    /// Waiting for the inner service's capacity.
    Ready,
    /// From the call to the response head.
    Headers,
    /// Silence between response body frames.
    Read,
    /// The whole call.
    Total,
}

impl Phase {
    /// `connect`, `write`, `ready`, `headers`, `read` or `total`.
    pub const fn name(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Write => "write",
            Phase::Ready => "ready",
            Phase::Headers => "headers",
            Phase::Read => "read",
            Phase::Total => "total",
        }
    }
}

/// A timeout: which phase fired, for which workload, after how long, and how
/// far the attempt had got.
///
/// ```
/// use std::time::Duration;
/// use sturdy_core::{classify_error, FailureKind, Phase, Reach, TimeoutError, Workload};
/// let err = TimeoutError::new(Phase::Read, Duration::from_secs(60), Reach::Acknowledged)
///     .with_workload(Workload::Interactive);
/// assert_eq!(err.to_string(), "read timeout after 60s (interactive)");
/// assert_eq!(classify_error(&err), FailureKind::ReadTimeout);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutError {
    phase: Phase,
    workload: Option<Workload>,
    limit: Duration,
    reach: Reach,
    callers: bool,
}

impl TimeoutError {
    /// A timeout of `phase` after `limit`, at `reach`.
    pub const fn new(phase: Phase, limit: Duration, reach: Reach) -> TimeoutError {
        TimeoutError {
            phase,
            workload: None,
            limit,
            reach,
            callers: false,
        }
    }

    /// The same timeout, naming the workload whose profile set the limit.
    pub const fn with_workload(mut self, workload: Workload) -> TimeoutError {
        self.workload = Some(workload);
        self
    }

    /// The same timeout, its limit being the caller's own deadline (a
    /// [`Deadline`](crate::Deadline) marker, an outer layer's deadline, or
    /// a gRPC caller's `grpc-timeout`) rather than a profile's.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sturdy_core::{Phase, Reach, TimeoutError};
    /// let err = TimeoutError::new(Phase::Total, Duration::from_millis(700), Reach::Unknown)
    ///     .by_caller();
    /// assert!(err.is_callers());
    /// assert_eq!(err.to_string(), "total timeout after 700ms (the caller's deadline)");
    /// ```
    pub const fn by_caller(mut self) -> TimeoutError {
        self.callers = true;
        self
    }

    /// Whether the limit that fired is the caller's own deadline.
    pub const fn is_callers(&self) -> bool {
        self.callers
    }

    /// The phase that fired.
    pub const fn phase(&self) -> Phase {
        self.phase
    }

    /// The workload, when a per-request layer set the limit.
    pub const fn workload(&self) -> Option<Workload> {
        self.workload
    }

    /// The limit that was exceeded.
    pub const fn limit(&self) -> Duration {
        self.limit
    }

    /// How far the attempt had got when it fired.
    pub const fn reach(&self) -> Reach {
        self.reach
    }

    /// The failure this timeout amounts to. A `headers` timeout before a
    /// connection was obtained is a `connect_timeout`: nothing was sent.
    pub const fn kind(&self) -> crate::FailureKind {
        use crate::FailureKind as K;
        match self.phase {
            Phase::Connect => K::ConnectTimeout,
            Phase::Write => K::WriteTimeout,
            Phase::Ready => K::ReadyTimeout,
            Phase::Headers => match self.reach {
                Reach::NotSent => K::ConnectTimeout,
                _ => K::HeadersTimeout,
            },
            Phase::Read => K::ReadTimeout,
            Phase::Total => K::TotalTimeout(self.reach),
        }
    }
}

impl fmt::Display for TimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} timeout after {:?}", self.phase.name(), self.limit)?;
        if self.callers {
            f.write_str(" (the caller's deadline)")?;
        } else if let Some(w) = self.workload {
            write!(f, " ({w})")?;
        }
        Ok(())
    }
}

impl StdError for TimeoutError {}

/// The resolver failed to resolve a host name.
///
/// The name itself is kept (it is not secret: it is the host the client was
/// told to reach) so that the message says which host failed.
#[derive(Debug)]
pub struct DnsError {
    host: Box<str>,
    source: Option<BoxError>,
}

impl DnsError {
    /// A failure to resolve `host`, caused by `source`.
    pub fn new(host: impl Into<Box<str>>, source: impl Into<BoxError>) -> DnsError {
        DnsError {
            host: host.into(),
            source: Some(source.into()),
        }
    }

    /// `host` resolved to no address at all.
    pub fn no_addresses(host: impl Into<Box<str>>) -> DnsError {
        DnsError {
            host: host.into(),
            source: None,
        }
    }

    /// The host that failed to resolve.
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(_) => write!(f, "dns: failed to resolve {:?}", self.host),
            None => write!(f, "dns: {:?} resolved to no addresses", self.host),
        }
    }
}

impl StdError for DnsError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// The part of connecting that was under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectPart {
    /// Resolving the host name.
    Dns,
    /// Opening the TCP connection (to the server or to a proxy).
    Tcp,
    /// Tunnelling through an HTTP proxy (CONNECT).
    Proxy,
    /// The TLS handshake.
    Tls,
}

impl ConnectPart {
    /// `dns`, `tcp`, `proxy` or `tls`.
    pub const fn name(self) -> &'static str {
        match self {
            ConnectPart::Dns => "dns",
            ConnectPart::Tcp => "tcp",
            ConnectPart::Proxy => "proxy",
            ConnectPart::Tls => "tls",
        }
    }
}

/// Connecting failed, or stalled past the client's `connect` limit, during
/// one named part of it.
#[derive(Debug)]
pub struct ConnectError {
    part: ConnectPart,
    source: BoxError,
}

impl ConnectError {
    /// A failure during `part`.
    pub fn new(part: ConnectPart, source: impl Into<BoxError>) -> ConnectError {
        ConnectError {
            part,
            source: source.into(),
        }
    }

    /// The part that was under way.
    pub fn part(&self) -> ConnectPart {
        self.part
    }

    /// Whether the `connect` limit fired (rather than the part failing).
    pub fn is_timeout(&self) -> bool {
        self.source.is::<TimeoutError>()
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_timeout() {
            write!(f, "connect timed out during {}", self.part.name())
        } else {
            write!(f, "connect failed during {}", self.part.name())
        }
    }
}

impl StdError for ConnectError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// A rate-limit pacer (the `sturdy-rate` crate's) refused an attempt
/// before sending it. Defined here, beside the other typed errors, so that
/// [`classify_error`](crate::classify_error) recognises it:
/// [`FailureKind::RateLimitHold`](crate::FailureKind::RateLimitHold),
/// reach `NotSent`, not retried.
///
/// Its `Display` names the server (`host:port`, from the request URI, never
/// user-info) and durations; never a header value.
///
/// ```
/// use std::time::Duration;
/// use sturdy_core::{classify_error, FailureKind, PacerError, Reach};
/// let err = PacerError::reset_beyond_deadline(
///     "api.test:443".into(),
///     Duration::from_secs(30),
///     Duration::from_secs(5),
/// );
/// assert_eq!(classify_error(&err), FailureKind::RateLimitHold);
/// assert_eq!(classify_error(&err).reach(), Reach::NotSent);
/// assert_eq!(
///     err.to_string(),
///     "rate limit: api.test:443 has no room for 30s, past the call's deadline (in 5s)"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PacerError {
    /// The server's rate-limit headers said it had no room left until
    /// `wait` from now, and the call's deadline comes first (`left` from
    /// now, at most `wait`): holding the attempt could only end in a
    /// timeout, so it failed at once.
    #[non_exhaustive]
    ResetBeyondDeadline {
        /// The server, as `host:port`.
        server: std::sync::Arc<str>,
        /// How long the attempt would have had to wait.
        wait: Duration,
        /// How long was left before the call's deadline.
        left: Duration,
    },
}

impl PacerError {
    /// The attempt to `server` would have had to wait `wait`, with only
    /// `left` before the call's deadline.
    pub fn reset_beyond_deadline(
        server: std::sync::Arc<str>,
        wait: Duration,
        left: Duration,
    ) -> PacerError {
        PacerError::ResetBeyondDeadline { server, wait, left }
    }

    /// The server the attempt was for, as `host:port`.
    pub fn server(&self) -> &str {
        match self {
            PacerError::ResetBeyondDeadline { server, .. } => server,
        }
    }

    /// How long the attempt would have had to wait.
    pub fn wait(&self) -> Duration {
        match self {
            PacerError::ResetBeyondDeadline { wait, .. } => *wait,
        }
    }

    /// The failure this amounts to:
    /// [`FailureKind::RateLimitHold`](crate::FailureKind::RateLimitHold).
    pub const fn kind(&self) -> crate::FailureKind {
        crate::FailureKind::RateLimitHold
    }
}

impl fmt::Display for PacerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PacerError::ResetBeyondDeadline { server, wait, left } => write!(
                f,
                "rate limit: {server} has no room for {wait:?}, past the call's deadline (in {left:?})"
            ),
        }
    }
}

impl StdError for PacerError {}
