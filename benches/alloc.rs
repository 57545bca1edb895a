//! Heap allocations per call (count and bytes) of every variant of
//! `benches/overhead.rs` (the bare in-memory service, each sturdy layer
//! alone, the full `Stack` with `PrometheusRecorder`, tower's `Timeout` +
//! `Retry`), counted by dhat's global allocator in this binary only.
//!
//! ```sh
//! cargo bench -p sturdy-tower --bench alloc                    # the table
//! cargo bench -p sturdy-tower --bench alloc -- --sites stack   # where one variant allocates
//! ```
//!
//! Each variant is built, warmed up with 1 000 calls, then measured over
//! 10 000 calls on a current-thread runtime; the table shows the difference
//! in dhat's totals divided by the calls, and what is still live afterwards
//! (a leak would show there).

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[allow(dead_code)]
#[path = "overhead.rs"]
mod overhead;

use std::collections::HashMap;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use overhead::{VARIANTS, Visit, arg_value, run_n, runtime, with_variant};
use tower::Service;

const WARM: u64 = 1_000;
const CALLS: u64 = 10_000;

/// Allocations during the measured calls.
struct Counted<'a> {
    rt: &'a tokio::runtime::Runtime,
    calls: u64,
}

struct Counts {
    blocks: u64,
    bytes: u64,
    live_blocks: i64,
}

impl Visit for Counted<'_> {
    type Out = Counts;
    fn visit<S, B>(self, _name: &'static str, svc: S) -> Counts
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
        S::Error: std::fmt::Debug,
        B: Body,
        B::Error: std::fmt::Debug,
    {
        self.rt.block_on(async {
            run_n(&svc, WARM).await;
            let before = dhat::HeapStats::get();
            run_n(&svc, self.calls).await;
            let after = dhat::HeapStats::get();
            Counts {
                blocks: after.total_blocks - before.total_blocks,
                bytes: after.total_bytes - before.total_bytes,
                live_blocks: after.curr_blocks as i64 - before.curr_blocks as i64,
            }
        })
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(name) = arg_value(&args, "--sites") {
        sites(&name);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    // `cargo bench` passes --bench; `cargo test --benches` does not: then
    // only a short smoke run.
    let calls = if args.iter().any(|a| a == "--bench") {
        CALLS
    } else {
        500
    };
    let _profiler = dhat::Profiler::builder().testing().build();
    let rt = runtime();
    let _context = rt.enter();
    let mut rows = Vec::new();
    for name in VARIANTS {
        rows.push((name, with_variant(name, Counted { rt: &rt, calls })));
    }
    let bare = &rows[0].1;
    let (bare_blocks, bare_bytes) = (bare.blocks as f64, bare.bytes as f64);
    println!(
        "heap allocations per call ({calls} calls after {WARM} warm-up, current-thread runtime)"
    );
    println!(
        "{:<22} {:>8} {:>9} {:>12} {:>13} {:>12}",
        "variant", "allocs", "bytes", "allocs-bare", "bytes-bare", "live after"
    );
    for (name, c) in &rows {
        let (blocks, bytes) = (
            c.blocks as f64 / calls as f64,
            c.bytes as f64 / calls as f64,
        );
        println!(
            "{name:<22} {blocks:>8.2} {bytes:>9.1} {:>12.2} {:>13.1} {:>12}",
            blocks - bare_blocks / calls as f64,
            bytes - bare_bytes / calls as f64,
            c.live_blocks
        );
    }
}

/// Profiles one variant with dhat's backtraces and prints the allocation
/// sites that allocate at least once per 20 calls, busiest first.
fn sites(name: &str) {
    let file =
        std::env::temp_dir().join(format!("sturdy-alloc-{name}-{}.json", std::process::id()));
    {
        let rt = runtime();
        let _context = rt.enter();
        // Services and the runtime are built before profiling starts.
        struct Profiled<'a> {
            rt: &'a tokio::runtime::Runtime,
            file: &'a std::path::Path,
        }
        impl Visit for Profiled<'_> {
            type Out = ();
            fn visit<S, B>(self, _name: &'static str, svc: S)
            where
                S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
                S::Error: std::fmt::Debug,
                B: Body,
                B::Error: std::fmt::Debug,
            {
                self.rt.block_on(async {
                    run_n(&svc, WARM).await;
                    let profiler = dhat::Profiler::builder()
                        .file_name(self.file)
                        .trim_backtraces(Some(12))
                        .build();
                    run_n(&svc, CALLS).await;
                    drop(profiler);
                });
            }
        }
        with_variant(
            name,
            Profiled {
                rt: &rt,
                file: &file,
            },
        );
    }
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("no dhat output at {}: {e}", file.display());
            return;
        }
    };
    let _ = std::fs::remove_file(&file);
    let v: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("unreadable dhat output: {e}");
            return;
        }
    };
    let empty = Vec::new();
    let ftbl = v["ftbl"].as_array().unwrap_or(&empty);
    let mut pps: Vec<(u64, u64, Vec<String>)> = v["pps"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|pp| {
            let frames = pp["fs"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .filter_map(|i| ftbl.get(i.as_u64()? as usize)?.as_str())
                .map(short_frame)
                .collect();
            (
                pp["tbk"].as_u64().unwrap_or(0),
                pp["tb"].as_u64().unwrap_or(0),
                frames,
            )
        })
        .collect();
    // The same site can appear under several backtraces; merge by frames.
    let mut merged: HashMap<Vec<String>, (u64, u64)> = HashMap::new();
    for (blocks, bytes, frames) in pps.drain(..) {
        let e = merged.entry(frames).or_default();
        e.0 += blocks;
        e.1 += bytes;
    }
    let mut sites: Vec<_> = merged.into_iter().collect();
    sites.sort_by_key(|s| std::cmp::Reverse(s.1.0));
    println!("allocation sites of {name} ({CALLS} calls, at least one per 20 calls):");
    for (frames, (blocks, bytes)) in sites {
        if blocks * 20 < CALLS {
            continue;
        }
        println!(
            "\n{:.2} allocs/call, {:.1} bytes/call",
            blocks as f64 / CALLS as f64,
            bytes as f64 / CALLS as f64
        );
        for f in frames
            .iter()
            .filter(|f| !f.starts_with("alloc::") && !f.contains("dhat"))
        {
            println!("    {f}");
        }
    }
}

/// `0x55..: path::to::fn (src/file.rs:12:5)` -> `path::to::fn (file.rs:12)`.
fn short_frame(f: &str) -> String {
    let f = f.split_once(": ").map(|(_, rest)| rest).unwrap_or(f);
    let (func, loc) = match f.split_once(" (") {
        Some((func, loc)) => (func, loc.trim_end_matches(')')),
        None => (f, ""),
    };
    let func = func.trim_end_matches("::{{closure}}");
    let loc = loc.rsplit('/').next().unwrap_or(loc);
    if loc.is_empty() {
        func.to_string()
    } else {
        format!("{func} ({loc})")
    }
}
