//! OpenAI-compatible batch jobs and files, in memory: uploads
//! (`POST /v1/files`), their contents, and batches that move through their
//! states as time passes.
//!
//! The store lives in the server's shared state, so it outlives outages (the
//! server's "restarts"). Nothing runs in the background: a job's state is
//! computed from the time elapsed since it was created (on tokio's clock)
//! whenever it is looked at, against the server's job duration `D`:
//!
//! | elapsed        | status                                                   |
//! |----------------|----------------------------------------------------------|
//! | 0 .. 10 % D    | `validating`                                             |
//! | 10 .. 80 % D   | `in_progress`, `completed` growing from 0 to the total   |
//! | 80 .. 100 % D  | `finalizing`                                             |
//! | 100 % D ..     | `completed`, with an output file `file-out-<batch id>`   |
//!
//! The metadata key [`FATE_KEY`] scripts another ending: `"failed"` fails the
//! job at 50 % of `D` with one `sturdy_injected` error, counts frozen where
//! they were; `"expired"` makes the job work at half speed (it stays
//! `in_progress` from 10 % of `D`, its count reaching half the total, rounded
//! down, at 100 %) and expire at 100 % of `D`, without an output file.
//!
//! A cancel while the job runs makes it `cancelling` with its counts frozen,
//! and `cancelled` a tenth of `D` later; a cancel of a job that has ended
//! (or is already cancelling) changes nothing.
//!
//! Bounds: at most [`MAX_FILES`] files and [`MAX_FILE_STORE_BYTES`] bytes of
//! them (an upload is also bounded by the server's request-body limit), and
//! at most [`MAX_JOBS`] jobs; past those the oldest are forgotten. A batch
//! holds at most [`MAX_BATCH_REQUESTS`] requests, as OpenAI's do.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::fault::split_unquoted;
use crate::openai;

/// A job's run time when the server is not told otherwise.
pub(crate) const DEFAULT_JOB_DURATION: Duration = Duration::from_secs(10);

/// Files kept; the oldest is forgotten past that.
pub(crate) const MAX_FILES: usize = 1_000;

/// Bytes of file content kept, all files together; the oldest files are
/// forgotten past that.
pub(crate) const MAX_FILE_STORE_BYTES: usize = 256 * 1024 * 1024;

/// Jobs kept; the oldest is forgotten past that.
pub(crate) const MAX_JOBS: usize = 10_000;

/// Requests one batch may hold (OpenAI's limit).
pub(crate) const MAX_BATCH_REQUESTS: u64 = 50_000;

/// Requests of a batch whose input file the server does not know.
pub(crate) const UNKNOWN_INPUT_REQUESTS: u64 = 10;

/// The metadata key that scripts a job's ending: `"failed"`, `"expired"` or
/// `"completed"` (the default).
pub(crate) const FATE_KEY: &str = "sturdy_fate";

/// Metadata pairs a batch may carry, and their sizes (OpenAI's limits).
const MAX_METADATA_PAIRS: usize = 16;
const MAX_METADATA_KEY: usize = 64;
const MAX_METADATA_VALUE: usize = 512;

/// Longest `purpose` and `filename` accepted with an upload.
const MAX_PURPOSE: usize = 64;
const MAX_FILENAME: usize = 1024;

/// Batches may take this long before they expire (`completion_window`).
const COMPLETION_WINDOW: &str = "24h";
const EXPIRES_AFTER_SECS: u64 = 24 * 60 * 60;

/// Jobs listed when the query names no `limit`, and the most it may name.
const DEFAULT_LIST_LIMIT: usize = 20;
const MAX_LIST_LIMIT: usize = 100;

/// The body of a successful answer.
pub(crate) enum Reply {
    /// A JSON document.
    Json(Bytes),
    /// A file's bytes (`application/octet-stream`).
    Octets(Bytes),
}

