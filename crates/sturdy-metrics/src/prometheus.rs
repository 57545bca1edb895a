//! [`PrometheusRecorder`]: the prometheus-client backend. Registers
//! OpenTelemetry's `http_client_request_duration_seconds` and sturdy's own
//! counters, gauges and histograms into a user's `Registry`.
//!
//! Label sets are structs of `&'static str` and interned `Arc<str>` labels.
//! Each label set is looked up in its `Family` once: the recorder keeps the
//! metric handles (`Arc`s) in a small table keyed by the identity of the
//! labels, so recording a value is a read lock, a cheap hash of a few words
//! and the metric's own atomic adds. Past `HANDLE_LIMIT` label sets per
//! metric the table stops growing and recording falls back to the family.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, OnceLock, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use sturdy_core::{Safety, Workload};

use crate::{CallSummary, Dimensions, Ended, MethodLabel, Outcome, Recorder, Scope, ServerAddress};

/// Histogram buckets in seconds, sized for LLM calls: from 5 ms (a cached
/// answer, a refused connection) to 30 min (an agentic or long-context call).
pub const BUCKETS: [f64; 19] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    900.0, 1200.0, 1800.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    scope: &'static str,
    workload: &'static str,
    method: MethodLabel,
    server_address: ServerAddress,
    outcome: &'static str,
    reach: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabels {
    workload: &'static str,
    method: MethodLabel,
    server_address: ServerAddress,
    outcome: &'static str,
    reach: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TimingLabels {
    scope: &'static str,
    workload: &'static str,
    method: MethodLabel,
    server_address: ServerAddress,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkloadLabels {
    workload: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    workload: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    workload: &'static str,
    reason: &'static str,
}

/// Most label sets whose handles one metric keeps; past that, recording
/// looks the label set up in the family (correct, just slower).
const HANDLE_LIMIT: usize = 256;

/// A word-at-a-time multiplicative hasher (the `FxHash` of rustc) for the
/// handle tables' keys, which are a few integers and addresses: no
/// attacker-chosen bytes reach it, so SipHash's DoS resistance buys nothing.
#[derive(Default, Clone, Copy)]
struct WordHasher(u64);

impl WordHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The identity of a label's text: its address and length. Two labels with
/// the same identity have the same text; two with different identities may
/// still have the same text (two `Arc`s), which only costs a second table
/// entry holding the same handle. Entries keep their labels alive, so an
/// address in the table is never reused by another text.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct TextId {
    addr: usize,
    len: usize,
}

impl TextId {
    fn of(s: &str) -> TextId {
        TextId {
            addr: s.as_ptr().addr(),
            len: s.len(),
        }
    }
}

/// Scope, workload, method and server, by identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct SeriesKey {
    scope: Scope,
    workload: Workload,
    method: TextId,
    server: TextId,
}

impl SeriesKey {
    fn of(dims: &Dimensions) -> SeriesKey {
        SeriesKey {
            scope: dims.scope,
            workload: dims.workload,
            method: TextId::of(dims.method.as_str()),
            server: TextId::of(dims.server.as_str()),
        }
    }
}

/// The same and the outcome.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct EndKey {
    series: SeriesKey,
    outcome: Outcome,
}

struct Held<V> {
    /// Keeps the texts whose addresses are in the key alive.
    _labels: (MethodLabel, ServerAddress),
    handles: V,
}

/// Metric handles by label-set identity: read-mostly (a write lock only the
/// first time a label set is seen), never held across an await.
struct Handles<K, V> {
    table: RwLock<HashMap<K, Held<V>, BuildHasherDefault<WordHasher>>>,
}

impl<K: Hash + Eq, V> Default for Handles<K, V> {
    fn default() -> Self {
        Handles {
            table: RwLock::new(HashMap::default()),
        }
    }
}

