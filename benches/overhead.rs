//! Per-call cost of each sturdy layer, of the full `Stack`, and of tower's
//! `Timeout` + `Retry` with a minimal status policy, around an in-memory
//! inner service that answers at once with a small `Full<Bytes>` response.
//! Every variant drives `ready` + `call` and reads the response body to its
//! end; all are measured in one criterion group, then once more in an
//! interleaved loop whose medians give the ratios to the bare service.
//!
//! ```sh
//! cargo bench -p sturdy-tower --bench overhead                  # criterion + interleaved ratios
//! cargo bench -p sturdy-tower --bench overhead -- --callgrind   # instructions per call (valgrind)
//! target/release/deps/overhead-HASH --variant stack --calls 3000   # one variant, for a profiler
//! ```

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::Criterion;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use prometheus_client::registry::Registry;
use sturdy::Stack;
use sturdy::metrics::{FailureMetricsLayer, PrometheusRecorder};
use sturdy::retry::{RetryLayer, RetryPolicy};
use sturdy::timeout::{AttemptTimeoutLayer, WorkloadTimeoutLayer};
use sturdy_core::{BoxBody, BoxError};
use tower::retry::Policy;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

const BODY: &[u8] = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
const ANSWER: &[u8] = br#"{"id":"c1","choices":[{"message":{"content":"hello"}}]}"#;

/// Every variant, in report order.
pub const VARIANTS: [&str; 8] = [
    "bare",
    "workload_timeout",
    "attempt_timeout",
    "retry",
    "metrics_attempts",
    "stack",
    "stack_failing",
    "tower_timeout_retry",
];

pub fn request() -> Request<Full<Bytes>> {
    Request::post("http://127.0.0.1:8080/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY)))
        .expect("a static request is valid")
}

pub fn answer<B>(_req: Request<B>) -> Ready<Result<Response<Full<Bytes>>, Infallible>> {
    ready(Ok(Response::new(Full::new(Bytes::from_static(ANSWER)))))
}

/// A `503`, as every answer of a server in an outage.
pub fn unavailable<B>(_req: Request<B>) -> Ready<Result<Response<Full<Bytes>>, Infallible>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(b"overloaded")));
    *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    ready(Ok(resp))
}

/// What a user writes by hand today for tower's `Retry`: retry 5xx and 429
/// up to 5 times, clone the request (a `Full` body is `Clone`).
#[derive(Clone)]
pub struct StatusPolicy(pub usize);

