//! Rate control for tower clients of rate-limited servers (LLM inference
//! APIs above all): pace new attempts by the rate-limit headers the server
//! sends, and adapt the number of calls in flight to overload.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
