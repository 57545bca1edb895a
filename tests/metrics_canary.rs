//! A secret canary: a request carrying `authorization: Bearer
//! sk-sturdy-canary` goes through the whole metrics stack (calls → retry →
//! attempts → `sturdy::client()`) against the fault server, with a tracing
//! subscriber capturing everything at TRACE. The secret must appear in none
//! of: the Prometheus output, the report (table and JSON), the captured
//! logs, and the `Debug` output of every public type that can hold request
//! data.

mod metrics_support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http_body_util::BodyExt;
use metrics_support::*;
use prometheus_client::registry::Registry;
use sturdy::metrics::{
    Both, FailureMetricsLayer, PrometheusRecorder, Report, Scope, SnapshotRecorder,
};
use sturdy::{CallContext, Reach, RetrySafe};
use sturdy_faults::FaultServer;
use tower::{Service, ServiceExt};

const CANARY: &str = "sk-sturdy-canary";
const BOUND: Duration = Duration::from_secs(10);

/// Everything the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// One global TRACE subscriber for the whole binary (a scoped one would race
/// with callsite caching across test threads); both tests write into it.
fn capture() -> Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = Captured::default();
            let writer = captured.clone();
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .init();
            captured
        })
        .clone()
}

fn with_canary(mut req: Req) -> Req {
    req.headers_mut().insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_static("Bearer sk-sturdy-canary"),
    );
    req.headers_mut()
        .insert("x-api-key", http::HeaderValue::from_static(CANARY));
    req
}

#[tokio::test]
async fn the_api_key_never_reaches_metrics_reports_logs_or_debug_output() {
    let captured = capture();

    let server = FaultServer::start().await.expect("fault server");
    let url = server.base_url();
    let mut registry = Registry::default();
    let prom = PrometheusRecorder::new(&mut registry);
    let snap = SnapshotRecorder::new();
    let rec = Both(prom.clone(), snap.clone());
    let mut svc = stack(
        rec.clone(),
        2,
        sturdy::client().no_proxy().build().expect("a valid client"),
    );
    let refused = format!("http://{}", refused_addr().await);

    let mut debug = Vec::new();
    for (target, id, script, stream) in [
        (url.as_str(), "c-ok", "200", false),
        (url.as_str(), "c-503", "503;retry-after-ms=1, 200", false),
        (url.as_str(), "c-401", "401", false),
        (url.as_str(), "c-stream", "200", true),
        (url.as_str(), "c-cut", "reset", true),
        (url.as_str(), "c-close", "close, 200", false),
        (refused.as_str(), "c-refused", "", false),
    ] {
        let mut req = with_canary(chat(target, id, script, stream));
        req.extensions_mut().insert(RetrySafe);
        let ctx = CallContext::attach(&mut req);
        let fut = ServiceExt::<Req>::ready(&mut svc)
            .await
            .expect("ready")
            .call(req);
        debug.push(format!("{fut:?}"));
        match tokio::time::timeout(BOUND, fut).await.expect("bounded") {
            Ok(res) => {
                debug.push(format!("{res:?}"));
                let mut body = res.into_body();
                debug.push(format!("{body:?}"));
                while let Some(frame) = tokio::time::timeout(BOUND, body.frame())
                    .await
                    .expect("bounded")
                {
                    if frame.is_err() {
                        break;
                    }
                }
                debug.push(format!("{body:?}"));
            }
            Err(e) => debug.push(format!("{e:?}")),
        }
        debug.push(format!("{ctx:?}"));
    }

    // Every public type of sturdy-metrics that can hold request data, or
    // labels derived from it.
    let layer = FailureMetricsLayer::calls(rec.clone())
        .server_label("api.example:443")
        .unwrap();
    let snapshot = snap.snapshot();
    let report = Report::new(&snapshot).with_server(server_counts(&server.dashboard()));
    debug.push(format!("{layer:?}")); // FailureMetricsLayer
    debug.push(format!("{svc:?}")); // FailureMetrics (and the stack below)
    debug.push(format!("{prom:?}")); // PrometheusRecorder
    debug.push(format!("{snap:?}")); // SnapshotRecorder
    debug.push(format!("{rec:?}")); // Both
    debug.push(format!("{snapshot:?}")); // Snapshot
    debug.push(format!("{report:?}")); // Report
    // ResponseFuture, http::Response<MetricsBody>, MetricsBody, errors and
    // CallContext were captured above, call by call.

    let prometheus = encode(&registry);
    let table = report.to_string();
    let json = report.to_json_pretty();
    let logs = captured.text();

    // The checks below could fail: each output is non-trivial.
    assert_eq!(snapshot.finished(Scope::Call), 7);
    assert!(prometheus.contains("http_client_request_duration_seconds_count"));
    assert!(
        logs.contains("sturdy-metrics outcome"),
        "TRACE capture works:\n{logs}"
    );
    assert!(debug.iter().any(|d| d.contains("ResponseFuture")));
    assert!(debug.iter().any(|d| d.contains("MetricsBody")));
    for (what, text) in [
        ("prometheus output", &prometheus),
        ("report table", &table),
        ("report json", &json),
        ("captured logs", &logs),
        ("debug output", &debug.join("\n")),
    ] {
        assert!(!text.contains(CANARY), "{what} leaked the secret:\n{text}");
    }
    // Metric labels and reports never carry a path either.
    for text in [&prometheus, &table, &json] {
        assert!(!text.contains("/v1/chat/completions"), "{text}");
    }
    server.shutdown().await;
}

