//! Shared pieces of the sturdy-metrics end-to-end tests: the stack
//! (`calls()` → retry → `attempts()` → `sturdy::client()`), a small
//! classified retry policy, request builders, and a reader for the
//! Prometheus text output.
//!
//! sturdy-retry was not ready when these tests were written, so the retry
//! layer here is `tower::retry` with a test policy that speaks sturdy's
//! vocabulary: it classifies with sturdy-core, honours `x-should-retry`,
//! retries not-sent failures always and unknown ones only for `RetrySafe`
//! requests, and writes attempts and retry reasons into the `CallContext`
//! as sturdy's retry layer does.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::Full;
use prometheus_client::registry::Registry;
use sturdy::metrics::{FailureMetrics, FailureMetricsLayer, MetricsBody, Recorder};
use sturdy::retry::{Backoff, RetryLayer, RetryPolicy};
use sturdy::timeout::{AttemptTimeoutLayer, WorkloadTimeoutLayer};
use sturdy::{BoxBody, Workload};
use sturdy::{
    BoxError, CallContext, Name, Reach, RetrySafe, ServerHints, Verdict, classify_error,
    classify_response, verdict_of,
};
use tower::retry::{Policy, Retry};
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};

pub type Resolved = std::vec::IntoIter<SocketAddr>;
pub type ResolveFuture = Pin<Box<dyn Future<Output = Result<Resolved, std::io::Error>> + Send>>;

/// sturdy's retry policy with a 1 ms backoff and no budget: what the
/// loopback tests start from.
pub fn quick_retry() -> sturdy::retry::RetryPolicyBuilder {
    RetryPolicy::builder()
        .backoff(Backoff::guide(
            Duration::from_millis(1),
            Duration::from_millis(1),
        ))
        .no_budget()
}

/// A resolver that fails every lookup without sending anything anywhere.
pub fn failing_resolver()
-> impl tower::Service<Name, Response = Resolved, Error = std::io::Error, Future = ResolveFuture>
+ Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(|_name: Name| -> ResolveFuture {
        Box::pin(async { Err(std::io::Error::other("no such host (test resolver)")) })
    })
}

/// The test retry policy (see the module docs).
#[derive(Clone, Debug)]
pub struct TestPolicy {
    pub max_attempts: u32,
    pub backoff: Duration,
    attempt: u32,
}

impl TestPolicy {
    pub fn new(max_attempts: u32, backoff: Duration) -> Self {
        TestPolicy {
            max_attempts,
            backoff,
            attempt: 0,
        }
    }
}

pub type Req = http::Request<Full<Bytes>>;

impl<B, R: Recorder> Policy<Req, http::Response<MetricsBody<B, R>>, BoxError> for TestPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        req: &mut Req,
        result: &mut Result<http::Response<MetricsBody<B, R>>, BoxError>,
    ) -> Option<Self::Future> {
        let ctx = CallContext::from_extensions(req.extensions())?;
        ctx.record_attempt();
        self.attempt += 1;
        let failure = match result {
            Ok(res) => {
                let hints = ServerHints::from_headers(res.headers(), SystemTime::now());
                match classify_response(res.status(), res.headers()) {
                    (Verdict::Retryable, Some(kind)) if !hints.forbids_retry() => kind,
                    _ => return None,
                }
            }
            Err(e) => {
                let kind = classify_error(&**e);
                let safe = match kind.reach() {
                    Reach::NotSent => true,
                    Reach::Unknown => req.extensions().get::<RetrySafe>().is_some(),
                    Reach::Acknowledged => false,
                };
                if !safe || verdict_of(&kind) != Verdict::Retryable {
                    return None;
                }
                kind
            }
        };
        if self.attempt >= self.max_attempts {
            return None;
        }
        let possibly_duplicated =
            failure.reach() == Reach::Unknown && !req.method().is_idempotent();
        ctx.record_retry(failure, possibly_duplicated);
        Some(tokio::time::sleep(self.backoff))
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        let mut out = http::Request::new(req.body().clone());
        *out.method_mut() = req.method().clone();
        *out.uri_mut() = req.uri().clone();
        *out.headers_mut() = req.headers().clone();
        *out.extensions_mut() = req.extensions().clone();
        Some(out)
    }
}

/// Boxes the request body into what `sturdy::client()` takes.
#[derive(Clone, Debug)]
pub struct BoxReq<S>(pub S);

impl<S: tower::Service<http::Request<sturdy::BoxBody>>> tower::Service<Req> for BoxReq<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }
    fn call(&mut self, req: Req) -> S::Future {
        self.0.call(req.map(sturdy::boxed))
    }
}

/// calls() → retry → attempts() → boxing → `inner`.
pub type Stack<I, R> = FailureMetrics<Retry<TestPolicy, FailureMetrics<BoxReq<I>, R>>, R>;

