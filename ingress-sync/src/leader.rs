//! Leader election through etcd (a lease kept alive + the election API). Only the leader
//! writes; the rest wait in `campaign`. A leader whose lease cannot be kept alive steps
//! down at once (and its writes are fenced on its election key anyway, see `etcd::apply`);
//! after a crash its lease expires within the TTL and a waiting replica is elected. On a
//! clean stop (`stop` turns true) the lease is revoked, so a successor is elected at once.
use etcd_client::Client;
use std::time::Duration;
use tokio::sync::watch;

/// The current leadership: the election key and its creation revision while we lead.
pub type Leadership = Option<(Vec<u8>, i64)>;

/// Runs until `stop` turns true, publishing our leadership on `tx`.
pub async fn run(
    endpoints: Vec<String>,
    access: common::etcd::Access,
    election: String,
    identity: String,
    ttl: i64,
    tx: watch::Sender<Leadership>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(200);
    while !*stop.borrow() {
        match lead_once(
            &endpoints, &access, &election, &identity, ttl, &tx, &mut stop,
        )
        .await
        {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(e) => {
                tracing::warn!(error = %e, "leader election failed; retrying");
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        tx.send_replace(None);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => {}
        }
    }
}

/// One term: grant a lease, keep it alive, campaign, lead until the lease is lost.
async fn lead_once(
    endpoints: &[String],
    access: &common::etcd::Access,
    election: &str,
    identity: &str,
    ttl: i64,
    tx: &watch::Sender<Leadership>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), etcd_client::Error> {
    // No request timeout: `campaign` blocks until we are elected.
    let mut client =
        Client::connect(endpoints, Some(crate::etcd::connect_options(None, access))).await?;
    let lease = client.lease_grant(ttl, None).await?.id();
    let (mut keeper, mut responses) = client.lease_keep_alive(lease).await?;
    let interval = Duration::from_millis((ttl.max(1) as u64 * 1000) / 3);
    // Keep the lease alive while campaigning and while leading; the first failure ends it.
    let keep_alive = async {
        loop {
            keeper.keep_alive().await?;
            match tokio::time::timeout(interval, responses.message()).await {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                Ok(Ok(_)) => return Ok::<(), etcd_client::Error>(()),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    tracing::warn!("no keep-alive answer within {interval:?}");
                    return Ok(());
                }
            }
            tokio::time::sleep(interval).await;
        }
    };
    let mut campaign_client = client.clone();
    let lead = async {
        let resp = campaign_client.campaign(election, identity, lease).await?;
        let Some(key) = resp.leader() else {
            return Ok::<(), etcd_client::Error>(());
        };
        tracing::info!(identity, "elected leader");
        tx.send_replace(Some((key.key().to_vec(), key.rev())));
        std::future::pending::<()>().await;
        Ok(())
    };
    let result = tokio::select! {
        r = keep_alive => r,
        r = lead => r,
        _ = stop.changed() => {
            tracing::info!("stopping: resigning");
            Ok(())
        }
    };
    if tx.borrow().is_some() && !*stop.borrow() {
        tracing::warn!("leadership lost (lease not kept alive)");
    }
    tx.send_replace(None);
    // Best effort: let a successor take over now rather than at the lease's expiry.
    let _ = client.lease_revoke(lease).await;
    result
}
