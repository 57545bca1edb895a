//! One request in, one (possibly broken) response out: reads the request,
//! picks its fault (script first, then the mix), routes it to the normal
//! OpenAI answer (chat completions, models, files and batch jobs) and shapes
//! its delivery by the fault, counting on the dashboard and `/metrics` as it
//! goes.
//!
//! A chat completion whose fault does not replace the answer (no fault, a
//! `200`, or one that only shapes the delivery: `delay`, `stall`, `slow`,
//! `reset`, `streamerr`) passes the capacity mode (a slot, taken as the
//! request arrives, before its body is read) and then the rate limiter
//! (which needs the body to estimate its tokens) before it is answered
//! after the capacity mode's service time.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderName};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use rand::rngs::StdRng;

use crate::body::{PlannedBody, Step};
use crate::capacity::{Slot, Slots};
use crate::dashboard::{Received, Recorder};
use crate::fault::{DEFAULT_HOSTILE_HEADERS, Fault, FaultParams, Script};
use crate::jobs::{Jobs, Reply};
use crate::metrics::{self, Route};
use crate::mix::Mix;
use crate::openai::{self, ChatRequest};
use crate::rate_limit::{self, RateLimiter};
use crate::{CALL_HEADER, FAULT_HEADER};

/// Largest request body the server reads (a peer must not make it buffer
/// without bound); it bounds uploaded files too.
const MAX_REQUEST_BODY: usize = 4 * 1024 * 1024;

/// Calls whose request bodies are remembered; past that the record starts
/// over (it is for tests, which ask for a few).
const BODIES_REMEMBERED: usize = 1024;

/// The length and FNV-1a hash of a request body the server received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BodyDigest {
    /// Bytes received.
    pub len: usize,
    /// Their 64-bit FNV-1a hash.
    pub fnv64: u64,
}

impl BodyDigest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> BodyDigest {
        let fnv64 = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        BodyDigest {
            len: bytes.len(),
            fnv64,
        }
    }
}

/// How long a `reset` body waits between its last bytes and its failure.
/// Without the pause hyper would abort before flushing those bytes (HTTP/1),
/// and h2 would drop its queued DATA frames in favour of the RST_STREAM.
const RESET_FLUSH: Duration = Duration::from_millis(100);

/// Call IDs remembered per generation of [`AttemptCounts`].
pub(crate) const CALLS_REMEMBERED: usize = 65_536;

/// How many attempts of each call have arrived, in bounded memory: a server
/// that runs for days on unique call IDs must not grow with them. IDs live
/// in two generations; when the current one holds [`CALLS_REMEMBERED`] IDs
/// it becomes the previous one and the old previous is forgotten. A call
/// seen in either is counted on, so a call is forgotten only after at least
/// that many other calls have started since its last attempt, and at
/// most twice that many IDs are held.
#[derive(Debug)]
pub(crate) struct AttemptCounts {
    current: HashMap<String, usize>,
    previous: HashMap<String, usize>,
    limit: usize,
}

impl Default for AttemptCounts {
    fn default() -> AttemptCounts {
        AttemptCounts::with_limit(CALLS_REMEMBERED)
    }
}

impl AttemptCounts {
    pub(crate) fn with_limit(limit: usize) -> AttemptCounts {
        AttemptCounts {
            current: HashMap::new(),
            previous: HashMap::new(),
            limit: limit.max(1),
        }
    }

