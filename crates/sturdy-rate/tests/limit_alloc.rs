//! The adaptive limit allocates nothing per call: not on the way in, not
//! while a caller waits for a permit (once the queue has held as many
//! waiters before), not when the body ends. Counted by a global allocator
//! on this test's own thread, with futures and bodies polled by hand.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use sturdy_rate::AdaptiveConcurrencyLayer;
use tower::{Layer, Service};

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

struct Counting;

fn count() {
    if COUNTING.with(Cell::get) {
        COUNT.with(|c| c.set(c.get() + 1));
    }
}

// SAFETY: every call is passed to `System` unchanged; the counters are
// const-initialised thread locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    COUNT.with(Cell::get)
}

fn read_to_end<B: Body + Unpin>(body: &mut B, cx: &mut Context<'_>) {
    while let Poll::Ready(Some(frame)) = Pin::new(&mut *body).poll_frame(cx) {
        assert!(frame.is_ok());
    }
}

#[test]
fn a_call_allocates_nothing_nor_does_a_wait() {
    let layer = AdaptiveConcurrencyLayer::builder()
        .initial(1)
        .max(1)
        .build()
        .unwrap();
    let inner = tower::service_fn(|_: Request<()>| {
        std::future::ready(Ok::<_, Infallible>(Response::new(Full::new(
            Bytes::from_static(b"{}"),
        ))))
    });
    let mut svc = layer.layer(inner);
    let mut waiter = svc.clone();
    let mut cx = Context::from_waker(Waker::noop());

    let one_call = |svc: &mut _, cx: &mut Context<'_>| {
        let svc: &mut sturdy_rate::AdaptiveConcurrency<_> = svc;
        assert!(Service::<Request<()>>::poll_ready(svc, cx).is_ready());
        let mut fut = std::pin::pin!(svc.call(Request::new(())));
        let Poll::Ready(Ok(resp)) = fut.as_mut().poll(cx) else {
            panic!("the inner service answers at once");
        };
        let mut body = resp.into_body();
        read_to_end(&mut body, cx);
    };
    // Warm: the waiters' queue gets its first slot.
    one_call(&mut svc, &mut cx);
    assert!(Service::<Request<()>>::poll_ready(&mut svc, &mut cx).is_ready());
    assert!(Service::<Request<()>>::poll_ready(&mut waiter, &mut cx).is_pending());
    let mut fut = Box::pin(svc.call(Request::new(())));
    let Poll::Ready(Ok(resp)) = fut.as_mut().poll(&mut cx) else {
        panic!("the inner service answers at once");
    };
    drop(resp);
    assert!(Service::<Request<()>>::poll_ready(&mut waiter, &mut cx).is_ready());
    drop(waiter);
    assert_eq!(layer.in_flight(), 0);

    // The count counts.
    let n = allocations(|| drop(std::hint::black_box(Vec::<u8>::with_capacity(8))));
    assert_eq!(n, 1);

    let n = allocations(|| {
        for _ in 0..100 {
            one_call(&mut svc, &mut cx);
        }
    });
    assert_eq!(n, 0, "allocations in 100 calls");

    // One holds the permit, another waits, is handed it when the first
    // body ends, and makes its call.
    let mut other = svc.clone();
    let n = allocations(|| {
        for _ in 0..100 {
            assert!(Service::<Request<()>>::poll_ready(&mut svc, &mut cx).is_ready());
            let mut fut = std::pin::pin!(svc.call(Request::new(())));
            let Poll::Ready(Ok(resp)) = fut.as_mut().poll(&mut cx) else {
                panic!("the inner service answers at once");
            };
            assert!(Service::<Request<()>>::poll_ready(&mut other, &mut cx).is_pending());
            let mut body = resp.into_body();
            read_to_end(&mut body, &mut cx);
            one_call(&mut other, &mut cx);
        }
    });
    assert_eq!(n, 0, "allocations in 100 waits");
    assert_eq!((layer.in_flight(), layer.waiting()), (0, 0));
}
