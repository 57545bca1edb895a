//! Per-call cost of `WorkloadTimeoutLayer` + `AttemptTimeoutLayer` around an
//! in-memory service that answers at once with a small `Full` body, beside
//! the same service bare and beside `tower::timeout::Timeout`, measured in
//! the same run. Each iteration makes the call and reads the body to its end.

use std::convert::Infallible;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use sturdy_timeout::{AttemptTimeoutLayer, WorkloadTimeoutLayer};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

fn answer(_: Request<()>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
    std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(
        b"{\"ok\":true}",
    )))))
}

async fn one_call<S, B>(svc: &mut S)
where
    S: Service<Request<()>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 11);
}

/// Time per call of each variant, summed over every batch criterion ran,
/// so the run can print its ratios to the baselines it measured itself.
static TOTALS: Mutex<Vec<(&'static str, Duration, u64)>> = Mutex::new(Vec::new());

fn record(name: &'static str, elapsed: Duration, iters: u64) {
    let mut totals = TOTALS.lock().unwrap();
    match totals.iter_mut().find(|(n, _, _)| *n == name) {
        Some((_, e, i)) => {
            *e += elapsed;
            *i += iters;
        }
        None => totals.push((name, elapsed, iters)),
    }
}

fn variant<S, B>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &'static str,
    svc: S,
) where
    S: Service<Request<()>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    group.bench_function(name, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let mut svc = svc.clone();
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    one_call(&mut svc).await;
                }
                let elapsed = start.elapsed();
                record(name, elapsed, iters);
                elapsed
            }
        })
    });
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("timeout");

    variant(&mut group, &rt, "bare", service_fn(answer));
    variant(
        &mut group,
        &rt,
        "tower_timeout",
        ServiceBuilder::new()
            .timeout(Duration::from_secs(60))
            .service(service_fn(answer)),
    );
    variant(
        &mut group,
        &rt,
        "workload+attempt",
        ServiceBuilder::new()
            .layer(WorkloadTimeoutLayer::new())
            .layer(AttemptTimeoutLayer::new())
            .service(service_fn(answer)),
    );
    variant(
        &mut group,
        &rt,
        "workload+attempt+capture",
        ServiceBuilder::new()
            .layer(WorkloadTimeoutLayer::new())
            .layer(
                AttemptTimeoutLayer::builder()
                    .capture_connection(true)
                    .build()
                    .unwrap(),
            )
            .service(service_fn(answer)),
    );
    group.finish();

    let totals = TOTALS.lock().unwrap();
    let per_call = |name: &str| {
        totals
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, e, i)| e.as_nanos() as f64 / (*i).max(1) as f64)
    };
    let (Some(bare), Some(tower)) = (per_call("bare"), per_call("tower_timeout")) else {
        return; // a filtered run: no baselines to compare with
    };
    println!("\nper call, averaged over every batch of this run:");
    for (name, _, _) in totals.iter() {
        if let Some(ns) = per_call(name) {
            println!(
                "  {name:<26} {ns:>8.1} ns   {:>5.2}x bare ({:+.1} ns)   {:>5.2}x tower::timeout",
                ns / bare,
                ns - bare,
                ns / tower,
            );
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
