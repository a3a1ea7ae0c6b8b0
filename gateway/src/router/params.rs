//! `:param` and `*catchall` patterns in a trie of path segments. At each segment a lookup
//! prefers the static child, then the parameter child, then a catch-all, and backtracks
//! when a branch ends without an accepted route; every trie node is visited at most once
//! per lookup, since the request fixes the segment found at each depth.
//!
//! Nodes are shared by `Arc` between snapshots, and a change to one pattern's routes
//! copies only the nodes from the root down to it. A node's static children are a short
//! list, or a persistent map once there are many (`/users/:name` siblings by the
//! thousand), so copying a node on that way costs O(log children), not O(children).
//!
//! The walk keeps its own stack, and changes and drops are loops, so a pattern or a path
//! of thousands of segments cannot overflow the thread's stack.
use super::candidates::{Candidate, Candidates};
use super::Member;
use model::path::Segment;
use std::sync::Arc;

/// Up to this many static children a linear scan beats hashing the segment.
const FEW: usize = 8;

/// A pattern's route, with which of its `uris` the pattern is: that one names the captures.
pub(super) struct Entry<T> {
    member: Arc<Member<T>>,
    pattern: u32,
}

impl<T> Entry<T> {
    pub(super) fn new(member: Arc<Member<T>>, pattern: u32) -> Entry<T> {
        Entry { member, pattern }
    }

    /// Capture names in pattern order; an unnamed `*` gives an empty name.
    fn names(&self) -> impl Iterator<Item = &str> {
        let segments = match self.member.paths.get(self.pattern as usize) {
            Some(model::path::PathPattern::Params(segments)) => &segments[..],
            _ => &[],
        };
        segments.iter().filter_map(|s| match s {
            Segment::Static(_) => None,
            Segment::Param(name) => Some(name.as_str()),
            Segment::CatchAll(name) => Some(name.as_deref().unwrap_or("")),
        })
    }
}

impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Entry {
            member: self.member.clone(),
            pattern: self.pattern,
        }
    }
}

impl<T> Candidate<T> for Entry<T> {
    fn member(&self) -> &Arc<Member<T>> {
        &self.member
    }
}

type Entries<T> = Candidates<Entry<T>>;

/// Where a pattern's routes sit: the way down (a static segment, or `None` for a
/// parameter) and whether they hang off the last node as a catch-all. Patterns that differ
/// only in capture names share a place.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct Place<'p> {
    steps: Vec<Option<&'p str>>,
    catch_all: bool,
}

impl<'p> Place<'p> {
    /// `None` for a pattern with a catch-all before its last segment: it can never match.
    pub(super) fn of(segments: &'p [Segment]) -> Option<Place<'p>> {
        let mut steps = Vec::with_capacity(segments.len());
        let mut catch_all = false;
        for segment in segments {
            if catch_all {
                return None;
            }
            match segment {
                Segment::Static(s) => steps.push(Some(s.as_str())),
                Segment::Param(_) => steps.push(None),
                Segment::CatchAll(_) => catch_all = true,
            }
        }
        Some(Place { steps, catch_all })
    }
}

pub(super) struct ParamTrie<T> {
    /// The node before the first segment; `None` when the trie holds nothing.
    root: Option<Arc<Node<T>>>,
}

impl<T> Default for ParamTrie<T> {
    fn default() -> Self {
        ParamTrie { root: None }
    }
}

impl<T> Clone for ParamTrie<T> {
    fn clone(&self) -> Self {
        ParamTrie {
            root: self.root.clone(),
        }
    }
}

/// Every node but the root has routes or children: an update that empties one removes it
/// (and any parents it leaves empty), so a trie shrinks back as patterns go.
struct Node<T> {
    statics: Statics<T>,
    param: Option<Arc<Node<T>>>,
    /// Patterns whose catch-all takes the rest of the path from this segment on.
    catch_all: Entries<T>,
    /// Patterns that end after this node's segment.
    end: Entries<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            statics: Statics::default(),
            param: None,
            catch_all: Candidates::None,
            end: Candidates::None,
        }
    }
}

impl<T> Clone for Node<T> {
    fn clone(&self) -> Self {
        Node {
            statics: self.statics.clone(),
            param: self.param.clone(),
            catch_all: self.catch_all.clone(),
            end: self.end.clone(),
        }
    }
}

