//! The buffer of a response read in full before it is handed over
//! (prefetch): a small answer, so that a connection cut mid-body is retried
//! instead of reaching the caller as a broken body.

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame};

/// A prefetched body's frames, as `http_body_util`'s `Collected` keeps
/// them but without its buffer list: a body of one data frame (the common
/// case, a small JSON answer) stays that frame's `Bytes`, with no
/// allocation; only a second data frame starts a contiguous copy.
#[derive(Default)]
pub(crate) struct Prefetched {
    data: Data,
    /// Boxed: rare, and this buffer lives in a future moved through every
    /// layer above.
    trailers: Option<Box<HeaderMap>>,
}

#[derive(Default)]
enum Data {
    #[default]
    None,
    /// One data frame so far.
    One(Bytes),
    /// Every data frame so far, once there is a second.
    Joined(BytesMut),
}

/// The most a second data frame reserves ahead from the body's size hint.
const JOIN_RESERVE_MAX: u64 = 1024 * 1024;

impl Prefetched {
    pub(crate) fn push<RB: Body>(&mut self, frame: Frame<Bytes>, body: &RB) {
        match frame.into_data() {
            // Empty data frames carry nothing (as in `Collected`).
            Ok(data) if data.is_empty() => {}
            Ok(data) => match &mut self.data {
                Data::Joined(joined) => joined.put_slice(&data),
                Data::None => self.data = Data::One(data),
                Data::One(first) => {
                    let ahead = body.size_hint().lower().min(JOIN_RESERVE_MAX);
                    let ahead = usize::try_from(ahead).unwrap_or(0);
                    let mut joined = BytesMut::with_capacity(
                        first.len().saturating_add(data.len()).saturating_add(ahead),
                    );
                    joined.put_slice(first);
                    joined.put_slice(&data);
                    self.data = Data::Joined(joined);
                }
            },
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    match &mut self.trailers {
                        Some(current) => current.extend(t),
                        None => self.trailers = Some(Box::new(t)),
                    }
                }
            }
        }
    }

    pub(crate) fn finish(self) -> (Bytes, Option<HeaderMap>) {
        let data = match self.data {
            Data::Joined(joined) => joined.freeze(),
            Data::One(first) => first,
            Data::None => Bytes::new(),
        };
        (data, self.trailers.map(|t| *t))
    }
}
