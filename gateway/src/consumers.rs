//! The consumers of a snapshot, looked up by credential. Rebuilt whole when a consumer
//! changes (there are few compared to routes), with every credential's secret opened.
use crate::state::State;
use std::collections::HashMap;
use std::sync::Arc;

/// A consumer as an authenticated request carries it.
#[derive(Debug)]
pub struct ConsumerRt {
    pub username: String,
    /// `labels.custom_id`, sent upstream as `X-Consumer-Custom-ID` (APISIX).
    pub custom_id: Option<String>,
}

#[derive(Default)]
pub struct Consumers {
    /// By the SHA-256 of the key: a lookup compares digests, so its timing says nothing
    /// about the keys it did not match.
    by_api_key: HashMap<[u8; 32], Arc<ConsumerRt>>,
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
    pub fn build(state: &State) -> Consumers {
        let mut by_api_key = HashMap::new();
        for (id, entry) in &state.consumers {
            let Ok(c) = &entry.parsed else { continue };
            let mut c = (**c).clone();
            c.open_secrets(state.keyring());
            let rt = Arc::new(ConsumerRt {
                username: c.username.clone(),
                custom_id: c.labels.as_ref().and_then(|l| l.get("custom_id").cloned()),
            });
            if let Some(key) = c.api_key() {
                if let Some(first) = by_api_key.get(&digest(key)) {
                    let first: &Arc<ConsumerRt> = first;
                    tracing::warn!(consumer = %id, kept = %first.username, "two consumers have the same key-auth key; the first keeps it");
                    continue;
                }
                by_api_key.insert(digest(key), rt);
            }
        }
        Consumers { by_api_key }
    }

    pub fn by_api_key(&self, key: &str) -> Option<&Arc<ConsumerRt>> {
        self.by_api_key.get(&digest(key))
    }

    pub fn len(&self) -> usize {
        self.by_api_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_api_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
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
        ] {
            s.apply(
                "/gw",
                Change::Put {
                    key: format!("/gw/consumers/{user}"),
                    value: body.as_bytes().to_vec(),
                },
            );
        }
        let c = Consumers::build(&s);
        assert_eq!(c.len(), 2);
        let jack = c.by_api_key("auth-one").unwrap();
        assert_eq!(
            (jack.username.as_str(), jack.custom_id.as_deref()),
            ("jack", Some("c1"))
        );
        assert_eq!(c.by_api_key("auth-two").unwrap().username, "tom");
        assert!(c.by_api_key("auth-three").is_none());
        assert!(c.by_api_key("").is_none());
    }
}
