//! sturdy-metrics against the real fault server: a scripted run whose every
//! call has a known fate produces exactly the expected counts in the
//! Prometheus output, per outcome and reach, for calls and for attempts; an
//! SSE stream cut mid-way is an acknowledged failure with its time to first
//! frame; and the client's counts reconcile with the server's dashboard.

mod metrics_support;

use std::time::Duration;

use http_body_util::BodyExt;
use metrics_support::*;
use prometheus_client::registry::Registry;
use sturdy::metrics::{Both, PrometheusRecorder, Report, Scope, SnapshotRecorder, Timing};
use sturdy::{Reach, RetrySafe};
use sturdy_faults::FaultServer;
use tower::{Service, ServiceExt};

/// Every wait in this file is bounded by this.
const BOUND: Duration = Duration::from_secs(10);

/// Sends one request through `svc` and reads the body to its end, ignoring
/// failures (they are what is being counted).
async fn run<S, B>(svc: &mut S, req: Req)
where
    S: Service<Req, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
{
    let fut = svc.ready().await.expect("ready").call(req);
    if let Ok(res) = tokio::time::timeout(BOUND, fut).await.expect("bounded") {
        let _ = tokio::time::timeout(BOUND, res.into_body().collect())
            .await
            .expect("bounded body");
    }
}