impl<K: Hash + Eq, V> Handles<K, V> {
    /// Runs `record` on the handles of `key`, creating them with `resolve`
    /// the first time; `resolve` also serves when the table is full.
    fn with(&self, key: K, dims: &Dimensions, resolve: impl FnOnce() -> V, record: impl Fn(&V)) {
        // A poisoned lock only means a panic elsewhere mid-insert; the
        // table of handles is still sound.
        if let Some(held) = self
            .table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            record(&held.handles);
            return;
        }
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = table.get(&key) {
            record(&held.handles);
            return;
        }
        let handles = resolve();
        record(&handles);
        if table.len() < HANDLE_LIMIT {
            table.insert(
                key,
                Held {
                    _labels: (dims.method.clone(), dims.server.clone()),
                    handles,
                },
            );
        }
    }
}

/// The series one ended flight records into; the timing series are made
/// the first time a flight has the timing, so a series appears only once
/// something is recorded in it.
struct EndHandles {
    /// `calls` or `attempts`, by scope.
    count: Counter,
    duration: Histogram,
    time_to_head: OnceLock<Histogram>,
    time_to_first_frame: OnceLock<Histogram>,
}

struct Metrics {
    duration: HistogramFamily<OutcomeLabels>,
    calls: Family<EndLabels, Counter>,
    attempts: Family<EndLabels, Counter>,
    time_to_head: HistogramFamily<TimingLabels>,
    time_to_first_frame: HistogramFamily<TimingLabels>,
    retries: Family<RetryLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    possibly_duplicated: Family<WorkloadLabels, Counter>,
    call_attempts: Family<WorkloadLabels, Counter>,
    /// Indexed by `Scope as usize`: two label sets, resolved once.
    started: [Counter; 2],
    in_flight: [Gauge; 2],
    /// Handles of every series one ended flight records into, by label
    /// set: one lookup per flight.
    end_handles: Handles<EndKey, EndHandles>,
    /// `call_attempts` by `Workload as usize`, created when first used.
    call_attempts_handles: [OnceLock<Counter>; Workload::ALL.len()],
}

/// Records into prometheus-client metrics registered in a user's
/// [`Registry`]. Cloning shares the metrics.
///
/// | metric | type | labels |
/// |---|---|---|
/// | `http_client_request_duration_seconds` | histogram, to the end of the body | scope, workload, method, server_address, outcome, reach |
/// | `sturdy_client_calls_total` | counter, calls ended | workload, method, server_address, outcome, reach |
/// | `sturdy_client_attempts_total` | counter, attempts ended | the same |
/// | `sturdy_client_started_total` | counter | scope |
/// | `sturdy_client_in_flight` | gauge | scope |
/// | `sturdy_client_time_to_head_seconds` | histogram | scope, workload, method, server_address |
/// | `sturdy_client_time_to_first_frame_seconds` | histogram | the same |
/// | `sturdy_client_retries_total` | counter | workload, reason |
/// | `sturdy_client_retry_refusals_total` | counter, retries the verdict called for and not made | workload, reason |
/// | `sturdy_client_possibly_duplicated_total` | counter | workload |
/// | `sturdy_client_call_attempts_total` | counter, attempts summed over ended calls | workload |
///
/// ```
/// use prometheus_client::registry::Registry;
/// use sturdy_metrics::{FailureMetricsLayer, PrometheusRecorder};
/// let mut registry = Registry::default();
/// let recorder = PrometheusRecorder::new(&mut registry);
/// let _calls = FailureMetricsLayer::calls(recorder.clone());
/// let _attempts = FailureMetricsLayer::attempts(recorder);
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
/// assert!(text.contains("sturdy_client_in_flight{scope=\"call\"} 0"));
/// ```
#[derive(Clone)]
pub struct PrometheusRecorder {
    metrics: Arc<Metrics>,
}

