//! The `hmac-auth` plugin (rewrite phase), as APISIX 3.11+ checks a draft-cavage HTTP
//! signature: `Authorization: Signature keyId="…",algorithm="…",headers="…",signature="…"`.
//! The signing string is the key id, then one line per name of `headers` in its order
//! (`@request-target` is `METHOD /path?query`, any other name `name: value`), each ending
//! in `\n`. The `Date` header must be within `clock_skew` of our clock.
use super::auth::{authenticated, unauthorized};
use super::{Answer, Phases, Req, Run};
use base64::Engine;
use http::header::{AUTHORIZATION, DATE};
use model::plugins::hmac_auth::{Algorithm, HmacAuth as Conf};
use std::time::{Duration, SystemTime};

pub struct HmacAuth(pub Conf);

const CHALLENGE: &str = "hmac realm=\"hmac\"";
/// APISIX's one answer for every failure after the header's scheme: which check failed is
/// for the log, not for a client probing keys.
const INVALID: &str = "client request can't be validated";

/// The parameters of a `Signature` authorization.
#[derive(Debug, PartialEq, Eq)]
pub struct Params<'a> {
    pub key_id: &'a str,
    pub algorithm: &'a str,
    pub headers: Vec<&'a str>,
    pub signature: &'a str,
}

/// `keyId="…",algorithm="…",headers="…",signature="…"` after `Signature `; `None` when a
/// parameter is malformed or one of keyId, algorithm, signature is missing.
pub fn params(value: &str) -> Option<Params<'_>> {
    let (mut key_id, mut algorithm, mut headers, mut signature) = (None, None, None, None);
    for part in value.split(',') {
        let (name, quoted) = part.trim().split_once('=')?;
        let v = quoted.strip_prefix('"')?.strip_suffix('"')?;
        let slot = match name {
            "keyId" => &mut key_id,
            "algorithm" => &mut algorithm,
            "headers" => &mut headers,
            "signature" => &mut signature,
            _ => continue,
        };
        if slot.replace(v).is_some() {
            return None;
        }
    }
    Some(Params {
        key_id: key_id.filter(|k| !k.is_empty())?,
        algorithm: algorithm?,
        headers: headers.map_or(Vec::new(), |h| {
            h.split(' ').filter(|s| !s.is_empty()).collect()
        }),
        signature: signature?,
    })
}

/// The string the client signed, or `None` when a header it names is sent twice (its
/// value would be ambiguous).
pub fn signing_string(
    p: &Params<'_>,
    method: &str,
    target: &str,
    headers: &http::HeaderMap,
) -> Option<String> {
    let mut s = String::with_capacity(128);
    s.push_str(p.key_id);
    s.push('\n');
    for name in &p.headers {
        if name.eq_ignore_ascii_case("@request-target") {
            s.push_str(method);
            s.push(' ');
            s.push_str(target);
            s.push('\n');
            continue;
        }
        let mut values = headers.get_all(*name).iter();
        // APISIX skips a named header the request does not have.
        let Some(v) = values.next() else { continue };
        if values.next().is_some() {
            return None;
        }
        s.push_str(name);
        s.push_str(": ");
        s.push_str(v.to_str().ok()?);
        s.push('\n');
    }
    Some(s)
}

fn verify(alg: Algorithm, secret: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let alg = match alg {
        Algorithm::Sha1 => ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        Algorithm::Sha256 => ring::hmac::HMAC_SHA256,
        Algorithm::Sha512 => ring::hmac::HMAC_SHA512,
    };
    // Constant time: ring compares the tags itself.
    ring::hmac::verify(&ring::hmac::Key::new(alg, secret), message, signature).is_ok()
}

