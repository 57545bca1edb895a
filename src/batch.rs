//! Long-running jobs: submit an OpenAI-compatible batch once, then wait
//! through outages, restarts and bursts of errors until it ends.
//!
//! The guide's `Batch` workload is a 60-second submission whose results come
//! hours later. [`BatchClient`] covers those hours, over any `Service` you
//! already have (the [`Stack`](crate::Stack) over `sturdy::client()`, so
//! every request also gets the stack's timeouts, retries and metrics):
//!
//! - **One job per submission.** [`submit`](BatchClient::submit) tags the
//!   job with a submission key in its metadata. A submission is never sent
//!   again blindly: after a failure that may have reached the server (a
//!   connection cut after the request was sent, a timeout, an error answer),
//!   the client lists the server's recent jobs and takes the one carrying
//!   its key; only when a listing succeeded and shows none is the same
//!   submission sent again. A failure that never left the client is sent
//!   again at once.
//! - **Waits through anything transient, until the job's own deadline.**
//!   [`wait`](BatchClient::wait) polls `GET /batches/{id}` until a terminal
//!   status, at an interval that grows (×1.5 from 1 s to 60 s by default)
//!   with jitter (each wait is drawn between half and all of the interval,
//!   so a fleet of waiters does not poll in lockstep) and honours
//!   `retry-after`. Refused connections while the server restarts, 5xx,
//!   429, resets and timeouts are waited through, for as long as the job's
//!   `expires_at` (its completion window, 24 h by default) allows — never a
//!   fixed number of tries. An answer that no wait can change (401, 403,
//!   404) ends the wait with [`BatchError::Refused`].
//! - **Resumable.** The job id is all the state: `wait(id)` works for a job
//!   another process submitted, or this one before a restart. Dropping the
//!   waiting future stops the polls and cancels nothing on the server;
//!   [`cancel`](BatchClient::cancel) does.
//! - **Progress.** [`wait_with`](BatchClient::wait_with) calls back on every
//!   change of status or request counts; the result carries what the wait
//!   went through ([`WaitStats`]).
//!
//! ```no_run
//! use sturdy::batch::{BatchClient, NewBatch};
//! use tower::Layer;
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let stack = sturdy::Stack::builder().openai_presets().build()?;
//! let service = stack.layer(sturdy::client().build()?);
//! let batches = BatchClient::new(service, "https://api.openai.com/v1").api_key("sk-...");
//! let file = batches.upload("requests.jsonl", std::fs::read("requests.jsonl")?).await?;
//! let job = batches.submit(NewBatch::new(&file.id, "/v1/chat/completions")).await?;
//! let done = batches
//!     .wait_with(&job.id, |b| println!("{:?} {:?}", b.status, b.request_counts))
//!     .await?;
//! println!("output: {:?}, {} failures waited through", done.batch.output_file_id, done.stats.failures_waited_through);
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sturdy_core::{
    BoxError, FailureKind, NotRetrySafe, Reach, ServerHints, Verdict, Workload, classify_error,
    classify_status,
};
use tokio::time::Instant;
use tower_service::Service;

/// The metadata key a submission's key travels under.
pub const SUBMISSION_KEY: &str = "sturdy_submission";

/// The largest answer body read (a job list of 100 jobs fits many times).
const MAX_ANSWER: usize = 4 << 20;

/// A job's status, as the server says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BatchStatus {
    /// The input is being checked.
    Validating,
    /// Requests are being run.
    InProgress,
    /// Results are being written.
    Finalizing,
    /// Done: the output file is ready.
    Completed,
    /// The input failed validation, or the job failed.
    Failed,
    /// The completion window passed first.
    Expired,
    /// A cancel was asked for.
    Cancelling,
    /// Cancelled.
    Cancelled,
    /// A status this client does not know.
    #[serde(other)]
    Unknown,
}

impl BatchStatus {
    /// Whether the job has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            BatchStatus::Completed
                | BatchStatus::Failed
                | BatchStatus::Expired
                | BatchStatus::Cancelled
        )
    }
}

