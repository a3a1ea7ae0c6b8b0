//! Byte-wise prefixes (`/a*` matches `/a`, `/ab`, `/a/b`) in a radix tree with compressed
//! edges: a lookup walks the request path once and then tries the prefixes it passed,
//! longest first, so its cost follows the path length, not the number of prefixes.
//!
//! Nodes live in one arena and refer to each other by index, so neither building, walking
//! nor dropping a tree recurses, however long or nested the prefixes are.
use super::Span;

/// "No node": the arena never holds this many nodes (that would take hundreds of GB).
const NONE: u32 = u32::MAX;

#[derive(Default)]
pub(super) struct PrefixTree {
    /// Node 0 is the root, with an empty label.
    nodes: Vec<Node>,
}

struct Node {
    /// The bytes on the edge from the parent; non-empty except at the root.
    label: Box<[u8]>,
    /// Sorted by the first byte of each child's label, which is unique among siblings.
    kids: Vec<(u8, u32)>,
    /// The routes whose prefix ends exactly here; empty for pure branching nodes.
    routes: Span,
    /// The nearest strict ancestor with routes: the next shorter prefix to try.
    shorter: u32,
}

impl Node {
    fn new(label: &[u8]) -> Node {
        Node {
            label: label.into(),
            kids: Vec::new(),
            routes: Span::default(),
            shorter: NONE,
        }
    }
}

impl PrefixTree {
    pub(super) fn build(prefixes: Vec<(Box<[u8]>, Span)>) -> PrefixTree {
        if prefixes.is_empty() {
            return PrefixTree::default();
        }
        let mut tree = PrefixTree {
            nodes: vec![Node::new(&[])],
        };
        for (key, span) in prefixes {
            let at = tree.insert(&key);
            if let Some(node) = tree.nodes.get_mut(at) {
                node.routes = span;
            }
        }
        tree.link_shorter();
        for node in &mut tree.nodes {
            node.kids.shrink_to_fit();
        }
        tree.nodes.shrink_to_fit();
        tree
    }

    /// Returns the node where `key` ends, splitting an edge if it ends inside one.
    fn insert(&mut self, key: &[u8]) -> usize {
        let mut node = 0;
        let mut rest = key;
        loop {
            let Some(&byte) = rest.first() else {
                return node;
            };
            match self.nodes[node].kids.binary_search_by_key(&byte, |k| k.0) {
                Err(slot) => {
                    let child = self.push(Node::new(rest));
                    self.nodes[node].kids.insert(slot, (byte, child as u32));
                    return child;
                }
                Ok(slot) => {
                    let child = self.nodes[node].kids[slot].1 as usize;
                    let label = &self.nodes[child].label;
                    let common = label.iter().zip(rest).take_while(|(a, b)| a == b).count();
                    if common < label.len() {
                        // `rest` leaves or ends inside this edge: split it so that a node
                        // sits where they part.
                        let head: Box<[u8]> = label[..common].into();
                        let tail: Box<[u8]> = label[common..].into();
                        let mid = self.push(Node {
                            label: head,
                            kids: vec![(tail[0], child as u32)],
                            routes: Span::default(),
                            shorter: NONE,
                        });
                        self.nodes[child].label = tail;
                        self.nodes[node].kids[slot].1 = mid as u32;
                        node = mid;
                    } else {
                        node = child;
                    }
                    rest = &rest[common..];
                }
            }
        }
    }

    fn push(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Fills `shorter` top-down with an explicit stack (no recursion on deep trees).
    fn link_shorter(&mut self) {
        let mut stack = vec![(0usize, NONE)];
        while let Some((at, above)) = stack.pop() {
            let Some(node) = self.nodes.get_mut(at) else {
                continue;
            };
            node.shorter = above;
            let below = if node.routes.is_empty() {
                above
            } else {
                at as u32
            };
            stack.extend(node.kids.iter().map(|&(_, kid)| (kid as usize, below)));
        }
    }

    /// Offers the routes of every prefix of `path` to `visit`, longest prefix first, until
    /// `visit` returns something.
    pub(super) fn find<R>(
        &self,
        path: &[u8],
        mut visit: impl FnMut(Span) -> Option<R>,
    ) -> Option<R> {
        let mut at = 0u32;
        let mut pos = 0usize;
        let mut longest = NONE;
        while let Some(node) = self.nodes.get(at as usize) {
            if !node.routes.is_empty() {
                longest = at;
            }
            let Some(&byte) = path.get(pos) else {
                break;
            };
            let Some(kid) = child(&node.kids, byte) else {
                break;
            };
            let Some(label) = self.nodes.get(kid as usize).map(|k| &k.label) else {
                break;
            };
            let Some(rest) = path.get(pos..pos + label.len()) else {
                break;
            };
            // The first byte chose the child; labels are mostly a few bytes, where a plain
            // loop beats a call to memcmp.
            if rest.iter().zip(label.iter()).skip(1).any(|(a, b)| a != b) {
                break;
            }
            pos += label.len();
            at = kid;
        }
        let mut next = longest;
        while let Some(node) = self.nodes.get(next as usize) {
            if let Some(found) = visit(node.routes) {
                return Some(found);
            }
            next = node.shorter;
        }
        None
    }
}

/// The child whose label starts with `byte`. Up to 16 children (a digit or letter fan-out)
/// a scan measured quicker than a binary search; wider nodes are rare.
fn child(kids: &[(u8, u32)], byte: u8) -> Option<u32> {
    if kids.len() <= 16 {
        kids.iter().find(|k| k.0 == byte).map(|k| k.1)
    } else {
        kids.binary_search_by_key(&byte, |k| k.0)
            .ok()
            .and_then(|i| kids.get(i))
            .map(|k| k.1)
    }
}
