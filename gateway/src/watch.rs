//! Feeds the snapshot from etcd: list the prefix once, then watch from revision + 1.
//! On errors it keeps the last snapshot serving, retries with backoff and resumes from its
//! revision; after a compaction it lists again and swaps the whole state atomically.
use crate::snapshot::Snapshot;
use crate::state::{Applied, Change, State};
use crate::Shared;
use etcd_client::{Client, ConnectOptions, EventType, GetOptions, WatchOptions};
use futures_util::FutureExt;
use model::key::{range_end, root_prefix};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("watch on {0} was canceled by etcd: {1}")]
    Canceled(String, String),
    #[error("watch stream ended")]
    Ended,
}

/// Why a watch stopped without an error of its own.
enum WatchEnd {
    /// Our revision was compacted away: list again.
    Compacted(i64),
}

/// Page size of the initial list (etcd 3.4 has no RangeStream). Large, because etcd 3.4
/// counts the rest of the range on every paged request: 50,000 keys took 3 s to list in
/// pages of 256 and 0.7 s in pages of 2048 (docs/benchmarks.md). With values of at most
/// 1.5 MiB (the admin-api's body limit) a page stays under `MAX_MESSAGE`.
const PAGE: i64 = 1024;
/// Largest gRPC message accepted from etcd. A list page, or a catch-up watch message of up
/// to 1000 revisions, easily exceeds tonic's 4 MiB default; etcd caps requests, not
/// responses. Memory is only taken by messages that are actually this large.
const MAX_MESSAGE: usize = i32::MAX as usize; // etcd 3.4 sends at most this much (2 GiB)
/// How many already-arrived watch messages are folded into one snapshot build.
const MAX_BATCH: usize = 1024;

pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    pub(crate) fn new() -> Backoff {
        Backoff { next: Self::MIN }
    }
    pub(crate) fn reset(&mut self) {
        self.next = Self::MIN;
    }
    pub(crate) fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }
}

pub fn connect_options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(5))
        // Below 5 s idle watches were seen to die (dependency-notes.md).
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        .with_keep_alive_while_idle(true)
        // A member cut off from the quorum must not keep us on stale data.
        .with_require_leader(true)
}

/// The watch's side of the resolver (`dns.rs`): addresses come in here; the names in use
/// go out through `Shared::dns_names` after each build.
pub struct DnsLink {
    pub updates: tokio::sync::mpsc::Receiver<(String, Vec<IpAddr>)>,
}

pub async fn run(
    endpoints: Vec<String>,
    access: common::etcd::Access,
    prefix: String,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    mut dns: DnsLink,
    keyring: Arc<model::Keyring>,
) {
    let mut backoff = Backoff::new();
    let mut state = State::with_keyring(keyring);
    let mut revision: Option<i64> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let client = tokio::select! {
            c = Client::connect(&endpoints, Some(access.apply(connect_options()))) => c,
            _ = crate::stopped(&mut shutdown) => return,
        };
        let mut client = match client {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot connect to etcd; serving the last configuration");
                sleep_or_shutdown(backoff.step(), &mut shutdown).await;
                continue;
            }
        };
        loop {
            let rev = match revision {
                Some(r) => r,
                None => match list(&mut client, &prefix, state.keyring().clone()).await {
                    Ok((mut s, r)) => {
                        s.keep_dns(&state);
                        state = s;
                        state.mark_all_dirty();
                        shared.metrics.relists.fetch_add(1, Ordering::Relaxed);
                        publish(&shared, &mut state, r);
                        shared.ready.store(true, Ordering::Relaxed);
                        shared.metrics.ready.store(1, Ordering::Relaxed);
                        tracing::info!(
                            revision = r,
                            routes = state.routes.len(),
                            "listed configuration from etcd"
                        );
                        r
                    }
                    Err(e) => {
                        shared.etcd_connected.store(false, Ordering::Relaxed);
                        tracing::warn!(error = %e, "listing etcd failed; serving the last configuration");
                        sleep_or_shutdown(backoff.step(), &mut shutdown).await;
                        break;
                    }
                },
            };
            shared.etcd_connected.store(true, Ordering::Relaxed);
            let result = tokio::select! {
                r = watch_from(&mut client, &prefix, rev, &mut state, &shared, &mut backoff, &mut dns) => r,
                _ = crate::stopped(&mut shutdown) => return,
            };
            shared.etcd_connected.store(false, Ordering::Relaxed);
            match result {
                (r, Ok(WatchEnd::Compacted(compact))) => {
                    tracing::warn!(
                        revision = r,
                        compact_revision = compact,
                        "watch revision was compacted; listing again"
                    );
                    revision = None;
                }
                (r, Err(e)) => {
                    shared
                        .metrics
                        .watch_restarts
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(revision = r, error = %e, "etcd watch failed; serving the last configuration and retrying");
                    revision = Some(r);
                    sleep_or_shutdown(backoff.step(), &mut shutdown).await;
                    if *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
}

async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {},
        _ = crate::stopped(shutdown) => {},
    }
}