impl<T> Node<T> {
    fn kids(&self) -> usize {
        self.statics.len() + usize::from(self.param.is_some())
    }

    fn child(&self, step: Option<&str>) -> Option<&Arc<Node<T>>> {
        match step {
            Some(segment) => self.statics.get(segment),
            None => self.param.as_ref(),
        }
    }

    fn child_mut(&mut self, step: Option<&str>) -> Option<&mut Arc<Node<T>>> {
        match step {
            Some(segment) => self.statics.get_mut(segment),
            None => self.param.as_mut(),
        }
    }

    fn child_or_new(&mut self, step: Option<&str>) -> Option<&mut Arc<Node<T>>> {
        match step {
            Some(segment) => self.statics.get_or_new(segment),
            None => Some(self.param.get_or_insert_with(Arc::default)),
        }
    }

    fn remove_child(&mut self, step: Option<&str>) {
        match step {
            Some(segment) => self.statics.remove(segment),
            None => self.param = None,
        }
    }

    fn list(&self, catch_all: bool) -> &Entries<T> {
        if catch_all {
            &self.catch_all
        } else {
            &self.end
        }
    }

    fn list_mut(&mut self, catch_all: bool) -> &mut Entries<T> {
        if catch_all {
            &mut self.catch_all
        } else {
            &mut self.end
        }
    }
}

impl<T> Drop for Node<T> {
    /// Unlinks the subtree this node owns alone with a loop: the derived drop would
    /// recurse once per level of a deep trie.
    fn drop(&mut self) {
        let mut stack = Vec::new();
        self.unlink_kids(&mut stack);
        while let Some(kid) = stack.pop() {
            if let Some(mut kid) = Arc::into_inner(kid) {
                kid.unlink_kids(&mut stack);
            }
        }
    }
}

impl<T> Node<T> {
    fn unlink_kids(&mut self, into: &mut Vec<Arc<Node<T>>>) {
        into.extend(self.param.take());
        match std::mem::take(&mut self.statics) {
            Statics::Few(list) => into.extend(list.into_vec().into_iter().map(|(_, n)| n)),
            Statics::Many(map) => into.extend((*map).into_iter().map(|(_, n)| n)),
        }
    }
}

type Static<T> = (Box<str>, Arc<Node<T>>);

enum Statics<T> {
    /// Boxed slice: most nodes have a child or two, and a lookup scans them.
    Few(Box<[Static<T>]>),
    /// Persistent, so copying a node with thousands of children for a change below it
    /// copies a few map nodes, not the thousands.
    Many(Box<super::FastMap<Box<str>, Arc<Node<T>>>>),
}

impl<T> Default for Statics<T> {
    fn default() -> Self {
        Statics::Few(Box::default())
    }
}

impl<T> Clone for Statics<T> {
    fn clone(&self) -> Self {
        match self {
            Statics::Few(list) => Statics::Few(list.clone()),
            Statics::Many(map) => Statics::Many(map.clone()),
        }
    }
}

impl<T> Statics<T> {
    fn get(&self, segment: &str) -> Option<&Arc<Node<T>>> {
        match self {
            Statics::Few(list) => list.iter().find(|(s, _)| &**s == segment).map(|(_, n)| n),
            Statics::Many(map) => map.get(segment),
        }
    }

    fn get_mut(&mut self, segment: &str) -> Option<&mut Arc<Node<T>>> {
        match self {
            Statics::Few(list) => list
                .iter_mut()
                .find(|(s, _)| &**s == segment)
                .map(|(_, n)| n),
            Statics::Many(map) => map.get_mut(segment),
        }
    }

    fn len(&self) -> usize {
        match self {
            Statics::Few(list) => list.len(),
            Statics::Many(map) => map.len(),
        }
    }

    /// `None` only if a `Few` list could not grow, which cannot happen.
    fn get_or_new(&mut self, segment: &str) -> Option<&mut Arc<Node<T>>> {
        if let Statics::Few(list) = self {
            if list.len() >= FEW && !list.iter().any(|(s, _)| &**s == segment) {
                let map = std::mem::take(list).into_vec().into_iter().collect();
                *self = Statics::Many(Box::new(map));
            }
        }
        match self {
            Statics::Few(list) => {
                if !list.iter().any(|(s, _)| &**s == segment) {
                    let mut grown = std::mem::take(list).into_vec();
                    grown.push((segment.into(), Arc::default()));
                    *list = grown.into_boxed_slice();
                }
                list.iter_mut()
                    .find(|(s, _)| &**s == segment)
                    .map(|(_, n)| n)
            }
            Statics::Many(map) => Some(map.entry(segment.into()).or_insert_with(Arc::default)),
        }
    }

