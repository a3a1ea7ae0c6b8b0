//! This replica's report (`model::cluster`): one etcd key on a lease of its own, written
//! whenever what it says changes (looked at every 100 ms, so at most ten writes a second
//! whatever the write rate), kept alive at a third of its TTL, revoked on shutdown so the
//! key goes at once. etcd being away only delays the report: traffic never waits on it.
use crate::watch::Backoff;
use crate::Shared;
use etcd_client::{Client, ConnectOptions, PutOptions};
use model::cluster::{gateway_key, Report};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How often the report is compared with what was last written.
const LOOK_EVERY: Duration = Duration::from_millis(100);
/// Bound on each unary etcd call (the keep-alive stream has none).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What does not change while the process runs.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: String,
    pub hostname: String,
    pub listen: Vec<String>,
    pub zone: Option<String>,
    /// Unix time, seconds.
    pub started: u64,
    pub workers: usize,
}

/// `{hostname}-{pid}`: unique among the live processes of one host.
pub fn default_instance_id() -> String {
    format!("{}-{}", hostname(), std::process::id())
}

/// The host name, `unknown` when it cannot be read.
pub fn hostname() -> String {
    match common::host::hostname() {
        "" => "unknown".into(),
        name => name.to_string(),
    }
}

/// The report as of now.
pub fn current(identity: &Identity, shared: &Shared) -> Report {
    let counts = shared.snapshot.load().counts;
    let ready = shared.ready.load(Ordering::Relaxed);
    Report {
        id: identity.id.clone(),
        hostname: identity.hostname.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        listen: identity.listen.clone(),
        zone: identity.zone.clone(),
        started: identity.started,
        workers: identity.workers,
        // Stored after each snapshot swap: every change up to it is served.
        applied_revision: if ready {
            shared.metrics.revision.load(Ordering::Relaxed) as i64
        } else {
            0
        },
        watch_connected: shared.etcd_connected.load(Ordering::Relaxed),
        invalid_resources: counts.invalid_routes
            + counts.invalid_services
            + counts.invalid_upstreams
            + counts.invalid_ssls
            + counts.invalid_consumers
            + counts.invalid_plugin_configs
            + counts.invalid_consumer_groups
            + counts.invalid_plugin_metadata
            + counts.invalid_global_rules,
    }
}

/// Reports until `shutdown`, a lease at a time.
pub async fn run(
    endpoints: Vec<String>,
    access: common::etcd::Access,
    prefix: String,
    identity: Identity,
    ttl: Duration,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let key = gateway_key(&prefix, &identity.id);
    let mut backoff = Backoff::new();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let term = term(
            &endpoints,
            &access,
            &key,
            &identity,
            ttl,
            &shared,
            &mut shutdown,
            &mut backoff,
        );
        match term.await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot report this replica to etcd; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.step()) => {}
                    _ = crate::stopped(&mut shutdown) => return,
                }
            }
        }
    }
}

/// One lease: ends with `Ok` on shutdown (the lease revoked), with `Err` when etcd or the
/// lease is lost. On `Err` the key is left to its lease, so a hiccup makes no gap in the
/// report: the next term writes the same key on a new lease.
#[allow(clippy::too_many_arguments)]
async fn term(
    endpoints: &[String],
    access: &common::etcd::Access,
    key: &str,
    identity: &Identity,
    ttl: Duration,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        .with_keep_alive_while_idle(true);
    let mut client = bounded(Client::connect(endpoints, Some(access.apply(options)))).await?;
    let ttl_secs = ttl.as_secs().max(2) as i64;
    let lease = bounded(client.lease_grant(ttl_secs, None)).await?.id();
    let (mut keeper, mut answers) = bounded(client.lease_keep_alive(lease)).await?;
    let every = Duration::from_millis(ttl_secs as u64 * 1000 / 3);
    let mut keep_at = Instant::now() + every;
    let mut written: Option<Report> = None;
    let ended = async {
        loop {
            let now = current(identity, shared);
            if written.as_ref() != Some(&now) {
                let value = serde_json::to_vec(&now)?;
                let put = client.put(key, value, Some(PutOptions::new().with_lease(lease)));
                bounded(put).await?;
                written = Some(now);
                backoff.reset();
            }
            if Instant::now() >= keep_at {
                bounded(keeper.keep_alive()).await?;
                // The lease still has two thirds of its TTL: the answer may take that long.
                match tokio::time::timeout(every * 2, answers.message()).await {
                    Ok(Ok(Some(a))) if a.ttl() > 0 => {}
                    _ => anyhow::bail!("lease {lease:x} was not kept alive"),
                }
                keep_at = Instant::now() + every;
            }
            tokio::select! {
                _ = tokio::time::sleep(LOOK_EVERY) => {}
                _ = crate::stopped(shutdown) => return Ok(()),
            }
        }
    }
    .await;
    // Leaving: the key goes at once rather than after a TTL.
    if ended.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), client.lease_revoke(lease)).await;
    }
    ended
}

async fn bounded<T, E>(call: impl std::future::Future<Output = Result<T, E>>) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(r) => Ok(r?),
        Err(_) => anyhow::bail!("etcd did not answer within {CALL_TIMEOUT:?}"),
    }
}
