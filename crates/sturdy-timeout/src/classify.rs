//! Choosing a request's [`Workload`] when the caller did not put one in its
//! extensions: a classifier over the request head, given to
//! [`WorkloadTimeoutLayer`](crate::WorkloadTimeoutLayer).

use std::fmt;
use std::sync::Arc;

use sturdy_core::{RequestHead, Workload};

/// Picks the workload of a request that carries no [`Workload`] extension.
/// `None` leaves it to the default, [`Workload::Interactive`].
pub trait ClassifyWorkload {
    /// The workload of this request, if the classifier recognises it.
    fn classify(&self, head: &RequestHead<'_>) -> Option<Workload>;
}

/// A classifier that recognises nothing: every request without a
/// [`Workload`] extension is [`Workload::Interactive`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoClassifier;

impl ClassifyWorkload for NoClassifier {
    fn classify(&self, _: &RequestHead<'_>) -> Option<Workload> {
        None
    }
}

/// A closure used as a classifier; made by
/// [`WorkloadTimeoutBuilder::classify_with`](crate::WorkloadTimeoutBuilder::classify_with).
#[derive(Clone, Copy)]
pub struct FnClassifier<F>(pub(crate) F);

impl<F> fmt::Debug for FnClassifier<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnClassifier")
    }
}

impl<F> ClassifyWorkload for FnClassifier<F>
where
    F: Fn(&RequestHead<'_>) -> Option<Workload>,
{
    fn classify(&self, head: &RequestHead<'_>) -> Option<Workload> {
        (self.0)(head)
    }
}

/// Classifies by path prefix: the longest matching prefix wins. A prefix
/// matches the path itself and anything below it (`/v1/batches` matches
/// `/v1/batches` and `/v1/batches/b_1/cancel`, not `/v1/batchesX`).
///
/// The default maps OpenAI's batch endpoints (`/v1/batches`, `/batches`) to
/// [`Workload::Batch`].
///
/// ```
/// use sturdy_core::Workload;
/// use sturdy_timeout::PathClassifier;
/// let c = PathClassifier::default().with_prefix("/v1/responses", Workload::Agentic);
/// assert_eq!(c.classify_path("/v1/batches/b_1"), Some(Workload::Batch));
/// assert_eq!(c.classify_path("/v1/responses"), Some(Workload::Agentic));
/// assert_eq!(c.classify_path("/v1/chat/completions"), None);
/// ```
#[derive(Debug, Clone)]
pub struct PathClassifier {
    rules: Arc<[(Box<str>, Workload)]>,
}

impl PathClassifier {
    /// A classifier with no rules.
    pub fn empty() -> PathClassifier {
        PathClassifier {
            rules: Arc::new([]),
        }
    }

    /// The same classifier with one more rule. A trailing `/` in `prefix` is
    /// ignored; an empty prefix (or `/`) matches every path.
    pub fn with_prefix(self, prefix: impl AsRef<str>, workload: Workload) -> PathClassifier {
        let prefix = prefix.as_ref().trim_end_matches('/');
        let mut rules: Vec<_> = self.rules.iter().cloned().collect();
        rules.retain(|(p, _)| &**p != prefix);
        rules.push((prefix.into(), workload));
        PathClassifier {
            rules: rules.into(),
        }
    }

    /// The workload of `path` by these rules.
    pub fn classify_path(&self, path: &str) -> Option<Workload> {
        self.rules
            .iter()
            .filter(|(prefix, _)| path_is_under(path, prefix))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, w)| *w)
    }
}

fn path_is_under(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.is_empty(),
        None => false,
    }
}

impl Default for PathClassifier {
    fn default() -> Self {
        PathClassifier::empty()
            .with_prefix("/v1/batches", Workload::Batch)
            .with_prefix("/batches", Workload::Batch)
    }
}

impl ClassifyWorkload for PathClassifier {
    fn classify(&self, head: &RequestHead<'_>) -> Option<Workload> {
        self.classify_path(head.uri.path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rules_map_batch_paths_on_segment_boundaries() {
        let c = PathClassifier::default();
        for (path, expect) in [
            ("/v1/batches", Some(Workload::Batch)),
            ("/v1/batches/", Some(Workload::Batch)),
            ("/v1/batches/b_1/cancel", Some(Workload::Batch)),
            ("/batches", Some(Workload::Batch)),
            ("/v1/batchesX", None),
            ("/v1/chat/completions", None),
            ("/", None),
        ] {
            assert_eq!(c.classify_path(path), expect, "{path}");
        }
    }

    #[test]
    fn longest_prefix_wins_and_rules_can_be_replaced() {
        let c = PathClassifier::empty()
            .with_prefix("/v1/", Workload::Agentic)
            .with_prefix("/v1/long", Workload::LongContext);
        assert_eq!(c.classify_path("/v1/long/x"), Some(Workload::LongContext));
        assert_eq!(c.classify_path("/v1/chat"), Some(Workload::Agentic));
        assert_eq!(c.classify_path("/v2/chat"), None);
        let c = c.with_prefix("/v1", Workload::Batch);
        assert_eq!(c.classify_path("/v1/chat"), Some(Workload::Batch));
        let all = PathClassifier::empty().with_prefix("/", Workload::Agentic);
        assert_eq!(all.classify_path("/anything"), Some(Workload::Agentic));
    }
}