/// How many of a job's requests are done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// All of them.
    #[serde(default)]
    pub total: u64,
    /// Those that succeeded.
    #[serde(default)]
    pub completed: u64,
    /// Those that failed.
    #[serde(default)]
    pub failed: u64,
}

/// A batch job, as the server describes it (the fields a waiter needs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Its id.
    pub id: String,
    /// Its status.
    pub status: BatchStatus,
    /// Progress.
    #[serde(default)]
    pub request_counts: Option<RequestCounts>,
    /// The output file, once completed.
    #[serde(default)]
    pub output_file_id: Option<String>,
    /// The file of failed requests, if any.
    #[serde(default)]
    pub error_file_id: Option<String>,
    /// When it was created (Unix seconds).
    #[serde(default)]
    pub created_at: Option<u64>,
    /// When its completion window ends (Unix seconds).
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// Its metadata.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Why it failed, as the server put it.
    #[serde(default)]
    pub errors: Option<serde_json::Value>,
}

/// An uploaded file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileObject {
    /// Its id.
    pub id: String,
    /// Its size.
    #[serde(default)]
    pub bytes: u64,
    /// Its name.
    #[serde(default)]
    pub filename: String,
}

/// A batch to submit.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct NewBatch {
    /// The uploaded input file (JSONL, purpose `batch`).
    pub input_file_id: String,
    /// The endpoint every request goes to, e.g. `/v1/chat/completions`.
    pub endpoint: String,
    /// How long the server may take: `24h`.
    pub completion_window: String,
    /// The job's metadata; the submission key is added to it.
    pub metadata: BTreeMap<String, String>,
    /// A key the server deduplicates submissions on, sent as
    /// `Idempotency-Key`: set it only for a server that does (the same key
    /// gets the same job back), and the submission is then sent again after
    /// a failure of unknown reach instead of being looked up first.
    #[serde(skip)]
    pub idempotency_key: Option<String>,
}

impl NewBatch {
    /// A batch over `input_file_id` for `endpoint`, with a 24 h window.
    pub fn new(input_file_id: &str, endpoint: &str) -> NewBatch {
        NewBatch {
            input_file_id: input_file_id.to_owned(),
            endpoint: endpoint.to_owned(),
            completion_window: "24h".to_owned(),
            metadata: BTreeMap::new(),
            idempotency_key: None,
        }
    }
}

/// What a wait went through.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WaitStats {
    /// Polls sent (each through the service, with its own retries).
    pub polls: u32,
    /// Polls that failed transiently and were waited through.
    pub failures_waited_through: u32,
    /// How long the wait took.
    pub elapsed: Duration,
    /// How long the job was seen in each status (between polls).
    pub time_in: BTreeMap<BatchStatus, Duration>,
}

/// A job that ended, and what waiting for it went through.
#[derive(Debug, Clone, PartialEq)]
pub struct Waited {
    /// The job, in its terminal status.
    pub batch: Batch,
    /// The wait.
    pub stats: WaitStats,
}

/// Why a batch operation ended without its result.
#[derive(Debug)]
#[non_exhaustive]
pub enum BatchError {
    /// The server answered what no wait can change (400, 401, 403, 404,
    /// ...): its status and message.
    Refused {
        /// The status.
        status: StatusCode,
        /// The server's message (its error object's `message`, or the body's
        /// start).
        message: String,
    },
    /// The deadline passed while failures were being waited through.
    DeadlinePassed {
        /// The last failure.
        last: BoxError,
        /// The job as last seen, if ever.
        batch: Option<Box<Batch>>,
    },
    /// The service failed in a way no wait can change (an invalid request).
    Service(BoxError),
    /// An answer that is not what the API describes.
    Malformed(String),
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Refused { status, message } => {
                write!(f, "the server refused: {status}: {message}")
            }
            BatchError::DeadlinePassed { last, .. } => {
                write!(f, "the deadline passed while waiting; last failure: {last}")
            }
            BatchError::Service(e) => write!(f, "the request failed: {e}"),
            BatchError::Malformed(m) => write!(f, "an answer the API does not describe: {m}"),
        }
    }
}

