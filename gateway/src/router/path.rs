//! The path index of one host tier: exact paths in a hash map, parameter patterns in a
//! segment trie, prefixes in a byte-wise radix tree, tried in that order.
use super::params::{ParamTrie, ParamTrieBuilder};
use super::prefix::PrefixTree;
use super::Span;
use model::path::PathPattern;
use std::collections::HashMap;

/// A match inside one tier: the route number and its captures.
pub(super) type Found<'a> = (u32, Vec<(&'a str, String)>);

#[derive(Default)]
pub(super) struct PathIndex {
    exact: HashMap<Box<str>, Span>,
    params: ParamTrie,
    prefix: PrefixTree,
    /// Route numbers of the exact and prefix patterns, each pattern's run in precedence order.
    routes: Vec<u32>,
}

impl PathIndex {
    /// The first route, in matching order, of a pattern matching `path` that `accept` takes.
    pub(super) fn find<'a>(
        &'a self,
        path: &str,
        accept: &mut impl FnMut(u32) -> bool,
    ) -> Option<Found<'a>> {
        if let Some(span) = self.exact.get(path) {
            if let Some(n) = self.first_accepted(*span, accept) {
                return Some((n, Vec::new()));
            }
        }
        if let Some(found) = self.params.find(path, accept) {
            return Some(found);
        }
        self.prefix
            .find(path.as_bytes(), |span| self.first_accepted(span, accept))
            .map(|n| (n, Vec::new()))
    }

    fn first_accepted(&self, span: Span, accept: &mut impl FnMut(u32) -> bool) -> Option<u32> {
        span.of(&self.routes).iter().copied().find(|&n| accept(n))
    }
}

#[derive(Default)]
pub(super) struct PathIndexBuilder {
    exact: HashMap<Box<str>, Vec<u32>>,
    prefix: HashMap<Box<[u8]>, Vec<u32>>,
    params: ParamTrieBuilder,
}

/// Routes arrive in precedence order, one route's patterns together, so a duplicate
/// (the same host or path listed twice) is always the last entry.
fn push_once(list: &mut Vec<u32>, number: u32) {
    if list.last() != Some(&number) {
        list.push(number);
    }
}

impl PathIndexBuilder {
    pub(super) fn add(&mut self, pattern: &PathPattern, number: u32) {
        match pattern {
            PathPattern::Exact(p) => {
                push_once(self.exact.entry(p.as_str().into()).or_default(), number);
            }
            PathPattern::Prefix(p) => {
                push_once(self.prefix.entry(p.as_bytes().into()).or_default(), number);
            }
            PathPattern::Params(segments) => self.params.add(segments, number),
        }
    }

    pub(super) fn finish(self) -> PathIndex {
        let mut routes = Vec::new();
        let mut exact: HashMap<Box<str>, Span> = self
            .exact
            .into_iter()
            .map(|(p, list)| (p, Span::push(&mut routes, &list)))
            .collect();
        exact.shrink_to_fit();
        let prefixes: Vec<(Box<[u8]>, Span)> = self
            .prefix
            .into_iter()
            .map(|(p, list)| (p, Span::push(&mut routes, &list)))
            .collect();
        routes.shrink_to_fit();
        PathIndex {
            exact,
            params: self.params.finish(),
            prefix: PrefixTree::build(prefixes),
            routes,
        }
    }
}