impl HmacAuth {
    /// Why the request is refused (logged), or its consumer's.
    fn check(
        &self,
        req: &Req<'_>,
    ) -> Result<std::sync::Arc<crate::consumers::ConsumerRt>, &'static str> {
        let Conf::Check {
            allowed_algorithms,
            clock_skew,
            signed_headers,
            ..
        } = &self.0
        else {
            return Err("not a route configuration");
        };
        let header = req.parts.headers.get(AUTHORIZATION).ok_or("missing")?;
        let value = header.to_str().map_err(|_| "not text")?;
        let rest = value.strip_prefix("Signature").ok_or("scheme")?;
        let p = params(rest.trim_start()).ok_or("malformed Signature parameters")?;
        let (consumer, secret) = req.consumers.by_hmac_key(p.key_id).ok_or("unknown keyId")?;
        let alg = Algorithm::parse(p.algorithm)
            .filter(|a| allowed_algorithms.contains(a))
            .ok_or("algorithm not allowed")?;
        let date = req
            .parts
            .headers
            .get(DATE)
            .and_then(|d| d.to_str().ok())
            .ok_or("missing Date")?;
        let sent = httpdate::parse_http_date(date).map_err(|_| "Date is not an HTTP date")?;
        let now = SystemTime::now();
        let skew = now
            .duration_since(sent)
            .or_else(|_| sent.duration_since(now))
            .unwrap_or(Duration::MAX);
        if skew > Duration::from_secs(*clock_skew) {
            return Err("clock skew exceeded");
        }
        for h in signed_headers {
            if !p.headers.iter().any(|n| n.eq_ignore_ascii_case(h)) {
                return Err("a required header is not signed");
            }
        }
        let target = req.parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let message = signing_string(&p, req.parts.method.as_str(), target, &req.parts.headers)
            .ok_or("a signed header is repeated")?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(p.signature)
            .map_err(|_| "signature is not base64")?;
        if !verify(alg, secret, message.as_bytes(), &signature) {
            return Err("invalid signature");
        }
        Ok(consumer.clone())
    }
}

impl Phases for HmacAuth {
    fn rewrite(&self, req: &mut Req<'_>, _run: &mut Run) -> Option<Answer> {
        let Conf::Check {
            hide_credentials, ..
        } = &self.0
        else {
            return None;
        };
        match self.check(req) {
            Ok(consumer) => {
                if *hide_credentials {
                    req.parts.headers.remove(AUTHORIZATION);
                }
                authenticated(req, consumer);
                None
            }
            Err("missing") => Some(unauthorized(
                &format!("{INVALID}: missing Authorization header"),
                CHALLENGE,
            )),
            Err("scheme") => Some(unauthorized(
                &format!("{INVALID}: Authorization header does not start with 'Signature'"),
                CHALLENGE,
            )),
            Err(why) => {
                tracing::debug!(reason = why, "hmac-auth refused a request");
                Some(unauthorized(INVALID, CHALLENGE))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters() {
        let p = params(r#"keyId="john-key",algorithm="hmac-sha256",headers="@request-target date",signature="c2ln""#).unwrap();
        assert_eq!(
            p,
            Params {
                key_id: "john-key",
                algorithm: "hmac-sha256",
                headers: vec!["@request-target", "date"],
                signature: "c2ln"
            }
        );
        for bad in [
            r#"algorithm="hmac-sha256",signature="x""#,
            r#"keyId="",algorithm="hmac-sha256",signature="x""#,
            r#"keyId="k",algorithm="hmac-sha256""#,
            r#"keyId=k,algorithm="hmac-sha256",signature="x""#,
            r#"keyId="k",keyId="j",algorithm="hmac-sha256",signature="x""#,
            "",
        ] {
            assert_eq!(params(bad), None, "{bad}");
        }
    }

    /// APISIX's documented example: what its Python snippet computes for john-key /
    /// john-secret-key, GET /get, Date Fri, 06 Sep 2024 06:41:29 GMT (the sample output
    /// printed under it in the docs came from other inputs; this is the snippet's).
    #[test]
    fn apisix_documented_signature_verifies() {
        let p = params(r#"keyId="john-key",algorithm="hmac-sha256",headers="@request-target date",signature="j+feO3Wm5em0agp0A70FZErf6lrMDVs7zjQ9MxomPx0=""#).unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert(DATE, "Fri, 06 Sep 2024 06:41:29 GMT".parse().unwrap());
        let s = signing_string(&p, "GET", "/get", &headers).unwrap();
        assert_eq!(
            s,
            "john-key\nGET /get\ndate: Fri, 06 Sep 2024 06:41:29 GMT\n"
        );
        let sig = base64::engine::general_purpose::STANDARD
            .decode(p.signature)
            .unwrap();
        assert!(verify(
            Algorithm::Sha256,
            b"john-secret-key",
            s.as_bytes(),
            &sig
        ));
        assert!(!verify(Algorithm::Sha256, b"other-key", s.as_bytes(), &sig));
        assert!(!verify(
            Algorithm::Sha512,
            b"john-secret-key",
            s.as_bytes(),
            &sig
        ));
        headers.append(DATE, "Sat, 07 Sep 2024 06:41:29 GMT".parse().unwrap());
        assert_eq!(
            signing_string(&p, "GET", "/get", &headers),
            None,
            "two Dates"
        );
    }
}