    fn remove(&mut self, segment: &str) {
        match self {
            Statics::Few(list) => {
                let mut kept = std::mem::take(list).into_vec();
                kept.retain(|(s, _)| &**s != segment);
                *list = kept.into_boxed_slice();
            }
            Statics::Many(map) => {
                map.remove(segment);
                if map.len() <= FEW {
                    let list: Vec<_> = std::mem::take(&mut **map).into_iter().collect();
                    *self = Statics::Few(list.into_boxed_slice());
                }
            }
        }
    }
}

/// Where the walk stands: at `node`, facing the segment `start..end` of the path, or past
/// the last segment when `done`.
struct Frame<'a, T> {
    node: &'a Node<T>,
    start: usize,
    end: usize,
    done: bool,
    /// The alternative taken last here. Below the top of the stack it is the child being
    /// explored, so `Tried::Param` there means this segment is a capture.
    tried: Tried,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tried {
    Nothing,
    Static,
    Param,
    All,
}

/// A match: the route and its captures.
pub(super) type Found<'a, T> = (&'a Member<T>, Vec<(&'a str, String)>);

impl<T> ParamTrie<T> {
    pub(super) fn find<'a>(
        &'a self,
        path: &str,
        accept: &mut impl FnMut(&Member<T>) -> bool,
    ) -> Option<Found<'a, T>> {
        let root = self.root.as_deref()?;
        // Every pattern starts with `/`; a path that does not (`*`, an absolute URI) never
        // matches one.
        if !path.starts_with('/') {
            return None;
        }
        let first = frame_at(path, root, 1);
        // Most paths leave the trie at their first segment: find that out without a walk
        // (and without allocating its stack).
        let segment = path.get(first.start..first.end).unwrap_or("");
        if root.statics.get(segment).is_none()
            && (root.param.is_none() || segment.is_empty())
            && root.catch_all.is_empty()
        {
            return None;
        }
        let mut stack = Vec::with_capacity(8);
        stack.push(first);
        while let Some(top) = stack.last_mut() {
            let node = top.node;
            if top.done {
                top.tried = Tried::All;
                if let Some(found) = offer(&node.end, path, &stack, None, accept) {
                    return Some(found);
                }
                stack.pop();
                continue;
            }
            let (start, end) = (top.start, top.end);
            let segment = path.get(start..end).unwrap_or("");
            match top.tried {
                Tried::Nothing => {
                    top.tried = Tried::Static;
                    if let Some(kid) = node.statics.get(segment) {
                        stack.push(frame_at(path, kid, end + 1));
                    }
                }
                Tried::Static => {
                    top.tried = Tried::Param;
                    if let Some(kid) = node.param.as_deref().filter(|_| !segment.is_empty()) {
                        stack.push(frame_at(path, kid, end + 1));
                    }
                }
                Tried::Param => {
                    top.tried = Tried::All;
                    let rest = path.get(start..).unwrap_or("");
                    if let Some(found) = offer(&node.catch_all, path, &stack, Some(rest), accept) {
                        return Some(found);
                    }
                }
                Tried::All => {
                    stack.pop();
                }
            }
        }
        None
    }

    /// The routes at `place`.
    pub(super) fn get(&self, place: &Place<'_>) -> Option<&Entries<T>> {
        let mut node = self.root.as_deref()?;
        for &step in &place.steps {
            node = node.child(step)?;
        }
        Some(node.list(place.catch_all))
    }

    /// Gives `place` these routes; none removes it, and the nodes it leaves empty.
    pub(super) fn set(&mut self, place: &Place<'_>, entries: Entries<T>) {
        if entries.is_empty() {
            self.clear(place);
            return;
        }
        let mut node = Arc::make_mut(self.root.get_or_insert_with(Arc::default));
        for &step in &place.steps {
            let Some(kid) = node.child_or_new(step) else {
                return;
            };
            node = Arc::make_mut(kid);
        }
        *node.list_mut(place.catch_all) = entries;
    }

    fn clear(&mut self, place: &Place<'_>) {
        // Find the way first, so that a pattern that is not there copies nothing, and
        // where the nodes left empty begin: below the last node on the way that keeps
        // something else.
        let Some(mut node) = self.root.as_deref() else {
            return;
        };
        let mut keep = 0usize;
        for (depth, &step) in place.steps.iter().enumerate() {
            if node.kids() > 1 || !node.catch_all.is_empty() || !node.end.is_empty() {
                keep = depth;
            }
            let Some(kid) = node.child(step) else {
                return;
            };
            node = kid;
        }
        if node.list(place.catch_all).is_empty() {
            return;
        }
        let target_keeps = node.kids() > 0 || !node.list(!place.catch_all).is_empty();
        let Some(root) = self.root.as_mut() else {
            return;
        };
        let depth = place.steps.len();
        if target_keeps {
            let mut node = Arc::make_mut(root);
            for &step in &place.steps {
                let Some(kid) = node.child_mut(step) else {
                    return;
                };
                node = Arc::make_mut(kid);
            }
            *node.list_mut(place.catch_all) = Candidates::None;
            return;
        }
        // The target goes, with every parent up to (not including) the one at `keep`;
        // when even the root keeps nothing else, the whole trie goes.
        let root_keeps = root.kids() > 1 || !root.catch_all.is_empty() || !root.end.is_empty();
        if depth == 0 || (keep == 0 && !root_keeps) {
            self.root = None;
            return;
        }
        let mut node = Arc::make_mut(root);
        for &step in place.steps.iter().take(keep) {
            let Some(kid) = node.child_mut(step) else {
                return;
            };
            node = Arc::make_mut(kid);
        }
        if let Some(&step) = place.steps.get(keep) {
            node.remove_child(step);
        }
    }
}

