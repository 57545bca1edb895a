//! Workloads and their timeout profiles: the per-request half of the
//! guide's timeout advice. The outer timeout layer picks a [`Workload`] for
//! each request and enforces its [`Profile`]; every layer below reads the
//! resulting [`Deadline`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The kind of work a request does, which decides how long it may take.
///
/// Chosen per request: an extension set by the caller, else a classifier
/// given to the timeout layer, else [`Workload::Interactive`].
///
/// ```
/// use sturdy_core::Workload;
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(Workload::LongContext);
/// assert_eq!(Workload::from_extensions(req.extensions()), Some(Workload::LongContext));
/// assert_eq!("batch".parse::<Workload>().unwrap(), Workload::Batch);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Workload {
    /// Interactive chat: a person is waiting. The guide says 30–60 s.
    #[default]
    Interactive,
    /// Agentic work (tool calls, multi-step): 5–30 min.
    Agentic,
    /// Large-model or long-context inference: 10–30 min.
    LongContext,
    /// Batch job submission: 60 s (the results are fetched later).
    Batch,
}

impl Workload {
    /// Every workload, in declaration order.
    pub const ALL: [Workload; 4] = [
        Workload::Interactive,
        Workload::Agentic,
        Workload::LongContext,
        Workload::Batch,
    ];

    /// A stable, lowercase label for metrics and reports
    /// (`interactive`, `agentic`, `long_context`, `batch`).
    pub const fn label(self) -> &'static str {
        match self {
            Workload::Interactive => "interactive",
            Workload::Agentic => "agentic",
            Workload::LongContext => "long_context",
            Workload::Batch => "batch",
        }
    }

    /// The workload a caller put into the request extensions, if any.
    pub fn from_extensions(ext: &http::Extensions) -> Option<Workload> {
        ext.get::<Workload>().copied()
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The error for a string that names no [`Workload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownWorkload(String);

impl fmt::Display for UnknownWorkload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown workload {:?}: expected interactive, agentic, long-context or batch",
            self.0
        )
    }
}

impl std::error::Error for UnknownWorkload {}

impl FromStr for Workload {
    type Err = UnknownWorkload;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "interactive" | "chat" => Ok(Workload::Interactive),
            "agentic" => Ok(Workload::Agentic),
            "long-context" | "longcontext" => Ok(Workload::LongContext),
            "batch" => Ok(Workload::Batch),
            _ => Err(UnknownWorkload(s.chars().take(40).collect())),
        }
    }
}

/// The per-request timeout phases of one workload.
///
/// - `ready`: waiting for the inner service's capacity (the guide's "pool");
/// - `headers`: from the call to the response head, per attempt;
/// - `read`: silence between response body frames, the wait for the first
///   frame included (for an SSE stream, time to first token), per attempt;
/// - `total`: the whole call, retries and the whole body included.
///
/// ```
/// use std::time::Duration;
/// use sturdy_core::{Profile, Workload};
/// let p = Profile::for_workload(Workload::Interactive);
/// assert_eq!(p.total, Duration::from_secs(60));
/// let agentic = Profile::for_workload(Workload::Agentic);
/// assert_eq!(agentic.read, Duration::from_secs(30 * 60));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Profile {
    /// Longest wait for the inner service to have capacity.
    pub ready: Duration,
    /// Longest wait from sending an attempt to its response head.
    pub headers: Duration,
    /// Longest silence between two response body frames (first included).
    pub read: Duration,
    /// Longest time for the whole call, retries and body included.
    pub total: Duration,
}

const MINUTE: u64 = 60;

impl Profile {
    /// The defaults, at the top of the ranges the guide (see README) gives:
    ///
    /// | workload | total | headers | read | ready |
    /// |---|---|---|---|---|
    /// | Interactive | 60 s | 60 s | 60 s | 10 s |
    /// | Agentic | 30 min | 30 min | 30 min | 10 s |
    /// | LongContext | 30 min | 30 min | 30 min | 10 s |
    /// | Batch | 60 s | 60 s | 60 s | 10 s |
    pub const fn for_workload(workload: Workload) -> Profile {
        let secs = match workload {
            Workload::Interactive | Workload::Batch => MINUTE,
            Workload::Agentic | Workload::LongContext => 30 * MINUTE,
        };
        Profile::uniform(Duration::from_secs(10), Duration::from_secs(secs))
    }

    /// A profile whose `headers`, `read` and `total` are all `limit`.
    pub const fn uniform(ready: Duration, limit: Duration) -> Profile {
        Profile {
            ready,
            headers: limit,
            read: limit,
            total: limit,
        }
    }

    /// Every phase multiplied by `factor` (clamped at zero and at ten years);
    /// used to scale the defaults down for demonstrations.
    pub fn scaled(self, factor: f64) -> Profile {
        let f = |d: Duration| clamp_secs(d.as_secs_f64() * factor);
        Profile {
            ready: f(self.ready),
            headers: f(self.headers),
            read: f(self.read),
            total: f(self.total),
        }
    }

    /// Checks that every phase is longer than zero.
    pub fn validate(&self) -> Result<(), InvalidProfile> {
        for (name, d) in [
            ("ready", self.ready),
            ("headers", self.headers),
            ("read", self.read),
            ("total", self.total),
        ] {
            if d.is_zero() {
                return Err(InvalidProfile { phase: name });
            }
        }
        Ok(())
    }
}

fn clamp_secs(secs: f64) -> Duration {
    const TEN_YEARS: f64 = 10.0 * 365.0 * 86_400.0;
    if secs.is_nan() || secs <= 0.0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(secs.min(TEN_YEARS))
    }
}

