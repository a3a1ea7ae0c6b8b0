//! The `prometheus` plugin: marks its requests to be counted in the `apisix_*` metrics
//! (`crate::prometheus`), whatever answers them: the upstream, an error, or a plugin.
use super::{Phases, Req, Run};
use model::plugins::prometheus::Prometheus as Conf;
pub struct Prometheus(pub Conf);

impl Prometheus {
    pub fn new(conf: Conf) -> Prometheus {
        super::log_phase_compiled();
        Prometheus(conf)
    }
}

impl Phases for Prometheus {
    fn in_rewrite(&self) -> bool {
        false
    }

    fn before_response(&self, _req: &Req<'_>, run: &mut Run) {
        run.prometheus = Some(self.0);
    }
}
