//! The `limit-count` plugin (local policy): fixed windows of `time_window` seconds per key,
//! at most `count` requests in each; the count lives in [`Windows`], which the snapshot
//! compiler hands over from one snapshot to the next (`plugin_state.rs`).
use super::{Answer, Phases, Req, Run};
use crate::request_vars::expand;
use http::{HeaderMap, HeaderValue, StatusCode};
use model::plugin_metadata::LimitCountHeaders;
use model::plugins::limit_count::{Key, LimitCount as Conf};
use model::vars::VarSource;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct LimitCount {
    pub conf: Conf,
    pub windows: Arc<Windows>,
    /// Its header names (plugin metadata, APISIX 3.12+).
    pub headers: LimitCountHeaders,
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
struct Window {
    ends: Instant,
    used: u64,
}

/// Shards, so that workers counting different keys rarely wait for each other.
const SHARDS: usize = 16;
/// Keys one shard holds before it drops the windows that ended.
const SWEEP_AT: usize = 4096;
/// Past this many live keys in a shard, new keys share one window, so a flood of
/// distinct keys cannot grow memory without bound (they are limited together, never let
/// through).
const MAX_KEYS: usize = 65_536;
const OVERFLOW_KEY: &str = "\u{0}overflow";

#[derive(Default)]
struct Shard {
    map: HashMap<String, Window>,
    /// The size at which the next sweep runs: twice what the last one left, so sweeping
    /// costs O(1) per new key however many stay live.
    sweep_at: usize,
    /// When it last swept: a full shard sweeps at most once a second.
    swept: Option<Instant>,
}

pub struct Windows {
    shards: Vec<Mutex<Shard>>,
    max_keys: usize,
}

impl Default for Windows {
    fn default() -> Windows {
        Windows::with_max_keys(MAX_KEYS)
    }
}

impl Windows {
    fn with_max_keys(max_keys: usize) -> Windows {
        Windows {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            max_keys,
        }
    }

    /// Counts one request of `key` at `now`: whether it is allowed, and the quota left.
    pub fn hit(&self, key: &str, count: u64, window: Duration, now: Instant) -> (bool, Quota) {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        let shard = &self.shards[(h.finish() as usize) % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        let Shard {
            map,
            sweep_at,
            swept,
        } = &mut *shard;
        let full = map.len() >= self.max_keys
            && swept.is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1));
        if !map.contains_key(key) && (map.len() >= (*sweep_at).max(SWEEP_AT) || full) {
            map.retain(|_, w| w.ends > now);
            *sweep_at = map.len() * 2;
            *swept = Some(now);
        }
        let key = if map.contains_key(key) || map.len() < self.max_keys {
            key
        } else {
            OVERFLOW_KEY
        };
        let w = map.entry(key.to_string()).or_insert(Window {
            ends: now + window,
            used: 0,
        });
        if w.ends <= now {
            *w = Window {
                ends: now + window,
                used: 0,
            };
        }
        let allowed = w.used < count;
        if allowed {
            w.used += 1;
        }
        let left = w.ends.saturating_duration_since(now);
        let reset = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        (
            allowed,
            Quota {
                limit: count,
                remaining: count.saturating_sub(w.used),
                reset,
            },
        )
    }
}

impl LimitCount {
    /// The key of one request; an empty one falls back to the client address (APISIX).
    fn key(&self, vars: &dyn VarSource) -> String {
        let key = match &self.conf.key {
            Key::Var(name) => vars.get(name).map(|v| v.into_owned()).unwrap_or_default(),
            Key::Combination(template) => expand(template, vars),
            Key::Constant(c) => c.clone(),
        };
        if key.is_empty() {
            return vars
                .get("remote_addr")
                .map(|v| v.into_owned())
                .unwrap_or_default();
        }
        key
    }
}

impl Phases for LimitCount {
    fn in_rewrite(&self) -> bool {
        false
    }

    fn access(&self, req: &mut Req<'_>, run: &mut Run) -> Option<Answer> {
        let key = self.key(&req.vars());
        let window = Duration::from_secs(self.conf.time_window);
        let (allowed, quota) = self
            .windows
            .hit(&key, self.conf.count, window, Instant::now());
        if self.conf.show_limit_quota_header {
            run.quota = Some(quota);
        }
        if allowed {
            return None;
        }
        let status = StatusCode::from_u16(self.conf.rejected_code)
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        Some(match &self.conf.rejected_msg {
            Some(msg) => {
                let mut a = Answer::message(status, msg);
                a.body = serde_json::json!({ "error_msg": msg }).to_string().into();
                a
            }
            None => Answer::empty(status),
        })
    }

    fn header_filter(&self, run: &Run, _status: StatusCode, headers: &mut HeaderMap) {
        let Some(q) = run.quota else { return };
        let h = &self.headers;
        for (name, value) in [
            (&h.limit, q.limit),
            (&h.remaining, q.remaining),
            (&h.reset, q.reset),
        ] {
            headers.insert(name.clone(), HeaderValue::from(value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_windows_per_key() {
        let w = Windows::default();
        let t0 = Instant::now();
        let win = Duration::from_secs(60);
        let hit = |key: &str, at: u64| w.hit(key, 2, win, t0 + Duration::from_secs(at));
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
        let kept =
            |w: &Windows| -> usize { w.shards.iter().map(|s| s.lock().unwrap().map.len()).sum() };
        for i in 0..(SHARDS * max + 1000) {
            w.hit(&i.to_string(), 1_000_000, win, t0);
        }
        assert!(kept(&w) <= SHARDS * (max + 1), "{} keys kept", kept(&w));
        // Past the cap, new keys share one window: limited together.
        let (allowed, _) = w.hit("new-1", 1, win, t0);
        let (again, _) = w.hit("new-2", 1, win, t0);
        assert!(
            !(allowed && again),
            "two new keys past the cap were both let through"
        );
        // Once their windows end, old keys are dropped to make room.
        for i in 0..(SHARDS * 10) {
            w.hit(&format!("late-{i}"), 1, win, t0 + Duration::from_secs(61));
        }
        assert!(
            kept(&w) < SHARDS * max / 2,
            "{} keys kept after the window",
            kept(&w)
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
            conf: Conf::parse(&v).unwrap(),
            windows: Arc::default(),
            headers: LimitCountHeaders::default(),
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
            assert_eq!(plugin(conf.clone()).key(&V), want, "{conf}");
        }
    }
}
