//! The `limit-count` plugin (local policy): fixed windows of `time_window` seconds per key,
//! at most `count` requests in each; the count lives in [`Windows`], which the snapshot
//! compiler hands over from one snapshot to the next (`plugin_state.rs`).
use super::keyed::{Expiring, Keyed};
use super::redis_count::RedisCounter;
use super::{Answer, Phases, Req, Run, Settled};
use crate::request_vars::expand;
use http::{HeaderMap, HeaderValue, StatusCode};
use model::plugin_metadata::LimitCountHeaders;
use model::plugins::limit_count::{Key, LimitCount as Conf};
use model::vars::VarSource;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct LimitCount {
    pub conf: Arc<Conf>,
    pub windows: Arc<Windows>,
    /// `policy: redis`: the shared count, and the prefix of this configuration's keys
    /// in it (the same on every replica).
    pub redis: Option<(Arc<RedisCounter>, String)>,
    /// Its header names (plugin metadata, APISIX 3.12+).
    pub headers: LimitCountHeaders,
    /// `count`, as the `X-RateLimit-Limit` value: made once.
    pub limit_value: HeaderValue,
}

/// What one request was told about its quota (for the response headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub remaining: u64,
    /// Whole seconds until the window ends.
    pub reset: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Window {
    ends: Instant,
    used: u64,
}

impl Expiring for Window {
    fn expired(&self, now: Instant) -> bool {
        self.ends <= now
    }
}

/// The fixed windows of one `limit-count` configuration, by key.
pub type Windows = Keyed<Window>;

/// Counts one request of `key` at `now`: whether it is allowed, and the quota left.
pub fn hit(
    windows: &Windows,
    key: &str,
    count: u64,
    window: Duration,
    now: Instant,
) -> (bool, Quota) {
    let fresh = || Window {
        ends: now + window,
        used: 0,
    };
    windows.with(key, now, fresh, |_, w| {
        if w.expired(now) {
            *w = fresh();
        }
        let allowed = w.used < count;
        if allowed {
            w.used += 1;
        }
        let left = w.ends.saturating_duration_since(now);
        let reset = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        let quota = Quota {
            limit: count,
            remaining: count.saturating_sub(w.used),
            reset,
        };
        (allowed, quota)
    })
}

/// A rate-limit key. Most are the client's IPv4 address, kept inline: no allocation.
pub enum KeyText {
    V4([u8; 15], usize),
    Text(String),
}

impl std::ops::Deref for KeyText {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            KeyText::V4(bytes, len) => std::str::from_utf8(&bytes[..*len]).unwrap_or_default(),
            KeyText::Text(s) => s,
        }
    }
}

fn client_key(client: IpAddr) -> KeyText {
    match client {
        IpAddr::V4(v4) => {
            let (bytes, len) = crate::request_vars::ipv4_text(v4);
            KeyText::V4(bytes, len)
        }
        IpAddr::V6(_) => KeyText::Text(client.to_string()),
    }
}

/// The key of one request (`client`: its `remote_addr`); an empty one falls back to the
/// client address (APISIX).
pub fn resolve_key(key: &Key, vars: &dyn VarSource, client: IpAddr) -> KeyText {
    let resolved = match key {
        Key::Var(name) if name == "remote_addr" => return client_key(client),
        Key::Var(name) => vars.get(name).map(|v| v.into_owned()).unwrap_or_default(),
        Key::Combination(template) => expand(template, vars),
        Key::Constant(c) => c.clone(),
    };
    if resolved.is_empty() {
        return client_key(client);
    }
    KeyText::Text(resolved)
}

/// A rate limiter's refusal: `rejected_code`, with `{"error_msg": …}` when configured.
pub fn rejected(code: u16, msg: Option<&str>) -> Answer {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    match msg {
        Some(msg) => {
            let mut a = Answer::message(status, msg);
            a.body = serde_json::json!({ "error_msg": msg }).to_string().into();
            a
        }
        None => Answer::empty(status),
    }
}

/// The `redis` policy's decision, awaited by the proxy once the request phases are over.
/// Redis failing (or slower than `redis_timeout`) lets the request through with
/// `allow_degradation`, and is a 500 otherwise, as in APISIX.
async fn count_in_redis(counter: Arc<RedisCounter>, conf: Arc<Conf>, key: String) -> Settled {
    match counter.hit(&key, conf.count, conf.time_window).await {
        Ok((left, ttl)) => {
            let quota = conf.show_limit_quota_header.then_some(Quota {
                limit: conf.count,
                remaining: u64::try_from(left).unwrap_or(0),
                reset: ttl,
            });
            let answer =
                (left < 0).then(|| rejected(conf.rejected_code, conf.rejected_msg.as_deref()));
            Settled { answer, quota }
        }
        Err(_) if conf.allow_degradation => Settled::default(),
        Err(_) => {
            let mut a = Answer::message(StatusCode::INTERNAL_SERVER_ERROR, "");
            a.body = serde_json::json!({"error_msg": "failed to limit count"})
                .to_string()
                .into();
            Settled {
                answer: Some(a),
                quota: None,
            }
        }
    }
}

/// Header values of numbers up to this are made once, and shared without a reference
/// count; `HeaderValue::from(u64)` allocates each time.
const SMALL: u64 = 4096;

/// `n` as a header value.
pub fn number(n: u64) -> HeaderValue {
    static SMALL_NUMBERS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
        (0..=SMALL)
            .map(|n| &*Box::leak(n.to_string().into_boxed_str()))
            .collect()
    });
    if let Some(text) = usize::try_from(n).ok().and_then(|i| SMALL_NUMBERS.get(i)) {
        return HeaderValue::from_static(text);
    }
    // Digits on the stack, then one copy.
    HeaderValue::from_bytes(crate::headers::decimal(n, &mut [0; 20]))
        .unwrap_or_else(|_| HeaderValue::from(n))
}

