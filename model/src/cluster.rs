//! Gateway replicas that report themselves: each keeps one key,
//! `{prefix}.cluster/gateways/{instance}`, on an etcd lease, saying which revision of the
//! configuration it serves. The key is outside `{prefix}/`, the range every gateway
//! watches, so reporting never makes a gateway rebuild; it goes when its replica dies
//! (the lease expires). admin-api reads these keys for `GET /apisix/admin/cluster` and
//! for writes that wait until they are applied (`?wait=applied`).
use crate::key::normalize_prefix;
use serde::{Deserialize, Serialize};

/// The range that holds every replica's report.
pub fn gateways_prefix(prefix: &str) -> String {
    format!("{}.cluster/gateways/", normalize_prefix(prefix))
}

pub fn gateway_key(prefix: &str, instance: &str) -> String {
    format!("{}{instance}", gateways_prefix(prefix))
}

/// What one gateway replica says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// `--instance-id` (default: host name and process id).
    pub id: String,
    pub hostname: String,
    pub version: String,
    /// The HTTP, HTTPS and status listeners.
    pub listen: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Unix time, seconds.
    pub started: u64,
    pub workers: usize,
    /// The etcd revision of the configuration its requests are served with: every
    /// change up to it is live on this replica.
    pub applied_revision: i64,
    /// Whether its etcd watch is connected (if not, it serves its last configuration).
    pub watch_connected: bool,
    /// Resources it skipped as invalid.
    pub invalid_resources: usize,
}

/// Where a write that waits for its replicas stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Enough replicas serve the revision.
    Done { replicas: usize },
    /// Still waiting for these replicas (ids); `have` of the `need` are there.
    Waiting {
        pending: Vec<String>,
        have: usize,
        need: usize,
    },
}

/// Whether `revision` is applied by every live replica, or by `min` of them when given.
/// No live replica at all: nothing to wait for (unless `min` asks for some).
pub fn applied(reports: &[Report], revision: i64, min: Option<usize>) -> Applied {
    let have = reports
        .iter()
        .filter(|r| r.applied_revision >= revision)
        .count();
    let need = min.unwrap_or(reports.len());
    if have >= need {
        return Applied::Done { replicas: have };
    }
    let mut pending: Vec<String> = reports
        .iter()
        .filter(|r| r.applied_revision < revision)
        .map(|r| r.id.clone())
        .collect();
    pending.sort();
    Applied::Waiting {
        pending,
        have,
        need,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, applied_revision: i64) -> Report {
        Report {
            id: id.into(),
            hostname: "h".into(),
            version: "0".into(),
            listen: vec![],
            zone: None,
            started: 0,
            workers: 1,
            applied_revision,
            watch_connected: true,
            invalid_resources: 0,
        }
    }

    #[test]
    fn keys_stay_outside_the_watched_prefix() {
        assert_eq!(gateway_key("/apisix", "a"), "/apisix.cluster/gateways/a");
        assert_eq!(gateway_key("apisix/", "a"), "/apisix.cluster/gateways/a");
        assert_eq!(gateway_key("", "a"), ".cluster/gateways/a");
        for prefix in ["/apisix", "/gw", ""] {
            let watched = crate::key::root_prefix(prefix);
            assert!(!gateway_key(prefix, "x").starts_with(&watched), "{prefix}");
        }
    }

    #[test]
    fn applied_table() {
        let three = [report("c", 7), report("a", 9), report("b", 5)];
        let pending = |ids: &[&str], have, need| Applied::Waiting {
            pending: ids.iter().map(|s| s.to_string()).collect(),
            have,
            need,
        };
        let table: Vec<(&[Report], i64, Option<usize>, Applied)> = vec![
            (&three, 5, None, Applied::Done { replicas: 3 }),
            (&three, 7, None, pending(&["b"], 2, 3)),
            (&three, 8, None, pending(&["b", "c"], 1, 3)),
            (&three, 8, Some(1), Applied::Done { replicas: 1 }),
            (&three, 7, Some(2), Applied::Done { replicas: 2 }),
            (&three, 10, Some(1), pending(&["a", "b", "c"], 0, 1)),
            (&[], 10, None, Applied::Done { replicas: 0 }),
            (&[], 10, Some(1), pending(&[], 0, 1)),
            (&three, 9, Some(0), Applied::Done { replicas: 1 }),
        ];
        for (reports, revision, min, want) in table {
            assert_eq!(applied(reports, revision, min), want, "{revision} {min:?}");
        }
    }

    #[test]
    fn reports_round_trip_as_json() {
        let r = Report {
            zone: Some("z1".into()),
            ..report("gw-1", 42)
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), r);
    }
}
