//! `:param` and `*catchall` patterns in a trie of path segments. At each segment a lookup
//! prefers the static child, then the parameter child, then a catch-all, and backtracks
//! when a branch ends without an accepted route; every trie node is visited at most once
//! per lookup, since the request fixes the segment found at each depth.
//!
//! The walk keeps its own stack, so a path of thousands of segments cannot overflow the
//! thread's stack.
use super::path::Found;
use super::Span;
use model::path::Segment;
use std::collections::HashMap;

const NONE: u32 = u32::MAX;
/// Up to this many static children a linear scan beats hashing the segment.
const FEW: usize = 8;

#[derive(Default)]
pub(super) struct ParamTrie {
    /// Node 0 is the root, before the first segment.
    nodes: Vec<Node>,
    entries: Vec<Entry>,
    /// Capture names per distinct pattern spelling, shared by the routes that use it.
    names: Vec<Box<[Box<str>]>>,
}

struct Node {
    statics: Statics,
    param: u32,
    /// Patterns whose catch-all takes the rest of the path from this segment on.
    catch_all: Span,
    /// Patterns that end after this node's segment.
    end: Span,
}

/// Boxed map: most nodes have few static children, and an inline map would make every
/// node twice as large.
enum Statics {
    Few(Box<[(Box<str>, u32)]>),
    #[expect(
        clippy::box_collection,
        reason = "the box keeps the common `Few` nodes small"
    )]
    Many(Box<HashMap<Box<str>, u32>>),
}

impl Statics {
    fn get(&self, segment: &str) -> Option<u32> {
        match self {
            Statics::Few(list) => list.iter().find(|(s, _)| &**s == segment).map(|(_, n)| *n),
            Statics::Many(map) => map.get(segment).copied(),
        }
    }
}

#[derive(Clone, Copy)]
struct Entry {
    route: u32,
    /// Index into `names`; an empty name (an unnamed `*`) captures nothing.
    names: u32,
}

