//! The `ip-restriction` plugin (access phase): the client's address against the lists.
use super::{Answer, Phases, Req, Run};
use http::StatusCode;

pub struct IpRestriction(pub model::plugins::ip_restriction::IpRestriction);

impl Phases for IpRestriction {
    fn in_rewrite(&self) -> bool {
        false
    }

    fn access(&self, req: &mut Req<'_>, _run: &mut Run) -> Option<Answer> {
        if self.0.allows(req.conn.remote.ip()) {
            return None;
        }
        let status = StatusCode::from_u16(self.0.response_code).unwrap_or(StatusCode::FORBIDDEN);
        Some(Answer::message(status, &self.0.message))
    }
}
