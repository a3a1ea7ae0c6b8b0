//! The `real-ip` plugin (rewrite phase): the client address the later plugins, the
//! variables and `X-Real-IP` see (`X-Forwarded-For` still ends with the peer), from the configured source, when the connection
//! comes from a trusted proxy.
use super::{Answer, Phases, Req, Run};
use model::vars::VarSource;

pub struct RealIp(pub model::plugins::real_ip::RealIp);

impl Phases for RealIp {
    fn rewrite(&self, req: &mut Req<'_>, run: &mut Run) -> Option<Answer> {
        let value = req.vars().get(&self.0.source).map(|v| v.into_owned());
        if let Some(addr) = self.0.resolve(req.conn.remote, value.as_deref()) {
            req.conn.remote = addr;
            run.real_ip = Some(addr.ip());
        }
        None
    }
}