/// The same canary through sturdy's full preset stack (sturdy-timeout and
/// sturdy-retry included), whose own `Debug` output is checked too.
#[tokio::test]
async fn the_api_key_never_leaks_through_the_full_stack() {
    let captured = capture();

    let server = FaultServer::start().await.expect("fault server");
    let url = server.base_url();
    let refused = format!("http://{}", refused_addr().await);
    let mut registry = Registry::default();
    let prom = PrometheusRecorder::new(&mut registry);
    let snap = SnapshotRecorder::new();
    let mut svc = full_stack(Both(prom.clone(), snap.clone()));
    let mut debug = vec![format!("{svc:?}")];
    for (target, id, script, stream) in [
        (url.as_str(), "ok", "200", false),
        (url.as_str(), "retried", "503;retry-after-ms=1, 200", false),
        (url.as_str(), "unauthorized", "401", false),
        (url.as_str(), "headers", "delay;ms=3000, 200", false),
        (url.as_str(), "read", "stall;ms=3000", true),
        (url.as_str(), "cut", "reset", true),
        (url.as_str(), "closed", "close, 200", false),
        (refused.as_str(), "refused", "", false),
    ] {
        let mut req = chat(target, id, script, stream);
        req.headers_mut().insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer sk-sturdy-canary"),
        );
        req.extensions_mut().insert(RetrySafe);
        let ctx = CallContext::attach(&mut req);
        let fut = ServiceExt::<Req>::ready(&mut svc)
            .await
            .expect("ready")
            .call(req);
        match tokio::time::timeout(BOUND, fut).await.expect("bounded") {
            Ok(res) => {
                debug.push(format!("{res:?}"));
                let _ = tokio::time::timeout(BOUND, res.into_body().collect())
                    .await
                    .expect("bounded");
            }
            Err(e) => debug.push(format!("{e:?} {e}")),
        }
        debug.push(format!("{ctx:?}"));
    }
    let s = snap.snapshot();
    let report = Report::new(&s).with_server(server_counts(&server.dashboard()));
    debug.push(format!("{prom:?} {snap:?} {s:?} {report:?}"));
    let prometheus = encode(&registry);
    let logs = captured.text();

    assert_eq!(s.finished(Scope::Call), 8, "{s:?}");
    assert!(
        s.count(Scope::Attempt, "headers_timeout", Reach::Unknown) >= 1,
        "{s:?}"
    );
    assert!(
        s.count(Scope::Attempt, "read_timeout", Reach::Acknowledged) >= 1,
        "{s:?}"
    );
    assert!(
        logs.contains("sturdy-metrics outcome"),
        "TRACE capture works"
    );
    for (what, text) in [
        ("prometheus output", prometheus),
        ("report table", report.to_string()),
        ("report json", report.to_json_pretty()),
        ("captured logs", logs),
        ("debug output", debug.join("\n")),
    ] {
        assert!(!text.contains(CANARY), "{what} leaked the secret:\n{text}");
    }
    server.shutdown().await;
}
