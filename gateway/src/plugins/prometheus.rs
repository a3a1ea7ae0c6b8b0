//! The `prometheus` plugin: marks its requests to be counted in the `apisix_*` metrics
//! (`crate::prometheus`), whatever answers them: the upstream, an error, or a plugin.
use super::{Phases, Req, Run};
use model::plugins::prometheus::Prometheus as Conf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// Set once any chain with this plugin has been compiled in this process: until then
/// the request path skips the timing and sizes that recording needs. Never reset, as it
/// only switches on that bookkeeping; what is recorded follows each request's chain.
static SEEN: AtomicBool = AtomicBool::new(false);

pub fn seen() -> bool {
    SEEN.load(Relaxed)
}

pub struct Prometheus(pub Conf);

impl Prometheus {
    pub fn new(conf: Conf) -> Prometheus {
        SEEN.store(true, Relaxed);
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