impl PrometheusRecorder {
    /// Creates the metrics and registers them into `registry`.
    pub fn new(registry: &mut Registry) -> PrometheusRecorder {
        let m = Metrics {
            duration: Family::new_with_constructor(histogram as fn() -> Histogram),
            calls: Family::default(),
            attempts: Family::default(),
            time_to_head: Family::new_with_constructor(histogram as fn() -> Histogram),
            time_to_first_frame: Family::new_with_constructor(histogram as fn() -> Histogram),
            retries: Family::default(),
            refusals: Family::default(),
            possibly_duplicated: Family::default(),
            call_attempts: Family::default(),
            started: Default::default(),
            in_flight: Default::default(),
            end_handles: Handles::default(),
            call_attempts_handles: Default::default(),
        };
        let started: Family<ScopeLabels, Counter> = Family::default();
        let in_flight: Family<ScopeLabels, Gauge> = Family::default();
        let mut started_handles: [Counter; 2] = Default::default();
        let mut in_flight_handles: [Gauge; 2] = Default::default();
        for scope in Scope::ALL {
            let labels = ScopeLabels {
                scope: scope.label(),
            };
            started_handles[scope as usize] = started.get_or_create_owned(&labels);
            in_flight_handles[scope as usize] = in_flight.get_or_create_owned(&labels);
        }
        registry.register_with_unit(
            "http_client_request_duration",
            "Duration of HTTP client calls and attempts, to the end of the response body, by outcome and reach",
            Unit::Seconds,
            m.duration.clone(),
        );
        registry.register(
            "sturdy_client_calls",
            "Logical calls ended, by outcome and reach (how far the call got)",
            m.calls.clone(),
        );
        registry.register(
            "sturdy_client_attempts",
            "Attempts ended, by outcome and reach: not_sent attempts never reached the server",
            m.attempts.clone(),
        );
        registry.register(
            "sturdy_client_started",
            "Calls and attempts started",
            started,
        );
        registry.register(
            "sturdy_client_in_flight",
            "Calls and attempts started and not yet ended",
            in_flight,
        );
        registry.register_with_unit(
            "sturdy_client_time_to_head",
            "Time from the call or attempt to its response head",
            Unit::Seconds,
            m.time_to_head.clone(),
        );
        registry.register_with_unit(
            "sturdy_client_time_to_first_frame",
            "Time from the call or attempt to the first response body frame (time to first token for a stream)",
            Unit::Seconds,
            m.time_to_first_frame.clone(),
        );
        registry.register(
            "sturdy_client_retries",
            "Retries taken, by the failure that caused them",
            m.retries.clone(),
        );
        registry.register(
            "sturdy_client_retry_refusals",
            "Retries a failure called for and the retry layer did not make, by reason: budget, body_not_replayable, not_repeatable, retries_spent, past_deadline, hint_beyond_cap",
            m.refusals.clone(),
        );
        registry.register(
            "sturdy_client_possibly_duplicated",
            Safety::POSSIBLY_DUPLICATED,
            m.possibly_duplicated.clone(),
        );
        registry.register(
            "sturdy_client_call_attempts",
            "Attempts made by ended calls, as counted by the retry layer (1 per call without one)",
            m.call_attempts.clone(),
        );
        PrometheusRecorder {
            metrics: Arc::new(Metrics {
                started: started_handles,
                in_flight: in_flight_handles,
                ..m
            }),
        }
    }
}

fn timing_labels(dims: &Dimensions) -> TimingLabels {
    TimingLabels {
        scope: dims.scope.label(),
        workload: dims.workload.label(),
        method: dims.method.clone(),
        server_address: dims.server.clone(),
    }
}

impl Metrics {
    fn end_handles(&self, dims: &Dimensions, outcome: Outcome) -> EndHandles {
        let (label, reach) = (outcome.label(), outcome.reach().label());
        let end = EndLabels {
            workload: dims.workload.label(),
            method: dims.method.clone(),
            server_address: dims.server.clone(),
            outcome: label,
            reach,
        };
        let count = match dims.scope {
            Scope::Call => self.calls.get_or_create_owned(&end),
            Scope::Attempt => self.attempts.get_or_create_owned(&end),
        };
        let duration = self.duration.get_or_create_owned(&OutcomeLabels {
            scope: dims.scope.label(),
            workload: end.workload,
            method: end.method,
            server_address: end.server_address,
            outcome: label,
            reach,
        });
        EndHandles {
            count,
            duration,
            time_to_head: OnceLock::new(),
            time_to_first_frame: OnceLock::new(),
        }
    }

