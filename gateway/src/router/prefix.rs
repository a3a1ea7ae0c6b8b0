//! Byte-wise prefixes (`/a*` matches `/a`, `/ab`, `/a/b`) in a radix tree with compressed
//! edges: a lookup walks the request path once and then tries the prefixes it passed,
//! longest first, so its cost follows the path length, not the number of prefixes.
//!
//! Nodes are shared by `Arc` between snapshots. Changing one prefix's routes copies only
//! the nodes from the root down to it (at most one per edge of that prefix, each with at
//! most 256 children), so a change costs the same in a tree of ten prefixes or of 100k.
//! Walking, changing and dropping a tree are loops, never recursion, so neither a long
//! nor a deeply nested prefix can overflow the stack.
use super::candidates::Candidates;
use super::Member;
use std::sync::Arc;

type Routes<T> = Candidates<Arc<Member<T>>>;

pub(super) struct PrefixTree<T> {
    /// The node of the empty prefix; `None` when the tree holds nothing.
    root: Option<Arc<Node<T>>>,
}

impl<T> Default for PrefixTree<T> {
    fn default() -> Self {
        PrefixTree { root: None }
    }
}

impl<T> Clone for PrefixTree<T> {
    fn clone(&self) -> Self {
        PrefixTree {
            root: self.root.clone(),
        }
    }
}

/// Every node but the root has routes or at least two children: an update that would
/// leave one otherwise merges or removes it, so a tree shrinks back as prefixes go.
struct Node<T> {
    /// The bytes on the edge from the parent; non-empty except at the root.
    label: Box<[u8]>,
    /// Sorted by the first byte of each child's label, which is unique among siblings.
    kids: Vec<(u8, Arc<Node<T>>)>,
    /// The routes whose prefix ends exactly here; empty for pure branching nodes.
    routes: Routes<T>,
}

impl<T> Node<T> {
    fn new(label: &[u8]) -> Node<T> {
        Node {
            label: label.into(),
            kids: Vec::new(),
            routes: Candidates::None,
        }
    }

    /// The child whose label starts with `byte`. Up to 16 children (a digit or letter
    /// fan-out) a scan measured quicker than a binary search; wider nodes are rare.
    fn child(&self, byte: u8) -> Option<&Node<T>> {
        let kid = if self.kids.len() <= 16 {
            self.kids.iter().find(|k| k.0 == byte)
        } else {
            self.kids
                .binary_search_by_key(&byte, |k| k.0)
                .ok()
                .and_then(|i| self.kids.get(i))
        };
        kid.map(|k| &*k.1)
    }

    fn slot(&self, byte: u8) -> Result<usize, usize> {
        self.kids.binary_search_by_key(&byte, |k| k.0)
    }

    /// Takes over the only child: this node's label grows by the child's and its routes
    /// and children become this node's. For a node left with neither routes nor a branch.
    fn absorb_only_child(&mut self) {
        if self.kids.len() != 1 {
            return;
        }
        let Some((_, kid)) = self.kids.pop() else {
            return;
        };
        let mut kid = Arc::unwrap_or_clone(kid);
        let mut label = std::mem::take(&mut self.label).into_vec();
        label.extend_from_slice(&kid.label);
        self.label = label.into_boxed_slice();
        self.kids = std::mem::take(&mut kid.kids);
        self.routes = std::mem::take(&mut kid.routes);
    }
}

impl<T> Clone for Node<T> {
    fn clone(&self) -> Self {
        Node {
            label: self.label.clone(),
            kids: self.kids.clone(),
            routes: self.routes.clone(),
        }
    }
}

impl<T> Drop for Node<T> {
    /// Unlinks the subtree this node owns alone with a loop: the derived drop would
    /// recurse once per level of a deep tree.
    fn drop(&mut self) {
        let mut stack = std::mem::take(&mut self.kids);
        while let Some((_, kid)) = stack.pop() {
            if let Some(mut kid) = Arc::into_inner(kid) {
                stack.append(&mut kid.kids);
            }
        }
    }
}

impl<T> PrefixTree<T> {
    /// The routes of exactly the prefix `key`.
    pub(super) fn get(&self, key: &[u8]) -> Option<&Routes<T>> {
        let mut node = self.root.as_deref()?;
        let mut rest = key;
        while let Some(&byte) = rest.first() {
            let kid = node.child(byte)?;
            rest = rest.strip_prefix(&kid.label[..])?;
            node = kid;
        }
        Some(&node.routes)
    }

    /// Gives the prefix `key` these routes; none removes it.
    pub(super) fn set(&mut self, key: &[u8], routes: Routes<T>) {
        if routes.is_empty() {
            self.clear(key);
        } else {
            self.insert(key, routes);
        }
    }

    fn insert(&mut self, key: &[u8], routes: Routes<T>) {
        let root = self.root.get_or_insert_with(|| Arc::new(Node::new(&[])));
        let mut node = Arc::make_mut(root);
        let mut rest = key;
        while let Some(&byte) = rest.first() {
            let slot = match node.slot(byte) {
                Ok(slot) => slot,
                Err(slot) => {
                    node.kids.insert(slot, (byte, Arc::new(Node::new(rest))));
                    slot
                }
            };
            let Some((_, kid)) = node.kids.get_mut(slot) else {
                return;
            };
            let common = kid
                .label
                .iter()
                .zip(rest)
                .take_while(|(a, b)| a == b)
                .count();
            if common < kid.label.len() {
                // `rest` leaves or ends inside this edge: split it so that a node sits
                // where they part.
                let head = kid.label.get(..common).unwrap_or_default();
                let mut lower = std::mem::replace(kid, Arc::new(Node::new(head)));
                let moved = Arc::make_mut(&mut lower);
                moved.label = moved.label.get(common..).unwrap_or_default().into();
                let first = moved.label.first().copied().unwrap_or_default();
                Arc::make_mut(kid).kids.push((first, lower));
            }
            node = Arc::make_mut(kid);
            rest = rest.get(common..).unwrap_or_default();
        }
        node.routes = routes;
    }

