//! The `referer-restriction` plugin (access phase): the host of the request's `Referer`
//! against the lists.
use super::{Answer, Phases, Req, Run};
use http::header::REFERER;
use http::StatusCode;

pub struct RefererRestriction(pub model::plugins::referer_restriction::RefererRestriction);

impl Phases for RefererRestriction {
    fn in_rewrite(&self) -> bool {
        false
    }

    fn access(&self, req: &mut Req<'_>, _run: &mut Run) -> Option<Answer> {
        let referer = req.parts.headers.get(REFERER).and_then(|v| v.to_str().ok());
        match self.0.allows(referer) {
            true => None,
            false => Some(Answer::message(StatusCode::FORBIDDEN, &self.0.message)),
        }
    }
}
