//! The call plan; see [`CallPlan`].

use std::fmt;

use http::{HeaderMap, Method, Request, Uri};

use crate::{CallContext, Classifier, Deadline, DeadlineLimit, Profile, Reach, Workload, is_grpc};

/// The parts of a request a classifier or a rule may look at.
///
/// Its `Debug` output never shows header values (they may hold an API key).
#[derive(Clone, Copy)]
pub struct RequestHead<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request URI.
    pub uri: &'a Uri,
    /// The request headers.
    pub headers: &'a HeaderMap,
}

impl<'a> RequestHead<'a> {
    /// The head of `req`.
    pub fn of<B>(req: &'a Request<B>) -> RequestHead<'a> {
        RequestHead {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
        }
    }
}

impl fmt::Debug for RequestHead<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestHead")
            .field("method", self.method)
            .field("path", &self.uri.path())
            .field("headers", &self.headers.len())
            .finish()
    }
}

/// Whether a request may be sent again after an attempt whose fate is
/// unknown (sent, but no response head came back), and whether the server
/// could tell a repeat from a new request.
///
/// One definition of **possibly duplicated**, used by the retry layer, the
/// [`CallContext`], the metrics and their help text: a retry sent after an
/// attempt of unknown reach, of a request the server cannot recognise as a
/// repeat — its method is not idempotent (RFC 9110 §9.2.2) and it carries
/// no idempotency key. Such a retry may have run twice on the server.
///
/// ```
/// use sturdy_core::{Reach, Safety};
/// // A POST marked `RetrySafe`, without an idempotency key.
/// let llm_call = Safety::new(true, false);
/// assert!(llm_call.possibly_duplicated(Reach::Unknown));
/// assert!(!llm_call.possibly_duplicated(Reach::NotSent));
/// // A PUT, or a request with an idempotency key: the server can tell.
/// assert!(!Safety::new(true, true).possibly_duplicated(Reach::Unknown));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Safety {
    repeatable: bool,
    deduplicated: bool,
}

impl Safety {
    /// What "possibly duplicated" counts, in one sentence: the help text of
    /// the metric and the words of every doc that names it.
    pub const POSSIBLY_DUPLICATED: &'static str = "Retries sent after an attempt of unknown reach (sent, no response head), of a request whose method is not idempotent and that carries no idempotency key: the server may have processed it twice";

    /// `repeatable`: it may be sent again after an unknown reach;
    /// `deduplicated`: a repeat is harmless (idempotent method) or
    /// recognisable (an idempotency key).
    pub const fn new(repeatable: bool, deduplicated: bool) -> Safety {
        Safety {
            repeatable,
            deduplicated,
        }
    }

    /// Whether it may be sent again after an attempt of unknown reach.
    pub const fn is_repeatable(&self) -> bool {
        self.repeatable
    }

    /// Whether a repeat cannot run twice on the server unnoticed.
    pub const fn is_deduplicated(&self) -> bool {
        self.deduplicated
    }

    /// Whether a retry after an attempt that got to `reach` is possibly
    /// duplicated (see the type's docs).
    pub const fn possibly_duplicated(&self, reach: Reach) -> bool {
        matches!(reach, Reach::Unknown) && !self.deduplicated
    }
}

