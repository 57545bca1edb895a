//! tonic through the whole `Stack`: failures that never reached a server
//! reach the generated client as `UNAVAILABLE`, not flattened to `UNKNOWN`,
//! with the retries recorded.

use std::time::Duration;

use sturdy::metrics::Scope;
use sturdy::retry::Backoff;
use sturdy::{Reach, Stack};
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::Layer;

#[tokio::test]
async fn a_refused_channel_is_unavailable_after_not_sent_retries() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let stack = Stack::grpc_builder()
        .server_label(addr.to_string())
        .max_retries(2)
        .map_retry(|r| {
            r.backoff(Backoff::guide(
                Duration::from_millis(2),
                Duration::from_millis(2),
            ))
        })
        .build()
        .unwrap();
    let mut client = HealthClient::new(stack.layer(channel));
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        client.check(HealthCheckRequest::default()),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let snap = stack.recorder().snapshot();
    assert_eq!(snap.finished(Scope::Attempt), 3);
    assert_eq!(snap.by_reach(Scope::Attempt, Reach::NotSent), 3);
    assert_eq!(snap.by_reach(Scope::Call, Reach::NotSent), 1);
}
