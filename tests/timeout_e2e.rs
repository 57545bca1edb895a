//! End-to-end: sturdy-timeout's layers around `sturdy::client()`, against
//! the real fault server over loopback. Millisecond profiles, every fault at
//! least 10x longer than the limit it must trip (and the limits at least 10x
//! longer than what a healthy exchange takes), every wait bounded. Real time:
//! never paused, since these tests touch sockets.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body::Body;
use http_body_util::{BodyExt, Full};
use sturdy::Name;
use sturdy_core::{
    BoxBody, BoxError, FailureKind, Phase, Profile, Profiles, Reach, TimeoutError, Workload, boxed,
    classify_body_error, classify_error,
};
use sturdy_faults::{CALL_HEADER, FAULT_HEADER, FaultServer};
use sturdy_timeout::{AttemptTimeoutLayer, WorkloadTimeoutLayer};
use tower::{Service, ServiceBuilder, ServiceExt};

/// Bound on any single wait in these tests.
const BOUND: Duration = Duration::from_secs(10);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn profiles(p: Profile) -> Profiles {
    let mut all = Profiles::default();
    *all.get_mut(Workload::Interactive) = p;
    all
}

/// A chat completion request with a per-call fault script.
fn chat(base: &str, call: &str, fault: &str, stream: bool) -> Request<BoxBody> {
    let body = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"stream":{stream}}}"#
    );
    Request::post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header(CALL_HEADER, call)
        .header(FAULT_HEADER, fault)
        .body(boxed(Full::new(Bytes::from(body))))
        .unwrap()
}

fn timeout_in(err: &BoxError) -> TimeoutError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&**err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<TimeoutError>() {
            return *t;
        }
        cur = e.source();
    }
    panic!("no TimeoutError in {err:?}")
}

/// Reads a body to its end or first error.
async fn drain<B>(body: B) -> (String, Option<BoxError>)
where
    B: Body<Data = Bytes, Error = BoxError>,
{
    let mut body = std::pin::pin!(body);
    let mut seen = String::new();
    loop {
        match tokio::time::timeout(BOUND, body.frame()).await {
            Err(_) => panic!("body wait exceeded its bound"),
            Ok(None) => return (seen, None),
            Ok(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    seen.push_str(&String::from_utf8_lossy(d));
                }
            }
            Ok(Some(Err(e))) => return (seen, Some(e)),
        }
    }
}

fn client() -> sturdy::Client {
    sturdy::client().build().expect("a valid client")
}

