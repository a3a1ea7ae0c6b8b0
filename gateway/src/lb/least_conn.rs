//! Least connections: the node with the fewest requests in flight relative to its weight
//! (nginx's `least_conn` rule: `in_flight / weight`, compared without division).
//!
//! Ties, which is every pick while the upstream is idle, go to a weighted rotation, so idle
//! traffic is still spread by weight and equal nodes take turns instead of the first one
//! taking everything. Picking and counting are two atomic steps, not one: two concurrent
//! picks may choose the same node, which only matters for one request each.
use super::{InFlight, InFlightGuard};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct LeastConn {
    nodes: Vec<(u32, InFlight)>,
    /// Advances once per pick; picks the start of the weighted rotation.
    tick: AtomicU64,
}

impl LeastConn {
    /// `nodes` are `(weight, in_flight)`, indexed in the order given. The counters are the
    /// nodes' own (see [`super::NodeState`]), so counts survive a rebuild.
    pub fn new(nodes: impl IntoIterator<Item = (u32, InFlight)>) -> LeastConn {
        LeastConn {
            nodes: nodes.into_iter().collect(),
            tick: AtomicU64::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Requests in flight to node `index`.
    pub fn in_flight(&self, index: usize) -> usize {
        self.nodes.get(index).map_or(0, |(_, c)| c.get())
    }

    /// The least loaded of `candidates` (node indices; unknown ones and weight 0 are
    /// skipped). `None` when no candidate is left.
    pub fn pick(&self, candidates: &[usize]) -> Option<usize> {
        let live = || {
            candidates
                .iter()
                .filter_map(|i| Some((*i, self.nodes.get(*i)?)))
                .filter(|(_, (w, _))| *w > 0)
        };
        let total: u64 = live().map(|(_, (w, _))| u64::from(*w)).sum();
        if total == 0 {
            return None;
        }
        // The rotation starts at the node owning slot `tick % total` of the candidates'
        // weights laid end to end: over `total` idle picks each node starts `weight` times.
        let mut slot = self.tick.fetch_add(1, Ordering::Relaxed) % total;
        let count = live().count();
        let start = live()
            .position(|(_, (w, _))| {
                let here = slot < u64::from(*w);
                slot = slot.saturating_sub(u64::from(*w));
                here
            })
            .unwrap_or(0);
        let mut best: Option<(usize, u128, u128)> = None;
        for (i, (w, c)) in live().cycle().skip(start).take(count) {
            let (load, weight) = (c.get() as u128, u128::from(*w));
            // load / weight < best_load / best_weight; strict, so the rotation's start
            // wins ties.
            if best.is_none_or(|(_, bl, bw)| load * bw < bl * weight) {
                best = Some((i, load, weight));
            }
        }
        best.map(|(i, _, _)| i)
    }

    /// Picks like [`pick`](Self::pick) and counts the request on the chosen node at once.
    pub fn pick_and_enter(&self, candidates: &[usize]) -> Option<(usize, InFlightGuard)> {
        let i = self.pick(candidates)?;
        Some((i, self.nodes[i].1.enter()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn lb(weights: &[u32]) -> LeastConn {
        LeastConn::new(weights.iter().map(|w| (*w, InFlight::default())))
    }

    fn all(lb: &LeastConn) -> Vec<usize> {
        (0..lb.len()).collect()
    }

    /// Picks `n` times, each request finishing before the next: the idle case.
    fn idle_sequence(weights: &[u32], n: usize) -> String {
        let lb = lb(weights);
        let c = all(&lb);
        (0..n)
            .map(|_| lb.pick(&c).map_or('-', |i| (b'a' + i as u8) as char))
            .collect()
    }

    #[test]
    fn idle_picks_rotate_by_weight() {
        for (weights, want) in [
            (&[1, 1, 1][..], "abcabc"),
            (&[2, 1][..], "aabaab"),
            (&[1, 0, 1][..], "acac"),
            (&[0, 0][..], "--"),
            (&[][..], "-"),
        ] {
            assert_eq!(idle_sequence(weights, want.len()), want, "{weights:?}");
        }
    }

    #[test]
    fn fewest_in_flight_relative_to_weight() {
        let lb = lb(&[1, 1, 3]);
        let c = all(&lb);
        let mut held = Vec::new();
        // Each held request raises its node's load; the picks fill nodes in proportion:
        // c (weight 3) takes 3 for every 1 of a and b.
        for _ in 0..10 {
            held.push(lb.pick_and_enter(&c).unwrap());
        }
        let counts: Vec<usize> = (0..3).map(|i| lb.in_flight(i)).collect();
        assert_eq!(counts, [2, 2, 6]);
        // Releasing a's requests makes a the least loaded at once.
        held.retain(|(i, _)| *i != 0);
        assert_eq!(lb.in_flight(0), 0);
        assert_eq!(lb.pick(&c), Some(0));
    }

    #[test]
    fn only_candidates_are_picked() {
        let lb = lb(&[1, 1, 1, 1]);
        let _busy = lb.pick_and_enter(&[1]).unwrap();
        for _ in 0..8 {
            assert!(matches!(lb.pick(&[1, 3]), Some(3)));
        }
        assert_eq!(lb.pick(&[]), None);
        assert_eq!(lb.pick(&[9]), None, "unknown index");
    }

    #[test]
    fn counts_are_the_nodes_own() {
        let shared = InFlight::default();
        let old = LeastConn::new([(1, shared.clone()), (1, InFlight::default())]);
        let (i, guard) = old.pick_and_enter(&[0]).unwrap();
        assert_eq!(i, 0);
        // The next snapshot's balancer sees the request still running on the old one.
        let new = LeastConn::new([(1, shared.clone()), (1, InFlight::default())]);
        assert_eq!(new.in_flight(0), 1);
        assert_eq!(new.pick(&[0, 1]), Some(1));
        drop(old);
        drop(guard);
        assert_eq!(new.in_flight(0), 0);
    }

    #[test]
    fn concurrent_tasks_balance_and_release() {
        let lb = Arc::new(lb(&[1, 1, 1, 1]));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lb = lb.clone();
                std::thread::spawn(move || {
                    let c = [0, 1, 2, 3];
                    let mut hist = [0usize; 4];
                    for _ in 0..2000 {
                        let (i, _g) = lb.pick_and_enter(&c).unwrap();
                        hist[i] += 1;
                    }
                    hist
                })
            })
            .collect();
        let mut total = [0usize; 4];
        for t in threads {
            for (t, h) in total.iter_mut().zip(t.join().unwrap()) {
                *t += h;
            }
        }
        assert_eq!((0..4).map(|i| lb.in_flight(i)).sum::<usize>(), 0);
        assert_eq!(total.iter().sum::<usize>(), 8000);
        // How evenly depends on the scheduler: a thread preempted while holding a node
        // keeps the others off it (it failed a 1000..3000 band once on a loaded machine).
        // What must hold is that no node is starved; an even spread without contention
        // is `idle_picks_rotate_by_weight`.
        for n in total {
            assert!(n > 0, "{total:?}");
        }
    }
}
