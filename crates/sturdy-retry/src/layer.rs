//! The `Layer`: a validated policy plus the budget shared by every service
//! it makes (and every clone of those).

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use sturdy_core::{BoxBody, InnerBody};
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
///
/// An inner service that takes another body type is refused when it is
/// layered, with a message naming `BoxBody`, rather than when a call is
/// made:
///
/// ```compile_fail,E0277
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use sturdy_retry::{RetryLayer, RetryPolicy};
/// use tower::Layer;
/// // A service taking `Full<Bytes>`, as hyper-util's `Client<_, Full<Bytes>>` does.
/// let inner = tower::service_fn(|_: http::Request<Full<Bytes>>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
/// });
/// let svc = RetryLayer::new(RetryPolicy::default()).layer(inner);
/// ```
///
/// The same service taking `BoxBody` is what the layer wants; callers still
/// send it any body:
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use sturdy_core::BoxBody;
/// use sturdy_retry::{RetryLayer, RetryPolicy};
/// use tower::{Layer, ServiceExt};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let inner = tower::service_fn(|_: http::Request<BoxBody>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
/// });
/// let svc = RetryLayer::new(RetryPolicy::default()).layer(inner);
/// let resp = svc.oneshot(http::Request::new(Full::new(Bytes::from("hi")))).await.unwrap();
/// # let _ = resp; }
/// ```
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

/// The inner service must take the bodies the layer sends it
/// (`http::Request<E>`, `E` an [`InnerBody`]): a service that takes
/// anything else is refused here, with a message that says what to change,
/// rather than later by a method that "exists but its trait bounds were
/// not satisfied".
impl<S, E> Layer<S> for RetryLayer<E>
where
    S: tower_service::Service<http::Request<E>>,
    E: InnerBody,
{
    type Service = RetryService<S, E>;

    fn layer(&self, inner: S) -> RetryService<S, E> {
        self.service(inner)
    }
}

impl<E> RetryLayer<E> {
    /// What [`Layer::layer`] does, without its checks on `inner`: for
    /// stacks composed before their inner service is known (the checks
    /// then come with the first call).
    pub fn service<S>(&self, inner: S) -> RetryService<S, E> {
        RetryService::from_shared(inner, Arc::clone(&self.shared))
    }
}
