//! gRPC end-to-end: a real tonic-health server and its generated client,
//! through sturdy-timeout's layers over a tonic `Channel` on loopback. Real
//! time (sockets), every wait bounded, margins of at least 10x.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sturdy_core::{
    FailureKind, Phase, Profile, Profiles, Reach, TimeoutError, Workload, classify_error,
};
use sturdy_timeout::{AttemptTimeoutLayer, WorkloadTimeoutLayer, grpc_timeout};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceBuilder;

const BOUND: Duration = Duration::from_secs(10);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

type Seen = Arc<Mutex<Vec<Option<Duration>>>>;

/// Starts a tonic-health server on loopback whose requests first pass a
/// layer recording their `grpc-timeout`, then one that sleeps `delay`.
async fn start_server(delay: Duration) -> (SocketAddr, Seen, tokio::task::JoinHandle<()>) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    let record = tower::util::MapRequestLayer::new(move |req: http::Request<tonic::body::Body>| {
        let t = req
            .headers()
            .get(grpc_timeout::HEADER)
            .and_then(|v| grpc_timeout::parse(v.as_bytes()));
        seen2.lock().unwrap().push(t);
        req
    });
    let slow = tower::util::MapFutureLayer::new(move |fut| async move {
        tokio::time::sleep(delay).await;
        fut.await
    });
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = Server::builder()
            .layer(record)
            .layer(slow)
            .serve_with_incoming(health, incoming)
            .await;
    });
    (addr, seen, task)
}

async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn profiles(headers: Duration, total: Duration) -> Profiles {
    let mut all = Profiles::default();
    *all.get_mut(Workload::Interactive) = Profile {
        ready: ms(5000),
        headers,
        read: ms(5000),
        total,
    };
    all
}

fn layered(
    channel: Channel,
    p: Profiles,
) -> HealthClient<sturdy_timeout::WorkloadTimeout<sturdy_timeout::AttemptTimeout<Channel>>> {
    let svc = ServiceBuilder::new()
        .layer(WorkloadTimeoutLayer::from_profiles(p).unwrap())
        .layer(AttemptTimeoutLayer::from_profiles(p).unwrap())
        .service(channel);
    HealthClient::new(svc)
}

#[tokio::test]
async fn the_server_sees_a_grpc_timeout_matching_the_attempts_limit() {
    let (addr, seen, task) = start_server(Duration::ZERO).await;
    let ch = channel(addr).await;

    // The attempt's own `headers` limit is the smaller one.
    let mut client = layered(ch.clone(), profiles(ms(2000), ms(30_000)));
    let res = tokio::time::timeout(BOUND, client.check(HealthCheckRequest::default()))
        .await
        .expect("bounded")
        .unwrap();
    assert_eq!(res.into_inner().status, 1, "SERVING");

    // The remaining deadline is the smaller one.
    let mut client = layered(ch, profiles(ms(20_000), ms(3000)));
    tokio::time::timeout(BOUND, client.check(HealthCheckRequest::default()))
        .await
        .expect("bounded")
        .unwrap();

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let first = seen[0].expect("grpc-timeout on the first call");
    assert!(first <= ms(2000) && first > ms(1800), "{first:?}");
    let second = seen[1].expect("grpc-timeout on the second call");
    assert!(second <= ms(3000) && second > ms(2700), "{second:?}");
    task.abort();
}

#[tokio::test]
async fn a_slow_server_past_headers_is_cut_off_as_deadline_exceeded_with_sturdys_error() {
    // The server answers after 5 s; `headers` is 200 ms, far below the
    // 30 s deadline.
    let (addr, _seen, task) = start_server(ms(5000)).await;
    let mut client = layered(channel(addr).await, profiles(ms(200), ms(30_000)));
    let start = Instant::now();
    let status = tokio::time::timeout(BOUND, client.check(HealthCheckRequest::default()))
        .await
        .expect("bounded")
        .unwrap_err();
    assert!(start.elapsed() < ms(2000), "{:?}", start.elapsed());
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    let source = status.source().expect("sturdy's error as the source");
    let t = source
        .downcast_ref::<TimeoutError>()
        .expect("the source is a TimeoutError");
    assert_eq!(
        (t.phase(), t.reach(), t.limit()),
        (Phase::Headers, Reach::Unknown, ms(200))
    );
    assert_eq!(t.workload(), Some(Workload::Interactive));
    assert_eq!(classify_error(&status), FailureKind::HeadersTimeout);
    task.abort();
}