/// The per-call plan: every fact about a call that more than one layer needs,
/// settled once by the layer that owns it and only read below it, carried
/// in one request extension beside the [`CallContext`].
///
/// | fact | settled by | read by |
/// |---|---|---|
/// | workload, [`Profile`], [`Deadline`] | the workload timeout layer | attempt timeouts, retry, metrics (from the context, at the call's end) |
/// | [`Safety`]: may it be sent again after an unknown reach | the retry layer | the retry layer's decisions, the context's "possibly duplicated" |
/// | the [`Classifier`] that judges answers | the retry layer (its policy's) | retry and both metrics scopes |
/// | whether it is gRPC | the first layer that sees the request | every layer |
///
/// A layer that finds no plan (used alone, or in another order) makes its
/// own part from its own configuration, so a setting given to a layer
/// always takes effect when that layer is used alone; it inserts a plan for
/// the layers below when it has something to settle or to read back (the
/// attempt timeout, which settles nothing and reads nothing back, and the
/// attempts metrics, which have nothing to settle, insert none: a plan
/// costs the request's extension map, the boxed plan and the context).
///
/// The plan travels down with the request; the [`CallContext`] inside it is
/// shared, and carries back up what the layers above read when the call
/// ends (the workload, attempts, retries). A retry copies the plan as the
/// retry layer received it, so a layer below the retry layer settles its
/// facts afresh for every attempt.
///
/// One request extension.
///
/// ```
/// use std::time::Duration;
/// use sturdy_core::{CallPlan, Deadline, DeadlineLimit, Profile, Workload};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut req = http::Request::post("http://api.test/v1/batches").body(()).unwrap();
/// let plan = CallPlan::of_request(&mut req);
/// assert_eq!(plan.workload(), None);
/// // What a workload layer does: settles workload, profile and deadline.
/// let profile = Profile::for_workload(Workload::Batch);
/// let limit = DeadlineLimit::profile(profile.total);
/// plan.settle_workload(Workload::Batch, profile, Deadline::after(profile.total), limit);
/// // What layers below see, and what the context carries back up.
/// let plan = CallPlan::from_extensions(req.extensions()).unwrap();
/// assert_eq!(plan.profile().unwrap().total, Duration::from_secs(60));
/// assert_eq!(plan.context().workload(), Some(Workload::Batch));
/// # }
/// ```
#[derive(Clone, Default)]
pub struct CallPlan {
    workload: Option<Workload>,
    profile: Option<Profile>,
    deadline: Option<Deadline>,
    deadline_limit: DeadlineLimit,
    safety: Option<Safety>,
    grpc: Option<bool>,
    context: CallContext,
}

impl CallPlan {
    /// The plan `req` carries, inserted (with a fresh [`CallContext`]) when
    /// it carries none.
    pub fn of_request<B>(req: &mut Request<B>) -> &mut CallPlan {
        let grpc = match req.extensions().get::<CallPlan>() {
            Some(plan) if plan.grpc.is_some() => None,
            _ => Some(is_grpc(req.headers())),
        };
        let plan = req.extensions_mut().get_or_insert_default::<CallPlan>();
        if grpc.is_some() {
            plan.grpc = grpc;
        }
        plan
    }

