//! [`SnapshotRecorder`]: in-memory counts and latency percentiles, for tests
//! and reports, and the default recorder of the `Stack`: a call is recorded
//! with atomic adds alone, whether it succeeds or fails; the latency
//! histograms have a fixed size whatever the number of calls.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;
use sturdy_core::{Reach, RetryRefusal, Workload};

use crate::slots::Slots;
use crate::{Ended, Outcome, Recorder, Scope};

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

/// One latency histogram as a snapshot holds it: microseconds, 3
/// significant figures, 1 µs to 1 h.
fn latency_histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, MAX_TRACKED_US, 3).expect("constant bounds are valid")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_TRACKED_US)
}

/// Sub-buckets per power of two: a recorded latency is kept within 1/512
/// (0.2 %) of its value, rounded up (as HDR histograms report a value's
/// "highest equivalent").
const SUB_BITS: u32 = 9;
const SUB: u64 = 1 << SUB_BITS;
/// Values below `SUB` µs have a bucket each; each power of two above, up to
/// 2^32 µs (past an hour), has `SUB`.
const BUCKETS: usize = (SUB + (32 - SUB_BITS as u64) * SUB) as usize;

/// A latency histogram recorded with one atomic add: log-linear buckets
/// of microseconds, read into an HDR histogram when a snapshot is taken.
struct AtomicLatencies(Box<[AtomicU64]>);

impl Default for AtomicLatencies {
    fn default() -> Self {
        AtomicLatencies((0..BUCKETS).map(|_| AtomicU64::new(0)).collect())
    }
}

impl AtomicLatencies {
    fn bucket(us: u64) -> usize {
        if us < SUB {
            return us as usize;
        }
        let power = 63 - us.leading_zeros() as u64;
        let shift = power - SUB_BITS as u64;
        let sub = (us >> shift) - SUB;
        (SUB + shift * SUB + sub) as usize
    }

    /// The highest value of bucket `i`, in microseconds.
    fn value(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB {
            return i.max(1);
        }
        let shift = (i - SUB) / SUB;
        let sub = (i - SUB) % SUB;
        ((SUB + sub + 1) << shift) - 1
    }

    fn record(&self, d: Duration) {
        if let Some(b) = self.0.get(Self::bucket(micros(d))) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn read(&self) -> Histogram<u64> {
        let mut h = latency_histogram();
        for (i, b) in self.0.iter().enumerate() {
            let n = b.load(Ordering::Relaxed);
            if n > 0 {
                h.saturating_record_n(Self::value(i).min(MAX_TRACKED_US), n);
            }
        }
        h
    }
}

/// What a snapshot holds: plain numbers, read from the live counts.
#[derive(Clone)]
struct State {
    started: [u64; 2],
    outcomes: BTreeMap<OutcomeKey, u64>,
    by_workload: BTreeMap<(Scope, Workload, Reach), u64>,
    retries: BTreeMap<&'static str, u64>,
    retry_refusals: BTreeMap<&'static str, u64>,
    possibly_duplicated: u64,
    call_attempts: u64,
    latencies: [[Histogram<u64>; 3]; 2],
}

/// Counts by a label, each an atomic add: the first [`SLOTS`](crate::slots)
/// keys seen get a counter each, in a list read without a lock; a key past
/// those is counted in a map under a short lock (never held across an
/// await). A snapshot sums both.
struct Counts<K> {
    slots: Slots<(K, AtomicU64)>,
    overflow: Mutex<BTreeMap<K, u64>>,
}

impl<K> Default for Counts<K> {
    fn default() -> Self {
        Counts {
            slots: Slots::default(),
            overflow: Mutex::new(BTreeMap::new()),
        }
    }
}

impl<K: Copy + Ord> Counts<K> {
    fn add(&self, key: K, n: u64) {
        match self
            .slots
            .find_or_push(|(k, _)| *k == key, (key, AtomicU64::new(0)))
        {
            Some((_, count)) => {
                count.fetch_add(n, Ordering::Relaxed);
            }
            None => *lock(&self.overflow).entry(key).or_default() += n,
        }
    }

