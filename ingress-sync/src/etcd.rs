//! Every etcd call of the sync: read what we own, apply a plan in fenced transactions.
use crate::reconcile::{Op, Plan};
use crate::translate::{LABEL_CONTROLLER, MANAGED_BY, OWNER};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, TxnOpResponse,
};
use model::key::{kind_prefix, range_end};
use model::Kind;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// etcd's default `--max-txn-ops` is 128; stay well below it.
pub const TXN_OPS: usize = 100;
const PAGE: i64 = 500;
/// The kinds we write (and so the only ones we ever delete from).
pub const KINDS: [Kind; 3] = [Kind::Routes, Kind::Upstreams, Kind::Ssls];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("no longer the leader: the write was refused")]
    NotLeader,
}

pub fn connect_options(
    request_timeout: Option<Duration>,
    access: &common::etcd::Access,
) -> ConnectOptions {
    let o = access
        .apply(ConnectOptions::new())
        .with_connect_timeout(Duration::from_secs(3))
        // Below 5 s idle watches were seen to die (dependency-notes.md).
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        .with_keep_alive_while_idle(true)
        .with_require_leader(true);
    match request_timeout {
        Some(t) => o.with_timeout(t),
        None => o,
    }
}

pub async fn connect(
    endpoints: &[String],
    timeout: Option<Duration>,
    access: &common::etcd::Access,
) -> Result<Client, StoreError> {
    Ok(Client::connect(endpoints, Some(connect_options(timeout, access))).await?)
}

/// What is under the prefix for the kinds we write.
#[derive(Debug, Default)]
pub struct Stored {
    /// Keys labelled `managed-by: ingress-sync` with our `--controller-name`, with their values.
    pub owned: BTreeMap<String, Value>,
    /// Every other key: never touched.
    pub others: BTreeSet<String>,
    /// The highest `mod_revision` of the keys we own: what the replicas must have applied
    /// before a status may say "served" (known to a new leader too).
    pub latest: i64,
}

pub async fn read_stored(
    client: &mut Client,
    prefix: &str,
    controller: &str,
) -> Result<Stored, StoreError> {
    let mut stored = Stored::default();
    for kind in KINDS {
        let start = kind_prefix(prefix, kind);
        let end = range_end(&start);
        let mut from = start.clone().into_bytes();
        loop {
            let resp = client
                .get(
                    from.clone(),
                    Some(GetOptions::new().with_range(end.clone()).with_limit(PAGE)),
                )
                .await?;
            for kv in resp.kvs() {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let value: Option<Value> = serde_json::from_slice(kv.value()).ok();
                match value {
                    Some(v)
                        if v["labels"][MANAGED_BY] == OWNER
                            && v["labels"][LABEL_CONTROLLER] == controller =>
                    {
                        stored.latest = stored.latest.max(kv.mod_revision());
                        stored.owned.insert(key, v);
                    }
                    _ => {
                        stored.others.insert(key);
                    }
                }
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
    }
    Ok(stored)
}

/// Applies `plan` in transactions of at most [`TXN_OPS`] operations, in order. Each one
/// holds only while `fence` (the leader's election key, at its creation revision) still
/// exists, so a replica that lost the lease cannot write. Returns the revision of the
/// last write (0 when the plan is empty).
pub async fn apply(
    client: &mut Client,
    plan: &Plan,
    fence: Option<(&[u8], i64)>,
) -> Result<i64, StoreError> {
    let mut revision = 0;
    for chunk in plan.ops.chunks(TXN_OPS) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|op| match op {
                Op::Put { key, value } => TxnOp::put(key.as_str(), value.to_string(), None),
                Op::Delete { key } => TxnOp::delete(key.as_str(), None),
            })
            .collect();
        let mut txn = Txn::new();
        if let Some((key, rev)) = fence {
            txn = txn.when([Compare::create_revision(
                key.to_vec(),
                CompareOp::Equal,
                rev,
            )]);
        }
        let resp = client.txn(txn.and_then(ops)).await?;
        if !resp.succeeded() {
            return Err(StoreError::NotLeader);
        }
        // A chunk that only deleted keys already gone moves no revision: its header's
        // revision may be a later write elsewhere, which no gateway would ever apply.
        let wrote = resp.op_responses().iter().any(|op| match op {
            TxnOpResponse::Put(_) => true,
            TxnOpResponse::Delete(d) => d.deleted() > 0,
            _ => false,
        });
        if wrote {
            revision = resp.header().map_or(revision, |h| h.revision());
        }
    }
    Ok(revision)
}

/// What the gateway replicas report of themselves (`model::cluster`).
pub async fn reports(
    client: &mut Client,
    prefix: &str,
) -> Result<Vec<model::cluster::Report>, StoreError> {
    let start = model::cluster::gateways_prefix(prefix);
    let resp = client
        .get(
            start.as_str(),
            Some(GetOptions::new().with_range(range_end(&start))),
        )
        .await?;
    Ok(resp
        .kvs()
        .iter()
        .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
        .collect())
}
