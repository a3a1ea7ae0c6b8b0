//! Route matching: picks the one route a request goes to, in APISIX's `radixtree_host_uri`
//! order made deterministic (design.md, "Routing semantics").
//!
//! A `Router` is immutable once made, away from requests: built whole, or derived from
//! the previous snapshot's by [`Router::update`]. A lookup only touches hash maps and
//! tries keyed by the request's host labels and path bytes, so its cost follows the
//! request, not the number of routes; the only per-route work is checking the conditions
//! of routes that share a pattern the request matched.
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
//!
//! # Structure and what a change costs
//!
//! Everything is persistent, so two snapshots share whatever one change did not touch:
//!
//! - host tables (`host.rs`) by host in `imbl` maps, each `Table` behind an `Arc`;
//! - in a table, each pattern's routes are one immutable list of `Arc<Member>` in
//!   precedence order (`candidates.rs`; a lone route is kept inline);
//! - exact paths map to their list in a persistent `FastMap` (imbl, foldhash); the
//!   segment trie and the prefix tree are `Arc` nodes, changed by copying the nodes from
//!   the root down to the pattern's node (path copying); a trie node with many static
//!   children keeps them in a `FastMap`, so copying it does not copy its siblings.
//!
//! [`Router::update`] groups its changes by host and pattern: each touched list is remade
//! once (the routes that go filtered out, the ones that come merged in), and the trie
//! nodes above it are copied once. One changed route costs, per pattern, O(list length
//! plus depth × log(children)), independent of how many other routes share its host (one
//! change among 50k host-less routes: a few microseconds, see docs/benchmarks.md).
//! An updated router has exactly the structure a fresh build of the same routes would:
//! nodes a removal leaves empty are removed, and a prefix-tree node left with one child
//! is merged with it. [`Router::build`] is the same batch applied to empty tables.
//!
//! Nodes never point back up (a shared node has a parent in every snapshot), so a prefix
//! lookup whose longest prefix refuses walks the path again for the shorter ones. Deep
//! tries are walked, changed and dropped with loops, never recursion. The price of all
//! this sharing is memory: about half again what flat arenas and std maps took.

mod candidates;
mod host;
mod params;
mod path;
mod prefix;
mod table;
#[cfg(test)]
mod tests;

use host::{HostIndex, HostKey};
use ipnet::IpNet;
use model::host::HostPattern;
use model::path::PathPattern;
use model::vars::{Expr, VarSource};
use model::Id;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use table::Table;

/// The persistent maps looked up per request (hosts, exact paths, trie children): keyed by
/// configuration, so a fast seeded hash serves where std's SipHash would cost each lookup
/// several hundred instructions (a client's host or path only looks up, never inserts).
pub(crate) type FastMap<K, V> =
    imbl::GenericHashMap<K, V, foldhash::fast::RandomState, imbl::shared_ptr::DefaultSharedPtr>;

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
///
/// Built whole with [`Router::build`], or derived from the previous one with
/// [`Router::update`], which copies only what leads to the changed routes' patterns and
/// shares the rest: a change costs about the same among ten routes or 50k on one host.
pub struct Router<T> {
    hosts: HostIndex<T>,
    /// Every route by id, to know which tables a route leaves when it changes.
    by_id: imbl::HashMap<Id, Arc<Member<T>>>,
    /// Tie-break among routes equal in everything else: the order they were given in.
    next_seq: u64,
}

impl<T> Clone for Router<T> {
    fn clone(&self) -> Self {
        Router {
            hosts: self.hosts.clone(),
            by_id: self.by_id.clone(),
            next_seq: self.next_seq,
        }
    }
}

impl<T> Router<T> {
    /// Compiles routes into an index. Never fails and never panics: a pattern that can
    /// never match (a catch-all that is not last, say) is simply not indexed.
    pub fn build(routes: Vec<RouteSpec<T>>) -> Router<T> {
        let mut by_id = imbl::HashMap::new();
        let mut groups: HashMap<HostKey, Vec<Arc<Member<T>>>> = HashMap::new();
        let mut seq = 0;
        for spec in routes {
            let member = Arc::new(Member::new(spec, seq));
            seq += 1;
            for key in member.hosts.iter() {
                groups.entry(key.clone()).or_default().push(member.clone());
            }
            // With duplicate ids (never from a snapshot, whose ids are keys) every copy
            // is indexed; the last one is what a later update replaces.
            by_id.insert(member.id.clone(), member);
        }
        let mut hosts = HostIndex::empty();
        for (key, members) in groups {
            hosts.set(key, Table::build(members));
        }
        hosts.finish();
        Router {
            hosts,
            by_id,
            next_seq: seq,
        }
    }

