//! The consumers of a snapshot, looked up by credential. Rebuilt whole when a consumer
//! changes (there are few compared to routes), with every credential's secret opened.
use crate::plugin_state::{ChainEnv, PluginStates};
use crate::plugins::{Chain, Of};
use crate::state::State;
use model::consumer;
use std::collections::HashMap;
use std::sync::Arc;

/// A consumer as an authenticated request carries it.
pub struct ConsumerRt {
    pub username: String,
    /// `labels.custom_id`, sent upstream as `X-Consumer-Custom-ID` (APISIX).
    pub custom_id: Option<String>,
    /// Its consumer group (`consumer-restriction` by `consumer_group_id`).
    pub group_id: Option<String>,
    /// Its plugins other than credentials, merged over the route's once authenticated.
    pub chain: Option<Arc<Chain>>,
    /// `username` and `custom_id` as the header values sent upstream, made once (`None`:
    /// not a valid header value, or no custom id).
    pub username_header: Option<http::HeaderValue>,
    pub custom_id_header: Option<http::HeaderValue>,
}

impl std::fmt::Debug for ConsumerRt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerRt")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// What verifies one consumer's JWTs.
pub struct JwtVerifier {
    key: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
}

impl JwtVerifier {
    fn new(cred: &model::plugins::jwt_auth::Credential) -> Option<JwtVerifier> {
        use model::plugins::jwt_auth::Algorithm as A;
        let key = cred.decoding_key().ok()?;
        let alg = match cred.algorithm {
            A::HS256 => jsonwebtoken::Algorithm::HS256,
            A::HS512 => jsonwebtoken::Algorithm::HS512,
            A::RS256 => jsonwebtoken::Algorithm::RS256,
            A::ES256 => jsonwebtoken::Algorithm::ES256,
        };
        // Only the consumer's algorithm (so never `none`, nor a public key used as an
        // HMAC secret); `exp` and `nbf` checked when present, as APISIX does.
        let mut validation = jsonwebtoken::Validation::new(alg);
        validation.required_spec_claims.clear();
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.leeway = cred.lifetime_grace_period;
        Some(JwtVerifier { key, validation })
    }

    pub fn verify(&self, token: &str) -> bool {
        jsonwebtoken::decode::<serde_json::Value>(token, &self.key, &self.validation).is_ok()
    }
}

#[derive(Default)]
pub struct Consumers {
    /// `key-auth` keys ([`ApiKeys`]).
    by_api_key: ApiKeys,
    /// `basic-auth` by user name, with the SHA-256 of the password.
    by_basic_user: HashMap<String, ([u8; 32], Arc<ConsumerRt>)>,
    /// `jwt-auth` by the consumer's `key`.
    by_jwt_key: HashMap<String, (Arc<ConsumerRt>, JwtVerifier)>,
    /// `hmac-auth` by `key_id`, with the secret the signature is checked with.
    by_hmac_key: HashMap<String, (Arc<ConsumerRt>, Vec<u8>)>,
}

