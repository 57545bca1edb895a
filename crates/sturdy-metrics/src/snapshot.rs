//! [`SnapshotRecorder`]: in-memory counts and latency percentiles, for tests
//! and reports. One short lock per event (never held across an await); the
//! latency histograms have a fixed size whatever the number of calls.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;
use sturdy_core::{Reach, Workload};

use crate::{CallSummary, Dimensions, Outcome, Recorder, Scope};

/// Largest latency tracked: one hour (longer ones count as one hour).
pub const MAX_TRACKED: Duration = Duration::from_secs(3600);

/// Which duration of a call or attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timing {
    /// To the end of the response body (or the failure).
    Total,
    /// To the response head.
    Head,
    /// To the first body frame (time to first token for a stream).
    FirstFrame,
}

impl Timing {
    /// Every timing.
    pub const ALL: [Timing; 3] = [Timing::Total, Timing::Head, Timing::FirstFrame];

    /// `total`, `head` or `first_frame`.
    pub const fn label(self) -> &'static str {
        match self {
            Timing::Total => "total",
            Timing::Head => "head",
            Timing::FirstFrame => "first_frame",
        }
    }
}

/// The key of one outcome count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OutcomeKey {
    /// Call or attempt.
    pub scope: Scope,
    /// `ok`, a status, or a failure label.
    pub outcome: &'static str,
    /// How far it got.
    pub reach: Reach,
}

const MAX_TRACKED_US: u64 = 3_600_000_000;

/// One latency histogram: microseconds, 3 significant figures, 1 µs to 1 h,
/// a fixed size (about 180 KiB) whatever the number of samples.
fn latency_histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, MAX_TRACKED_US, 3).expect("constant bounds are valid")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_TRACKED_US)
}

/// The latencies of one scope.
#[derive(Clone)]
struct Latencies([Histogram<u64>; 3]);

impl Default for Latencies {
    fn default() -> Self {
        Latencies([
            latency_histogram(),
            latency_histogram(),
            latency_histogram(),
        ])
    }
}

#[derive(Clone, Default)]
struct State {
    started: [u64; 2],
    outcomes: BTreeMap<OutcomeKey, u64>,
    by_workload: BTreeMap<(Scope, Workload, Reach), u64>,
    retries: BTreeMap<&'static str, u64>,
    budget_refusals: u64,
    possibly_duplicated: u64,
    call_attempts: u64,
    latencies: [Latencies; 2],
}

/// Records into memory; [`SnapshotRecorder::snapshot`] reads a consistent
/// [`Snapshot`]. Cloning shares the counts.
///
/// ```
/// use sturdy_metrics::{FailureMetricsLayer, Scope, SnapshotRecorder};
/// let recorder = SnapshotRecorder::new();
/// let _layer = FailureMetricsLayer::attempts(recorder.clone());
/// let snapshot = recorder.snapshot();
/// assert_eq!(snapshot.started(Scope::Attempt), 0);
/// assert_eq!(snapshot.in_flight(Scope::Attempt), 0);
/// ```
#[derive(Clone, Default)]
pub struct SnapshotRecorder {
    state: Arc<Mutex<State>>,
}

impl SnapshotRecorder {
    /// An empty recorder.
    pub fn new() -> SnapshotRecorder {
        SnapshotRecorder::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Updates cannot panic half-way; a poisoned lock holds sound counts.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of everything recorded so far, taken under one lock.
    pub fn snapshot(&self) -> Snapshot {
        let state = self.lock().clone();
        Snapshot {
            state: Arc::new(state),
        }
    }
}

impl fmt::Debug for SnapshotRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.snapshot(), f)
    }
}

impl Recorder for SnapshotRecorder {
    fn started(&self, dims: &Dimensions) {
        self.lock().started[dims.scope as usize] += 1;
    }

    fn head(&self, dims: &Dimensions, elapsed: Duration) {
        self.lock().latencies[dims.scope as usize].0[Timing::Head as usize]
            .saturating_record(micros(elapsed));
    }

    fn first_frame(&self, dims: &Dimensions, elapsed: Duration) {
        self.lock().latencies[dims.scope as usize].0[Timing::FirstFrame as usize]
            .saturating_record(micros(elapsed));
    }

    fn call_summary(&self, _workload: Workload, summary: &CallSummary) {
        let mut s = self.lock();
        s.call_attempts += u64::from(summary.attempts);
        s.budget_refusals += u64::from(summary.budget_refusals);
        s.possibly_duplicated += u64::from(summary.possibly_duplicated);
        for reason in &summary.retry_reasons {
            *s.retries.entry(reason.label()).or_default() += 1;
        }
    }

