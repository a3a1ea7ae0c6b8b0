//! Peak-EWMA: prefer the node that has recently been fastest, counting its queue.
//!
//! Each node keeps an exponentially weighted moving average of its response latency that
//! jumps to any slower sample at once ("peak") and forgets with a decay time of 10 s
//! (APISIX's `DECAY_TIME`, linkerd's `EWMA_DECAY`). A node's cost is that estimate times
//! (requests in flight + 1), so a node that is fast but already busy looks as slow as it
//! will be. Two distinct candidates are drawn at random and the cheaper wins (power of two
//! choices): nearly as good as scanning all, without every gateway herding onto the one
//! best node.
//!
//! Between samples the estimate decays towards zero, as if the node answered instantly,
//! so a node that served nothing for a while gets tried again and measured afresh. A new
//! node starts at 30 ms (linkerd's `EWMA_DEFAULT_RTT`) rather than zero, so it does not
//! draw every request before its first answer. Time is passed in (`now`) so tests drive
//! the clock; weights are ignored, as in APISIX.
use super::InFlight;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const DECAY: Duration = Duration::from_secs(10);
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// One node's latency estimate, shared by every snapshot that has the node.
#[derive(Debug, Clone)]
pub struct Rtt(Arc<Mutex<Estimate>>);

#[derive(Debug, Clone, Copy)]
struct Estimate {
    /// Seconds, as of `at`.
    secs: f64,
    at: Instant,
}

impl Estimate {
    /// The estimate at `now`, decayed towards `toward` (a sample, or 0 for no sample).
    fn decayed(&self, now: Instant, toward: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        let keep = (-elapsed / DECAY.as_secs_f64()).exp();
        self.secs * keep + toward * (1.0 - keep)
    }
}

impl Default for Rtt {
    fn default() -> Self {
        Rtt::new(DEFAULT_RTT, Instant::now())
    }
}