/// Reads every key under the prefix at one revision, page by page.
async fn list(
    client: &mut Client,
    prefix: &str,
    keyring: Arc<model::Keyring>,
) -> Result<(State, i64), WatchError> {
    let root = root_prefix(prefix);
    let end = range_end(&root);
    let mut state = State::with_keyring(keyring);
    let mut from = root.clone().into_bytes();
    let mut revision = 0;
    loop {
        let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
        if revision > 0 {
            opts = opts.with_revision(revision);
        }
        let resp = client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE)
            .get(from.clone(), Some(opts))
            .await?;
        if revision == 0 {
            revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        }
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).to_string();
            state.apply(
                prefix,
                Change::Put {
                    key,
                    value: kv.value().to_vec(),
                },
            );
        }
        match resp.kvs().last() {
            Some(last) if resp.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => break,
        }
    }
    Ok((state, revision))
}

/// Applies watch events until the stream fails. Returns the last applied revision with
/// the reason it stopped.
async fn watch_from(
    client: &mut Client,
    prefix: &str,
    revision: i64,
    state: &mut State,
    shared: &Arc<Shared>,
    backoff: &mut Backoff,
    dns: &mut DnsLink,
) -> (i64, Result<WatchEnd, WatchError>) {
    let root = root_prefix(prefix);
    let opts = WatchOptions::new()
        .with_range(range_end(&root))
        .with_start_revision(revision + 1);
    let mut watcher = client.watch_client().max_decoding_message_size(MAX_MESSAGE);
    let mut stream = match watcher.watch(root.clone(), Some(opts)).await {
        Ok(s) => s,
        Err(e) => return (revision, Err(e.into())),
    };
    let mut revision = revision;
    loop {
        let next = tokio::select! {
            m = stream.message() => m,
            Some((name, addrs)) = dns.updates.recv() => {
                // Resolved addresses are configuration too: applied between watch
                // messages, never in the middle of a batch.
                if state.apply_dns(&name, addrs) == Applied::Changed {
                    publish(shared, state, revision);
                }
                continue;
            }
        };
        let first = match next {
            Ok(Some(m)) => m,
            Ok(None) => return (revision, Err(WatchError::Ended)),
            Err(e) => return (revision, Err(e.into())),
        };
        backoff.reset();
        let mut batch = vec![first];
        // Fold whatever else has already arrived into the same build.
        while batch.len() < MAX_BATCH {
            match stream.message().now_or_never() {
                Some(Ok(Some(m))) => batch.push(m),
                _ => break,
            }
        }
        let mut changed = false;
        let mut new_rev = revision;
        for msg in &batch {
            if msg.canceled() {
                if msg.compact_revision() > 0 {
                    if changed {
                        publish(shared, state, new_rev);
                    } else {
                        mark_applied(shared, state, new_rev);
                    }
                    return (new_rev, Ok(WatchEnd::Compacted(msg.compact_revision())));
                }
                if changed {
                    publish(shared, state, new_rev);
                } else {
                    mark_applied(shared, state, new_rev);
                }
                return (
                    new_rev,
                    Err(WatchError::Canceled(
                        root.clone(),
                        msg.cancel_reason().to_string(),
                    )),
                );
            }
            for ev in msg.events() {
                let Some(kv) = ev.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key()).to_string();
                let change = match ev.event_type() {
                    EventType::Put => Change::Put {
                        key,
                        value: kv.value().to_vec(),
                    },
                    EventType::Delete => Change::Delete { key },
                };
                new_rev = new_rev.max(kv.mod_revision());
                changed |= state.apply(prefix, change) == Applied::Changed;
            }
        }
        if changed {
            publish(shared, state, new_rev);
        } else if new_rev != revision {
            // Nothing to rebuild, but the revision we have caught up to still moves.
            mark_applied(shared, state, new_rev);
        }
        revision = new_rev;
    }
}

/// Records `revision` as applied (`/status`, the cluster report) — unless a node name in
/// use still waits for its first DNS answer: then the revision stays where it was, and the
/// publish that applies the answer moves it.
fn mark_applied(shared: &Shared, state: &State, revision: i64) {
    if !state.resolving() {
        shared
            .metrics
            .revision
            .store(revision.max(0) as u64, Ordering::Relaxed);
    }
}

/// Compiles and swaps in a new snapshot. Compilation runs off the async workers' hot
/// loop (`block_in_place`) since large configurations take milliseconds to build.
pub(crate) fn publish(shared: &Shared, state: &mut State, revision: i64) {
    let names = state.names();
    shared.dns_names.send_if_modified(|current| {
        if *current == names {
            return false;
        }
        *current = names;
        true
    });
    let started = Instant::now();
    let prev = shared.snapshot.load_full();
    let dirty = state.take_dirty();
    let compile = || Snapshot::compile(state, &dirty, revision, &prev);
    // A full compile of a large configuration takes a few hundred milliseconds: off the
    // async workers' hot loop. An incremental one takes microseconds, less than the
    // hand-off of `block_in_place` itself.
    let next = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) if dirty.all => {
            tokio::task::block_in_place(compile)
        }
        // block_in_place panics on a current-thread runtime (as in some embeddings).
        _ => compile(),
    };
    let next = Arc::new(next);
    shared.snapshot.store(next.clone());
    shared.checkers.reconcile(&next);
    let took = started.elapsed();
    shared
        .metrics
        .snapshot_builds
        .fetch_add(1, Ordering::Relaxed);
    shared
        .metrics
        .snapshot_build_micros
        .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    mark_applied(shared, state, revision);
    tracing::debug!(
        revision,
        took_us = took.as_micros() as u64,
        "snapshot swapped in"
    );
}
