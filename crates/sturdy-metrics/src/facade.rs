//! [`MetricsFacadeRecorder`]: the `metrics` crate's facade backend (feature
//! `metrics`), for applications that already install a `metrics` exporter.
//! Same names, help texts and labels as
//! [`PrometheusRecorder`](crate::PrometheusRecorder), from [`crate::series`].
//! The facade builds a key per update, so each event allocates its label
//! list; use the Prometheus backend where that matters.

use std::sync::OnceLock;

use sturdy_core::Workload;

use crate::series::{self, Series, SeriesKind, split_method, split_server};
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
        for s in series::RECORDED {
            let unit = s.seconds.then_some(metrics::Unit::Seconds);
            match (s.kind, unit) {
                (SeriesKind::Counter, _) => metrics::describe_counter!(s.name(), s.help),
                (SeriesKind::Gauge, _) => metrics::describe_gauge!(s.name(), s.help),
                (SeriesKind::Histogram, Some(unit)) => {
                    metrics::describe_histogram!(s.name(), unit, s.help);
                }
                (SeriesKind::Histogram, None) => metrics::describe_histogram!(s.name(), s.help),
            }
        }
        MetricsFacadeRecorder { _private: () }
    }
}

/// The names of one scope's series.
struct Names {
    duration: String,
    head: String,
    first_frame: String,
    started: String,
    in_flight: String,
}

fn names(scope: Scope) -> &'static Names {
    static NAMES: OnceLock<[Names; 2]> = OnceLock::new();
    let all = NAMES.get_or_init(|| {
        let of = |d: Series, h: Series, f: Series, s: Series, i: Series| Names {
            duration: d.name(),
            head: h.name(),
            first_frame: f.name(),
            started: s.name(),
            in_flight: i.name(),
        };
        [
            of(
                series::CALL_DURATION,
                series::CALL_TIME_TO_HEAD,
                series::CALL_TIME_TO_FIRST_FRAME,
                series::CALLS_STARTED,
                series::CALLS_IN_FLIGHT,
            ),
            of(
                series::ATTEMPT_DURATION,
                series::ATTEMPT_TIME_TO_HEAD,
                series::ATTEMPT_TIME_TO_FIRST_FRAME,
                series::ATTEMPTS_STARTED,
                series::ATTEMPTS_IN_FLIGHT,
            ),
        ]
    });
    &all[scope as usize]
}

/// The target labels: method (and gRPC method), server address and port.
fn target_labels(dims: &crate::Dimensions) -> Vec<metrics::Label> {
    let (method, rpc) = split_method(dims.method.as_str());
    let (host, port) = split_server(dims.server.as_str());
    let mut labels = vec![metrics::Label::new(
        "http_request_method",
        method.to_owned(),
    )];
    if let Some(rpc) = rpc {
        labels.push(metrics::Label::new("rpc_method", rpc.to_owned()));
    }
    labels.push(metrics::Label::new("server_address", host.to_owned()));
    if let Some(port) = port {
        labels.push(metrics::Label::new("server_port", port.to_owned()));
    }
    labels
}

impl Recorder for MetricsFacadeRecorder {
    fn started(&self, scope: Scope) {
        let n = names(scope);
        metrics::counter!(n.started.as_str()).increment(1);
        metrics::gauge!(n.in_flight.as_str()).increment(1.0);
    }

    fn finished(&self, ended: &Ended<'_>) {
        let dims = ended.dims;
        let outcome = ended.outcome;
        let n = names(dims.scope);
        let target = target_labels(dims);
        let workload = metrics::Label::new("workload", dims.workload.label());
        let mut labels = target.clone();
        if let Some(status) = ended.status {
            labels.push(metrics::Label::new(
                "http_response_status_code",
                status.to_string(),
            ));
        }
        if !outcome.is_ok() {
            labels.push(metrics::Label::new("error_type", outcome.label()));
        }
        labels.push(metrics::Label::new("reach", outcome.reach().label()));
        labels.push(workload.clone());
        metrics::histogram!(n.duration.as_str(), labels).record(ended.duration.as_secs_f64());
        for (name, at) in [
            (&n.head, ended.time_to_head),
            (&n.first_frame, ended.time_to_first_frame),
        ] {
            if let Some(d) = at {
                let mut labels = target.clone();
                labels.push(workload.clone());
                metrics::histogram!(name.as_str(), labels).record(d.as_secs_f64());
            }
        }
        if let Some(summary) = ended.call {
            call_summary(dims.workload, summary);
        }
        metrics::gauge!(n.in_flight.as_str()).decrement(1.0);
    }
}

fn call_summary(workload: Workload, summary: &CallSummary) {
    static NAMES: OnceLock<[String; 4]> = OnceLock::new();
    let [attempts, retries, refusals, duplicated] = NAMES.get_or_init(|| {
        [
            series::CALL_ATTEMPTS.name(),
            series::RETRIES.name(),
            series::RETRY_REFUSALS.name(),
            series::POSSIBLY_DUPLICATED.name(),
        ]
    });
    let w = workload.label();
    metrics::histogram!(attempts.as_str(), "workload" => w).record(f64::from(summary.attempts));
    for reason in &summary.retry_reasons {
        metrics::counter!(retries.as_str(), "workload" => w, "reason" => reason.label())
            .increment(1);
    }
    for (why, n) in summary.refusal_counts() {
        metrics::counter!(refusals.as_str(), "workload" => w, "reason" => why.label())
            .increment(u64::from(n));
    }
    if summary.possibly_duplicated > 0 {
        metrics::counter!(duplicated.as_str(), "workload" => w)
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
                status: Some(200),
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
                status: Some(200),
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
        let target = "http_request_method=POST,server_address=api.example,server_port=443";
        assert_eq!(
            capture.get(&format!("http_client_request_duration_seconds{{{target},http_response_status_code=200,error_type=cancelled,reach=acknowledged,workload=agentic}}:count")),
            1.0
        );
        assert_eq!(
            capture.get(&format!("sturdy_client_call_duration_seconds{{{target},http_response_status_code=200,reach=acknowledged,workload=agentic}}:count")),
            1.0
        );
        assert_eq!(
            capture.get(&format!(
                "sturdy_client_attempt_time_to_head_seconds{{{target},workload=agentic}}:count"
            )),
            1.0
        );
        assert_eq!(capture.get("sturdy_client_attempts_in_flight{}"), 0.0);
        assert_eq!(capture.get("sturdy_client_attempts_started_total{}"), 1.0);
        assert_eq!(capture.get("sturdy_client_calls_started_total{}"), 1.0);
        assert_eq!(
            capture.get("sturdy_client_retries_total{workload=agentic,reason=reset}"),
            1.0
        );
        assert_eq!(
            capture.get("sturdy_client_call_attempts{workload=agentic}:count"),
            1.0
        );
        assert_eq!(
            capture.get("sturdy_client_retry_refusals_total{workload=agentic,reason=budget}"),
            1.0
        );
        assert_eq!(
            capture.get("sturdy_client_possibly_duplicated_total{workload=agentic}"),
            1.0
        );
    }
}
