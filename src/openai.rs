//! Presets for OpenAI-compatible APIs: what each endpoint is, recognised by
//! the end of its path under any prefix (`/v1`, `/inference/v1`,
//! `/openai/v1`, `/api/v1`, Azure's `/openai/deployments/NAME`), and what
//! that means for its workload and for sending it again.
//!
//! | endpoint (`POST`) | [`Endpoint`] | workload | may be sent again after an unknown reach |
//! |---|---|---|---|
//! | `chat/completions`, `completions`, `responses`, `embeddings`, `moderations`, `images/{generations,edits,variations}`, `audio/{speech,transcriptions,translations}`, `rerank` | `Inference` | the stack's default | yes: inference has no effect but its bill |
//! | anything under `batches`, `fine_tuning/jobs` | `Job` | `Batch` | no: a repeat would start a second job |
//! | anything under `files`, `uploads` | `Upload` | the default | no: a repeat would store a second file |
//! | anything else | `Other` | the default | by the standard rule (idempotent methods, idempotency keys, `RetrySafe`) |
//!
//! Reads (`GET`, and the other idempotent methods) are safe to repeat
//! whatever the endpoint, by the standard rule. A streamed call needs no
//! preset: its answer (`text/event-stream`) tells the retry layer, which
//! holds it until its first token and never repeats it after.
//!
//! ```
//! use http::Method;
//! use sturdy::Workload;
//! use sturdy::openai::Endpoint;
//! let post = Method::POST;
//! assert_eq!(Endpoint::of(&post, "/inference/v1/chat/completions"), Endpoint::Inference);
//! assert_eq!(
//!     Endpoint::of(&post, "/openai/deployments/gpt-4o/chat/completions"),
//!     Endpoint::Inference
//! );
//! assert_eq!(Endpoint::of(&post, "/api/v1/batches"), Endpoint::Job);
//! assert_eq!(Endpoint::of(&post, "/v1/files"), Endpoint::Upload);
//! assert_eq!(Endpoint::of(&Method::GET, "/v1/chat/completions/abc"), Endpoint::Other);
//! assert_eq!(Endpoint::Job.workload(), Some(Workload::Batch));
//! assert!(Endpoint::Inference.is_repeatable() && !Endpoint::Upload.is_repeatable());
//! ```

use http::Method;
use sturdy_core::{RequestHead, Workload};
use sturdy_retry::RetrySafeRule;
use sturdy_timeout::ClassifyWorkload;

/// What an OpenAI-compatible endpoint does; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// A `POST` that runs a model and returns its output.
    Inference,
    /// A job: batches, fine-tuning.
    Job,
    /// A `POST` that stores a file.
    Upload,
    /// Anything else.
    Other,
}

/// The inference endpoints: the last segments of the path.
const INFERENCE: [&[&str]; 12] = [
    &["chat", "completions"],
    &["completions"],
    &["responses"],
    &["embeddings"],
    &["moderations"],
    &["images", "generations"],
    &["images", "edits"],
    &["images", "variations"],
    &["audio", "speech"],
    &["audio", "transcriptions"],
    &["audio", "translations"],
    &["rerank"],
];

impl Endpoint {
    /// The endpoint `method` and `path` address.
    pub fn of(method: &Method, path: &str) -> Endpoint {
        let segments = || path.split('/').filter(|s| !s.is_empty());
        let has = |name: &str| segments().any(|s| s == name);
        let pair = |a: &str, b: &str| {
            let mut prev = "";
            segments().any(|s| {
                let hit = prev == a && s == b;
                prev = s;
                hit
            })
        };
        if has("batches") || pair("fine_tuning", "jobs") {
            return Endpoint::Job;
        }
        if *method != Method::POST {
            return Endpoint::Other;
        }
        if has("files") || has("uploads") {
            return Endpoint::Upload;
        }
        let last: Vec<&str> = {
            let all: Vec<&str> = segments().collect();
            all[all.len().saturating_sub(2)..].to_vec()
        };
        let ends_with = |tail: &[&str]| last.ends_with(tail);
        if INFERENCE.iter().any(|tail| ends_with(tail)) {
            Endpoint::Inference
        } else {
            Endpoint::Other
        }
    }

