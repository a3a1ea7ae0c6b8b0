//! The `jwt-auth` plugin (rewrite phase): a JWT from the header (`Bearer ` optional), the
//! query argument or the cookie; its `key` claim names the consumer, whose secret or
//! public key must verify its signature with the consumer's algorithm, and `exp`/`nbf`
//! must hold. The request then is that consumer's.
use super::auth::{authenticated, unauthorized};
use super::{Answer, Phases, Req, Run};
use base64::Engine;
use model::plugins::jwt_auth::{Check, JwtAuth as Conf};
use model::vars::VarSource;

pub struct JwtAuth(pub Conf);

const CHALLENGE: &str = "Bearer realm=\"jwt\"";

/// Where the token was found, for `hide_credentials`.
enum Found {
    Header,
    Query,
    Cookie,
}

fn find_token(conf: &Check, req: &Req<'_>) -> Option<(String, Found)> {
    if let Some(v) = req.parts.headers.get(&conf.header) {
        let v = String::from_utf8_lossy(v.as_bytes());
        let v = v.trim();
        let token = match v.get(..7) {
            Some(p) if p.eq_ignore_ascii_case("bearer ") => v[7..].trim(),
            _ => v,
        };
        return Some((token.to_string(), Found::Header));
    }
    let vars = req.vars();
    if let Some(v) = vars.get(&format!("arg_{}", conf.query)) {
        return Some((v.into_owned(), Found::Query));
    }
    vars.get(&format!("cookie_{}", conf.cookie))
        .map(|v| (v.into_owned(), Found::Cookie))
}

/// The claim `name` of the token's payload, read before the signature is checked (it
/// says whose key checks it). `None`: not a JWT, or no such string claim.
pub fn unverified_claim(token: &str, name: &str) -> Option<String> {
    let mut parts = token.split('.');
    let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else {
        return None;
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    match claims.get(name)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Phases for JwtAuth {
    fn rewrite(&self, req: &mut Req<'_>, _run: &mut Run) -> Option<Answer> {
        let Conf::Check(conf) = &self.0 else {
            return None;
        };
        let Some((token, found)) = find_token(conf, req) else {
            return Some(unauthorized("Missing JWT token in request", CHALLENGE));
        };
        let Some(user_key) = unverified_claim(&token, &conf.key_claim_name) else {
            return Some(unauthorized("JWT token invalid", CHALLENGE));
        };
        let Some((consumer, verifier)) = req.consumers.by_jwt_key(&user_key) else {
            return Some(unauthorized("Invalid user key in JWT token", CHALLENGE));
        };
        if !verifier.verify(&token) {
            return Some(unauthorized("failed to verify jwt", CHALLENGE));
        }
        let consumer = consumer.clone();
        if conf.hide_credentials {
            match found {
                Found::Header => {
                    req.parts.headers.remove(&conf.header);
                }
                Found::Query => {
                    if let Some(uri) = super::key_auth::without_arg(&req.parts.uri, &conf.query) {
                        req.parts.uri = uri;
                    }
                }
                // Other cookies stay; the token's goes.
                Found::Cookie => super::without_cookie(&mut req.parts.headers, &conf.cookie),
            }
        }
        authenticated(req, consumer);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_read_from_the_payload() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = |payload: &str| format!("{}.{}.sig", b64(r#"{"alg":"HS256"}"#), b64(payload));
        assert_eq!(
            unverified_claim(&token(r#"{"key":"user-key"}"#), "key").as_deref(),
            Some("user-key")
        );
        assert_eq!(
            unverified_claim(&token(r#"{"key":7}"#), "key").as_deref(),
            Some("7")
        );
        assert_eq!(unverified_claim(&token(r#"{"sub":"x"}"#), "key"), None);
        assert_eq!(unverified_claim(&token("not json"), "key"), None);
        assert_eq!(unverified_claim("a.b", "key"), None);
        assert_eq!(unverified_claim("a.b.c.d", "key"), None);
        assert_eq!(unverified_claim("", "key"), None);
    }
}