#[tokio::test]
async fn scripted_run_gives_exact_counts_for_calls_and_attempts() {
    let server = FaultServer::start().await.expect("fault server");
    let url = server.base_url();
    let mut registry = Registry::default();
    let prom = PrometheusRecorder::new(&mut registry);
    let snap = SnapshotRecorder::new();
    let rec = Both(prom, snap.clone());
    let retries = 2;
    let mut svc = stack(
        rec.clone(),
        retries,
        sturdy::client().no_proxy().build().expect("a valid client"),
    );

    // Per call: its script, and what it must leave behind.
    run(&mut svc, chat(&url, "ok", "200", false)).await; // attempt ok; call ok
    run(
        &mut svc,
        chat(&url, "r503", "503;retry-after-ms=1, 200", false),
    )
    .await; // attempts 503 + ok; call ok
    run(&mut svc, chat(&url, "r429", "429", false)).await; // attempts 429 x3; call 429
    run(&mut svc, chat(&url, "f400", "400", false)).await; // attempt 400; call 400
    run(
        &mut svc,
        chat(&url, "f500", "500;x-should-retry=false", false),
    )
    .await; // attempt 500; call 500
    run(&mut svc, chat(&url, "delay", "delay;ms=20", false)).await; // ok
    run(&mut svc, chat(&url, "slow", "slow;ms=5;chunks=3", true)).await; // ok
    run(&mut svc, chat(&url, "stall", "stall;ms=20", true)).await; // ok
    run(&mut svc, chat(&url, "reset", "reset", false)).await; // response_body (acknowledged) both
    run(&mut svc, chat(&url, "close", "close", false)).await; // reset (unknown) both: not retry-safe
    let mut safe = chat(&url, "close-safe", "close, 200", false);
    safe.extensions_mut().insert(RetrySafe);
    run(&mut svc, safe).await; // attempts reset + ok; call ok; possibly duplicated 1
    let refused = format!("http://{}", refused_addr().await);
    run(&mut svc, chat(&refused, "", "", false)).await; // attempts connect_refused x3; call connect_refused

    // A caller that gives up while the server delays the head.
    let fut = ServiceExt::<Req>::ready(&mut svc)
        .await
        .expect("ready")
        .call(chat(&url, "gave-up", "delay;ms=2000", false));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), fut)
            .await
            .is_err()
    );
    // A caller that drops a stream after its first frame, mid-stall.
    let fut = ServiceExt::<Req>::ready(&mut svc)
        .await
        .expect("ready")
        .call(chat(&url, "dropped", "stall;ms=2000", true));
    let res = tokio::time::timeout(BOUND, fut)
        .await
        .expect("bounded")
        .expect("head");
    let mut body = res.into_body();
    let first = tokio::time::timeout(BOUND, body.frame())
        .await
        .expect("bounded");
    assert!(matches!(first, Some(Ok(_))));
    drop(body);

    // A resolver that fails: another client, same recorder.
    let mut dns_svc = stack(
        rec.clone(),
        retries,
        sturdy::client()
            .no_proxy()
            .resolver(failing_resolver())
            .build()
            .expect("a valid client"),
    );
    run(
        &mut dns_svc,
        chat("http://sturdy-metrics-test.invalid:80", "", "", false),
    )
    .await; // dns x3; call dns

    let text = encode(&registry);
    let calls = |outcome: &str, reach: &str| {
        value(
            &text,
            "sturdy_client_call_duration_seconds_count",
            &[("outcome", outcome), ("reach", reach)],
        )
    };
    let attempts = |outcome: &str, reach: &str| {
        value(
            &text,
            "http_client_request_duration_seconds_count",
            &[("outcome", outcome), ("reach", reach)],
        )
    };
    let expected_calls = [
        ("ok", "acknowledged", 6.0),
        ("429", "acknowledged", 1.0),
        ("400", "acknowledged", 1.0),
        ("500", "acknowledged", 1.0),
        ("response_body", "acknowledged", 1.0),
        ("reset", "unknown", 1.0),
        ("connect_refused", "not_sent", 1.0),
        ("dns", "not_sent", 1.0),
        ("cancelled", "unknown", 1.0),
        ("cancelled", "acknowledged", 1.0),
    ];
    let expected_attempts = [
        ("ok", "acknowledged", 6.0),
        ("503", "acknowledged", 1.0),
        ("429", "acknowledged", 3.0),
        ("400", "acknowledged", 1.0),
        ("500", "acknowledged", 1.0),
        ("response_body", "acknowledged", 1.0),
        ("reset", "unknown", 2.0),
        ("connect_refused", "not_sent", 3.0),
        ("dns", "not_sent", 3.0),
        ("cancelled", "unknown", 1.0),
        ("cancelled", "acknowledged", 1.0),
    ];
    for (o, r, n) in expected_calls {
        assert_eq!(calls(o, r), n, "calls {o} {r}\n{text}");
    }
    for (o, r, n) in expected_attempts {
        assert_eq!(attempts(o, r), n, "attempts {o} {r}\n{text}");
    }
    // Nothing else: the totals are the sums of the rows above.
    let sum = |rows: &[(&str, &str, f64)]| rows.iter().map(|r| r.2).sum::<f64>();
    assert_eq!(
        value(&text, "sturdy_client_call_duration_seconds_count", &[]),
        sum(&expected_calls)
    );
    assert_eq!(
        value(&text, "http_client_request_duration_seconds_count", &[]),
        sum(&expected_attempts)
    );
    assert_eq!(value(&text, "sturdy_client_calls_started_total", &[]), 15.0);
    assert_eq!(
        value(&text, "sturdy_client_attempts_started_total", &[]),
        23.0
    );
    for scope in ["call", "attempt"] {
        assert_eq!(
            value(&text, &format!("sturdy_client_{scope}s_in_flight"), &[]),
            0.0,
            "{scope}"
        );
    }
    assert_eq!(
        value(&text, "sturdy_client_retries_total", &[("reason", "503")]),
        1.0
    );
    assert_eq!(
        value(&text, "sturdy_client_retries_total", &[("reason", "429")]),
        2.0
    );
    assert_eq!(
        value(&text, "sturdy_client_retries_total", &[("reason", "reset")]),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "sturdy_client_retries_total",
            &[("reason", "connect_refused")]
        ),
        2.0
    );
    assert_eq!(
        value(&text, "sturdy_client_retries_total", &[("reason", "dns")]),
        2.0
    );
    assert_eq!(value(&text, "sturdy_client_retries_total", &[]), 8.0);
    assert_eq!(
        value(&text, "sturdy_client_possibly_duplicated_total", &[]),
        1.0
    );
    assert_eq!(value(&text, "sturdy_client_call_attempts_sum", &[]), 23.0);
    // The duration histogram counts the same outcomes, per scope.
    assert_eq!(
        value(
            &text,
            "http_client_request_duration_seconds_count",
            &[("reach", "not_sent")]
        ),
        6.0
    );
    assert_eq!(
        value(
            &text,
            "sturdy_client_call_duration_seconds_count",
            &[("outcome", "ok")]
        ),
        6.0
    );
    // Server addresses are host:port, never a path.
    assert_eq!(
        value(
            &text,
            "http_client_request_duration_seconds_count",
            &[
                ("server_address", "127.0.0.1"),
                ("server_port", &server.addr().port().to_string())
            ]
        ),
        17.0
    );
    assert_eq!(
        value(
            &text,
            "http_client_request_duration_seconds_count",
            &[
                ("server_address", "sturdy-metrics-test.invalid"),
                ("server_port", "80")
            ]
        ),
        3.0
    );
    assert!(!text.contains("/v1/chat"), "a path leaked:\n{text}");

    // The server saw every attempt that was sent, and none of the others.
    let dashboard = server.dashboard();
    let s = snap.snapshot();
    let not_sent = s.by_reach(Scope::Attempt, Reach::NotSent);
    assert_eq!(not_sent, 6);
    assert_eq!(dashboard.received, s.started(Scope::Attempt) - not_sent);
    assert_eq!(dashboard.received, 17);
    server.shutdown().await;
}

