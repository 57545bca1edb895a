//! sturdy's layers around a hand-written `tower::Service` — no HTTP client
//! at all. The service fails its first two answers with 503 and then
//! answers; the retry layer and the metrics see it like any other.
//!
//! Run: `cargo run --example custom_service`

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sturdy::metrics::{FailureMetricsLayer, Report, SnapshotRecorder};
use sturdy::retry::{Backoff, RetryLayer, RetryPolicy};
use sturdy::timeout::{AttemptTimeoutLayer, WorkloadTimeoutLayer};
use sturdy::{BoxBody, BoxError, CallContext};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let answered = Arc::new(AtomicU32::new(0));
    // A hand-written inner service: any `Service<http::Request<B>>` works.
    let inner = tower::service_fn({
        let answered = answered.clone();
        move |req: http::Request<BoxBody>| {
            let n = answered.fetch_add(1, Ordering::Relaxed);
            async move {
                let echoed = req.into_body().collect().await?.to_bytes();
                let status = if n < 2 { 503 } else { 200 };
                let resp = http::Response::builder()
                    .status(status)
                    .header("retry-after-ms", "10")
                    .body(Full::new(echoed))?;
                Ok::<_, BoxError>(resp)
            }
        }
    });

    let recorder = SnapshotRecorder::new();
    let policy = RetryPolicy::builder()
        .backoff(Backoff::guide(
            Duration::from_millis(10),
            Duration::from_millis(10),
        ))
        .build()?;
    // The layers one by one, in the stack's order, picked by hand.
    let service = ServiceBuilder::new()
        .layer(FailureMetricsLayer::calls(recorder.clone()))
        .layer(WorkloadTimeoutLayer::new())
        .layer(RetryLayer::new(policy))
        .layer(FailureMetricsLayer::attempts(recorder.clone()))
        .layer(AttemptTimeoutLayer::new())
        .service(inner);

    let mut req = http::Request::put("http://in-memory.test/v1/files/42")
        .body(Full::new(Bytes::from_static(b"payload")))?;
    let ctx = CallContext::attach(&mut req);
    let resp = service.oneshot(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    println!(
        "{status} {:?} after {} attempts (the body was replayed to each)",
        String::from_utf8_lossy(&body),
        ctx.attempts()
    );
    println!("\n{}", Report::new(&recorder.snapshot()));
    Ok(())
}
