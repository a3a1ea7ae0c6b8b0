//! The path index of one host tier: exact paths in a hash map, parameter patterns in a
//! segment trie, prefixes in a byte-wise radix tree, tried in that order.
//!
//! All three are persistent: cloning an index is O(1), and adding or removing one route
//! copies only what leads to the lists of its own patterns.
use super::candidates::{Candidate, Candidates};
use super::params::{Entry, Found, ParamTrie, Place};
use super::prefix::PrefixTree;
use super::Member;
use model::path::PathPattern;
use std::collections::HashMap;
use std::sync::Arc;

type Routes<T> = Candidates<Arc<Member<T>>>;

pub(super) struct PathIndex<T> {
    exact: imbl::HashMap<Box<str>, Routes<T>>,
    params: ParamTrie<T>,
    prefix: PrefixTree<T>,
}

impl<T> Default for PathIndex<T> {
    fn default() -> Self {
        PathIndex {
            exact: imbl::HashMap::new(),
            params: ParamTrie::default(),
            prefix: PrefixTree::default(),
        }
    }
}

impl<T> Clone for PathIndex<T> {
    fn clone(&self) -> Self {
        PathIndex {
            exact: self.exact.clone(),
            params: self.params.clone(),
            prefix: self.prefix.clone(),
        }
    }
}

/// Appends `entry` unless its route is already last: routes arrive in precedence order,
/// one route's patterns together, so a pattern listed twice by a route is always that.
fn push_once<E: Candidate<T>, T>(list: &mut Vec<E>, entry: E) {
    if list
        .last()
        .is_some_and(|last| Arc::ptr_eq(last.member(), entry.member()))
    {
        return;
    }
    list.push(entry);
}

impl<T> PathIndex<T> {
    /// Indexes `members`, which must be in precedence order, in one pass: each pattern's
    /// list is built once rather than grown route by route.
    pub(super) fn build(members: &[Arc<Member<T>>]) -> Self {
        let mut exact: HashMap<&str, Vec<Arc<Member<T>>>> = HashMap::new();
        let mut prefix: HashMap<&[u8], Vec<Arc<Member<T>>>> = HashMap::new();
        let mut params: HashMap<Place<'_>, Vec<Entry<T>>> = HashMap::new();
        for m in members {
            for (pattern, p) in (0u32..).zip(m.paths.iter()) {
                match p {
                    PathPattern::Exact(s) => {
                        push_once(exact.entry(s).or_default(), m.clone());
                    }
                    PathPattern::Prefix(s) => {
                        push_once(prefix.entry(s.as_bytes()).or_default(), m.clone());
                    }
                    PathPattern::Params(segments) => {
                        if let Some(place) = Place::of(segments) {
                            let entry = Entry::new(m.clone(), pattern);
                            push_once(params.entry(place).or_default(), entry);
                        }
                    }
                }
            }
        }
        let mut index = PathIndex {
            exact: exact
                .into_iter()
                .map(|(p, list)| (p.into(), Candidates::from_vec(list)))
                .collect(),
            ..PathIndex::default()
        };
        for (p, list) in prefix {
            index.prefix.set(p, Candidates::from_vec(list));
        }
        for (place, list) in params {
            index.params.set(&place, Candidates::from_vec(list));
        }
        index
    }

    /// Puts `member` among the routes of each of its patterns.
    pub(super) fn add(&mut self, member: &Arc<Member<T>>) {
        for (pattern, p) in (0u32..).zip(member.paths.iter()) {
            match p {
                PathPattern::Exact(s) => {
                    let list = self.exact.get(s.as_str()).map_or_else(
                        || Candidates::One(member.clone()),
                        |list| list.with(member.clone()),
                    );
                    self.exact.insert(s.as_str().into(), list);
                }
                PathPattern::Prefix(s) => {
                    let key = s.as_bytes();
                    let list = match self.prefix.get(key) {
                        Some(list) => list.with(member.clone()),
                        None => Candidates::One(member.clone()),
                    };
                    self.prefix.set(key, list);
                }
                PathPattern::Params(segments) => {
                    let Some(place) = Place::of(segments) else {
                        continue;
                    };
                    let entry = Entry::new(member.clone(), pattern);
                    let list = match self.params.get(&place) {
                        Some(list) => list.with(entry),
                        None => Candidates::One(entry),
                    };
                    self.params.set(&place, list);
                }
            }
        }
    }

    /// Takes the routes with `member`'s id out of the lists of `member`'s patterns.
    pub(super) fn remove(&mut self, member: &Member<T>) {
        let id = &member.id;
        for p in member.paths.iter() {
            match p {
                PathPattern::Exact(s) => {
                    let Some(list) = self.exact.get(s.as_str()) else {
                        continue;
                    };
                    let list = list.without(id);
                    if list.is_empty() {
                        self.exact.remove(s.as_str());
                    } else {
                        self.exact.insert(s.as_str().into(), list);
                    }
                }
                PathPattern::Prefix(s) => {
                    let key = s.as_bytes();
                    if let Some(list) = self.prefix.get(key).map(|l| l.without(id)) {
                        self.prefix.set(key, list);
                    }
                }
                PathPattern::Params(segments) => {
                    let Some(place) = Place::of(segments) else {
                        continue;
                    };
                    if let Some(list) = self.params.get(&place).map(|l| l.without(id)) {
                        self.params.set(&place, list);
                    }
                }
            }
        }
    }

    /// The first route, in matching order, of a pattern matching `path` that `accept` takes.
    pub(super) fn find<'a>(
        &'a self,
        path: &str,
        accept: &mut impl FnMut(&Member<T>) -> bool,
    ) -> Option<Found<'a, T>> {
        if let Some(list) = self.exact.get(path) {
            if let Some(m) = list.as_slice().iter().find(|m| accept(m)) {
                return Some((m, Vec::new()));
            }
        }
        if let Some(found) = self.params.find(path, accept) {
            return Some(found);
        }
        self.prefix
            .find(path.as_bytes(), |list| list.iter().find(|m| accept(m)))
            .map(|m| (&**m, Vec::new()))
    }
}

#[cfg(test)]
impl<T> PathIndex<T> {
    /// Exact paths, their routes, then the tries' census.
    pub(super) fn census(&self) -> Vec<usize> {
        let routes = self.exact.values().map(|l| l.as_slice().len()).sum();
        let mut out = vec![self.exact.len(), routes];
        out.extend(self.params.census());
        out.extend(self.prefix.census());
        out
    }
}
