//! Route path patterns: exact, `*` prefix, and `:param` / `*name` segment patterns.
use serde::Deserialize;

/// One segment of a parameter pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    Static(String),
    /// `:name` — one whole non-empty segment.
    Param(String),
    /// `*name` or a bare `*` at the end — the rest of the path, possibly empty.
    CatchAll(Option<String>),
}

/// A validated `uri` of a route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathPattern {
    /// `/a/b`: this path only.
    Exact(String),
    /// `/a*`: any path starting with `/a`, byte-wise (`/a`, `/ab`, `/a/b`).
    Prefix(String),
    /// `/users/:id/*rest`: matched segment by segment.
    Params(Vec<Segment>),
}

const MAX_LEN: usize = 4096;

impl PathPattern {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if !raw.starts_with('/') {
            return Err(format!("uri {raw:?} must start with \"/\""));
        }
        if raw.len() > MAX_LEN {
            return Err(format!("uri is longer than {MAX_LEN} bytes"));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "uri {raw:?} contains whitespace or control characters"
            ));
        }
        let parts: Vec<&str> = raw[1..].split('/').collect();
        let has_params = parts
            .iter()
            .any(|p| p.starts_with(':') || (p.starts_with('*') && p.len() > 1));
        if !has_params {
            return match raw.find('*') {
                None => Ok(PathPattern::Exact(raw.to_string())),
                Some(i) if i == raw.len() - 1 => Ok(PathPattern::Prefix(raw[..i].to_string())),
                Some(_) => Err(format!("uri {raw:?}: \"*\" is only allowed at the end")),
            };
        }
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let last = i == parts.len() - 1;
            if let Some(name) = part.strip_prefix(':') {
                check_param(raw, name)?;
                segments.push(Segment::Param(name.to_string()));
            } else if let Some(name) = part.strip_prefix('*') {
                if !last {
                    return Err(format!(
                        "uri {raw:?}: a catch-all \"*{name}\" must be the last segment"
                    ));
                }
                if name.is_empty() {
                    segments.push(Segment::CatchAll(None));
                } else {
                    check_param(raw, name)?;
                    segments.push(Segment::CatchAll(Some(name.to_string())));
                }
            } else if part.contains('*') {
                return Err(format!(
                    "uri {raw:?}: \"*\" may only start the last segment"
                ));
            } else {
                segments.push(Segment::Static(part.to_string()));
            }
        }
        Ok(PathPattern::Params(segments))
    }
}

impl PathPattern {
    /// Whether `path` (without its query) is one this pattern matches, as the router
    /// decides it; for labels that name the pattern a request matched (metrics), not for
    /// routing itself.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(p) => p == path,
            PathPattern::Prefix(p) => path.starts_with(p.as_str()),
            PathPattern::Params(segments) => {
                let Some(rest) = path.strip_prefix('/') else {
                    return false;
                };
                let mut parts = rest.split('/');
                for seg in segments {
                    match seg {
                        Segment::CatchAll(_) => return true,
                        Segment::Static(s) => {
                            if parts.next() != Some(s.as_str()) {
                                return false;
                            }
                        }
                        Segment::Param(_) => {
                            if parts.next().is_none_or(str::is_empty) {
                                return false;
                            }
                        }
                    }
                }
                parts.next().is_none()
            }
        }
    }
}

/// The pattern as it was written (`/a*`, `/u/:id`).
impl std::fmt::Display for PathPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathPattern::Exact(p) => f.write_str(p),
            PathPattern::Prefix(p) => write!(f, "{p}*"),
            PathPattern::Params(segments) => {
                for seg in segments {
                    match seg {
                        Segment::Static(s) => write!(f, "/{s}")?,
                        Segment::Param(n) => write!(f, "/:{n}")?,
                        Segment::CatchAll(None) => f.write_str("/*")?,
                        Segment::CatchAll(Some(n)) => write!(f, "/*{n}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

fn check_param(raw: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "uri {raw:?}: parameter name {name:?} must be letters, digits or '_'"
        ));
    }
    Ok(())
}

impl<'de> Deserialize<'de> for PathPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PathPattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PathPattern::*;
    use Segment::*;

    #[test]
    fn parse_table() {
        let s = |x: &str| Static(x.to_string());
        let table: Vec<(&str, Result<PathPattern, ()>)> = vec![
            ("/", Ok(Exact("/".into()))),
            ("/a/b", Ok(Exact("/a/b".into()))),
            ("/a*", Ok(Prefix("/a".into()))),
            ("/*", Ok(Prefix("/".into()))),
            ("/a/*", Ok(Prefix("/a/".into()))),
            ("/u/:id", Ok(Params(vec![s("u"), Param("id".into())]))),
            (
                "/u/:id/x",
                Ok(Params(vec![s("u"), Param("id".into()), s("x")])),
            ),
            (
                "/f/*rest",
                Ok(Params(vec![s("f"), CatchAll(Some("rest".into()))])),
            ),
            (
                "/u/:id/*",
                Ok(Params(vec![s("u"), Param("id".into()), CatchAll(None)])),
            ),
            ("a", Err(())),
            ("/a*b", Err(())),
            ("/f/*rest/x", Err(())),
            ("/u/:", Err(())),
            ("/u/:i-d", Err(())),
            ("/a b", Err(())),
        ];
        for (input, want) in table {
            assert_eq!(PathPattern::parse(input).map_err(|_| ()), want, "{input}");
        }
    }

    #[test]
    fn matches_and_displays_as_written() {
        for (pattern, path, want) in [
            ("/a/b", "/a/b", true),
            ("/a/b", "/a/b/", false),
            ("/a*", "/abc", true),
            ("/a*", "/b", false),
            ("/u/:id", "/u/7", true),
            ("/u/:id", "/u/", false),
            ("/u/:id", "/u/7/x", false),
            ("/u/:id/x", "/u/7/x", true),
            ("/f/*rest", "/f/", true),
            ("/f/*rest", "/f/a/b", true),
            ("/f/*rest", "/g/a", false),
            ("/u/:id/*", "/u/1/z", true),
        ] {
            let p = PathPattern::parse(pattern).unwrap();
            assert_eq!(p.matches(path), want, "{pattern} {path}");
            assert_eq!(p.to_string(), pattern);
        }
    }
}
