//! The config of the HTTP/3 tests: one `http3` listener with a certificate of the test CA, an
//! admin listener, and one route to one upstream.

use super::pki::Issued;
use std::net::SocketAddr;

/// `listener_extra` is added to the listener, `route_extra` to the route, `extra` to the file.
pub fn http3_config(
    cert: &Issued,
    upstream: SocketAddr,
    listener_extra: &str,
    route_extra: &str,
    extra: &str,
) -> String {
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"

[log]
access = "off"

[[listener]]
name = "quic"
bind = "127.0.0.1:0"
http3 = true
tls = {{ certs = [ {{ cert = {:?}, key = {:?} }} ] }}
{listener_extra}

[[route]]
path_prefix = "/"
upstream = "app"
{route_extra}

[upstream.app]
servers = ["{upstream}"]

{extra}
"#,
        cert.cert, cert.key
    )
}
