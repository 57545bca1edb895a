//! Replayable request bodies end to end: `sturdy::client()` + `RetryLayer`
//! against a small hyper server of this file that records every request
//! body it receives (the fault server does not echo bodies). Real sockets,
//! so no paused time; every wait is bounded.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proptest::prelude::*;
use sturdy::CallContext;
use sturdy::retry::{Backoff, RetryLayer, RetryPolicy};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tower::{Layer, Service, ServiceExt};

const BOUND: Duration = Duration::from_secs(20);

/// How the recording server answers.
#[derive(Clone, Copy)]
enum Mode {
    /// Read the whole body; 503 to the first `n` attempts of a call, then 200.
    FailFirst(usize),
    /// Like `FailFirst`, but a failing attempt is answered after reading
    /// only its first frame.
    FailEarly(usize),
}

#[derive(Default)]
struct Seen {
    /// Every body received, in arrival order, by call id.
    bodies: HashMap<String, Vec<Vec<u8>>>,
    /// Sent once the first frame of any request has arrived.
    first_frame: Option<oneshot::Sender<()>>,
}

struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    async fn start(mode: Mode) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = shared.clone();
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    handle(req, mode, seen.clone())
                });
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Recorder { addr, seen, task }
    }

    fn url(&self) -> String {
        format!("http://{}/upload", self.addr)
    }

    fn bodies(&self, call: &str) -> Vec<Vec<u8>> {
        self.seen
            .lock()
            .unwrap()
            .bodies
            .get(call)
            .cloned()
            .unwrap_or_default()
    }
}

async fn handle(
    req: Request<Incoming>,
    mode: Mode,
    seen: Arc<Mutex<Seen>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let call = req
        .headers()
        .get("x-call")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let attempt = {
        let mut s = seen.lock().unwrap();
        let list = s.bodies.entry(call.clone()).or_default();
        list.push(Vec::new());
        list.len()
    };
    let (fail, early) = match mode {
        Mode::FailFirst(n) => (attempt <= n, false),
        Mode::FailEarly(n) => (attempt <= n, attempt <= n),
    };
    let mut body = req.into_body();
    let mut first = true;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            let mut s = seen.lock().unwrap();
            if let Some(b) = s.bodies.get_mut(&call).and_then(|l| l.get_mut(attempt - 1)) {
                b.extend_from_slice(&data);
            }
            if first && let Some(tx) = s.first_frame.take() {
                let _ = tx.send(());
            }
        }
        if first && early {
            break;
        }
        first = false;
    }
    let status = if fail {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    Ok(Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(b"done")))
        .unwrap())
}

fn client(http2: bool) -> sturdy::Client {
    sturdy::client()
        .no_proxy()
        .http2_only(http2)
        .build()
        .expect("a valid client")
}

fn layer(cap: usize) -> RetryLayer {
    RetryLayer::new(
        RetryPolicy::builder()
            .backoff(Backoff::guide(
                Duration::from_millis(1),
                Duration::from_millis(1),
            ))
            .replay_cap(cap)
            .no_budget()
            .build()
            .unwrap(),
    )
}

type Chunked =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

fn chunked(parts: &[Vec<u8>]) -> Chunked {
    let frames: Vec<_> = parts
        .iter()
        .map(|p| Ok(Frame::data(Bytes::copy_from_slice(p))))
        .collect();
    StreamBody::new(futures_util::stream::iter(frames))
}

fn upload<B>(url: &str, call: &str, body: B) -> Request<B> {
    Request::post(url)
        .header("x-call", call)
        .header("idempotency-key", call)
        .body(body)
        .unwrap()
}

/// Sends `parts` as a chunked body through the retry layer; returns the
/// final status and what each attempt delivered to the server.
async fn send_chunks(
    server: &Recorder,
    http2: bool,
    call: &str,
    parts: &[Vec<u8>],
) -> (StatusCode, Vec<Vec<u8>>) {
    let svc = layer(64 * 1024).layer(client(http2));
    let req = upload(&server.url(), call, chunked(parts));
    let resp = tokio::time::timeout(BOUND, svc.oneshot(req))
        .await
        .unwrap()
        .unwrap();
    (resp.status(), server.bodies(call))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_attempt_delivers_the_original_bytes_once(
        parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..2048), 0..24),
        http2 in any::<bool>(),
        early in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let mode = if early { Mode::FailEarly(2) } else { Mode::FailFirst(2) };
            let server = Recorder::start(mode).await;
            let original: Vec<u8> = parts.concat();
            let (status, bodies) = send_chunks(&server, http2, "p", &parts).await;
            prop_assert_eq!(status, StatusCode::OK);
            prop_assert_eq!(bodies.len(), 3);
            for (i, got) in bodies.iter().enumerate() {
                if early && i < 2 {
                    // Answered after one frame: a prefix, never a repeat.
                    prop_assert!(original.starts_with(got), "attempt {} sent bytes not in the original", i + 1);
                } else {
                    prop_assert_eq!(got, &original, "attempt {}", i + 1);
                }
            }
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn a_body_over_the_cap_is_sent_once_and_the_servers_answer_returned() {
    for http2 in [false, true] {
        let server = Recorder::start(Mode::FailFirst(5)).await;
        let svc = layer(1024).layer(client(http2));
        let parts = vec![vec![1u8; 1000], vec![2u8; 1000], vec![3u8; 1000]];
        let mut req = upload(&server.url(), "big", chunked(&parts));
        let ctx = CallContext::attach(&mut req);
        let resp = tokio::time::timeout(BOUND, svc.oneshot(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "http2={http2}"
        );
        let bodies = server.bodies("big");
        assert_eq!(bodies.len(), 1, "http2={http2}");
        assert_eq!(bodies[0], parts.concat());
        assert_eq!(ctx.attempts(), 1);
    }
}

/// A request body fed from a channel, one chunk per message.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

async fn first_attempt_streams_without_waiting(http2: bool) {
    let server = Recorder::start(Mode::FailFirst(1)).await;
    let (got_first, first_arrived) = oneshot::channel();
    server.seen.lock().unwrap().first_frame = Some(got_first);
    let (tx, rx) = mpsc::channel(4);
    let mut svc = layer(64 * 1024).layer(client(http2));
    let req = upload(&server.url(), "stream", ChannelBody(rx));
    // `call`, not `oneshot`: tower's Oneshot trips a rustc limitation on
    // `Send` with boxed-error bodies when spawned.
    let fut = ServiceExt::<Request<ChannelBody>>::ready(&mut svc)
        .await
        .unwrap()
        .call(req);
    let call = tokio::spawn(tokio::time::timeout(BOUND, fut));
    tx.send(Bytes::from_static(b"first,")).await.unwrap();
    // The second chunk exists only once the server has the first: a first
    // attempt that waited for the whole body would never get here.
    tokio::time::timeout(BOUND, first_arrived)
        .await
        .expect("the first chunk reached the server before the body ended")
        .unwrap();
    tx.send(Bytes::from_static(b"second")).await.unwrap();
    drop(tx);
    let resp = call.await.unwrap().unwrap().unwrap();
    // 503 first, then the retry replays both chunks.
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(server.bodies("stream"), vec![b"first,second".to_vec(); 2]);
}

#[tokio::test]
async fn the_first_attempt_streams_without_waiting_http1() {
    first_attempt_streams_without_waiting(false).await;
}

#[tokio::test]
async fn the_first_attempt_streams_without_waiting_http2() {
    first_attempt_streams_without_waiting(true).await;
}
