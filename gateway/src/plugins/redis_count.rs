//! Fixed-window counts kept in Redis (`limit-count` with `policy: redis`), so that every
//! gateway replica counts against one limit. One Lua script per request does what
//! APISIX's `limit-count-redis` does: the first request of a window sets the key with
//! the window as its expiry, the others decrement it; a negative result is a rejection.
//!
//! Each worker thread has its own multiplexed connection (made lazily, on that worker's
//! runtime, and re-made by the connection manager after a failure), so no request waits
//! for another worker's. Every call is bounded by `redis_timeout`: a request never hangs
//! on Redis.
use model::plugins::limit_count::Redis as Conf;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
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

pub struct RedisCounter {
    conf: Conf,
    script: redis::Script,
    /// By worker index.
    conns: Box<[OnceLock<ConnectionManager>]>,
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
}

impl RedisCounter {
    pub fn new(conf: Conf) -> RedisCounter {
        RedisCounter {
            conf,
            script: redis::Script::new(SCRIPT),
            conns: (0..crate::workers::MAX).map(|_| OnceLock::new()).collect(),
            failing: AtomicBool::new(false),
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.conf.timeout_ms)
    }

    /// The calling worker's connection; must be called on its runtime.
    fn conn(&self) -> Result<ConnectionManager, CountError> {
        let slot = &self.conns[crate::workers::current() % self.conns.len()];
        if let Some(c) = slot.get() {
            return Ok(c.clone());
        }
        let c = &self.conf;
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

    /// Counts one request of `key` against `limit` per `window` seconds: the requests
    /// left in the window (negative when over the limit) and its seconds left.
    pub async fn hit(&self, key: &str, limit: u64, window: u64) -> Result<(i64, u64), CountError> {
        let result = self.call(key, limit, window).await;
        let failed = result.is_err();
        if self.failing.swap(failed, Relaxed) != failed {
            match &result {
                Err(e) => tracing::warn!(
                    host = %self.conf.host, port = self.conf.port, error = %e,
                    "limit-count: redis unreachable"
                ),
                Ok(_) => tracing::info!(
                    host = %self.conf.host, port = self.conf.port,
                    "limit-count: redis reachable again"
                ),
            }
        }
        result
    }

    async fn call(&self, key: &str, limit: u64, window: u64) -> Result<(i64, u64), CountError> {
        let mut conn = self.conn()?;
        let mut invocation = self.script.key(key);
        invocation.arg(limit).arg(window).arg(1);
        let call = invocation.invoke_async::<(i64, i64)>(&mut conn);
        match tokio::time::timeout(self.timeout(), call).await {
            Ok(Ok((left, ttl))) => Ok((left, u64::try_from(ttl).unwrap_or(0))),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(CountError::Timeout(self.conf.timeout_ms)),
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
