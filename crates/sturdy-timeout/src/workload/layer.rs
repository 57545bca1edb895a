//! The `Layer` and its builder: the profiles per workload, the classifier
//! and the default workload, checked once when the layer is built.

use std::time::Duration;

use sturdy_core::{InvalidProfile, Profile, Profiles, RequestHead, Workload};
use tower_layer::Layer;

use super::WorkloadTimeout;
use crate::classify::{ClassifyWorkload, FnClassifier, PathClassifier};

/// The outer, per-call timeout layer: picks each request's [`Workload`] and
/// [`Profile`], settles them and the [`Deadline`](sturdy_core::Deadline) in
/// the request's [`CallPlan`](sturdy_core::CallPlan), and enforces `ready`
/// and `total` (see the [crate docs](crate)).
///
/// Its `headers` and `read` phases are per attempt: an
/// [`AttemptTimeoutLayer`](crate::AttemptTimeoutLayer) below enforces them
/// on every attempt, reading this layer's profile from the plan. With
/// nothing below that makes attempts (no retry layer, no attempt timeout)
/// the call is one attempt and this layer enforces them itself, so every
/// phase set here takes effect when the layer is used alone.
///
/// ```
/// use std::time::Duration;
/// use sturdy_core::Workload;
/// use sturdy_timeout::WorkloadTimeoutLayer;
/// let layer = WorkloadTimeoutLayer::builder()
///     .total(Workload::Interactive, Duration::from_secs(30))
///     .classify_with(|head| (head.uri.path() == "/v1/responses").then_some(Workload::Agentic))
///     .build()?;
/// assert_eq!(layer.profiles().get(Workload::Interactive).total, Duration::from_secs(30));
/// assert!(WorkloadTimeoutLayer::builder().ready(Workload::Batch, Duration::ZERO).build().is_err());
/// # Ok::<(), sturdy_core::InvalidProfile>(())
/// ```
#[derive(Debug, Clone)]
pub struct WorkloadTimeoutLayer<C = PathClassifier> {
    profiles: Profiles,
    classifier: C,
    default_workload: Workload,
}

impl WorkloadTimeoutLayer {
    /// The default profiles ([`Profile::for_workload`]), the default
    /// [`PathClassifier`] (OpenAI's batch endpoints are
    /// [`Workload::Batch`]) and [`Workload::Interactive`] for the rest.
    pub fn new() -> WorkloadTimeoutLayer {
        WorkloadTimeoutLayer {
            profiles: Profiles::default(),
            classifier: PathClassifier::default(),
            default_workload: Workload::Interactive,
        }
    }

    /// A builder starting from [`WorkloadTimeoutLayer::new`].
    pub fn builder() -> WorkloadTimeoutBuilder {
        WorkloadTimeoutBuilder {
            profiles: Profiles::default(),
            classifier: PathClassifier::default(),
            default_workload: Workload::Interactive,
        }
    }

    /// These profiles and the default classifier; refused when a phase is zero.
    pub fn from_profiles(profiles: Profiles) -> Result<WorkloadTimeoutLayer, InvalidProfile> {
        WorkloadTimeoutLayer::builder().profiles(profiles).build()
    }
}

impl Default for WorkloadTimeoutLayer {
    fn default() -> Self {
        WorkloadTimeoutLayer::new()
    }
}

impl<C> WorkloadTimeoutLayer<C> {
    /// The profiles this layer enforces.
    pub fn profiles(&self) -> &Profiles {
        &self.profiles
    }

    /// The classifier this layer uses.
    pub fn classifier(&self) -> &C {
        &self.classifier
    }

    /// The workload of a request that neither the caller nor the
    /// classifier placed.
    pub fn default_workload(&self) -> Workload {
        self.default_workload
    }
}

impl<S, C: Clone> Layer<S> for WorkloadTimeoutLayer<C> {
    type Service = WorkloadTimeout<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        WorkloadTimeout::from_parts(
            inner,
            self.profiles,
            self.classifier.clone(),
            self.default_workload,
        )
    }
}

/// Builds a [`WorkloadTimeoutLayer`]: every phase of every workload, and the
/// classifier. [`build`](WorkloadTimeoutBuilder::build) refuses a zero phase.
#[derive(Debug, Clone)]
pub struct WorkloadTimeoutBuilder<C = PathClassifier> {
    profiles: Profiles,
    classifier: C,
    default_workload: Workload,
}

impl<C> WorkloadTimeoutBuilder<C> {
    /// Replaces every profile.
    pub fn profiles(mut self, profiles: Profiles) -> Self {
        self.profiles = profiles;
        self
    }

    /// Replaces the profile of one workload.
    pub fn profile(mut self, workload: Workload, profile: Profile) -> Self {
        *self.profiles.get_mut(workload) = profile;
        self
    }

    /// Sets how long a call of `workload` may wait for the inner service's
    /// capacity.
    pub fn ready(mut self, workload: Workload, limit: Duration) -> Self {
        self.profiles.get_mut(workload).ready = limit;
        self
    }

    /// Sets the `headers` phase of `workload`: per attempt, by an
    /// [`AttemptTimeoutLayer`](crate::AttemptTimeoutLayer) below (which
    /// reads it from the plan), else by this layer (see the type's docs).
    pub fn headers(mut self, workload: Workload, limit: Duration) -> Self {
        self.profiles.get_mut(workload).headers = limit;
        self
    }

    /// Sets the `read` phase of `workload`: per attempt, by an
    /// [`AttemptTimeoutLayer`](crate::AttemptTimeoutLayer) below, else by
    /// this layer.
    pub fn read(mut self, workload: Workload, limit: Duration) -> Self {
        self.profiles.get_mut(workload).read = limit;
        self
    }

    /// Sets how long a whole call of `workload` may take, body included.
    pub fn total(mut self, workload: Workload, limit: Duration) -> Self {
        self.profiles.get_mut(workload).total = limit;
        self
    }

    /// Uses `classifier` for requests without a [`Workload`] extension
    /// (e.g. [`NoClassifier`](crate::NoClassifier), or a
    /// [`PathClassifier`] with more rules).
    pub fn classifier<C2: ClassifyWorkload>(self, classifier: C2) -> WorkloadTimeoutBuilder<C2> {
        WorkloadTimeoutBuilder {
            profiles: self.profiles,
            classifier,
            default_workload: self.default_workload,
        }
    }

    /// The workload of a request that neither the caller (a [`Workload`]
    /// extension) nor the classifier placed (default
    /// [`Workload::Interactive`]).
    pub fn default_workload(mut self, workload: Workload) -> Self {
        self.default_workload = workload;
        self
    }

    /// Uses a closure over the request head as the classifier.
    pub fn classify_with<F>(self, f: F) -> WorkloadTimeoutBuilder<FnClassifier<F>>
    where
        F: Fn(&RequestHead<'_>) -> Option<Workload>,
    {
        self.classifier(FnClassifier(f))
    }

    /// The layer, or the first zero phase found.
    pub fn build(self) -> Result<WorkloadTimeoutLayer<C>, InvalidProfile> {
        self.profiles.validate()?;
        Ok(WorkloadTimeoutLayer {
            profiles: self.profiles,
            classifier: self.classifier,
            default_workload: self.default_workload,
        })
    }
}
