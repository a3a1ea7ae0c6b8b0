//! One host tier's routes: their path index, and how many routes it holds.
use super::candidates::precedence;
use super::params::Found;
use super::path::PathIndex;
use super::{Member, Request};
use std::sync::Arc;

pub(super) struct Table<T> {
    index: PathIndex<T>,
    /// Routes under this host, paths or not: a route with no pattern that can match still
    /// keeps its host's table, as in a fresh build.
    routes: usize,
}

impl<T> Clone for Table<T> {
    /// O(1): the index is persistent, so the clone shares everything until it is changed.
    fn clone(&self) -> Self {
        Table {
            index: self.index.clone(),
            routes: self.routes,
        }
    }
}

impl<T> Table<T> {
    pub(super) fn empty() -> Self {
        Table {
            index: PathIndex::default(),
            routes: 0,
        }
    }

    pub(super) fn build(members: Vec<Arc<Member<T>>>) -> Self {
        let mut table = Table::empty();
        table.apply(&[], members);
        table
    }

    /// Takes out the routes of `gone` (by id) and puts in `new`, in one batch.
    pub(super) fn apply(&mut self, gone: &[Arc<Member<T>>], mut new: Vec<Arc<Member<T>>>) {
        new.sort_by(|a, b| precedence(a, b));
        self.index.apply(gone, &new);
        self.routes = self.routes.saturating_sub(gone.len()) + new.len();
    }

    pub(super) fn is_empty(&self) -> bool {
        self.routes == 0
    }

    pub(super) fn find<'a>(&'a self, req: &Request<'_>) -> Option<Found<'a, T>> {
        self.index.find(req.path, &mut |m| m.accepts(req))
    }
}

#[cfg(test)]
impl<T> Table<T> {
    /// The route count, then the index's census.
    pub(super) fn census(&self) -> Vec<usize> {
        let mut out = vec![self.routes];
        out.extend(self.index.census());
        out
    }
}