impl Default for Profile {
    fn default() -> Self {
        Profile::for_workload(Workload::Interactive)
    }
}

/// A profile with a zero phase, refused when a layer is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidProfile {
    /// The phase that was zero.
    pub phase: &'static str,
}

impl fmt::Display for InvalidProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid profile: the {} phase must be longer than zero",
            self.phase
        )
    }
}

impl std::error::Error for InvalidProfile {}

/// A profile per workload: the table a timeout layer consults.
///
/// ```
/// use std::time::Duration;
/// use sturdy_core::{Profiles, Workload};
/// let mut profiles = Profiles::default();
/// profiles.get_mut(Workload::Batch).total = Duration::from_secs(30);
/// assert_eq!(profiles.get(Workload::Batch).total, Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profiles([Profile; 4]);

impl Profiles {
    /// The profile of one workload.
    pub fn get(&self, workload: Workload) -> &Profile {
        &self.0[workload.index()]
    }

    /// The profile of one workload, to change.
    pub fn get_mut(&mut self, workload: Workload) -> &mut Profile {
        &mut self.0[workload.index()]
    }

    /// Every profile multiplied by `factor`.
    pub fn scaled(mut self, factor: f64) -> Profiles {
        for p in &mut self.0 {
            *p = p.scaled(factor);
        }
        self
    }

    /// Checks every profile.
    pub fn validate(&self) -> Result<(), InvalidProfile> {
        self.0.iter().try_for_each(Profile::validate)
    }
}

impl Default for Profiles {
    fn default() -> Self {
        Profiles(Workload::ALL.map(Profile::for_workload))
    }
}

/// The instant by which the whole call must be over, carried in request
/// extensions by the outer timeout layer.
///
/// Every layer below may read it: retries never sleep past it, attempt
/// timeouts never exceed it, and gRPC attempts derive `grpc-timeout` from it.
///
/// ```
/// use std::time::Duration;
/// use sturdy_core::Deadline;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let d = Deadline::after(Duration::from_secs(5));
/// assert!(d.remaining() <= Duration::from_secs(5));
/// assert!(!d.has_passed());
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(pub tokio::time::Instant);

impl Deadline {
    /// A deadline `limit` from now (saturating far in the future).
    pub fn after(limit: Duration) -> Deadline {
        Deadline(crate::clock::later(tokio::time::Instant::now(), limit))
    }

    /// The instant itself.
    pub fn instant(&self) -> tokio::time::Instant {
        self.0
    }

    /// Time left until the deadline; zero once it has passed.
    pub fn remaining(&self) -> Duration {
        self.0
            .saturating_duration_since(tokio::time::Instant::now())
    }

    /// Whether the deadline has passed.
    pub fn has_passed(&self) -> bool {
        tokio::time::Instant::now() >= self.0
    }

