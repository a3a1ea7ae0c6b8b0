//! Load-balancing building blocks: node choice per method (`chash`, `least_conn`, `ewma`),
//! node health, and the narrowing of candidates by health, priority and zone. Pure: no IO,
//! no hyper or snapshot types, so each rule is unit-tested alone.
//!
//! # How they are meant to be wired
//!
//! A node is identified by its upstream's key (the resource id, or the route/service that
//! embeds it) and its address (`host:port`). Everything that must outlive a snapshot lives
//! in one [`NodeState`] per `(upstream key, address)`, kept beside the snapshots; the
//! compiler of the next snapshot clones the `NodeState` of every node that stays (a fresh
//! one for a new node), so in-flight counts, latency estimates and health carry over, and
//! requests still running on the old snapshot keep updating the same counters. State of
//! nodes that left is dropped with the last snapshot and request that hold it.
//!
//! Per snapshot and upstream, build once: the node list as [`health::Candidate`]s (weight,
//! priority, zone from the model; health read from [`NodeState::health`] at request time),
//! and the method's picker over the same node indices: [`chash::Ring`] from
//! `(address, weight)`, [`least_conn::LeastConn`] from `(weight, in_flight)`,
//! [`ewma::Ewma`] from `(rtt, in_flight)`; round robin stays in `crate::balancer`.
//!
//! Per request attempt:
//! 1. [`health::select`] with the nodes already tried by this request and the gateway's
//!    `--zone` gives the candidate indices (empty: every node was tried, answer 502/503);
//! 2. the method picks among them (`chash` hashes the key named by `hash_on`/`key`; APISIX
//!    falls back to `remote_addr` when the request lacks it);
//! 3. hold [`InFlight::enter`]'s guard for the whole exchange, response body included;
//! 4. report the outcome: [`ewma::Rtt::observe`] with the time to the response head, and,
//!    when the upstream has `checks.passive`, [`health::HealthCell::record`] with
//!    [`health::Thresholds::passive`] (status, connect failure, or timeout).
//!
//! Active checks run in one task per upstream with `checks.active` (APISIX skips upstreams
//! of one node), probing each node every `interval(healthy)` and recording into the same
//! `HealthCell` with [`health::Thresholds::active`]; active and passive share its counters,
//! as in lua-resty-healthcheck.

pub mod chash;
pub mod ewma;
pub mod health;
pub mod least_conn;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Requests in flight to one node, shared by every snapshot that has the node.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one request until the guard is dropped, however the request ends.
    pub fn enter(&self) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(self.clone())
    }
}

/// Holds one count of an [`InFlight`]; owns its counter, so it may outlive the snapshot.
#[derive(Debug)]
#[must_use = "the request stops counting as in flight when the guard is dropped"]
pub struct InFlightGuard(InFlight);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What one node keeps across snapshots. Cheap to clone: every field is shared.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    pub in_flight: InFlight,
    pub rtt: ewma::Rtt,
    pub health: Arc<health::HealthCell>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_guards_count_until_dropped() {
        let n = InFlight::default();
        let a = n.enter();
        let b = n.clone().enter();
        assert_eq!(n.get(), 2);
        drop(a);
        assert_eq!(n.get(), 1);
        drop(b);
        assert_eq!(n.get(), 0);
    }

    #[test]
    fn node_state_clones_share_everything() {
        let s = NodeState::default();
        let next_snapshot = s.clone();
        let _g = s.in_flight.enter();
        assert_eq!(next_snapshot.in_flight.get(), 1);
        assert!(Arc::ptr_eq(&s.health, &next_snapshot.health));
    }
}