impl std::error::Error for BatchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BatchError::DeadlinePassed { last, .. } => Some(&**last),
            BatchError::Service(e) => Some(&**e),
            _ => None,
        }
    }
}

/// How often to poll.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollSchedule {
    /// The first interval.
    pub first: Duration,
    /// The longest interval.
    pub cap: Duration,
    /// How much each interval grows.
    pub growth: f64,
}

impl Default for PollSchedule {
    fn default() -> Self {
        PollSchedule {
            first: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            growth: 1.5,
        }
    }
}

impl PollSchedule {
    /// The next interval after `current`.
    fn next(&self, current: Duration) -> Duration {
        // The growth is clamped to 1..=10 and `current` to the cap (at most
        // a day): the product is finite.
        current.mul_f64(self.growth).min(self.cap)
    }
}

/// A jittered wait: between half and all of `interval`.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(rand::rng().random_range(0.5..=1.0))
}

/// Submits, waits for and cancels OpenAI-compatible batch jobs through a
/// service; see the [module docs](self).
#[derive(Clone)]
pub struct BatchClient<S> {
    svc: S,
    base: String,
    key: Option<(HeaderName, HeaderValue)>,
    schedule: PollSchedule,
    wait_limit: Option<Duration>,
    submit_limit: Duration,
}

impl<S> fmt::Debug for BatchClient<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is never shown.
        f.debug_struct("BatchClient")
            .field("base", &self.base)
            .field("key", &self.key.as_ref().map(|(name, _)| name))
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

/// One answer: status, headers' hints, body.
struct Answer {
    status: StatusCode,
    hint: Option<Duration>,
    body: Bytes,
}

/// The outcome of one request.
enum Outcome {
    Answered(Answer),
    Failed(BoxError),
}

impl<S> BatchClient<S> {
    /// A client for the API at `base` (`https://api.openai.com/v1`, or any
    /// OpenAI-compatible base URL), sending through `svc`.
    pub fn new(svc: S, base: &str) -> BatchClient<S> {
        BatchClient {
            svc,
            base: base.trim_end_matches('/').to_owned(),
            key: None,
            schedule: PollSchedule::default(),
            wait_limit: None,
            submit_limit: Duration::from_secs(10 * 60),
        }
    }

    /// Sends `Authorization: Bearer KEY` (a value a header cannot carry is
    /// not sent).
    pub fn api_key(self, key: &str) -> Self {
        self.key_header(http::header::AUTHORIZATION, &format!("Bearer {key}"))
    }

    /// Sends the key as `name: value` (`api-key` for Azure OpenAI). The
    /// value is marked sensitive and never shown.
    pub fn key_header(mut self, name: HeaderName, value: &str) -> Self {
        self.key = HeaderValue::from_str(value).ok().map(|mut v| {
            v.set_sensitive(true);
            (name, v)
        });
        self
    }

    /// Polls on this schedule (default: from 1 s, ×1.5, up to 60 s).
    /// Clamped, never refused: the first interval to at least 1 ms, the cap
    /// to between the first interval and 24 h, the growth to 1–10 (a growth
    /// that is not a number is 1).
    pub fn poll_schedule(mut self, schedule: PollSchedule) -> Self {
        let day = Duration::from_secs(24 * 3600);
        let first = schedule.first.clamp(Duration::from_millis(1), day);
        self.schedule = PollSchedule {
            first,
            cap: schedule.cap.clamp(first, day),
            growth: if schedule.growth.is_nan() {
                1.0
            } else {
                schedule.growth.clamp(1.0, 10.0)
            },
        };
        self
    }

    /// Waits at most this long, whatever the job's own deadline (default:
    /// until the job's `expires_at`, or 24 h when it says none).
    pub fn wait_limit(mut self, limit: Duration) -> Self {
        self.wait_limit = Some(limit);
        self
    }

