//! Host tiers: which per-host tables a request tries, and in which order, found with one
//! hash lookup per label of the request host rather than a scan of the routes' hosts.
//!
//! Each host (and each wildcard suffix, and "no host") has its own [`Table`], shared by
//! `Arc` between snapshots, so a change to one route touches only the tables of the hosts
//! it had and has: the rest of a large configuration is carried over untouched.
use super::table::Table;
use model::host::HostPattern;
use std::sync::Arc;

/// Where a route is indexed: one key per host pattern, or `Any` for routes without hosts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum HostKey {
    Exact(Box<str>),
    /// The suffix with its leading dot: `*.foo.com` is `.foo.com`.
    Wildcard(Box<str>),
    Any,
}

impl HostKey {
    pub(super) fn of(hosts: &[HostPattern]) -> Vec<HostKey> {
        if hosts.is_empty() {
            return vec![HostKey::Any];
        }
        let mut keys: Vec<HostKey> = hosts
            .iter()
            .map(|h| match h {
                // The model lower-cases patterns already; doing it again costs nothing here
                // and keeps a hand-built pattern from silently never matching.
                HostPattern::Exact(name) => {
                    HostKey::Exact(name.to_ascii_lowercase().into_boxed_str())
                }
                HostPattern::Wildcard(suffix) => {
                    let mut key = suffix.to_ascii_lowercase();
                    if !key.starts_with('.') {
                        key.insert(0, '.');
                    }
                    HostKey::Wildcard(key.into_boxed_str())
                }
            })
            .collect();
        // The same host twice (two spellings) is one table entry, not two.
        let mut seen = std::collections::HashSet::new();
        keys.retain(|k| seen.insert(k.clone()));
        keys
    }
}

/// The tables by host. Persistent maps: cloning is O(1) and an update copies only the
/// path to the changed entry, so snapshots share everything that did not change.
pub(super) struct HostIndex<T> {
    pub(super) exact: super::FastMap<Box<str>, Arc<Table<T>>>,
    pub(super) wildcard: super::FastMap<Box<str>, Arc<Table<T>>>,
    /// No wildcard suffix is longer than this, so longer suffixes of a host need no lookup.
    pub(super) longest_wildcard: usize,
    /// The longest wildcard host was removed since `finish` last looked.
    longest_stale: bool,
    pub(super) any: Arc<Table<T>>,
}

impl<T> Clone for HostIndex<T> {
    fn clone(&self) -> Self {
        HostIndex {
            exact: self.exact.clone(),
            wildcard: self.wildcard.clone(),
            longest_wildcard: self.longest_wildcard,
            longest_stale: self.longest_stale,
            any: self.any.clone(),
        }
    }
}

impl<T> HostIndex<T> {
    pub(super) fn empty() -> Self {
        HostIndex {
            exact: super::FastMap::new(),
            wildcard: super::FastMap::new(),
            longest_wildcard: 0,
            longest_stale: false,
            any: Arc::new(Table::empty()),
        }
    }

    pub(super) fn get(&self, key: &HostKey) -> Option<&Arc<Table<T>>> {
        match key {
            HostKey::Exact(h) => self.exact.get(h),
            HostKey::Wildcard(s) => self.wildcard.get(s),
            HostKey::Any => Some(&self.any),
        }
    }

    /// Puts `table` under `key`; an empty table removes the host.
    pub(super) fn set(&mut self, key: HostKey, table: Table<T>) {
        let empty = table.is_empty();
        let table = Arc::new(table);
        match key {
            HostKey::Exact(h) if empty => {
                self.exact.remove(&h);
            }
            HostKey::Exact(h) => {
                self.exact.insert(h, table);
            }
            HostKey::Wildcard(s) if empty => {
                // Only losing the longest suffix can shorten the longest; `finish` then
                // looks for the new one.
                if self.wildcard.remove(&s).is_some() && s.len() >= self.longest_wildcard {
                    self.longest_stale = true;
                }
            }
            HostKey::Wildcard(s) => {
                self.longest_wildcard = self.longest_wildcard.max(s.len());
                self.wildcard.insert(s, table);
            }
            HostKey::Any => self.any = table,
        }
    }

    /// Call after the last `set`: brings `longest_wildcard` up to date, which takes a scan
    /// of the wildcard hosts only when the longest one went.
    pub(super) fn finish(&mut self) {
        if self.longest_stale {
            self.longest_wildcard = self.wildcard.keys().map(|k| k.len()).max().unwrap_or(0);
            self.longest_stale = false;
        }
    }

    /// The tables to try for `host`, most specific first: the exact host, each wildcard
    /// suffix from the longest to the shortest, then routes without hosts.
    pub(super) fn tiers<'s, 'h>(
        &'s self,
        host: &'h str,
    ) -> impl Iterator<Item = &'s Table<T>> + use<'s, 'h, T> {
        let exact = self.exact.get(host).map(|t| &**t);
        // Only the dots no further from the end than the longest wildcard suffix can start
        // one (none at all when there is no wildcard host, as for most configurations). A
        // dot at 0 would make the suffix the whole host, and `*.foo.com` needs at least one
        // character before `.foo.com`. A `.` byte is always a whole character.
        let from = host.len().saturating_sub(self.longest_wildcard).max(1);
        let wildcards = host
            .as_bytes()
            .get(from..)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'.')
            .filter_map(move |(j, _)| host.get(from + j..).and_then(|s| self.wildcard.get(s)))
            .map(|t| &**t);
        exact
            .into_iter()
            .chain(wildcards)
            .chain(std::iter::once(&*self.any))
    }
}
