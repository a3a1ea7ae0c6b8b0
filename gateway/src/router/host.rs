//! Host tiers: which per-host path indexes a request tries, and in which order, found with
//! one hash lookup per label of the request host rather than a scan of the routes' hosts.
use super::path::{PathIndex, PathIndexBuilder};
use model::host::HostPattern;
use model::path::PathPattern;
use std::collections::HashMap;
use std::fmt;

pub(super) struct HostIndex {
    exact: HashMap<Box<str>, PathIndex>,
    /// Keyed by the suffix with its leading dot: `*.foo.com` is `.foo.com`.
    wildcard: HashMap<Box<str>, PathIndex>,
    /// No wildcard suffix is longer than this, so longer suffixes of a host need no lookup.
    longest_wildcard: usize,
    any: PathIndex,
}

impl HostIndex {
    /// The path indexes to try for `host`, most specific first: the exact host, each
    /// wildcard suffix from the longest to the shortest, then routes without hosts.
    pub(super) fn tiers<'s, 'h>(
        &'s self,
        host: &'h str,
    ) -> impl Iterator<Item = &'s PathIndex> + use<'s, 'h> {
        let exact = self.exact.get(host);
        let wildcards = host
            .char_indices()
            // A dot at 0 would make the suffix the whole host, and `*.foo.com` needs at
            // least one character before `.foo.com`.
            .filter(|&(i, c)| c == '.' && i > 0 && host.len() - i <= self.longest_wildcard)
            .filter_map(move |(i, _)| host.get(i..).and_then(|s| self.wildcard.get(s)));
        exact
            .into_iter()
            .chain(wildcards)
            .chain(std::iter::once(&self.any))
    }
}

impl fmt::Debug for HostIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostIndex")
            .field("exact_hosts", &self.exact.len())
            .field("wildcard_hosts", &self.wildcard.len())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
pub(super) struct HostIndexBuilder {
    exact: HashMap<Box<str>, PathIndexBuilder>,
    wildcard: HashMap<Box<str>, PathIndexBuilder>,
    any: PathIndexBuilder,
}

impl HostIndexBuilder {
    /// Indexes route `number` under every host × path; routes must come in precedence order.
    pub(super) fn add(&mut self, number: u32, hosts: &[HostPattern], paths: &[PathPattern]) {
        if hosts.is_empty() {
            for p in paths {
                self.any.add(p, number);
            }
            return;
        }
        for h in hosts {
            // The model lower-cases patterns already; doing it again costs nothing here and
            // keeps a hand-built pattern from silently never matching a normalised host.
            let index = match h {
                HostPattern::Exact(name) => self
                    .exact
                    .entry(name.to_ascii_lowercase().into_boxed_str())
                    .or_default(),
                HostPattern::Wildcard(suffix) => {
                    let mut key = suffix.to_ascii_lowercase();
                    if !key.starts_with('.') {
                        key.insert(0, '.');
                    }
                    self.wildcard.entry(key.into_boxed_str()).or_default()
                }
            };
            for p in paths {
                index.add(p, number);
            }
        }
    }

    pub(super) fn finish(self) -> HostIndex {
        let finish_all = |m: HashMap<Box<str>, PathIndexBuilder>| -> HashMap<Box<str>, PathIndex> {
            let mut out: HashMap<_, _> = m.into_iter().map(|(k, b)| (k, b.finish())).collect();
            out.shrink_to_fit();
            out
        };
        let longest_wildcard = self.wildcard.keys().map(|k| k.len()).max().unwrap_or(0);
        HostIndex {
            exact: finish_all(self.exact),
            wildcard: finish_all(self.wildcard),
            longest_wildcard,
            any: self.any.finish(),
        }
    }
}
