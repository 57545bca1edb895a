//! Shared pieces of the end-to-end tests: the shipped `Stack` with
//! millisecond-scale settings, request builders, a resolver that fails,
//! and a reader for the Prometheus text output.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::Full;
use prometheus_client::registry::Registry;
use sturdy::metrics::Recorder;
use sturdy::retry::{Backoff, RetryPolicy};
use sturdy::{BoxError, Name, Stack, StackService, Workload};
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt};

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

pub type Req = http::Request<Full<Bytes>>;

/// The shipped `Stack` over `inner`, recording into `recorder`, with at
/// most `retries` retries, millisecond backoff and no budget.
pub fn stack<I, R: Recorder + Clone>(recorder: R, retries: u32, inner: I) -> StackService<I, R> {
    Stack::builder()
        .recorder(recorder)
        .retry_policy(quick_retry().max_retries(retries))
        .build()
        .expect("a valid stack")
        .layer(inner)
}

/// The loopback client of the end-to-end tests: no proxy.
pub fn client() -> sturdy::Client {
    sturdy::client().no_proxy().build().expect("a valid client")
}

/// A plain chat completion with `max_tokens` (the rate-limit tests).
pub fn plain_chat(url: &str) -> Req {
    http::Request::post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":4}"#,
        )))
        .expect("a request")
}

/// A fault server that lets one request through per 10 s (after the
/// first, it says none is left, resetting in 10 s), and a stack whose
/// interactive calls have 2 s: a hold until that reset would outlive the
/// call's deadline.
pub async fn hold_past_deadline() -> (sturdy_faults::FaultServer, Stack) {
    let server = sturdy_faults::FaultServer::builder()
        .rate_limit(sturdy_faults::RateLimit::per_minute(6.0).burst(1))
        .start()
        .await
        .expect("fault server");
    let profile = sturdy::Profile {
        ready: Duration::from_secs(1),
        headers: Duration::from_secs(1),
        read: Duration::from_secs(1),
        total: Duration::from_secs(2),
    };
    let stack = Stack::builder()
        .profile(Workload::Interactive, profile)
        .build()
        .expect("a stack");
    (server, stack)
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
/// `("outcome", "ok")` stands for "no `error_type` label" and
/// `("outcome", X)` for `error_type="X"`: sturdy's outcome, on
/// OpenTelemetry's label.
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
        let has = |k: &str, v: &str| label_part.split(',').any(|kv| kv == format!("{k}=\"{v}\""));
        let all = labels.iter().all(|(k, v)| match (*k, *v) {
            ("outcome", "ok") => !label_part.contains("error_type="),
            ("outcome", v) => has("error_type", v),
            (k, v) => has(k, v),
        });
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

/// The shipped `Stack` over `sturdy::client()` with millisecond-scale
/// limits (10x margins over the faults that must not trip them, 10x under
/// those that must), at most 2 retries.
pub fn full_stack<R: Recorder + Clone>(recorder: R) -> FullStack {
    let profile = sturdy::Profile {
        ready: Duration::from_millis(3000),
        headers: Duration::from_millis(300),
        read: Duration::from_millis(300),
        total: Duration::from_millis(3000),
    };
    let svc = Stack::builder()
        .profile(Workload::Interactive, profile)
        .recorder(recorder)
        .retry_policy(
            RetryPolicy::builder()
                .max_retries(2)
                .backoff(Backoff::guide(
                    Duration::from_millis(4),
                    Duration::from_millis(4),
                ))
                .no_budget(),
        )
        .build()
        .expect("a valid stack")
        .layer(sturdy::client().no_proxy().build().expect("a valid client"));
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