/// Why a request was refused: the status and the message of an OpenAI-style
/// error answer.
#[derive(Debug)]
pub(crate) struct Rejection {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

fn bad_request(message: impl Into<String>) -> Rejection {
    Rejection {
        status: StatusCode::BAD_REQUEST,
        message: message.into(),
    }
}

fn not_found(message: impl Into<String>) -> Rejection {
    Rejection {
        status: StatusCode::NOT_FOUND,
        message: message.into(),
    }
}

fn json_reply(value: &Value) -> Reply {
    Reply::Json(Bytes::from(value.to_string()))
}

/// The batch jobs and files of one server.
#[derive(Debug)]
pub(crate) struct Jobs {
    /// The time from a job's creation to its natural end.
    duration: Duration,
    /// SSE chunks a completion says (the words of an output file's answers).
    chunks: usize,
    store: Mutex<Store>,
}

#[derive(Debug, Default)]
struct Store {
    /// Oldest first.
    files: VecDeque<StoredFile>,
    /// The content bytes of `files`.
    file_bytes: usize,
    files_made: u64,
    /// By number (`batch_N`), so oldest first.
    jobs: BTreeMap<u64, Job>,
    jobs_made: u64,
    /// Job numbers by the `Idempotency-Key` that created them, for as long
    /// as the job is kept.
    keys: HashMap<String, u64>,
}

#[derive(Debug)]
struct StoredFile {
    id: String,
    filename: String,
    purpose: String,
    created_at: u64,
    bytes: Bytes,
}

impl StoredFile {
    fn object(&self) -> Value {
        json!({
            "id": self.id,
            "object": "file",
            "bytes": self.bytes.len(),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
        })
    }
}

/// How a job ends if nobody cancels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Complete,
    Fail,
    Expire,
}

#[derive(Debug)]
struct Job {
    number: u64,
    endpoint: String,
    input_file_id: String,
    completion_window: String,
    metadata: Option<Map<String, Value>>,
    fate: Fate,
    total: u64,
    born: Instant,
    /// The wall-clock creation time, since the Unix epoch.
    born_unix: Duration,
    /// The age at which a cancel arrived while the job was running.
    cancelled: Option<Duration>,
    output_file_id: Option<String>,
}

/// A job's status, as OpenAI spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Validating,
    InProgress,
    Finalizing,
    Completed,
    Failed,
    Expired,
    Cancelling,
    Cancelled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Validating => "validating",
            Status::InProgress => "in_progress",
            Status::Finalizing => "finalizing",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Expired => "expired",
            Status::Cancelling => "cancelling",
            Status::Cancelled => "cancelled",
        }
    }

    fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Completed | Status::Failed | Status::Expired | Status::Cancelled
        )
    }
}

/// A job as of one moment; the `*_at` fields are ages (since creation) at
/// which the job reached that state, when it has.
#[derive(Debug, Default)]
struct View {
    status: Option<Status>,
    completed: u64,
    in_progress_at: Option<Duration>,
    finalizing_at: Option<Duration>,
    completed_at: Option<Duration>,
    failed_at: Option<Duration>,
    expired_at: Option<Duration>,
    cancelling_at: Option<Duration>,
    cancelled_at: Option<Duration>,
}

impl View {
    fn status(&self) -> Status {
        self.status.unwrap_or(Status::Validating)
    }
}

/// `tenths` tenths of `d`, exactly and without overflow.
fn tenths(d: Duration, tenths: u32) -> Duration {
    let nanos = d.as_nanos() * u128::from(tenths) / 10;
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    // The remainder is below 10^9, so it fits.
    let sub = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    Duration::new(secs, sub)
}

/// `goal * done / span`, rounded down; `goal` when the span is empty.
fn share(goal: u64, done: Duration, span: Duration) -> u64 {
    if span.is_zero() {
        return goal;
    }
    let part = u128::from(goal) * done.min(span).as_nanos() / span.as_nanos();
    u64::try_from(part).unwrap_or(goal)
}

impl Job {
    /// The job at age `age`, for a job duration `d`.
    fn view(&self, d: Duration, age: Duration) -> View {
        let start = tenths(d, 1);
        let (end, end_status, goal, work_done) = match self.fate {
            Fate::Complete => (d, Status::Completed, self.total, tenths(d, 8)),
            Fate::Fail => (tenths(d, 5), Status::Failed, self.total, tenths(d, 8)),
            Fate::Expire => (d, Status::Expired, self.total / 2, d),
        };
        // Nothing moves after a cancel.
        let horizon = self.cancelled.map_or(age, |c| c.min(age));
        let mut view = View::default();
        if horizon >= start {
            view.status = Some(Status::InProgress);
            view.in_progress_at = Some(start);
            let worked = horizon.min(end).saturating_sub(start);
            view.completed = share(goal, worked, work_done.saturating_sub(start));
        }
        if self.fate == Fate::Complete && horizon >= work_done {
            view.status = Some(Status::Finalizing);
            view.finalizing_at = Some(work_done);
        }
        if horizon >= end {
            view.status = Some(end_status);
            match end_status {
                Status::Completed => view.completed_at = Some(end),
                Status::Failed => view.failed_at = Some(end),
                _ => view.expired_at = Some(end),
            }
        }
        if let Some(cancelled) = self.cancelled
            && age >= cancelled
        {
            let over = cancelled.saturating_add(start);
            view.cancelling_at = Some(cancelled);
            if age >= over {
                view.status = Some(Status::Cancelled);
                view.cancelled_at = Some(over);
            } else {
                view.status = Some(Status::Cancelling);
            }
        }
        view
    }