    fn call_summary(&self, workload: Workload, summary: &CallSummary) {
        let w = workload.label();
        let attempts = u64::from(summary.attempts);
        match self.call_attempts_handles.get(workload as usize) {
            Some(cell) => cell
                .get_or_init(|| {
                    self.call_attempts
                        .get_or_create_owned(&WorkloadLabels { workload: w })
                })
                .inc_by(attempts),
            None => self
                .call_attempts
                .get_or_create(&WorkloadLabels { workload: w })
                .inc_by(attempts),
        };
        for reason in &summary.retry_reasons {
            self.retries
                .get_or_create(&RetryLabels {
                    workload: w,
                    reason: reason.label(),
                })
                .inc();
        }
        for (why, n) in summary.refusal_counts() {
            self.refusals
                .get_or_create(&RefusalLabels {
                    workload: w,
                    reason: why.label(),
                })
                .inc_by(u64::from(n));
        }
        if summary.possibly_duplicated > 0 {
            self.possibly_duplicated
                .get_or_create(&WorkloadLabels { workload: w })
                .inc_by(u64::from(summary.possibly_duplicated));
        }
    }
}

impl Recorder for PrometheusRecorder {
    fn started(&self, scope: Scope) {
        let i = scope as usize;
        self.metrics.started[i].inc();
        self.metrics.in_flight[i].inc();
    }

    fn finished(&self, ended: &Ended<'_>) {
        let m = &self.metrics;
        let dims = ended.dims;
        m.end_handles.with(
            EndKey {
                series: SeriesKey::of(dims),
                outcome: ended.outcome,
            },
            dims,
            || m.end_handles(dims, ended.outcome),
            |h| {
                h.count.inc();
                h.duration.observe(ended.duration.as_secs_f64());
                if let Some(d) = ended.time_to_head {
                    h.time_to_head
                        .get_or_init(|| m.time_to_head.get_or_create_owned(&timing_labels(dims)))
                        .observe(d.as_secs_f64());
                }
                if let Some(d) = ended.time_to_first_frame {
                    h.time_to_first_frame
                        .get_or_init(|| {
                            m.time_to_first_frame
                                .get_or_create_owned(&timing_labels(dims))
                        })
                        .observe(d.as_secs_f64());
                }
            },
        );
        if let Some(summary) = ended.call {
            m.call_summary(dims.workload, summary);
        }
        m.in_flight[dims.scope as usize].dec();
    }
}

