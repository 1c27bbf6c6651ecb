//! gatehouse: an edge reverse proxy and load balancer.
//!
//! The request path: `server` accepts and speaks HTTP, `proxy` routes (`route`) and forwards to
//! an `upstream` server chosen by a balancer, all under one `snapshot` of the `config`.
//!
//! Modules sit in layers and import only from below (checked by `tests/layers.rs`, which holds
//! the table): vocabulary without imports (`certs`, `compress`, `connection`, `http1`, `request_body`,
//! `trace`, …); the demo backend (which takes part in traces); `route`; `config` and `metrics`; `shared` (the Redis connection replicas share state through); `headers`, `tls`, `health`, `cache`, `limit`; `upstream`;
//! `snapshot`; `proxy`; `server`; `reload`; `admin`; `app`.

pub mod acme;
pub mod admin;
pub mod allocator;
pub mod app;
pub mod auth;
pub mod cache;
pub mod certs;
pub mod compress;
pub mod config;
pub mod connection;
pub mod demo;
pub mod files;
pub mod headers;
pub mod health;
pub mod http1;
pub mod import;
pub mod limit;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod request_body;
pub mod route;
pub mod routes_tool;
pub mod server;
pub mod shared;
pub mod snapshot;
pub mod tls;
pub mod trace;
pub mod upstream;
pub mod workers;
