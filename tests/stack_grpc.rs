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

/// A tonic-health server on loopback that answers after `delay`, enforcing
/// the `grpc-timeout` it receives (tonic does: it answers `CANCELLED
/// "Timeout expired"` the instant the header's budget runs out).
async fn slow_health_server(
    delay: Duration,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let slow = tower::util::MapFutureLayer::new(move |fut| async move {
        tokio::time::sleep(delay).await;
        fut.await
    });
    let incoming =
        tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .layer(slow)
            .serve_with_incoming(health, incoming)
            .await;
    });
    (addr, task)
}

/// A caller's `set_timeout(700 ms)` is the call's deadline, not the
/// profile's 60 s; the server, enforcing the same budget, answers
/// `CANCELLED` at the same instant as the client's timer, and whichever
/// wins the call ends `DEADLINE_EXCEEDED`, naming the caller's limit.
/// Repeated 24 times, four at a time, so the race has room to show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_grpc_deadline_rules_and_ends_deadline_exceeded_every_time() {
    const LIMIT: Duration = Duration::from_millis(700);
    let (addr, task) = slow_health_server(Duration::from_secs(30)).await;
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let stack = Stack::grpc_builder()
        .server_label(addr.to_string())
        .build()
        .unwrap();
    let client = HealthClient::new(stack.layer(channel));
    let mut elapsed = Vec::new();
    for _round in 0..6 {
        let calls = (0..4).map(|_| {
            let mut client = client.clone();
            async move {
                let mut req = tonic::Request::new(HealthCheckRequest::default());
                req.set_timeout(LIMIT);
                let start = std::time::Instant::now();
                let res = tokio::time::timeout(Duration::from_secs(10), client.check(req)).await;
                (
                    res.expect("bounded by the caller's deadline"),
                    start.elapsed(),
                )
            }
        });
        for (res, took) in futures_util::future::join_all(calls).await {
            let status = res.expect_err("the server is slower than the deadline");
            assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
            assert!(
                status
                    .message()
                    .contains("total timeout after 700ms (the caller's deadline)"),
                "{status:?}"
            );
            elapsed.push(took);
        }
    }
    elapsed.sort();
    let (fastest, slowest) = (elapsed[0], elapsed[elapsed.len() - 1]);
    assert!(fastest >= LIMIT - Duration::from_millis(5), "{elapsed:?}");
    assert!(slowest < LIMIT * 2, "{elapsed:?}");
    let snap = stack.recorder().snapshot();
    for scope in Scope::ALL {
        assert_eq!(snap.count_outcome(scope, "grpc_cancelled"), 0, "{scope}");
        assert_eq!(snap.finished(scope), 24, "{scope}");
        assert_eq!(snap.failed(scope), 24, "{scope}");
    }
    assert_eq!(snap.call_attempts(), 24, "no retry past the deadline");
    task.abort();
}

/// The same through sturdy's own hyper-util client, which (unlike tonic's
/// `Channel`) does not enforce `grpc-timeout` itself: the tonic server's
/// `CANCELLED` and the client's timer race for the same instant, and the
/// call still ends `DEADLINE_EXCEEDED` every time, recorded as the client's
/// own timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_cancelled_at_the_callers_deadline_is_the_deadline_firing() {
    const LIMIT: Duration = Duration::from_millis(300);
    let (addr, task) = slow_health_server(Duration::from_secs(30)).await;
    let client = sturdy::client().http2_only(true).build().unwrap();
    let stack = Stack::builder()
        .server_label(addr.to_string())
        .build()
        .unwrap();
    let origin: http::Uri = format!("http://{addr}").parse().unwrap();
    let client = HealthClient::with_origin(stack.layer(client), origin);
    for _round in 0..6 {
        let calls = (0..8).map(|_| {
            let mut client = client.clone();
            async move {
                let mut req = tonic::Request::new(HealthCheckRequest::default());
                req.set_timeout(LIMIT);
                tokio::time::timeout(Duration::from_secs(10), client.check(req)).await
            }
        });
        for res in futures_util::future::join_all(calls).await {
            let status = res.expect("bounded").expect_err("slower than the deadline");
            assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
            assert!(
                status.message().contains("(the caller's deadline)"),
                "{status:?}"
            );
        }
    }
    let snap = stack.recorder().snapshot();
    for scope in Scope::ALL {
        assert_eq!(snap.count_outcome(scope, "grpc_cancelled"), 0, "{scope}");
        assert_eq!(snap.failed(scope), 48, "{scope}");
    }
    task.abort();
}
