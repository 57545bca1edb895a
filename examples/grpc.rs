//! A tonic client through sturdy: a generated `HealthClient` over a
//! `Channel` wrapped in `Stack`, against an in-process tonic-health server.
//! The server sheds the first call with `UNAVAILABLE` (a Trailers-Only
//! answer); the stack retries it, and the caller sees `SERVING`.
//!
//! Run: `cargo run --example grpc`

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use sturdy::Stack;
use sturdy::metrics::Report;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::Layer;

#[tokio::main]
async fn main() -> Result<(), sturdy::BoxError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    // A server-side layer that answers the first call UNAVAILABLE.
    let calls = Arc::new(AtomicU32::new(0));
    let shed = tower::util::MapRequestLayer::new({
        let calls = calls.clone();
        move |req: http::Request<tonic::body::Body>| {
            calls.fetch_add(1, Ordering::Relaxed);
            req
        }
    });
    let first_unavailable = tower::util::MapResponseLayer::new({
        let calls = calls.clone();
        move |resp: http::Response<tonic::body::Body>| {
            if calls.load(Ordering::Relaxed) == 1 {
                tonic::Status::unavailable("shedding load, try again").into_http()
            } else {
                resp
            }
        }
    });
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse()?)?;
    let addr = incoming.local_addr()?;
    let server = tokio::spawn(
        Server::builder()
            .layer(shed)
            .layer(first_unavailable)
            .serve_with_incoming(health, incoming),
    );

    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    // tonic requests carry no authority above the Channel: name the server
    // for the metrics.
    let stack = Stack::grpc_builder()
        .server_label(addr.to_string())
        .map_retry(|r| {
            r.backoff(sturdy::retry::Backoff::guide(
                std::time::Duration::from_millis(20),
                std::time::Duration::from_millis(20),
            ))
        })
        .build()?;
    let mut client = HealthClient::new(stack.layer(channel));

    let reply = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    println!(
        "health: {:?} after {} server call(s)",
        reply.into_inner().status(),
        calls.load(Ordering::Relaxed)
    );
    println!("\n{}", Report::new(&stack.recorder().snapshot()));
    server.abort();
    Ok(())
}
