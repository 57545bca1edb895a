//! What a retry needs to send the request again, everything but the body:
//! method, URI, version, headers, and the plan — not the whole extension
//! map when the plan is all it holds (the common case), so the success path
//! copies no map; and the header lines' bytes copied into the allocation
//! the retry keeps anyway, so the success path copies no header map (two
//! allocations, its index and its entries) and clones no header value (a
//! value parsed from a string is promoted to a shared buffer, one more
//! allocation, the first time it is cloned). A retry rebuilds the map.

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

/// Header lines up to this many, whose names and values fit in
/// [`INLINE_BYTES`], are kept as bytes; a request with more keeps a clone of
/// its map. An LLM API request carries two to five (authorization,
/// content-type, an idempotency key, an organisation or project); hyper
/// adds host and content-length below this layer.
const INLINE_LINES: usize = 8;

/// Room for the inline lines' names and values: an OpenAI project key's
/// `authorization` line alone is ~190 bytes.
const INLINE_BYTES: usize = 384;

/// The request's header lines in the map's order (names in the order they
/// were first inserted, each name's values in theirs), so the map rebuilt
/// from them iterates and is encoded as the original was, sensitive values
/// marked sensitive again. The inline variant is large on purpose: the
/// head lives in the allocation a retry keeps, and boxing the lines would
/// be the allocation they are there to save.
#[allow(clippy::large_enum_variant)]
enum KeptHeaders {
    Inline {
        /// Each line's name length, value length and sensitivity; their
        /// bytes follow one another in `bytes`.
        lines: [(u16, u16, bool); INLINE_LINES],
        count: u8,
        bytes: [u8; INLINE_BYTES],
    },
    Map(HeaderMap),
}

impl KeptHeaders {
    const EMPTY: KeptHeaders = KeptHeaders::Inline {
        lines: [(0, 0, false); INLINE_LINES],
        count: 0,
        bytes: [0; INLINE_BYTES],
    };

    /// Copies `map` into `self` (which is [`EMPTY`](Self::EMPTY)), in place.
    fn keep(&mut self, map: &HeaderMap) {
        let KeptHeaders::Inline {
            lines,
            count,
            bytes,
        } = self
        else {
            return;
        };
        let mut used = 0;
        let mut n = 0;
        for (name, value) in map {
            let (name, sensitive, value) = (
                name.as_str().as_bytes(),
                value.is_sensitive(),
                value.as_bytes(),
            );
            let end = used + name.len() + value.len();
            if n == INLINE_LINES || end > INLINE_BYTES {
                *self = KeptHeaders::Map(map.clone());
                return;
            }
            bytes[used..used + name.len()].copy_from_slice(name);
            bytes[used + name.len()..end].copy_from_slice(value);
            // Both fit in u16: together they fit in INLINE_BYTES.
            lines[n] = (name.len() as u16, value.len() as u16, sensitive);
            used = end;
            n += 1;
        }
        *count = n as u8;
    }

