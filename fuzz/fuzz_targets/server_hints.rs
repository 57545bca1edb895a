//! Arbitrary bytes as the values of every hint header, and an arbitrary
//! clock: `ServerHints::from_headers` must never panic, and any delay it
//! returns stays within `MAX_HINT`.
#![no_main]

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sturdy_core::{GrpcCode, MAX_HINT, ServerHints, Workload};

const NAMES: [&str; 5] = [
    "retry-after",
    "retry-after-ms",
    "x-should-retry",
    "grpc-retry-pushback-ms",
    "grpc-status",
];

fuzz_target!(|data: &[u8]| {
    let (clock, rest) = data.split_at(data.len().min(8));
    let mut secs = [0u8; 8];
    secs[..clock.len()].copy_from_slice(clock);
    let now = SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_secs(u64::from_le_bytes(secs) >> 20))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut headers = HeaderMap::new();
    for (name, value) in NAMES.iter().zip(rest.split(|b| *b == 0)) {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.insert(*name, v);
        }
        let _ = GrpcCode::from_header(value);
        let _ = std::str::from_utf8(value).map(|s| s.parse::<Workload>());
    }
    let hints = ServerHints::from_headers(&headers, now);
    if let Some(delay) = hints.delay() {
        assert!(delay <= MAX_HINT);
    }
});
