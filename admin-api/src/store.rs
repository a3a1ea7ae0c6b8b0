//! All etcd access of the admin-api: a lazily connected client, retried reads, and the
//! conditional transactions that keep concurrent writers (and replicas) from losing updates.
use crate::paging::Page;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, GetResponse, KeyValue,
    PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};
use model::key::{kind_prefix, range_end};
use model::Kind;
use std::future::Future;
use std::time::Duration;
use tokio::sync::OnceCell;

/// Bounds every etcd call, so a lost quorum answers 503 instead of hanging.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Below 5 s, idle connections were seen being killed (dependency-notes.md).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts for a call that failed because one member was unreachable.
const ATTEMPTS: usize = 4;
/// Values fetched per `get` when a whole kind is read.
const BATCH: i64 = 100;
/// A stored value can be up to the 1.5 MiB body limit, so a batch can exceed gRPC's
/// default 4 MiB response limit; allow what `BATCH` values of that size need.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;
/// Keys skipped per keys-only `get` when paging.
const SKIP_BATCH: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No member answered (down, partitioned, no leader, timed out).
    #[error("etcd is unavailable: {0}")]
    Unavailable(String),
    /// etcd refused the request itself (for example a value above its size limit).
    #[error("etcd rejected the request: {0}")]
    Rejected(String),
    /// The value is bigger than etcd accepts (`--max-request-bytes`).
    #[error("the resource is too large for etcd: {0}")]
    TooLarge(String),
}

impl StoreError {
    fn from_etcd(e: etcd_client::Error) -> Self {
        use etcd_client::Error as E;
        match e {
            E::GRpcStatus(s) => {
                let msg = if s.message().is_empty() {
                    format!("{:?}", s.code())
                } else {
                    s.message().to_string()
                };
                match s.code() as i32 {
                    tonic_code::INVALID_ARGUMENT if msg.contains("too large") => {
                        StoreError::TooLarge(msg)
                    }
                    tonic_code::INVALID_ARGUMENT
                    | tonic_code::OUT_OF_RANGE
                    | tonic_code::FAILED_PRECONDITION
                    | tonic_code::PERMISSION_DENIED
                    | tonic_code::UNAUTHENTICATED
                    | tonic_code::RESOURCE_EXHAUSTED => StoreError::Rejected(msg),
                    _ => StoreError::Unavailable(msg),
                }
            }
            other => StoreError::Unavailable(other.to_string()),
        }
    }

    /// Whether a retry may reach a member that works: the request failed on its way.
    fn retriable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// Whether the request certainly never reached etcd, so even a write may be resent.
    fn never_sent(&self) -> bool {
        match self {
            StoreError::Unavailable(m) => {
                let m = m.to_ascii_lowercase();
                m.contains("connect error") || m.contains("connection refused")
            }
            _ => false,
        }
    }
}

/// etcd-client does not re-export tonic's `Code`; compare the numeric gRPC codes instead.
mod tonic_code {
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const OUT_OF_RANGE: i32 = 11;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// One stored key with its revisions.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// The lease the key expires with (`?ttl=`), 0 for none.
    pub lease: i64,
}

impl Entry {
    fn from_kv(kv: &KeyValue) -> Entry {
        Entry {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            lease: kv.lease(),
        }
    }
}

/// A page of one kind, and how many resources the kind holds in all.
#[derive(Debug)]
pub struct Listing {
    pub entries: Vec<Entry>,
    pub total: i64,
}

/// What a write is conditional on, besides its references existing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The key must not exist (create).
    Absent,
    /// The key must still be at this mod revision (nobody wrote it since we read it).
    ModRevision(i64),
}

#[derive(Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    Written {
        revision: i64,
    },
    /// A referenced key does not exist (deleted, or never created).
    MissingReference(String),
    /// The key changed since it was read: read again and retry.
    Changed,
}