    fn clear(&mut self, key: &[u8]) {
        // Find the way first, so that a prefix that is not there copies nothing.
        let Some(mut node) = self.root.as_deref() else {
            return;
        };
        let mut slots = Vec::new();
        let mut rest = key;
        while let Some(&byte) = rest.first() {
            let Some(slot) = node.slot(byte).ok() else {
                return;
            };
            let Some((_, kid)) = node.kids.get(slot) else {
                return;
            };
            let Some(after) = rest.strip_prefix(&kid.label[..]) else {
                return;
            };
            slots.push(slot);
            rest = after;
            node = kid;
        }
        let Some(root) = self.root.as_mut() else {
            return;
        };
        let Some((&last, above)) = slots.split_last() else {
            // The empty prefix lives at the root, which has no edge to merge.
            let root = Arc::make_mut(root);
            root.routes = Candidates::None;
            if root.kids.is_empty() {
                self.root = None;
            }
            return;
        };
        let mut parent = Arc::make_mut(root);
        for &slot in above {
            let Some((_, kid)) = parent.kids.get_mut(slot) else {
                return;
            };
            parent = Arc::make_mut(kid);
        }
        let Some((_, target)) = parent.kids.get_mut(last) else {
            return;
        };
        let target = Arc::make_mut(target);
        target.routes = Candidates::None;
        match target.kids.len() {
            0 => {
                parent.kids.remove(last);
                let parent_is_root = above.is_empty();
                if !parent_is_root && parent.routes.is_empty() {
                    parent.absorb_only_child();
                }
            }
            1 => target.absorb_only_child(),
            _ => {}
        }
        if self
            .root
            .as_ref()
            .is_some_and(|r| r.kids.is_empty() && r.routes.is_empty())
        {
            self.root = None;
        }
    }

    /// Offers the routes of every prefix of `path` to `visit`, longest prefix first, until
    /// `visit` returns something.
    pub(super) fn find<'a, R>(
        &'a self,
        path: &[u8],
        mut visit: impl FnMut(&'a [Arc<Member<T>>]) -> Option<R>,
    ) -> Option<R> {
        let root = self.root.as_deref()?;
        let mut longest = None;
        let mut passed = 0usize;
        walk(root, path, |node| {
            longest = Some(node);
            passed += 1;
        });
        if let Some(found) = visit(longest?.routes.as_slice()) {
            return Some(found);
        }
        if passed < 2 {
            return None;
        }
        // Nodes do not point up (a shared node has a parent in each snapshot), so the
        // shorter prefixes take a second walk: only when every route of the longest one
        // refused, which keeps the common lookup free of any list.
        let mut shorter = Vec::with_capacity(passed);
        walk(root, path, |node| shorter.push(node));
        shorter.pop();
        shorter
            .into_iter()
            .rev()
            .find_map(|node| visit(node.routes.as_slice()))
    }
}

/// Walks down `path` from `root` as far as it matches, calling `on_routes` on each node
/// with routes, shortest prefix first.
fn walk<'a, T>(root: &'a Node<T>, path: &[u8], mut on_routes: impl FnMut(&'a Node<T>)) {
    let mut node = root;
    let mut pos = 0usize;
    loop {
        if !node.routes.is_empty() {
            on_routes(node);
        }
        let Some(&byte) = path.get(pos) else {
            return;
        };
        let Some(kid) = node.child(byte) else {
            return;
        };
        let label = &kid.label;
        let Some(rest) = path.get(pos..pos + label.len()) else {
            return;
        };
        // The first byte chose the child; labels are mostly a few bytes, where a plain
        // loop beats a call to memcmp.
        if rest.iter().zip(label.iter()).skip(1).any(|(a, b)| a != b) {
            return;
        }
        pos += label.len();
        node = kid;
    }
}

#[cfg(test)]
impl<T> PrefixTree<T> {
    /// Nodes and listed routes, checking the shape every update must keep: a test compares
    /// these with a fresh build's to see that the tree shrank back.
    pub(super) fn census(&self) -> [usize; 2] {
        let mut stack: Vec<(&Node<T>, bool)> = self
            .root
            .as_deref()
            .map(|r| (r, true))
            .into_iter()
            .collect();
        let [mut nodes, mut routes] = [0, 0];
        while let Some((node, is_root)) = stack.pop() {
            nodes += 1;
            routes += node.routes.as_slice().len();
            assert!(is_root || !node.routes.is_empty() || node.kids.len() >= 2);
            assert_eq!(is_root, node.label.is_empty());
            let firsts: Vec<u8> = node.kids.iter().map(|k| k.0).collect();
            assert!(firsts.windows(2).all(|w| w[0] < w[1]));
            assert!(node.kids.iter().all(|(b, k)| k.label.first() == Some(b)));
            stack.extend(node.kids.iter().map(|(_, k)| (&**k, false)));
        }
        assert!(self.root.is_none() || nodes > 1 || routes > 0);
        [nodes, routes]
    }
}