    /// The index of this attempt of call `id` (0 for its first).
    pub(crate) fn next(&mut self, id: &str) -> usize {
        if let Some(seen) = self.current.get_mut(id) {
            *seen += 1;
            return *seen - 1;
        }
        let attempt = self.previous.remove(id).unwrap_or(0);
        if self.current.len() >= self.limit {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(id.to_owned(), attempt + 1);
        attempt
    }

    /// Call IDs held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

/// Everything the connections of one server share.
pub(crate) struct Shared {
    pub(crate) recorder: Recorder,
    pub(crate) params: FaultParams,
    mix: Mix,
    windows: Vec<Window>,
    /// Chance that an idle keep-alive connection is closed as the next
    /// request arrives on it.
    pub(crate) idle_close: f64,
    born: tokio::time::Instant,
    rng: Mutex<StdRng>,
    /// Attempts seen so far, by call ID.
    attempts: Mutex<AttemptCounts>,
    /// What the requests that asked for it ([`RECORD_HEADER`]) carried, by
    /// call ID; at most [`BODIES_REMEMBERED`] calls.
    bodies: Mutex<HashMap<String, Vec<BodyDigest>>>,
    next_id: AtomicU64,
    /// Uploaded files and batch jobs; they outlive outages.
    jobs: Jobs,
    /// The rate-limit mode's buckets, when on.
    pub(crate) rate_limit: Option<RateLimiter>,
    /// The capacity mode's slots, when on.
    pub(crate) capacity: Option<Slots>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("params", &self.params)
            .field("mix", &self.mix)
            .finish_non_exhaustive()
    }
}

/// The service error that makes hyper drop the connection (HTTP/1) or reset
/// the stream (HTTP/2) without a response.
#[derive(Debug)]
pub(crate) struct DropConnection(&'static str);

impl fmt::Display for DropConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sturdy-faults: dropping connection: {}", self.0)
    }
}

impl std::error::Error for DropConnection {}

/// A span of the server's life during which every unscripted request gets
/// one fault.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    pub(crate) start: Duration,
    pub(crate) end: Duration,
    pub(crate) fault: Fault,
}

/// Where a request's fault came from; only mix faults get the default
/// `retry-after-ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Script,
    Mix,
}

/// The answer a healthy server would give.
enum Answer {
    Json {
        status: StatusCode,
        body: Bytes,
    },
    /// A `200` with a file's bytes (`application/octet-stream`).
    Octets(Bytes),
    Stream(Vec<Bytes>),
}

/// How the answer's body reaches the peer.
#[derive(Clone)]
enum Delivery {
    Whole,
    /// A pause after this many events of a stream (half a JSON body).
    Stall(Duration, usize),
    /// A pause between frames; a JSON body is cut into this many pieces.
    Slow(Duration, usize),
    /// A failure after this many events of a stream (half a JSON body).
    Reset(usize),
    /// This many events of a stream, then this error event, then the end.
    StreamError(usize, Bytes),
}

impl Shared {
    pub(crate) fn new(
        mix: Mix,
        rng: StdRng,
        params: FaultParams,
        windows: Vec<Window>,
        idle_close: f64,
        job_duration: Duration,
    ) -> Shared {
        let jobs = Jobs::new(job_duration, params.chunks);
        Shared {
            recorder: Recorder::default(),
            params,
            mix,
            windows,
            idle_close,
            born: tokio::time::Instant::now(),
            rng: Mutex::new(rng),
            attempts: Mutex::new(AttemptCounts::default()),
            bodies: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            jobs,
            rate_limit: None,
            capacity: None,
        }
    }

    /// Whether to close an idle connection on which a request is arriving
    /// (a seeded draw, counted on the dashboard when it says yes).
    pub(crate) fn close_idle_now(&self) -> bool {
        if self.idle_close <= 0.0 {
            return false;
        }
        let draw: f64 = rand::Rng::random(&mut *self.rng.lock().unwrap_or_else(|e| e.into_inner()));
        let close = draw < self.idle_close;
        if close {
            self.recorder.fault("idle_close", 1);
        }
        close
    }

