//! Per-call cost of `FailureMetricsLayer` with a `PrometheusRecorder` on the
//! success path, around an in-memory service that answers at once with a
//! small `Full` body, beside the same service bare, measured in the same
//! run. Each iteration makes the call and reads the body to its end (where
//! the outcome is recorded). At the end, the ratio of each case to the bare
//! baseline is printed from criterion's own estimates.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use prometheus_client::registry::Registry;
use sturdy_metrics::{
    Ended, FailureMetricsLayer, PrometheusRecorder, Recorder, Scope, SnapshotRecorder,
};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

const GROUP: &str = "metrics/per_call";

/// Records nothing: what the layer itself costs, without a backend.
struct Noop;

impl Recorder for Noop {
    fn started(&self, _: Scope) {}
    fn finished(&self, _: &Ended<'_>) {}
}

fn answer(_: Request<()>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
    std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(
        b"{\"ok\":true}",
    )))))
}

fn request() -> Request<()> {
    let mut req = Request::new(());
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = http::Uri::from_static("http://api.example:443/v1/chat/completions");
    req
}

async fn one_call<S, B>(svc: &mut S)
where
    S: Service<Request<()>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let res = svc.ready().await.unwrap().call(request()).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 11);
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut registry = Registry::default();
    let prom = PrometheusRecorder::new(&mut registry);
    let mut group = c.benchmark_group(GROUP);

    let bare = service_fn(answer);
    group.bench_function("bare", |b| {
        b.to_async(&rt).iter(|| {
            let mut svc = bare;
            async move { one_call(&mut svc).await }
        })
    });

    let attempts = FailureMetricsLayer::attempts(prom.clone());
    let svc = ServiceBuilder::new()
        .layer(attempts)
        .service(service_fn(answer));
    group.bench_function("attempts_prometheus", |b| {
        b.to_async(&rt).iter(|| {
            let mut svc = svc.clone();
            async move { one_call(&mut svc).await }
        })
    });

    let svc = ServiceBuilder::new()
        .layer(FailureMetricsLayer::calls(prom.clone()))
        .service(service_fn(answer));
    group.bench_function("calls_prometheus", |b| {
        b.to_async(&rt).iter(|| {
            let mut svc = svc.clone();
            async move { one_call(&mut svc).await }
        })
    });

    let svc = ServiceBuilder::new()
        .layer(FailureMetricsLayer::calls(prom.clone()))
        .layer(FailureMetricsLayer::attempts(prom.clone()))
        .service(service_fn(answer));
    group.bench_function("calls_and_attempts_prometheus", |b| {
        b.to_async(&rt).iter(|| {
            let mut svc = svc.clone();
            async move { one_call(&mut svc).await }
        })
    });

    let svc = ServiceBuilder::new()
        .layer(FailureMetricsLayer::attempts(Noop))
        .service(service_fn(answer));
    group.bench_function("attempts_noop_recorder", |b| {
        b.to_async(&rt).iter(|| {
            let mut svc = svc.clone();
            async move { one_call(&mut svc).await }
        })
    });

    let svc = ServiceBuilder::new()
        .layer(FailureMetricsLayer::attempts(SnapshotRecorder::new()))
        .service(service_fn(answer));
    group.bench_function("attempts_snapshot", |b| {
        b.to_async(&rt).iter(|| {
            let mut svc = svc.clone();
            async move { one_call(&mut svc).await }
        })
    });
    group.finish();
    print_ratios(&[
        "attempts_prometheus",
        "calls_prometheus",
        "calls_and_attempts_prometheus",
        "attempts_noop_recorder",
        "attempts_snapshot",
    ]);
}

/// Criterion's mean estimate (ns) of one case of this run, if saved.
fn mean_ns(case: &str) -> Option<f64> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target")
        });
    let path = dir
        .join("criterion")
        .join(GROUP.replace('/', "_"))
        .join(case)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn print_ratios(cases: &[&str]) {
    let Some(bare) = mean_ns("bare") else {
        println!("(no estimates saved: ratios not printed)");
        return;
    };
    println!("baseline bare: {bare:.0} ns per call");
    for case in cases {
        if let Some(ns) = mean_ns(case) {
            println!(
                "{case}: {ns:.0} ns per call, {:.2}x bare, +{:.0} ns",
                ns / bare,
                ns - bare
            );
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
