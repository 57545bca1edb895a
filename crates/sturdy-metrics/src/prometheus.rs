//! [`PrometheusRecorder`]: the prometheus-client backend. Registers
//! OpenTelemetry's `http_client_request_duration_seconds` and sturdy's own
//! counters, gauges and histograms into a user's `Registry`.
//!
//! Label sets are structs of `&'static str` and interned `Arc<str>` labels:
//! recording clones two reference counts and takes the family's read lock;
//! it allocates only the first time a label set is seen.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use sturdy_core::Workload;

use crate::{CallSummary, Dimensions, MethodLabel, Outcome, Recorder, Scope, ServerAddress};

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
struct RetryLabels {
    workload: &'static str,
    reason: &'static str,
}

struct Metrics {
    duration: HistogramFamily<OutcomeLabels>,
    calls: Family<EndLabels, Counter>,
    attempts: Family<EndLabels, Counter>,
    time_to_head: HistogramFamily<TimingLabels>,
    time_to_first_frame: HistogramFamily<TimingLabels>,
    retries: Family<RetryLabels, Counter>,
    budget_refusals: Family<WorkloadLabels, Counter>,
    possibly_duplicated: Family<WorkloadLabels, Counter>,
    call_attempts: Family<WorkloadLabels, Counter>,
    /// Indexed by `Scope as usize`: two label sets, resolved once.
    started: [Counter; 2],
    in_flight: [Gauge; 2],
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
/// | `sturdy_client_budget_refusals_total` | counter | workload |
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
            budget_refusals: Family::default(),
            possibly_duplicated: Family::default(),
            call_attempts: Family::default(),
            started: Default::default(),
            in_flight: Default::default(),
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
            "sturdy_client_budget_refusals",
            "Retries the retry budget refused",
            m.budget_refusals.clone(),
        );
        registry.register(
            "sturdy_client_possibly_duplicated",
            "Retries after an unknown-reach failure of a non-idempotent request: the server may have processed it twice",
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

impl Recorder for PrometheusRecorder {
    fn started(&self, dims: &Dimensions) {
        let i = dims.scope as usize;
        self.metrics.started[i].inc();
        self.metrics.in_flight[i].inc();
    }

    fn head(&self, dims: &Dimensions, elapsed: Duration) {
        self.metrics
            .time_to_head
            .get_or_create(&timing_labels(dims))
            .observe(elapsed.as_secs_f64());
    }

    fn first_frame(&self, dims: &Dimensions, elapsed: Duration) {
        self.metrics
            .time_to_first_frame
            .get_or_create(&timing_labels(dims))
            .observe(elapsed.as_secs_f64());
    }

    fn call_summary(&self, workload: Workload, summary: &CallSummary) {
        let m = &self.metrics;
        let w = workload.label();
        m.call_attempts
            .get_or_create(&WorkloadLabels { workload: w })
            .inc_by(u64::from(summary.attempts));
        for reason in &summary.retry_reasons {
            m.retries
                .get_or_create(&RetryLabels {
                    workload: w,
                    reason: reason.label(),
                })
                .inc();
        }
        if summary.budget_refusals > 0 {
            m.budget_refusals
                .get_or_create(&WorkloadLabels { workload: w })
                .inc_by(u64::from(summary.budget_refusals));
        }
        if summary.possibly_duplicated > 0 {
            m.possibly_duplicated
                .get_or_create(&WorkloadLabels { workload: w })
                .inc_by(u64::from(summary.possibly_duplicated));
        }
    }

    fn finished(&self, dims: &Dimensions, outcome: Outcome, elapsed: Duration) {
        let m = &self.metrics;
        let (label, reach) = (outcome.label(), outcome.reach().label());
        let end = EndLabels {
            workload: dims.workload.label(),
            method: dims.method.clone(),
            server_address: dims.server.clone(),
            outcome: label,
            reach,
        };
        match dims.scope {
            Scope::Call => m.calls.get_or_create(&end).inc(),
            Scope::Attempt => m.attempts.get_or_create(&end).inc(),
        };
        m.duration
            .get_or_create(&OutcomeLabels {
                scope: dims.scope.label(),
                workload: end.workload,
                method: end.method,
                server_address: end.server_address,
                outcome: label,
                reach,
            })
            .observe(elapsed.as_secs_f64());
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