    fn to_map(&self) -> HeaderMap {
        let (lines, count, bytes) = match self {
            KeptHeaders::Map(map) => return map.clone(),
            KeptHeaders::Inline {
                lines,
                count,
                bytes,
            } => (lines, usize::from(*count), bytes),
        };
        let mut map = HeaderMap::with_capacity(count);
        let mut at = 0;
        for &(name_len, value_len, sensitive) in &lines[..count] {
            let name_end = at + usize::from(name_len);
            let end = name_end + usize::from(value_len);
            // Both were a header name and value a moment ago: they parse
            // again (a value only http's unsafe constructor could have
            // made is the one that would not, and is left out).
            if let (Ok(name), Ok(mut value)) = (
                HeaderName::from_bytes(&bytes[at..name_end]),
                HeaderValue::from_bytes(&bytes[name_end..end]),
            ) {
                value.set_sensitive(sensitive);
                map.append(name, value);
            }
            at = end;
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
        let (plan, markers) = CallPlan::find(&parts.extensions);
        let alone = plan.filter(|_| !markers.any()).cloned();
        let mut head = KeptHead::blank();
        head.keep(parts, alone);
        head
    }

    /// A head that keeps nothing yet, every field a constant: boxed as it
    /// is, then filled where it stays by [`keep`](KeptHead::keep). (A head
    /// built from the request first was moved into the box whole, and its
    /// plan into the head: two copies more per call.)
    #[inline]
    pub(crate) fn blank() -> KeptHead {
        KeptHead {
            method: Method::GET,
            uri: Uri::default(),
            version: Version::HTTP_11,
            headers: KeptHeaders::EMPTY,
            extensions: KeptExtensions::All(Extensions::new()),
        }
    }

    /// Copies `parts` into this [`blank`](KeptHead::blank) head, in
    /// place. `plan_alone` is a copy of the plan when the extensions hold
    /// it and nothing else (the caller has just looked it up), and then the
    /// plan alone is kept; else the whole map is.
    pub(crate) fn keep(&mut self, parts: &Parts, plan_alone: Option<CallPlan>) {
        self.method = parts.method.clone();
        self.uri = parts.uri.clone();
        self.version = parts.version;
        self.extensions = match plan_alone {
            Some(plan) => KeptExtensions::Plan(plan),
            None => KeptExtensions::All(parts.extensions.clone()),
        };
        self.headers.keep(&parts.headers);
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

    /// Copies a request with `map` as its headers and sends it again:
    /// whether the lines were kept inline, and the map the retry carries.
    fn kept_and_sent_again(map: HeaderMap) -> (bool, HeaderMap, HeaderMap) {
        let mut req = http::Request::post("http://h/x").body(()).unwrap();
        *req.headers_mut() = map;
        let (parts, ()) = req.into_parts();
        let head = KeptHead::copy(&parts);
        let inline = matches!(head.headers, KeptHeaders::Inline { .. });
        (inline, parts.headers, head.request(()).headers().clone())
    }

    fn lines(map: &HeaderMap) -> Vec<(&HeaderName, &HeaderValue, bool)> {
        map.iter().map(|(n, v)| (n, v, v.is_sensitive())).collect()
    }

    #[test]
    fn headers_come_back_in_order_with_every_value_inline_or_not() {
        for count in [0, 1, 3, INLINE_LINES, INLINE_LINES + 1, 20] {
            let mut map = HeaderMap::new();
            for i in 0..count {
                // Every third line repeats the previous name: two values.
                let name = if i % 3 == 2 { i - 1 } else { i };
                map.append(
                    HeaderName::from_bytes(format!("x-h{name}").as_bytes()).unwrap(),
                    HeaderValue::from_str(&format!("v{i}")).unwrap(),
                );
            }
            if count > 0 {
                let mut secret = HeaderValue::from_static("Bearer sk-secret");
                secret.set_sensitive(true);
                map.insert(http::header::AUTHORIZATION, secret);
            }
            let (inline, before, after) = kept_and_sent_again(map);
            assert_eq!(inline, before.len() <= INLINE_LINES, "{count} lines");
            assert_eq!(lines(&before), lines(&after), "{count} lines");
        }
    }

    #[test]
    fn long_values_and_any_valid_byte_come_back_too() {
        // Two lines whose bytes overflow the inline room: the map is kept.
        let mut map = HeaderMap::new();
        let key = format!("Bearer sk-proj-{}", "k".repeat(INLINE_BYTES / 2));
        map.insert(http::header::AUTHORIZATION, key.parse().unwrap());
        map.insert("x-long", "v".repeat(INLINE_BYTES / 2).parse().unwrap());
        let (inline, before, after) = kept_and_sent_again(map);
        assert!(!inline);
        assert_eq!(lines(&before), lines(&after));

        // Exactly full, a tab, obs-text and an empty value: inline, the same.
        let mut map = HeaderMap::new();
        map.insert("x-tab", HeaderValue::from_bytes(b"a\tb \xff\x80").unwrap());
        map.insert("x-empty", HeaderValue::from_static(""));
        let used: usize = map.iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
        let rest = INLINE_BYTES - used - "x-fill".len();
        map.insert("x-fill", "f".repeat(rest).parse().unwrap());
        let (inline, before, after) = kept_and_sent_again(map);
        assert!(inline);
        assert_eq!(lines(&before), lines(&after));
    }
}