/// Where the walk stands: at `node`, facing the segment `start..end` of the path, or past
/// the last segment when `done`.
struct Frame {
    node: u32,
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

impl ParamTrie {
    pub(super) fn find<'a>(
        &'a self,
        path: &str,
        accept: &mut impl FnMut(u32) -> bool,
    ) -> Option<Found<'a>> {
        let root = self.nodes.first()?;
        // Every pattern starts with `/`; a path that does not (`*`, an absolute URI) never
        // matches one.
        if !path.starts_with('/') {
            return None;
        }
        let first = frame_at(path, 0, 1);
        // Most paths leave the trie at their first segment: find that out without a walk
        // (and without allocating its stack).
        let segment = path.get(first.start..first.end).unwrap_or("");
        if root.statics.get(segment).is_none()
            && (root.param == NONE || segment.is_empty())
            && root.catch_all.is_empty()
        {
            return None;
        }
        let mut stack = Vec::with_capacity(8);
        stack.push(first);
        while let Some(top) = stack.last_mut() {
            let Some(node) = self.nodes.get(top.node as usize) else {
                stack.pop();
                continue;
            };
            if top.done {
                top.tried = Tried::All;
                let end = node.end;
                if let Some(found) = self.offer(end, path, &stack, None, accept) {
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
                    if node.param != NONE && !segment.is_empty() {
                        stack.push(frame_at(path, node.param, end + 1));
                    }
                }
                Tried::Param => {
                    top.tried = Tried::All;
                    let catch_all = node.catch_all;
                    let rest = path.get(start..).unwrap_or("");
                    if let Some(found) = self.offer(catch_all, path, &stack, Some(rest), accept) {
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

    /// Tries the routes of one pattern; on the first accepted one, collects its captures
    /// from the segments the walk took through parameter children.
    fn offer<'a>(
        &'a self,
        span: Span,
        path: &str,
        stack: &[Frame],
        catch_all: Option<&str>,
        accept: &mut impl FnMut(u32) -> bool,
    ) -> Option<Found<'a>> {
        let entry = span.of(&self.entries).iter().find(|e| accept(e.route))?;
        let names = self
            .names
            .get(entry.names as usize)
            .map_or(&[][..], |n| &n[..]);
        let values = stack
            .iter()
            .filter(|f| f.tried == Tried::Param && !f.done)
            .map(|f| path.get(f.start..f.end).unwrap_or(""))
            .chain(catch_all);
        let params = names
            .iter()
            .zip(values)
            .filter(|(name, _)| !name.is_empty())
            .map(|(name, value)| (&**name, value.to_string()))
            .collect();
        Some((entry.route, params))
    }
}

/// The frame for `node` facing the segment that starts at `start`, or past the end.
fn frame_at(path: &str, node: u32, start: usize) -> Frame {
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

#[derive(Default)]
pub(super) struct ParamTrieBuilder {
    nodes: Vec<BuildNode>,
    names: HashMap<Box<[Box<str>]>, u32>,
}

#[derive(Default)]
struct BuildNode {
    statics: HashMap<Box<str>, u32>,
    param: Option<u32>,
    catch_all: Vec<Entry>,
    end: Vec<Entry>,
}

impl ParamTrieBuilder {
    /// Indexes one pattern of route `number`; routes must come in precedence order.
    /// A pattern with a catch-all before its last segment can never match and is skipped.
    pub(super) fn add(&mut self, segments: &[Segment], number: u32) {
        if let Some(i) = segments
            .iter()
            .position(|s| matches!(s, Segment::CatchAll(_)))
        {
            if i + 1 != segments.len() {
                return;
            }
        }
        if self.nodes.is_empty() {
            self.nodes.push(BuildNode::default());
        }
        let mut at = 0usize;
        let mut names: Vec<Box<str>> = Vec::new();
        let mut catch_all = false;
        for segment in segments {
            match segment {
                Segment::Static(s) => {
                    let next = self.nodes.len() as u32;
                    let kid = *self.nodes[at]
                        .statics
                        .entry(s.as_str().into())
                        .or_insert(next);
                    if kid == next {
                        self.nodes.push(BuildNode::default());
                    }
                    at = kid as usize;
                }
                Segment::Param(name) => {
                    names.push(name.as_str().into());
                    at = match self.nodes[at].param {
                        Some(kid) => kid as usize,
                        None => {
                            let kid = self.nodes.len();
                            self.nodes[at].param = Some(kid as u32);
                            self.nodes.push(BuildNode::default());
                            kid
                        }
                    };
                }
                Segment::CatchAll(name) => {
                    names.push(name.as_deref().unwrap_or("").into());
                    catch_all = true;
                }
            }
        }
        let next_names = self.names.len() as u32;
        let names = *self
            .names
            .entry(names.into_boxed_slice())
            .or_insert(next_names);
        let node = &mut self.nodes[at];
        let list = if catch_all {
            &mut node.catch_all
        } else {
            &mut node.end
        };
        // A route listing the same pattern twice (even with other names) is indexed once.
        if list.last().map(|e| e.route) != Some(number) {
            list.push(Entry {
                route: number,
                names,
            });
        }
    }

    pub(super) fn finish(self) -> ParamTrie {
        let mut entries = Vec::new();
        let nodes = self
            .nodes
            .into_iter()
            .map(|b| Node {
                statics: if b.statics.len() <= FEW {
                    Statics::Few(b.statics.into_iter().collect())
                } else {
                    let mut map = b.statics;
                    map.shrink_to_fit();
                    Statics::Many(Box::new(map))
                },
                param: b.param.unwrap_or(NONE),
                catch_all: Span::push(&mut entries, &b.catch_all),
                end: Span::push(&mut entries, &b.end),
            })
            .collect();
        let mut names: Vec<(u32, Box<[Box<str>]>)> =
            self.names.into_iter().map(|(n, i)| (i, n)).collect();
        names.sort_unstable_by_key(|(i, _)| *i);
        entries.shrink_to_fit();
        ParamTrie {
            nodes,
            entries,
            names: names.into_iter().map(|(_, n)| n).collect(),
        }
    }
}