impl Rtt {
    /// Starts at `initial` as of `now`.
    pub fn new(initial: Duration, now: Instant) -> Rtt {
        Rtt(Arc::new(Mutex::new(Estimate {
            secs: initial.as_secs_f64(),
            at: now,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Estimate> {
        // A panic elsewhere mid-update leaves a number that is still a usable estimate.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a response that took `rtt`, received at `now`.
    pub fn observe(&self, rtt: Duration, now: Instant) {
        let mut e = self.lock();
        let sample = rtt.as_secs_f64();
        let current = e.decayed(now, 0.0);
        e.secs = if sample > current {
            sample
        } else {
            e.decayed(now, sample)
        };
        // Samples may arrive out of order (a slow request ends after a later fast one);
        // never move the reference time backwards.
        e.at = e.at.max(now);
    }

    /// The estimate at `now`, in seconds.
    pub fn estimate(&self, now: Instant) -> f64 {
        self.lock().decayed(now, 0.0)
    }
}

#[derive(Debug)]
pub struct Ewma {
    nodes: Vec<(Rtt, InFlight)>,
    rng: AtomicU64,
}

impl Ewma {
    /// `nodes` are `(rtt, in_flight)`, indexed in the order given; both are the nodes' own
    /// (see [`super::NodeState`]), so estimates survive a rebuild.
    pub fn new(nodes: impl IntoIterator<Item = (Rtt, InFlight)>) -> Ewma {
        // Replicas started together should not draw the same pairs.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Ewma::with_seed(nodes, seed)
    }

    /// Like [`new`](Self::new) with a fixed random sequence, for tests.
    pub fn with_seed(nodes: impl IntoIterator<Item = (Rtt, InFlight)>, seed: u64) -> Ewma {
        Ewma {
            nodes: nodes.into_iter().collect(),
            rng: AtomicU64::new(seed),
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Estimated latency times (requests in flight + 1), in seconds; infinite for an
    /// unknown index.
    pub fn cost(&self, index: usize, now: Instant) -> f64 {
        match self.nodes.get(index) {
            Some((rtt, in_flight)) => rtt.estimate(now) * (in_flight.get() as f64 + 1.0),
            None => f64::INFINITY,
        }
    }

    /// The cheaper of two distinct random `candidates` (node indices). `None` when there
    /// are none.
    pub fn pick(&self, candidates: &[usize], now: Instant) -> Option<usize> {
        let candidates: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|i| *i < self.nodes.len())
            .collect();
        match candidates.len() {
            0 => None,
            1 => Some(candidates[0]),
            n => {
                let a = (self.next_random() % n as u64) as usize;
                let b = (self.next_random() % (n as u64 - 1)) as usize;
                let b = if b >= a { b + 1 } else { b };
                let (a, b) = (candidates[a], candidates[b]);
                Some(if self.cost(b, now) < self.cost(a, now) {
                    b
                } else {
                    a
                })
            }
        }
    }

    /// splitmix64: lock-free, and good enough to draw pairs.
    fn next_random(&self) -> u64 {
        let mut z = self
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn estimate_follows_peaks_and_decays() {
        let t0 = Instant::now();
        let secs = |s: f64| t0 + Duration::from_secs_f64(s);
        let rtt = Rtt::new(DEFAULT_RTT, t0);
        assert!(close(rtt.estimate(t0), 0.030));
        // A slower sample is taken at once.
        rtt.observe(200 * MS, t0);
        assert!(close(rtt.estimate(t0), 0.200));
        // A faster one blends in by the time elapsed: after one decay time, e^-1 of the old.
        rtt.observe(10 * MS, secs(10.0));
        let want = 0.200 * (-1f64).exp() + 0.010 * (1.0 - (-1f64).exp());
        assert!(
            close(rtt.estimate(secs(10.0)), want),
            "{}",
            rtt.estimate(secs(10.0))
        );
        // With no samples it decays towards zero.
        assert!(close(rtt.estimate(secs(20.0)), want * (-1f64).exp()));
        assert!(rtt.estimate(secs(300.0)) < 1e-6);
        // A sample's weight grows with the time since the previous one: at the same
        // instant, a faster sample does not move the estimate.
        let r = Rtt::new(100 * MS, t0);
        r.observe(MS, t0);
        assert!(close(r.estimate(t0), 0.100));
    }

    #[test]
    fn late_samples_do_not_rewind_time() {
        let t0 = Instant::now();
        let r = Rtt::new(10 * MS, t0);
        r.observe(10 * MS, t0 + 5 * Duration::from_secs(1));
        r.observe(500 * MS, t0);
        assert!(close(r.estimate(t0 + 5 * Duration::from_secs(1)), 0.500));
    }

    fn ewma(rtts_ms: &[u64], t0: Instant) -> (Ewma, Vec<InFlight>) {
        let flights: Vec<InFlight> = rtts_ms.iter().map(|_| InFlight::default()).collect();
        let nodes = rtts_ms
            .iter()
            .zip(&flights)
            .map(|(ms, f)| (Rtt::new(Duration::from_millis(*ms), t0), f.clone()));
        (Ewma::with_seed(nodes, 7), flights)
    }

    #[test]
    fn cost_counts_requests_in_flight() {
        let t0 = Instant::now();
        let (lb, flights) = ewma(&[10, 30], t0);
        assert!(close(lb.cost(0, t0), 0.010));
        let _held: Vec<_> = (0..3).map(|_| flights[0].enter()).collect();
        assert!(close(lb.cost(0, t0), 0.040));
        assert!(close(lb.cost(1, t0), 0.030));
        assert_eq!(lb.pick(&[0, 1], t0), Some(1));
        assert_eq!(lb.cost(9, t0), f64::INFINITY);
    }

    #[test]
    fn two_choices_favour_the_fast_node() {
        let t0 = Instant::now();
        let (lb, _) = ewma(&[5, 50, 50, 50], t0);
        let all = [0, 1, 2, 3];
        let mut hist = [0usize; 4];
        for _ in 0..4000 {
            hist[lb.pick(&all, t0).unwrap()] += 1;
        }
        // The fast node wins every pair it is drawn in: half of all pairs.
        assert!((1800..2200).contains(&hist[0]), "{hist:?}");
        // The slow ones still get the pairs without it, evenly.
        for n in &hist[1..] {
            assert!((500..850).contains(n), "{hist:?}");
        }
    }

    #[test]
    fn pick_edges() {
        let t0 = Instant::now();
        let (lb, _) = ewma(&[10, 10], t0);
        assert_eq!(lb.pick(&[], t0), None);
        assert_eq!(lb.pick(&[1], t0), Some(1));
        assert_eq!(lb.pick(&[5], t0), None, "unknown index");
        assert_eq!(lb.pick(&[5, 0], t0), Some(0));
        // Two distinct candidates are always compared.
        for _ in 0..100 {
            assert!(lb.pick(&[0, 1], t0).is_some());
        }
    }

    #[test]
    fn idle_slow_node_is_tried_again() {
        let t0 = Instant::now();
        let (lb, _) = ewma(&[5, 5], t0);
        lb.nodes[1].0.observe(Duration::from_secs(2), t0);
        assert_eq!(lb.pick(&[0, 1], t0), Some(0));
        // 90 s without traffic: its two seconds have decayed below the busy node's fresh
        // 5 ms.
        let later = t0 + Duration::from_secs(90);
        lb.nodes[0].0.observe(5 * MS, later);
        assert!(lb.cost(1, later) < lb.cost(0, later));
        assert_eq!(lb.pick(&[0, 1], later), Some(1));
    }
}
