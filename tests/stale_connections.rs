//! Pooled-connection races against the real fault server: it closes idle
//! keep-alive connections just as a client reuses them (`idle_close`), the
//! race a server's idle timeout and a client's pool run on every busy
//! connection. The request was already written when the connection went:
//! hyper says "connection closed before message completed", which is
//! `reset` with `Unknown` reach (the server may have read it), and the stack
//! repeats it only where a repeat is safe. A request hyper gives back
//! unsent ("provably never left") is `NotSent`.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use sturdy::metrics::Scope;
use sturdy::retry::RetryError;
use sturdy::{CallContext, FailureKind, Reach, RetrySafe, Stack, classify_error};
use sturdy_faults::FaultServer;
use tower::util::BoxCloneService;
use tower::{Layer, Service, ServiceExt};

/// Every wait in these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(30);

mod metrics_support;

/// An unscripted chat completion.
fn chat(url: &str) -> Request<Full<Bytes>> {
    metrics_support::chat(url, "", "", false)
}

fn models(url: &str) -> Request<Full<Bytes>> {
    Request::get(format!("{url}/v1/models"))
        .body(Full::new(Bytes::new()))
        .expect("a valid request")
}

type Svc = BoxCloneService<Request<Full<Bytes>>, http::Response<sturdy::BoxBody>, sturdy::BoxError>;

/// The stack with millisecond backoff and no budget, over `sturdy::client()`.
fn stack() -> (Stack, Svc) {
    let stack = Stack::builder()
        .retry_policy(
            // Enough retries that a safe call outlives a run of stale
            // connections (each reuse may meet one).
            metrics_support::quick_retry().max_retries(10),
        )
        .build()
        .expect("a valid stack");
    let client = sturdy::client().no_proxy().build().expect("a valid client");
    let svc = ServiceExt::<Request<Full<Bytes>>>::map_response(stack.layer(client), |r| {
        r.map(sturdy::boxed)
    });
    (stack, BoxCloneService::new(svc))
}