impl<B, E> Policy<Request<Full<Bytes>>, Response<B>, E> for StatusPolicy {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _req: &mut Request<Full<Bytes>>,
        result: &mut Result<Response<B>, E>,
    ) -> Option<Ready<()>> {
        match result {
            Ok(r) if (r.status().is_server_error() || r.status() == 429) && self.0 > 0 => {
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
        *r.version_mut() = req.version();
        *r.headers_mut() = req.headers().clone();
        Some(r)
    }
}

/// One call: ready, call, the body read to its end.
pub async fn once<S, B>(svc: &mut S)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body,
    B::Error: std::fmt::Debug,
{
    let resp = svc
        .ready()
        .await
        .expect("ready")
        .call(request())
        .await
        .expect("the in-memory service answers");
    let mut body = pin!(resp.into_body());
    while let Some(frame) = body.frame().await {
        black_box(frame.expect("a full body cannot fail"));
    }
}

/// `n` calls on a clone of `svc`; the time they took.
pub async fn run_n<S, B>(svc: &S, n: u64) -> Duration
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: Body,
    B::Error: std::fmt::Debug,
{
    let mut svc = svc.clone();
    let start = Instant::now();
    for _ in 0..n {
        once(&mut svc).await;
    }
    start.elapsed()
}

/// Something done with one variant's service, whatever its type.
pub trait Visit {
    /// What the visit returns.
    type Out;
    /// Called with the variant's name and its service.
    fn visit<S, B>(self, name: &'static str, svc: S) -> Self::Out
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
        S::Error: std::fmt::Debug,
        B: Body,
        B::Error: std::fmt::Debug;
}

/// Builds variant `name` (inside a tokio runtime's context) and visits it.
pub fn with_variant<V: Visit>(name: &str, v: V) -> V::Out {
    match name {
        "bare" => v.visit("bare", tower::service_fn(answer::<Full<Bytes>>)),
        "workload_timeout" => v.visit(
            "workload_timeout",
            WorkloadTimeoutLayer::new().layer(tower::service_fn(answer::<Full<Bytes>>)),
        ),
        "attempt_timeout" => v.visit(
            "attempt_timeout",
            AttemptTimeoutLayer::new().layer(tower::service_fn(answer::<Full<Bytes>>)),
        ),
        "retry" => v.visit(
            "retry",
            RetryLayer::<BoxBody>::new(RetryPolicy::default())
                .layer(tower::service_fn(answer::<BoxBody>)),
        ),
        "metrics_attempts" => {
            let mut registry = Registry::default();
            v.visit(
                "metrics_attempts",
                FailureMetricsLayer::attempts(PrometheusRecorder::new(&mut registry))
                    .layer(tower::service_fn(answer::<Full<Bytes>>)),
            )
        }
        "stack" => {
            let mut registry = Registry::default();
            let stack = Stack::builder()
                .recorder(PrometheusRecorder::new(&mut registry))
                .build()
                .expect("the default stack is valid");
            v.visit("stack", stack.layer(tower::service_fn(answer::<BoxBody>)))
        }
        // The failure path: the default `Stack` (its `SnapshotRecorder`)
        // with retries off, in front of a server that answers `503`: each
        // call is recorded failed at both scopes.
        "stack_failing" => {
            let stack = Stack::builder()
                .max_retries(0)
                .build()
                .expect("the stack is valid");
            v.visit(
                "stack_failing",
                stack.layer(tower::service_fn(unavailable::<BoxBody>)),
            )
        }
        "tower_timeout_retry" => v.visit(
            "tower_timeout_retry",
            ServiceBuilder::new()
                .retry(StatusPolicy(5))
                .timeout(Duration::from_secs(60))
                .service(tower::service_fn(answer::<Full<Bytes>>)),
        ),
        other => panic!("unknown variant {other:?}; one of {VARIANTS:?}"),
    }
}

/// Runs `calls` calls (after `warm` warm-up calls) on a runtime; the time
/// the measured ones took.
pub struct Timed<'a> {
    /// The runtime to run on.
    pub rt: &'a tokio::runtime::Runtime,
    /// Warm-up calls.
    pub warm: u64,
    /// Measured calls.
    pub calls: u64,
}

impl Visit for Timed<'_> {
    type Out = Duration;
    fn visit<S, B>(self, _name: &'static str, svc: S) -> Duration
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
        S::Error: std::fmt::Debug,
        B: Body,
        B::Error: std::fmt::Debug,
    {
        self.rt.block_on(async {
            run_n(&svc, self.warm).await;
            run_n(&svc, self.calls).await
        })
    }
}

/// Adds variant's benchmark to a criterion group.
struct Bench<'a, 'g> {
    rt: &'a tokio::runtime::Runtime,
    group: &'a mut criterion::BenchmarkGroup<'g, criterion::measurement::WallTime>,
}

impl Visit for Bench<'_, '_> {
    type Out = ();
    fn visit<S, B>(self, name: &'static str, svc: S)
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
        S::Error: std::fmt::Debug,
        B: Body,
        B::Error: std::fmt::Debug,
    {
        let rt = self.rt;
        self.group.bench_function(name, |b| {
            b.to_async(rt).iter_custom(|iters| {
                let svc = svc.clone();
                async move { run_n(&svc, iters).await }
            })
        });
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

pub fn arg_value(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(variant) = arg_value(&args, "--variant") {
        let calls = arg_value(&args, "--calls")
            .and_then(|v| v.parse().ok())
            .unwrap_or(3000);
        run_variant(&variant, calls);
    } else if args.iter().any(|a| a == "--callgrind") {
        callgrind(&args);
    } else if args.iter().any(|a| a == "--list") {
        // `cargo bench -- --list` (and cargo's test harness probing) expect this.
        for v in VARIANTS {
            println!("in_memory/{v}: benchmark");
        }
    } else {
        // `cargo test --benches` passes no --bench: criterion then runs
        // each benchmark once, and nothing is compared.
        let full = args.iter().any(|a| a == "--bench");
        criterion_group(full);
        if full {
            interleaved(&args);
        }
    }
}

/// One variant, `calls` times, after 100 warm-up calls: for valgrind.
fn run_variant(name: &str, calls: u64) {
    let rt = runtime();
    let _context = rt.enter();
    black_box(with_variant(
        name,
        Timed {
            rt: &rt,
            warm: 100,
            calls,
        },
    ));
}

fn criterion_group(full: bool) {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let rt = runtime();
    let mut g = c.benchmark_group("in_memory");
    for name in VARIANTS {
        // Services are built inside the runtime's context.
        let _context = rt.enter();
        with_variant(
            name,
            Bench {
                rt: &rt,
                group: &mut g,
            },
        );
    }
    g.finish();
    c.final_summary();
    if !full {
        return;
    }

    // Criterion's own estimates, as ratios to bare.
    let dir = criterion_dir().join("in_memory");
    let mean = |name: &str| -> Option<f64> {
        let text = std::fs::read_to_string(dir.join(name).join("new/estimates.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["mean"]["point_estimate"].as_f64()
    };
    if let Some(bare) = mean("bare") {
        println!("\ncriterion means (same run):");
        println!("{:<22} {:>10} {:>8}", "variant", "ns/call", "x bare");
        for name in VARIANTS {
            if let Some(ns) = mean(name) {
                println!("{name:<22} {ns:>10.1} {:>8.2}", ns / bare);
            }
        }
    }
}

fn criterion_dir() -> std::path::PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return std::path::PathBuf::from(target).join("criterion");
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/criterion")
}

/// Rounds of every variant in rotated order; the median ns per call of each
/// and its ratio to bare's median.
fn interleaved(args: &[String]) {
    let rounds: usize = arg_value(args, "--rounds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let calls: u64 = arg_value(args, "--round-calls")
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let rt = runtime();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
    for round in 0..rounds {
        for k in 0..VARIANTS.len() {
            let i = (k + round) % VARIANTS.len();
            let name = VARIANTS[i];
            let _context = rt.enter();
            let took = with_variant(
                name,
                Timed {
                    rt: &rt,
                    warm: 1000,
                    calls,
                },
            );
            samples[i].push(took.as_nanos() as f64 / calls as f64);
        }
    }
    let medians: Vec<f64> = samples.iter_mut().map(|s| median(s)).collect();
    println!("\ninterleaved: {rounds} rounds x {calls} calls per variant, order rotated");
    println!("{:<22} {:>10} {:>8}", "variant", "ns/call", "x bare");
    for (name, m) in VARIANTS.iter().zip(&medians) {
        println!("{name:<22} {m:>10.1} {:>8.2}", m / medians[0]);
    }
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Instructions per call of every variant: this binary re-run under
/// `valgrind --tool=callgrind` with N1 and N2 calls; (Ir(N2) - Ir(N1)) /
/// (N2 - N1) cancels start-up and warm-up.
fn callgrind(args: &[String]) {
    let n1: u64 = arg_value(args, "--n1")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let n2: u64 = arg_value(args, "--n2")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let mut per_call = Vec::new();
    for name in VARIANTS {
        match callgrind_per_call("overhead", name, n1, n2, &[]) {
            Ok(pc) => per_call.push((name, pc)),
            Err(e) => {
                eprintln!("{e}");
                return;
            }
        }
    }
    let bare = per_call[0].1;
    println!(
        "instructions and allocations per call (callgrind, (X({n2}) - X({n1})) / {}):",
        n2 - n1
    );
    println!(
        "{:<22} {:>12} {:>8} {:>10} {:>10}",
        "variant", "Ir/call", "x bare", "allocs", "- bare"
    );
    for (name, pc) in per_call {
        println!(
            "{name:<22} {:>12.0} {:>8.2} {:>10.1} {:>10.1}",
            pc.ir,
            pc.ir / bare.ir,
            pc.allocs,
            pc.allocs - bare.allocs
        );
    }
}

/// What one call of a variant costs under callgrind.
#[derive(Debug, Clone, Copy)]
pub struct PerCall {
    /// Instructions.
    pub ir: f64,
    /// Heap allocations (calls to `malloc`, `calloc`, `realloc` and
    /// `posix_memalign`).
    pub allocs: f64,
}

/// Instructions and allocations per call of one variant: this bench binary
/// re-run under `valgrind --tool=callgrind` with `--variant NAME --calls N`
/// (plus `extra`) for N1 and N2 calls; (X(N2) - X(N1)) / (N2 - N1) cancels
/// start-up and warm-up. `tag` names the temporary output files.
pub fn callgrind_per_call(
    tag: &str,
    name: &str,
    n1: u64,
    n2: u64,
    extra: &[&str],
) -> Result<PerCall, BoxError> {
    let exe = std::env::current_exe()?;
    let run = |n: u64| -> Result<(u64, u64), BoxError> {
        let out = std::env::temp_dir().join(format!(
            "sturdy-{tag}-{name}-{n}-{}.callgrind",
            std::process::id()
        ));
        let status = Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg("--trace-children=no")
            .arg("--compress-strings=no")
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(&exe)
            .args(["--variant", name, "--calls", &n.to_string()])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?;
        if !status.success() {
            return Err(format!("valgrind failed for {name}: {status}").into());
        }
        let counts = callgrind_counts(&out)?;
        let _ = std::fs::remove_file(&out);
        Ok(counts)
    };
    let ((ir1, al1), (ir2, al2)) = (run(n1)?, run(n2)?);
    let per = |a: u64, b: u64| (b as f64 - a as f64) / (n2 - n1) as f64;
    Ok(PerCall {
        ir: per(ir1, ir2),
        allocs: per(al1, al2),
    })
}

/// The total instructions (the `summary:` or `totals:` line) of a callgrind
/// output file written with `--compress-strings=no`, and the calls it
/// records into the allocator's entry points.
fn callgrind_counts(path: &std::path::Path) -> Result<(u64, u64), BoxError> {
    const ALLOCATORS: [&str; 4] = ["malloc", "calloc", "realloc", "posix_memalign"];
    let text = std::fs::read_to_string(path)?;
    let mut total = None;
    let mut allocs = 0u64;
    let mut calling_allocator = false;
    for line in text.lines() {
        if let Some(rest) = line
            .strip_prefix("summary:")
            .or_else(|| line.strip_prefix("totals:"))
        {
            let first = rest.split_whitespace().next().unwrap_or("");
            total = Some(first.parse()?);
        } else if let Some(callee) = line.strip_prefix("cfn=") {
            // `cfn=NAME`, maybe followed by a recursion depth (`'2`).
            let callee = callee.split('\'').next().unwrap_or(callee);
            calling_allocator = ALLOCATORS.contains(&callee);
        } else if let Some(rest) = line.strip_prefix("calls=") {
            if calling_allocator {
                let n = rest.split_whitespace().next().unwrap_or("0");
                allocs += n.parse::<u64>()?;
            }
            calling_allocator = false;
        }
    }
    match total {
        Some(t) => Ok((t, allocs)),
        None => Err(format!("no totals in {}", path.display()).into()),
    }
}
