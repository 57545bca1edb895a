//! [`MetricsFacadeRecorder`]: the `metrics` crate's facade backend (feature
//! `metrics`), for applications that already install a `metrics` exporter.
//! Same names and labels as [`PrometheusRecorder`](crate::PrometheusRecorder).
//! The facade builds a key per update, so each event allocates its label
//! list; use the Prometheus backend where that matters.

use sturdy_core::Workload;

use crate::{CallSummary, Ended, Recorder, Scope};

/// Records through the `metrics` facade into whatever recorder the
/// application installed.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsFacadeRecorder {
    _private: (),
}

impl MetricsFacadeRecorder {
    /// A recorder; describes the metrics (help text and units) to the
    /// installed `metrics` recorder.
    pub fn new() -> MetricsFacadeRecorder {
        metrics::describe_histogram!(
            "http_client_request_duration_seconds",
            metrics::Unit::Seconds,
            "Duration of HTTP client calls and attempts, to the end of the response body, by outcome and reach."
        );
        metrics::describe_counter!(
            "sturdy_client_calls_total",
            "Logical calls ended, by outcome and reach."
        );
        metrics::describe_counter!(
            "sturdy_client_attempts_total",
            "Attempts ended, by outcome and reach."
        );
        metrics::describe_counter!("sturdy_client_started_total", "Calls and attempts started.");
        metrics::describe_gauge!(
            "sturdy_client_in_flight",
            "Calls and attempts started and not yet ended."
        );
        metrics::describe_histogram!(
            "sturdy_client_time_to_head_seconds",
            metrics::Unit::Seconds,
            "Time from the call or attempt to its response head."
        );
        metrics::describe_histogram!(
            "sturdy_client_time_to_first_frame_seconds",
            metrics::Unit::Seconds,
            "Time to the first response body frame (time to first token for a stream)."
        );
        metrics::describe_counter!("sturdy_client_retries_total", "Retries taken, by reason.");
        metrics::describe_counter!(
            "sturdy_client_retry_refusals_total",
            "Retries a failure called for and the retry layer did not make, by reason."
        );
        metrics::describe_counter!(
            "sturdy_client_possibly_duplicated_total",
            sturdy_core::Safety::POSSIBLY_DUPLICATED
        );
        metrics::describe_counter!(
            "sturdy_client_call_attempts_total",
            "Attempts made by ended calls."
        );
        MetricsFacadeRecorder { _private: () }
    }
}

impl Recorder for MetricsFacadeRecorder {
    fn started(&self, scope: Scope) {
        metrics::counter!("sturdy_client_started_total", "scope" => scope.label()).increment(1);
        metrics::gauge!("sturdy_client_in_flight", "scope" => scope.label()).increment(1.0);
    }

    fn finished(&self, ended: &Ended<'_>) {
        let dims = ended.dims;
        let outcome = ended.outcome;
        let name = match dims.scope {
            Scope::Call => "sturdy_client_calls_total",
            Scope::Attempt => "sturdy_client_attempts_total",
        };
        metrics::counter!(
            name,
            "workload" => dims.workload.label(),
            "method" => dims.method.to_string(),
            "server_address" => dims.server.to_string(),
            "outcome" => outcome.label(),
            "reach" => outcome.reach().label(),
        )
        .increment(1);
        metrics::histogram!(
            "http_client_request_duration_seconds",
            "scope" => dims.scope.label(),
            "workload" => dims.workload.label(),
            "method" => dims.method.to_string(),
            "server_address" => dims.server.to_string(),
            "outcome" => outcome.label(),
            "reach" => outcome.reach().label(),
        )
        .record(ended.duration.as_secs_f64());
        for (name, at) in [
            ("sturdy_client_time_to_head_seconds", ended.time_to_head),
            (
                "sturdy_client_time_to_first_frame_seconds",
                ended.time_to_first_frame,
            ),
        ] {
            if let Some(d) = at {
                metrics::histogram!(
                    name,
                    "scope" => dims.scope.label(),
                    "workload" => dims.workload.label(),
                    "method" => dims.method.to_string(),
                    "server_address" => dims.server.to_string(),
                )
                .record(d.as_secs_f64());
            }
        }
        if let Some(summary) = ended.call {
            call_summary(dims.workload, summary);
        }
        metrics::gauge!("sturdy_client_in_flight", "scope" => dims.scope.label()).decrement(1.0);
    }
}