pub fn stack<I, R: Recorder + Clone>(recorder: R, policy: TestPolicy, inner: I) -> Stack<I, R> {
    ServiceBuilder::new()
        .layer(FailureMetricsLayer::calls(recorder.clone()))
        .layer(tower::retry::RetryLayer::new(policy))
        .layer(FailureMetricsLayer::attempts(recorder))
        .service(BoxReq(inner))
}

/// A chat completion request; `call`/`script` drive the fault server.
pub fn chat(url: &str, call: &str, script: &str, stream: bool) -> Req {
    let body = if stream {
        r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#
    } else {
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#
    };
    let mut b = http::Request::post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json");
    if !script.is_empty() {
        b = b
            .header(sturdy_faults::CALL_HEADER, call)
            .header(sturdy_faults::FAULT_HEADER, script);
    }
    b.body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("a valid request")
}

pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encoding");
    text
}

/// The sum of every sample of `metric` whose labels include all of `labels`.
pub fn value(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        let (label_part, number) = match rest.strip_prefix('{') {
            Some(r) => match r.rsplit_once("} ") {
                Some((l, n)) => (l, n),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(n) => ("", n),
                None => continue,
            },
        };
        let all = labels
            .iter()
            .all(|(k, v)| label_part.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        if all {
            sum += number.trim().parse::<f64>().unwrap_or(f64::NAN);
        }
    }
    sum
}

/// A port on 127.0.0.1 that nobody listens on.
pub async fn refused_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr
}

pub fn server_counts(d: &sturdy_faults::Dashboard) -> sturdy::metrics::ServerCounts {
    sturdy::metrics::ServerCounts {
        received: d.received,
        responded: d.responded.clone(),
    }
}

pub type FullBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;
pub type FullStack = BoxCloneService<Req, http::Response<FullBody>, BoxError>;

/// sturdy's preset stack (calls → workload timeout → sturdy-retry →
/// attempts → attempt timeout → `sturdy::client()`) with millisecond-scale
/// limits (10x margins over the
/// faults that must not trip them, 10x under those that must).
pub fn full_stack<R: Recorder + Clone>(recorder: R) -> FullStack {
    let workloads = WorkloadTimeoutLayer::builder()
        .total(Workload::Interactive, Duration::from_millis(3000))
        .headers(Workload::Interactive, Duration::from_millis(300))
        .read(Workload::Interactive, Duration::from_millis(300))
        .build()
        .expect("valid profiles");
    let attempts = AttemptTimeoutLayer::builder()
        .profiles(*workloads.profiles())
        .build()
        .expect("valid profiles");
    let policy = RetryPolicy::builder()
        .max_retries(2)
        .backoff(Backoff::guide(
            Duration::from_millis(4),
            Duration::from_millis(4),
        ))
        .no_budget()
        .build()
        .expect("valid policy");
    let svc = ServiceBuilder::new()
        .layer(FailureMetricsLayer::calls(recorder.clone()))
        .layer(workloads)
        .layer(RetryLayer::<BoxBody>::new(policy))
        .layer(FailureMetricsLayer::attempts(recorder))
        .layer(attempts)
        .service(sturdy::client().no_proxy().build().expect("a valid client"));
    let svc = ServiceExt::<Req>::map_response(svc, |res| res.map(|b| b.boxed_unsync()));
    BoxCloneService::new(svc)
}

/// How long any single wait of a chaos caller may take.
pub const BOUND: Duration = Duration::from_secs(10);

/// xorshift64*: a seeded, dependency-free source of drop points.
pub struct Rng(pub u64);

impl Rng {
    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Ends one call at a random point, as a caller might: gives up within
/// `give_up_ms` (before the head, or during a retry's backoff), drops the
/// body after one frame, drops the response unread, or reads it all. Returns
/// whether the caller gave up before the call ended.
pub async fn end_at_random<F, B, E>(fut: F, rng: &mut Rng, give_up_ms: u64) -> bool
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: http_body::Body,
{
    match rng.below(4) {
        0 => {
            let limit = Duration::from_millis(rng.below(give_up_ms));
            tokio::time::timeout(limit, fut).await.is_err()
        }
        1 => {
            if let Ok(Ok(res)) = tokio::time::timeout(BOUND, fut).await {
                let mut body = std::pin::pin!(res.into_body());
                let _ = tokio::time::timeout(BOUND, body.frame()).await;
            }
            false
        }
        2 => {
            let _ = tokio::time::timeout(BOUND, fut).await;
            false
        }
        _ => {
            if let Ok(Ok(res)) = tokio::time::timeout(BOUND, fut).await {
                let _ = tokio::time::timeout(BOUND, res.into_body().collect()).await;
            }
            false
        }
    }
}
