//! The outermost piece of the stack: marks the requests the user says may
//! be sent twice with `RetrySafe`, so the retry layer repeats them after an
//! `Unknown` failure (and counts such retries as possibly duplicated).

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use sturdy_core::RetrySafe;
use sturdy_timeout::RequestHead;
use tower_layer::Layer;
use tower_service::Service;

type Pick = dyn Fn(&RequestHead<'_>) -> bool + Send + Sync;

/// Which requests are `RetrySafe`.
#[derive(Clone, Default)]
pub enum RetrySafeRule {
    /// Only those the caller marked with the `RetrySafe` extension.
    #[default]
    Marked,
    /// Every request (for an LLM API: inference has no side effect but
    /// billing).
    All,
    /// Those the predicate picks (and those the caller marked).
    When(Arc<Pick>),
}

impl RetrySafeRule {
    /// A rule from a predicate over the request head.
    pub fn when<F>(pick: F) -> RetrySafeRule
    where
        F: Fn(&RequestHead<'_>) -> bool + Send + Sync + 'static,
    {
        RetrySafeRule::When(Arc::new(pick))
    }
}

impl fmt::Debug for RetrySafeRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetrySafeRule::Marked => f.write_str("Marked"),
            RetrySafeRule::All => f.write_str("All"),
            RetrySafeRule::When(_) => f.write_str("When(..)"),
        }
    }
}

/// Layer of [`MarkRetrySafe`].
#[derive(Debug, Clone, Default)]
pub struct MarkRetrySafeLayer {
    rule: RetrySafeRule,
}

impl MarkRetrySafeLayer {
    /// Marks requests as `rule` says.
    pub fn new(rule: RetrySafeRule) -> MarkRetrySafeLayer {
        MarkRetrySafeLayer { rule }
    }
}

impl<S> Layer<S> for MarkRetrySafeLayer {
    type Service = MarkRetrySafe<S>;

    fn layer(&self, inner: S) -> MarkRetrySafe<S> {
        MarkRetrySafe {
            inner,
            rule: self.rule.clone(),
        }
    }
}

/// Inserts the `RetrySafe` extension into the requests its rule picks; the
/// response future is the inner one, untouched.
#[derive(Debug, Clone)]
pub struct MarkRetrySafe<S> {
    inner: S,
    rule: RetrySafeRule,
}

impl<S> MarkRetrySafe<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, B> Service<http::Request<B>> for MarkRetrySafe<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> S::Future {
        let mark = match &self.rule {
            RetrySafeRule::Marked => false,
            RetrySafeRule::All => true,
            RetrySafeRule::When(pick) => pick(&RequestHead {
                method: req.method(),
                uri: req.uri(),
                headers: req.headers(),
            }),
        };
        if mark {
            req.extensions_mut().insert(RetrySafe);
        }
        self.inner.call(req)
    }
}
