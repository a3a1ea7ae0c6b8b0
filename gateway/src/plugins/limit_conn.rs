//! The `limit-conn` plugin (local policy): requests in flight per key, as
//! lua-resty-limit-traffic's `limit.conn` counts them. A request takes a [`Slot`] in the
//! access phase; the slot goes back when the last holder drops it: the response body once
//! sent (or dropped by an aborted client), or a WebSocket tunnel once closed.
use super::keyed::{Expiring, Keyed, Place};
use super::limit_count::{rejected, resolve_key};
use super::{Answer, Phases, Req, Run};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct LimitConn {
    pub conf: model::plugins::limit_conn::LimitConn,
    pub counts: Arc<Counts>,
}

#[derive(Debug, Default)]
pub struct InFlight(u64);

impl Expiring for InFlight {
    fn expired(&self, _now: Instant) -> bool {
        self.0 == 0
    }
}

pub type Counts = Keyed<InFlight>;

/// One request's place in its key's count, given back on drop.
pub struct Slot {
    counts: Arc<Counts>,
    place: Place,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counts.at(&self.place, |n| n.0 = n.0.saturating_sub(1));
    }
}

/// One request of `key`: refused (`None`) above `conn + burst` in flight, else its slot
/// and how long it waits: `delay` for each `conn` requests ahead of it beyond the first.
pub fn incoming(
    counts: &Arc<Counts>,
    key: &str,
    conn: u64,
    burst: u64,
    delay: Duration,
) -> Option<(Slot, Duration)> {
    let now = Instant::now();
    let (n, place) = counts.with(key, now, InFlight::default, |place, n| {
        if n.0 >= conn.saturating_add(burst) {
            return None;
        }
        n.0 += 1;
        Some((n.0, place.owned()))
    })?;
    // Given back where it was counted (its shard's overflow entry, when that was full).
    let slot = Slot {
        counts: counts.clone(),
        place,
    };
    let wait = match n > conn {
        true => delay.saturating_mul(u32::try_from((n - 1) / conn).unwrap_or(u32::MAX)),
        false => Duration::ZERO,
    };
    Some((slot, wait))
}

impl Phases for LimitConn {
    fn in_rewrite(&self) -> bool {
        false
    }

    fn access(&self, req: &mut Req<'_>, run: &mut Run) -> Option<Answer> {
        let c = &self.conf;
        let key = resolve_key(&c.key, &req.vars(), req.conn.remote.ip());
        let delay = Duration::from_secs_f64(c.default_conn_delay);
        let Some((slot, wait)) = incoming(&self.counts, &key, c.conn, c.burst, delay) else {
            return Some(rejected(c.rejected_code, c.rejected_msg.as_deref()));
        };
        run.held.push(Arc::new(slot));
        if wait >= Duration::from_millis(1) {
            run.delay = Some(run.delay.unwrap_or_default() + wait);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_until_dropped() {
        let counts = Arc::new(Counts::default());
        let d = Duration::from_millis(100);
        let (a, wait_a) = incoming(&counts, "k", 2, 1, d).unwrap();
        let (b, wait_b) = incoming(&counts, "k", 2, 1, d).unwrap();
        let (c, wait_c) = incoming(&counts, "k", 2, 1, d).unwrap();
        assert_eq!(
            (wait_a, wait_b, wait_c),
            (Duration::ZERO, Duration::ZERO, d)
        );
        assert!(
            incoming(&counts, "k", 2, 1, d).is_none(),
            "over conn + burst"
        );
        assert!(incoming(&counts, "other", 2, 1, d).is_some(), "keys apart");
        drop(a);
        let (_d, wait_d) = incoming(&counts, "k", 2, 1, d).expect("a slot came back");
        assert_eq!(wait_d, d);
        drop((b, c, _d));
        assert!(incoming(&counts, "k", 2, 1, d).is_some());
    }

    /// A key counted under the shared overflow entry (its shard full) is given back
    /// there, not to an entry of its own that did not count it.
    #[test]
    fn overflowed_slots_go_back_where_they_were_counted() {
        let counts = Arc::new(Counts::with_max_keys(1));
        let d = Duration::from_millis(1);
        let slots: Vec<_> = (0..100)
            .map(|i| incoming(&counts, &format!("k{i}"), 1000, 0, d).unwrap().0)
            .collect();
        assert_eq!(counts.sum(|n| n.0), 100);
        drop(slots);
        assert_eq!(counts.sum(|n| n.0), 0, "every slot came back");
    }
}
