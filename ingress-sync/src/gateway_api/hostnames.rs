//! Listener hostname × route hostnames (pure).
//!
//! In the Gateway API a wildcard `*.example.com` covers any number of labels
//! (`a.example.com`, `a.b.example.com`) but not `example.com` itself; this is the
//! gateway's own wildcard rule, so no extra `vars` condition is needed (unlike Ingress).
use std::collections::BTreeSet;

/// Which hosts a route serves: every host, or a set of names and wildcards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hosts {
    Any,
    Names(BTreeSet<String>),
}

impl Hosts {
    /// The union: `Any` absorbs everything.
    pub fn union(&mut self, other: Hosts) {
        match (&mut *self, other) {
            (Hosts::Any, _) => {}
            (_, Hosts::Any) => *self = Hosts::Any,
            (Hosts::Names(a), Hosts::Names(b)) => a.extend(b),
        }
    }
}

/// Does the pattern `pattern` (a name or `*.suffix`) cover the name `name`?
fn covers(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix('*') {
        // `*.example.com` keeps the dot: `name` must have at least one more label.
        Some(suffix) => name.len() > suffix.len() && name.ends_with(suffix),
        None => pattern == name,
    }
}

/// The hostnames a route attached to a listener serves: the intersection of the
/// listener's `hostname` and the route's `hostnames`, each the more specific of a
/// matching pair. `None` when they do not intersect (the route is not accepted there).
pub fn intersect(listener: Option<&str>, route: &[String]) -> Option<Hosts> {
    let listener = listener
        .filter(|l| !l.is_empty())
        .map(str::to_ascii_lowercase);
    let route: Vec<String> = route.iter().map(|r| r.to_ascii_lowercase()).collect();
    if route.is_empty() {
        return Some(match listener {
            Some(l) => Hosts::Names([l].into()),
            None => Hosts::Any,
        });
    }
    let Some(l) = listener else {
        return Some(Hosts::Names(route.into_iter().collect()));
    };
    let names: BTreeSet<String> = route
        .iter()
        .filter_map(|r| {
            if covers(&l, r) || l == *r {
                Some(r.clone())
            } else if covers(r, &l) {
                Some(l.clone())
            } else {
                None
            }
        })
        .collect();
    (!names.is_empty()).then_some(Hosts::Names(names))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Option<Hosts> {
        Some(Hosts::Names(list.iter().map(|s| s.to_string()).collect()))
    }

    #[test]
    fn intersection_table() {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let table: &[(Option<&str>, Vec<String>, Option<Hosts>)] = &[
            (None, v(&[]), Some(Hosts::Any)),
            (Some("foo.com"), v(&[]), names(&["foo.com"])),
            (None, v(&["a.com", "*.b.com"]), names(&["a.com", "*.b.com"])),
            (
                Some("foo.com"),
                v(&["foo.com", "bar.com"]),
                names(&["foo.com"]),
            ),
            (Some("foo.com"), v(&["bar.com"]), None),
            // A wildcard listener admits names under it, at any depth.
            (
                Some("*.example.com"),
                v(&["a.example.com", "b.c.example.com", "example.com"]),
                names(&["a.example.com", "b.c.example.com"]),
            ),
            // A route wildcard narrowed by an exact listener name.
            (
                Some("a.example.com"),
                v(&["*.example.com"]),
                names(&["a.example.com"]),
            ),
            // Two wildcards: the narrower one.
            (
                Some("*.example.com"),
                v(&["*.a.example.com"]),
                names(&["*.a.example.com"]),
            ),
            (
                Some("*.a.example.com"),
                v(&["*.example.com"]),
                names(&["*.a.example.com"]),
            ),
            (Some("*.example.com"), v(&["*.example.org"]), None),
            // Case does not matter.
            (Some("Foo.COM"), v(&["FOO.com"]), names(&["foo.com"])),
        ];
        for (l, r, want) in table {
            assert_eq!(&intersect(*l, r), want, "listener {l:?} × route {r:?}");
        }
    }

    #[test]
    fn union_absorbs_into_any() {
        let mut h = names(&["a.com"]).unwrap();
        h.union(names(&["b.com"]).unwrap());
        assert_eq!(Some(h.clone()), names(&["a.com", "b.com"]));
        h.union(Hosts::Any);
        assert_eq!(h, Hosts::Any);
    }
}
