//! Route matching: picks the one route a request goes to, in APISIX's `radixtree_host_uri`
//! order made deterministic (design.md, "Routing semantics").
//!
//! A `Router` is compiled once per snapshot, away from requests, and never changes after.
//! A lookup only touches hash maps and tries keyed by the request's host labels and path
//! bytes, so its cost follows the request, not the number of routes; the only per-route
//! work is checking the conditions of routes that share a pattern the request matched.
//!
//! Order of candidates, first accepted wins:
//! 1. host tiers (`host.rs`): exact host, then wildcard hosts from the longest suffix to
//!    the shortest (each suffix is its own tier), then routes without hosts;
//! 2. within a tier (`path.rs`): exact paths, then `:param`/`*catchall` patterns (static
//!    over param over catch-all at each segment, backtracking; `params.rs`), then
//!    prefixes, longest first (`prefix.rs`);
//! 3. within a pattern: higher `priority`, earlier `create_time`, smaller id
//!    ([`Id::sort_key`]: `2` before `10`), then the order routes were given in.
//!
//! A route is accepted when its method list, remote address ranges and `vars` all agree;
//! otherwise the search goes on to the next route, pattern and tier.
//!
//! Paths are compared as the bytes given: decoding `%2F` or resolving `/a/../b` is the
//! caller's choice, made before calling [`Router::find`].

mod host;
mod params;
mod path;
mod prefix;
#[cfg(test)]
mod tests;

use ipnet::IpNet;
use model::host::HostPattern;
use model::path::PathPattern;
use model::vars::{Expr, VarSource};
use model::Id;
use std::cmp::Ordering;
use std::fmt;
use std::net::IpAddr;

/// One route as the router needs it: what to match and what to hand back.
#[derive(Debug, Clone)]
pub struct RouteSpec<T> {
    pub id: Id,
    /// Empty means any host.
    pub hosts: Vec<HostPattern>,
    /// `uri` or `uris`; a route without paths is never matched.
    pub paths: Vec<PathPattern>,
    /// `None` means any method.
    pub methods: Option<Vec<String>>,
    /// Empty means any address.
    pub remote_addrs: Vec<IpNet>,
    pub vars: Option<Expr>,
    pub priority: i64,
    pub create_time: u64,
    /// What a match hands back (typically an `Arc` of the compiled route).
    pub value: T,
}

/// The parts of a request routing looks at.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// Already normalised with [`model::host::normalize_request_host`]: lower case, no port.
    pub host: &'a str,
    /// Without the query string.
    pub path: &'a str,
    pub method: &'a str,
    pub remote_addr: IpAddr,
    pub vars: &'a dyn VarSource,
}

impl fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("host", &self.host)
            .field("path", &self.path)
            .field("method", &self.method)
            .field("remote_addr", &self.remote_addr)
            .finish_non_exhaustive()
    }
}

/// The route a request goes to.
#[derive(Debug)]
pub struct Match<'a, T> {
    pub value: &'a T,
    pub route_id: &'a Id,
    /// `:name` and `*name` captures in pattern order; an unnamed `*` captures nothing.
    pub params: Vec<(&'a str, String)>,
}

/// An immutable route index; see the module documentation for the matching order.
pub struct Router<T> {
    /// In precedence order: a smaller index wins among routes sharing a pattern.
    routes: Vec<Compiled<T>>,
    hosts: host::HostIndex,
}

impl<T> Router<T> {
    /// Compiles routes into an index. Never fails and never panics: a pattern that can
    /// never match (a catch-all that is not last, say) is simply not indexed.
    pub fn build(mut routes: Vec<RouteSpec<T>>) -> Router<T> {
        // Route numbers are u32 to keep the indexes small; u32::MAX is reserved as "none".
        routes.truncate(MAX_ROUTES);
        // A stable sort keeps the given order as the last tie-break, so even duplicate ids
        // are decided the same way on every replica fed the same list.
        routes.sort_by(precedence);
        let mut hosts = host::HostIndexBuilder::default();
        let mut compiled = Vec::with_capacity(routes.len());
        for (number, spec) in (0u32..).zip(routes) {
            hosts.add(number, &spec.hosts, &spec.paths);
            compiled.push(Compiled {
                id: spec.id,
                methods: Methods::new(spec.methods),
                remote_addrs: spec.remote_addrs.into_boxed_slice(),
                vars: spec.vars.map(Box::new),
                value: spec.value,
            });
        }
        Router {
            routes: compiled,
            hosts: hosts.finish(),
        }
    }