    /// The deadline a request carries, if any.
    pub fn from_extensions(ext: &http::Extensions) -> Option<Deadline> {
        ext.get::<Deadline>().copied()
    }
}

/// What a call's deadline stands for, so that the timeout it ends in names
/// the limit that fired: how long the call was given when the deadline was
/// settled, and whether the caller set it (a [`Deadline`] marker, an outer
/// layer's deadline, a gRPC caller's `grpc-timeout`) or the workload
/// profile's `total` did.
///
/// ```
/// use std::time::Duration;
/// use sturdy_core::{DeadlineLimit, Reach, Workload};
/// let callers = DeadlineLimit { limit: Duration::from_millis(700), callers: true };
/// let err = callers.error(Reach::Unknown, Some(Workload::Interactive));
/// assert_eq!(err.to_string(), "total timeout after 700ms (the caller's deadline)");
/// let own = DeadlineLimit { limit: Duration::from_secs(60), callers: false };
/// let err = own.error(Reach::Unknown, Some(Workload::Interactive));
/// assert_eq!(err.to_string(), "total timeout after 60s (interactive)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeadlineLimit {
    /// How long the call was given.
    pub limit: Duration,
    /// Whether the caller set it, rather than a workload profile.
    pub callers: bool,
}

impl DeadlineLimit {
    /// The profile's own `total`.
    pub const fn profile(total: Duration) -> DeadlineLimit {
        DeadlineLimit {
            limit: total,
            callers: false,
        }
    }

    /// The `total` timeout this deadline ends a call in, at `reach`.
    pub fn error(self, reach: crate::Reach, workload: Option<Workload>) -> crate::TimeoutError {
        let mut err = crate::TimeoutError::new(crate::Phase::Total, self.limit, reach);
        if let Some(w) = workload {
            err = err.with_workload(w);
        }
        if self.callers { err.by_caller() } else { err }
    }
}

/// The earlier of `now + limit` and the deadline, and whether the deadline
/// was the earlier one (so a timeout can report `total_timeout`).
#[inline]
pub fn attempt_limit(limit: Duration, deadline: Option<Deadline>) -> (tokio::time::Instant, bool) {
    let own = crate::clock::later(crate::clock::now(), limit);
    match deadline {
        Some(Deadline(d)) if d <= own => (d, true),
        _ => (own, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_design_table() {
        let m = Duration::from_secs(60);
        let half_hour = Duration::from_secs(1800);
        let ten = Duration::from_secs(10);
        for (w, limit) in [
            (Workload::Interactive, m),
            (Workload::Agentic, half_hour),
            (Workload::LongContext, half_hour),
            (Workload::Batch, m),
        ] {
            let p = Profile::for_workload(w);
            assert_eq!(
                (p.total, p.headers, p.read, p.ready),
                (limit, limit, limit, ten),
                "{w}"
            );
        }
    }

    #[test]
    fn workload_parses_and_rejects() {
        assert_eq!(
            "long_context".parse::<Workload>(),
            Ok(Workload::LongContext)
        );
        assert_eq!(
            "LONG-CONTEXT".parse::<Workload>(),
            Ok(Workload::LongContext)
        );
        assert!("nope".parse::<Workload>().is_err());
    }

    #[test]
    fn scaling_clamps_and_zero_is_invalid() {
        let p = Profile::for_workload(Workload::Interactive).scaled(0.001);
        assert_eq!(p.total, Duration::from_millis(60));
        assert!(p.validate().is_ok());
        assert!(p.scaled(-1.0).validate().is_err());
        assert!(p.scaled(f64::NAN).validate().is_err());
        assert_eq!(
            p.scaled(f64::INFINITY).total,
            Duration::from_secs(10 * 365 * 86_400)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn attempt_limit_prefers_the_earlier_instant() {
        let d = Deadline::after(Duration::from_secs(1));
        let (at, by_deadline) = attempt_limit(Duration::from_secs(5), Some(d));
        assert!(by_deadline);
        assert_eq!(at, d.0);
        let (_, by_deadline) = attempt_limit(Duration::from_millis(10), Some(d));
        assert!(!by_deadline);
        let (_, by_deadline) = attempt_limit(Duration::MAX, None);
        assert!(!by_deadline);
        assert!(Deadline::after(Duration::MAX).remaining() > Duration::from_secs(1));
    }
}
