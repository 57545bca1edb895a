//! What the benches that run a fault server beside many callers share.

/// The runtime of such a bench: two worker threads (the machine's cores),
/// timers and I/O on; `None`, the error printed, when it cannot be built.
pub fn two_worker_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}
