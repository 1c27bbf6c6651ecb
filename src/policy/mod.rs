//! Pure decisions over a request head, compiled from config and tested without sockets: who
//! may write through the admin listener, and a route's CORS answers. The layers above
//! (`snapshot`, `proxy`, `admin`) hold the compiled values and act on the decisions.

pub mod admin_auth;
pub mod cors;
