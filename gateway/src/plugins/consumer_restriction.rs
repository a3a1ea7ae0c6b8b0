//! The `consumer-restriction` plugin (access phase): the consumer (or route, or service)
//! of the request against the lists.
use super::{Answer, Phases, Req, Run};
use http::StatusCode;
use model::plugins::consumer_restriction::Subject;

pub struct ConsumerRestriction(pub model::plugins::consumer_restriction::ConsumerRestriction);

impl Phases for ConsumerRestriction {
    fn in_rewrite(&self) -> bool {
        false
    }

    fn access(&self, req: &mut Req<'_>, _run: &mut Run) -> Option<Answer> {
        let c = &self.0;
        let value = match c.subject {
            Subject::ConsumerName => req.consumer.as_ref().map(|c| c.username.as_str()),
            Subject::RouteId => req.route_id,
            Subject::ServiceId => req.service_id,
            Subject::ConsumerGroupId => req.consumer.as_ref().and_then(|c| c.group_id.as_deref()),
        };
        let Some(value) = value else {
            return Some(Answer::message(
                StatusCode::UNAUTHORIZED,
                &format!(
                    "The request is rejected, please check the {} for this request",
                    c.subject.as_str()
                ),
            ));
        };
        if c.allows(value, req.parts.method.as_str()) {
            return None;
        }
        let status = StatusCode::from_u16(c.rejected_code).unwrap_or(StatusCode::FORBIDDEN);
        Some(Answer::message(status, &c.message()))
    }
}
