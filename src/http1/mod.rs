//! gatehouse's own HTTP/1.1 codec: reading and writing message heads and framing bodies, with
//! no sockets, tasks or timers, so the server and upstream paths can drive it from their own
//! read loops over buffers they reuse for the whole connection.
//!
//! - [`request`] reads a client's request head and judges it (limits, smuggling rules, Host).
//! - [`response`] reads an upstream's response head and decides its framing from the request.
//! - [`body`] decodes Content-Length, chunked and read-until-close bodies, and encodes chunks.
//! - [`encode`] writes request and response heads.
//! - [`raw`] keeps a response head's fields as bytes, for passing them on unchanged.
//!
//! Parsing is incremental: call again with more bytes after [`Parsed::Partial`]. Heads are
//! parsed by `httparse`; the judgement of what they mean lives here. `LIFECYCLE.md` beside this
//! file lists every input refused and the test that pins it.

pub mod body;
pub mod encode;
mod fields;

pub use fields::{cookie, has_underscore, is_valid_host, split_host_port};
mod head;
pub mod raw;
pub mod request;
pub mod response;

#[cfg(test)]
mod proptests;

pub use body::{BodyError, BodyLimits, Decoder, Framing};
pub use head::{HeadConfig, HeadError, MAX_HEADERS, Parsed};
pub use raw::RawFields;
pub use request::{Expectation, RequestHead, TargetForm, parse_request};
pub use response::{ResponseHead, parse_response, parse_response_keeping};
