//! The `key-auth` plugin (rewrite phase): the request's API key, from the configured header
//! or else the query argument, must be a consumer's; the request then is that consumer's.
use super::auth::{authenticated, unauthorized as challenge};
use super::{Answer, Phases, Req, Run};
use http::Uri;
use model::plugins::key_auth::KeyAuth as Conf;
use model::vars::VarSource;

pub struct KeyAuth(pub Conf);

fn unauthorized(message: &str) -> Answer {
    challenge(message, "apikey realm=\"key\"")
}

/// The URI without query argument `name`.
pub fn without_arg(uri: &Uri, name: &str) -> Option<Uri> {
    let kept: Vec<&str> = uri
        .query()?
        .split('&')
        .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != name)
        .collect();
    let pq = match kept.is_empty() {
        true => uri.path().to_string(),
        false => format!("{}?{}", uri.path(), kept.join("&")),
    };
    pq.parse().ok()
}

impl Phases for KeyAuth {
    fn rewrite(&self, req: &mut Req<'_>, _run: &mut Run) -> Option<Answer> {
        let Conf::Check {
            header,
            query,
            hide_credentials,
        } = &self.0
        else {
            // A consumer's credential is not a check; never compiled into a route's chain.
            return None;
        };
        let from_header = req.parts.headers.get(header).map(|v| v.as_bytes());
        let key = match from_header {
            Some(k) => String::from_utf8_lossy(k).into_owned(),
            // As nginx's `$arg_`: the first value, as sent.
            None => match req.vars().get(&format!("arg_{query}")) {
                Some(k) => k.into_owned(),
                None => return Some(unauthorized("Missing API key in request")),
            },
        };
        let Some(consumer) = req.consumers.by_api_key(&key).cloned() else {
            return Some(unauthorized("Invalid API key in request"));
        };
        if *hide_credentials {
            if from_header.is_some() {
                req.parts.headers.remove(header);
            } else if let Some(uri) = without_arg(&req.parts.uri, query) {
                req.parts.uri = uri;
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
    fn a_hidden_query_key_is_removed_from_the_uri() {
        let uri: Uri = "/p?a=1&apikey=k&b".parse().unwrap();
        assert_eq!(without_arg(&uri, "apikey").unwrap(), "/p?a=1&b");
        let uri: Uri = "/p?apikey=k".parse().unwrap();
        assert_eq!(without_arg(&uri, "apikey").unwrap(), "/p");
    }
}
