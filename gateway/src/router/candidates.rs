//! The routes of one pattern in one host tier, best first: the unit an update edits.
//!
//! A list is immutable and shared by `Arc`, so a snapshot that did not touch a pattern
//! shares its list with the previous one; an update remakes only the lists of the
//! patterns its routes have or had, each once, in O(its length) (`path.rs`).
use super::Member;
use std::cmp::Ordering;
use std::sync::Arc;

/// Most patterns have one route: that one is kept inline, so it costs no allocation and a
/// lookup follows one pointer less.
#[derive(Clone, Default)]
pub(super) enum Candidates<E> {
    #[default]
    None,
    One(E),
    Many(Arc<[E]>),
}

/// What a list holds: a route, alone or with what the pattern needs besides it.
pub(super) trait Candidate<T> {
    fn member(&self) -> &Arc<Member<T>>;
}

impl<T> Candidate<T> for Arc<Member<T>> {
    fn member(&self) -> &Arc<Member<T>> {
        self
    }
}

impl<E> Candidates<E> {
    pub(super) fn as_slice(&self) -> &[E] {
        match self {
            Candidates::None => &[],
            Candidates::One(e) => std::slice::from_ref(e),
            Candidates::Many(list) => list,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        matches!(self, Candidates::None)
    }

    /// `list` must already be in precedence order, without a route twice.
    pub(super) fn from_vec(mut list: Vec<E>) -> Self {
        match list.len() {
            0 => Candidates::None,
            1 => list.pop().map_or(Candidates::None, Candidates::One),
            _ => Candidates::Many(list.into()),
        }
    }
}

/// Higher priority, then earlier create_time, then the smaller id (`2` before `10`), then
/// the order the routes were given in.
pub(super) fn precedence<T>(a: &Member<T>, b: &Member<T>) -> Ordering {
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
