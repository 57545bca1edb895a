//! Unit tests of the layer over fake inner services, on paused time: when
//! each outcome is recorded, with which label and reach, exactly once.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, Full};
use prometheus_client::registry::Registry;
use sturdy_core::{CallContext, FailureKind, Reach, Workload};
use sturdy_metrics::{
    Both, FailureMetricsLayer, PrometheusRecorder, Report, Scope, ServerCounts, Snapshot,
    SnapshotRecorder, Timing,
};
use tokio::sync::mpsc;
use tokio::time::sleep;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

/// A response body fed frame by frame from a channel.
struct ChanBody(mpsc::Receiver<Result<Frame<Bytes>, io::Error>>);

impl Body for ChanBody {
    type Data = Bytes;
    type Error = io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0.poll_recv(cx)
    }
}

type Tx = mpsc::Sender<Result<Frame<Bytes>, io::Error>>;

fn chan() -> (Tx, ChanBody) {
    let (tx, rx) = mpsc::channel(16);
    (tx, ChanBody(rx))
}

fn data(s: &'static str) -> Result<Frame<Bytes>, io::Error> {
    Ok(Frame::data(Bytes::from_static(s.as_bytes())))
}

fn req() -> http::Request<Empty<Bytes>> {
    http::Request::post("http://127.0.0.1:9/v1/chat/completions?key=q-secret")
        .header("authorization", "Bearer sk-unit-canary")
        .body(Empty::new())
        .unwrap()
}

/// A gRPC request, as tonic sends it: its answers end with a grpc-status.
fn grpc_req() -> http::Request<Empty<Bytes>> {
    http::Request::post("http://127.0.0.1:9/grpc.health.v1.Health/Check")
        .header("content-type", "application/grpc")
        .body(Empty::new())
        .unwrap()
}

fn counts(s: &Snapshot, scope: Scope) -> Vec<(&'static str, Reach, u64)> {
    s.outcomes(scope).collect()
}