    fn id(&self) -> String {
        batch_id(self.number)
    }

    /// Unix seconds at age `age`.
    fn unix_at(&self, age: Duration) -> u64 {
        self.born_unix.saturating_add(age).as_secs()
    }

    /// The OpenAI batch object for `view`.
    fn object(&self, view: &View) -> Value {
        let at = |age: Option<Duration>| age.map(|age| self.unix_at(age));
        let errors = if view.status() == Status::Failed {
            json!({
                "object": "list",
                "data": [{
                    "code": "sturdy_injected",
                    "message": format!("sturdy-faults failed this batch on purpose ({FATE_KEY}=failed)"),
                    "param": null,
                    "line": null,
                }],
            })
        } else {
            Value::Null
        };
        let created_at = self.born_unix.as_secs();
        json!({
            "id": self.id(),
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": errors,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": view.status().as_str(),
            "output_file_id": self.output_file_id,
            "error_file_id": null,
            "created_at": created_at,
            "in_progress_at": at(view.in_progress_at),
            "expires_at": created_at.saturating_add(EXPIRES_AFTER_SECS),
            "finalizing_at": at(view.finalizing_at),
            "completed_at": at(view.completed_at),
            "failed_at": at(view.failed_at),
            "expired_at": at(view.expired_at),
            "cancelling_at": at(view.cancelling_at),
            "cancelled_at": at(view.cancelled_at),
            "request_counts": {
                "total": self.total,
                "completed": view.completed,
                "failed": 0,
            },
            "metadata": self.metadata,
        })
    }
}

fn batch_id(number: u64) -> String {
    format!("batch_{number}")
}

/// The number of a `batch_N` ID (exactly as the server spells it).
fn batch_number(id: &str) -> Option<u64> {
    let number: u64 = id.strip_prefix("batch_")?.parse().ok()?;
    (batch_id(number) == id).then_some(number)
}

fn output_file_id(number: u64) -> String {
    format!("file-out-{}", batch_id(number))
}

fn unix_duration() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The lines of a batch input file that hold a request.
fn request_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|line| line.iter().any(|b| !b.is_ascii_whitespace()))
}

/// The parts of an input line an output line echoes.
#[derive(Deserialize)]
struct InputLine {
    custom_id: Option<String>,
    body: Option<InputBody>,
}

#[derive(Deserialize)]
struct InputBody {
    model: Option<String>,
}