    fn finished(&self, dims: &Dimensions, outcome: Outcome, elapsed: Duration) {
        let key = OutcomeKey {
            scope: dims.scope,
            outcome: outcome.label(),
            reach: outcome.reach(),
        };
        let mut s = self.lock();
        *s.outcomes.entry(key).or_default() += 1;
        *s.by_workload
            .entry((dims.scope, dims.workload, key.reach))
            .or_default() += 1;
        s.latencies[dims.scope as usize].0[Timing::Total as usize]
            .saturating_record(micros(elapsed));
    }
}

/// What a [`SnapshotRecorder`] had recorded at one moment. Cloning is an
/// `Arc` increment.
#[derive(Clone)]
pub struct Snapshot {
    state: Arc<State>,
}

impl Snapshot {
    /// Calls or attempts started.
    pub fn started(&self, scope: Scope) -> u64 {
        self.state.started[scope as usize]
    }

    /// Calls or attempts that ended (with any outcome).
    pub fn finished(&self, scope: Scope) -> u64 {
        self.outcomes(scope).map(|(_, _, n)| n).sum()
    }

    /// Started and not yet ended.
    pub fn in_flight(&self, scope: Scope) -> u64 {
        self.started(scope).saturating_sub(self.finished(scope))
    }

    /// How many ended with `outcome` (`ok`, `503`, `connect_refused`...) at
    /// `reach`.
    pub fn count(&self, scope: Scope, outcome: &str, reach: Reach) -> u64 {
        self.outcomes(scope)
            .filter(|(o, r, _)| *o == outcome && *r == reach)
            .map(|(_, _, n)| n)
            .sum()
    }

    /// How many ended with `outcome`, whatever the reach.
    pub fn count_outcome(&self, scope: Scope, outcome: &str) -> u64 {
        self.outcomes(scope)
            .filter(|(o, _, _)| *o == outcome)
            .map(|(_, _, n)| n)
            .sum()
    }

    /// How many ended at `reach` (successes are `acknowledged`).
    pub fn by_reach(&self, scope: Scope, reach: Reach) -> u64 {
        self.outcomes(scope)
            .filter(|(_, r, _)| *r == reach)
            .map(|(_, _, n)| n)
            .sum()
    }

    /// How many ended with a failure.
    pub fn failed(&self, scope: Scope) -> u64 {
        self.finished(scope) - self.count(scope, "ok", Reach::Acknowledged)
    }

    /// How many of one workload ended at `reach`.
    pub fn by_workload(&self, scope: Scope, workload: Workload, reach: Reach) -> u64 {
        self.state
            .by_workload
            .get(&(scope, workload, reach))
            .copied()
            .unwrap_or(0)
    }

    /// Every (outcome, reach, count) of a scope, in a stable order.
    pub fn outcomes(&self, scope: Scope) -> impl Iterator<Item = (&'static str, Reach, u64)> + '_ {
        self.state
            .outcomes
            .iter()
            .filter(move |(k, _)| k.scope == scope)
            .map(|(k, n)| (k.outcome, k.reach, *n))
    }

    /// Retries taken, by reason.
    pub fn retries(&self) -> &BTreeMap<&'static str, u64> {
        &self.state.retries
    }

    /// All retries taken.
    pub fn retries_total(&self) -> u64 {
        self.state.retries.values().sum()
    }

    /// Retries the budget refused.
    pub fn budget_refusals(&self) -> u64 {
        self.state.budget_refusals
    }

    /// Retries that may have sent a request twice.
    pub fn possibly_duplicated(&self) -> u64 {
        self.state.possibly_duplicated
    }

    /// Attempts summed over ended calls, as the `calls()` scope read them
    /// from the call contexts (1 per call without a retry layer).
    pub fn call_attempts(&self) -> u64 {
        self.state.call_attempts
    }

    /// The latency histogram (microseconds) of one scope and timing.
    pub fn latency(&self, scope: Scope, timing: Timing) -> &Histogram<u64> {
        &self.state.latencies[scope as usize].0[timing as usize]
    }

    /// The `q` quantile (0 to 1) of one scope and timing, `None` without
    /// samples.
    pub fn percentile(&self, scope: Scope, timing: Timing, q: f64) -> Option<Duration> {
        let h = self.latency(scope, timing);
        if h.is_empty() {
            return None;
        }
        Some(Duration::from_micros(
            h.value_at_quantile(q.clamp(0.0, 1.0)),
        ))
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Snapshot");
        for scope in Scope::ALL {
            d.field(scope.label(), &self.outcomes(scope).collect::<Vec<_>>());
        }
        d.field("retries", &self.state.retries)
            .field("budget_refusals", &self.state.budget_refusals)
            .field("possibly_duplicated", &self.state.possibly_duplicated)
            .finish_non_exhaustive()
    }
}
