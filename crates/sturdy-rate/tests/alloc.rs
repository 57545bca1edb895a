//! The pacer's fast path allocates nothing: an attempt to a known server
//! that is not held, and its answer's rate-limit headers read into the
//! server's view, cost no allocation (counted by a global allocator, for
//! this thread only).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use sturdy_rate::PacerLayer;
use tower::{Layer, Service, ServiceExt};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Allocations made by `n` paced calls, every request and answer made
/// beforehand.
fn paced_calls(n: usize) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        // Every answer says plenty is left, for a minute.
        let answers: Vec<Response<()>> = (0..n + 1)
            .map(|_| {
                Response::builder()
                    .header("x-ratelimit-limit-requests", "100000")
                    .header("x-ratelimit-remaining-requests", "99999")
                    .header("x-ratelimit-reset-requests", "1m0s")
                    .header("x-ratelimit-remaining-tokens", "99999999")
                    .header("x-ratelimit-reset-tokens", "59.5s")
                    .body(())
                    .unwrap()
            })
            .collect();
        let answers = Rc::new(RefCell::new(answers));
        let inner = tower::service_fn(move |_req: Request<Empty<Bytes>>| {
            let resp = answers.borrow_mut().pop();
            std::future::ready(resp.ok_or("out of answers"))
        });
        let mut svc = PacerLayer::new().layer(inner);
        let mut requests: Vec<_> = (0..n + 1)
            .map(|_| {
                Request::post("https://api.test/v1/chat/completions")
                    .body(Empty::<Bytes>::new())
                    .unwrap()
            })
            .collect();
        // The first call meets the server and allocates its entry.
        let first = requests.pop().unwrap();
        svc.ready().await.unwrap().call(first).await.unwrap();
        let mut answers = Vec::with_capacity(n);
        let before = allocations();
        for req in requests.drain(..) {
            let resp = svc.ready().await.unwrap().call(req).await.unwrap();
            answers.push(resp);
        }
        let made = allocations() - before;
        assert_eq!(svc.stats().held(), 0);
        made
    })
}

#[test]
fn a_paced_call_that_is_not_held_allocates_nothing() {
    // The counter counts.
    let before = allocations();
    let v = std::hint::black_box(vec![1u8; 10]);
    assert_eq!(allocations(), before + 1);
    drop(v);
    assert_eq!(paced_calls(10), 0);
    assert_eq!(paced_calls(1000), 0);
}