    /// Every key counted so far, with its count.
    fn read(&self) -> BTreeMap<K, u64> {
        let mut all = lock(&self.overflow).clone();
        for (key, count) in self.slots.iter() {
            *all.entry(*key).or_default() += count.load(Ordering::Relaxed);
        }
        // A key whose slot was taken and not yet added to.
        all.retain(|_, n| *n > 0);
        all
    }
}

/// The live counts: atomic adds, whatever the outcome (see [`Counts`]).
#[derive(Default)]
struct Live {
    started: [AtomicU64; 2],
    ok: [AtomicU64; 2],
    failures: Counts<OutcomeKey>,
    by_workload: [[[AtomicU64; 3]; 4]; 2],
    retries: Counts<&'static str>,
    refusals: [AtomicU64; RetryRefusal::ALL.len()],
    possibly_duplicated: AtomicU64,
    call_attempts: AtomicU64,
    latencies: [[AtomicLatencies; 3]; 2],
}

/// Records into memory; [`SnapshotRecorder::snapshot`] reads a
/// [`Snapshot`]. Cloning shares the counts.
///
/// Lock-free: every call is recorded with atomic adds, whatever its outcome
/// (the first 32 distinct outcome and retry-reason labels get a counter
/// each; a label past those is counted under a short lock), and the latency
/// histograms have a fixed size whatever the number of calls, within 0.2 %
/// of each value.
/// A snapshot taken while calls run may see one call's counts only in
/// part; one taken after they ended is exact.
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
    live: Arc<Live>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Updates cannot panic half-way; a poisoned lock holds sound counts.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SnapshotRecorder {
    /// An empty recorder.
    pub fn new() -> SnapshotRecorder {
        SnapshotRecorder::default()
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> Snapshot {
        let l = &*self.live;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut outcomes = l.failures.read();
        let mut by_workload = BTreeMap::new();
        for scope in Scope::ALL {
            let ok = get(&l.ok[scope as usize]);
            if ok > 0 {
                outcomes.insert(
                    OutcomeKey {
                        scope,
                        outcome: "ok",
                        reach: Reach::Acknowledged,
                    },
                    ok,
                );
            }
            for w in Workload::ALL {
                for reach in Reach::ALL {
                    let n = get(&l.by_workload[scope as usize][w as usize][reach as usize]);
                    if n > 0 {
                        by_workload.insert((scope, w, reach), n);
                    }
                }
            }
        }
        let read = |s: Scope| Timing::ALL.map(|t| l.latencies[s as usize][t as usize].read());
        let state = State {
            started: [get(&l.started[0]), get(&l.started[1])],
            outcomes,
            by_workload,
            retries: l.retries.read(),
            retry_refusals: RetryRefusal::ALL
                .into_iter()
                .map(|why| (why.label(), get(&l.refusals[why as usize])))
                .filter(|(_, n)| *n > 0)
                .collect(),
            possibly_duplicated: get(&l.possibly_duplicated),
            call_attempts: get(&l.call_attempts),
            latencies: [read(Scope::Call), read(Scope::Attempt)],
        };
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
    fn started(&self, scope: Scope) {
        self.live.started[scope as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn finished(&self, ended: &Ended<'_>) {
        let l = &*self.live;
        let dims = ended.dims;
        let scope = dims.scope as usize;
        let reach = ended.outcome.reach();
        match ended.outcome {
            Outcome::Ok => {
                l.ok[scope].fetch_add(1, Ordering::Relaxed);
            }
            outcome @ Outcome::Failed(_) => {
                let key = OutcomeKey {
                    scope: dims.scope,
                    outcome: outcome.label(),
                    reach,
                };
                l.failures.add(key, 1);
            }
        }
        l.by_workload[scope][dims.workload as usize][reach as usize]
            .fetch_add(1, Ordering::Relaxed);
        let latencies = &l.latencies[scope];
        latencies[Timing::Total as usize].record(ended.duration);
        if let Some(d) = ended.time_to_head {
            latencies[Timing::Head as usize].record(d);
        }
        if let Some(d) = ended.time_to_first_frame {
            latencies[Timing::FirstFrame as usize].record(d);
        }
        if let Some(summary) = ended.call {
            l.call_attempts
                .fetch_add(u64::from(summary.attempts), Ordering::Relaxed);
            for (why, n) in summary.refusal_counts() {
                l.refusals[why as usize].fetch_add(u64::from(n), Ordering::Relaxed);
            }
            if summary.possibly_duplicated > 0 {
                l.possibly_duplicated
                    .fetch_add(u64::from(summary.possibly_duplicated), Ordering::Relaxed);
            }
            for reason in &summary.retry_reasons {
                l.retries.add(reason.label(), 1);
            }
        }
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
        self.retry_refusals(RetryRefusal::Budget)
    }

    /// Retries refused for `why`.
    pub fn retry_refusals(&self, why: RetryRefusal) -> u64 {
        self.state
            .retry_refusals
            .get(why.label())
            .copied()
            .unwrap_or(0)
    }

    /// Retries refused, by reason label (`budget`, `body_not_replayable`,
    /// ...).
    pub fn refusals(&self) -> &BTreeMap<&'static str, u64> {
        &self.state.retry_refusals
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
        &self.state.latencies[scope as usize][timing as usize]
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
            .field("retry_refusals", &self.state.retry_refusals)
            .field("possibly_duplicated", &self.state.possibly_duplicated)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    use sturdy_core::FailureKind;

    use crate::{CallSummary, Dimensions, MethodLabel, ServerAddress};

    fn dims(scope: Scope) -> Dimensions {
        Dimensions {
            scope,
            workload: Workload::Interactive,
            method: MethodLabel::from_static("POST"),
            server: ServerAddress::from_static("127.0.0.1:1"),
        }
    }

    /// Records one ended call or attempt of `scope`, failed with `kind`
    /// (ok when `None`), whose call took retries for `reasons`.
    fn record(
        r: &SnapshotRecorder,
        scope: Scope,
        kind: Option<FailureKind>,
        reasons: &[FailureKind],
    ) {
        let dims = dims(scope);
        let summary = CallSummary {
            attempts: 1 + reasons.len() as u32,
            retry_reasons: reasons.to_vec(),
            ..CallSummary::default()
        };
        r.started(scope);
        r.finished(&Ended {
            dims: &dims,
            outcome: kind.map_or(Outcome::Ok, Outcome::Failed),
            status: None,
            duration: Duration::from_millis(3),
            time_to_head: None,
            time_to_first_frame: None,
            call: (scope == Scope::Call).then_some(&summary),
        });
    }

    #[test]
    fn failures_and_retries_are_counted_without_a_lock() {
        let recorder = SnapshotRecorder::new();
        // Both lists' locks held here: only a key past the lock-free list
        // would wait for them.
        let failures = lock(&recorder.live.failures.overflow);
        let retries = lock(&recorder.live.retries.overflow);
        let (done, finished) = mpsc::channel();
        let r = recorder.clone();
        let recording = std::thread::spawn(move || {
            let refused = Some(FailureKind::ConnectRefused);
            for _ in 0..3 {
                record(&r, Scope::Attempt, refused, &[]);
            }
            record(&r, Scope::Call, refused, &[FailureKind::ConnectRefused; 2]);
            done.send(()).unwrap();
        });
        let in_time = finished.recv_timeout(Duration::from_secs(10));
        drop((failures, retries));
        recording.join().unwrap();
        assert!(in_time.is_ok(), "a failure waited for a lock");
        let s = recorder.snapshot();
        assert_eq!(
            s.count(Scope::Attempt, "connect_refused", Reach::NotSent),
            3
        );
        assert_eq!(s.count(Scope::Call, "connect_refused", Reach::NotSent), 1);
        assert_eq!(s.retries().get("connect_refused"), Some(&2));
        assert_eq!(s.in_flight(Scope::Attempt), 0);
    }

    #[test]
    fn every_failure_is_counted_once_from_racing_threads_past_the_lock_free_keys() {
        // More distinct outcomes than the lock-free list holds: statuses
        // 400 to 459 at both scopes, from four threads at once, with a retry
        // reason per call.
        let recorder = SnapshotRecorder::new();
        let status =
            |i: u16| FailureKind::Status(http::StatusCode::from_u16(400 + i % 60).unwrap());
        std::thread::scope(|t| {
            for thread in 0..4u16 {
                let r = &recorder;
                t.spawn(move || {
                    for i in 0..600u16 {
                        let kind = status(i + thread);
                        record(r, Scope::Attempt, Some(kind), &[]);
                        record(r, Scope::Call, Some(kind), &[kind]);
                        record(r, Scope::Call, None, &[]);
                    }
                });
            }
        });
        let s = recorder.snapshot();
        for scope in Scope::ALL {
            assert_eq!(
                s.finished(scope),
                if scope == Scope::Call { 4800 } else { 2400 }
            );
            assert_eq!(s.in_flight(scope), 0);
        }
        for i in 0..60 {
            let label = FailureKind::Status(http::StatusCode::from_u16(400 + i).unwrap()).label();
            assert_eq!(
                s.count(Scope::Attempt, label, Reach::Acknowledged),
                40,
                "{label}"
            );
            assert_eq!(
                s.count(Scope::Call, label, Reach::Acknowledged),
                40,
                "{label}"
            );
            assert_eq!(s.retries().get(label), Some(&40), "{label}");
        }
        assert_eq!(s.count(Scope::Call, "ok", Reach::Acknowledged), 2400);
        assert!(recorder.live.failures.slots.iter().count() == crate::slots::SLOTS);
        assert!(!lock(&recorder.live.failures.overflow).is_empty());
    }

    #[test]
    fn every_latency_lands_in_a_bucket_whose_value_is_within_a_fifth_of_a_percent_above() {
        let mut us = 1u64;
        while us <= MAX_TRACKED_US {
            let i = AtomicLatencies::bucket(us);
            assert!(i < BUCKETS, "{us}");
            let v = AtomicLatencies::value(i);
            assert!(v >= us && (v - us) * 512 <= us, "{us} -> {v}");
            assert_eq!(
                AtomicLatencies::bucket(v),
                i,
                "{us}: {v} is its own bucket's"
            );
            us = us * 3 / 2 + 1;
        }
    }

    #[test]
    fn the_snapshot_reads_the_same_quantiles_hdr_would() {
        let l = AtomicLatencies::default();
        for ms in 1..=100u64 {
            l.record(Duration::from_millis(ms));
        }
        let h = l.read();
        assert_eq!(h.len(), 100);
        let p50 = h.value_at_quantile(0.5);
        assert!((50_000..50_200).contains(&p50), "{p50}");
        assert!((100_000..100_200).contains(&h.max()), "{}", h.max());
    }
}
