//! The `Layer` and its builder: the profiles per workload and the classifier,
//! checked once when the layer is built.

use std::time::Duration;

use sturdy_core::{InvalidProfile, Profile, Profiles, Workload};
use tower_layer::Layer;

use super::WorkloadTimeout;
use crate::classify::{ClassifyWorkload, FnClassifier, PathClassifier, RequestHead};

/// The outer, per-call timeout layer: picks each request's [`Workload`] and
/// [`Profile`], sets its [`Deadline`](sturdy_core::Deadline), and enforces
/// `ready` and `total` (see the [crate docs](crate)).
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
}

impl WorkloadTimeoutLayer {
    /// DESIGN.md's default profiles, and the default [`PathClassifier`]
    /// (OpenAI's batch endpoints are [`Workload::Batch`]).
    pub fn new() -> WorkloadTimeoutLayer {
        WorkloadTimeoutLayer {
            profiles: Profiles::default(),
            classifier: PathClassifier::default(),
        }
    }

    /// A builder starting from [`WorkloadTimeoutLayer::new`].
    pub fn builder() -> WorkloadTimeoutBuilder {
        WorkloadTimeoutBuilder {
            profiles: Profiles::default(),
            classifier: PathClassifier::default(),
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
}

impl<S, C: Clone> Layer<S> for WorkloadTimeoutLayer<C> {
    type Service = WorkloadTimeout<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        WorkloadTimeout::from_parts(inner, self.profiles, self.classifier.clone())
    }
}

/// Builds a [`WorkloadTimeoutLayer`]: every phase of every workload, and the
/// classifier. [`build`](WorkloadTimeoutBuilder::build) refuses a zero phase.
#[derive(Debug, Clone)]
pub struct WorkloadTimeoutBuilder<C = PathClassifier> {
    profiles: Profiles,
    classifier: C,
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

    /// Sets the `headers` phase of `workload` (enforced by
    /// [`AttemptTimeoutLayer`](crate::AttemptTimeoutLayer), which reads the
    /// [`Profile`] this layer does not put in the request: give both layers
    /// the same profiles).
    pub fn headers(mut self, workload: Workload, limit: Duration) -> Self {
        self.profiles.get_mut(workload).headers = limit;
        self
    }

    /// Sets the `read` phase of `workload` (enforced by
    /// [`AttemptTimeoutLayer`](crate::AttemptTimeoutLayer)).
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
        }
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
        })
    }
}
