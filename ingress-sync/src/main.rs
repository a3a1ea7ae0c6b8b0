//! ingress-sync: Kubernetes Ingresses -> the gateway's etcd keys. See docs/ingress-sync.md.
//!
//! Wiring only: watchers fill stores (`kube_watch`), a coalesced trigger wakes the loop,
//! which — while this replica leads (`leader`) — translates the stores (`translate`, pure),
//! diffs against what we own in etcd (`reconcile`, pure) and applies it (`etcd`), then
//! patches Ingress status (`status`).
mod config;
mod endpoints;
mod etcd;
mod gateway_api;
mod kube_watch;
mod leader;
mod reconcile;
mod select;
mod status;
mod tls;
mod translate;

use anyhow::Context;
use clap::Parser;
use config::Args;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Notify};

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn kube_client(args: &Args) -> anyhow::Result<kube::Client> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).with_context(|| format!("reading {path}"))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::incluster().context("no --kubeconfig and not in a cluster")?,
    };
    Ok(kube::Client::try_from(config)?)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(&args.log_format);
    let keyring = model::Keyring::new(&args.data_encryption_keys).map_err(anyhow::Error::msg)?;
    if keyring.is_empty() {
        tracing::warn!(
            "no --data-encryption-keys (DATA_ENCRYPTION_KEYS): TLS private keys from Secrets \
             are stored in etcd in plaintext"
        );
    }
    let client = kube_client(&args).await?;
    let trigger = Arc::new(Notify::new());
    let stores = kube_watch::Stores::start(&client, &trigger, args.gateway_api);

    let identity = format!(
        "{}-{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "ingress-sync".into()),
        std::process::id()
    );
    let (leader_tx, leader_rx) = watch::channel::<leader::Leadership>(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let access = args
        .etcd_access
        .resolve(&args.etcd_endpoints)
        .map_err(anyhow::Error::msg)?;
    let election = tokio::spawn(leader::run(
        args.etcd_endpoints.clone(),
        access.clone(),
        args.election_name(),
        identity,
        args.leader_ttl,
        leader_tx,
        stop_rx,
    ));

    let settings = translate::Settings {
        prefix: args.etcd_prefix.clone(),
        selector: select::Selector {
            controller_name: args.controller_name.clone(),
            ingress_class: args.ingress_class.clone(),
        },
        allow_external_name: args.allow_external_name,
        publish_address: args.publish_address.clone(),
    };
    let cx = SyncContext {
        args: &args,
        kube: &client,
        stores: &stores,
        settings: &settings,
        keyring: &keyring,
        trigger: &trigger,
        etcd_access: &access,
    };
    tokio::select! {
        () = run(&cx, leader_rx) => {}
        () = shutdown_signal() => tracing::info!("stopping"),
    }
    // Resign (revoke the lease) so that another replica takes over at once.
    stop_tx.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(3), election).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// What the sync loop works with, set up once in `main`.
struct SyncContext<'a> {
    args: &'a Args,
    kube: &'a kube::Client,
    stores: &'a kube_watch::Stores,
    settings: &'a translate::Settings,
    keyring: &'a model::Keyring,
    trigger: &'a Notify,
    etcd_access: &'a common::etcd::Access,
}