impl Jobs {
    pub(crate) fn new(duration: Duration, chunks: usize) -> Jobs {
        Jobs {
            duration,
            chunks,
            store: Mutex::new(Store::default()),
        }
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `POST /v1/files`: stores the `file` part of a multipart form.
    pub(crate) fn upload(
        &self,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Reply, Rejection> {
        let upload = parse_upload(content_type, body).map_err(bad_request)?;
        let mut store = self.store();
        store.files_made += 1;
        let file = StoredFile {
            id: format!("file-{}", store.files_made),
            filename: upload.filename,
            purpose: upload.purpose,
            created_at: unix_duration().as_secs(),
            bytes: Bytes::copy_from_slice(upload.content),
        };
        let object = file.object();
        store.add_file(file);
        Ok(json_reply(&object))
    }

    /// `GET /v1/files/{id}`: the file object.
    pub(crate) fn file(&self, id: &str) -> Result<Reply, Rejection> {
        let mut store = self.store();
        self.settle_output_of(&mut store, id);
        store
            .file(id)
            .map(|file| json_reply(&file.object()))
            .ok_or_else(|| no_file(id))
    }

    /// `GET /v1/files/{id}/content`: the file's bytes.
    pub(crate) fn content(&self, id: &str) -> Result<Reply, Rejection> {
        let mut store = self.store();
        self.settle_output_of(&mut store, id);
        store
            .file(id)
            .map(|file| Reply::Octets(file.bytes.clone()))
            .ok_or_else(|| no_file(id))
    }

    /// `POST /v1/batches`: a new job, `validating`. A request carrying an
    /// `Idempotency-Key` this server already created a job for gets that
    /// job back instead of a second one.
    pub(crate) fn create(&self, body: &[u8], key: Option<&str>) -> Result<Reply, Rejection> {
        let request = BatchRequest::parse(body).map_err(bad_request)?;
        let mut store = self.store();
        if let Some(&number) = key.and_then(|k| store.keys.get(k))
            && store.jobs.contains_key(&number)
        {
            return Ok(json_reply(&self.settle(&mut store, number)));
        }
        let total = match store.file(&request.input_file_id) {
            Some(file) => request_lines(&file.bytes).count() as u64,
            None => UNKNOWN_INPUT_REQUESTS,
        };
        if total > MAX_BATCH_REQUESTS {
            return Err(bad_request(format!(
                "input file {} holds {total} requests, more than {MAX_BATCH_REQUESTS}",
                request.input_file_id
            )));
        }
        store.jobs_made += 1;
        let job = Job {
            number: store.jobs_made,
            endpoint: request.endpoint,
            input_file_id: request.input_file_id,
            completion_window: request.completion_window,
            metadata: request.metadata,
            fate: request.fate,
            total,
            born: Instant::now(),
            born_unix: unix_duration(),
            cancelled: None,
            output_file_id: None,
        };
        let object = job.object(&job.view(self.duration, Duration::ZERO));
        while store.jobs.len() >= MAX_JOBS {
            let Some((gone, _)) = store.jobs.pop_first() else {
                break;
            };
            store.keys.retain(|_, n| *n != gone);
        }
        if let Some(key) = key {
            store.keys.insert(key.to_owned(), job.number);
        }
        store.jobs.insert(job.number, job);
        Ok(json_reply(&object))
    }

    /// `GET /v1/batches/{id}`: the job as of now.
    pub(crate) fn get(&self, id: &str) -> Result<Reply, Rejection> {
        let mut store = self.store();
        let number = store.job_number(id)?;
        Ok(json_reply(&self.settle(&mut store, number)))
    }

    /// `POST /v1/batches/{id}/cancel`: starts cancelling a running job.
    pub(crate) fn cancel(&self, id: &str) -> Result<Reply, Rejection> {
        let mut store = self.store();
        let number = store.job_number(id)?;
        if let Some(job) = store.jobs.get_mut(&number) {
            let age = job.born.elapsed();
            if job.cancelled.is_none() && !job.view(self.duration, age).status().is_terminal() {
                job.cancelled = Some(age);
            }
        }
        Ok(json_reply(&self.settle(&mut store, number)))
    }

    /// `GET /v1/batches?limit=N&after=ID`: jobs, newest first.
    pub(crate) fn list(&self, query: Option<&str>) -> Result<Reply, Rejection> {
        let (limit, after) = parse_list_query(query.unwrap_or("")).map_err(bad_request)?;
        let mut store = self.store();
        let numbers: Vec<u64> = store
            .jobs
            .range(..after.unwrap_or(u64::MAX))
            .rev()
            .take(limit + 1)
            .map(|(n, _)| *n)
            .collect();
        let has_more = numbers.len() > limit;
        let data: Vec<Value> = numbers
            .iter()
            .take(limit)
            .map(|&n| self.settle(&mut store, n))
            .collect();
        let first_id = data.first().map(|job| job["id"].clone());
        let last_id = data.last().map(|job| job["id"].clone());
        Ok(json_reply(&json!({
            "object": "list",
            "data": data,
            "first_id": first_id,
            "last_id": last_id,
            "has_more": has_more,
        })))
    }

    /// Job `number`'s object as of now, creating its output file the first
    /// time it is seen completed.
    fn settle(&self, store: &mut Store, number: u64) -> Value {
        let Some(job) = store.jobs.get(&number) else {
            return Value::Null;
        };
        let view = job.view(self.duration, job.born.elapsed());
        if view.status() == Status::Completed && job.output_file_id.is_none() {
            let file = self.output_file(store, job, &view);
            let id = file.id.clone();
            store.add_file(file);
            if let Some(job) = store.jobs.get_mut(&number) {
                job.output_file_id = Some(id);
            }
        }
        store
            .jobs
            .get(&number)
            .map_or(Value::Null, |job| job.object(&view))
    }

    /// Before a look at file `id`: if it is a job's output file that is due,
    /// creates it.
    fn settle_output_of(&self, store: &mut Store, id: &str) {
        let number = id.strip_prefix("file-out-").and_then(batch_number);
        if let Some(number) = number
            && store.file(id).is_none()
        {
            self.settle(store, number);
        }
    }

    /// The output file of a completed job: one JSONL line per request.
    fn output_file(&self, store: &Store, job: &Job, view: &View) -> StoredFile {
        let created = view.completed_at.map_or(0, |age| job.unix_at(age));
        let id = job.id();
        let inputs: Vec<InputLine> = match store.file(&job.input_file_id) {
            Some(file) => request_lines(&file.bytes)
                .map(|line| {
                    serde_json::from_slice(line).unwrap_or(InputLine {
                        custom_id: None,
                        body: None,
                    })
                })
                .collect(),
            None => Vec::new(),
        };
        let mut content = Vec::new();
        for k in 1..=job.total {
            let input = usize::try_from(k - 1).ok().and_then(|i| inputs.get(i));
            let custom_id = input
                .and_then(|i| i.custom_id.clone())
                .unwrap_or_else(|| format!("request-{k}"));
            let model = input
                .and_then(|i| i.body.as_ref())
                .and_then(|b| b.model.as_deref())
                .unwrap_or(openai::DEFAULT_MODEL);
            let body = openai::chat_completion_value(
                &format!("chatcmpl-sturdy-{id}-{k}"),
                model,
                self.chunks,
                created,
            );
            let line = json!({
                "id": format!("batch_req_{}_{k}", job.number),
                "custom_id": custom_id,
                "response": {
                    "status_code": 200,
                    "request_id": format!("req_{}_{k}", job.number),
                    "body": body,
                },
                "error": null,
            });
            content.extend_from_slice(line.to_string().as_bytes());
            content.push(b'\n');
        }
        StoredFile {
            id: output_file_id(job.number),
            filename: format!("{id}_output.jsonl"),
            purpose: "batch_output".to_owned(),
            created_at: created,
            bytes: content.into(),
        }
    }
}

impl Store {
    fn file(&self, id: &str) -> Option<&StoredFile> {
        self.files.iter().find(|f| f.id == id)
    }

    fn add_file(&mut self, file: StoredFile) {
        self.file_bytes += file.bytes.len();
        self.files.push_back(file);
        while self.files.len() > MAX_FILES || self.file_bytes > MAX_FILE_STORE_BYTES {
            match self.files.pop_front() {
                Some(old) => self.file_bytes -= old.bytes.len(),
                None => break,
            }
        }
    }

    fn job_number(&self, id: &str) -> Result<u64, Rejection> {
        batch_number(id)
            .filter(|n| self.jobs.contains_key(n))
            .ok_or_else(|| not_found(format!("No batch found with id '{id}'.")))
    }
}

fn no_file(id: &str) -> Rejection {
    not_found(format!("No file found with id '{id}'."))
}

/// What a `POST /v1/batches` asks for.
#[derive(Debug)]
struct BatchRequest {
    input_file_id: String,
    endpoint: String,
    completion_window: String,
    metadata: Option<Map<String, Value>>,
    fate: Fate,
}

impl BatchRequest {
    /// Parses a request body; the error is a message for a 400.
    fn parse(body: &[u8]) -> Result<BatchRequest, String> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
        let Value::Object(mut object) = value else {
            return Err("request body must be a JSON object".to_owned());
        };
        let mut string = |name: &str| match object.remove(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            None | Some(Value::Null) => Err(format!("missing required parameter '{name}'")),
            Some(_) => Err(format!("'{name}' must be a non-empty string")),
        };
        let input_file_id = string("input_file_id")?;
        let endpoint = string("endpoint")?;
        let completion_window = string("completion_window")?;
        if completion_window != COMPLETION_WINDOW {
            return Err(format!(
                "'completion_window' must be {COMPLETION_WINDOW:?}, not {completion_window:?}"
            ));
        }
        let metadata = match object.remove("metadata") {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(check_metadata(map)?),
            Some(_) => return Err("'metadata' must be an object of strings".to_owned()),
        };
        let fate = match metadata.as_ref().and_then(|m| m.get(FATE_KEY)) {
            None => Fate::Complete,
            Some(fate) => match fate.as_str() {
                Some("completed") => Fate::Complete,
                Some("failed") => Fate::Fail,
                Some("expired") => Fate::Expire,
                _ => {
                    return Err(format!(
                        "metadata {FATE_KEY} must be \"completed\", \"failed\" or \"expired\", not {fate}"
                    ));
                }
            },
        };
        Ok(BatchRequest {
            input_file_id,
            endpoint,
            completion_window,
            metadata,
            fate,
        })
    }
}

fn check_metadata(map: Map<String, Value>) -> Result<Map<String, Value>, String> {
    if map.len() > MAX_METADATA_PAIRS {
        return Err(format!(
            "'metadata' holds {} pairs, more than {MAX_METADATA_PAIRS}",
            map.len()
        ));
    }
    for (key, value) in &map {
        if key.chars().count() > MAX_METADATA_KEY {
            return Err(format!(
                "metadata keys are at most {MAX_METADATA_KEY} characters"
            ));
        }
        match value {
            Value::String(s) if s.chars().count() <= MAX_METADATA_VALUE => {}
            Value::String(_) => {
                return Err(format!(
                    "metadata values are at most {MAX_METADATA_VALUE} characters"
                ));
            }
            _ => return Err(format!("metadata value for {key:?} must be a string")),
        }
    }
    Ok(map)
}

/// `limit` and the number of the `after` job of a list query.
fn parse_list_query(query: &str) -> Result<(usize, Option<u64>), String> {
    let mut limit = DEFAULT_LIST_LIMIT;
    let mut after = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "'limit' must be a whole number in 1..={MAX_LIST_LIMIT}, not {value:?}"
                        )
                    })?;
            }
            "after" => {
                after = Some(
                    batch_number(value)
                        .ok_or_else(|| format!("'after' must be a batch ID, not {value:?}"))?,
                );
            }
            _ => {}
        }
    }
    Ok((limit, after))
}

