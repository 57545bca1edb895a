//! A server that answers from the request head while the client is still
//! sending the body (a gateway limiting by headers: `429;early=true` on the
//! fault server). The client goes on sending, so the request body can pass
//! the replay cap during the backoff, after the retry was decided: the call
//! must then end with the server's real answer, not an error of sturdy's
//! making, and count no retry it never sent. A body that ends within the
//! cap while the retry waits is replayed whole.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use sturdy::metrics::Scope;
use sturdy::retry::RetryPolicy;
use sturdy::{BoxError, Stack};
use sturdy_faults::{CALL_HEADER, FAULT_HEADER, FaultServer};
use tokio::time::{Instant, Sleep};
use tower::{Layer, ServiceExt};

/// Every wait in these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(30);

/// A chat request body sent in `chunks` pieces, one every `every`, as a
/// slow upload of a long prompt would be.
struct Paced {
    chunks: VecDeque<Bytes>,
    every: Duration,
    sleep: Pin<Box<Sleep>>,
    len: u64,
}

impl Paced {
    /// A chat request of about `chunks * chunk_len` bytes.
    fn chat(chunks: usize, chunk_len: usize, every: Duration) -> Paced {
        let head = br#"{"model":"m","messages":[{"role":"user","content":""#;
        let tail = br#""}]}"#;
        let content = chunks * chunk_len - head.len() - tail.len();
        let mut json = Vec::with_capacity(chunks * chunk_len);
        json.extend_from_slice(head);
        json.resize(head.len() + content, b'x');
        json.extend_from_slice(tail);
        let json = Bytes::from(json);
        let pieces = (0..chunks)
            .map(|i| json.slice(i * chunk_len..((i + 1) * chunk_len).min(json.len())))
            .collect();
        Paced {
            chunks: pieces,
            every,
            // The first piece goes at once.
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            len: json.len() as u64,
        }
    }
}

impl Body for Paced {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.chunks.is_empty() {
            return Poll::Ready(None);
        }
        std::task::ready!(self.sleep.as_mut().poll(cx));
        let next = Instant::now() + self.every;
        self.sleep.as_mut().reset(next);
        Poll::Ready(self.chunks.pop_front().map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

fn request(url: &str, call: &str, script: &str, body: Paced) -> Request<Paced> {
    Request::post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header(CALL_HEADER, call)
        .header(FAULT_HEADER, script)
        .body(body)
        .expect("a valid request")
}

/// The stack over `sturdy::client()`, with a 64 KiB replay cap.
fn stack() -> Stack {
    Stack::builder()
        .retry_policy(RetryPolicy::builder().no_budget().replay_cap(64 * 1024))
        .build()
        .expect("a valid stack")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_passes_the_cap_during_the_backoff_ends_the_call_with_the_real_answer() {
    let server = FaultServer::start().await.expect("fault server");
    let stack = stack();
    let client = sturdy::client().no_proxy().build().expect("a valid client");
    let svc = stack.layer(client);
    // 128 KiB in 16 KiB pieces every 20 ms: the 429 comes back after the
    // first piece, so the retry is decided while the body is within the
    // cap; the body passes it 60 ms later, before the 300 ms hint is over.
    let body = Paced::chat(8, 16 * 1024, Duration::from_millis(20));
    let req = request(
        &server.base_url(),
        "early-spoiled",
        "429;retry-after-ms=300;early=true, 200",
        body,
    );
    let resp = tokio::time::timeout(BOUND, svc.oneshot(req))
        .await
        .expect("the call is bounded")
        .expect("the server's answer, not an error");
    assert_eq!(resp.status(), 429);
    assert_eq!(
        resp.headers().get("retry-after-ms").map(|v| v.as_bytes()),
        Some(&b"300"[..])
    );
    let text = resp
        .into_body()
        .collect()
        .await
        .expect("the 429's body")
        .to_bytes();
    assert!(
        std::str::from_utf8(&text).is_ok_and(|t| t.contains("429")),
        "{text:?}"
    );
    let s = stack.recorder().snapshot();
    assert_eq!(s.started(Scope::Call), 1);
    assert_eq!(s.started(Scope::Attempt), 1);
    // The retry was decided but never sent: it is not counted.
    assert_eq!(s.retries_total(), 0, "{:?}", s.retries());
    assert_eq!(s.in_flight(Scope::Call), 0);
    assert_eq!(server.dashboard().received, 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_ends_within_the_cap_while_the_retry_waits_is_replayed_whole() {
    let server = FaultServer::start().await.expect("fault server");
    let stack = stack();
    let client = sturdy::client().no_proxy().build().expect("a valid client");
    let svc = stack.layer(client);
    // 48 KiB in 12 KiB pieces every 50 ms: the upload ends 150 ms in, long
    // after the 20 ms hint; the retry waits for the first attempt to finish
    // sending it, then replays it from the start.
    let body = Paced::chat(4, 12 * 1024, Duration::from_millis(50));
    let sent = body.len;
    let req = request(
        &server.base_url(),
        "early-replayed",
        "429;retry-after-ms=20;early=true, 200",
        body,
    );
    let started = Instant::now();
    let resp = tokio::time::timeout(BOUND, svc.oneshot(req))
        .await
        .expect("the call is bounded")
        .expect("an answer");
    assert_eq!(
        resp.status(),
        200,
        "the replayed body parsed as a chat request"
    );
    resp.into_body().collect().await.expect("the body");
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert!(sent > 40 * 1024);
    let s = stack.recorder().snapshot();
    assert_eq!(s.started(Scope::Attempt), 2);
    assert_eq!(s.retries_total(), 1);
    let dashboard = server.dashboard();
    assert_eq!(dashboard.received, 2);
    assert_eq!(dashboard.responded(200), 1);
    server.shutdown().await;
}
