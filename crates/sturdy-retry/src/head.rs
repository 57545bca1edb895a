//! What a retry needs to send the request again, everything but the body:
//! method, URI, version, headers, and the plan — not the whole extension
//! map when the plan is all it holds (the common case), so the success path
//! copies no map.

use http::request::Parts;
use http::{Extensions, HeaderMap, Method, Request, Uri, Version};
use sturdy_core::CallPlan;

/// The request head a retry sends again.
pub(crate) struct KeptHead {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    extensions: KeptExtensions,
}

enum KeptExtensions {
    /// The request carried the plan and nothing else.
    Plan(CallPlan),
    /// The request carried more (the caller's own extensions, tonic's
    /// method): all of it.
    All(Extensions),
}

impl KeptHead {
    /// Copies `parts`, whose extensions hold the call's plan.
    pub(crate) fn copy(parts: &Parts) -> KeptHead {
        let ext = &parts.extensions;
        let extensions = match CallPlan::from_extensions(ext) {
            Some(plan) if ext.len() == 1 => KeptExtensions::Plan(plan.clone()),
            _ => KeptExtensions::All(ext.clone()),
        };
        KeptHead {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            extensions,
        }
    }

    /// The plan, as this layer settled it.
    pub(crate) fn plan(&self) -> Option<&CallPlan> {
        match &self.extensions {
            KeptExtensions::Plan(plan) => Some(plan),
            KeptExtensions::All(ext) => CallPlan::from_extensions(ext),
        }
    }

    /// A new request with this head around `body`.
    pub(crate) fn request<E>(&self, body: E) -> Request<E> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        match &self.extensions {
            KeptExtensions::Plan(plan) => {
                req.extensions_mut().insert(plan.clone());
            }
            KeptExtensions::All(ext) => *req.extensions_mut() = ext.clone(),
        }
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_alone_is_kept_alone_and_anything_more_is_kept_whole() {
        let mut req = http::Request::post("http://h/x")
            .header("a", "1")
            .body(())
            .unwrap();
        let ctx = CallPlan::of_request(&mut req).context().clone();
        let (parts, ()) = req.into_parts();
        let head = KeptHead::copy(&parts);
        assert!(matches!(head.extensions, KeptExtensions::Plan(_)));
        let again = head.request(());
        assert_eq!(
            (again.method(), again.headers()["a"].as_bytes()),
            (&Method::POST, &b"1"[..])
        );
        again
            .extensions()
            .get::<CallPlan>()
            .unwrap()
            .context()
            .record_attempt();
        assert_eq!(ctx.attempts(), 1, "the copy shares the call's record");

        let mut req = http::Request::get("http://h/x").body(()).unwrap();
        CallPlan::of_request(&mut req);
        req.extensions_mut().insert(7u8);
        let (parts, ()) = req.into_parts();
        let head = KeptHead::copy(&parts);
        let again = head.request(());
        assert_eq!(again.extensions().get::<u8>(), Some(&7));
        assert!(head.plan().is_some());
    }
}