/// The parts of a `POST /v1/files` form the server keeps.
#[derive(Debug)]
struct Upload<'a> {
    filename: String,
    purpose: String,
    content: &'a [u8],
}

/// One part of a multipart body.
struct Part<'a> {
    name: String,
    filename: Option<String>,
    content: &'a [u8],
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// A header parameter's value without its quotes.
fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// The parameters (`; name=value`) of a header value, names lowercased.
fn header_params(value: &str) -> Result<Vec<(String, &str)>, String> {
    let pieces = split_unquoted(value, ';').map_err(|e| e.to_string())?;
    Ok(pieces
        .into_iter()
        .skip(1)
        .filter_map(|piece| piece.split_once('='))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), unquote(value.trim())))
        .collect())
}

/// The boundary of a `multipart/form-data` content type.
fn boundary(content_type: Option<&str>) -> Result<&str, String> {
    let content_type = content_type.ok_or("missing content-type: expected multipart/form-data")?;
    let kind = content_type.split(';').next().unwrap_or("").trim();
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return Err(format!(
            "content-type must be multipart/form-data, not {kind:?}"
        ));
    }
    let boundary = header_params(content_type)?
        .into_iter()
        .find(|(name, _)| name == "boundary")
        .map(|(_, value)| value)
        .ok_or("multipart/form-data without a boundary")?;
    if boundary.is_empty() || boundary.len() > 70 {
        return Err("a multipart boundary must be 1 to 70 characters long".to_owned());
    }
    Ok(boundary)
}

