//! The `public-api` plugin: the route answers with one of the gateway's own APIs, the one
//! at the plugin's `uri` or else at the request's path; only the Prometheus exposition
//! is one, and any other path is a 404 (as APISIX answers for an unknown API).
use super::{Answer, Phases, Req, Run};
use http::StatusCode;
use model::plugins::prometheus::EXPORT_URI;
use model::plugins::public_api::PublicApi as Conf;

pub struct PublicApi(pub Conf);

impl Phases for PublicApi {
    fn in_rewrite(&self) -> bool {
        false
    }

    fn access(&self, req: &mut Req<'_>, _run: &mut Run) -> Option<Answer> {
        let uri = self.0.uri.as_deref().unwrap_or(req.parts.uri.path());
        if uri != EXPORT_URI || req.parts.method != http::Method::GET {
            return Some(Answer::empty(StatusCode::NOT_FOUND));
        }
        // The body is rendered by the proxy, which holds the metrics.
        let mut answer = Answer::empty(StatusCode::OK);
        answer.exposition = true;
        Some(answer)
    }
}