fn call_summary(workload: Workload, summary: &CallSummary) {
    let w = workload.label();
    metrics::counter!("sturdy_client_call_attempts_total", "workload" => w)
        .increment(u64::from(summary.attempts));
    for reason in &summary.retry_reasons {
        metrics::counter!("sturdy_client_retries_total", "workload" => w, "reason" => reason.label())
            .increment(1);
    }
    for (why, n) in summary.refusal_counts() {
        metrics::counter!("sturdy_client_retry_refusals_total", "workload" => w, "reason" => why.label())
            .increment(u64::from(n));
    }
    if summary.possibly_duplicated > 0 {
        metrics::counter!("sturdy_client_possibly_duplicated_total", "workload" => w)
            .increment(u64::from(summary.possibly_duplicated));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata,
        SharedString, Unit,
    };
    use sturdy_core::{FailureKind, Reach};

    use super::*;
    use crate::{Dimensions, MethodLabel, Outcome, ServerAddress};
    use std::time::Duration;

    /// Sums every update by `name{k=v,...}`.
    #[derive(Default, Clone)]
    struct Capture(Arc<Mutex<BTreeMap<String, f64>>>);

    struct Handle(Capture, String);

    impl Capture {
        fn add(&self, key: &str, v: f64) {
            *self.0.lock().unwrap().entry(key.to_owned()).or_default() += v;
        }
        fn get(&self, key: &str) -> f64 {
            self.0.lock().unwrap().get(key).copied().unwrap_or(0.0)
        }
        fn handle(&self, key: &Key) -> Arc<Handle> {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            Arc::new(Handle(
                self.clone(),
                format!("{}{{{}}}", key.name(), labels.join(",")),
            ))
        }
    }

    impl CounterFn for Handle {
        fn increment(&self, v: u64) {
            self.0.add(&self.1, v as f64);
        }
        fn absolute(&self, _: u64) {}
    }
    impl GaugeFn for Handle {
        fn increment(&self, v: f64) {
            self.0.add(&self.1, v);
        }
        fn decrement(&self, v: f64) {
            self.0.add(&self.1, -v);
        }
        fn set(&self, _: f64) {}
    }
    impl HistogramFn for Handle {
        fn record(&self, _: f64) {
            self.0.add(&format!("{}:count", self.1), 1.0);
        }
    }

    impl metrics::Recorder for Capture {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(self.handle(key))
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(self.handle(key))
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::from_arc(self.handle(key))
        }
    }

    #[test]
    fn facade_records_the_same_names_and_labels_as_prometheus() {
        let capture = Capture::default();
        metrics::with_local_recorder(&capture, || {
            let rec = MetricsFacadeRecorder::new();
            let dims = Dimensions {
                scope: Scope::Attempt,
                workload: Workload::Agentic,
                method: MethodLabel::from_static("POST"),
                server: ServerAddress::from_static("api.example:443"),
            };
            rec.started(Scope::Attempt);
            rec.finished(&Ended {
                dims: &dims,
                outcome: Outcome::Failed(FailureKind::Cancelled(Reach::Acknowledged)),
                duration: Duration::from_millis(9),
                time_to_head: Some(Duration::from_millis(5)),
                time_to_first_frame: None,
                call: None,
            });
            let call = Dimensions {
                scope: Scope::Call,
                ..dims.clone()
            };
            rec.started(Scope::Call);
            rec.finished(&Ended {
                dims: &call,
                outcome: Outcome::Ok,
                duration: Duration::from_millis(20),
                time_to_head: None,
                time_to_first_frame: None,
                call: Some(&CallSummary {
                    attempts: 2,
                    retry_reasons: vec![FailureKind::Reset],
                    refusals: [1, 0, 0, 0, 0, 0],
                    possibly_duplicated: 1,
                }),
            });
        });
        assert_eq!(
            capture.get("sturdy_client_attempts_total{workload=agentic,method=POST,server_address=api.example:443,outcome=cancelled,reach=acknowledged}"),
            1.0
        );
        assert_eq!(capture.get("sturdy_client_in_flight{scope=attempt}"), 0.0);
        assert_eq!(
            capture.get("sturdy_client_started_total{scope=attempt}"),
            1.0
        );
        assert_eq!(
            capture.get("sturdy_client_retries_total{workload=agentic,reason=reset}"),
            1.0
        );
        assert_eq!(
            capture.get("sturdy_client_call_attempts_total{workload=agentic}"),
            2.0
        );
        assert_eq!(
            capture.get("sturdy_client_retry_refusals_total{workload=agentic,reason=budget}"),
            1.0
        );
        assert_eq!(
            capture.get("http_client_request_duration_seconds{scope=attempt,workload=agentic,method=POST,server_address=api.example:443,outcome=cancelled,reach=acknowledged}:count"),
            1.0
        );
    }
}