/// The parts of a multipart body delimited by `boundary`.
fn parts<'a>(boundary: &str, body: &'a [u8]) -> Result<Vec<Part<'a>>, String> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let next_delimiter = [b"\r\n".as_slice(), delimiter].concat();
    let unterminated = || "multipart body ends inside a part".to_owned();
    let mut pos = if body.starts_with(delimiter) {
        delimiter.len()
    } else {
        find(body, &next_delimiter, 0).ok_or("multipart body without its boundary")?
            + next_delimiter.len()
    };
    let mut parts = Vec::new();
    loop {
        let rest = &body[pos..];
        if rest.starts_with(b"--") || rest.is_empty() {
            break;
        }
        // Transport padding, then the line break that ends the delimiter.
        let padding = rest
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count();
        if !rest[padding..].starts_with(b"\r\n") {
            return Err("multipart boundary not followed by a line break".to_owned());
        }
        let head_start = pos + padding + 2;
        let (head, content_start) = if body[head_start..].starts_with(b"\r\n") {
            (&body[head_start..head_start], head_start + 2)
        } else {
            let end = find(body, b"\r\n\r\n", head_start).ok_or_else(unterminated)?;
            (&body[head_start..end], end + 4)
        };
        let content_end = find(body, &next_delimiter, content_start).ok_or_else(unterminated)?;
        parts.push(part(head, &body[content_start..content_end])?);
        pos = content_end + next_delimiter.len();
    }
    Ok(parts)
}