    /// The route for `req`, or `None` when no route accepts it.
    pub fn find(&self, req: &Request<'_>) -> Option<Match<'_, T>> {
        let mut accept = |n: u32| {
            self.routes
                .get(n as usize)
                .is_some_and(|route| route.accepts(req))
        };
        for index in self.hosts.tiers(req.host) {
            if let Some((n, params)) = index.find(req.path, &mut accept) {
                let route = self.routes.get(n as usize)?;
                return Some(Match {
                    value: &route.value,
                    route_id: &route.id,
                    params,
                });
            }
        }
        None
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router::build(Vec::new())
    }
}

impl<T> fmt::Debug for Router<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("routes", &self.routes.len())
            .field("hosts", &self.hosts)
            .finish()
    }
}

const MAX_ROUTES: usize = (u32::MAX - 1) as usize;

fn precedence<T>(a: &RouteSpec<T>, b: &RouteSpec<T>) -> Ordering {
    b.priority
        .cmp(&a.priority)
        .then(a.create_time.cmp(&b.create_time))
        .then_with(|| a.id.sort_key().cmp(&b.id.sort_key()))
}

/// A route's conditions other than host and path, in the form cheapest to check.
struct Compiled<T> {
    id: Id,
    methods: Methods,
    remote_addrs: Box<[IpNet]>,
    /// Boxed: most routes have none, and an inline `Expr` would nearly double this struct.
    vars: Option<Box<Expr>>,
    value: T,
}

impl<T> Compiled<T> {
    fn accepts(&self, req: &Request<'_>) -> bool {
        self.methods.allows(req.method)
            && remote_allowed(&self.remote_addrs, req.remote_addr)
            && self.vars.as_ref().is_none_or(|e| e.eval(req.vars))
    }
}

/// A dual-stack listener reports IPv4 clients as `::ffff:a.b.c.d`; they must still match
/// IPv4 ranges, so the canonical form is checked too.
fn remote_allowed(ranges: &[IpNet], addr: IpAddr) -> bool {
    if ranges.is_empty() {
        return true;
    }
    let canonical = addr.to_canonical();
    ranges
        .iter()
        .any(|net| net.contains(&addr) || net.contains(&canonical))
}

/// A method list as a bit set over the methods APISIX knows, so the common check is one
/// comparison loop over ten short names rather than a list of heap strings.
enum Methods {
    Any,
    Only { known: u16, other: Box<[Box<str>]> },
}

fn method_bit(method: &str) -> Option<u16> {
    model::route::METHODS
        .iter()
        .position(|m| *m == method)
        .map(|i| 1u16 << i)
}

impl Methods {
    fn new(list: Option<Vec<String>>) -> Methods {
        let Some(list) = list else {
            return Methods::Any;
        };
        let mut known = 0;
        let mut other = Vec::new();
        for m in list {
            match method_bit(&m) {
                Some(bit) => known |= bit,
                None => other.push(m.into_boxed_str()),
            }
        }
        Methods::Only {
            known,
            other: other.into_boxed_slice(),
        }
    }

    /// Exact, case-sensitive: HTTP methods are, and APISIX does not imply HEAD from GET.
    fn allows(&self, method: &str) -> bool {
        match self {
            Methods::Any => true,
            Methods::Only { known, other } => match method_bit(method) {
                Some(bit) => known & bit != 0,
                None => other.iter().any(|m| &**m == method),
            },
        }
    }
}

/// A run of entries in one of the flat lists the indexes keep, so a pattern's routes cost
/// eight bytes instead of a boxed slice each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    /// Appends `items` to `flat` and returns where they went.
    fn push<E: Copy>(flat: &mut Vec<E>, items: &[E]) -> Span {
        let start = u32::try_from(flat.len()).unwrap_or(u32::MAX);
        let len = u32::try_from(items.len()).unwrap_or(0);
        if start == u32::MAX || len == 0 {
            return Span::default();
        }
        flat.extend_from_slice(items);
        Span { start, len }
    }

    fn is_empty(self) -> bool {
        self.len == 0
    }

    /// The entries of this span; an out-of-range span (impossible by construction) is empty.
    fn of<E>(self, flat: &[E]) -> &[E] {
        let start = self.start as usize;
        flat.get(start..start + self.len as usize).unwrap_or(&[])
    }
}
