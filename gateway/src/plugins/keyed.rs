//! Per-key state of the rate-limiting plugins (a `limit-count` window, a `limit-req`
//! bucket), shared by every worker: sharded so that workers counting different keys
//! rarely wait for each other, and bounded so that a flood of distinct keys cannot grow
//! memory without end.
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// State that stops mattering at some point (a window that ended, a bucket that drained):
/// it is then dropped to make room.
pub trait Expiring {
    fn expired(&self, now: Instant) -> bool;
}

const SHARDS: usize = 16;
/// Keys one shard holds before it drops the expired ones.
const SWEEP_AT: usize = 4096;
/// Past this many live keys in a shard, new keys share one entry: they are limited
/// together, never let through.
pub const MAX_KEYS: usize = 65_536;
const OVERFLOW_KEY: &str = "\u{0}overflow";

struct Shard<V> {
    map: HashMap<String, V>,
    /// The size at which the next sweep runs: twice what the last one left, so sweeping
    /// costs O(1) per new key however many stay live.
    sweep_at: usize,
    /// When it last swept: a full shard sweeps at most once a second.
    swept: Option<Instant>,
}

impl<V> Default for Shard<V> {
    fn default() -> Self {
        Shard {
            map: HashMap::new(),
            sweep_at: 0,
            swept: None,
        }
    }
}

/// Where one key's state is kept.
#[derive(Debug, Clone)]
pub struct Place {
    shard: usize,
    key: String,
}

/// Where one key's state is kept, while its shard is locked.
pub struct PlaceRef<'a> {
    shard: usize,
    key: &'a str,
}

impl PlaceRef<'_> {
    /// Kept, to come back to the same state later (a `limit-conn` slot).
    pub fn owned(&self) -> Place {
        Place {
            shard: self.shard,
            key: self.key.to_string(),
        }
    }
}

pub struct Keyed<V> {
    shards: Vec<Mutex<Shard<V>>>,
    max_keys: usize,
    /// Picks the shard: seeded per table, so a client choosing keys cannot aim them all
    /// at one shard, and fast (the maps inside keep SipHash, whose collisions a client
    /// cannot find).
    hasher: foldhash::fast::RandomState,
}

impl<V: Expiring> Default for Keyed<V> {
    fn default() -> Self {
        Keyed::with_max_keys(MAX_KEYS)
    }
}

impl<V: Expiring> Keyed<V> {
    pub fn with_max_keys(max_keys: usize) -> Self {
        Keyed {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            max_keys,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// Runs `f` on `key`'s state (made by `new` if it has none) under its shard's lock,
    /// with where that state is kept: `key`'s own entry, or its shard's shared overflow
    /// entry when the shard is full (what is given back later must go to the same one).
    pub fn with<R>(
        &self,
        key: &str,
        now: Instant,
        new: impl FnOnce() -> V,
        f: impl FnOnce(PlaceRef<'_>, &mut V) -> R,
    ) -> R {
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        let shard = &self.shards[index];
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        let Shard {
            map,
            sweep_at,
            swept,
        } = &mut *shard;
        // Most requests find their key: one lookup, nothing copied.
        if let Some(v) = map.get_mut(key) {
            return f(PlaceRef { shard: index, key }, v);
        }
        let full = map.len() >= self.max_keys
            && swept.is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1));
        if map.len() >= (*sweep_at).max(SWEEP_AT) || full {
            map.retain(|_, v| !v.expired(now));
            *sweep_at = map.len() * 2;
            *swept = Some(now);
        }
        let key = match map.len() < self.max_keys {
            true => key,
            false => OVERFLOW_KEY,
        };
        f(
            PlaceRef { shard: index, key },
            map.entry(key.to_string()).or_insert_with(new),
        )
    }

    /// Runs `f` on the state kept at `place`, if it is still there.
    pub fn at<R>(&self, place: &Place, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        let mut shard = self.shards[place.shard]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        shard.map.get_mut(&place.key).map(f)
    }

    /// Keys held (live or not yet swept).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).map.len())
            .sum()
    }

    #[cfg(test)]
    pub const SHARDS: usize = SHARDS;

    /// `f` summed over every entry.
    #[cfg(test)]
    pub fn sum(&self, f: impl Fn(&V) -> u64) -> u64 {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .map
                    .values()
                    .map(&f)
                    .sum::<u64>()
            })
            .sum()
    }
}