    /// This router with `changes` applied: each id's route is replaced by the given spec,
    /// or removed for `None`; a later change of the same id wins over an earlier one.
    /// Only the lists of the patterns a changed route has or had, under the hosts it has or
    /// had, are copied, with the trie nodes that lead to them: the rest is shared.
    pub fn update(
        &self,
        changes: impl IntoIterator<Item = (Id, Option<RouteSpec<T>>)>,
    ) -> Router<T> {
        let changes: HashMap<Id, Option<RouteSpec<T>>> = changes.into_iter().collect();
        if changes.is_empty() {
            return self.clone();
        }
        let mut by_id = self.by_id.clone();
        // Per host: the routes that leave and the ones that come, applied as one batch so
        // that a list many changed routes share is remade once, not once per route.
        type Batch<T> = (Vec<Arc<Member<T>>>, Vec<Arc<Member<T>>>);
        let mut batches: HashMap<HostKey, Batch<T>> = HashMap::new();
        let mut seq = self.next_seq;
        for (id, spec) in changes {
            if let Some(old) = by_id.remove(&id) {
                for key in old.hosts.iter() {
                    batches.entry(key.clone()).or_default().0.push(old.clone());
                }
            }
            let Some(spec) = spec else { continue };
            let member = Arc::new(Member::new(spec, seq));
            seq += 1;
            for key in member.hosts.iter() {
                batches
                    .entry(key.clone())
                    .or_default()
                    .1
                    .push(member.clone());
            }
            by_id.insert(member.id.clone(), member);
        }
        let mut hosts = self.hosts.clone();
        for (key, (gone, new)) in batches {
            // O(1): the table is persistent, and `apply` copies only what it changes.
            let mut table = hosts
                .get(&key)
                .map_or_else(Table::empty, |t| Table::clone(t));
            table.apply(&gone, new);
            hosts.set(key, table);
        }
        hosts.finish();
        Router {
            hosts,
            by_id,
            next_seq: seq,
        }
    }

    /// The route for `req`, or `None` when no route accepts it.
    pub fn find(&self, req: &Request<'_>) -> Option<Match<'_, T>> {
        for table in self.hosts.tiers(req.host) {
            if let Some((member, params)) = table.find(req) {
                return Some(Match {
                    value: &member.value,
                    route_id: &member.id,
                    params,
                });
            }
        }
        None
    }

    /// Distinct route ids indexed.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// How many host tables there are (exact hosts, wildcard suffixes, and "no host").
    pub fn tables(&self) -> usize {
        self.hosts.exact.len() + self.hosts.wildcard.len() + 1
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
            .field("routes", &self.by_id.len())
            .field("exact_hosts", &self.hosts.exact.len())
            .field("wildcard_hosts", &self.hosts.wildcard.len())
            .finish()
    }
}

/// A route compiled for matching: its conditions other than host and path in the form
/// cheapest to check, shared by every table (host) it is indexed under.
pub(crate) struct Member<T> {
    id: Id,
    /// The id as a number when it is one, computed once for the precedence sort.
    numeric_id: Option<u128>,
    hosts: Box<[HostKey]>,
    paths: Box<[PathPattern]>,
    priority: i64,
    create_time: u64,
    seq: u64,
    methods: Methods,
    remote_addrs: Box<[IpNet]>,
    /// Boxed: most routes have none, and an inline `Expr` would nearly double this struct.
    vars: Option<Box<Expr>>,
    value: T,
}

impl<T> Member<T> {
    fn new(spec: RouteSpec<T>, seq: u64) -> Member<T> {
        Member {
            numeric_id: spec.id.as_str().parse::<u128>().ok(),
            hosts: HostKey::of(&spec.hosts).into_boxed_slice(),
            paths: spec.paths.into_boxed_slice(),
            priority: spec.priority,
            create_time: spec.create_time,
            seq,
            methods: Methods::new(spec.methods),
            remote_addrs: spec.remote_addrs.into_boxed_slice(),
            vars: spec.vars.map(Box::new),
            value: spec.value,
            id: spec.id,
        }
    }

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

#[cfg(test)]
impl<T> Router<T> {
    /// Every table's census by host: two routers with the same routes must have the same
    /// structures, however they were derived.
    fn census(&self) -> std::collections::BTreeMap<String, Vec<usize>> {
        let exact = self.hosts.exact.iter().map(|(h, t)| (format!("={h}"), t));
        let wildcard = self
            .hosts
            .wildcard
            .iter()
            .map(|(h, t)| (format!("*{h}"), t));
        exact
            .chain(wildcard)
            .chain(std::iter::once(("any".to_string(), &self.hosts.any)))
            .map(|(h, t)| (h, t.census()))
            .chain(std::iter::once((
                "longest wildcard".to_string(),
                vec![self.hosts.longest_wildcard],
            )))
            .collect()
    }
}