/// A part from its header block and content.
fn part<'a>(head: &[u8], content: &'a [u8]) -> Result<Part<'a>, String> {
    let head = std::str::from_utf8(head).map_err(|_| "multipart part headers are not UTF-8")?;
    let mut name = None;
    let mut filename = None;
    for line in head.split("\r\n") {
        let Some((header, value)) = line.split_once(':') else {
            return Err(format!("malformed multipart part header {line:?}"));
        };
        if !header.trim().eq_ignore_ascii_case("content-disposition") {
            continue;
        }
        for (param, value) in header_params(value)? {
            match param.as_str() {
                "name" => name = Some(value.to_owned()),
                "filename" => filename = Some(value.to_owned()),
                _ => {}
            }
        }
    }
    let name = name.ok_or("a multipart part without a content-disposition name")?;
    Ok(Part {
        name,
        filename,
        content,
    })
}

/// The `file` and `purpose` of a `POST /v1/files` body; the error is a
/// message for a 400.
fn parse_upload<'a>(content_type: Option<&str>, body: &'a [u8]) -> Result<Upload<'a>, String> {
    let parts = parts(boundary(content_type)?, body)?;
    let file = parts
        .iter()
        .find(|p| p.name == "file")
        .ok_or("missing required parameter 'file'")?;
    let purpose = parts
        .iter()
        .find(|p| p.name == "purpose")
        .ok_or("missing required parameter 'purpose'")?;
    let purpose = std::str::from_utf8(purpose.content)
        .map(str::trim)
        .ok()
        .filter(|p| !p.is_empty() && p.chars().count() <= MAX_PURPOSE)
        .ok_or_else(|| format!("'purpose' must be text of 1 to {MAX_PURPOSE} characters"))?;
    let filename = file.filename.as_deref().unwrap_or("upload");
    if filename.chars().count() > MAX_FILENAME {
        return Err(format!(
            "'filename' is longer than {MAX_FILENAME} characters"
        ));
    }
    Ok(Upload {
        filename: filename.to_owned(),
        purpose: purpose.to_owned(),
        content: file.content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(fate: Fate, total: u64) -> Job {
        Job {
            number: 1,
            endpoint: "/v1/chat/completions".to_owned(),
            input_file_id: "file-1".to_owned(),
            completion_window: COMPLETION_WINDOW.to_owned(),
            metadata: None,
            fate,
            total,
            born: Instant::now(),
            born_unix: Duration::from_secs(1_000),
            cancelled: None,
            output_file_id: None,
        }
    }

    const D: Duration = Duration::from_secs(10);

    fn at(job: &Job, secs: f64) -> (Status, u64) {
        let view = job.view(D, Duration::from_secs_f64(secs));
        (view.status(), view.completed)
    }

    #[test]
    fn a_job_walks_its_phases() {
        let j = job(Fate::Complete, 70);
        assert_eq!(at(&j, 0.0), (Status::Validating, 0));
        assert_eq!(at(&j, 0.99), (Status::Validating, 0));
        assert_eq!(at(&j, 1.0), (Status::InProgress, 0));
        assert_eq!(at(&j, 4.5), (Status::InProgress, 35));
        assert_eq!(at(&j, 8.0), (Status::Finalizing, 70));
        assert_eq!(at(&j, 10.0), (Status::Completed, 70));
        let view = j.view(D, Duration::from_secs(60));
        assert_eq!(view.completed_at, Some(D));
        assert_eq!(view.finalizing_at, Some(Duration::from_secs(8)));
        let object = j.object(&view);
        assert_eq!(object["completed_at"], 1_010);
        assert_eq!(object["failed_at"], Value::Null);
    }

    #[test]
    fn fates_end_early_or_half_done() {
        let failing = job(Fate::Fail, 70);
        assert_eq!(at(&failing, 4.9).0, Status::InProgress);
        assert_eq!(at(&failing, 5.0), (Status::Failed, 40));
        assert_eq!(at(&failing, 50.0), (Status::Failed, 40));
        let expiring = job(Fate::Expire, 9);
        assert_eq!(at(&expiring, 9.9).0, Status::InProgress);
        assert_eq!(at(&expiring, 10.0), (Status::Expired, 4));
        assert_eq!(at(&expiring, 99.0), (Status::Expired, 4));
    }

    #[test]
    fn a_cancel_freezes_the_counts() {
        let mut j = job(Fate::Complete, 70);
        j.cancelled = Some(Duration::from_secs(2));
        assert_eq!(at(&j, 1.5), (Status::InProgress, 5));
        assert_eq!(at(&j, 2.5), (Status::Cancelling, 10));
        assert_eq!(at(&j, 30.0), (Status::Cancelled, 10));
        let view = j.view(D, Duration::from_secs(30));
        assert_eq!(view.cancelled_at, Some(Duration::from_secs(3)));
        assert_eq!(view.completed_at, None);
    }

    #[test]
    fn tiny_and_huge_durations_do_not_overflow() {
        let j = job(Fate::Complete, 3);
        let view = j.view(Duration::from_nanos(1), Duration::from_secs(1));
        assert_eq!((view.status(), view.completed), (Status::Completed, 3));
        let view = j.view(Duration::MAX, Duration::from_secs(1));
        assert_eq!(view.status(), Status::Validating);
        assert_eq!(tenths(Duration::MAX, 10), Duration::MAX);
    }

    #[test]
    fn batch_ids_round_trip_exactly() {
        assert_eq!(batch_number("batch_12"), Some(12));
        assert_eq!(batch_number("batch_012"), None);
        assert_eq!(batch_number("batch_"), None);
        assert_eq!(batch_number("batch_-1"), None);
        assert_eq!(batch_number("file-1"), None);
    }

    #[test]
    fn multipart_parts_are_found() {
        let body = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a;b.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\nline one\r\n\r\nline two\n\r\n--XyZ--\r\n";
        let upload = parse_upload(Some("multipart/form-data; boundary=\"XyZ\""), body).unwrap();
        assert_eq!(upload.filename, "a;b.jsonl");
        assert_eq!(upload.purpose, "batch");
        assert_eq!(upload.content, b"line one\r\n\r\nline two\n");
        assert_eq!(request_lines(upload.content).count(), 2);
    }

    #[test]
    fn multipart_garbage_is_an_error() {
        let ct = Some("multipart/form-data; boundary=b");
        for (content_type, body) in [
            (None, &b"--b\r\n\r\nx\r\n--b--"[..]),
            (Some("application/json"), b"{}"),
            (Some("multipart/form-data"), b"--b--"),
            (Some("multipart/form-data; boundary="), b"--b--"),
            (ct, b""),
            (ct, b"no boundary here"),
            (ct, b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nunterminated"),
            (ct, b"--bjunk"),
            (ct, b"--b\r\nno colon\r\n\r\nx\r\n--b--"),
            (ct, b"--b\r\n\r\nnameless\r\n--b--"),
            (ct, b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nx\r\n--b--"),
            (ct, b"--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--b--"),
            (ct, b"--b\r\nContent-Disposition: form-data; name=\"file\r\n\r\nx\r\n--b--"),
            (ct, b"--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n \r\n--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nx\r\n--b--"),
        ] {
            assert!(
                parse_upload(content_type, body).is_err(),
                "{content_type:?} {:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn list_queries_are_checked() {
        assert_eq!(parse_list_query(""), Ok((20, None)));
        assert_eq!(
            parse_list_query("limit=3&after=batch_9&x=y"),
            Ok((3, Some(9)))
        );
        for bad in [
            "limit=0",
            "limit=101",
            "limit=x",
            "limit",
            "after=",
            "after=file-1",
        ] {
            assert!(parse_list_query(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_file_store_forgets_the_oldest() {
        let mut store = Store::default();
        for i in 0..(MAX_FILES + 5) {
            store.add_file(StoredFile {
                id: format!("file-{i}"),
                filename: String::new(),
                purpose: String::new(),
                created_at: 0,
                bytes: Bytes::from_static(b"x"),
            });
        }
        assert_eq!(store.files.len(), MAX_FILES);
        assert_eq!(store.file_bytes, MAX_FILES);
        assert!(store.file("file-4").is_none());
        assert!(store.file("file-5").is_some());
    }
}
