//! The `ua-restriction` plugin (access phase): the request's `User-Agent` against the
//! lists.
use super::{Answer, Phases, Req, Run};
use http::header::USER_AGENT;
use http::StatusCode;

pub struct UaRestriction(pub model::plugins::ua_restriction::UaRestriction);

impl Phases for UaRestriction {
    fn in_rewrite(&self) -> bool {
        false
    }

    fn access(&self, req: &mut Req<'_>, _run: &mut Run) -> Option<Answer> {
        let agents = req.parts.headers.get_all(USER_AGENT);
        // A value that is not text matches no pattern.
        let agents = agents
            .iter()
            .map(|v| std::str::from_utf8(v.as_bytes()).unwrap_or("\u{fffd}"));
        match self.0.allows(agents) {
            true => None,
            false => Some(Answer::message(StatusCode::FORBIDDEN, &self.0.message)),
        }
    }
}
