//! The Prometheus exposition of the full `Stack`, scraped as a user would:
//! OpenTelemetry's names and labels, one record per physical attempt in
//! `http_client_request_duration_seconds`, and no series whose sum over all
//! its labels adds two kinds of thing.

mod metrics_support;

use std::collections::BTreeSet;

use http_body_util::BodyExt;
use metrics_support::{chat, encode, full_stack, value};
use prometheus_client::registry::Registry;
use sturdy::metrics::PrometheusRecorder;
use sturdy_faults::FaultServer;
use tower::{Service, ServiceExt};

/// The label names of every sample of `metric` (its exact name).
fn label_names(text: &str, metric: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(metric).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let labels = rest.rsplit_once("} ").map_or("", |(l, _)| l);
        for pair in labels.split("\",") {
            if let Some((k, _)) = pair.split_once('=') {
                names.insert(k.to_owned());
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_record_per_attempt_on_opentelemetry_names() {
    let server = FaultServer::start().await.expect("fault server");
    let url = server.base_url();
    let mut registry = Registry::default();
    let mut svc = full_stack(PrometheusRecorder::new(&mut registry));
    // 3 + 2 + 1 + 3 attempts (the last call fails: two retries spent).
    let scripts = [
        ("a", "503, 503, 200"),
        ("b", "429, 200"),
        ("c", ""),
        ("d", "503, 503, 503"),
    ];
    for (call, script) in scripts {
        let res = svc
            .ready()
            .await
            .expect("ready")
            .call(chat(&url, call, script, false))
            .await;
        if let Ok(res) = res {
            let _ = res.into_body().collect().await;
        }
    }
    let text = encode(&registry);
    let attempts = "http_client_request_duration_seconds_count";
    let calls = "sturdy_client_call_duration_seconds_count";
    assert_eq!(value(&text, attempts, &[]), 9.0, "{text}");
    assert_eq!(
        value(&text, attempts, &[]),
        server.dashboard().received as f64,
        "every attempt reached this server: one record each"
    );
    assert_eq!(value(&text, calls, &[]), 4.0);
    assert_eq!(
        value(&text, attempts, &[("http_response_status_code", "503")]),
        5.0
    );
    assert_eq!(value(&text, attempts, &[("error_type", "503")]), 5.0);
    assert_eq!(value(&text, attempts, &[("error_type", "429")]), 1.0);
    assert_eq!(value(&text, calls, &[("error_type", "503")]), 1.0);
    assert_eq!(
        value(&text, calls, &[("http_response_status_code", "200")]),
        3.0
    );
    // Counts of the same things, through other series.
    assert_eq!(
        value(&text, "sturdy_client_attempts_started_total", &[]),
        9.0
    );
    assert_eq!(value(&text, "sturdy_client_calls_started_total", &[]), 4.0);
    assert_eq!(value(&text, "sturdy_client_retries_total", &[]), 5.0);
    assert_eq!(value(&text, "sturdy_client_call_attempts_sum", &[]), 9.0);
    assert_eq!(value(&text, "sturdy_client_call_attempts_count", &[]), 4.0);

    let port = server.addr().port().to_string();
    assert_eq!(
        value(
            &text,
            attempts,
            &[
                ("http_request_method", "POST"),
                ("server_address", "127.0.0.1"),
                ("server_port", &port)
            ]
        ),
        9.0
    );
    let otel: BTreeSet<String> = [
        "http_request_method",
        "server_address",
        "server_port",
        "http_response_status_code",
        "error_type",
        "reach",
        "workload",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(label_names(&text, attempts), otel);
    assert_eq!(label_names(&text, calls), otel);
    // No label splits one name into calls and attempts.
    assert!(!text.contains("scope="), "{text}");
    assert!(
        !text.contains(":{port}"),
        "host and port are apart:\n{text}"
    );
    server.shutdown().await;
}
