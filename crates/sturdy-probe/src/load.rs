//! The load: chat completions sent through a service at a fixed
//! concurrency, each call's end judged the way a user would (did it succeed,
//! and if not, could any client have recovered it?), with live counts for
//! the progress bar.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use sturdy::core::{MAX_ERROR_BODY, SseScan, is_event_stream};
use sturdy::{BoxError, Classifier, RetrySafe, Verdict, Workload};
use tokio::task::JoinSet;
use tower::{Service, ServiceExt};

/// Live counts, shared with the progress bar.
#[derive(Debug)]
pub struct Tally {
    /// Calls ended.
    pub done: AtomicU64,
    /// Calls that succeeded.
    pub succeeded: AtomicU64,
    /// Calls that failed.
    pub failed: AtomicU64,
    /// Failed calls no client could safely recover.
    pub unrecoverable: AtomicU64,
    /// Time to first token of streamed calls, in microseconds.
    pub ttft: Mutex<Histogram<u64>>,
}

impl Tally {
    /// All zero.
    pub fn new() -> Tally {
        Tally {
            done: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            unrecoverable: AtomicU64::new(0),
            // Constant, valid bounds: 1 µs to 1 h, 3 significant figures.
            ttft: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
            ),
        }
    }

    fn record_ttft(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.ttft
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .saturating_record(us);
    }

    /// The time-to-first-token histogram (empty when nothing streamed).
    pub fn ttft(&self) -> Histogram<u64> {
        self.ttft.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Default for Tally {
    fn default() -> Self {
        Tally::new()
    }
}

/// How one call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEnd {
    /// A success status and the whole body.
    Succeeded,
    /// A failure some client could have recovered (retries or budget spent,
    /// a timeout).
    Failed,
    /// A failure no client could safely recover: a stream cut after output
    /// began, a status the table never retries, or a server hint beyond
    /// what the call could wait.
    Unrecoverable,
}

/// What every request carries.
#[derive(Debug, Clone)]
pub struct RequestPlan {
    /// `{base}/chat/completions`.
    pub url: String,
    /// Model name.
    pub model: String,
    /// Workload extension.
    pub workload: Workload,
    /// The API key's header and value, if any.
    pub authorization: Option<(http::HeaderName, http::HeaderValue)>,
    /// The answer's length limit.
    pub max_tokens: u32,
    /// The field it goes in (`max_tokens`, `max_completion_tokens`).
    pub token_field: &'static str,
    /// Longest server hint the retry layer waits for.
    pub hint_cap: Duration,
    /// The workload's total limit.
    pub total: Duration,
}

impl RequestPlan {
    fn request(&self, i: u64, stream: bool) -> Result<http::Request<Full<Bytes>>, http::Error> {
        let mut body = serde_json::json!({
            "model": self.model,
            "messages": [{"role": "user", "content": format!("sturdy-probe call {i}: say ok")}],
            "stream": stream,
        });
        body[self.token_field] = self.max_tokens.into();
        let mut b =
            http::Request::post(&self.url).header(http::header::CONTENT_TYPE, "application/json");
        if let Some((name, value)) = &self.authorization {
            b = b.header(name, value.clone());
        }
        let mut req = b.body(Full::new(Bytes::from(body.to_string())))?;
        // Inference has no side effect but billing: repeat it after an
        // `Unknown` failure, and let the report count such retries.
        req.extensions_mut().insert(RetrySafe);
        req.extensions_mut().insert(self.workload);
        Ok(req)
    }
}