async fn send(svc: &Svc, req: Request<Full<Bytes>>) -> Result<u16, sturdy::BoxError> {
    let resp = tokio::time::timeout(BOUND, svc.clone().oneshot(req))
        .await
        .expect("the call is bounded")?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await?;
    Ok(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_lost_to_an_idle_close_is_a_reset_of_unknown_reach() {
    let server = FaultServer::builder()
        .idle_close(1.0)
        .start()
        .await
        .expect("fault server");
    let client = sturdy::client().no_proxy().build().expect("a valid client");
    let get = || {
        Request::get(format!("{}/v1/models", server.base_url()))
            .body(sturdy::boxed(Full::new(Bytes::new())))
            .expect("a valid request")
    };
    // A fresh connection is never idle: the first request is served, and
    // the connection goes back to the pool, in a task of hyper-util's own
    // (under load a request sent before that task ran takes a fresh
    // connection, and is served too). Requests go one at a time until one
    // reuses a pooled connection: it loses the race.
    let mut served = 0;
    let err = loop {
        match client.request(get()).await {
            Ok(resp) => {
                resp.into_body().collect().await.expect("its body");
                served += 1;
                assert!(served < 50, "50 requests in a row met no closed connection");
                // Time for the pool to take the connection back (far
                // longer than the microseconds it needs).
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => break err,
        }
    };
    assert!(served >= 1, "a fresh connection is never idle");
    let hyper_err = std::error::Error::source(&err)
        .and_then(|e| e.downcast_ref::<hyper::Error>())
        .expect("hyper's own error");
    assert!(hyper_err.is_incomplete_message(), "{hyper_err}");
    assert_eq!(classify_error(&err), FailureKind::Reset);
    assert_eq!(classify_error(&err).reach(), Reach::Unknown);
    let d = server.dashboard();
    assert_eq!(
        (d.received, d.faults("idle_close")),
        (served, 1),
        "the server never read the lost request"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_given_back_unsent_is_not_sent() {
    let server = FaultServer::start().await.expect("fault server");
    let tcp = tokio::net::TcpStream::connect(server.addr())
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("handshake");
    let conn = tokio::spawn(conn);
    // The server drops its open connections (an outage); the client's
    // connection task sees it close while idle.
    server
        .outage(Duration::from_millis(50))
        .await
        .expect("outage");
    let _ = tokio::time::timeout(BOUND, conn).await.expect("conn ends");
    let req = Request::get(format!("{}/v1/models", server.base_url()))
        .body(Full::new(Bytes::new()))
        .expect("a valid request");
    let err = sender
        .send_request(req)
        .await
        .expect_err("a closed connection");
    assert!(err.is_canceled(), "{err}");
    assert_eq!(classify_error(&err).reach(), Reach::NotSent);
    assert_eq!(server.dashboard().received, 0);
    server.shutdown().await;
}

/// Sends requests from `make` one at a time until one's first attempt meets
/// a connection the server closed (at most 50): that call's result and
/// record. Whether a call reuses the pooled connection is up to hyper-util's
/// pool (it takes a connection back in a task of its own), so the test waits
/// for the race instead of assuming it.
async fn until_stale(
    svc: &Svc,
    make: impl Fn() -> Request<Full<Bytes>>,
) -> (Result<u16, sturdy::BoxError>, CallContext) {
    for _ in 0..50 {
        let mut req = make();
        let ctx = CallContext::attach(&mut req);
        let result = send(svc, req).await;
        if result.is_err() || ctx.retries() > 0 {
            return (result, ctx);
        }
        assert_eq!(result.expect("a success"), 200);
        // Give the pool time to take the connection back (far longer than
        // the microseconds it needs).
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("50 calls in a row met no closed connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_connection_failures_are_retried_only_where_a_repeat_is_safe() {
    let server = FaultServer::builder()
        .idle_close(1.0)
        .start()
        .await
        .expect("fault server");
    let url = server.base_url();
    let (stack, svc) = stack();

    // A POST nobody said may be repeated: its fate is unknown, so it is not.
    let (result, ctx) = until_stale(&svc, || chat(&url)).await;
    let err = result.expect_err("not repeated");
    let retry = err
        .downcast_ref::<RetryError>()
        .expect("the retry layer's error");
    assert_eq!(
        (retry.attempts(), retry.failure(), ctx.retries()),
        (1, FailureKind::Reset, 0)
    );

    // A POST marked RetrySafe is repeated on a fresh connection, and counted
    // as possibly duplicated (the server might have read it).
    let (result, ctx) = until_stale(&svc, || {
        let mut req = chat(&url);
        req.extensions_mut().insert(RetrySafe);
        req
    })
    .await;
    // A repeat may itself take another stale pooled connection: every
    // failed attempt is a reset, every retry a possible duplicate.
    assert_eq!(result.expect("repeated"), 200);
    let retries = ctx.retries();
    assert!(retries >= 1);
    assert_eq!(
        ctx.retry_reasons(),
        vec![FailureKind::Reset; retries as usize]
    );
    assert_eq!(ctx.possibly_duplicated(), retries);

    // A GET is idempotent: repeated, and never a possible duplicate.
    let (result, ctx) = until_stale(&svc, || models(&url)).await;
    assert_eq!(result.expect("repeated"), 200);
    assert!(ctx.retries() >= 1);
    assert_eq!(ctx.possibly_duplicated(), 0);

    let s = stack.recorder().snapshot();
    let d = server.dashboard();
    assert_eq!(s.count(Scope::Call, "reset", Reach::Unknown), 1);
    assert_eq!(s.count_outcome(Scope::Call, "reset"), 1);
    let resets = s.count(Scope::Attempt, "reset", Reach::Unknown);
    assert_eq!(resets, 1 + u64::from(retries) + u64::from(ctx.retries()));
    assert_eq!(d.faults("idle_close"), resets, "one reset per idle close");
    assert_eq!(s.in_flight(Scope::Attempt), 0);
    assert_eq!(
        d.received,
        s.count(Scope::Attempt, "ok", Reach::Acknowledged)
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_every_idle_close_is_one_unknown_reset_and_safe_calls_recover() {
    const CALLS: u64 = 600;
    const CONCURRENCY: u64 = 12;
    let server = FaultServer::builder()
        .idle_close(0.3)
        .seed(11)
        .start()
        .await
        .expect("fault server");
    let url = server.base_url();
    let (stack, svc) = stack();
    let mut tasks = Vec::new();
    for worker in 0..CONCURRENCY {
        let (mut svc, url) = (svc.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut unsafe_failures = 0u64;
            for i in 0..CALLS / CONCURRENCY {
                let safe = (worker + i) % 2 == 0;
                let mut req = chat(&url);
                if safe {
                    req.extensions_mut().insert(RetrySafe);
                }
                let fut = svc.ready().await.expect("ready").call(req);
                match fut.await {
                    Ok(resp) => {
                        resp.into_body().collect().await.expect("the body");
                    }
                    Err(e) => {
                        assert!(!safe, "a RetrySafe call failed: {e}");
                        let retry = e.downcast_ref::<RetryError>().expect("a retry error");
                        assert_eq!(retry.failure(), FailureKind::Reset);
                        unsafe_failures += 1;
                    }
                }
            }
            unsafe_failures
        }));
    }
    let mut unsafe_failures = 0;
    for t in tasks {
        unsafe_failures += tokio::time::timeout(BOUND, t)
            .await
            .expect("the run is bounded")
            .expect("no worker panicked");
    }
    let s = stack.recorder().snapshot();
    let d = server.dashboard();
    let closes = d.faults("idle_close");
    assert!(closes > 20, "only {closes} idle closes: the race never ran");
    // Each close lost exactly one written request, seen as one unknown reset.
    assert_eq!(s.count_outcome(Scope::Attempt, "reset"), closes);
    assert_eq!(s.count(Scope::Attempt, "reset", Reach::Unknown), closes);
    assert_eq!(
        s.finished(Scope::Attempt),
        s.count(Scope::Attempt, "ok", Reach::Acknowledged) + closes,
        "nothing but successes and resets: {s:?}"
    );
    assert_eq!(
        s.count(Scope::Call, "reset", Reach::Unknown),
        unsafe_failures
    );
    assert_eq!(s.started(Scope::Call), CALLS);
    for scope in Scope::ALL {
        assert_eq!(s.in_flight(scope), 0, "{scope}");
    }
    // The server read only what it answered.
    assert_eq!(
        d.received,
        s.count(Scope::Attempt, "ok", Reach::Acknowledged)
    );
    server.shutdown().await;
}
