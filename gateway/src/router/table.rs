//! One host tier's routes: the members in precedence order and their path index.
use super::path::{Found, PathIndex, PathIndexBuilder};
use super::{Member, Request};
use std::cmp::Ordering;
use std::sync::Arc;

/// Route numbers are u32 to keep the indexes small; u32::MAX is reserved as "none".
const MAX_ROUTES: usize = (u32::MAX - 1) as usize;

pub(super) struct Table<T> {
    /// In precedence order: a smaller index wins among routes sharing a pattern. Kept
    /// whole so the table can be rebuilt with one route more or less.
    pub(super) members: Vec<Arc<Member<T>>>,
    index: PathIndex,
}

impl<T> Table<T> {
    pub(super) fn empty() -> Self {
        Table {
            members: Vec::new(),
            index: PathIndex::default(),
        }
    }

    pub(super) fn build(mut members: Vec<Arc<Member<T>>>) -> Self {
        members.truncate(MAX_ROUTES);
        members.sort_by(|a, b| precedence(a, b));
        let mut index = PathIndexBuilder::default();
        for (number, m) in (0u32..).zip(&members) {
            for p in m.paths.iter() {
                index.add(p, number);
            }
        }
        Table {
            members,
            index: index.finish(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub(super) fn find<'a>(&'a self, req: &Request<'_>) -> Option<(&'a Member<T>, Found<'a>)> {
        let mut accept = |n: u32| self.members.get(n as usize).is_some_and(|m| m.accepts(req));
        let found = self.index.find(req.path, &mut accept)?;
        Some((self.members.get(found.0 as usize)?, found))
    }
}

/// Higher priority, then earlier create_time, then the smaller id (`2` before `10`), then
/// the order the routes were given in.
fn precedence<T>(a: &Member<T>, b: &Member<T>) -> Ordering {
    b.priority
        .cmp(&a.priority)
        .then(a.create_time.cmp(&b.create_time))
        .then_with(|| match (a.numeric_id, b.numeric_id) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
        .then_with(|| a.id.as_str().cmp(b.id.as_str()))
        .then(a.seq.cmp(&b.seq))
}
