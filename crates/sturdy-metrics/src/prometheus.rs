//! [`PrometheusRecorder`]: the prometheus-client backend. Registers the
//! series of [`crate::series`] (OpenTelemetry's
//! `http_client_request_duration_seconds` per attempt, sturdy's own for
//! calls, retries and refusals) into a user's `Registry`.
//!
//! Label sets are structs of `&'static str` and interned `Arc<str>` labels.
//! Each label set is looked up in its `Family` once: the recorder keeps the
//! metric handles (`Arc`s) in a small table keyed by the identity of the
//! labels, so recording a value is a read lock, a cheap hash of a few words
//! and the metric's own atomic adds. Past `HANDLE_LIMIT` label sets per
//! metric the table stops growing and recording falls back to the family.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, OnceLock, RwLock};

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry, Unit};
use sturdy_core::Workload;

use crate::series::{self, CALL_ATTEMPTS_BUCKETS, Series, split_method, split_server};
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

/// The labels of both duration histograms, encoded on OpenTelemetry's
/// names: the server label split into `server_address` and `server_port`,
/// a gRPC `service/method` as `http_request_method="POST"` beside
/// `rpc_method`, the status code when a response head came, `error_type`
/// only on failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct OutcomeLabels {
    method: MethodLabel,
    server: ServerAddress,
    status: Option<u16>,
    error: Option<&'static str>,
    reach: &'static str,
    workload: &'static str,
}

/// The labels of the timing histograms.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct TimingLabels {
    method: MethodLabel,
    server: ServerAddress,
    workload: &'static str,
}

fn encode_target(
    encoder: &mut LabelSetEncoder<'_>,
    method: &MethodLabel,
    server: &ServerAddress,
) -> Result<(), fmt::Error> {
    let (method, rpc) = split_method(method.as_str());
    ("http_request_method", method).encode(encoder.encode_label())?;
    if let Some(rpc) = rpc {
        ("rpc_method", rpc).encode(encoder.encode_label())?;
    }
    let (host, port) = split_server(server.as_str());
    ("server_address", host).encode(encoder.encode_label())?;
    if let Some(port) = port {
        ("server_port", port).encode(encoder.encode_label())?;
    }
    Ok(())
}

impl EncodeLabelSet for OutcomeLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), fmt::Error> {
        encode_target(encoder, &self.method, &self.server)?;
        if let Some(status) = self.status {
            ("http_response_status_code", status).encode(encoder.encode_label())?;
        }
        if let Some(error) = self.error {
            ("error_type", error).encode(encoder.encode_label())?;
        }
        ("reach", self.reach).encode(encoder.encode_label())?;
        ("workload", self.workload).encode(encoder.encode_label())
    }
}

impl EncodeLabelSet for TimingLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), fmt::Error> {
        encode_target(encoder, &self.method, &self.server)?;
        ("workload", self.workload).encode(encoder.encode_label())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkloadLabels {
    workload: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
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

/// The same, the outcome and the status code.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct EndKey {
    series: SeriesKey,
    outcome: Outcome,
    status: Option<u16>,
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
    duration: Histogram,
    time_to_head: OnceLock<Histogram>,
    time_to_first_frame: OnceLock<Histogram>,
}

/// The families of one scope.
struct ScopeMetrics {
    duration: HistogramFamily<OutcomeLabels>,
    time_to_head: HistogramFamily<TimingLabels>,
    time_to_first_frame: HistogramFamily<TimingLabels>,
    started: Counter,
    in_flight: Gauge,
}

impl ScopeMetrics {
    fn new() -> ScopeMetrics {
        ScopeMetrics {
            duration: Family::new_with_constructor(histogram as fn() -> Histogram),
            time_to_head: Family::new_with_constructor(histogram as fn() -> Histogram),
            time_to_first_frame: Family::new_with_constructor(histogram as fn() -> Histogram),
            started: Counter::default(),
            in_flight: Gauge::default(),
        }
    }

