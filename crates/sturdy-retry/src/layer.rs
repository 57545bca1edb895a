//! The `Layer`: a validated policy plus the budget shared by every service
//! it makes (and every clone of those).

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use sturdy_core::BoxBody;
use tower_layer::Layer;

use crate::budget::SharedBudget;
use crate::{RetryPolicy, RetryService};

/// What every service of one layer shares.
pub(crate) struct Shared {
    pub(crate) policy: RetryPolicy,
    pub(crate) budget: Option<SharedBudget>,
    /// Seeds handed to calls that need jitter, one each.
    pub(crate) seeds: AtomicU64,
}

/// Retries failed attempts of the wrapped service (see the crate docs).
///
/// `E` is the request body type the inner service takes (`BoxBody` for
/// `sturdy::client()`, `tonic::body::Body` for a tonic `Channel`); it is
/// normally inferred from the inner service.
pub struct RetryLayer<E = BoxBody> {
    shared: Arc<Shared>,
    _body: PhantomData<fn(E)>,
}

impl<E> RetryLayer<E> {
    /// A layer with this policy and a fresh budget.
    pub fn new(policy: RetryPolicy) -> RetryLayer<E> {
        let budget = policy.budget.as_ref().map(SharedBudget::new);
        let seed = policy.seed.unwrap_or_else(rand::random);
        RetryLayer {
            shared: Arc::new(Shared {
                policy,
                budget,
                seeds: AtomicU64::new(seed),
            }),
            _body: PhantomData,
        }
    }

    /// The layer's policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.shared.policy
    }
}

impl<E> Default for RetryLayer<E> {
    /// The default policy ([`RetryPolicy::default`]).
    fn default() -> Self {
        RetryLayer::new(RetryPolicy::default())
    }
}

impl<E> Clone for RetryLayer<E> {
    fn clone(&self) -> Self {
        RetryLayer {
            shared: Arc::clone(&self.shared),
            _body: PhantomData,
        }
    }
}

impl<E> fmt::Debug for RetryLayer<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("policy", &self.shared.policy)
            .finish()
    }
}

impl<S, E> Layer<S> for RetryLayer<E> {
    type Service = RetryService<S, E>;

    fn layer(&self, inner: S) -> RetryService<S, E> {
        RetryService::from_shared(inner, Arc::clone(&self.shared))
    }
}
