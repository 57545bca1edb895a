//! Per-call cost of `RetryLayer` on the success path, beside tower's own
//! `Retry` with a minimal status policy and the bare service, in one run.
//!
//! The inner service answers at once with a small `Full` body, so what is
//! measured is the layer: cloning the request head for a possible retry,
//! wrapping the body for replay (and boxing it for the inner edge),
//! classifying the response, the budget's deposit.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group};
use http::{Request, Response};
use http_body_util::Full;
use sturdy_core::BoxBody;
use sturdy_retry::{RetryLayer, RetryPolicy};
use tower::retry::Policy;
use tower::{Layer, Service, ServiceExt};

const BODY: &[u8] = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

fn request() -> Request<Full<Bytes>> {
    Request::post("http://127.0.0.1:8080/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-bench")
        .body(Full::new(Bytes::from_static(BODY)))
        .unwrap()
}

fn answer<B>(_req: Request<B>) -> Ready<Result<Response<Full<Bytes>>, Infallible>> {
    ready(Ok(Response::new(Full::new(Bytes::from_static(
        b"{\"ok\":true}",
    )))))
}

/// tower's `Retry` with the least a user must write: retry 5xx, clone the
/// request (a `Full` body is `Clone`).
#[derive(Clone)]
struct StatusPolicy(usize);

impl Policy<Request<Full<Bytes>>, Response<Full<Bytes>>, Infallible> for StatusPolicy {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _req: &mut Request<Full<Bytes>>,
        result: &mut Result<Response<Full<Bytes>>, Infallible>,
    ) -> Option<Ready<()>> {
        match result {
            Ok(r) if r.status().is_server_error() && self.0 > 0 => {
                self.0 -= 1;
                Some(ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        let mut r = Request::new(req.body().clone());
        *r.method_mut() = req.method().clone();
        *r.uri_mut() = req.uri().clone();
        *r.headers_mut() = req.headers().clone();
        Some(r)
    }
}

async fn once<S>(svc: &S)
where
    S: Service<Request<Full<Bytes>>> + Clone,
    S::Error: std::fmt::Debug,
{
    let resp = svc.clone().oneshot(request()).await.unwrap();
    black_box(resp);
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("success_path");

    let bare = tower::service_fn(answer::<Full<Bytes>>);
    g.bench_function("bare", |b| b.to_async(&rt).iter(|| once(&bare)));

    let tower_retry = tower::retry::RetryLayer::new(StatusPolicy(5))
        .layer(tower::service_fn(answer::<Full<Bytes>>));
    g.bench_function("tower_retry", |b| {
        b.to_async(&rt).iter(|| once(&tower_retry))
    });

    let sturdy = rt.block_on(async {
        RetryLayer::new(RetryPolicy::default()).layer(tower::service_fn(answer::<BoxBody>))
    });
    g.bench_function("sturdy_retry", |b| b.to_async(&rt).iter(|| once(&sturdy)));

    let no_budget = rt.block_on(async {
        RetryLayer::new(RetryPolicy::builder().no_budget().build().unwrap())
            .layer(tower::service_fn(answer::<BoxBody>))
    });
    g.bench_function("sturdy_retry_no_budget", |b| {
        b.to_async(&rt).iter(|| once(&no_budget))
    });
    // What remains without a possible retry (no head copy, no replay
    // handle): the floor of the layer's own cost.
    let no_retries = rt.block_on(async {
        RetryLayer::new(
            RetryPolicy::builder()
                .max_retries(0)
                .no_budget()
                .build()
                .unwrap(),
        )
        .layer(tower::service_fn(answer::<BoxBody>))
    });
    g.bench_function("sturdy_retry_max_retries_0", |b| {
        b.to_async(&rt).iter(|| once(&no_retries))
    });
    g.finish();
}

/// Nanoseconds per call over `n` calls, best of three runs.
fn per_call<S>(rt: &tokio::runtime::Runtime, svc: &S, n: u32) -> f64
where
    S: Service<Request<Full<Bytes>>> + Clone,
    S::Error: std::fmt::Debug,
{
    (0..3)
        .map(|_| {
            let start = std::time::Instant::now();
            rt.block_on(async {
                for _ in 0..n {
                    once(svc).await;
                }
            });
            start.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .fold(f64::INFINITY, f64::min)
}

/// Prints the ratios against the baselines, measured side by side.
fn ratios() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let n = 200_000;
    let bare = per_call(&rt, &tower::service_fn(answer::<Full<Bytes>>), n);
    let tower_retry = per_call(
        &rt,
        &tower::retry::RetryLayer::new(StatusPolicy(5))
            .layer(tower::service_fn(answer::<Full<Bytes>>)),
        n,
    );
    let sturdy = rt.block_on(async {
        RetryLayer::new(RetryPolicy::default()).layer(tower::service_fn(answer::<BoxBody>))
    });
    let sturdy = per_call(&rt, &sturdy, n);
    println!(
        "per call: bare {bare:.0} ns, tower Retry {tower_retry:.0} ns, sturdy RetryLayer {sturdy:.0} ns"
    );
    println!(
        "sturdy / tower Retry = {:.2}; added over bare: sturdy {:.0} ns, tower {:.0} ns",
        sturdy / tower_retry,
        sturdy - bare,
        tower_retry - bare
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratios();
}
