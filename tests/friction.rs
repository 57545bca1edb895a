//! The first hour's traps, each fixed and held here: a spawned call over
//! the stack is `Send`, the response body needs no pinning by hand, and a
//! gRPC stack can be stored without spelling its type parameters.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyDataStream, BodyExt, Full};
use sturdy::Stack;
use sturdy_faults::FaultServer;
use tower::{Layer, ServiceExt};

const BOUND: Duration = Duration::from_secs(20);

fn chat(url: &str) -> http::Request<Full<Bytes>> {
    http::Request::post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .expect("a valid request")
}

#[tokio::test]
async fn a_call_over_the_stack_can_be_spawned() {
    let server = FaultServer::start().await.expect("fault server");
    let stack = Stack::builder().build().expect("a valid stack");
    let svc = stack.layer(sturdy::client().no_proxy().build().expect("a client"));
    // The future itself, and an async block holding it: both `Send`.
    let first = tokio::spawn(svc.clone().oneshot(chat(&server.base_url())));
    let url = server.base_url();
    let second = tokio::spawn(async move {
        let resp = svc.oneshot(chat(&url).map(sturdy::boxed)).await?;
        resp.into_body().collect().await.map(|b| b.to_bytes())
    });
    let resp = tokio::time::timeout(BOUND, first)
        .await
        .expect("bounded")
        .expect("the task")
        .expect("an answer");
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(BOUND, second)
        .await
        .expect("bounded")
        .expect("the task")
        .expect("a body");
    assert!(!body.is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn the_response_body_is_read_frame_by_frame_without_pinning() {
    let server = FaultServer::start().await.expect("fault server");
    let stack = Stack::builder().build().expect("a valid stack");
    let svc = stack.layer(sturdy::client().no_proxy().build().expect("a client"));
    let resp = tokio::time::timeout(BOUND, svc.clone().oneshot(chat(&server.base_url())))
        .await
        .expect("bounded")
        .expect("an answer");
    let mut body = resp.into_body();
    // `BodyExt::frame` and `StreamExt::next` both need an `Unpin` body.
    let first = body.frame().await.expect("a frame").expect("data");
    assert!(first.is_data());
    let resp = tokio::time::timeout(BOUND, svc.oneshot(chat(&server.base_url())))
        .await
        .expect("bounded")
        .expect("an answer");
    let mut data = BodyDataStream::new(resp.into_body());
    let mut bytes = 0;
    while let Some(chunk) = data.next().await {
        bytes += chunk.expect("data").len();
    }
    assert!(bytes > 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_grpc_stack_and_its_service_have_names() {
    let stack: sturdy::GrpcStack = Stack::grpc_builder().build().expect("a valid stack");
    let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
    let svc: sturdy::GrpcStackService<tonic::transport::Channel> = stack.layer(channel);
    let _client = tonic_health::pb::health_client::HealthClient::new(svc);
}
