//! Desired state vs what we own in etcd -> the writes that make them equal (pure).
//!
//! Values are compared without `create_time`/`update_time`: a translation equal to what
//! is stored writes nothing. Writes are ordered so that readers never see a route whose
//! upstream is missing: upstream puts first, route deletes before upstream deletes.
use model::Kind;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Put { key: String, value: Value },
    Delete { key: String },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub ops: Vec<Op>,
    /// Keys we wanted but that belong to someone else: left alone.
    pub foreign: Vec<String>,
}

const TIMES: [&str; 2] = ["create_time", "update_time"];

fn without_times(v: &Value) -> Value {
    let mut v = v.clone();
    if let Value::Object(m) = &mut v {
        for t in TIMES {
            m.remove(t);
        }
    }
    v
}

/// Puts of `rank` 0 go first, deletes in the reverse order.
fn rank(prefix: &str, key: &str) -> u8 {
    match model::key::parse_key(prefix, key).map(|(k, _)| k) {
        Some(Kind::Upstreams) => 0,
        Some(Kind::Services) => 1,
        _ => 2,
    }
}

/// `owned`: our keys in etcd (by the managed-by label); `others`: every other key under
/// the prefix. `now`: seconds since the epoch, for the timestamps of what changes.
pub fn diff(
    prefix: &str,
    desired: &BTreeMap<String, Value>,
    owned: &BTreeMap<String, Value>,
    others: &BTreeSet<String>,
    now: u64,
) -> Plan {
    let mut plan = Plan::default();
    let mut puts = Vec::new();
    for (key, want) in desired {
        if others.contains(key) {
            plan.foreign.push(key.clone());
            continue;
        }
        let current = owned.get(key);
        if current.is_some_and(|c| without_times(c) == without_times(want)) {
            continue;
        }
        let mut value = without_times(want);
        if let Value::Object(m) = &mut value {
            let created = current
                .and_then(|c| c.get("create_time"))
                .and_then(Value::as_u64)
                .unwrap_or(now);
            m.insert("create_time".into(), created.into());
            m.insert("update_time".into(), now.into());
        }
        puts.push(Op::Put {
            key: key.clone(),
            value,
        });
    }
    let mut deletes: Vec<Op> = owned
        .keys()
        .filter(|k| !desired.contains_key(*k))
        .map(|k| Op::Delete { key: k.clone() })
        .collect();
    puts.sort_by_key(|op| rank(prefix, op.key()));
    deletes.sort_by_key(|op| std::cmp::Reverse(rank(prefix, op.key())));
    plan.ops = puts;
    plan.ops.extend(deletes);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(kvs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        kvs.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn equal_writes_nothing_and_order_is_safe() {
        let desired = map(&[
            ("/g/routes/r1", json!({"id": "r1", "upstream_id": "u2"})),
            ("/g/upstreams/u2", json!({"id": "u2", "nodes": []})),
            ("/g/upstreams/u3", json!({"id": "u3", "nodes": []})),
        ]);
        let owned = map(&[
            // Same but for timestamps: nothing to do.
            (
                "/g/upstreams/u3",
                json!({"id": "u3", "nodes": [], "create_time": 5, "update_time": 6}),
            ),
            // Changed: keeps its create_time.
            (
                "/g/routes/r1",
                json!({"id": "r1", "upstream_id": "u1", "create_time": 5}),
            ),
            ("/g/upstreams/u1", json!({"id": "u1", "nodes": []})),
            ("/g/routes/r0", json!({"id": "r0", "upstream_id": "u1"})),
        ]);
        let plan = diff("/g", &desired, &owned, &BTreeSet::new(), 100);
        let keys: Vec<(&str, bool)> = plan
            .ops
            .iter()
            .map(|o| (o.key(), matches!(o, Op::Put { .. })))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("/g/upstreams/u2", true),
                ("/g/routes/r1", true),
                ("/g/routes/r0", false),
                ("/g/upstreams/u1", false),
            ]
        );
        let Op::Put { value, .. } = &plan.ops[1] else {
            panic!()
        };
        assert_eq!(value["create_time"], 5);
        assert_eq!(value["update_time"], 100);
        assert!(diff("/g", &desired, &desired, &BTreeSet::new(), 1)
            .ops
            .is_empty());
    }

    #[test]
    fn foreign_keys_are_left_alone() {
        let desired = map(&[("/g/routes/x", json!({"id": "x"}))]);
        let others: BTreeSet<String> = ["/g/routes/x".to_string()].into();
        let plan = diff("/g", &desired, &BTreeMap::new(), &others, 1);
        assert!(plan.ops.is_empty());
        assert_eq!(plan.foreign, vec!["/g/routes/x".to_string()]);
    }
}