    /// The workload it implies, if any: [`Workload::Batch`] for jobs.
    pub fn workload(self) -> Option<Workload> {
        match self {
            Endpoint::Job => Some(Workload::Batch),
            _ => None,
        }
    }

    /// Whether it may be sent again after an attempt of unknown reach:
    /// inference only.
    pub fn is_repeatable(self) -> bool {
        self == Endpoint::Inference
    }
}

/// Picks the workload by [`Endpoint`]: jobs are [`Workload::Batch`];
/// everything else is left to the stack's default workload. Set by
/// [`StackBuilder::openai_presets`](crate::StackBuilder::openai_presets).
#[derive(Debug, Clone, Copy, Default)]
pub struct EndpointClassifier;

impl ClassifyWorkload for EndpointClassifier {
    fn classify(&self, head: &RequestHead<'_>) -> Option<Workload> {
        Endpoint::of(head.method, head.uri.path()).workload()
    }
}

/// The standard safety rule widened to every inference endpoint: a chat
/// completion that may have reached the server is sent again; a batch or
/// an upload is not (unless marked `RetrySafe` or keyed).
///
/// ```
/// use sturdy::Stack;
/// let stack = Stack::builder().retry_safe(sturdy::openai::retry_safe()).build().unwrap();
/// # let _ = stack;
/// ```
pub fn retry_safe() -> RetrySafeRule {
    RetrySafeRule::when(|head| Endpoint::of(head.method, head.uri.path()).is_repeatable())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_under_every_prefix() {
        let post = Method::POST;
        for prefix in [
            "",
            "/v1",
            "/inference/v1",
            "/openai/v1",
            "/api/v1",
            "/openai/deployments/my-gpt",
        ] {
            for (tail, want) in [
                ("/chat/completions", Endpoint::Inference),
                ("/completions", Endpoint::Inference),
                ("/responses", Endpoint::Inference),
                ("/embeddings", Endpoint::Inference),
                ("/moderations", Endpoint::Inference),
                ("/images/generations", Endpoint::Inference),
                ("/images/edits", Endpoint::Inference),
                ("/audio/speech", Endpoint::Inference),
                ("/audio/transcriptions", Endpoint::Inference),
                ("/batches", Endpoint::Job),
                ("/batches/batch_1/cancel", Endpoint::Job),
                ("/fine_tuning/jobs", Endpoint::Job),
                ("/files", Endpoint::Upload),
                ("/uploads/up_1/parts", Endpoint::Upload),
                ("/responses/resp_1/cancel", Endpoint::Other),
                ("/chat/completions/cmpl_1", Endpoint::Other),
                ("/models", Endpoint::Other),
                ("/assistants", Endpoint::Other),
            ] {
                let path = format!("{prefix}{tail}");
                assert_eq!(Endpoint::of(&post, &path), want, "{path}");
            }
        }
        // Reads are never inference, uploads or jobs to repeat by preset;
        // jobs keep their workload whatever the method.
        assert_eq!(Endpoint::of(&Method::GET, "/v1/models"), Endpoint::Other);
        assert_eq!(Endpoint::of(&Method::GET, "/v1/files/f_1"), Endpoint::Other);
        assert_eq!(Endpoint::of(&Method::GET, "/v1/batches/b_1"), Endpoint::Job);
        // Not fooled by look-alike segments.
        assert_eq!(
            Endpoint::of(&post, "/v1/vector_stores/vs_1/file_batches"),
            Endpoint::Other
        );
        assert_eq!(Endpoint::of(&post, "/v1/chatcompletions"), Endpoint::Other);
        assert_eq!(Endpoint::of(&post, "/"), Endpoint::Other);
    }

    #[test]
    fn the_classifier_and_the_rule_follow_the_endpoint() {
        let uri: http::Uri = "http://h/inference/v1/batches".parse().unwrap();
        let headers = http::HeaderMap::new();
        let head = RequestHead {
            method: &Method::POST,
            uri: &uri,
            headers: &headers,
        };
        assert_eq!(EndpointClassifier.classify(&head), Some(Workload::Batch));
        assert!(matches!(retry_safe(), RetrySafeRule::When(_)));
    }
}
