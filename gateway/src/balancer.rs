//! Smooth weighted round robin (nginx's algorithm): over any window of `sum(weights)` picks,
//! each node is chosen exactly `weight` times, interleaved rather than in bursts.
use std::sync::Mutex;

#[derive(Debug)]
pub struct Balancer {
    weights: Vec<i64>,
    current: Mutex<Vec<i64>>,
}

impl Balancer {
    pub fn new(weights: &[u32]) -> Balancer {
        Balancer {
            weights: weights.iter().map(|w| i64::from(*w)).collect(),
            current: Mutex::new(vec![0; weights.len()]),
        }
    }

    pub fn weights(&self) -> &[i64] {
        &self.weights
    }

    /// Picks a node index, skipping `exclude` (nodes that already failed for this request).
    /// Zero-weight nodes are never picked. `None` when nothing is left.
    pub fn pick(&self, exclude: &[usize]) -> Option<usize> {
        self.pick_where(|i| !exclude.contains(&i))
    }

    /// Picks among the node indices in `allowed` (nodes health, priority and zone left).
    pub fn pick_among(&self, allowed: &[usize]) -> Option<usize> {
        self.pick_where(|i| allowed.contains(&i))
    }

    /// Only nodes `eligible` take part in the round, as nginx skips down peers: the
    /// others neither gain nor lose, so the rotation resumes where it was when they return.
    fn pick_where(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        // One node (the commonest upstream): the round would add its weight and take it
        // back, leaving nothing changed, so the lock is not taken.
        if let [w] = *self.weights {
            return (w != 0 && eligible(0)).then_some(0);
        }
        // A poisoned lock only means another request panicked mid-pick; the weights are
        // still usable numbers, so keep balancing rather than failing every request.
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let mut total = 0;
        let mut best: Option<usize> = None;
        for (i, w) in self.weights.iter().enumerate() {
            if *w == 0 || !eligible(i) {
                continue;
            }
            current[i] += w;
            total += w;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        current[b] -= total;
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequence(weights: &[u32], n: usize) -> String {
        let b = Balancer::new(weights);
        (0..n)
            .map(|_| b.pick(&[]).map(|i| (b'a' + i as u8) as char).unwrap_or('-'))
            .collect()
    }

    #[test]
    fn smooth_sequences() {
        for (weights, want) in [
            (&[5, 1, 1][..], "aabacaa"),
            (&[1, 1, 1][..], "abcabc"),
            (&[2, 1][..], "abaaba"),
            (&[0, 1][..], "bbb"),
            (&[0, 0][..], "--"),
            (&[][..], "-"),
            (&[3][..], "aaaa"),
            (&[0][..], "--"),
        ] {
            assert_eq!(sequence(weights, want.len()), want, "{weights:?}");
        }
        // A lone node that failed for this request, or is not allowed, is not picked.
        assert_eq!(Balancer::new(&[3]).pick(&[0]), None);
        assert_eq!(Balancer::new(&[3]).pick_among(&[]), None);
        assert_eq!(Balancer::new(&[3]).pick_among(&[0]), Some(0));
    }

    #[test]
    fn exact_shares_over_a_window() {
        let b = Balancer::new(&[3, 5, 2]);
        let mut counts = [0; 3];
        for _ in 0..1000 {
            counts[b.pick(&[]).unwrap()] += 1;
        }
        assert_eq!(counts, [300, 500, 200]);
    }

    #[test]
    fn exclusion() {
        let b = Balancer::new(&[1, 1, 1]);
        for _ in 0..10 {
            assert_eq!(b.pick(&[0, 2]), Some(1));
        }
        assert_eq!(b.pick(&[0, 1, 2]), None);
    }
}