    /// Registers the families under the names of `series` (duration, time
    /// to head, time to first frame, started, in flight).
    fn register(&self, registry: &mut Registry, series: [Series; 5]) {
        let [duration, head, first, started, in_flight] = series;
        register(registry, duration, self.duration.clone());
        register(registry, head, self.time_to_head.clone());
        register(registry, first, self.time_to_first_frame.clone());
        register(registry, started, self.started.clone());
        register(registry, in_flight, self.in_flight.clone());
    }
}

/// Registers `metric` under `s`'s name, help text and unit.
fn register(registry: &mut Registry, s: Series, metric: impl Metric) {
    if s.seconds {
        registry.register_with_unit(s.base, s.help, Unit::Seconds, metric);
    } else {
        registry.register(s.base, s.help, metric);
    }
}

fn attempts_histogram() -> Histogram {
    Histogram::new(CALL_ATTEMPTS_BUCKETS)
}

struct Metrics {
    /// Indexed by `Scope as usize`.
    scopes: [ScopeMetrics; 2],
    retries: Family<ReasonLabels, Counter>,
    refusals: Family<ReasonLabels, Counter>,
    possibly_duplicated: Family<WorkloadLabels, Counter>,
    call_attempts: Family<WorkloadLabels, Histogram, fn() -> Histogram>,
    /// Handles of every series one ended flight records into, by label
    /// set: one lookup per flight.
    end_handles: Handles<EndKey, EndHandles>,
    /// `call_attempts` by `Workload as usize`, created when first used.
    call_attempts_handles: [OnceLock<Histogram>; Workload::ALL.len()],
}

/// Records into prometheus-client metrics registered in a user's
/// [`Registry`], under the names of [`crate::series`] (README's metrics
/// reference lists them). Cloning shares the metrics.
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
/// assert!(text.contains("sturdy_client_calls_in_flight 0"));
/// ```
#[derive(Clone)]
pub struct PrometheusRecorder {
    metrics: Arc<Metrics>,
}

impl PrometheusRecorder {
    /// Creates the metrics and registers them into `registry`.
    pub fn new(registry: &mut Registry) -> PrometheusRecorder {
        let m = Metrics {
            scopes: [ScopeMetrics::new(), ScopeMetrics::new()],
            retries: Family::default(),
            refusals: Family::default(),
            possibly_duplicated: Family::default(),
            call_attempts: Family::new_with_constructor(attempts_histogram as fn() -> Histogram),
            end_handles: Handles::default(),
            call_attempts_handles: Default::default(),
        };
        m.scopes[Scope::Attempt as usize].register(
            registry,
            [
                series::ATTEMPT_DURATION,
                series::ATTEMPT_TIME_TO_HEAD,
                series::ATTEMPT_TIME_TO_FIRST_FRAME,
                series::ATTEMPTS_STARTED,
                series::ATTEMPTS_IN_FLIGHT,
            ],
        );
        m.scopes[Scope::Call as usize].register(
            registry,
            [
                series::CALL_DURATION,
                series::CALL_TIME_TO_HEAD,
                series::CALL_TIME_TO_FIRST_FRAME,
                series::CALLS_STARTED,
                series::CALLS_IN_FLIGHT,
            ],
        );
        register(registry, series::RETRIES, m.retries.clone());
        register(registry, series::RETRY_REFUSALS, m.refusals.clone());
        register(
            registry,
            series::POSSIBLY_DUPLICATED,
            m.possibly_duplicated.clone(),
        );
        register(registry, series::CALL_ATTEMPTS, m.call_attempts.clone());
        PrometheusRecorder {
            metrics: Arc::new(m),
        }
    }
}

fn timing_labels(dims: &Dimensions) -> TimingLabels {
    TimingLabels {
        method: dims.method.clone(),
        server: dims.server.clone(),
        workload: dims.workload.label(),
    }
}

impl Metrics {
    fn end_handles(&self, dims: &Dimensions, outcome: Outcome, status: Option<u16>) -> EndHandles {
        let labels = OutcomeLabels {
            method: dims.method.clone(),
            server: dims.server.clone(),
            status,
            error: (!outcome.is_ok()).then(|| outcome.label()),
            reach: outcome.reach().label(),
            workload: dims.workload.label(),
        };
        EndHandles {
            duration: self.scopes[dims.scope as usize]
                .duration
                .get_or_create_owned(&labels),
            time_to_head: OnceLock::new(),
            time_to_first_frame: OnceLock::new(),
        }
    }