#[derive(Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// At this etcd revision.
    Deleted {
        revision: i64,
    },
    NotFound,
    /// A guarded range changed since it was scanned: scan again and retry.
    Changed,
}

/// The etcd state the admin-api uses; all its state lives in etcd, so replicas agree.
pub struct Store {
    endpoints: Vec<String>,
    access: common::etcd::Access,
    prefix: String,
    client: OnceCell<Client>,
}

impl Store {
    /// Does not connect: the first request does, so the admin-api starts while etcd is down.
    pub fn new(endpoints: Vec<String>, prefix: &str, access: common::etcd::Access) -> Store {
        Store {
            endpoints,
            access,
            prefix: prefix.to_string(),
            client: OnceCell::new(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    async fn client(&self) -> Result<Client, StoreError> {
        let client = self
            .client
            .get_or_try_init(|| async {
                let options = ConnectOptions::new()
                    .with_timeout(REQUEST_TIMEOUT)
                    .with_connect_timeout(CONNECT_TIMEOUT)
                    .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT);
                Client::connect(&self.endpoints, Some(self.access.apply(options)))
                    .await
                    .map_err(StoreError::from_etcd)
            })
            .await?;
        Ok(client.clone())
    }

    /// Runs `op`, retrying when a member could not be reached. Reads are retried on any
    /// transport failure; writes only when the request certainly never left (connect
    /// error), because a write that timed out may have been applied.
    async fn call<T, F, Fut>(&self, idempotent: bool, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match self.client().await {
                Ok(client) => op(client).await.map_err(StoreError::from_etcd),
                Err(e) => Err(e),
            };
            match result {
                Err(e)
                    if attempt < ATTEMPTS && (e.never_sent() || (idempotent && e.retriable())) =>
                {
                    tracing::warn!(attempt, error = %e, "etcd call failed, retrying");
                    tokio::time::sleep(Duration::from_millis(50 * attempt as u64)).await;
                }
                other => return other,
            }
        }
    }

    async fn get_raw(&self, key: Vec<u8>, options: GetOptions) -> Result<GetResponse, StoreError> {
        self.call(true, |c| {
            let key = key.clone();
            let options = options.clone();
            let mut kv = c.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES);
            async move { kv.get(key, Some(options)).await }
        })
        .await
    }

