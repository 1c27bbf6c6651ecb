//! Micro benchmarks of route matching: the demo's one catch-all, a config with exact, wildcard
//! and catch-all hosts, and 10 vs 1,000 routes of each path kind (exact, prefix, regex), to
//! show that exact and prefix lookups do not grow with the route count.

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse::route::rewrite::{self, Rewrite};
use gatehouse::route::template::RequestView;
use gatehouse::route::{HostPattern, Matchers, PathPattern, RouteEntry, RouteRequest, Router};
use http::{HeaderMap, Method};
use std::hint::black_box;

fn entry(host: &str, path: PathPattern, target: usize) -> RouteEntry<usize> {
    RouteEntry {
        host: HostPattern::parse(host),
        path,
        matchers: Matchers::default(),
        slash_redirect: false,
        target,
    }
}

fn prefix(p: &str) -> PathPattern {
    PathPattern::prefix(p)
}

fn find(router: &Router<usize>, host: &str, path: &str, headers: &HeaderMap) -> Option<usize> {
    router
        .find(&RouteRequest {
            listener: 0,
            host,
            path,
            query: None,
            method: &Method::GET,
            headers,
            client: "127.0.0.1".parse().expect("address"),
        })
        .map(|found| found.entry.target)
}

/// `count` routes of one kind, plus a catch-all.
fn routes_of(kind: &str, count: usize) -> Router<usize> {
    let mut entries: Vec<RouteEntry<usize>> = (0..count)
        .map(|i| {
            let path = match kind {
                "exact" => PathPattern::Exact(format!("/service{i}/health")),
                "prefix" => prefix(&format!("/service{i}/v1/")),
                _ => PathPattern::Regex(
                    regex::Regex::new(&format!(r"^/service{i}/users/(\d+)$")).expect("regex"),
                ),
            };
            entry("*", path, i)
        })
        .collect();
    entries.push(entry("*", prefix("/"), usize::MAX));
    Router::new(entries).expect("router")
}

fn route_match(c: &mut Criterion) {
    let headers = HeaderMap::new();
    let small = Router::new(vec![entry("*", prefix("/"), 0)]).expect("router");
    let mut entries = Vec::new();
    for i in 0..10 {
        entries.push(entry(&format!("api{i}.example.com"), prefix("/"), i));
        entries.push(entry(
            &format!("*.tenant{i}.example.com"),
            prefix("/"),
            100 + i,
        ));
        entries.push(entry("*", prefix(&format!("/service{i}/v1")), 200 + i));
    }
    entries.push(entry("*", prefix("/"), 999));
    let hosts = Router::new(entries).expect("router");

    let mut group = c.benchmark_group("route_match");
    group.bench_function("one_catch_all", |b| {
        b.iter(|| {
            find(
                &small,
                black_box("localhost"),
                black_box("/orders/1"),
                &headers,
            )
        })
    });
    group.bench_function("31_routes_exact_host", |b| {
        b.iter(|| {
            find(
                &hosts,
                black_box("api7.example.com"),
                black_box("/orders/1"),
                &headers,
            )
        })
    });
    group.bench_function("31_routes_wildcard_host", |b| {
        b.iter(|| {
            find(
                &hosts,
                black_box("a.tenant7.example.com"),
                black_box("/"),
                &headers,
            )
        })
    });
    group.bench_function("31_routes_fallthrough", |b| {
        b.iter(|| find(&hosts, black_box("localhost"), black_box("/menu"), &headers))
    });
    for count in [10, 1000] {
        let exact = routes_of("exact", count);
        let path = format!("/service{}/health", count - 1);
        group.bench_function(format!("exact_{count}"), |b| {
            b.iter(|| find(&exact, "localhost", black_box(&path), &headers))
        });
        let prefixes = routes_of("prefix", count);
        let path = format!("/service{}/v1/orders/7", count / 2);
        group.bench_function(format!("prefix_{count}"), |b| {
            b.iter(|| find(&prefixes, "localhost", black_box(&path), &headers))
        });
        let regexes = routes_of("regex", count);
        let path = format!("/service{}/users/42", count - 1);
        group.bench_function(format!("regex_{count}"), |b| {
            b.iter(|| find(&regexes, "localhost", black_box(&path), &headers))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("rewrite");
    let rule = [
        Rewrite::compile(r"^/users/(\d+)/orders$", "/orders?user=$1", Some("break")).expect("rule"),
    ];
    let view = RequestView {
        method: &Method::GET,
        request_uri: "/users/42/orders?page=2",
        host: "localhost",
        https: false,
        client: "127.0.0.1".parse().expect("address"),
        headers: &headers,
    };
    group.bench_function("regex_with_capture", |b| {
        b.iter(|| rewrite::apply(&rule, &view, black_box("/users/42/orders"), Some("page=2")))
    });
    group.finish();
}

criterion_group!(benches, route_match);
criterion_main!(benches);
