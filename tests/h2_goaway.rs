//! HTTP/2 GOAWAY, as a server at its per-connection request limit sends it
//! (nginx's `keepalive_requests`, a proxy draining for a deploy): streams
//! above the frame's last stream ID were not processed (RFC 9113 §6.8), so
//! even a POST may go again, on another connection. Streams at or below it
//! may have been processed: when their connection then closes they are a
//! `reset` of unknown reach, repeated only when safe.
//!
//! hyper's server always names the streams it has taken, so the peer here
//! is a few lines of raw HTTP/2 over a real loopback socket: a preface, a
//! SETTINGS exchange, and per connection either a GOAWAY or a `200`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use sturdy::metrics::Scope;
use sturdy::retry::RetryError;
use sturdy::{FailureKind, Reach, Stack, classify_error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::{Layer, ServiceExt};

/// Every wait in these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(30);

mod metrics_support;

mod h2_support;

use h2_support::{
    DATA, END_HEADERS, END_STREAM, GOAWAY, HEADERS, STATUS_200, accept_preface, frame, read_frame,
};

/// What the peer does with the first request stream of a connection.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// GOAWAY naming `last` as the last stream it processed, then close.
    GoAway { last: u32 },
    /// `:status 200`, no body.
    Ok,
}

/// Serves one connection: the `answer` to its first request stream.
async fn serve(mut sock: TcpStream, answer: Answer) -> std::io::Result<()> {
    accept_preface(&mut sock).await?;
    loop {
        let h2_support::Frame {
            kind,
            flags,
            stream,
            ..
        } = read_frame(&mut sock).await?;
        match (kind, answer) {
            (HEADERS, Answer::GoAway { last }) => {
                let mut body = last.to_be_bytes().to_vec();
                body.extend(0u32.to_be_bytes()); // NO_ERROR
                sock.write_all(&frame(GOAWAY, 0, 0, &body)).await?;
                sock.flush().await?;
                // Give the client the frame before the end of the stream.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Ok(());
            }
            (HEADERS | DATA, Answer::Ok) if flags & END_STREAM != 0 => {
                let end = END_HEADERS | END_STREAM;
                sock.write_all(&frame(HEADERS, end, stream, &[STATUS_200]))
                    .await?;
                sock.flush().await?;
                // Wait for the client to close the connection.
                let mut rest = Vec::new();
                let _ = sock.read_to_end(&mut rest).await;
                return Ok(());
            }
            _ => {}
        }
    }
}

/// A peer that answers its connections in turn with `answers` (the last
/// repeated); returns its URL and how many connections it accepted.
async fn peer(answers: Vec<Answer>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let n = count.fetch_add(1, Ordering::SeqCst);
            let answer = answers[n.min(answers.len() - 1)];
            tokio::spawn(async move {
                let _ = serve(sock, answer).await;
            });
        }
    });
    (url, accepted)
}

/// A chat completion: a POST, neither idempotent nor marked safe.
fn chat(url: &str) -> Request<Full<Bytes>> {
    metrics_support::chat(url, "", "", false)
}

fn h2_client() -> sturdy::Client {
    sturdy::client()
        .no_proxy()
        .http2_only(true)
        .build()
        .expect("a valid client")
}

fn stack() -> Stack {
    Stack::builder()
        .retry_policy(metrics_support::quick_retry())
        .build()
        .expect("a valid stack")
}

#[tokio::test]
async fn a_stream_above_the_goaways_last_stream_id_was_not_sent() {
    let (url, _) = peer(vec![Answer::GoAway { last: 0 }]).await;
    let client = h2_client();
    let err = tokio::time::timeout(BOUND, client.oneshot(chat(&url).map(sturdy::boxed)))
        .await
        .expect("bounded")
        .expect_err("the stream was refused");
    let kind = classify_error(&err);
    assert_eq!(kind, FailureKind::GoAway, "{err:?}");
    assert_eq!(kind.reach(), Reach::NotSent);
    assert_eq!(kind.label(), "goaway");
}

#[tokio::test]
async fn a_post_refused_by_goaway_is_sent_again_on_a_new_connection() {
    let (url, accepted) = peer(vec![Answer::GoAway { last: 0 }, Answer::Ok]).await;
    let stack = stack();
    let svc = stack.layer(h2_client());
    let resp = tokio::time::timeout(BOUND, svc.oneshot(chat(&url)))
        .await
        .expect("bounded")
        .expect("the retry's answer");
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.expect("the body");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    let s = stack.recorder().snapshot();
    assert_eq!(s.started(Scope::Attempt), 2);
    assert_eq!(s.count(Scope::Attempt, "goaway", Reach::NotSent), 1);
    assert_eq!(s.count(Scope::Call, "ok", Reach::Acknowledged), 1);
    assert_eq!(s.retries().get("goaway"), Some(&1));
    // Not sent, so not a possible duplicate.
    assert_eq!(s.possibly_duplicated(), 0);
}

#[tokio::test]
async fn a_stream_the_goaway_kept_may_have_been_processed_and_is_not_repeated() {
    // The frame names stream 1 as processed; then the connection closes
    // without its answer. The server may have acted on the POST.
    let (url, accepted) = peer(vec![Answer::GoAway { last: 1 }, Answer::Ok]).await;
    let stack = stack();
    let svc = stack.layer(h2_client());
    let err = tokio::time::timeout(BOUND, svc.oneshot(chat(&url)))
        .await
        .expect("bounded")
        .expect_err("no repeat of a POST that may have run");
    let retry = err.downcast_ref::<RetryError>().expect("a RetryError");
    assert_eq!(retry.attempts(), 1);
    assert_eq!(retry.failure(), FailureKind::Reset, "{err:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    let s = stack.recorder().snapshot();
    assert_eq!(s.count(Scope::Attempt, "reset", Reach::Unknown), 1);
}