/// Runs `requests` calls through `service`, `concurrency` at a time.
pub async fn run<S, B>(
    service: S,
    plan: Arc<RequestPlan>,
    requests: u64,
    concurrency: usize,
    streams: impl Fn(u64) -> bool,
    tally: Arc<Tally>,
) -> Result<(), String>
where
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut tasks = JoinSet::new();
    let mut next = 0u64;
    loop {
        while tasks.len() < concurrency && next < requests {
            let stream = streams(next);
            let req = plan
                .request(next, stream)
                .map_err(|e| format!("building a request: {e}"))?;
            let (svc, plan, tally) = (service.clone(), plan.clone(), tally.clone());
            tasks.spawn(async move {
                let end = one_call(svc, req, &plan, stream, &tally).await;
                match end {
                    CallEnd::Succeeded => tally.succeeded.fetch_add(1, Ordering::Relaxed),
                    CallEnd::Failed => tally.failed.fetch_add(1, Ordering::Relaxed),
                    CallEnd::Unrecoverable => {
                        tally.unrecoverable.fetch_add(1, Ordering::Relaxed);
                        tally.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tally.done.fetch_add(1, Ordering::Relaxed);
            });
            next += 1;
        }
        match tasks.join_next().await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(format!("a call task failed: {e}")),
            None => return Ok(()),
        }
    }
}

async fn one_call<S, B>(
    service: S,
    req: http::Request<Full<Bytes>>,
    plan: &RequestPlan,
    stream: bool,
    tally: &Tally,
) -> CallEnd
where
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let started = Instant::now();
    let resp = match service.oneshot(req).await {
        Ok(resp) => resp,
        // Retries spent, the budget refused, a timeout: a client with more
        // patience or budget could have recovered.
        Err(_) => return CallEnd::Failed,
    };
    let (parts, body) = resp.into_parts();
    // The tables and the server's hints, as the stack judges an answer.
    let judged = Classifier::tables().judge_response(parts.status, &parts.headers, false);
    let mut read = Read {
        error_body: judged.awaits_body().then(Vec::new),
        events: is_event_stream(&parts.headers).then(SseScan::default),
    };
    let body_ok = read
        .read_to_end(body, || {
            if stream && judged.verdict == Verdict::Success {
                tally.record_ttft(started.elapsed());
            }
        })
        .await;
    // An error body may say more than its status: a 429 out of quota is
    // final, as the stack judged it.
    let judged = match &read.error_body {
        Some(kept) => judged.with_body(kept),
        None => judged,
    };
    let (verdict, hints) = (judged.verdict, judged.hints);
    let stream_failed = read.events.as_ref().and_then(SseScan::error).is_some();
    match verdict {
        Verdict::Success if body_ok && !stream_failed => CallEnd::Succeeded,
        // The head was handed over, then the body broke or the stream
        // carried an error: output had begun, and nothing may be retried
        // after that.
        Verdict::Success => CallEnd::Unrecoverable,
        Verdict::Fatal if !hints.should_retry.unwrap_or(false) => CallEnd::Unrecoverable,
        _ => {
            let asked_too_much = hints.forbids_retry()
                || hints
                    .delay()
                    .is_some_and(|d| d > plan.hint_cap || started.elapsed() + d > plan.total);
            if asked_too_much {
                CallEnd::Unrecoverable
            } else {
                CallEnd::Failed
            }
        }
    }
}

/// What reading a body keeps: the start of an error body the verdict may
/// depend on, and a scan of an event stream for error events.
struct Read {
    error_body: Option<Vec<u8>>,
    events: Option<SseScan>,
}

impl Read {
    /// Reads a body to its end, calling `on_first` at its first data
    /// frame. Whether it ended cleanly.
    async fn read_to_end<B>(&mut self, body: B, on_first: impl FnOnce()) -> bool
    where
        B: http_body::Body<Data = Bytes>,
    {
        let mut body = std::pin::pin!(body);
        let mut on_first = Some(on_first);
        loop {
            match body.frame().await {
                None => return true,
                Some(Err(_)) => return false,
                Some(Ok(frame)) => {
                    let Some(data) = frame.data_ref().filter(|d| !d.is_empty()) else {
                        continue;
                    };
                    if let Some(f) = on_first.take() {
                        f();
                    }
                    if let Some(kept) = &mut self.error_body {
                        let room = (MAX_ERROR_BODY as usize).saturating_sub(kept.len());
                        kept.extend_from_slice(&data[..room.min(data.len())]);
                    }
                    if let Some(scan) = &mut self.events {
                        scan.feed(data);
                    }
                }
            }
        }
    }
}
