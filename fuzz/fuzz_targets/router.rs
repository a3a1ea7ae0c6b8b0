//! The router: built from any routes (hosts, path patterns, methods, priorities), matched
//! against any requests. Besides never panicking, a router derived with `update` from a
//! router of some of the routes must decide exactly as one built from all of them.
#![no_main]
use arbitrary::Arbitrary;
use gateway::router::{Request, RouteSpec, Router};
use libfuzzer_sys::fuzz_target;
use model::host::HostPattern;
use model::path::PathPattern;
use model::vars::VarSource;
use model::Id;
use std::borrow::Cow;

#[derive(Arbitrary, Debug)]
struct R<'a> {
    hosts: Vec<&'a str>,
    paths: Vec<&'a str>,
    methods: Option<Vec<u8>>,
    priority: i8,
    create_time: u8,
}

#[derive(Arbitrary, Debug)]
struct Q<'a> {
    host: &'a str,
    path: &'a str,
    method: u8,
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    routes: Vec<R<'a>>,
    first: u8,
    requests: Vec<Q<'a>>,
}

const METHODS: [&str; 3] = ["GET", "POST", "PUT"];

struct NoVars;
impl VarSource for NoVars {
    fn get(&self, _: &str) -> Option<Cow<'_, str>> {
        None
    }
}

fn spec(i: usize, r: &R<'_>) -> RouteSpec<usize> {
    RouteSpec {
        id: Id::parse(&i.to_string()).expect("a number is an id"),
        hosts: r
            .hosts
            .iter()
            .filter_map(|h| HostPattern::parse(h).ok())
            .collect(),
        paths: r
            .paths
            .iter()
            .filter_map(|p| PathPattern::parse(p).ok())
            .collect(),
        methods: r.methods.as_ref().map(|m| {
            m.iter()
                .map(|b| METHODS[usize::from(*b) % 3].to_string())
                .collect()
        }),
        remote_addrs: Vec::new(),
        vars: None,
        priority: i64::from(r.priority),
        create_time: u64::from(r.create_time),
        value: i,
    }
}

fuzz_target!(|input: Input<'_>| {
    let routes: Vec<_> = input
        .routes
        .iter()
        .take(64)
        .enumerate()
        .map(|(i, r)| spec(i, r))
        .collect();
    let split = usize::from(input.first).min(routes.len());
    let whole = Router::build(routes.clone());
    let derived = Router::build(routes[..split].to_vec()).update(
        routes[split..]
            .iter()
            .map(|s| (s.id.clone(), Some(s.clone()))),
    );
    for q in input.requests.iter().take(64) {
        let req = Request {
            host: q.host,
            path: q.path,
            method: METHODS[usize::from(q.method) % 3],
            remote_addr: std::net::Ipv4Addr::LOCALHOST.into(),
            vars: &NoVars,
        };
        let a = whole.find(&req).map(|m| (*m.value, m.params));
        let b = derived.find(&req).map(|m| (*m.value, m.params));
        assert_eq!(a, b, "{req:?}");
    }
});
