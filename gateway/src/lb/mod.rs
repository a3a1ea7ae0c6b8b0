//! Load-balancing building blocks: node choice per method, node health, and the narrowing
//! of candidates by health, priority and zone. Pure: no IO, no hyper or snapshot types, so
//! each rule is unit-tested alone.

pub mod chash;
pub mod ewma;
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
}
