//! The path index of one host tier: exact paths in a hash map, parameter patterns in a
//! segment trie, prefixes in a byte-wise radix tree, tried in that order.
//!
//! All three are persistent: cloning an index is O(1), and adding or removing one route
//! copies only what leads to the lists of its own patterns.
use super::candidates::{precedence, Candidate, Candidates};
use super::params::{Entry, Found, ParamTrie, Place};
use super::prefix::PrefixTree;
use super::Member;
use model::path::PathPattern;
use model::Id;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

type Routes<T> = Candidates<Arc<Member<T>>>;

pub(super) struct PathIndex<T> {
    exact: super::FastMap<Box<str>, Routes<T>>,
    params: ParamTrie<T>,
    prefix: PrefixTree<T>,
}

impl<T> Default for PathIndex<T> {
    fn default() -> Self {
        PathIndex {
            exact: super::FastMap::new(),
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

/// What one batch does to one pattern's list: routes whose ids go, and routes that come
/// in precedence order.
struct Edit<'m, E> {
    gone: Vec<&'m Id>,
    new: Vec<E>,
}

impl<E> Default for Edit<'_, E> {
    fn default() -> Self {
        Edit {
            gone: Vec::new(),
            new: Vec::new(),
        }
    }
}

impl<E: Clone> Edit<'_, E> {
    /// Appends `entry` unless its route is already last: routes come in precedence order,
    /// one route's patterns together, so a pattern listed twice by a route is always that.
    fn push<T>(&mut self, entry: E)
    where
        E: Candidate<T>,
    {
        if self
            .new
            .last()
            .is_some_and(|last| Arc::ptr_eq(last.member(), entry.member()))
        {
            return;
        }
        self.new.push(entry);
    }

    /// `old` without the routes that go, merged with the ones that come: one pass, so a
    /// batch costs O(list) per pattern it touches however many of its routes change.
    fn apply<T>(self, old: Option<&Candidates<E>>) -> Candidates<E>
    where
        E: Candidate<T>,
    {
        let Edit { gone, new } = self;
        let old = old.map_or(&[][..], Candidates::as_slice);
        if old.is_empty() {
            return Candidates::from_vec(new);
        }
        // Most edits take one route out; a set only pays for itself with many.
        let set: Option<HashSet<&Id>> = (gone.len() > 8).then(|| gone.iter().copied().collect());
        let goes = |id: &Id| match &set {
            Some(set) => set.contains(id),
            None => gone.contains(&id),
        };
        let mut out = Vec::with_capacity(old.len() + new.len());
        let mut kept = old.iter().filter(|e| !goes(&e.member().id)).peekable();
        let mut new = new.into_iter().peekable();
        loop {
            let old_first = match (kept.peek(), new.peek()) {
                (Some(a), Some(b)) => precedence(a.member(), b.member()) == Ordering::Less,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if old_first {
                kept.next().cloned()
            } else {
                new.next()
            };
            out.extend(next);
        }
        Candidates::from_vec(out)
    }
}

impl<T> PathIndex<T> {
    /// Takes the routes with the ids of `gone` out of the lists of `gone`'s patterns, and
    /// puts `new` (in precedence order) into the lists of theirs: each touched list is
    /// made once, and nothing else is copied but the trie nodes above it.
    pub(super) fn apply(&mut self, gone: &[Arc<Member<T>>], new: &[Arc<Member<T>>]) {
        let mut exact: HashMap<&str, Edit<'_, Arc<Member<T>>>> = HashMap::new();
        let mut prefix: HashMap<&[u8], Edit<'_, Arc<Member<T>>>> = HashMap::new();
        let mut params: HashMap<Place<'_>, Edit<'_, Entry<T>>> = HashMap::new();
        for m in gone {
            for p in m.paths.iter() {
                let gone = match p {
                    PathPattern::Exact(s) => &mut exact.entry(s).or_default().gone,
                    PathPattern::Prefix(s) => &mut prefix.entry(s.as_bytes()).or_default().gone,
                    PathPattern::Params(segments) => match Place::of(segments) {
                        Some(place) => &mut params.entry(place).or_default().gone,
                        None => continue,
                    },
                };
                gone.push(&m.id);
            }
        }
        for m in new {
            for (pattern, p) in (0u32..).zip(m.paths.iter()) {
                match p {
                    PathPattern::Exact(s) => exact.entry(s).or_default().push(m.clone()),
                    PathPattern::Prefix(s) => {
                        prefix.entry(s.as_bytes()).or_default().push(m.clone());
                    }
                    PathPattern::Params(segments) => {
                        if let Some(place) = Place::of(segments) {
                            let entry = Entry::new(m.clone(), pattern);
                            params.entry(place).or_default().push(entry);
                        }
                    }
                }
            }
        }
        for (path, edit) in exact {
            let list = edit.apply(self.exact.get(path));
            if list.is_empty() {
                self.exact.remove(path);
            } else {
                self.exact.insert(path.into(), list);
            }
        }
        for (key, edit) in prefix {
            let list = edit.apply(self.prefix.get(key));
            self.prefix.set(key, list);
        }
        for (place, edit) in params {
            let list = edit.apply(self.params.get(&place));
            self.params.set(&place, list);
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