    fn call_summary(&self, workload: Workload, summary: &CallSummary) {
        let w = workload.label();
        let attempts = f64::from(summary.attempts);
        match self.call_attempts_handles.get(workload as usize) {
            Some(cell) => cell
                .get_or_init(|| {
                    self.call_attempts
                        .get_or_create_owned(&WorkloadLabels { workload: w })
                })
                .observe(attempts),
            None => self
                .call_attempts
                .get_or_create(&WorkloadLabels { workload: w })
                .observe(attempts),
        };
        for reason in &summary.retry_reasons {
            self.retries
                .get_or_create(&ReasonLabels {
                    workload: w,
                    reason: reason.label(),
                })
                .inc();
        }
        for (why, n) in summary.refusal_counts() {
            self.refusals
                .get_or_create(&ReasonLabels {
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
        let m = &self.metrics.scopes[scope as usize];
        m.started.inc();
        m.in_flight.inc();
    }

    fn finished(&self, ended: &Ended<'_>) {
        let m = &self.metrics;
        let dims = ended.dims;
        let scope = &m.scopes[dims.scope as usize];
        m.end_handles.with(
            EndKey {
                series: SeriesKey::of(dims),
                outcome: ended.outcome,
                status: ended.status,
            },
            dims,
            || m.end_handles(dims, ended.outcome, ended.status),
            |h| {
                h.duration.observe(ended.duration.as_secs_f64());
                if let Some(d) = ended.time_to_head {
                    h.time_to_head
                        .get_or_init(|| {
                            scope.time_to_head.get_or_create_owned(&timing_labels(dims))
                        })
                        .observe(d.as_secs_f64());
                }
                if let Some(d) = ended.time_to_first_frame {
                    h.time_to_first_frame
                        .get_or_init(|| {
                            scope
                                .time_to_first_frame
                                .get_or_create_owned(&timing_labels(dims))
                        })
                        .observe(d.as_secs_f64());
                }
            },
        );
        if let Some(summary) = ended.call {
            m.call_summary(dims.workload, summary);
        }
        scope.in_flight.dec();
    }
}

impl fmt::Debug for PrometheusRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusRecorder")
            .field(
                "calls_in_flight",
                &self.metrics.scopes[Scope::Call as usize].in_flight.get(),
            )
            .field(
                "attempts_in_flight",
                &self.metrics.scopes[Scope::Attempt as usize].in_flight.get(),
            )
            .finish_non_exhaustive()
    }
}

/// The content type of [`encode_text_004`]'s output.
pub const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The content type of prometheus-client's own (OpenMetrics) encoding.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Encodes `registry` in Prometheus's text format 0.0.4, for scrapers and
/// tools that do not read OpenMetrics (`promtool check metrics`, a plain
/// `curl`): prometheus-client writes OpenMetrics, where a counter's `HELP`
/// and `TYPE` name the family (`sturdy_client_retries`) and its samples
/// carry `_total`; here they name the samples, and the OpenMetrics-only
/// `# UNIT` and `# EOF` lines are left out. Serve it when a scraper's
/// `Accept` header does not ask for `application/openmetrics-text`.
///
/// ```
/// use prometheus_client::registry::Registry;
/// let mut registry = Registry::default();
/// let _recorder = sturdy_metrics::PrometheusRecorder::new(&mut registry);
/// let mut text = String::new();
/// sturdy_metrics::encode_text_004(&mut text, &registry).unwrap();
/// assert!(text.contains("# TYPE sturdy_client_calls_started_total counter\n"));
/// assert!(!text.contains("# EOF"));
/// ```
pub fn encode_text_004(out: &mut String, registry: &Registry) -> fmt::Result {
    let mut open = String::new();
    prometheus_client::encoding::text::encode(&mut open, registry)?;
    let counters: std::collections::HashSet<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    for line in open.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                let sep = if tail.is_empty() { "" } else { " " };
                writeln!(out, "{prefix}{name}{suffix}{sep}{tail}")?;
            }
            None => writeln!(out, "{line}")?,
        }
    }
    Ok(())
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
            status: outcome.is_ok().then_some(200),
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
        let labels = "http_request_method=\"POST\",server_address=\"h\",server_port=\"1\",http_response_status_code=\"200\",reach=\"acknowledged\",workload=\"agentic\"";
        assert_eq!(
            value(
                &out,
                &format!("sturdy_client_call_duration_seconds_count{{{labels}}}")
            )
            .as_deref(),
            Some("4"),
            "{out}"
        );
        assert!(!out.contains("http_client_request_duration_seconds_count{"));
        assert_eq!(
            value(
                &out,
                "sturdy_client_call_time_to_head_seconds_count{http_request_method=\"POST\",server_address=\"h\",server_port=\"1\",workload=\"agentic\"}"
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
        // No head: no status code; a failure: its error type.
        assert!(out.contains(
            "http_client_request_duration_seconds_count{http_request_method=\"POST\",server_address=\"h\",server_port=\"2\",error_type=\"reset\",reach=\"unknown\",workload=\"agentic\"} 1"
        ), "{out}");
        assert!(!out.contains("sturdy_client_attempt_time_to_head_seconds_count{"));
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
        assert!(out.contains("sturdy_client_attempt_time_to_head_seconds_count{"));
        assert!(!out.contains("sturdy_client_attempt_time_to_first_frame_seconds_count{"));
        assert_eq!(
            value(&out, "sturdy_client_call_attempts_sum{workload=\"batch\"}").as_deref(),
            Some("2.0")
        );
        assert_eq!(
            value(
                &out,
                "sturdy_client_call_attempts_count{workload=\"batch\"}"
            )
            .as_deref(),
            Some("1")
        );
        assert!(!out.contains("sturdy_client_call_attempts_count{workload=\"agentic\"}"));
        assert_eq!(
            value(&out, "sturdy_client_attempts_started_total").as_deref(),
            Some("0")
        );
    }

    #[test]
    fn grpc_methods_are_posts_with_an_rpc_method() {
        let mut registry = Registry::default();
        let rec = PrometheusRecorder::new(&mut registry);
        let mut d = dims(Scope::Attempt, ServerAddress::from_static("[::1]:50051"));
        d.method = MethodLabel::from_static("grpc.health.v1.Health/Check");
        end(&rec, &d, Outcome::Ok, Some(1), None, None);
        let out = text(&registry);
        assert!(out.contains(
            "http_client_request_duration_seconds_count{http_request_method=\"POST\",rpc_method=\"grpc.health.v1.Health/Check\",server_address=\"::1\",server_port=\"50051\",http_response_status_code=\"200\",reach=\"acknowledged\",workload=\"agentic\"} 1"
        ), "{out}");
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
                "http_client_request_duration_seconds_count{{http_request_method=\"POST\",server_address=\"s{i}\",server_port=\"1\",error_type=\"connect_refused\",reach=\"not_sent\",workload=\"agentic\"}}"
            );
            assert_eq!(value(&out, &end).as_deref(), Some("2"), "{end}");
            let ttff = format!(
                "sturdy_client_attempt_time_to_first_frame_seconds_count{{http_request_method=\"POST\",server_address=\"s{i}\",server_port=\"1\",workload=\"agentic\"}}"
            );
            assert_eq!(value(&out, &ttff).as_deref(), Some("2"), "{ttff}");
        }
        assert_eq!(
            value(&out, "sturdy_client_attempts_in_flight").as_deref(),
            Some(&*format!("-{}", 2 * (HANDLE_LIMIT + 20)))
        );
    }
}