impl Phases for LimitCount {
    fn in_rewrite(&self) -> bool {
        false
    }

    fn access(&self, req: &mut Req<'_>, run: &mut Run) -> Option<Answer> {
        let key = resolve_key(&self.conf.key, &req.vars(), req.conn.remote.ip());
        if let Some((counter, prefix)) = &self.redis {
            run.deferred = Some(Box::pin(count_in_redis(
                counter.clone(),
                self.conf.clone(),
                format!("{prefix}:{}", &*key),
            )));
            return None;
        }
        let window = Duration::from_secs(self.conf.time_window);
        let (allowed, quota) = hit(&self.windows, &key, self.conf.count, window, req.now());
        if self.conf.show_limit_quota_header {
            run.quota = Some(quota);
        }
        if allowed {
            return None;
        }
        Some(rejected(
            self.conf.rejected_code,
            self.conf.rejected_msg.as_deref(),
        ))
    }

    fn header_filter(&self, run: &Run, _status: StatusCode, headers: &mut HeaderMap) {
        let Some(q) = run.quota else { return };
        let h = &self.headers;
        let limit = match q.limit == self.conf.count {
            true => self.limit_value.clone(),
            false => number(q.limit),
        };
        headers.insert(h.limit.clone(), limit);
        headers.insert(h.remaining.clone(), number(q.remaining));
        headers.insert(h.reset.clone(), number(q.reset));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_header_values() {
        for n in [0, 7, 59, 4096, 4097, 1_000_000_000, u64::MAX] {
            assert_eq!(number(n), HeaderValue::from(n), "{n}");
        }
    }

    #[test]
    fn fixed_windows_per_key() {
        let w = Windows::default();
        let t0 = Instant::now();
        let win = Duration::from_secs(60);
        let hit = |key: &str, at: u64| hit(&w, key, 2, win, t0 + Duration::from_secs(at));
        let q = |remaining, reset| Quota {
            limit: 2,
            remaining,
            reset,
        };
        assert_eq!(hit("a", 0), (true, q(1, 60)));
        assert_eq!(hit("a", 10), (true, q(0, 50)));
        assert_eq!(hit("a", 20), (false, q(0, 40)));
        assert_eq!(hit("b", 20), (true, q(1, 60)), "keys count apart");
        // The window ends at 60 s: a new one starts with the next request.
        assert_eq!(hit("a", 60), (true, q(1, 60)));
        assert_eq!(hit("a", 61), (true, q(0, 59)));
        assert_eq!(hit("a", 62), (false, q(0, 58)));
    }

    #[test]
    fn distinct_keys_are_bounded() {
        let max = 5000;
        let w = Windows::with_max_keys(max);
        let t0 = Instant::now();
        let win = Duration::from_secs(60);
        let shards = Windows::SHARDS;
        // Half again the cap: every shard overfills whatever the hash seed (with only a
        // few keys over, a shard can stay under its cap and let a new key in).
        for i in 0..(shards * max * 3 / 2) {
            hit(&w, &i.to_string(), 1_000_000, win, t0);
        }
        assert!(w.held() <= shards * (max + 1), "{} keys kept", w.held());
        // Past the cap, new keys share one window: limited together.
        let (allowed, _) = hit(&w, "new-1", 1, win, t0);
        let (again, _) = hit(&w, "new-2", 1, win, t0);
        assert!(
            !(allowed && again),
            "two new keys past the cap were both let through"
        );
        // Once their windows end, old keys are dropped to make room.
        for i in 0..(shards * 10) {
            hit(
                &w,
                &format!("late-{i}"),
                1,
                win,
                t0 + Duration::from_secs(61),
            );
        }
        assert!(
            w.held() < shards * max / 2,
            "{} keys kept after the window",
            w.held()
        );
    }

    #[test]
    fn keys_fall_back_to_the_client_address() {
        use std::borrow::Cow;
        struct V;
        impl VarSource for V {
            fn get(&self, name: &str) -> Option<Cow<'_, str>> {
                match name {
                    "remote_addr" => Some("10.0.0.1".into()),
                    "http_x_user" => Some("u1".into()),
                    _ => None,
                }
            }
        }
        let plugin = |v: serde_json::Value| LimitCount {
            conf: Conf::parse(&v).unwrap().into(),
            redis: None,
            windows: Arc::default(),
            headers: LimitCountHeaders::default(),
            limit_value: HeaderValue::from_static("0"),
        };
        for (conf, want) in [
            (serde_json::json!({}), "10.0.0.1"),
            (serde_json::json!({"key": "http_x_user"}), "u1"),
            (serde_json::json!({"key": "http_x_none"}), "10.0.0.1"),
            (
                serde_json::json!({"key_type": "var_combination", "key": "$http_x_user-$remote_addr"}),
                "u1-10.0.0.1",
            ),
            (
                serde_json::json!({"key_type": "var_combination", "key": "$http_x_none"}),
                "10.0.0.1",
            ),
            (
                serde_json::json!({"key_type": "constant", "key": "all"}),
                "all",
            ),
        ] {
            let mut conf = conf;
            conf["count"] = 1.into();
            conf["time_window"] = 1.into();
            assert_eq!(
                &*resolve_key(
                    &plugin(conf.clone()).conf.key,
                    &V,
                    "10.0.0.1".parse().unwrap()
                ),
                want,
                "{conf}"
            );
        }
    }
}
