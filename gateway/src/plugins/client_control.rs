//! The `client-control` plugin (rewrite phase): the route's own request body limit.
use super::{Answer, Phases, Req, Run};

pub struct ClientControl(pub model::plugins::client_control::ClientControl);

impl Phases for ClientControl {
    fn rewrite(&self, _req: &mut Req<'_>, run: &mut Run) -> Option<Answer> {
        run.max_body_size = self.0.max_body_size;
        None
    }
}