    pub async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let resp = self.get_raw(key.into(), GetOptions::new()).await?;
        Ok(resp.kvs().first().map(Entry::from_kv))
    }

    /// One kind's resources in key order: all of them, or one page. Every `get` is
    /// bounded by a limit and pinned to the revision of the first, so a page is consistent.
    pub async fn list(&self, kind: Kind, page: Option<Page>) -> Result<Listing, StoreError> {
        if kind == Kind::Consumers {
            return self.list_consumers(page).await;
        }
        let start = kind_prefix(&self.prefix, kind).into_bytes();
        let end = range_end(&kind_prefix(&self.prefix, kind));
        let mut from = start;
        let mut revision = 0;
        let mut total = None;

        // Skip the keys of earlier pages without fetching their values.
        let mut skip = page.map_or(0, |p| p.offset());
        while skip > 0 {
            let limit = skip.min(SKIP_BATCH as u64) as i64;
            let opts = GetOptions::new()
                .with_range(end.clone())
                .with_keys_only()
                .with_limit(limit)
                .with_revision(revision);
            let resp = self.get_raw(from.clone(), opts).await?;
            revision = header_revision(&resp, revision);
            total.get_or_insert(resp.count());
            let Some(last) = resp.kvs().last() else {
                break;
            };
            from = after(last.key());
            skip -= resp.kvs().len() as u64;
            if !resp.more() {
                // Fewer keys than the offset: the page is past the end.
                return Ok(Listing {
                    entries: Vec::new(),
                    total: total.unwrap_or(0),
                });
            }
        }

        let mut want = page.map(|p| p.size);
        let mut entries = Vec::new();
        loop {
            let limit = match want {
                Some(0) => break,
                Some(w) => w.min(BATCH as u64) as i64,
                None => BATCH,
            };
            let opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(limit)
                .with_revision(revision);
            let resp = self.get_raw(from.clone(), opts).await?;
            revision = header_revision(&resp, revision);
            total.get_or_insert(resp.count());
            entries.extend(resp.kvs().iter().map(Entry::from_kv));
            if let Some(w) = want.as_mut() {
                *w = w.saturating_sub(resp.kvs().len() as u64);
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => from = after(last.key()),
                _ => break,
            }
        }
        Ok(Listing {
            entries,
            total: total.unwrap_or(0),
        })
    }

    /// Consumers share their range with their credentials
    /// (`consumers/{username}/credentials/{id}`): those are left out, so consumers are
    /// read whole and paged here. There are few (one per API client, not per request).
    async fn list_consumers(&self, page: Option<Page>) -> Result<Listing, StoreError> {
        let prefix = kind_prefix(&self.prefix, Kind::Consumers);
        let mut entries = self.range(&prefix).await?;
        entries.retain(|e| !e.key[prefix.len()..].contains('/'));
        let total = entries.len() as i64;
        if let Some(p) = page {
            let from = (p.offset() as usize).min(entries.len());
            let to = from.saturating_add(p.size as usize).min(entries.len());
            entries = entries.drain(from..to).collect();
        }
        Ok(Listing { entries, total })
    }

    /// A lease of `ttl` seconds, for keys that must expire by themselves.
    pub async fn grant(&self, ttl: i64) -> Result<i64, StoreError> {
        let resp = self
            .call(false, |mut c| async move { c.lease_grant(ttl, None).await })
            .await?;
        Ok(resp.id())
    }

    /// etcd's current revision, and the latest revision at which a key now under
    /// `prefix` was written (0 when it holds none).
    pub async fn latest_write(&self, prefix: &str) -> Result<(i64, i64), StoreError> {
        let opts = GetOptions::new()
            .with_range(range_end(prefix))
            .with_sort(SortTarget::Mod, SortOrder::Descend)
            .with_limit(1)
            .with_keys_only();
        let resp = self.get_raw(prefix.into(), opts).await?;
        let current = resp.header().map_or(0, |h| h.revision());
        let latest = resp.kvs().first().map_or(0, |kv| kv.mod_revision());
        Ok((current, latest))
    }

    /// Every key under `prefix`, at one revision.
    pub async fn range(&self, prefix: &str) -> Result<Vec<Entry>, StoreError> {
        let mut entries = Vec::new();
        self.range_at(prefix, &mut 0, &mut entries).await?;
        Ok(entries)
    }

    /// Appends every key under `prefix` to `entries`, in bounded batches pinned to
    /// `revision` (0: the first batch's, which is then kept).
    async fn range_at(
        &self,
        prefix: &str,
        revision: &mut i64,
        entries: &mut Vec<Entry>,
    ) -> Result<(), StoreError> {
        let end = range_end(prefix);
        let mut from = prefix.as_bytes().to_vec();
        loop {
            let opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(BATCH)
                .with_revision(*revision);
            let resp = self.get_raw(from.clone(), opts).await?;
            *revision = header_revision(&resp, *revision);
            entries.extend(resp.kvs().iter().map(Entry::from_kv));
            match resp.kvs().last() {
                Some(last) if resp.more() => from = after(last.key()),
                _ => return Ok(()),
            }
        }
    }

    /// Every resource of `kinds` at one revision, which is returned with them.
    pub async fn scan(&self, kinds: &[Kind]) -> Result<(i64, Vec<Entry>), StoreError> {
        let mut revision = 0;
        let mut entries = Vec::new();
        for kind in kinds {
            let prefix = kind_prefix(&self.prefix, *kind);
            self.range_at(&prefix, &mut revision, &mut entries).await?;
        }
        if revision == 0 {
            // No kinds asked for: any current revision will do.
            let resp = self
                .get_raw(b"\0".to_vec(), GetOptions::new().with_count_only())
                .await?;
            revision = header_revision(&resp, 0);
        }
        Ok((revision, entries))
    }

    /// Writes `value` at `key` if `expect` holds and every key in `references` exists,
    /// in one transaction: a reference cannot be deleted between the check and the write.
    /// With `lease`, the key goes when the lease expires (`?ttl=`).
    pub async fn put_if(
        &self,
        key: &str,
        value: Vec<u8>,
        expect: Expect,
        references: &[String],
        lease: Option<i64>,
    ) -> Result<WriteOutcome, StoreError> {
        let mut compares = vec![match expect {
            Expect::Absent => Compare::create_revision(key, CompareOp::Equal, 0),
            Expect::ModRevision(rev) => Compare::mod_revision(key, CompareOp::Equal, rev),
        }];
        compares.extend(
            references
                .iter()
                .map(|r| Compare::version(r.as_str(), CompareOp::Greater, 0)),
        );
        // On failure, read the references back to tell a missing one from a concurrent write.
        let on_failure: Vec<TxnOp> = references
            .iter()
            .map(|r| TxnOp::get(r.as_str(), Some(GetOptions::new().with_count_only())))
            .collect();
        let txn = Txn::new()
            .when(compares)
            .and_then(vec![TxnOp::put(
                key,
                value,
                lease.map(|id| PutOptions::new().with_lease(id)),
            )])
            .or_else(on_failure);
        let resp = self
            .call(false, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        if resp.succeeded() {
            let revision = resp.header().map_or(0, |h| h.revision());
            return Ok(WriteOutcome::Written { revision });
        }
        for (reference, op) in references.iter().zip(resp.op_responses()) {
            if let TxnOpResponse::Get(g) = op {
                if g.count() == 0 {
                    return Ok(WriteOutcome::MissingReference(reference.clone()));
                }
            }
        }
        Ok(WriteOutcome::Changed)
    }

    /// Deletes `key`. With `unchanged_since = (revision, kinds)`, only if no resource of
    /// those kinds was created or modified after `revision` (etcd range compares), so a
    /// reference added after the in-use scan makes the delete fail instead of dangle.
    /// With `children`, every key under that prefix goes in the same transaction (a
    /// consumer's credentials).
    pub async fn delete_if(
        &self,
        key: &str,
        unchanged_since: Option<(i64, &[Kind])>,
        children: Option<&str>,
    ) -> Result<DeleteOutcome, StoreError> {
        let mut compares = Vec::new();
        if let Some((revision, kinds)) = unchanged_since {
            for kind in kinds {
                let prefix = kind_prefix(&self.prefix, *kind);
                compares.push(
                    Compare::mod_revision(prefix.as_str(), CompareOp::Less, revision + 1)
                        .with_range(range_end(&prefix)),
                );
            }
        }
        let mut ops = vec![TxnOp::delete(key, None)];
        if let Some(prefix) = children {
            ops.push(TxnOp::delete(
                prefix,
                Some(DeleteOptions::new().with_range(range_end(prefix))),
            ));
        }
        let txn = Txn::new().when(compares).and_then(ops);
        let resp = self
            .call(false, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        if !resp.succeeded() {
            return Ok(DeleteOutcome::Changed);
        }
        let deleted = resp
            .op_responses()
            .into_iter()
            .next()
            .is_some_and(|op| matches!(op, TxnOpResponse::Delete(d) if d.deleted() > 0));
        Ok(if deleted {
            DeleteOutcome::Deleted {
                revision: resp.header().map_or(0, |h| h.revision()),
            }
        } else {
            DeleteOutcome::NotFound
        })
    }
}

fn header_revision(resp: &GetResponse, current: i64) -> i64 {
    if current > 0 {
        current
    } else {
        resp.header().map_or(0, |h| h.revision())
    }
}

/// The smallest key after `key`.
fn after(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}