    /// The fault for this request, or a message for a 400 when its script is
    /// garbage.
    fn choose(&self, headers: &HeaderMap) -> Result<Option<(Fault, Origin)>, String> {
        let Some(value) = headers.get(FAULT_HEADER) else {
            let age = self.born.elapsed();
            if let Some(w) = self.windows.iter().find(|w| w.start <= age && age < w.end) {
                return Ok(Some((w.fault.clone(), Origin::Mix)));
            }
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            return Ok(self
                .mix
                .sample(&mut *rng)
                .cloned()
                .map(|fault| (fault, Origin::Mix)));
        };
        let text = value
            .to_str()
            .map_err(|_| format!("{FAULT_HEADER} is not visible ASCII"))?;
        let script: Script = text
            .parse()
            .map_err(|e| format!("bad {FAULT_HEADER} {text:?}: {e}"))?;
        let attempt = match headers.get(CALL_HEADER) {
            None => 0,
            Some(id) => {
                let id = id
                    .to_str()
                    .map_err(|_| format!("{CALL_HEADER} is not visible ASCII"))?;
                self.attempts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .next(id)
            }
        };
        Ok(script
            .for_attempt(attempt)
            .cloned()
            .map(|fault| (fault, Origin::Script)))
    }

    /// The answer to the request with head `head` and body `body`; files and
    /// batch jobs are created here, so this is where a request's side effects
    /// happen.
    fn answer(&self, head: &Parts, body: &[u8], chunks: usize) -> Answer {
        let method = &head.method;
        let path = head.uri.path();
        let segments: Vec<&str> = path.split('/').collect();
        let jobs = &self.jobs;
        let outcome = match (method, segments.as_slice()) {
            (&Method::POST, ["", "v1", "files"]) => {
                let content_type = head.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
                jobs.upload(content_type, body)
            }
            (&Method::GET, ["", "v1", "files", id]) => jobs.file(id),
            (&Method::GET, ["", "v1", "files", id, "content"]) => jobs.content(id),
            (&Method::POST, ["", "v1", "batches"]) => {
                let key = head
                    .headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok());
                jobs.create(body, key)
            }
            (&Method::GET, ["", "v1", "batches"]) => jobs.list(head.uri.query()),
            (&Method::GET, ["", "v1", "batches", id]) => jobs.get(id),
            (&Method::POST, ["", "v1", "batches", id, "cancel"]) => jobs.cancel(id),
            _ => return self.answer_chat(method, path, body, chunks),
        };
        match outcome {
            Ok(Reply::Json(body)) => Answer::Json {
                status: StatusCode::OK,
                body,
            },
            Ok(Reply::Octets(body)) => Answer::Octets(body),
            Err(rejection) => error_answer(rejection.status, &rejection.message),
        }
    }

    /// The chat completion and model routes, and the 404 for the rest.
    fn answer_chat(&self, method: &Method, path: &str, body: &[u8], chunks: usize) -> Answer {
        match (method, path) {
            (&Method::POST, "/v1/chat/completions") => match ChatRequest::parse(body) {
                Ok(request) => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    if request.stream {
                        Answer::Stream(openai::chat_stream(id, &request.model, chunks))
                    } else {
                        Answer::Json {
                            status: StatusCode::OK,
                            body: openai::chat_completion(id, &request.model, chunks),
                        }
                    }
                }
                Err(message) => error_answer(StatusCode::BAD_REQUEST, &message),
            },
            (&Method::GET, "/v1/models") => Answer::Json {
                status: StatusCode::OK,
                body: openai::models(),
            },
            _ => error_answer(
                StatusCode::NOT_FOUND,
                &format!("no route for {method} {path}"),
            ),
        }
    }

    /// Remembers the digest of `body`, when its request asked for it.
    fn record_body(&self, headers: &HeaderMap, body: &[u8]) {
        if headers.get(crate::RECORD_HEADER).is_none() {
            return;
        }
        let Some(id) = headers.get(CALL_HEADER).and_then(|v| v.to_str().ok()) else {
            return;
        };
        let mut bodies = self.bodies.lock().unwrap_or_else(|e| e.into_inner());
        if bodies.len() >= BODIES_REMEMBERED && !bodies.contains_key(id) {
            bodies.clear();
        }
        bodies
            .entry(id.to_owned())
            .or_default()
            .push(BodyDigest::of(body));
    }

    /// The digests of the bodies call `id` sent, in order.
    pub(crate) fn bodies(&self, id: &str) -> Vec<BodyDigest> {
        self.bodies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// Counts the response head (on the dashboard, and the request it
    /// answers on `/metrics`) and hands it over.
    fn respond(
        &self,
        received: Received<'_>,
        response: Response<PlannedBody>,
    ) -> Response<PlannedBody> {
        let status = response.status().as_u16();
        self.recorder.responded(status);
        received.answered(status);
        response
    }
}

