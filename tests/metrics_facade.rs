//! Feature `metrics-facade`: the stack records through the `metrics` crate's
//! facade into whatever recorder the application installed. Runs under
//! `cargo test --all-features`; without the feature this file is empty.

#![cfg(feature = "metrics-facade")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use metrics::{Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};
use sturdy::RetrySafe;
use sturdy::metrics::MetricsFacadeRecorder;
use sturdy::retry::{Backoff, RetryPolicy};
use sturdy_faults::{CALL_HEADER, FAULT_HEADER, FaultServer};
use tower::{Layer, ServiceExt};

/// Counter totals by metric name (all labels summed): the application's
/// exporter, as far as this test needs one.
#[derive(Clone, Default)]
struct Totals(Arc<Mutex<BTreeMap<String, u64>>>);

struct Named {
    name: String,
    totals: Totals,
}

impl CounterFn for Named {
    fn increment(&self, value: u64) {
        let mut totals = self.totals.0.lock().expect("not poisoned");
        *totals.entry(self.name.clone()).or_default() += value;
    }

    fn absolute(&self, value: u64) {
        let mut totals = self.totals.0.lock().expect("not poisoned");
        let total = totals.entry(self.name.clone()).or_default();
        *total = (*total).max(value);
    }
}

impl metrics::Recorder for Totals {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Named {
            name: key.name().to_owned(),
            totals: self.clone(),
        }))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[tokio::test]
async fn a_stack_records_through_the_metrics_facade() {
    let totals = Totals::default();
    // This test binary installs the one global recorder.
    metrics::set_global_recorder(totals.clone()).expect("no recorder yet");

    let server = FaultServer::start().await.expect("fault server");
    let stack = sturdy::Stack::builder()
        .recorder(MetricsFacadeRecorder::new())
        .retry_policy(RetryPolicy::builder().backoff(Backoff::guide(
            Duration::from_millis(1),
            Duration::from_millis(1),
        )))
        .build()
        .expect("a valid stack");
    let svc = stack.layer(sturdy::client().no_proxy().build().expect("a valid client"));
    let mut req = http::Request::post(format!("{}/v1/chat/completions", server.base_url()))
        .header("content-type", "application/json")
        .header(CALL_HEADER, "c1")
        .header(FAULT_HEADER, "503, 200")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .expect("a valid request");
    req.extensions_mut().insert(RetrySafe);
    let answer = async {
        let resp = svc.oneshot(req).await.expect("an answer");
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.expect("a body")
    };
    tokio::time::timeout(Duration::from_secs(30), answer)
        .await
        .expect("bounded");

    let totals = totals.0.lock().expect("not poisoned").clone();
    assert_eq!(
        totals.get("sturdy_client_calls_started_total"),
        Some(&1),
        "{totals:?}"
    );
    assert_eq!(
        totals.get("sturdy_client_attempts_started_total"),
        Some(&2),
        "{totals:?}"
    );
    assert_eq!(
        totals.get("sturdy_client_retries_total"),
        Some(&1),
        "{totals:?}"
    );
    server.shutdown().await;
}