#[tokio::test(start_paused = true)]
async fn ok_is_recorded_at_the_end_of_the_body_with_head_and_first_frame_times() {
    let rec = SnapshotRecorder::new();
    let (tx, body) = chan();
    let mut body = Some(body);
    let svc = tower::service_fn(move |_req: http::Request<Empty<Bytes>>| {
        let body = body.take();
        async move {
            sleep(Duration::from_millis(100)).await;
            Ok::<_, Infallible>(http::Response::new(body.unwrap()))
        }
    });
    let mut svc = ServiceBuilder::new()
        .layer(FailureMetricsLayer::attempts(rec.clone()))
        .service(svc);
    let res = svc.ready().await.unwrap().call(req()).await.unwrap();
    let s = rec.snapshot();
    assert_eq!(
        (s.started(Scope::Attempt), s.in_flight(Scope::Attempt)),
        (1, 1)
    );
    let mut body = res.into_body();
    let feeder = tokio::spawn(async move {
        sleep(Duration::from_millis(50)).await;
        tx.send(data("first")).await.unwrap();
        sleep(Duration::from_millis(200)).await;
        tx.send(data("second")).await.unwrap();
    });
    while let Some(frame) = body.frame().await {
        frame.unwrap();
        assert_eq!(
            rec.snapshot().finished(Scope::Attempt),
            0,
            "recorded before the end"
        );
    }
    feeder.await.unwrap();
    let s = rec.snapshot();
    assert_eq!(counts(&s, Scope::Attempt), [("ok", Reach::Acknowledged, 1)]);
    assert_eq!(s.in_flight(Scope::Attempt), 0);
    // Recorded within 0.2 % above each value.
    let head = s.percentile(Scope::Attempt, Timing::Head, 1.0).unwrap();
    assert!(
        head >= Duration::from_millis(100) && head < Duration::from_millis(101),
        "{head:?}"
    );
    let ttff = s
        .percentile(Scope::Attempt, Timing::FirstFrame, 1.0)
        .unwrap();
    assert!(
        ttff >= Duration::from_millis(150) && ttff < Duration::from_millis(151),
        "{ttff:?}"
    );
    let total = s.percentile(Scope::Attempt, Timing::Total, 1.0).unwrap();
    assert!(
        total >= Duration::from_millis(350) && total < Duration::from_millis(351),
        "{total:?}"
    );
    drop(body);
    assert_eq!(
        rec.snapshot().finished(Scope::Attempt),
        1,
        "dropping an ended body records nothing more"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_status_is_recorded_at_the_head() {
    let rec = SnapshotRecorder::new();
    let svc = tower::service_fn(|_req: http::Request<Empty<Bytes>>| async {
        let mut res = http::Response::new(Full::new(Bytes::from_static(b"{\"error\":1}")));
        *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        Ok::<_, Infallible>(res)
    });
    let mut svc = FailureMetricsLayer::attempts(rec.clone()).layer(svc);
    let res = svc.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(
        counts(&rec.snapshot(), Scope::Attempt),
        [("503", Reach::Acknowledged, 1)]
    );
    // Reading or dropping the body adds nothing.
    res.into_body().collect().await.unwrap();
    let s = rec.snapshot();
    assert_eq!(
        (s.finished(Scope::Attempt), s.in_flight(Scope::Attempt)),
        (1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn an_error_is_classified_with_its_reach() {
    let rec = SnapshotRecorder::new();
    let svc = tower::service_fn(|_req: http::Request<Empty<Bytes>>| async {
        Err::<http::Response<Empty<Bytes>>, _>(io::Error::from(io::ErrorKind::ConnectionRefused))
    });
    let mut svc = FailureMetricsLayer::attempts(rec.clone()).layer(svc);
    let err = svc.ready().await.unwrap().call(req()).await.unwrap_err();
    assert!(
        err.downcast_ref::<io::Error>().is_some(),
        "the inner error stays inside"
    );
    let s = rec.snapshot();
    assert_eq!(
        counts(&s, Scope::Attempt),
        [("connect_refused", Reach::NotSent, 1)]
    );
    assert_eq!(s.in_flight(Scope::Attempt), 0);
}

#[tokio::test(start_paused = true)]
async fn a_body_cut_mid_way_is_a_response_body_failure_acknowledged_with_its_first_frame() {
    let rec = SnapshotRecorder::new();
    let (tx, body) = chan();
    let mut body = Some(body);
    let svc = tower::service_fn(move |_req: http::Request<Empty<Bytes>>| {
        let body = body.take();
        async move { Ok::<_, Infallible>(http::Response::new(body.unwrap())) }
    });
    let mut svc = FailureMetricsLayer::attempts(rec.clone()).layer(svc);
    let res = svc.ready().await.unwrap().call(req()).await.unwrap();
    tx.send(data("data: {}\n\n")).await.unwrap();
    tx.send(Err(io::Error::from(io::ErrorKind::ConnectionReset)))
        .await
        .unwrap();
    let err = res.into_body().collect().await.unwrap_err();
    assert!(err.downcast_ref::<io::Error>().is_some());
    let s = rec.snapshot();
    assert_eq!(
        counts(&s, Scope::Attempt),
        [("response_body", Reach::Acknowledged, 1)]
    );
    assert_eq!(s.latency(Scope::Attempt, Timing::FirstFrame).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_body_dropped_before_its_end_is_cancelled_acknowledged() {
    let rec = SnapshotRecorder::new();
    let (tx, body) = chan();
    let mut body = Some(body);
    let svc = tower::service_fn(move |_req: http::Request<Empty<Bytes>>| {
        let body = body.take();
        async move { Ok::<_, Infallible>(http::Response::new(body.unwrap())) }
    });
    let mut svc = FailureMetricsLayer::calls(rec.clone()).layer(svc);
    let res = svc.ready().await.unwrap().call(req()).await.unwrap();
    tx.send(data("part")).await.unwrap();
    let mut body = res.into_body();
    body.frame().await.unwrap().unwrap();
    assert_eq!(rec.snapshot().in_flight(Scope::Call), 1);
    drop(body);
    let s = rec.snapshot();
    assert_eq!(
        counts(&s, Scope::Call),
        [("cancelled", Reach::Acknowledged, 1)]
    );
    assert_eq!(s.in_flight(Scope::Call), 0);
}

#[tokio::test(start_paused = true)]
async fn a_future_dropped_unpolled_is_not_sent_and_after_a_poll_unknown() {
    let rec = SnapshotRecorder::new();
    let svc = tower::service_fn(|_req: http::Request<Empty<Bytes>>| async {
        sleep(Duration::from_secs(3600)).await;
        Ok::<_, Infallible>(http::Response::new(Empty::<Bytes>::new()))
    });
    let mut svc = FailureMetricsLayer::attempts(rec.clone()).layer(svc);
    let never_polled = svc.ready().await.unwrap().call(req());
    assert_eq!(rec.snapshot().in_flight(Scope::Attempt), 1);
    drop(never_polled);
    let polled = svc.ready().await.unwrap().call(req());
    let timed_out = tokio::time::timeout(Duration::from_millis(10), polled).await;
    assert!(timed_out.is_err());
    let s = rec.snapshot();
    assert_eq!(
        counts(&s, Scope::Attempt),
        [
            ("cancelled", Reach::NotSent, 1),
            ("cancelled", Reach::Unknown, 1)
        ]
    );
    assert_eq!(
        (s.started(Scope::Attempt), s.in_flight(Scope::Attempt)),
        (2, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn an_empty_body_ends_at_the_head() {
    let rec = SnapshotRecorder::new();
    let svc = tower::service_fn(|_req: http::Request<Empty<Bytes>>| async {
        Ok::<_, Infallible>(http::Response::new(Empty::<Bytes>::new()))
    });
    let mut svc = FailureMetricsLayer::attempts(rec.clone()).layer(svc);
    let res = svc.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(
        counts(&rec.snapshot(), Scope::Attempt),
        [("ok", Reach::Acknowledged, 1)]
    );
    drop(res);
    assert_eq!(rec.snapshot().finished(Scope::Attempt), 1);
}

#[tokio::test(start_paused = true)]
async fn calls_scope_creates_the_context_and_reads_what_the_layers_below_wrote() {
    let rec = SnapshotRecorder::new();
    let svc = tower::service_fn(|req: http::Request<Empty<Bytes>>| {
        // What a timeout layer and a retry layer would write.
        let ctx = CallContext::from_extensions(req.extensions()).expect("calls() inserts one");
        ctx.set_workload(Workload::Agentic);
        async move {
            for _ in 0..3 {
                ctx.record_attempt();
            }
            ctx.record_retry(
                FailureKind::Status(http::StatusCode::SERVICE_UNAVAILABLE),
                false,
            );
            ctx.record_retry(FailureKind::Reset, true);
            ctx.record_refusal(sturdy_core::RetryRefusal::Budget);
            Ok::<_, Infallible>(http::Response::new(Empty::<Bytes>::new()))
        }
    });
    let mut svc = FailureMetricsLayer::calls(rec.clone()).layer(svc);
    svc.ready().await.unwrap().call(req()).await.unwrap();
    let s = rec.snapshot();
    assert_eq!(
        s.by_workload(Scope::Call, Workload::Agentic, Reach::Acknowledged),
        1
    );
    assert_eq!(s.call_attempts(), 3);
    assert_eq!(s.retries().get("503"), Some(&1));
    assert_eq!(s.retries().get("reset"), Some(&1));
    assert_eq!((s.budget_refusals(), s.possibly_duplicated()), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_call_without_a_retry_layer_counts_as_one_attempt_and_keeps_the_callers_workload() {
    let rec = SnapshotRecorder::new();
    let svc = tower::service_fn(|_req: http::Request<Empty<Bytes>>| async {
        Ok::<_, Infallible>(http::Response::new(Empty::<Bytes>::new()))
    });
    let mut svc = FailureMetricsLayer::calls(rec.clone()).layer(svc);
    let mut r = req();
    r.extensions_mut().insert(Workload::Batch);
    svc.ready().await.unwrap().call(r).await.unwrap();
    let s = rec.snapshot();
    assert_eq!(s.call_attempts(), 1);
    assert_eq!(
        s.by_workload(Scope::Call, Workload::Batch, Reach::Acknowledged),
        1
    );
}

fn prometheus_text(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

#[tokio::test(start_paused = true)]
async fn prometheus_output_has_exact_labelled_counts_and_no_path_query_or_header() {
    let mut registry = Registry::default();
    let prom = PrometheusRecorder::new(&mut registry);
    let mut n = 0u32;
    let svc = tower::service_fn(move |_req: http::Request<Empty<Bytes>>| {
        n += 1;
        let status = if n.is_multiple_of(2) { 200 } else { 429 };
        async move {
            let mut res = http::Response::new(Full::new(Bytes::from_static(b"x")));
            *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
            Ok::<_, Infallible>(res)
        }
    });
    let mut svc = FailureMetricsLayer::attempts(prom.clone()).layer(svc);
    for _ in 0..5 {
        let res = svc.ready().await.unwrap().call(req()).await.unwrap();
        res.into_body().collect().await.unwrap();
    }
    let odd = http::Request::builder()
        .method(http::Method::from_bytes(b"PURGE").unwrap())
        .uri("http://127.0.0.1:9/")
        .body(Empty::new())
        .unwrap();
    let res = svc.ready().await.unwrap().call(odd).await.unwrap();
    res.into_body().collect().await.unwrap();
    let text = prometheus_text(&registry);
    let line = |method: &str, status: u16, error: &str| {
        format!(
            "http_client_request_duration_seconds_count{{http_request_method=\"{method}\",server_address=\"127.0.0.1\",server_port=\"9\",http_response_status_code=\"{status}\",{error}reach=\"acknowledged\",workload=\"interactive\"}}"
        )
    };
    assert!(
        text.contains(&format!("{} 2\n", line("POST", 200, ""))),
        "{text}"
    );
    assert!(
        text.contains(&format!("{} 3\n", line("POST", 429, "error_type=\"429\","))),
        "{text}"
    );
    assert!(
        text.contains(&format!("{} 1\n", line("_OTHER", 200, ""))),
        "{text}"
    );
    assert!(
        text.contains("sturdy_client_attempts_started_total 6\n"),
        "{text}"
    );
    assert!(
        text.contains("sturdy_client_attempts_in_flight 0\n"),
        "{text}"
    );
    assert!(
        text.contains("# HELP http_client_request_duration_seconds "),
        "{text}"
    );
    assert!(text.contains("le=\"1800.0\""), "{text}");
    assert!(text.contains("le=\"0.005\""), "{text}");
    for secret in ["q-secret", "sk-unit-canary", "/v1/chat", "PURGE"] {
        assert!(!text.contains(secret), "{secret} leaked into\n{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn known_methods_and_server_label_shape_the_labels() {
    let rec = SnapshotRecorder::new();
    let mut registry = Registry::default();
    let prom = PrometheusRecorder::new(&mut registry);
    let svc = tower::service_fn(|_req: http::Request<Empty<Bytes>>| async {
        Ok::<_, Infallible>(http::Response::new(Empty::<Bytes>::new()))
    });
    let layer = FailureMetricsLayer::calls(Both(prom, rec.clone()))
        .server_label("api.example:443")
        .unwrap()
        .known_methods([http::Method::GET]);
    let mut svc = layer.layer(svc);
    let r = http::Request::post("/v1/models")
        .body(Empty::new())
        .unwrap();
    svc.ready().await.unwrap().call(r).await.unwrap();
    let text = prometheus_text(&registry);
    assert!(
        text.contains("sturdy_client_call_duration_seconds_count{http_request_method=\"_OTHER\",server_address=\"api.example\",server_port=\"443\",http_response_status_code=\"200\",reach=\"acknowledged\",workload=\"interactive\"} 1"),
        "{text}"
    );
    // A label that is not an authority is refused, never recorded.
    let err = FailureMetricsLayer::calls(rec.clone())
        .server_label("user:sk-x@host/path")
        .unwrap_err();
    assert!(!format!("{err} {err:?}").contains("sk-x"));
}

#[tokio::test(start_paused = true)]
async fn debug_output_of_layer_service_future_and_body_holds_no_request_data() {
    let rec = SnapshotRecorder::new();
    let svc = tower::service_fn(|_req: http::Request<Empty<Bytes>>| async {
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"x"))))
    });
    let layer = FailureMetricsLayer::calls(rec.clone());
    let mut svc = layer.layer(svc);
    let fut = svc.ready().await.unwrap().call(req());
    let debug_future = format!("{fut:?}");
    let res = fut.await.unwrap();
    let debug = format!(
        "{layer:?} {svc:?} {debug_future} {res:?} {rec:?} {:?}",
        rec.snapshot()
    );
    for secret in ["sk-unit-canary", "q-secret", "chat/completions"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    assert!(debug.contains("127.0.0.1:9"), "{debug}");
}

#[test]
fn report_shows_the_dashboard_gap_as_table_and_json() {
    use sturdy_metrics::{Dimensions, Ended, MethodLabel, Outcome, Recorder, ServerAddress};
    let rec = SnapshotRecorder::new();
    let dims = |scope| Dimensions {
        scope,
        workload: Workload::Interactive,
        method: MethodLabel::from_static("POST"),
        server: ServerAddress::unknown(),
    };
    let d = dims(Scope::Attempt);
    for outcome in [
        Outcome::Failed(FailureKind::ConnectRefused),
        Outcome::Failed(FailureKind::Dns),
        Outcome::Failed(FailureKind::Reset),
        Outcome::Failed(FailureKind::Status(http::StatusCode::SERVICE_UNAVAILABLE)),
        Outcome::Ok,
    ] {
        rec.started(d.scope);
        rec.finished(&Ended {
            dims: &d,
            outcome,
            status: None,
            duration: Duration::from_millis(20),
            time_to_head: None,
            time_to_first_frame: None,
            call: None,
        });
    }
    let report = Report::new(&rec.snapshot()).with_server(ServerCounts {
        received: 3,
        responded: [("200".to_owned(), 1), ("503".to_owned(), 1)].into(),
    });
    let g = &report.dashboard_gap;
    assert_eq!(
        (g.never_reached, g.maybe_seen, g.acknowledged, g.failed),
        (2, 1, 2, 4)
    );
    assert_eq!(g.server_saw_of_maybe, Some(1));
    assert!(
        g.summary
            .starts_with("2 of 4 failed attempts never reached the server"),
        "{}",
        g.summary
    );
    let table = report.to_string();
    assert!(table.contains("never reached the server"), "{table}");
    assert!(table.contains("connect_refused"), "{table}");
    let json: serde_json::Value = serde_json::from_str(&report.to_json_pretty()).unwrap();
    assert_eq!(json["dashboard_gap"]["never_reached"], 2);
    assert_eq!(json["attempts"]["by_reach"]["unknown"], 1);
    assert_eq!(json["attempts"]["latency"]["count"], 5);
}

fn grpc_response(body: ChanBody) -> http::Response<ChanBody> {
    let mut res = http::Response::new(body);
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    res
}

fn trailers(status: &'static str) -> Result<Frame<Bytes>, io::Error> {
    let mut t = http::HeaderMap::new();
    t.insert("grpc-status", http::HeaderValue::from_static(status));
    Ok(Frame::trailers(t))
}

#[tokio::test(start_paused = true)]
async fn grpc_outcomes_come_from_trailers_and_a_missing_status_is_a_failure() {
    let rec = SnapshotRecorder::new();
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::<ChanBody>::new()));
    let feed = bodies.clone();
    let svc = tower::service_fn(move |_req: http::Request<Empty<Bytes>>| {
        let body = feed.lock().unwrap().remove(0);
        async move { Ok::<_, Infallible>(grpc_response(body)) }
    });
    let mut svc = FailureMetricsLayer::attempts(rec.clone()).layer(svc);
    for (frames, label) in [
        (vec![data("msg"), trailers("0")], "ok"),
        (vec![data("msg"), trailers("14")], "grpc_unavailable"),
        (vec![data("msg")], "grpc_unknown"),
    ] {
        let (tx, body) = chan();
        bodies.lock().unwrap().push(body);
        for f in frames {
            tx.send(f).await.unwrap();
        }
        drop(tx);
        let res = svc.ready().await.unwrap().call(grpc_req()).await.unwrap();
        res.into_body().collect().await.unwrap();
        assert_eq!(
            rec.snapshot()
                .count(Scope::Attempt, label, Reach::Acknowledged),
            1,
            "{label}"
        );
    }
    assert_eq!(rec.snapshot().in_flight(Scope::Attempt), 0);
}

/// Records the outcome of one call answered with `status`, `headers` and an
/// empty body.
async fn outcome_of(
    status: u16,
    headers: &[(&'static str, &[u8])],
) -> Vec<(&'static str, Reach, u64)> {
    let rec = SnapshotRecorder::new();
    let mut head = http::HeaderMap::new();
    for (name, value) in headers {
        head.append(*name, http::HeaderValue::from_bytes(value).unwrap());
    }
    let svc = tower::service_fn(move |_req: http::Request<Empty<Bytes>>| {
        let mut res = http::Response::new(Empty::<Bytes>::new());
        *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
        *res.headers_mut() = head.clone();
        async move { Ok::<_, Infallible>(res) }
    });
    let res = FailureMetricsLayer::calls(rec.clone())
        .layer(svc)
        .oneshot(grpc_req())
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    let s = rec.snapshot();
    assert_eq!(s.in_flight(Scope::Call), 0);
    counts(&s, Scope::Call)
}

#[tokio::test]
async fn a_grpc_content_type_on_another_status_is_judged_by_the_status() {
    // The fuzz target `response_heads` found this head (crash-9588e37a):
    // the retry layer's table called it a success, the metrics `grpc_unknown`.
    let found: &[(&str, &[u8])] = &[
        ("retry-after", b""),
        (
            "content-type",
            b"application/grpcturday, D\xffDD\xffD\xefD\xff\xff\xff",
        ),
    ];
    assert_eq!(
        outcome_of(342, found).await,
        [("ok", Reach::Acknowledged, 1)]
    );
    let grpc: &[(&str, &[u8])] = &[("content-type", b"application/grpc")];
    assert_eq!(
        outcome_of(503, grpc).await,
        [("503", Reach::Acknowledged, 1)]
    );
}

#[tokio::test]
async fn a_trailers_only_answer_ends_with_the_status_in_its_head() {
    let ok: &[(&str, &[u8])] = &[("content-type", b"application/grpc"), ("grpc-status", b"0")];
    assert_eq!(outcome_of(200, ok).await, [("ok", Reach::Acknowledged, 1)]);
    let unavailable: &[(&str, &[u8])] = &[
        ("content-type", b"application/grpc"),
        ("grpc-status", b"14"),
    ];
    assert_eq!(
        outcome_of(200, unavailable).await,
        [("grpc_unavailable", Reach::Acknowledged, 1)]
    );
    let none: &[(&str, &[u8])] = &[("content-type", b"application/grpc")];
    assert_eq!(
        outcome_of(200, none).await,
        [("grpc_unknown", Reach::Acknowledged, 1)]
    );
}

#[tokio::test(start_paused = true)]
async fn attempts_scope_reads_the_workload_a_layer_above_wrote() {
    let rec = SnapshotRecorder::new();
    let svc = tower::service_fn(|_req: http::Request<Empty<Bytes>>| async {
        Ok::<_, Infallible>(http::Response::new(Empty::<Bytes>::new()))
    });
    let mut svc = FailureMetricsLayer::attempts(rec.clone()).layer(svc);
    let mut r = req();
    CallContext::attach(&mut r).set_workload(Workload::LongContext);
    svc.ready().await.unwrap().call(r).await.unwrap();
    let s = rec.snapshot();
    assert_eq!(
        s.by_workload(Scope::Attempt, Workload::LongContext, Reach::Acknowledged),
        1
    );
    assert_eq!(s.call_attempts(), 0, "attempts() writes no call summary");
}

#[tokio::test(start_paused = true)]
async fn a_future_polled_after_completion_errs_and_records_nothing_more() {
    let rec = SnapshotRecorder::new();
    let svc = tower::service_fn(|_req: http::Request<Empty<Bytes>>| async {
        Ok::<_, Infallible>(http::Response::new(Empty::<Bytes>::new()))
    });
    let mut svc = FailureMetricsLayer::attempts(rec.clone()).layer(svc);
    let mut fut = Box::pin(svc.ready().await.unwrap().call(req()));
    assert!(fut.as_mut().await.is_ok());
    assert!(fut.as_mut().await.is_err());
    drop(fut);
    let s = rec.snapshot();
    assert_eq!(
        (s.started(Scope::Attempt), s.finished(Scope::Attempt)),
        (1, 1)
    );
}

/// An event stream fed from `frames` then held open (no end): what the two
/// scopes read of it, with the calls scope alone or above an attempts
/// scope, and the call's context.
async fn stream_through(
    both: bool,
    frames: &[&'static str],
) -> (
    Snapshot,
    CallContext,
    mpsc::Sender<Result<Frame<Bytes>, io::Error>>,
) {
    let rec = SnapshotRecorder::new();
    let (tx, body) = chan();
    let mut body = Some(body);
    let inner = tower::service_fn(move |_req: http::Request<Empty<Bytes>>| {
        let body = body.take();
        async move {
            let mut res = http::Response::new(body.unwrap());
            res.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            Ok::<_, Infallible>(res)
        }
    });
    let mut req = req();
    let ctx = CallContext::attach(&mut req);
    let res = if both {
        ServiceBuilder::new()
            .layer(FailureMetricsLayer::calls(rec.clone()))
            .layer(FailureMetricsLayer::attempts(rec.clone()))
            .service(inner)
            .oneshot(req)
            .await
            .unwrap()
            .map(http_body_util::BodyExt::boxed_unsync)
    } else {
        ServiceBuilder::new()
            .layer(FailureMetricsLayer::calls(rec.clone()))
            .service(inner)
            .oneshot(req)
            .await
            .unwrap()
            .map(http_body_util::BodyExt::boxed_unsync)
    };
    let mut body = res.into_body();
    for frame in frames {
        tx.send(data(frame)).await.unwrap();
        body.frame().await.unwrap().unwrap();
    }
    drop(body);
    (rec.snapshot(), ctx, tx)
}

#[tokio::test(start_paused = true)]
async fn a_calls_scope_reads_a_stream_alone_and_takes_what_the_attempts_scope_below_read() {
    let events = [
        "data: {\"choices\":[{\"delta\":{\"content\":\"error\"}}]}\n\n",
        "data: {\"error\":{\"type\":\"server_error\"}}\n\n",
        "data: [DONE]\n\n",
    ];
    // Alone, the calls scope reads the events itself; above an attempts
    // scope, it takes the attempt's findings. Either way: one stream error
    // per scope (reading stops at the error; the drop records it).
    for both in [false, true] {
        let (s, ctx, _tx) = stream_through(both, &events).await;
        assert_eq!(
            counts(&s, Scope::Call),
            [("stream_error", Reach::Acknowledged, 1)],
            "both scopes: {both}"
        );
        let attempt = if both {
            vec![("stream_error", Reach::Acknowledged, 1)]
        } else {
            vec![]
        };
        assert_eq!(counts(&s, Scope::Attempt), attempt);
        let watch = ctx.stream_watch();
        assert_eq!(
            watch,
            both.then_some(sturdy_core::StreamWatch {
                error: Some(FailureKind::StreamError),
                ended: false,
            })
        );
    }
    // A stream cut off before `[DONE]`: the error already read is what
    // the drop records, at both scopes.
    let (s, _ctx, _tx) = stream_through(true, &events[..2]).await;
    for scope in Scope::ALL {
        assert_eq!(
            counts(&s, scope),
            [("stream_error", Reach::Acknowledged, 1)],
            "{scope}"
        );
    }
    // A clean stream ends ok at `[DONE]` at both scopes, the body still
    // open: the calls scope ends with the attempt it took it from.
    let (s, ctx, _tx) = stream_through(true, &[events[0], events[2]]).await;
    for scope in Scope::ALL {
        assert_eq!(
            counts(&s, scope),
            [("ok", Reach::Acknowledged, 1)],
            "{scope}"
        );
    }
    let ended = sturdy_core::StreamWatch {
        error: None,
        ended: true,
    };
    assert_eq!(ctx.stream_watch(), Some(ended));
}

#[tokio::test(start_paused = true)]
async fn a_later_attempt_clears_what_an_earlier_attempts_stream_said() {
    // Two attempts of one call through the attempts scope, as a retry
    // layer makes them: the first answer's stream says error, the second
    // streams clean. The calls scope above takes the stream's outcome from
    // the attempts scope: the last attempt's, not the first's error.
    let rec = SnapshotRecorder::new();
    let mut answers = vec![
        "data: {\"choices\":[]}\n\ndata: [DONE]\n\n",
        "data: {\"error\":{\"type\":\"server_error\"}}\n\n",
    ];
    let inner = tower::service_fn(move |_req: http::Request<Empty<Bytes>>| {
        let events = answers.pop().expect("two attempts");
        async move {
            let mut res = http::Response::new(Full::new(Bytes::from_static(events.as_bytes())));
            res.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            Ok::<_, Infallible>(res)
        }
    });
    let attempts = FailureMetricsLayer::attempts(rec.clone()).layer(inner);
    let two_attempts = tower::service_fn(move |req: http::Request<Empty<Bytes>>| {
        let mut attempts = attempts.clone();
        async move {
            let mut first = http::Request::new(Empty::new());
            *first.extensions_mut() = req.extensions().clone();
            let failed = attempts.ready().await?.call(first).await?;
            let _ = failed.into_body().collect().await;
            attempts.ready().await?.call(req).await
        }
    });
    let res = FailureMetricsLayer::calls(rec.clone())
        .layer(two_attempts)
        .oneshot(req())
        .await
        .unwrap();
    let _ = res.into_body().collect().await;
    let s = rec.snapshot();
    assert_eq!(
        counts(&s, Scope::Attempt),
        [
            ("ok", Reach::Acknowledged, 1),
            ("stream_error", Reach::Acknowledged, 1)
        ]
    );
    assert_eq!(counts(&s, Scope::Call), [("ok", Reach::Acknowledged, 1)]);
}
