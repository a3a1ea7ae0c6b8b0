//! The `basic-auth` plugin (rewrite phase): `Authorization: Basic base64(user:password)`
//! must be a consumer's credential; the request then is that consumer's.
use super::auth::{authenticated, unauthorized};
use super::{Answer, Phases, Req, Run};
use base64::Engine;
use http::header::AUTHORIZATION;
use model::plugins::basic_auth::BasicAuth as Conf;

pub struct BasicAuth(pub Conf);

const CHALLENGE: &str = "Basic realm='.'";

/// `user` and `password` of a `Basic` credential; APISIX drops whitespace from both.
pub fn credentials(header: &[u8]) -> Option<(String, String)> {
    let header = std::str::from_utf8(header).ok()?;
    let (scheme, rest) = header.trim_start().split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    // The user name has no ':' (RFC 7617); the password may.
    let (user, password) = decoded.split_once(':')?;
    let squeeze = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    Some((squeeze(user), squeeze(password)))
}

impl Phases for BasicAuth {
    fn rewrite(&self, req: &mut Req<'_>, _run: &mut Run) -> Option<Answer> {
        let Conf::Check { hide_credentials } = &self.0 else {
            return None;
        };
        let Some(header) = req.parts.headers.get(AUTHORIZATION) else {
            return Some(unauthorized("Missing authorization in request", CHALLENGE));
        };
        let Some((user, password)) = credentials(header.as_bytes()) else {
            return Some(unauthorized("Invalid authorization in request", CHALLENGE));
        };
        let Some(consumer) = req.consumers.by_basic_auth(&user, &password).cloned() else {
            return Some(unauthorized("Invalid user authorization", CHALLENGE));
        };
        if *hide_credentials {
            req.parts.headers.remove(AUTHORIZATION);
        }
        authenticated(req, consumer);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let ok = |u: &str, p: &str| Some((u.to_string(), p.to_string()));
        for (header, expect) in [
            (format!("Basic {}", b64("foo:bar")), ok("foo", "bar")),
            (format!("basic  {}", b64("foo:b:r")), ok("foo", "b:r")),
            (format!("Basic {}", b64("foo : bar ")), ok("foo", "bar")),
            (format!("Basic {}", b64("foo")), None),
            ("Basic !!!".to_string(), None),
            ("Bearer abc".to_string(), None),
            ("Basic".to_string(), None),
            (String::new(), None),
        ] {
            assert_eq!(credentials(header.as_bytes()), expect, "{header}");
        }
        assert_eq!(credentials(b"Basic \xff\xfe"), None);
    }
}