    /// The plan in `ext`, a request's extensions taken out of it so that
    /// its `headers` can be read beside them (`std::mem::take(req.
    /// extensions_mut())`, put back before the request goes on), inserted
    /// when there is none; and whether `ext` holds anything beside the
    /// plan (a caller's markers may be among it: see
    /// [`markers`](CallPlan::markers)). One lookup: what a layer on every
    /// request's path uses instead of [`of_request`](CallPlan::of_request)
    /// and `markers`, which take three.
    ///
    /// ```
    /// use sturdy_core::{CallPlan, Workload};
    /// let mut req = http::Request::new(());
    /// let mut ext = std::mem::take(req.extensions_mut());
    /// let (plan, others) = CallPlan::in_extensions(&mut ext, req.headers());
    /// assert!(!plan.is_grpc() && !others);
    /// *req.extensions_mut() = ext;
    ///
    /// // A caller's marker beside the plan: `others` says to look.
    /// req.extensions_mut().insert(Workload::Batch);
    /// let mut ext = std::mem::take(req.extensions_mut());
    /// let (_, others) = CallPlan::in_extensions(&mut ext, req.headers());
    /// assert!(others);
    /// assert_eq!(CallPlan::markers(&ext).get::<Workload>(), Some(&Workload::Batch));
    /// ```
    pub fn in_extensions<'a>(
        ext: &'a mut http::Extensions,
        headers: &HeaderMap,
    ) -> (&'a mut CallPlan, bool) {
        let len = ext.len();
        let mut inserted = false;
        let plan = ext.get_or_insert_with(|| {
            inserted = true;
            CallPlan::default()
        });
        if plan.grpc.is_none() {
            plan.grpc = Some(is_grpc(headers));
        }
        (plan, len > usize::from(!inserted))
    }

    /// The plan a request carries, if any.
    pub fn from_extensions(ext: &http::Extensions) -> Option<&CallPlan> {
        ext.get::<CallPlan>()
    }

    /// The plan a request carries, if any, and the caller's markers: one
    /// lookup when the request carries its plan alone, or nothing.
    pub fn find(ext: &http::Extensions) -> (Option<&CallPlan>, Markers<'_>) {
        let plan = ext.get::<CallPlan>();
        let others = ext.len() > usize::from(plan.is_some());
        (
            plan,
            Markers {
                ext: others.then_some(ext),
            },
        )
    }

    /// The caller's marker extensions (`Workload`, `Profile`, `Deadline`,
    /// `RetrySafe`), looked up only when the request carries something
    /// beside its plan: a request that carries only its plan costs no
    /// lookup per marker.
    pub fn markers(ext: &http::Extensions) -> Markers<'_> {
        let others = match ext.len() {
            0 => false,
            1 => ext.get::<CallPlan>().is_none(),
            _ => true,
        };
        Markers {
            ext: others.then_some(ext),
        }
    }

    /// The call's workload, once a workload layer has settled it.
    pub fn workload(&self) -> Option<Workload> {
        self.workload
    }

    /// The call's timeout profile, once settled.
    pub fn profile(&self) -> Option<&Profile> {
        self.profile.as_ref()
    }

    /// By when the call must be over, once settled.
    pub fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }

    /// What the deadline stands for (the limit its timeout names), once
    /// settled.
    pub fn deadline_limit(&self) -> Option<DeadlineLimit> {
        self.deadline.map(|_| self.deadline_limit)
    }

    /// Whether the request may be sent again, once the retry layer settled it.
    pub fn safety(&self) -> Option<Safety> {
        self.safety
    }

    /// The classifier that judges this call's answers (kept in the
    /// context, where the call metrics above read it too).
    pub fn classifier(&self) -> &Classifier {
        self.context.classifier()
    }

    /// Whether the request is gRPC (`content-type: application/grpc...`).
    pub fn is_grpc(&self) -> bool {
        self.grpc.unwrap_or(false)
    }

    /// The call's shared record.
    pub fn context(&self) -> &CallContext {
        &self.context
    }

    /// Settles the workload, its profile and the deadline with what it
    /// stands for (the workload layer's part), and records the workload in
    /// the context.
    pub fn settle_workload(
        &mut self,
        workload: Workload,
        profile: Profile,
        deadline: Deadline,
        limit: DeadlineLimit,
    ) {
        self.workload = Some(workload);
        self.profile = Some(profile);
        self.deadline = Some(deadline);
        self.deadline_limit = limit;
        self.context.set_workload(workload);
    }

    /// Settles whether the request may be sent again (the retry layer's part).
    pub fn settle_safety(&mut self, safety: Safety) {
        self.safety = Some(safety);
    }

    /// Sets the classifier answers are judged with (the retry layer's
    /// part; the first one set stays).
    pub fn set_classifier(&self, classifier: Classifier) {
        self.context.set_classifier(classifier);
    }
}

/// The caller's marker extensions of one request: see
/// [`CallPlan::markers`].
#[derive(Debug, Clone, Copy)]
pub struct Markers<'a> {
    ext: Option<&'a http::Extensions>,
}

impl<'a> Markers<'a> {
    /// Whether the request carries anything beside its plan, so that a
    /// marker may be there.
    pub fn any(&self) -> bool {
        self.ext.is_some()
    }

    /// The marker of type `T`, if the caller set one.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&'a T> {
        self.ext?.get::<T>()
    }
}

impl fmt::Debug for CallPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallPlan")
            .field("workload", &self.workload)
            .field("profile", &self.profile)
            .field("deadline", &self.deadline)
            .field("deadline_limit", &self.deadline_limit)
            .field("safety", &self.safety)
            .field("classifier", self.classifier())
            .field("grpc", &self.grpc)
            .field("context", &self.context)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_plan_per_request_and_grpc_settled_once() {
        let mut req = http::Request::post("http://h/x")
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let ctx = CallPlan::of_request(&mut req).context().clone();
        assert!(CallPlan::of_request(&mut req).is_grpc());
        ctx.record_attempt();
        assert_eq!(CallPlan::of_request(&mut req).context().attempts(), 1);
        assert_eq!(req.extensions().len(), 1);
    }

    #[test]
    fn request_head_debug_hides_header_values() {
        let req = http::Request::get("http://h/v1/chat?key=sk-secret")
            .header("authorization", "Bearer sk-secret")
            .body(())
            .unwrap();
        let shown = format!("{:?}", RequestHead::of(&req));
        assert!(!shown.contains("sk-secret"), "{shown}");
        assert!(shown.contains("/v1/chat"), "{shown}");
    }
}