fn error_answer(status: StatusCode, message: &str) -> Answer {
    Answer::Json {
        status,
        body: openai::error(status, message),
    }
}

/// Serves one request.
pub(crate) async fn handle(
    shared: &Shared,
    request: Request<Incoming>,
) -> Result<Response<PlannedBody>, DropConnection> {
    let path = request.uri().path();
    if path == "/dashboard" && request.method() == Method::GET {
        let body = serde_json::to_vec(&shared.recorder.snapshot()).unwrap_or_default();
        return Ok(shape(
            Answer::Json {
                status: StatusCode::OK,
                body: body.into(),
            },
            Delivery::Whole,
        ));
    }
    if path == "/metrics" && request.method() == Method::GET {
        let body = Bytes::from(metrics::render(&shared.recorder.requests()));
        let length = body.len() as u64;
        let body = PlannedBody::new(vec![Step::Data(body)], Some(length));
        return Ok(with_head(StatusCode::OK, metrics::CONTENT_TYPE, body));
    }
    // The capacity-mode slot, held by the response body once there is one
    // (and dropped with this future otherwise).
    let mut slot = None;
    let response = serve_counted(shared, request, &mut slot).await?;
    Ok(match slot {
        Some(slot) => response.map(|body| body.holding(slot)),
        None => response,
    })
}

/// Whether a fault replaces the normal answer (rather than shaping its
/// delivery): such a request bypasses the capacity mode and the rate
/// limiter.
fn replaces_answer(fault: &Fault) -> bool {
    match fault {
        Fault::Status { code, .. } => *code != 200,
        Fault::Close | Fault::Hostile { .. } => true,
        Fault::Delay { .. }
        | Fault::Stall { .. }
        | Fault::Slow { .. }
        | Fault::Reset { .. }
        | Fault::StreamError { .. } => false,
    }
}