/// Tries the routes of one pattern; on the first accepted one, collects its captures
/// from the segments the walk took through parameter children.
fn offer<'a, T>(
    entries: &'a Entries<T>,
    path: &str,
    stack: &[Frame<'a, T>],
    catch_all: Option<&str>,
    accept: &mut impl FnMut(&Member<T>) -> bool,
) -> Option<Found<'a, T>> {
    let entry = entries.as_slice().iter().find(|e| accept(&e.member))?;
    let values = stack
        .iter()
        .filter(|f| f.tried == Tried::Param && !f.done)
        .map(|f| path.get(f.start..f.end).unwrap_or(""))
        .chain(catch_all);
    let params = entry
        .names()
        .zip(values)
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, value)| (name, value.to_string()))
        .collect();
    Some((&*entry.member, params))
}

/// The frame for `node` facing the segment that starts at `start`, or past the end.
fn frame_at<'a, T>(path: &str, node: &'a Node<T>, start: usize) -> Frame<'a, T> {
    let done = start > path.len();
    let end = if done {
        start
    } else {
        path.get(start..)
            .and_then(|rest| rest.find('/'))
            .map_or(path.len(), |i| start + i)
    };
    Frame {
        node,
        start,
        end,
        done,
        tried: Tried::Nothing,
    }
}

#[cfg(test)]
impl<T> ParamTrie<T> {
    /// Nodes, nodes with a map of statics, and listed routes, checking the shape every
    /// update must keep: a test compares these with a fresh build's.
    pub(super) fn census(&self) -> [usize; 3] {
        let mut stack: Vec<&Node<T>> = self.root.as_deref().into_iter().collect();
        let [mut nodes, mut maps, mut routes] = [0, 0, 0];
        while let Some(node) = stack.pop() {
            nodes += 1;
            routes += node.end.as_slice().len() + node.catch_all.as_slice().len();
            assert!(node.kids() > 0 || !node.end.is_empty() || !node.catch_all.is_empty());
            match &node.statics {
                Statics::Few(list) => {
                    assert!(list.len() <= FEW);
                    stack.extend(list.iter().map(|(_, n)| &**n));
                }
                Statics::Many(map) => {
                    maps += 1;
                    assert!(map.len() > FEW);
                    stack.extend(map.values().map(|n| &**n));
                }
            }
            stack.extend(node.param.as_deref());
        }
        [nodes, maps, routes]
    }
}
