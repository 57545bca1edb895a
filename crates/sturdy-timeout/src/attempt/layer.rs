//! The `Layer` and its builder: the profiles the attempt limits fall back on,
//! and whether to ask hyper-util where the attempt got.

use std::time::Duration;

use sturdy_core::{InvalidProfile, Profile, Profiles, Workload};
use tower_layer::Layer;

use super::AttemptTimeout;

/// The per-attempt timeout layer: `headers` and `read` for every attempt,
/// each cut short by the request's [`Deadline`](sturdy_core::Deadline) (see
/// the [crate docs](crate)).
///
/// The limits come from the request's [`Profile`] extension if it has one,
/// else from this layer's profile of its [`Workload`] extension (set by
/// [`WorkloadTimeoutLayer`](crate::WorkloadTimeoutLayer)), else from the
/// [`Workload::Interactive`] profile.
///
/// ```
/// use std::time::Duration;
/// use sturdy_core::Workload;
/// use sturdy_timeout::AttemptTimeoutLayer;
/// let layer = AttemptTimeoutLayer::builder()
///     .headers(Workload::Interactive, Duration::from_secs(20))
///     .capture_connection(true)
///     .build()?;
/// assert_eq!(layer.profiles().get(Workload::Interactive).headers, Duration::from_secs(20));
/// # Ok::<(), sturdy_core::InvalidProfile>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct AttemptTimeoutLayer {
    profiles: Profiles,
    capture_connection: bool,
}

impl AttemptTimeoutLayer {
    /// DESIGN.md's default profiles; no connection capture.
    pub fn new() -> AttemptTimeoutLayer {
        AttemptTimeoutLayer {
            profiles: Profiles::default(),
            capture_connection: false,
        }
    }

    /// A builder starting from [`AttemptTimeoutLayer::new`].
    pub fn builder() -> AttemptTimeoutBuilder {
        AttemptTimeoutBuilder {
            layer: AttemptTimeoutLayer::new(),
        }
    }

    /// These profiles; refused when a phase is zero.
    pub fn from_profiles(profiles: Profiles) -> Result<AttemptTimeoutLayer, InvalidProfile> {
        AttemptTimeoutLayer::builder().profiles(profiles).build()
    }

    /// The profiles this layer falls back on.
    pub fn profiles(&self) -> &Profiles {
        &self.profiles
    }
}

impl Default for AttemptTimeoutLayer {
    fn default() -> Self {
        AttemptTimeoutLayer::new()
    }
}

impl<S> Layer<S> for AttemptTimeoutLayer {
    type Service = AttemptTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AttemptTimeout::from_parts(inner, self.profiles, self.capture_connection)
    }
}

/// Builds an [`AttemptTimeoutLayer`]. [`build`](AttemptTimeoutBuilder::build)
/// refuses a zero phase.
#[derive(Debug, Clone, Copy)]
pub struct AttemptTimeoutBuilder {
    layer: AttemptTimeoutLayer,
}

impl AttemptTimeoutBuilder {
    /// Replaces every profile.
    pub fn profiles(mut self, profiles: Profiles) -> Self {
        self.layer.profiles = profiles;
        self
    }

    /// Replaces the profile of one workload.
    pub fn profile(mut self, workload: Workload, profile: Profile) -> Self {
        *self.layer.profiles.get_mut(workload) = profile;
        self
    }

    /// Sets how long an attempt of `workload` may wait for its response head.
    pub fn headers(mut self, workload: Workload, limit: Duration) -> Self {
        self.layer.profiles.get_mut(workload).headers = limit;
        self
    }

    /// Sets the longest silence in the response body of `workload`.
    pub fn read(mut self, workload: Workload, limit: Duration) -> Self {
        self.layer.profiles.get_mut(workload).read = limit;
        self
    }

    /// Sets the `total` phase of `workload`: this layer uses it only to
    /// bound `grpc-timeout` and to name the limit in a timeout that the
    /// deadline cut short.
    pub fn total(mut self, workload: Workload, limit: Duration) -> Self {
        self.layer.profiles.get_mut(workload).total = limit;
        self
    }

    /// Turn on when the inner service is a hyper-util legacy `Client` (such
    /// as `sturdy::client()`): every attempt then carries hyper-util's
    /// `capture_connection` extension, and a timeout that fires before the
    /// client obtained a connection is reported as `Reach::NotSent` (a
    /// `connect_timeout`: nothing reached a server, so retrying is safe).
    ///
    /// Leave off for any other inner service (a tonic `Channel`, a
    /// hand-written client): nothing there ever reports a connection, so a
    /// `headers` timeout is reported as `Reach::Unknown`. Costs one small
    /// allocation per attempt (the capture channel).
    pub fn capture_connection(mut self, on: bool) -> Self {
        self.layer.capture_connection = on;
        self
    }

    /// The layer, or the first zero phase found.
    pub fn build(self) -> Result<AttemptTimeoutLayer, InvalidProfile> {
        self.layer.profiles.validate()?;
        Ok(self.layer)
    }
}