/// Serves one counted request (not the dashboard nor `/metrics`), putting
/// the capacity-mode slot it takes, if any, in `slot`.
async fn serve_counted(
    shared: &Shared,
    request: Request<Incoming>,
    slot: &mut Option<Slot>,
) -> Result<Response<PlannedBody>, DropConnection> {
    // Counted on `/metrics` when answered (`respond`), or as unanswered when
    // dropped any other way.
    let received = shared.recorder.received(Route::of(request.uri().path()));

    let (parts, body) = request.into_parts();
    let (fault, origin) = match shared.choose(&parts.headers) {
        Ok(Some((fault, origin))) => (fault, Some(origin)),
        Ok(None) => (Fault::status(200), None),
        Err(message) => {
            let answer = error_answer(StatusCode::BAD_REQUEST, &message);
            return Ok(shared.respond(received, shape(answer, Delivery::Whole)));
        }
    };
    // The rate-limit and capacity modes stand in front of chat completions
    // that are to get a normal answer (perhaps delivered badly); a fault
    // that replaces the answer goes first and leaves both alone.
    let limited = parts.method == Method::POST
        && parts.uri.path() == "/v1/chat/completions"
        && !replaces_answer(&fault);
    if let (true, Some(slots)) = (limited, &shared.capacity) {
        match slots.take() {
            Some(taken) => *slot = Some(taken),
            None => {
                // Refused at once; the body is read and dropped beside the
                // answer, as for an early fault.
                tokio::spawn(Limited::new(body, MAX_REQUEST_BODY).collect());
                shared.recorder.over_capacity();
                let (status, body) = slots.refusal();
                let answer = Answer::Json { status, body };
                return Ok(shared.respond(received, shape(answer, Delivery::Whole)));
            }
        }
    }
    // (`200` always reads the body: its answer is made from it.)
    let body = if matches!(fault, Fault::Status { early: true, code, .. } if code != 200) {
        // Read and dropped beside the answer; the task ends with the body
        // (or its connection).
        tokio::spawn(Limited::new(body, MAX_REQUEST_BODY).collect());
        Bytes::new()
    } else {
        match Limited::new(body, MAX_REQUEST_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<LengthLimitError>() => {
                let answer = error_answer(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("request body exceeds {MAX_REQUEST_BODY} bytes"),
                );
                return Ok(shared.respond(received, shape(answer, Delivery::Whole)));
            }
            Err(_) => return Err(DropConnection("request body failed")),
        }
    };

    shared.record_body(&parts.headers, &body);
    let mut rate_headers = None;
    if let (true, Some(limiter)) = (limited, &shared.rate_limit) {
        let cost = if limiter.counts_tokens() {
            rate_limit::token_cost(&body)
        } else {
            0
        };
        let verdict = limiter.check(cost);
        if let Some(refusal) = verdict.refused {
            shared.recorder.rate_limited();
            let answer = Answer::Json {
                status: StatusCode::TOO_MANY_REQUESTS,
                body: refusal,
            };
            let mut response = shape(answer, Delivery::Whole);
            response.headers_mut().extend(verdict.headers);
            return Ok(shared.respond(received, response));
        }
        rate_headers = Some(verdict.headers);
    }
    if let Some(kind) = fault.dashboard_kind() {
        shared.recorder.fault(kind, 1);
    }
    if let (Some(_), Some(slots)) = (&slot, &shared.capacity) {
        // The capacity mode's service time: what makes a slot worth having.
        tokio::time::sleep(slots.service_time).await;
    }

    let params = &shared.params;
    let chunks = fault.chunks().unwrap_or(params.chunks);
    let normal = || shared.answer(&parts, &body, chunks);
    let mut response = match fault {
        Fault::Status {
            code,
            retry_after,
            mut retry_after_ms,
            should_retry,
            quota,
            ..
        } => {
            let answer = match StatusCode::from_u16(code) {
                Ok(StatusCode::OK) => normal(),
                Ok(status) if quota => Answer::Json {
                    status,
                    body: openai::quota_error(),
                },
                Ok(status) => error_answer(status, &format!("sturdy-faults injected {status}")),
                Err(_) => error_answer(StatusCode::INTERNAL_SERVER_ERROR, "bad status"),
            };
            let mix_default_applies = origin == Some(Origin::Mix)
                && matches!(code, 429 | 503)
                && retry_after.is_none()
                && retry_after_ms.is_none();
            if mix_default_applies {
                retry_after_ms = params.retry_after_ms;
            }
            let mut response = shape(answer, Delivery::Whole);
            let headers = response.headers_mut();
            if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
                headers.insert(HeaderName::from_static("retry-after"), value);
            }
            if let Some(ms) = retry_after_ms {
                headers.insert(HeaderName::from_static("retry-after-ms"), ms.into());
            }
            if let Some(flag) = should_retry {
                let value = HeaderValue::from_static(if flag { "true" } else { "false" });
                headers.insert(HeaderName::from_static("x-should-retry"), value);
            }
            response
        }
        Fault::Delay { ms, .. } => {
            tokio::time::sleep(Duration::from_millis(ms.unwrap_or(params.delay_ms))).await;
            shape(normal(), Delivery::Whole)
        }
        Fault::Stall { ms, at, .. } => {
            let pause = Duration::from_millis(ms.unwrap_or(params.stall_ms));
            shape(normal(), Delivery::Stall(pause, at.unwrap_or(1)))
        }
        Fault::Slow { ms, .. } => {
            let pause = Duration::from_millis(ms.unwrap_or(params.slow_ms));
            shape(normal(), Delivery::Slow(pause, chunks))
        }
        Fault::Reset { at } => shape(normal(), Delivery::Reset(at.unwrap_or(1))),
        Fault::StreamError { at, quota, .. } => {
            let event = openai::error_event(quota);
            shape(normal(), Delivery::StreamError(at.unwrap_or(1), event))
        }
        Fault::Close => {
            // The server did the work (a job made, a file stored); only the
            // answer is lost.
            drop(normal());
            return Err(DropConnection("injected close"));
        }
        Fault::Hostile { headers } => hostile(headers.unwrap_or(DEFAULT_HOSTILE_HEADERS)),
    };
    if let Some(headers) = rate_headers {
        response.headers_mut().extend(headers);
    }
    Ok(shared.respond(received, response))
}

