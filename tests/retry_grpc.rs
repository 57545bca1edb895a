//! Retry around a real tonic client: a generated `HealthClient` over a
//! `Channel` wrapped by `RetryLayer`, against a real tonic-health server
//! whose first calls are answered `UNAVAILABLE` (Trailers-Only) by a tower
//! layer in front of it. Real sockets, no paused time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use sturdy::retry::{Backoff, RetryLayer, RetryPolicy};
use tonic::transport::{Channel, Endpoint, Server, server::TcpIncoming};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceBuilder;

const BOUND: Duration = Duration::from_secs(20);

/// Answers the first `fail` calls with Trailers-Only UNAVAILABLE (plus an
/// optional pushback header), then lets calls through.
#[derive(Clone)]
struct FailFirst<S> {
    inner: S,
    calls: Arc<AtomicUsize>,
    fail: usize,
    pushback: Option<&'static str>,
}

impl<S, B> tower::Service<http::Request<B>> for FailFirst<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n < self.fail {
            let mut resp: http::Response<tonic::body::Body> =
                tonic::Status::unavailable("warming up").into_http();
            if let Some(p) = self.pushback {
                resp.headers_mut()
                    .insert("grpc-retry-pushback-ms", http::HeaderValue::from_static(p));
            }
            return Box::pin(async move { Ok(resp) });
        }
        Box::pin(self.inner.call(req))
    }
}

/// Starts a health server behind `FailFirst`; returns its address and the
/// call counter.
async fn start(fail: usize, pushback: Option<&'static str>) -> (String, Arc<AtomicUsize>) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let layer = tower::layer::layer_fn(move |inner| FailFirst {
        inner,
        calls: counter.clone(),
        fail,
        pushback,
    });
    tokio::spawn(async move {
        let _keep = reporter;
        let _ = Server::builder()
            .layer(layer)
            .serve_with_incoming(health, TcpIncoming::from(listener))
            .await;
    });
    (format!("http://{addr}"), calls)
}

async fn channel(url: String) -> Channel {
    let endpoint = Endpoint::from_shared(url).unwrap();
    tokio::time::timeout(BOUND, endpoint.connect())
        .await
        .unwrap()
        .unwrap()
}

fn policy() -> RetryPolicy {
    RetryPolicy::builder()
        .backoff(Backoff::guide(
            Duration::from_millis(1),
            Duration::from_millis(1),
        ))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_health_check_succeeds_on_the_third_attempt() {
    let (url, calls) = start(2, None).await;
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy()))
        .service(channel(url).await);
    let mut client = HealthClient::new(svc);
    let resp = tokio::time::timeout(
        BOUND,
        client.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        resp.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_negative_pushback_stops_after_one_attempt() {
    let (url, calls) = start(2, Some("-1")).await;
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy()))
        .service(channel(url).await);
    let mut client = HealthClient::new(svc);
    let status = tokio::time::timeout(
        BOUND,
        client.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn retries_are_spent_on_a_server_that_stays_unavailable() {
    let (url, calls) = start(usize::MAX, None).await;
    let policy = RetryPolicy::builder()
        .backoff(Backoff::guide(
            Duration::from_millis(1),
            Duration::from_millis(1),
        ))
        .max_retries(3)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .service(channel(url).await);
    let mut client = HealthClient::new(svc);
    let status = tokio::time::timeout(
        BOUND,
        client.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}