#[tokio::test]
async fn an_sse_stream_cut_mid_way_is_an_acknowledged_failure_with_its_time_to_first_frame() {
    let server = FaultServer::start().await.expect("fault server");
    let mut registry = Registry::default();
    let snap = SnapshotRecorder::new();
    let rec = Both(PrometheusRecorder::new(&mut registry), snap.clone());
    let mut svc = stack(
        rec,
        2,
        sturdy::client().no_proxy().build().expect("a valid client"),
    );
    let req = chat(&server.base_url(), "cut", "reset", true);
    let res = tokio::time::timeout(
        BOUND,
        ServiceExt::<Req>::ready(&mut svc)
            .await
            .expect("ready")
            .call(req),
    )
    .await
    .expect("bounded")
    .expect("the head arrives");
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let mut frames = 0;
    let err = loop {
        match tokio::time::timeout(BOUND, body.frame())
            .await
            .expect("bounded")
        {
            Some(Ok(_)) => frames += 1,
            Some(Err(e)) => break e,
            None => panic!("the stream must be cut, not end"),
        }
    };
    assert!(frames >= 1, "the server sends some bytes before the reset");
    drop(err);
    let s = snap.snapshot();
    for scope in Scope::ALL {
        assert_eq!(
            s.count(scope, "response_body", Reach::Acknowledged),
            1,
            "{scope}"
        );
        assert_eq!(s.finished(scope), 1, "{scope}");
        assert_eq!(s.latency(scope, Timing::FirstFrame).len(), 1, "{scope}");
        let ttff = s.percentile(scope, Timing::FirstFrame, 0.5).expect("ttff");
        let total = s.percentile(scope, Timing::Total, 0.5).expect("total");
        assert!(ttff <= total, "{scope}: {ttff:?} > {total:?}");
    }
    let text = encode(&registry);
    assert_eq!(
        value(
            &text,
            "sturdy_client_call_time_to_first_frame_seconds_count",
            &[]
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "sturdy_client_call_duration_seconds_count",
            &[("outcome", "response_body"), ("reach", "acknowledged")]
        ),
        1.0
    );
    server.shutdown().await;
}

#[tokio::test]
async fn client_counts_reconcile_with_the_server_dashboard_and_the_report_shows_the_gap() {
    let server = FaultServer::start().await.expect("fault server");
    let url = server.base_url();
    let snap = SnapshotRecorder::new();
    let mut svc = stack(
        snap.clone(),
        1,
        sturdy::client().no_proxy().build().expect("a valid client"),
    );
    let refused = format!("http://{}", refused_addr().await);
    for i in 0..20 {
        let id = format!("rec-{i}");
        let req = match i % 5 {
            0 => chat(&refused, "", "", false),
            1 => chat(&url, &id, "close", false),
            2 => chat(&url, &id, "503, 200", false),
            3 => chat(&url, &id, "reset", true),
            _ => chat(&url, &id, "200", false),
        };
        let fut = ServiceExt::<Req>::ready(&mut svc)
            .await
            .expect("ready")
            .call(req);
        if let Ok(res) = tokio::time::timeout(BOUND, fut).await.expect("bounded") {
            let _ = tokio::time::timeout(BOUND, res.into_body().collect())
                .await
                .expect("bounded");
        }
    }
    let s = snap.snapshot();
    let dashboard = server.dashboard();
    let attempts = s.started(Scope::Attempt);
    let not_sent = s.by_reach(Scope::Attempt, Reach::NotSent);
    let acknowledged = s.by_reach(Scope::Attempt, Reach::Acknowledged);
    assert!(
        dashboard.received <= attempts - not_sent,
        "{dashboard:?} {s:?}"
    );
    assert!(dashboard.received >= acknowledged, "{dashboard:?} {s:?}");
    // 4 refused calls x 2 attempts never reached it; 4 closes are unknown.
    assert_eq!(
        (not_sent, s.by_reach(Scope::Attempt, Reach::Unknown)),
        (8, 4)
    );
    let report = Report::new(&s).with_server(server_counts(&dashboard));
    let gap = &report.dashboard_gap;
    assert_eq!(
        (gap.never_reached, gap.maybe_seen, gap.acknowledged),
        (8, 4, acknowledged)
    );
    assert_eq!(
        gap.server_saw_of_maybe,
        Some(dashboard.received as i64 - acknowledged as i64)
    );
    let table = report.to_string();
    assert!(table.contains("never reached the server"), "{table}");
    assert!(gap.summary.starts_with("8 of "), "{}", gap.summary);
    let json: serde_json::Value = serde_json::from_str(&report.to_json_pretty()).expect("json");
    assert_eq!(
        json["dashboard_gap"]["server"]["received"],
        dashboard.received
    );
    assert_eq!(json["attempts"]["by_reach"]["not_sent"], 8);
    println!("{table}");
    server.shutdown().await;
}