#[tokio::test]
async fn a_delay_longer_than_headers_is_a_headers_timeout_with_unknown_reach() {
    let server = FaultServer::start().await.unwrap();
    let p = profiles(Profile {
        ready: ms(1000),
        headers: ms(200),
        read: ms(5000),
        total: ms(8000),
    });
    let svc = ServiceBuilder::new()
        .layer(WorkloadTimeoutLayer::from_profiles(p).unwrap())
        .layer(
            AttemptTimeoutLayer::builder()
                .profiles(p)
                .capture_connection(true)
                .build()
                .unwrap(),
        )
        .service(client());
    let req = chat(&server.base_url(), "d1", "delay;ms=4000", false);
    let start = Instant::now();
    let err = tokio::time::timeout(BOUND, svc.oneshot(req))
        .await
        .expect("bounded")
        .unwrap_err();
    assert!(start.elapsed() < ms(2000), "{:?}", start.elapsed());
    let t = timeout_in(&err);
    assert_eq!((t.phase(), t.reach()), (Phase::Headers, Reach::Unknown));
    assert_eq!(classify_error(&*err), FailureKind::HeadersTimeout);
    // The server did get it: that is what Unknown means.
    assert_eq!(server.dashboard().received, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn an_sse_stall_longer_than_read_delivers_the_first_chunks_then_a_read_timeout() {
    let server = FaultServer::start().await.unwrap();
    let p = profiles(Profile {
        ready: ms(1000),
        headers: ms(2000),
        read: ms(300),
        total: ms(8000),
    });
    let svc = ServiceBuilder::new()
        .layer(WorkloadTimeoutLayer::from_profiles(p).unwrap())
        .layer(
            AttemptTimeoutLayer::builder()
                .profiles(p)
                .capture_connection(true)
                .build()
                .unwrap(),
        )
        .service(client());
    let req = chat(&server.base_url(), "s1", "stall;ms=5000;chunks=4", true);
    let res = tokio::time::timeout(BOUND, svc.oneshot(req))
        .await
        .expect("bounded")
        .unwrap();
    assert_eq!(res.status(), 200);
    let start = Instant::now();
    let (seen, err) = drain(res.into_body()).await;
    assert!(start.elapsed() < ms(3000), "{:?}", start.elapsed());
    assert_eq!(seen.matches("data: ").count(), 1, "{seen}");
    assert!(seen.contains("chat.completion.chunk"), "{seen}");
    let err = err.expect("the stall must end the stream");
    let t = timeout_in(&err);
    assert_eq!((t.phase(), t.reach()), (Phase::Read, Reach::Acknowledged));
    assert_eq!(classify_body_error(&*err), FailureKind::ReadTimeout);
    server.shutdown().await;
}

#[tokio::test]
async fn a_slow_stream_longer_than_total_ends_with_a_total_timeout() {
    let server = FaultServer::start().await.unwrap();
    // 100 ms between chunks, 100 chunks: a 10 s stream; `read` never fires
    // (2 s per gap), `total` (1 s) does.
    let p = profiles(Profile {
        ready: ms(1000),
        headers: ms(2000),
        read: ms(2000),
        total: ms(1000),
    });
    let svc = ServiceBuilder::new()
        .layer(WorkloadTimeoutLayer::from_profiles(p).unwrap())
        .layer(
            AttemptTimeoutLayer::builder()
                .profiles(p)
                .capture_connection(true)
                .build()
                .unwrap(),
        )
        .service(client());
    let req = chat(&server.base_url(), "t1", "slow;ms=100;chunks=100", true);
    let start = Instant::now();
    let res = tokio::time::timeout(BOUND, svc.oneshot(req))
        .await
        .expect("bounded")
        .unwrap();
    let (seen, err) = drain(res.into_body()).await;
    let elapsed = start.elapsed();
    assert!(elapsed >= ms(1000) && elapsed < ms(5000), "{elapsed:?}");
    let chunks = seen.matches("data: ").count();
    assert!((1..100).contains(&chunks), "{chunks} chunks");
    let err = err.expect("the deadline must end the stream");
    let t = timeout_in(&err);
    assert_eq!((t.phase(), t.reach()), (Phase::Total, Reach::Acknowledged));
    assert_eq!(
        classify_body_error(&*err),
        FailureKind::TotalTimeout(Reach::Acknowledged)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_saturated_concurrency_limit_is_a_ready_timeout_never_sent() {
    let server = FaultServer::start().await.unwrap();
    let p = profiles(Profile {
        ready: ms(200),
        headers: ms(8000),
        read: ms(8000),
        total: ms(8000),
    });
    let mut svc = ServiceBuilder::new()
        .layer(WorkloadTimeoutLayer::from_profiles(p).unwrap())
        .concurrency_limit(1)
        .layer(
            AttemptTimeoutLayer::builder()
                .profiles(p)
                .capture_connection(true)
                .build()
                .unwrap(),
        )
        .service(client());
    let base = server.base_url();
    let held = svc
        .ready()
        .await
        .unwrap()
        .call(chat(&base, "hold", "delay;ms=5000", false));
    let held = tokio::spawn(held);
    // Wait until the held call has reached the server.
    let waited = Instant::now();
    while server.dashboard().received == 0 {
        assert!(waited.elapsed() < BOUND, "the held call never arrived");
        tokio::time::sleep(ms(5)).await;
    }
    let start = Instant::now();
    let call = svc
        .ready()
        .await
        .unwrap()
        .call(chat(&base, "second", "200", false));
    let err = tokio::time::timeout(BOUND, call)
        .await
        .expect("bounded")
        .unwrap_err();
    assert!(start.elapsed() < ms(2000), "{:?}", start.elapsed());
    let t = timeout_in(&err);
    assert_eq!((t.phase(), t.reach()), (Phase::Ready, Reach::NotSent));
    assert_eq!(classify_error(&*err), FailureKind::ReadyTimeout);
    assert_eq!(server.dashboard().received, 1, "the second call was sent");
    held.abort();
    server.shutdown().await;
}

/// A resolver that never answers: connecting stalls in DNS, on loopback
/// only (no query ever leaves the machine).
fn silent_resolver() -> impl Service<
    Name,
    Response = std::vec::IntoIter<SocketAddr>,
    Error = Infallible,
    Future = std::future::Pending<Result<std::vec::IntoIter<SocketAddr>, Infallible>>,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(|_: Name| std::future::pending())
}

#[tokio::test]
async fn a_timeout_while_connecting_is_not_sent() {
    let p = profiles(Profile {
        ready: ms(1000),
        headers: ms(200),
        read: ms(5000),
        total: ms(8000),
    });
    let inner = sturdy::client()
        .resolver(silent_resolver())
        .connect_timeout(Duration::from_secs(30))
        .build()
        .expect("a valid client");
    let svc = ServiceBuilder::new()
        .layer(WorkloadTimeoutLayer::from_profiles(p).unwrap())
        .layer(
            AttemptTimeoutLayer::builder()
                .profiles(p)
                .capture_connection(true)
                .build()
                .unwrap(),
        )
        .service(inner);
    let req = chat("http://sturdy-never-resolves.test:8080", "c1", "200", false);
    let start = Instant::now();
    let err = tokio::time::timeout(BOUND, svc.oneshot(req))
        .await
        .expect("bounded")
        .unwrap_err();
    assert!(start.elapsed() < ms(2000), "{:?}", start.elapsed());
    let t = timeout_in(&err);
    assert_eq!((t.phase(), t.reach()), (Phase::Headers, Reach::NotSent));
    assert_eq!(classify_error(&*err), FailureKind::ConnectTimeout);
    assert_eq!(classify_error(&*err).reach(), Reach::NotSent);
}

#[tokio::test]
async fn a_healthy_call_passes_through_both_layers() {
    let server = FaultServer::start().await.unwrap();
    let p = profiles(Profile {
        ready: ms(1000),
        headers: ms(2000),
        read: ms(2000),
        total: ms(5000),
    });
    let svc = ServiceBuilder::new()
        .layer(WorkloadTimeoutLayer::from_profiles(p).unwrap())
        .layer(
            AttemptTimeoutLayer::builder()
                .profiles(p)
                .capture_connection(true)
                .build()
                .unwrap(),
        )
        .service(client());
    let req = chat(&server.base_url(), "ok1", "200;chunks=3", true);
    let res = tokio::time::timeout(BOUND, svc.oneshot(req))
        .await
        .expect("bounded")
        .unwrap();
    assert_eq!(res.status(), 200);
    let (seen, err) = drain(res.into_body()).await;
    assert!(err.is_none(), "{err:?}");
    assert!(seen.contains("data: [DONE]"), "{seen}");
    server.shutdown().await;
}