    /// Tries to get a submission through for at most this long (default 10
    /// min).
    pub fn submit_limit(mut self, limit: Duration) -> Self {
        self.submit_limit = limit;
        self
    }
}

impl<S, B> BatchClient<S>
where
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<B>> + Clone,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    fn request(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        json: bool,
    ) -> Result<http::Request<Full<Bytes>>, BatchError> {
        let uri = format!("{}{path}", self.base);
        let uri = match uri.parse::<http::Uri>() {
            Ok(uri) if uri.scheme().is_some() && uri.authority().is_some() => uri,
            _ => {
                return Err(BatchError::Service(
                    format!("the base URL `{}` does not make a URL", self.base).into(),
                ));
            }
        };
        let mut req = http::Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        if json {
            req.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        if let Some((name, value)) = &self.key {
            req.headers_mut().insert(name.clone(), value.clone());
        }
        req.extensions_mut().insert(Workload::Batch);
        Ok(req)
    }

    async fn send(&self, req: http::Request<Full<Bytes>>) -> Outcome {
        let mut svc = self.svc.clone();
        let resp = match std::future::poll_fn(|cx| svc.poll_ready(cx)).await {
            Ok(()) => svc.call(req).await,
            Err(e) => Err(e),
        };
        let resp = match resp {
            Ok(resp) => resp,
            Err(e) => return Outcome::Failed(e.into()),
        };
        let (parts, body) = resp.into_parts();
        let hint = ServerHints::from_headers(&parts.headers, SystemTime::now()).delay();
        match Limited::new(body, MAX_ANSWER).collect().await {
            Ok(collected) => Outcome::Answered(Answer {
                status: parts.status,
                hint,
                body: collected.to_bytes(),
            }),
            Err(e) => Outcome::Failed(e),
        }
    }

    /// Uploads `content` as a file for batches (`purpose=batch`). Sent once
    /// through the service (whose own retries apply); a file is not a job,
    /// but an upload that may have reached the server is not repeated.
    pub async fn upload(
        &self,
        filename: &str,
        content: impl Into<Bytes>,
    ) -> Result<FileObject, BatchError> {
        let boundary = format!("sturdy-{:016x}", rand::rng().random::<u64>());
        let mut body = Vec::new();
        let name = filename.replace(['"', '\r', '\n'], "_");
        body.extend_from_slice(
            format!(
                "--{boundary}\r\ncontent-disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"{name}\"\r\ncontent-type: application/jsonl\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&content.into());
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let mut req = self.request(Method::POST, "/files", Bytes::from(body), false)?;
        if let Ok(v) = HeaderValue::from_str(&format!("multipart/form-data; boundary={boundary}")) {
            req.headers_mut().insert(http::header::CONTENT_TYPE, v);
        }
        req.extensions_mut().insert(NotRetrySafe);
        match self.send(req).await {
            Outcome::Answered(a) if a.status.is_success() => parse(&a.body),
            Outcome::Answered(a) => Err(refused(&a)),
            Outcome::Failed(e) => Err(BatchError::Service(e)),
        }
    }

    /// Submits `batch` once: see the [module docs](self) for how a
    /// submission that may have reached the server is never sent twice.
    pub async fn submit(&self, mut batch: NewBatch) -> Result<Batch, BatchError> {
        let key = format!("{:032x}", rand::rng().random::<u128>());
        batch
            .metadata
            .insert(SUBMISSION_KEY.to_owned(), key.clone());
        let body = serde_json::to_vec(&batch).map_err(|e| BatchError::Malformed(e.to_string()))?;
        let body = Bytes::from(body);
        let started = Instant::now();
        let deadline = started + self.submit_limit;
        let since = unix_now().saturating_sub(60);
        let mut backoff = self.schedule.first;
        let idempotency = batch
            .idempotency_key
            .as_deref()
            .and_then(|k| HeaderValue::from_str(k).ok());
        // Whether the last attempt may have created the job.
        let mut maybe_created = false;
        loop {
            let last = if maybe_created {
                match self.find(&key, since).await {
                    Ok(Some(found)) => return Ok(found),
                    // Listed, and not there: the submission did not take.
                    Ok(None) => {
                        maybe_created = false;
                        continue;
                    }
                    Err(Transient(e)) => e,
                    Err(Final(e)) => return Err(e),
                }
            } else {
                let mut req = self.request(Method::POST, "/batches", body.clone(), true)?;
                match &idempotency {
                    // The server deduplicates: the service's retries, and
                    // this loop, may send it again.
                    Some(key) => {
                        req.headers_mut().insert("idempotency-key", key.clone());
                    }
                    // Not repeated by the service after an unknown reach:
                    // this loop decides, after looking.
                    None => {
                        req.extensions_mut().insert(NotRetrySafe);
                    }
                }
                match self.send(req).await {
                    Outcome::Answered(a) if a.status.is_success() => return parse(&a.body),
                    Outcome::Answered(a) if is_transient(a.status) => {
                        // An error answer may still follow a created job.
                        maybe_created = idempotency.is_none();
                        backoff = a.hint.map_or(backoff, |h| h.max(backoff));
                        format!("{} from the server", a.status).into()
                    }
                    Outcome::Answered(a) => return Err(refused(&a)),
                    Outcome::Failed(e) => {
                        let kind = classify_error(&*e);
                        if kind == FailureKind::InvalidRequest {
                            return Err(BatchError::Service(e));
                        }
                        maybe_created = idempotency.is_none() && kind.reach() != Reach::NotSent;
                        e
                    }
                }
            };
            if Instant::now() + backoff > deadline {
                return Err(BatchError::DeadlinePassed { last, batch: None });
            }
            tokio::time::sleep(jittered(backoff)).await;
            backoff = self.schedule.next(backoff);
        }
    }

    /// The job carrying submission `key`, among those created since `since`
    /// (Unix seconds), newest first, a page of 100 at a time.
    async fn find(&self, key: &str, since: u64) -> Result<Option<Batch>, Stop> {
        #[derive(Deserialize)]
        struct Page {
            data: Vec<Batch>,
            #[serde(default)]
            has_more: bool,
        }
        let mut after: Option<String> = None;
        for _ in 0..20 {
            let path = match &after {
                Some(id) => format!("/batches?limit=100&after={id}"),
                None => "/batches?limit=100".to_owned(),
            };
            let page: Page = match self
                .send(
                    self.request(Method::GET, &path, Bytes::new(), false)
                        .map_err(Final)?,
                )
                .await
            {
                Outcome::Answered(a) if a.status.is_success() => parse(&a.body).map_err(Final)?,
                Outcome::Answered(a) if is_transient(a.status) => {
                    return Err(Transient(format!("{} listing jobs", a.status).into()));
                }
                Outcome::Answered(a) => return Err(Final(refused(&a))),
                Outcome::Failed(e) => return Err(Transient(e)),
            };
            if let Some(found) = page.data.iter().find(|b| {
                b.metadata
                    .as_ref()
                    .and_then(|m| m.get(SUBMISSION_KEY))
                    .map(String::as_str)
                    == Some(key)
            }) {
                return Ok(Some(found.clone()));
            }
            let older = page
                .data
                .last()
                .and_then(|b| b.created_at)
                .is_some_and(|t| t < since);
            match page.data.last() {
                Some(last) if page.has_more && !older => after = Some(last.id.clone()),
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// The job `id` as the server says it now (one poll, through the
    /// service's retries).
    pub async fn get(&self, id: &str) -> Result<Batch, BatchError> {
        match self
            .send(self.request(Method::GET, &job_path(id), Bytes::new(), false)?)
            .await
        {
            Outcome::Answered(a) if a.status.is_success() => parse(&a.body),
            Outcome::Answered(a) => Err(refused(&a)),
            Outcome::Failed(e) => Err(BatchError::Service(e)),
        }
    }

    /// Asks the server to cancel job `id`.
    pub async fn cancel(&self, id: &str) -> Result<Batch, BatchError> {
        let path = format!("{}/cancel", job_path(id));
        match self
            .send(self.request(Method::POST, &path, Bytes::new(), false)?)
            .await
        {
            Outcome::Answered(a) if a.status.is_success() => parse(&a.body),
            Outcome::Answered(a) => Err(refused(&a)),
            Outcome::Failed(e) => Err(BatchError::Service(e)),
        }
    }

    /// Waits until job `id` ends; see the [module docs](self).
    pub async fn wait(&self, id: &str) -> Result<Waited, BatchError> {
        self.wait_with(id, |_| {}).await
    }

    /// [`wait`](Self::wait), calling `on_change` whenever the job's status
    /// or request counts change (and once, at the first answer).
    pub async fn wait_with(
        &self,
        id: &str,
        mut on_change: impl FnMut(&Batch),
    ) -> Result<Waited, BatchError> {
        let started = Instant::now();
        let mut stats = WaitStats::default();
        let mut last: Option<Batch> = None;
        let mut seen_at = started;
        let mut interval = self.schedule.first;
        let mut failure_backoff = self.schedule.first;
        // Until the job's own deadline once it is known.
        let mut deadline = started + self.wait_limit.unwrap_or(Duration::from_secs(24 * 3600));
        loop {
            stats.polls += 1;
            let req = self.request(Method::GET, &job_path(id), Bytes::new(), false)?;
            let (wait, failure): (Duration, Option<BoxError>) = match self.send(req).await {
                Outcome::Answered(a) if a.status.is_success() => {
                    let batch: Batch = parse(&a.body)?;
                    let now = Instant::now();
                    if let Some(prev) = &last {
                        *stats.time_in.entry(prev.status).or_default() += now - seen_at;
                    }
                    seen_at = now;
                    if last.as_ref().is_none_or(|p| {
                        p.status != batch.status || p.request_counts != batch.request_counts
                    }) {
                        on_change(&batch);
                    }
                    if self.wait_limit.is_none()
                        && let Some(expires) = batch.expires_at
                    {
                        let left = Duration::from_secs(expires.saturating_sub(unix_now()));
                        // A minute past the window: the server's last word.
                        deadline = now + left + Duration::from_secs(60);
                    }
                    if batch.status.is_terminal() {
                        stats.elapsed = started.elapsed();
                        return Ok(Waited { batch, stats });
                    }
                    last = Some(batch);
                    failure_backoff = self.schedule.first;
                    let wait = a.hint.map_or(interval, |h| h.max(interval));
                    interval = self.schedule.next(interval);
                    (wait, None)
                }
                Outcome::Answered(a) if is_transient(a.status) => {
                    let wait = a.hint.map_or(failure_backoff, |h| h.max(failure_backoff));
                    (wait, Some(format!("{} polling the job", a.status).into()))
                }
                Outcome::Answered(a) => return Err(refused(&a)),
                Outcome::Failed(e) => {
                    if classify_error(&*e) == FailureKind::InvalidRequest {
                        return Err(BatchError::Service(e));
                    }
                    (failure_backoff, Some(e))
                }
            };
            if let Some(e) = failure {
                stats.failures_waited_through += 1;
                failure_backoff = self.schedule.next(failure_backoff);
                if Instant::now() + wait > deadline {
                    return Err(BatchError::DeadlinePassed {
                        last: e,
                        batch: last.map(Box::new),
                    });
                }
            }
            tokio::time::sleep(jittered(wait)).await;
        }
    }
}

/// Why a lookup stopped.
enum Stop {
    Transient(BoxError),
    Final(BatchError),
}
use Stop::{Final, Transient};

fn job_path(id: &str) -> String {
    // An id is the server's; keep it to one path segment.
    let safe: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .collect();
    format!("/batches/{safe}")
}

fn is_transient(status: StatusCode) -> bool {
    classify_status(status) == Verdict::Retryable
}

fn refused(a: &Answer) -> BatchError {
    #[derive(Deserialize)]
    struct Envelope {
        error: Option<Inner>,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: Option<String>,
    }
    let message = serde_json::from_slice::<Envelope>(&a.body)
        .ok()
        .and_then(|e| e.error)
        .and_then(|e| e.message)
        .unwrap_or_else(|| String::from_utf8_lossy(&a.body[..a.body.len().min(200)]).into_owned());
    BatchError::Refused {
        status: a.status,
        message,
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, BatchError> {
    serde_json::from_slice(body).map_err(|e| BatchError::Malformed(e.to_string()))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_the_api_spells_them_and_unknown_ones_are_kept_apart() {
        let b: Batch = serde_json::from_str(
            r#"{"id":"batch_1","status":"in_progress","request_counts":{"total":10,"completed":3,"failed":0}}"#,
        )
        .unwrap();
        assert_eq!(b.status, BatchStatus::InProgress);
        assert_eq!(b.request_counts.unwrap().completed, 3);
        let b: Batch = serde_json::from_str(r#"{"id":"b","status":"paused"}"#).unwrap();
        assert_eq!(b.status, BatchStatus::Unknown);
        assert!(!b.status.is_terminal());
        for s in [
            BatchStatus::Completed,
            BatchStatus::Failed,
            BatchStatus::Expired,
            BatchStatus::Cancelled,
        ] {
            assert!(s.is_terminal());
        }
    }

    #[test]
    fn the_schedule_grows_to_its_cap_and_the_jitter_stays_within_half() {
        let s = PollSchedule {
            first: Duration::from_millis(100),
            cap: Duration::from_millis(300),
            growth: 1.5,
        };
        assert_eq!(
            s.next(Duration::from_millis(100)),
            Duration::from_millis(150)
        );
        assert_eq!(
            s.next(Duration::from_millis(250)),
            Duration::from_millis(300)
        );
        for _ in 0..1000 {
            let j = jittered(Duration::from_millis(100));
            assert!(j >= Duration::from_millis(50) && j <= Duration::from_millis(100));
        }
    }

    #[test]
    fn a_schedule_out_of_range_is_clamped_and_never_panics() {
        let client = BatchClient::new((), "http://127.0.0.1:1/v1");
        for (first, cap, growth) in [
            (Duration::ZERO, Duration::ZERO, f64::NAN),
            (Duration::MAX, Duration::MAX, f64::INFINITY),
            (Duration::from_secs(5), Duration::from_secs(1), -3.0),
        ] {
            let s = client
                .clone()
                .poll_schedule(PollSchedule { first, cap, growth })
                .schedule;
            assert!(s.first >= Duration::from_millis(1), "{s:?}");
            assert!(
                s.cap >= s.first && s.cap <= Duration::from_secs(86_400),
                "{s:?}"
            );
            assert!((1.0..=10.0).contains(&s.growth), "{s:?}");
            let mut interval = s.first;
            for _ in 0..100 {
                interval = s.next(interval);
                let _ = jittered(interval);
            }
            assert_eq!(interval, s.cap);
        }
    }

    #[test]
    fn a_base_that_makes_no_url_is_a_clear_error() {
        let client = BatchClient::new(
            tower::service_fn(|_: http::Request<Full<Bytes>>| async {
                Ok::<_, BoxError>(http::Response::new(Full::new(Bytes::new())))
            }),
            "not a url",
        );
        let err = client
            .request(Method::GET, "/batches", Bytes::new(), false)
            .expect_err("no URL");
        assert!(err.to_string().contains("`not a url`"), "{err}");
    }

    #[test]
    fn a_job_id_stays_one_path_segment() {
        assert_eq!(job_path("batch_abc-1.2"), "/batches/batch_abc-1.2");
        assert_eq!(job_path("../files?x=1"), "/batches/..filesx1");
    }
}
