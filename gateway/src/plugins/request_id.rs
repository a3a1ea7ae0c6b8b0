//! The `request-id` plugin: an id on the request to the upstream (rewrite) and on the
//! response (header filter). An id the client sent, or the upstream answered with, is kept.
use super::{Answer, Phases, Req, Run};
use http::{HeaderMap, HeaderValue, StatusCode};
use model::plugins::request_id::Algorithm;
use rand::Rng;

pub struct RequestId(pub model::plugins::request_id::RequestId);

/// nanoid's alphabet and length.
const NANOID: &[u8; 64] = b"_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const NANOID_LEN: usize = 21;

pub fn generate(algorithm: &Algorithm) -> String {
    let mut rng = rand::rng();
    match algorithm {
        Algorithm::Uuid => uuid::Uuid::new_v4().to_string(),
        Algorithm::Nanoid => (0..NANOID_LEN)
            .map(|_| char::from(NANOID[rng.random_range(0..NANOID.len())]))
            .collect(),
        Algorithm::RangeId { char_set, length } => (0..*length)
            .map(|_| char_set[rng.random_range(0..char_set.len())])
            .collect(),
    }
}

impl Phases for RequestId {
    fn rewrite(&self, req: &mut Req<'_>, run: &mut Run) -> Option<Answer> {
        let name = &self.0.header_name;
        let id = match req.parts.headers.get(name).filter(|v| !v.is_empty()) {
            Some(sent) => sent.clone(),
            None => {
                // Generated from visible ASCII only, so always a valid header value.
                let id = HeaderValue::from_str(&generate(&self.0.algorithm)).ok()?;
                req.parts.headers.insert(name.clone(), id.clone());
                id
            }
        };
        if self.0.include_in_response {
            run.request_id = Some(id);
        }
        None
    }

    fn header_filter(&self, run: &Run, _status: StatusCode, headers: &mut HeaderMap) {
        let Some(id) = &run.request_id else { return };
        let name = &self.0.header_name;
        if headers.get(name).is_none_or(|v| v.is_empty()) {
            headers.insert(name.clone(), id.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_their_algorithms_shape() {
        let uuid = generate(&Algorithm::Uuid);
        assert!(uuid::Uuid::parse_str(&uuid).is_ok(), "{uuid}");
        assert_ne!(uuid, generate(&Algorithm::Uuid));
        let nano = generate(&Algorithm::Nanoid);
        assert_eq!(nano.len(), 21);
        assert!(nano.bytes().all(|b| NANOID.contains(&b)), "{nano}");
        let range = generate(&Algorithm::RangeId {
            char_set: "abc123".chars().collect(),
            length: 40,
        });
        assert_eq!(range.len(), 40);
        assert!(range.chars().all(|c| "abc123".contains(c)), "{range}");
    }
}
