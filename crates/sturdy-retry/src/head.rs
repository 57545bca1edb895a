//! What a retry needs to send the request again, everything but the body:
//! method, URI, version, headers, and the plan — not the whole extension
//! map when the plan is all it holds (the common case), so the success path
//! copies no map; and a few header lines kept inline, so the success path
//! copies no header map either (a map's clone is two allocations, its index
//! and its entries; the lines live in the allocation the retry keeps
//! anyway, and a retry rebuilds the map from them).

use http::request::Parts;
use http::{Extensions, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};
use sturdy_core::CallPlan;

/// The request head a retry sends again.
pub(crate) struct KeptHead {
    method: Method,
    uri: Uri,
    version: Version,
    headers: KeptHeaders,
    extensions: KeptExtensions,
}

/// Header lines up to this many are kept inline; a request with more keeps
/// a clone of its map. An LLM API request carries two to four
/// (authorization, content-type, an idempotency key or an organisation);
/// hyper adds host and content-length below this layer.
const INLINE_HEADERS: usize = 4;

/// The request's header lines in the map's order (names in the order they
/// were first inserted, each name's values in theirs), so the map rebuilt
/// from them iterates and is encoded as the original was. Filled in place
/// where the head is kept ([`KeptHead::keep_headers`]): the lines are not
/// moved after they are copied.
struct KeptHeaders {
    lines: [Option<(HeaderName, HeaderValue)>; INLINE_HEADERS],
    /// The whole map, when it has more lines than fit.
    map: Option<HeaderMap>,
}

impl KeptHeaders {
    fn to_map(&self) -> HeaderMap {
        if let Some(map) = &self.map {
            return map.clone();
        }
        let len = self.lines.iter().flatten().count();
        let mut map = HeaderMap::with_capacity(len);
        for (name, value) in self.lines.iter().flatten() {
            map.append(name.clone(), value.clone());
        }
        map
    }
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
    #[cfg(test)]
    pub(crate) fn copy(parts: &Parts) -> KeptHead {
        let mut head = KeptHead::without_headers(parts);
        head.keep_headers(&parts.headers);
        head
    }

    /// Copies `parts` but its headers, which [`keep_headers`] copies once
    /// the head is where it stays.
    ///
    /// [`keep_headers`]: KeptHead::keep_headers
    pub(crate) fn without_headers(parts: &Parts) -> KeptHead {
        let ext = &parts.extensions;
        let extensions = match CallPlan::from_extensions(ext) {
            Some(plan) if ext.len() == 1 => KeptExtensions::Plan(plan.clone()),
            _ => KeptExtensions::All(ext.clone()),
        };
        KeptHead {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: KeptHeaders {
                lines: Default::default(),
                map: None,
            },
            extensions,
        }
    }

    /// The plan, as this layer settled it.
    /// Copies `map`'s lines into this head.
    pub(crate) fn keep_headers(&mut self, map: &HeaderMap) {
        // `len` counts values: a name with two values is two lines.
        if map.len() > INLINE_HEADERS {
            self.headers.map = Some(map.clone());
            return;
        }
        for (slot, (name, value)) in self.headers.lines.iter_mut().zip(map.iter()) {
            *slot = Some((name.clone(), value.clone()));
        }
    }

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
        *req.headers_mut() = self.headers.to_map();
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

    #[test]
    fn headers_come_back_in_order_with_every_value_inline_or_not() {
        for lines in [0, 1, 3, INLINE_HEADERS, INLINE_HEADERS + 1, 20] {
            let mut req = http::Request::post("http://h/x").body(()).unwrap();
            let map = req.headers_mut();
            for i in 0..lines {
                // Every third line repeats the previous name: two values.
                let name = if i % 3 == 2 { i - 1 } else { i };
                map.append(
                    HeaderName::from_bytes(format!("x-h{name}").as_bytes()).unwrap(),
                    HeaderValue::from_str(&format!("v{i}")).unwrap(),
                );
            }
            let mut sensitive = HeaderValue::from_static("Bearer sk-secret");
            sensitive.set_sensitive(true);
            if lines > 0 {
                map.insert(http::header::AUTHORIZATION, sensitive);
            }
            let (parts, ()) = req.into_parts();
            let head = KeptHead::copy(&parts);
            let inline = head.headers.map.is_none();
            assert_eq!(
                inline,
                parts.headers.len() <= INLINE_HEADERS,
                "{lines} lines"
            );
            let again = head.request(());
            let before: Vec<_> = parts.headers.iter().collect();
            let after: Vec<_> = again.headers().iter().collect();
            assert_eq!(before, after, "{lines} lines");
            if lines > 0 {
                assert!(again.headers()[http::header::AUTHORIZATION].is_sensitive());
            }
        }
    }
}
