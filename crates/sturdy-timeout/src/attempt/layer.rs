//! The `Layer` and its builder: the profiles the attempt limits fall back on,
//! and whether to ask hyper-util where the attempt got.

use std::sync::Arc;
use std::time::Duration;

use sturdy_core::{InvalidProfile, Profile, Profiles, Workload};
use tower_layer::Layer;

use super::AttemptTimeout;

/// The per-attempt timeout layer: `headers` and `read` for every attempt,
/// each cut short by the request's [`Deadline`](sturdy_core::Deadline) (see
/// the [crate docs](crate)).
///
/// The limits come from the profile a
/// [`WorkloadTimeoutLayer`](crate::WorkloadTimeoutLayer) above settled in the
/// request's [`CallPlan`](sturdy_core::CallPlan), and the deadline from
/// there too; a `headers` or `read` phase set on this layer's builder caps
/// the plan's (the smaller wins), so it takes effect either way. Used
/// without a plan, this layer makes them from its own configuration: the
/// request's [`Profile`] extension if it has one, else this layer's profile
/// of its [`Workload`] extension, else the [`Workload::Interactive`]
/// profile; the deadline from a [`Deadline`](sturdy_core::Deadline)
/// extension.
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
    own: OwnLimits,
    capture_connection: bool,
}

/// This layer's own profiles, and which of their per-attempt phases were
/// set on purpose (those cap a plan's).
#[derive(Debug, Clone, Copy)]
pub(crate) struct OwnLimits {
    pub(crate) profiles: Profiles,
    /// Bit `2·workload` for `headers`, `2·workload + 1` for `read`.
    set: u8,
}

const HEADERS: u8 = 0;
const READ: u8 = 1;

impl OwnLimits {
    fn mark(&mut self, workload: Workload, phase: u8) {
        self.set |= 1 << (2 * workload as u8 + phase);
    }

    fn is_set(&self, workload: Workload, phase: u8) -> bool {
        self.set & (1 << (2 * workload as u8 + phase)) != 0
    }

    /// `planned`, with every phase set on this layer for `workload` capping
    /// the plan's.
    pub(crate) fn cap(&self, workload: Option<Workload>, mut planned: Profile) -> Profile {
        let Some(w) = workload.filter(|_| self.set != 0) else {
            return planned;
        };
        let own = self.profiles.get(w);
        if self.is_set(w, HEADERS) {
            planned.headers = planned.headers.min(own.headers);
        }
        if self.is_set(w, READ) {
            planned.read = planned.read.min(own.read);
        }
        planned
    }
}

impl AttemptTimeoutLayer {
    /// The default profiles ([`Profile::for_workload`]); no connection
    /// capture.
    pub fn new() -> AttemptTimeoutLayer {
        AttemptTimeoutLayer {
            own: OwnLimits {
                profiles: Profiles::default(),
                set: 0,
            },
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
        &self.own.profiles
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
        AttemptTimeout::from_parts(inner, Arc::new(self.own), self.capture_connection)
    }
}

/// Builds an [`AttemptTimeoutLayer`]. [`build`](AttemptTimeoutBuilder::build)
/// refuses a zero phase.
#[derive(Debug, Clone, Copy)]
pub struct AttemptTimeoutBuilder {
    layer: AttemptTimeoutLayer,
}

impl AttemptTimeoutBuilder {
    /// Replaces every profile (its `headers` and `read` cap a plan's).
    pub fn profiles(mut self, profiles: Profiles) -> Self {
        for w in Workload::ALL {
            self = self.profile(w, *profiles.get(w));
        }
        self
    }

    /// Replaces the profile of one workload (its `headers` and `read` cap a
    /// plan's).
    pub fn profile(mut self, workload: Workload, profile: Profile) -> Self {
        *self.layer.own.profiles.get_mut(workload) = profile;
        self.layer.own.mark(workload, HEADERS);
        self.layer.own.mark(workload, READ);
        self
    }

    /// Sets how long an attempt of `workload` may wait for its response
    /// head (capping a plan's).
    pub fn headers(mut self, workload: Workload, limit: Duration) -> Self {
        self.layer.own.profiles.get_mut(workload).headers = limit;
        self.layer.own.mark(workload, HEADERS);
        self
    }

    /// Sets the longest silence in the response body of `workload` (capping
    /// a plan's).
    pub fn read(mut self, workload: Workload, limit: Duration) -> Self {
        self.layer.own.profiles.get_mut(workload).read = limit;
        self.layer.own.mark(workload, READ);
        self
    }

    /// Sets the `total` phase of `workload`, used without a plan: this
    /// layer uses it only to bound `grpc-timeout` and to name the limit in
    /// a timeout that the deadline cut short.
    pub fn total(mut self, workload: Workload, limit: Duration) -> Self {
        self.layer.own.profiles.get_mut(workload).total = limit;
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
        self.layer.own.profiles.validate()?;
        Ok(self.layer)
    }
}
