//! `sturdy-soak`: the long run. Prints the figures and the checks; exits 1
//! when a check fails, 2 on a usage error.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use sturdy_soak::{SoakConfig, soak};

/// Soaks sturdy's full stack: calls through `sturdy::client()` and `Stack`
/// against an in-process fault server with every fault, outages and callers
/// that give up at random, then checks that nothing was lost.
#[derive(Debug, Parser)]
#[command(name = "sturdy-soak", version)]
struct Args {
    /// Calls in all.
    #[arg(long, default_value_t = 200_000)]
    calls: u64,

    /// Calls in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,

    /// Read resident memory after this many calls, for the growth check
    /// (default: 20 000, or a tenth of a shorter run).
    #[arg(long, value_name = "CALLS")]
    checkpoint: Option<u64>,

    /// Seed of the fault mix and of the callers' choices.
    #[arg(long, default_value_t = 7)]
    seed: u64,

    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    worker_threads: usize,

    /// Speak HTTP/2 (h2c) instead of HTTP/1.1.
    #[arg(long)]
    http2: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let full = SoakConfig::full();
    let config = SoakConfig {
        calls: args.calls,
        concurrency: args.concurrency,
        checkpoint: args
            .checkpoint
            .unwrap_or(full.checkpoint.min(args.calls / 10)),
        seed: args.seed,
        worker_threads: args.worker_threads,
        http2: args.http2,
    };
    match soak(&config) {
        Ok(report) => {
            println!("{report}");
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(message) => {
            eprintln!("sturdy-soak: {message}");
            ExitCode::from(2)
        }
    }
}