/// The sync loop: wait for a change (or leadership, or the resync period), then, while
/// leading, translate, reconcile, patch status.
async fn run(cx: &SyncContext<'_>, mut leader_rx: watch::Receiver<leader::Leadership>) {
    let SyncContext {
        args,
        kube: client,
        stores,
        settings,
        keyring,
        trigger,
        etcd_access,
    } = *cx;
    stores.wait_ready().await;
    tracing::info!("kubernetes stores listed");

    let mut etcd_client = None;
    let mut last_warnings = Vec::new();
    // The highest revision of ours every gateway replica is known to serve: a status says
    // "served" only once they serve our latest write (ours, or a previous leader's).
    let mut confirmed: i64 = 0;
    loop {
        let fence = leader_rx.borrow_and_update().clone();
        let mut retry = false;
        if let Some(fence) = fence {
            let cluster = stores.snapshot();
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            let desired = translate::translate(&cluster, settings, &now);
            if desired.warnings != last_warnings {
                for w in &desired.warnings {
                    tracing::warn!("{w}");
                }
                last_warnings = desired.warnings.clone();
            }
            match sync(
                args,
                etcd_access,
                &mut etcd_client,
                &desired,
                keyring,
                &fence,
            )
            .await
            {
                Ok(target) => {
                    // Without --publish-address no Ingress status is written, and without
                    // --gateway-api no other: nothing to wait for.
                    let writes_status = args.publish_address.is_some() || args.gateway_api;
                    let served = match etcd_client.as_mut() {
                        Some(c) if writes_status && target > confirmed => {
                            served_everywhere(c, &args.etcd_prefix, target, args.status_wait())
                                .await
                        }
                        _ => true,
                    };
                    if served {
                        confirmed = confirmed.max(target);
                        if let Some(addr) = &args.publish_address {
                            status::update(client, &cluster.ingresses, &desired.served, addr).await;
                        }
                        gateway_api::status::update(
                            client,
                            &cluster,
                            &desired.statuses,
                            &args.controller_name,
                        )
                        .await;
                    } else {
                        retry = true;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sync failed; retrying");
                    etcd_client = None;
                    retry = true;
                }
            }
        }
        let wait = if retry {
            Duration::from_secs(1)
        } else {
            args.resync()
        };
        tokio::select! {
            _ = trigger.notified() => {}
            _ = leader_rx.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        // Let the rest of a burst arrive; the Notify permit folds it into one more pass.
        tokio::time::sleep(args.debounce()).await;
    }
}

/// Waits until every live gateway replica reports `revision` applied, for `within` at
/// most; `false` (logged) when some did not, or their reports could not be read.
async fn served_everywhere(
    client: &mut etcd_client::Client,
    prefix: &str,
    revision: i64,
    within: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let pending = match etcd::reports(client, prefix).await {
            Ok(reports) => match model::cluster::applied(&reports, revision, None) {
                model::cluster::Applied::Done { .. } => return true,
                model::cluster::Applied::Waiting { pending, .. } => pending.join(", "),
            },
            Err(e) => format!("(reports unreadable: {e})"),
        };
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                revision,
                pending,
                "not every gateway replica serves the change yet; status waits"
            );
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One reconcile: read what we own, write the difference. Returns the revision the
/// replicas must serve for the result to be live: its last write, or — when nothing needed
/// writing — the latest revision among the keys we own (a previous leader's write, say).
async fn sync(
    args: &Args,
    access: &common::etcd::Access,
    client: &mut Option<etcd_client::Client>,
    desired: &translate::Desired,
    keyring: &model::Keyring,
    fence: &(Vec<u8>, i64),
) -> anyhow::Result<i64> {
    let c = match client {
        Some(c) => c,
        None => client.insert(
            etcd::connect(&args.etcd_endpoints, Some(Duration::from_secs(5)), access).await?,
        ),
    };
    let stored = etcd::read_stored(c, &args.etcd_prefix, &args.controller_name).await?;
    let mut values = desired.values.clone();
    values.extend(tls::seal(&desired.ssls, &stored.owned, keyring));
    let plan = reconcile::diff(
        &args.etcd_prefix,
        &values,
        &stored.owned,
        &stored.others,
        now(),
    );
    for key in &plan.foreign {
        tracing::warn!(key, "key exists and is not ours; left alone");
    }
    if plan.ops.is_empty() {
        return Ok(stored.latest);
    }
    let revision = etcd::apply(c, &plan, Some((&fence.0, fence.1))).await?;
    tracing::info!(ops = plan.ops.len(), revision, "etcd updated");
    Ok(revision.max(stored.latest))
}
