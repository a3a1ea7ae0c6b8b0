//! Fixed-window counts kept in Redis (`limit-count` with `policy: redis` or
//! `redis-cluster`), so that every gateway replica counts against one limit. One Lua script per request does what
//! APISIX's `limit-count-redis` does: the first request of a window sets the key with
//! the window as its expiry, the others decrement it; a negative result is a rejection.
//!
//! Each worker thread has its own multiplexed connection (made lazily, on that worker's
//! runtime, and re-made after a failure), so no request waits for another worker's. In a
//! cluster, the one key of each call decides the node, as for any single-key command.
//! Every call is bounded by `redis_timeout`: a request never hangs on Redis.
use model::plugins::limit_count::{Redis, RedisCluster};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

/// APISIX's script: `KEYS[1]` the key, `ARGV` the limit, the window in seconds and the
/// cost; answers the requests left (negative: over the limit) and the window's seconds
/// left.
const SCRIPT: &str = r"
local ttl = redis.call('ttl', KEYS[1])
if ttl < 0 then
    redis.call('set', KEYS[1], ARGV[1] - ARGV[3], 'EX', ARGV[2])
    return {ARGV[1] - ARGV[3], ARGV[2]}
end
return {redis.call('incrby', KEYS[1], 0 - ARGV[3]), ttl}
";

/// Where the counts are kept.
#[derive(Debug, Clone)]
pub enum Server {
    Single(Redis),
    Cluster(RedisCluster),
}

/// Connections by worker index.
enum Conns {
    Single(Box<[OnceLock<ConnectionManager>]>),
    /// Made by an async handshake with the seed nodes (slots, then the nodes).
    Cluster(Box<[tokio::sync::OnceCell<ClusterConnection>]>),
}

pub struct RedisCounter {
    server: Server,
    script: redis::Script,
    conns: Conns,
    /// Whether the last call failed: failures are logged when they start and stop, not
    /// once per request.
    failing: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum CountError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0} ms")]
    Timeout(u64),
    /// Connections made for another kind of server: cannot happen, as both come from
    /// one `Server`.
    #[error("redis connections do not match the server kind")]
    Mismatch,
}

impl RedisCounter {
    pub fn new(server: Server) -> RedisCounter {
        let workers = 0..crate::workers::MAX;
        let conns = match &server {
            Server::Single(_) => Conns::Single(workers.map(|_| OnceLock::new()).collect()),
            Server::Cluster(_) => {
                Conns::Cluster(workers.map(|_| tokio::sync::OnceCell::new()).collect())
            }
        };
        RedisCounter {
            server,
            script: redis::Script::new(SCRIPT),
            conns,
            failing: AtomicBool::new(false),
        }
    }

    fn timeout_ms(&self) -> u64 {
        match &self.server {
            Server::Single(c) => c.timeout_ms,
            Server::Cluster(c) => c.timeout_ms,
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms())
    }

    /// What logs name it by.
    fn shown(&self) -> String {
        match &self.server {
            Server::Single(c) => format!("{}:{}", c.host, c.port),
            Server::Cluster(c) => format!("cluster {} ({})", c.name, c.nodes.join(",")),
        }
    }

    /// The calling worker's connection to a single server; must be called on its runtime.
    fn single(
        &self,
        c: &Redis,
        slots: &[OnceLock<ConnectionManager>],
    ) -> Result<ConnectionManager, CountError> {
        let slot = &slots[crate::workers::current() % slots.len()];
        if let Some(c) = slot.get() {
            return Ok(c.clone());
        }
        let mut settings = redis::RedisConnectionInfo::default().set_db(c.database);
        if let Some(u) = &c.username {
            settings = settings.set_username(u);
        }
        if let Some(p) = &c.password {
            settings = settings.set_password(p);
        }
        let addr = redis::ConnectionAddr::Tcp(c.host.clone(), c.port);
        let info =
            redis::IntoConnectionInfo::into_connection_info(addr)?.set_redis_settings(settings);
        let client = redis::Client::open(info)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout()))
            .set_response_timeout(Some(self.timeout()))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let made = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(slot.get_or_init(|| made).clone())
    }

    /// The calling worker's connection to the cluster, made on first use (the seed
    /// nodes' slot map); a failed handshake is tried again by the next request.
    async fn cluster(
        &self,
        c: &RedisCluster,
        slots: &[tokio::sync::OnceCell<ClusterConnection>],
    ) -> Result<ClusterConnection, CountError> {
        let slot = &slots[crate::workers::current() % slots.len()];
        let conn = slot
            .get_or_try_init(|| async {
                let nodes = c.nodes.iter().map(|n| format!("redis://{n}"));
                let mut builder = redis::cluster::ClusterClient::builder(nodes)
                    .connection_timeout(self.timeout())
                    .response_timeout(self.timeout())
                    .retries(1);
                if let Some(p) = &c.password {
                    builder = builder.password(p);
                }
                builder.build()?.get_async_connection().await
            })
            .await?;
        Ok(conn.clone())
    }

    /// Counts one request of `key` against `limit` per `window` seconds: the requests
    /// left in the window (negative when over the limit) and its seconds left.
    pub async fn hit(&self, key: &str, limit: u64, window: u64) -> Result<(i64, u64), CountError> {
        let result = self.call(key, limit, window).await;
        let failed = result.is_err();
        if self.failing.swap(failed, Relaxed) != failed {
            match &result {
                Err(e) => tracing::warn!(
                    redis = %self.shown(), error = %e, "limit-count: redis unreachable"
                ),
                Ok(_) => {
                    tracing::info!(redis = %self.shown(), "limit-count: redis reachable again")
                }
            }
        }
        result
    }

    async fn call(&self, key: &str, limit: u64, window: u64) -> Result<(i64, u64), CountError> {
        let mut invocation = self.script.key(key);
        invocation.arg(limit).arg(window).arg(1);
        // Connecting counts against the timeout too.
        let call = async {
            let answer: (i64, i64) = match (&self.server, &self.conns) {
                (Server::Single(c), Conns::Single(slots)) => {
                    let mut conn = self.single(c, slots)?;
                    invocation.invoke_async(&mut conn).await?
                }
                (Server::Cluster(c), Conns::Cluster(slots)) => {
                    let mut conn = self.cluster(c, slots).await?;
                    invocation.invoke_async(&mut conn).await?
                }
                _ => return Err(CountError::Mismatch),
            };
            Ok::<_, CountError>(answer)
        };
        match tokio::time::timeout(self.timeout(), call).await {
            Ok(Ok((left, ttl))) => Ok((left, u64::try_from(ttl).unwrap_or(0))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(CountError::Timeout(self.timeout_ms())),
        }
    }
}

/// The prefix of one configuration's keys: APISIX's plugin name, then whose count it is
/// (`routes/1`, or the group) and a digest of the configuration, so that every replica
/// names the same count alike and a changed configuration starts a fresh one.
pub fn key_prefix(scope: &str, source: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, source.as_bytes());
    let short: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("plugin-limit-count:{scope}:{short}")
}
