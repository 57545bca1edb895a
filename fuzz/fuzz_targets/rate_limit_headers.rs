//! Arbitrary bytes as the values of the rate-limit headers (any of the
//! names sturdy-rate reads, repeated or not), and an arbitrary clock:
//! `RateLimitHeaders::from_headers` must never panic, every reset stays
//! within `MAX_RESET`, and what it read prints back to OpenAI-style headers
//! that read the same.
#![no_main]

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sturdy_rate::{HEADER_NAMES, MAX_RESET, Quota, RateLimitHeaders};

fuzz_target!(|data: &[u8]| {
    let (clock, rest) = data.split_at(data.len().min(8));
    let mut secs = [0u8; 8];
    secs[..clock.len()].copy_from_slice(clock);
    let now = SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_secs(u64::from_le_bytes(secs) >> 24))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    // Each 0-separated part: a name (its first byte), then a value.
    let mut headers = HeaderMap::new();
    for part in rest.split(|b| *b == 0) {
        let Some((which, value)) = part.split_first() else {
            continue;
        };
        let name = HEADER_NAMES[usize::from(*which) % HEADER_NAMES.len()];
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(name, v);
        }
    }
    let rl = RateLimitHeaders::from_headers(&headers, now);
    for q in rl.dimensions() {
        if let Some(reset) = q.reset {
            assert!(reset <= MAX_RESET, "{reset:?}");
        }
    }
    assert_eq!(rl.is_empty(), rl.dimensions().iter().all(Quota::is_empty));
    // What was read prints back as OpenAI-style headers and reads the same.
    let mut printed = HeaderMap::new();
    for (q, dim) in [(rl.requests, "requests"), (rl.tokens, "tokens")] {
        let mut put = |what: &str, value: String| {
            let name = HeaderName::from_bytes(format!("x-ratelimit-{what}-{dim}").as_bytes())
                .expect("a valid name");
            printed.insert(name, HeaderValue::from_str(&value).expect("a valid value"));
        };
        if let Some(n) = q.limit {
            put("limit", n.to_string());
        }
        if let Some(n) = q.remaining {
            put("remaining", n.to_string());
        }
        if let Some(d) = q.reset {
            put("reset", format!("{}.{:09}", d.as_secs(), d.subsec_nanos()));
        }
    }
    let again = RateLimitHeaders::from_headers(&printed, now);
    assert_eq!(again.requests, rl.requests);
    assert_eq!(again.tokens, rl.tokens);
});