impl fmt::Debug for PrometheusRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusRecorder")
            .field(
                "calls_in_flight",
                &self.metrics.in_flight[Scope::Call as usize].get(),
            )
            .field(
                "attempts_in_flight",
                &self.metrics.in_flight[Scope::Attempt as usize].get(),
            )
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use sturdy_core::FailureKind;

    fn dims(scope: Scope, server: ServerAddress) -> Dimensions {
        Dimensions {
            scope,
            workload: Workload::Agentic,
            method: MethodLabel::from_static("POST"),
            server,
        }
    }

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    fn end(
        rec: &PrometheusRecorder,
        d: &Dimensions,
        outcome: Outcome,
        head: Option<u64>,
        first: Option<u64>,
        call: Option<&CallSummary>,
    ) {
        let ms = Duration::from_millis;
        rec.finished(&Ended {
            dims: d,
            outcome,
            duration: ms(20),
            time_to_head: head.map(ms),
            time_to_first_frame: first.map(ms),
            call,
        });
    }

    fn value(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(str::to_owned)
    }

    #[test]
    fn equal_labels_from_distinct_allocations_share_one_series() {
        let mut registry = Registry::default();
        let rec = PrometheusRecorder::new(&mut registry);
        let a = dims(Scope::Call, ServerAddress::shared("h:1".into()));
        let b = dims(Scope::Call, ServerAddress::shared("h:1".into()));
        let c = dims(Scope::Call, ServerAddress::from_static("h:1"));
        for d in [&a, &b, &c, &a] {
            end(&rec, d, Outcome::Ok, Some(7), None, None);
        }
        let out = text(&registry);
        let labels = "workload=\"agentic\",method=\"POST\",server_address=\"h:1\",outcome=\"ok\",reach=\"acknowledged\"";
        assert_eq!(
            value(&out, &format!("sturdy_client_calls_total{{{labels}}}")).as_deref(),
            Some("4")
        );
        assert_eq!(
            value(
                &out,
                &format!("http_client_request_duration_seconds_count{{scope=\"call\",{labels}}}")
            )
            .as_deref(),
            Some("4")
        );
        assert_eq!(
            value(
                &out,
                "sturdy_client_time_to_head_seconds_count{scope=\"call\",workload=\"agentic\",method=\"POST\",server_address=\"h:1\"}"
            )
            .as_deref(),
            Some("4")
        );
        // Three identities, one series each in the table.
        assert_eq!(rec.metrics.end_handles.table.read().unwrap().len(), 3);
    }

    #[test]
    fn series_appear_only_when_first_recorded() {
        let mut registry = Registry::default();
        let rec = PrometheusRecorder::new(&mut registry);
        let d = dims(Scope::Attempt, ServerAddress::from_static("h:2"));
        let out = text(&registry);
        assert!(!out.contains("sturdy_client_attempts_total{"));
        assert!(!out.contains("http_client_request_duration_seconds_count{"));
        end(
            &rec,
            &d,
            Outcome::Failed(sturdy_core::FailureKind::Reset),
            None,
            None,
            None,
        );
        let out = text(&registry);
        assert!(out.contains("sturdy_client_attempts_total{"));
        assert!(!out.contains("sturdy_client_time_to_head_seconds_count{"));
        end(
            &rec,
            &d,
            Outcome::Failed(sturdy_core::FailureKind::Reset),
            Some(3),
            None,
            None,
        );
        let mut call = dims(Scope::Call, ServerAddress::from_static("h:2"));
        call.workload = Workload::Batch;
        let summary = CallSummary {
            attempts: 2,
            ..CallSummary::default()
        };
        end(&rec, &call, Outcome::Ok, Some(3), None, Some(&summary));
        let out = text(&registry);
        assert!(out.contains("sturdy_client_time_to_head_seconds_count{"));
        assert!(!out.contains("sturdy_client_time_to_first_frame_seconds_count{"));
        assert_eq!(
            value(
                &out,
                "sturdy_client_call_attempts_total{workload=\"batch\"}"
            )
            .as_deref(),
            Some("2")
        );
        assert!(!out.contains("sturdy_client_call_attempts_total{workload=\"agentic\"}"));
    }

    #[test]
    fn past_the_handle_limit_recording_falls_back_to_the_family_and_stays_exact() {
        let mut registry = Registry::default();
        let rec = PrometheusRecorder::new(&mut registry);
        let servers: Vec<ServerAddress> = (0..HANDLE_LIMIT + 20)
            .map(|i| ServerAddress::shared(format!("s{i}:1").into()))
            .collect();
        let outcome = Outcome::Failed(FailureKind::ConnectRefused);
        for round in 0..2 {
            for s in &servers {
                let d = dims(Scope::Attempt, s.clone());
                end(&rec, &d, outcome, None, Some(round + 1), None);
            }
        }
        assert_eq!(
            rec.metrics.end_handles.table.read().unwrap().len(),
            HANDLE_LIMIT
        );
        let out = text(&registry);
        for i in [0, HANDLE_LIMIT - 1, HANDLE_LIMIT, HANDLE_LIMIT + 19] {
            let end = format!(
                "sturdy_client_attempts_total{{workload=\"agentic\",method=\"POST\",server_address=\"s{i}:1\",outcome=\"connect_refused\",reach=\"not_sent\"}}"
            );
            assert_eq!(value(&out, &end).as_deref(), Some("2"), "{end}");
            let ttff = format!(
                "sturdy_client_time_to_first_frame_seconds_count{{scope=\"attempt\",workload=\"agentic\",method=\"POST\",server_address=\"s{i}:1\"}}"
            );
            assert_eq!(value(&out, &ttff).as_deref(), Some("2"), "{ttff}");
        }
        assert_eq!(
            value(&out, "sturdy_client_in_flight{scope=\"attempt\"}").as_deref(),
            Some(&*format!("-{}", 2 * (HANDLE_LIMIT + 20)))
        );
    }
}