/// The `hostile` answer: a 503 whose every hint is ambiguous or garbage,
/// behind `junk` headers.
fn hostile(junk: usize) -> Response<PlannedBody> {
    let status = StatusCode::SERVICE_UNAVAILABLE;
    let mut response = shape(
        error_answer(status, "sturdy-faults injected a hostile head"),
        Delivery::Whole,
    );
    let headers = response.headers_mut();
    let retry_after = HeaderName::from_static("retry-after");
    headers.append(retry_after.clone(), HeaderValue::from_static("1"));
    headers.append(retry_after, HeaderValue::from_static("3600"));
    // Bytes above 0x7f are legal in a field value (obs-text), but not text.
    if let Ok(v) = HeaderValue::from_bytes(b"\xff\xfe25") {
        headers.insert(HeaderName::from_static("retry-after-ms"), v);
    }
    if let Ok(v) = HeaderValue::from_str(&"t".repeat(8 * 1024)) {
        headers.insert(HeaderName::from_static("x-should-retry"), v);
    }
    headers.reserve(junk);
    for i in 0..junk {
        if let Ok(name) = HeaderName::from_bytes(format!("x-sturdy-junk-{i}").as_bytes()) {
            headers.append(name, HeaderValue::from_static("junk"));
        }
    }
    response
}

/// Splits `body` into `pieces` nearly equal non-empty parts.
fn split_bytes(body: &Bytes, pieces: usize) -> Vec<Bytes> {
    let size = body.len().div_ceil(pieces.max(1)).max(1);
    let mut parts = Vec::new();
    let mut start = 0;
    while start < body.len() {
        let end = (start + size).min(body.len());
        parts.push(body.slice(start..end));
        start = end;
    }
    parts
}

/// Interleaves `pause` between the frames.
fn with_pauses(frames: Vec<Bytes>, pause: Duration) -> Vec<Step> {
    let mut steps = Vec::with_capacity(frames.len() * 2);
    for (i, frame) in frames.into_iter().enumerate() {
        if i > 0 {
            steps.push(Step::Pause(pause));
        }
        steps.push(Step::Data(frame));
    }
    steps
}

