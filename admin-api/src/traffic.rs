//! Per-route traffic for the dashboard (pure): the replicas' `route_requests` (responses
//! by status class, counted for routes that carry the `prometheus` plugin) summed, and
//! requests per second between two samples of those sums.
use serde_json::Value;
use std::collections::BTreeMap;

/// Responses by status class (`2xx`…), per route label (id, or name under
/// `prefer_name`).
pub type Totals = BTreeMap<String, BTreeMap<String, u64>>;

/// The sums over every replica's `/status` that answered.
pub fn totals(statuses: &[Option<Value>]) -> Totals {
    let mut out = Totals::new();
    for s in statuses.iter().flatten() {
        let Some(routes) = s["route_requests"].as_object() else {
            continue;
        };
        for (route, classes) in routes {
            let sum = out.entry(route.clone()).or_default();
            for (class, n) in classes.as_object().into_iter().flatten() {
                *sum.entry(class.clone()).or_default() += n.as_u64().unwrap_or(0);
            }
        }
    }
    out
}

/// One observation of the sums, `at` seconds on a monotonic clock.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub at: f64,
    pub totals: Totals,
}

/// Requests per second per route since `prev` (none without an earlier sample). A sum
/// that went down (a replica restarted, or left) counts as no traffic, never negative.
pub fn rates(prev: Option<&Sample>, now: &Sample) -> BTreeMap<String, f64> {
    let Some(prev) = prev.filter(|p| now.at > p.at) else {
        return BTreeMap::new();
    };
    let all = |t: &BTreeMap<String, u64>| t.values().sum::<u64>();
    now.totals
        .iter()
        .map(|(route, classes)| {
            let before = prev.totals.get(route).map_or(0, all);
            let delta = all(classes).saturating_sub(before);
            (route.clone(), delta as f64 / (now.at - prev.at))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sums_and_rates() {
        let a = json!({"route_requests": {"r1": {"2xx": 10, "5xx": 1}, "r2": {"4xx": 3}}});
        let b = json!({"route_requests": {"r1": {"2xx": 5}}});
        let t = totals(&[Some(a), None, Some(b), Some(json!({"ready": true}))]);
        assert_eq!(t["r1"]["2xx"], 15);
        assert_eq!(t["r1"]["5xx"], 1);
        assert_eq!(t["r2"]["4xx"], 3);
        let first = Sample {
            at: 10.0,
            totals: t.clone(),
        };
        assert!(rates(None, &first).is_empty());
        let mut later = t.clone();
        *later.get_mut("r1").unwrap().get_mut("2xx").unwrap() += 20;
        // r2's replica restarted: its count fell.
        later.get_mut("r2").unwrap().insert("4xx".into(), 1);
        later.insert("r3".into(), [("2xx".to_string(), 4)].into());
        let second = Sample {
            at: 12.0,
            totals: later,
        };
        let r = rates(Some(&first), &second);
        assert_eq!(r["r1"], 10.0);
        assert_eq!(r["r2"], 0.0);
        assert_eq!(r["r3"], 2.0);
        // The same instant: no rate rather than a division by zero.
        assert!(rates(Some(&second), &second).is_empty());
    }
}
