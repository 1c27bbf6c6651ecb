//! Pure decisions over a request head, compiled from config and tested without sockets: who
//! may write through the admin listener, a route's CORS answers, and the pure half of forward
//! authentication. A low layer: it imports `config` and the HTTP field readers of `http1`
//! only; the layers above (`snapshot`, `proxy`, `admin`) hold the compiled values and act on
//! the decisions.

pub mod admin_auth;
pub mod cors;
pub mod forward_auth;
