//! A route that serves files: the answer `crate::files` gives made into a response, or the
//! request handed back to go to the route's upstream (`try_files … @NAME`).

use super::body::ResponseBody;
use super::exchange::Exchange;
use crate::files::{Body, Files, Served};
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

/// What `files` answers the request, or None when it goes on to the upstream.
pub(super) fn serve(files: &Files, parts: &http::request::Parts) -> Option<Served> {
    match files.serve(&parts.method, parts.uri.path(), &parts.headers) {
        Served::Upstream => None,
        served => Some(served),
    }
}

/// The response for what the files answered.
pub(super) fn respond(
    exchange: Exchange,
    served: Served,
    parts: &http::request::Parts,
) -> Response<ResponseBody> {
    match served {
        Served::File {
            status,
            headers,
            body,
        } => {
            let body = match body {
                Body::Bytes(bytes) => ResponseBody::full(bytes),
                Body::Stream(stream) => ResponseBody::file(stream),
            };
            let mut response = Response::new(body);
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            // A browser's script on another origin may read the file where the route's CORS
            // allows it.
            if let Some(cors) = exchange
                .route
                .as_ref()
                .and_then(|route| route.cors.as_ref())
            {
                let origin = cors.allowed_origin(&parts.headers);
                cors.response_fields(origin.as_ref(), response.headers_mut());
            }
            exchange.made(response)
        }
        Served::AddSlash => {
            let mut location = String::with_capacity(parts.uri.path().len() + 1);
            location.push_str(parts.uri.path());
            location.push('/');
            if let Some(query) = parts.uri.query() {
                location.push('?');
                location.push_str(query);
            }
            match HeaderValue::try_from(location) {
                Ok(location) => {
                    exchange.edge(StatusCode::MOVED_PERMANENTLY, Some(location), None, None)
                }
                Err(_) => exchange.local(StatusCode::BAD_REQUEST, "invalid request target"),
            }
        }
        Served::Status(status) => exchange.local(status, message(status)),
        Served::MethodNotAllowed => {
            let mut response = exchange.local(
                StatusCode::METHOD_NOT_ALLOWED,
                "files are served to GET and HEAD",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            response
        }
        Served::Upstream => exchange.local(StatusCode::BAD_GATEWAY, "no upstream to forward to"),
    }
}

fn message(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "the path cannot name a file under the root",
        StatusCode::FORBIDDEN => "directory listing is off and the directory has no index",
        StatusCode::NOT_FOUND => "no such file",
        StatusCode::INTERNAL_SERVER_ERROR => "the file could not be read",
        _ => "answered by try_files",
    }
}