/// Builds the response for `answer` delivered as `delivery`.
fn shape(answer: Answer, delivery: Delivery) -> Response<PlannedBody> {
    let (status, content_type, body) = match answer {
        Answer::Json { status, body } => (status, "application/json", body),
        Answer::Octets(body) => (StatusCode::OK, "application/octet-stream", body),
        Answer::Stream(events) => return shape_stream(events, delivery),
    };
    let length = body.len() as u64;
    let half = (body.len() / 2).max(1).min(body.len());
    let steps = match delivery {
        Delivery::Whole => vec![Step::Data(body)],
        Delivery::Stall(pause, _) => with_pauses(split_bytes(&body, 2), pause),
        Delivery::Slow(pause, pieces) => with_pauses(split_bytes(&body, pieces), pause),
        Delivery::Reset(_) => vec![
            Step::Data(body.slice(..half)),
            Step::Pause(RESET_FLUSH),
            Step::Fail,
        ],
        // A whole answer cannot fail inside: the error is the answer.
        Delivery::StreamError(..) => {
            let error = openai::error(StatusCode::INTERNAL_SERVER_ERROR, "stream failed");
            return shape(
                Answer::Json {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    body: error,
                },
                Delivery::Whole,
            );
        }
    };
    let body = if matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED) {
        PlannedBody::empty()
    } else {
        PlannedBody::new(steps, Some(length))
    };
    with_head(status, content_type, body)
}

/// Builds the response for a stream of SSE `events` delivered as `delivery`.
fn shape_stream(events: Vec<Bytes>, delivery: Delivery) -> Response<PlannedBody> {
    let steps = match delivery {
        Delivery::Whole => events.into_iter().map(Step::Data).collect(),
        Delivery::Stall(pause, at) => {
            let mut steps = Vec::with_capacity(events.len() + 1);
            if at == 0 {
                // Head out, nothing else: a stall before the first
                // token.
                steps.push(Step::Pause(pause));
            }
            for (i, event) in events.into_iter().enumerate() {
                if at > 0 && i == at {
                    steps.push(Step::Pause(pause));
                }
                steps.push(Step::Data(event));
            }
            steps
        }
        Delivery::Slow(pause, _) => with_pauses(events, pause),
        Delivery::Reset(at) => events
            .into_iter()
            .take(at)
            .map(Step::Data)
            .chain([Step::Pause(RESET_FLUSH), Step::Fail])
            .collect(),
        Delivery::StreamError(at, error) => events
            .into_iter()
            .take(at)
            .chain([error])
            .map(Step::Data)
            .collect(),
    };
    with_head(
        StatusCode::OK,
        "text/event-stream",
        PlannedBody::new(steps, None),
    )
}

/// The response with `status`, `content_type` and `body`, and a
/// `content-length` when the body's length is known (else `cache-control:
/// no-cache`, as for a stream).
fn with_head(
    status: StatusCode,
    content_type: &'static str,
    body: PlannedBody,
) -> Response<PlannedBody> {
    let length = http_body::Body::size_hint(&body).exact();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    match length {
        Some(length) if !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED) => {
            headers.insert(CONTENT_LENGTH, length.into());
        }
        Some(_) => {}
        None => {
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_the_body_in_order() {
        let body = Bytes::from_static(b"0123456789");
        let parts = split_bytes(&body, 3);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.concat(), body.to_vec());
        assert_eq!(split_bytes(&Bytes::from_static(b"ab"), 5).len(), 2);
        assert!(split_bytes(&Bytes::new(), 5).is_empty());
    }

    #[test]
    fn attempt_counts_stay_bounded_and_keep_recent_calls() {
        let mut counts = AttemptCounts::with_limit(4);
        assert_eq!(counts.next("a"), 0);
        assert_eq!(counts.next("a"), 1);
        // Many other calls: `a` is kept while it stays within two
        // generations, and counting goes on from where it was.
        for i in 0..3 {
            assert_eq!(counts.next(&format!("x{i}")), 0);
        }
        assert_eq!(counts.next("b"), 0); // current was full: it is now previous
        assert_eq!(counts.next("a"), 2); // found in previous, moved back
        for i in 0..10_000 {
            counts.next(&format!("y{i}"));
            assert!(counts.len() <= 8, "{}", counts.len());
        }
        // Forgotten after that many newer calls: a new call with that ID.
        assert_eq!(counts.next("a"), 0);
        assert_eq!(counts.next("a"), 1);
    }
}
