//! Shared client-side helpers for the end-to-end tests: a hyper-util legacy
//! client, request builders, bounded waits and a body reader that records when
//! each frame arrived.

#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sturdy_faults::{CALL_HEADER, Dashboard, FAULT_HEADER};

/// The client every test uses.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Upper bound for any single wait; generous for a noisy 2-core box.
pub const BOUND: Duration = Duration::from_secs(10);

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// The `sturdy-faults` binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_sturdy-faults");

/// Starts the binary with `args`: the child (killed when dropped) and the
/// base URL its first line announces (`listening on URL`).
pub async fn spawn_binary<I, A>(args: I) -> (tokio::process::Child, String)
where
    I: IntoIterator<Item = A>,
    A: AsRef<std::ffi::OsStr>,
{
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(BIN)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    within(tokio::io::BufReader::new(stdout).read_line(&mut line))
        .await
        .unwrap();
    let base = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, base)
}

/// Runs the binary with `args` until it exits (bounded): its exit code and
/// what it wrote to standard error.
pub async fn run_binary<I, A>(args: I) -> (Option<i32>, String)
where
    I: IntoIterator<Item = A>,
    A: AsRef<std::ffi::OsStr>,
{
    let output = within(
        tokio::process::Command::new(BIN)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .output(),
    )
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr)
}

/// Awaits `future`, failing the test if it takes longer than [`BOUND`].
pub async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(BOUND, future)
        .await
        .expect("wait exceeded its bound")
}

/// `POST /v1/chat/completions` with `body` and extra headers.
pub fn chat(base: &str, body: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("test request")
}

/// A chat request scripted with `x-sturdy-call: call` and `x-sturdy-fault: script`.
pub fn scripted(base: &str, stream: bool, call: &str, script: &str) -> Request<Full<Bytes>> {
    let body = format!(r#"{{"model":"gpt-test","stream":{stream},"messages":[]}}"#);
    chat(base, &body, &[(CALL_HEADER, call), (FAULT_HEADER, script)])
}

pub fn get(base: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("{base}{path}"))
        .body(Full::new(Bytes::new()))
        .expect("test request")
}

/// What the client saw of one exchange.
#[derive(Debug)]
pub struct Exchange {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    /// Time from sending to the response head.
    pub head_after: Duration,
    /// Each data frame with the time it arrived (since sending).
    pub frames: Vec<(Duration, Bytes)>,
    /// The body error, if the body failed.
    pub body_error: Option<hyper::Error>,
}

impl Exchange {
    pub fn body(&self) -> Vec<u8> {
        self.frames.iter().flat_map(|(_, b)| b.to_vec()).collect()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body()).expect("JSON body")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends `request` and reads the whole body frame by frame.
pub async fn exchange(
    client: &HttpClient,
    request: Request<Full<Bytes>>,
) -> Result<Exchange, hyper_util::client::legacy::Error> {
    let sent = Instant::now();
    let response = within(client.request(request)).await?;
    let head_after = sent.elapsed();
    let status = response.status();
    let version = response.version();
    let (parts, mut body) = response.into_parts();
    let mut frames = Vec::new();
    let mut body_error = None;
    while let Some(frame) = within(body.frame()).await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    frames.push((sent.elapsed(), data));
                }
            }
            Err(e) => {
                body_error = Some(e);
                break;
            }
        }
    }
    Ok(Exchange {
        status,
        version,
        headers: parts.headers,
        head_after,
        frames,
        body_error,
    })
}

/// Like [`exchange`], failing the test on a request error.
pub async fn ok_exchange(client: &HttpClient, request: Request<Full<Bytes>>) -> Exchange {
    exchange(client, request).await.expect("request failed")
}

/// The dashboard a test expects (no rate limit or capacity refusals; every
/// 429 in `responded` counted in `too_many_requests`).
pub fn dashboard(received: u64, responded: &[(u16, u64)], faults: &[(&str, u64)]) -> Dashboard {
    Dashboard {
        received,
        responded: responded
            .iter()
            .map(|(status, n)| (status.to_string(), *n))
            .collect(),
        faults: faults.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect(),
        too_many_requests: responded
            .iter()
            .filter(|(status, _)| *status == 429)
            .map(|(_, n)| n)
            .sum(),
        rate_limited: 0,
        over_capacity: 0,
    }
}