fn digest(secret: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Consumers {
    /// From every valid consumer; a key two consumers share goes to the smaller username
    /// (the admin-api refuses it; two racing writes can still make one).
    pub fn build(state: &State, states: &PluginStates) -> Consumers {
        let mut by_api_key = ApiKeys::default();
        let mut by_basic_user: HashMap<String, ([u8; 32], Arc<ConsumerRt>)> = HashMap::new();
        let mut by_jwt_key: HashMap<String, (Arc<ConsumerRt>, JwtVerifier)> = HashMap::new();
        let mut by_hmac_key: HashMap<String, (Arc<ConsumerRt>, Vec<u8>)> = HashMap::new();
        for (id, entry) in &state.consumers {
            let Ok(c) = &entry.parsed else { continue };
            let env = ChainEnv {
                states,
                metadata: &state.plugin_metadata,
            };
            // Its own plugins over its group's (APISIX); a consumer whose group is missing
            // or invalid is not served, rather than served without the group's limits.
            let plugins = match &c.group_id {
                None => c.route_plugins(),
                Some(g) => match state.consumer_groups.get(g).map(|e| &e.parsed) {
                    Some(Ok(group)) => group.parsed_plugins.merged(&c.route_plugins()),
                    _ => {
                        tracing::warn!(consumer = %id, group = %g, "consumer group missing or invalid: consumer not served");
                        continue;
                    }
                },
            };
            let custom_id = c.labels.as_ref().and_then(|l| l.get("custom_id").cloned());
            let header = |v: &str| http::HeaderValue::from_str(v).ok();
            let rt = Arc::new(ConsumerRt {
                username_header: header(&c.username),
                custom_id_header: custom_id.as_deref().and_then(header),
                username: c.username.clone(),
                custom_id,
                group_id: c.group_id.as_ref().map(|g| g.as_str().to_string()),
                chain: Chain::compile(&plugins, Of::Consumer, env, &format!("consumers/{id}")),
            });
            let clash = |plugin: &str, first: &ConsumerRt| {
                tracing::warn!(consumer = %id, kept = %first.username, "two consumers have the same {plugin} credential; the first keeps it");
            };
            // Its own plugins, then its credentials' (in id order).
            let credentials = state.credentials.get(id).into_iter().flatten();
            let sources = std::iter::once(&c.parsed_plugins).chain(
                credentials.filter_map(|(_, e)| e.parsed.as_ref().ok().map(|c| &c.parsed_plugins)),
            );
            for plugins in sources {
                let mut plugins = plugins.clone();
                consumer::open_secrets(&mut plugins, state.keyring());
                if let Some(key) = consumer::api_key(&plugins) {
                    match by_api_key.get(key) {
                        Some(first) => clash("key-auth", first),
                        None => by_api_key.insert(key, rt.clone()),
                    }
                }
                if let Some((user, password)) = consumer::basic_auth(&plugins) {
                    match by_basic_user.get(user) {
                        Some((_, first)) => clash("basic-auth", first),
                        None => {
                            by_basic_user.insert(user.to_string(), (digest(password), rt.clone()));
                        }
                    }
                }
                if let Some((key_id, secret)) = consumer::hmac_auth(&plugins) {
                    match by_hmac_key.get(key_id) {
                        Some((first, _)) => clash("hmac-auth", first),
                        None => {
                            let entry = (rt.clone(), secret.as_bytes().to_vec());
                            by_hmac_key.insert(key_id.to_string(), entry);
                        }
                    }
                }
                if let Some(cred) = consumer::jwt_auth(&plugins) {
                    match (by_jwt_key.get(&cred.key), JwtVerifier::new(cred)) {
                        (Some((first, _)), _) => clash("jwt-auth", first),
                        (None, Some(v)) => {
                            by_jwt_key.insert(cred.key.clone(), (rt.clone(), v));
                        }
                        (None, None) => {
                            tracing::warn!(consumer = %id, "jwt-auth credential cannot be used (its secret or public key does not open)")
                        }
                    }
                }
            }
        }
        Consumers {
            by_api_key,
            by_basic_user,
            by_jwt_key,
            by_hmac_key,
        }
    }

    /// The consumer whose `hmac-auth` key this is, with its secret.
    pub fn by_hmac_key(&self, key_id: &str) -> Option<(&Arc<ConsumerRt>, &[u8])> {
        self.by_hmac_key
            .get(key_id)
            .map(|(c, secret)| (c, secret.as_slice()))
    }

    pub fn by_api_key(&self, key: &str) -> Option<&Arc<ConsumerRt>> {
        self.by_api_key.get(key)
    }

    /// The consumer whose `basic-auth` credential this is; passwords are compared as
    /// digests, in constant time.
    pub fn by_basic_auth(&self, user: &str, password: &str) -> Option<&Arc<ConsumerRt>> {
        let (want, consumer) = self.by_basic_user.get(user)?;
        let got = digest(password);
        same_bytes(want, &got).then_some(consumer)
    }

    pub fn by_jwt_key(&self, key: &str) -> Option<&(Arc<ConsumerRt>, JwtVerifier)> {
        self.by_jwt_key.get(key)
    }

    /// Credentials in all (a consumer with two counts twice).
    pub fn len(&self) -> usize {
        self.by_api_key.len()
            + self.by_basic_user.len()
            + self.by_jwt_key.len()
            + self.by_hmac_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `key-auth` keys, found by a keyed hash of the key (SipHash, with a random key per
/// table) and then compared whole in constant time: a lookup's timing depends on hashes
/// an attacker cannot compute, never on how much of a stored key a guess matched. A
/// SHA-256 digest of each presented key did the same at ten times the cost (~2,400
/// instructions a request; issue 16).
#[derive(Default)]
struct ApiKeys {
    hasher: std::hash::RandomState,
    /// Keys whose hashes are equal share an entry (the first key inserted wins a lookup
    /// only when the keys themselves are equal).
    by_hash: HashMap<u64, Vec<KeyOf>, foldhash::fast::RandomState>,
}

/// A key and its consumer.
type KeyOf = (Box<[u8]>, Arc<ConsumerRt>);

impl ApiKeys {
    fn get(&self, key: &str) -> Option<&Arc<ConsumerRt>> {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(key.as_bytes());
        self.by_hash
            .get(&hash)?
            .iter()
            .find(|(k, _)| same_bytes(k, key.as_bytes()))
            .map(|(_, c)| c)
    }

    fn insert(&mut self, key: &str, consumer: Arc<ConsumerRt>) {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(key.as_bytes());
        let entry = (Box::from(key.as_bytes()), consumer);
        self.by_hash.entry(hash).or_default().push(entry);
    }

    fn len(&self) -> usize {
        self.by_hash.values().map(Vec::len).sum()
    }
}

/// Whether `a` and `b` are equal, in a time that depends on their lengths only.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_are_the_same_only_when_equal() {
        for (a, b, want) in [
            (&b""[..], &b""[..], true),
            (b"key", b"key", true),
            (b"key", b"kez", false),
            (b"key", b"ke", false),
            (b"ke", b"key", false),
            (b"", b"k", false),
        ] {
            assert_eq!(super::same_bytes(a, b), want, "{a:?} {b:?}");
        }
    }

    use super::*;
    use crate::state::Change;

    #[test]
    fn keys_find_their_consumer_and_a_shared_key_goes_to_the_first() {
        let mut s = State::default();
        for (user, body) in [
            (
                "jack",
                r#"{"username":"jack","plugins":{"key-auth":{"key":"auth-one"}},"labels":{"custom_id":"c1"}}"#,
            ),
            (
                "rose",
                r#"{"username":"rose","plugins":{"key-auth":{"key":"auth-one"}}}"#,
            ),
            (
                "tom",
                r#"{"username":"tom","plugins":{"key-auth":{"key":"auth-two"}}}"#,
            ),
            ("bad", r#"{"username":"bad","plugins":{"key-auth":{}}}"#),
            // Credentials: jack's second key; one of a consumer that does not exist.
            (
                "jack/credentials/c1",
                r#"{"plugins":{"key-auth":{"key":"auth-cred"}}}"#,
            ),
            (
                "ghost/credentials/c1",
                r#"{"plugins":{"key-auth":{"key":"auth-ghost"}}}"#,
            ),
        ] {
            s.apply(
                "/gw",
                Change::Put {
                    key: format!("/gw/consumers/{user}"),
                    value: body.as_bytes().to_vec(),
                },
            );
        }
        let c = Consumers::build(&s, &PluginStates::default());
        assert_eq!(c.len(), 3);
        assert_eq!(c.by_api_key("auth-cred").unwrap().username, "jack");
        assert!(c.by_api_key("auth-ghost").is_none());
        let jack = c.by_api_key("auth-one").unwrap();
        assert_eq!(
            (jack.username.as_str(), jack.custom_id.as_deref()),
            ("jack", Some("c1"))
        );
        assert_eq!(c.by_api_key("auth-two").unwrap().username, "tom");
        assert!(c.by_api_key("auth-three").is_none());
        assert!(c.by_api_key("").is_none());
        // Only the whole key: not a prefix, not a longer one, not another case.
        for near in ["auth-on", "auth-one ", "auth-onf", "AUTH-ONE", "auth-one\0"] {
            assert!(c.by_api_key(near).is_none(), "{near:?}");
        }
    }
}
