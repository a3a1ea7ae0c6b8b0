//! The request path as routes see it and backends get it: `%XX` of unreserved characters
//! decoded, `.` and `..` segments resolved, `//` merged. Without it `/public/../admin/secret`
//! matches `/public/*` while the backend resolves it to `/admin/secret`: a prefix guard
//! bypassed. The path is also forwarded normalised, so that what was checked is what the
//! backend gets. Pure, and fuzzed.
//!
//! Unlike nginx's `$uri`, reserved escapes (`%2F`, `%3F`…) stay encoded, because APIs put
//! them in identifiers (`/projects/group%2Fname`) and decoding them changes the path. A
//! backend may still split on them, on `\`, or drop `;params` before resolving dots
//! (Tomcat's `/..;/`), so a segment that hides a dot segment behind one of those is refused
//! rather than guessed at.
use std::borrow::Cow;

/// Why a path cannot be normalised; each is the client's fault (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path climbs above the root with '..'")]
    AboveRoot,
    #[error("the path has an invalid percent-encoding")]
    BadPercent,
    #[error("the path hides a '.' or '..' segment behind '%2F', '%5C', '\\' or ';'")]
    HiddenDotSegment,
}

/// Unreserved characters (RFC 3986 §2.3): their percent-encoding means the same as the
/// character itself, so decoding them changes nothing for a correct backend. Others (`%2F`,
/// `%3F`, `%25`…) stay encoded: decoding them would change what the path means.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// True when the path may need work: it holds a `%`, a `\`, a `//`, or a segment starting
/// with `.`. One pass over the bytes, so a plain path costs no allocation.
fn needs_work(path: &[u8]) -> bool {
    path.iter().enumerate().any(|(i, &b)| {
        b == b'%' || b == b'\\' || (b == b'/' && matches!(path.get(i + 1), Some(b'/' | b'.')))
    })
}

/// True when a segment that is not itself `.` or `..` becomes one for a backend that splits
/// on `%2F`, `%5C` or `\`, or strips `;params`: `..%2F`, `a\..`, `..;x`.
fn hides_dot_segment(segment: &[u8]) -> bool {
    let is_dot = |piece: &[u8]| {
        let bare = piece.split(|&b| b == b';').next().unwrap_or_default();
        matches!(bare, b"." | b"..") && bare != segment
    };
    let (mut start, mut i) = (0, 0);
    while i < segment.len() {
        let sep = match &segment[i..] {
            [b'\\', ..] => 1,
            [b'%', a, b, ..]
                if (*a == b'2' && b.eq_ignore_ascii_case(&b'f'))
                    || (*a == b'5' && b.eq_ignore_ascii_case(&b'c')) =>
            {
                3
            }
            _ => 0,
        };
        if sep == 0 {
            i += 1;
            continue;
        }
        if is_dot(&segment[start..i]) {
            return true;
        }
        i += sep;
        start = i;
    }
    is_dot(&segment[start..])
}

/// The normalised form of an origin-form path (starting with `/`). Anything else (`*` of
/// `OPTIONS *`) is returned as it is. A trailing slash is kept (`/a/b/`, `/a/.` → `/a/`).
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if !bytes.starts_with(b"/") || !needs_work(bytes) {
        return Ok(Cow::Borrowed(path));
    }
    // Step 1: decode unreserved characters; check every other escape.
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            decoded.push(b);
            i += 1;
            continue;
        }
        let (Some(h), Some(l)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(PathError::BadPercent);
        };
        let c = h << 4 | l;
        if unreserved(c) {
            decoded.push(c);
        } else {
            decoded.extend_from_slice(&bytes[i..i + 3]);
        }
        i += 3;
    }
    // Step 2: resolve dot segments and merge empty ones, keeping a trailing slash.
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded[1..].split(|&b| b == b'/') {
        if hides_dot_segment(segment) {
            return Err(PathError::HiddenDotSegment);
        }
        trailing_slash = false;
        match segment {
            b"" | b"." => trailing_slash = true,
            b".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
                trailing_slash = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        // Only ASCII went in (an `http::Uri` path is ASCII) and only ASCII was decoded.
        out.push_str(std::str::from_utf8(s).map_err(|_| PathError::BadPercent)?);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let table: &[(&str, Result<&str, PathError>)] = &[
            ("/", Ok("/")),
            ("/a/b", Ok("/a/b")),
            ("/a/b/", Ok("/a/b/")),
            ("/public/../admin/secret", Ok("/admin/secret")),
            ("/public/%2e%2e/admin/secret", Ok("/admin/secret")),
            ("/public/%2E%2E/admin", Ok("/admin")),
            ("/public/.%2e/admin", Ok("/admin")),
            ("/a/./b", Ok("/a/b")),
            ("/a/.", Ok("/a/")),
            ("/a/..", Ok("/")),
            ("/a/b/../../..", Err(PathError::AboveRoot)),
            ("/..", Err(PathError::AboveRoot)),
            ("/../a", Err(PathError::AboveRoot)),
            ("//a///b//", Ok("/a/b/")),
            ("//", Ok("/")),
            ("/%41%62%7e%5F", Ok("/Ab~_")),
            // Reserved characters stay encoded: %2F is not a segment separator.
            ("/a%2Fb", Ok("/a%2Fb")),
            (
                "/projects/group%2Fname/a..b%2F.c",
                Ok("/projects/group%2Fname/a..b%2F.c"),
            ),
            ("/a%2f..%2fb", Err(PathError::HiddenDotSegment)),
            ("/a/%2e%2e%2fb", Err(PathError::HiddenDotSegment)),
            ("/public/..%2Fadmin", Err(PathError::HiddenDotSegment)),
            ("/public/..%5cadmin", Err(PathError::HiddenDotSegment)),
            ("/public/a%5C.", Err(PathError::HiddenDotSegment)),
            ("/public/..\\admin", Err(PathError::HiddenDotSegment)),
            ("/public\\..\\admin", Err(PathError::HiddenDotSegment)),
            ("/public/..;/admin", Err(PathError::HiddenDotSegment)),
            ("/public/.;x/admin", Err(PathError::HiddenDotSegment)),
            (
                "/public/%2e%2e;jsessionid=1/admin",
                Err(PathError::HiddenDotSegment),
            ),
            ("/a\\b", Ok("/a\\b")),
            ("/a;b=1/c", Ok("/a;b=1/c")),
            ("/a/..b;x", Ok("/a/..b;x")),
            ("/%25", Ok("/%25")),
            ("/a%", Err(PathError::BadPercent)),
            ("/a%4", Err(PathError::BadPercent)),
            ("/a%zz", Err(PathError::BadPercent)),
            ("/..a/b.", Ok("/..a/b.")),
            ("/.a/...", Ok("/.a/...")),
            ("*", Ok("*")),
        ];
        for (input, want) in table {
            let got = normalize_path(input);
            assert_eq!(
                got.as_deref().map_err(|e| *e),
                want.as_deref().map_err(|e| *e),
                "{input}"
            );
        }
    }

    #[test]
    fn plain_paths_are_not_copied() {
        for p in ["/", "/a/b.c/d", "/api/v1/users/42", "/a.b/", "/x-y_z~"] {
            assert!(matches!(normalize_path(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for p in ["/a/../b", "//x/./y/", "/%2e/a", "/a%2Fb/../c", "/a\\b/./c"] {
            let once = normalize_path(p).unwrap().into_owned();
            assert_eq!(normalize_path(&once).unwrap(), once, "{p}");
        }
    }
}
