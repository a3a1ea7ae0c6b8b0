//! The `limit-req` plugin (local policy): nginx's leaky bucket per key, as
//! lua-resty-limit-traffic computes it. Each request adds one to the bucket, which drains
//! at `rate` per second; a request that would overfill it beyond `burst` is refused (and
//! not counted), one that finds it non-empty waits `excess / rate` (unless `nodelay`).
use super::keyed::{Expiring, Keyed};
use super::limit_count::{rejected, resolve_key};
use super::{Answer, Phases, Req, Run};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct LimitReq {
    pub conf: model::plugins::limit_req::LimitReq,
    pub buckets: Arc<Buckets>,
}

#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    /// Requests in the bucket after the last one counted.
    excess: f64,
    /// When the last one was counted; `None` for a bucket met for the first time.
    last: Option<Instant>,
    /// From when the next request would find it empty: it then holds nothing worth
    /// keeping (dropped and met again, it gives the same answer).
    empty_at: Instant,
}

impl Expiring for Bucket {
    fn expired(&self, now: Instant) -> bool {
        self.empty_at <= now
    }
}

pub type Buckets = Keyed<Bucket>;

/// One request of `key` at `now`: `None` when refused, else how long it must wait.
pub fn incoming(
    buckets: &Buckets,
    key: &str,
    rate: f64,
    burst: f64,
    now: Instant,
) -> Option<Duration> {
    let fresh = || Bucket {
        excess: 0.0,
        last: None,
        empty_at: now,
    };
    buckets.with(key, now, fresh, |_, b| {
        // The first request of a key finds the bucket empty, as resty's does.
        let excess = match b.last {
            None => 0.0,
            Some(last) => {
                let drained = rate * now.saturating_duration_since(last).as_secs_f64();
                (b.excess - drained + 1.0).max(0.0)
            }
        };
        if excess > burst {
            return None;
        }
        // Bounded by the configuration (burst ≤ 1e9, rate ≥ 0.001); refused rather than
        // panicking should those bounds ever be passed.
        let wait = Duration::try_from_secs_f64(excess / rate).ok()?;
        let empty_at = Duration::try_from_secs_f64((excess + 1.0) / rate)
            .ok()
            .and_then(|d| now.checked_add(d))?;
        *b = Bucket {
            excess,
            last: Some(now),
            empty_at,
        };
        Some(wait)
    })
}

impl Phases for LimitReq {
    fn in_rewrite(&self) -> bool {
        false
    }

    fn access(&self, req: &mut Req<'_>, run: &mut Run) -> Option<Answer> {
        let c = &self.conf;
        let key = resolve_key(&c.key, &req.vars(), req.conn.remote.ip());
        match incoming(&self.buckets, &key, c.rate, c.burst, req.now()) {
            None => Some(rejected(c.rejected_code, c.rejected_msg.as_deref())),
            // APISIX sleeps only for a millisecond or more.
            Some(wait) if !c.nodelay && wait >= Duration::from_millis(1) => {
                run.delay = Some(run.delay.unwrap_or_default() + wait);
                None
            }
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nginx's classic: rate 1/s, burst 2. At t=0 four requests: the first passes at once,
    /// the next two wait 1 s and 2 s, the fourth is refused; the bucket drains at 1/s.
    #[test]
    fn leaky_bucket() {
        let b = Buckets::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let s = |secs: f64| Some(Duration::from_secs_f64(secs));
        assert_eq!(incoming(&b, "k", 1.0, 2.0, at(0)), s(0.0));
        assert_eq!(incoming(&b, "k", 1.0, 2.0, at(0)), s(1.0));
        assert_eq!(incoming(&b, "k", 1.0, 2.0, at(0)), s(2.0));
        assert_eq!(incoming(&b, "k", 1.0, 2.0, at(0)), None, "over the burst");
        assert_eq!(incoming(&b, "other", 1.0, 2.0, at(0)), s(0.0), "keys apart");
        // 1.5 s later the bucket holds 0.5: the next one waits 1.5 s.
        assert_eq!(incoming(&b, "k", 1.0, 2.0, at(1500)), s(1.5));
        // Drained long after: empty again.
        assert_eq!(incoming(&b, "k", 1.0, 2.0, at(60_000)), s(0.0));
        // burst 0: one per 1/rate, the rest refused.
        assert_eq!(incoming(&b, "z", 10.0, 0.0, at(0)), s(0.0));
        assert_eq!(incoming(&b, "z", 10.0, 0.0, at(50)), None);
        assert_eq!(incoming(&b, "z", 10.0, 0.0, at(100)), s(0.0));
    }
}
