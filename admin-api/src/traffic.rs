//! Per-route traffic for the dashboard (pure): each replica's `route_requests` (responses
//! by status class, counted for routes that carry the `prometheus` plugin), their sums,
//! and requests per second between two samples, replica by replica.
use serde_json::Value;
use std::collections::BTreeMap;

/// Responses by status class (`2xx`…), per route label (id, or name under
/// `prefer_name`).
pub type Totals = BTreeMap<String, BTreeMap<String, u64>>;

/// One observation: each replica's counts (the replicas whose `/status` answered), `at`
/// seconds on a monotonic clock.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub at: f64,
    pub replicas: BTreeMap<String, Totals>,
}

impl Sample {
    /// `(replica id, its /status if it answered)`.
    pub fn new<'a>(
        at: f64,
        statuses: impl IntoIterator<Item = (&'a str, &'a Option<Value>)>,
    ) -> Sample {
        let mut replicas = BTreeMap::new();
        for (id, status) in statuses {
            let Some(routes) = status
                .as_ref()
                .and_then(|s| s["route_requests"].as_object())
            else {
                continue;
            };
            let mut t = Totals::new();
            for (route, classes) in routes {
                let sum = t.entry(route.clone()).or_default();
                for (class, n) in classes.as_object().into_iter().flatten() {
                    *sum.entry(class.clone()).or_default() += n.as_u64().unwrap_or(0);
                }
            }
            replicas.insert(id.to_string(), t);
        }
        Sample { at, replicas }
    }

    /// The counts summed over the replicas.
    pub fn totals(&self) -> Totals {
        let mut out = Totals::new();
        for t in self.replicas.values() {
            for (route, classes) in t {
                let sum = out.entry(route.clone()).or_default();
                for (class, n) in classes {
                    *sum.entry(class.clone()).or_default() += n;
                }
            }
        }
        out
    }
}

/// Requests per second per route since `prev` (none without an earlier sample), from the
/// replicas seen in both: a replica that did not answer last time adds nothing (its whole
/// count is not this interval's), and one whose count fell has restarted: what it counted
/// since is this interval's.
pub fn rates(prev: Option<&Sample>, now: &Sample) -> BTreeMap<String, f64> {
    let Some(prev) = prev.filter(|p| now.at > p.at) else {
        return BTreeMap::new();
    };
    let all = |t: &BTreeMap<String, u64>| t.values().sum::<u64>();
    let mut deltas: BTreeMap<String, u64> = BTreeMap::new();
    for (replica, routes) in &now.replicas {
        let Some(before) = prev.replicas.get(replica) else {
            continue;
        };
        for (route, classes) in routes {
            let (was, is) = (before.get(route).map_or(0, all), all(classes));
            let delta = if is >= was { is - was } else { is };
            *deltas.entry(route.clone()).or_default() += delta;
        }
    }
    deltas
        .into_iter()
        .map(|(route, d)| (route, d as f64 / (now.at - prev.at)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sums_and_rates_replica_by_replica() {
        let a = Some(json!({"route_requests": {"r1": {"2xx": 10, "5xx": 1}, "r2": {"4xx": 3}}}));
        let b = Some(json!({"route_requests": {"r1": {"2xx": 5}}}));
        let none = None;
        let old = Some(json!({"ready": true}));
        let first = Sample::new(10.0, [("a", &a), ("b", &b), ("c", &none), ("d", &old)]);
        let t = first.totals();
        assert_eq!(t["r1"]["2xx"], 15);
        assert_eq!(t["r1"]["5xx"], 1);
        assert_eq!(t["r2"]["4xx"], 3);
        assert!(rates(None, &first).is_empty());
        // Two seconds on: a served 20 more on r1; b restarted (its count fell from 5 to
        // 2); c answers for the first time with its whole history (not this interval's).
        let a2 = Some(json!({"route_requests": {"r1": {"2xx": 30, "5xx": 1}, "r2": {"4xx": 3}}}));
        let b2 = Some(json!({"route_requests": {"r1": {"2xx": 2}}}));
        let c2 = Some(json!({"route_requests": {"r1": {"2xx": 1000000}, "r3": {"2xx": 9}}}));
        let second = Sample::new(12.0, [("a", &a2), ("b", &b2), ("c", &c2)]);
        let r = rates(Some(&first), &second);
        assert_eq!(r["r1"], 11.0);
        assert_eq!(r["r2"], 0.0);
        assert!(!r.contains_key("r3"));
        // The same instant: no rate rather than a division by zero.
        assert!(rates(Some(&second), &second).is_empty());
    }
}
