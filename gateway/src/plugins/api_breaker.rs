//! The `api-breaker` plugin: counts the upstream's answers (its own statuses, or 502/504
//! when it failed or timed out, as nginx's `$upstream_status` has them) in the response
//! phase, and answers `break_response_code` in the access phase while the breaker is
//! open. Plugin answers, the breaker's own included, are not the upstream's and do not
//! count.
use super::{Answer, Phases, Req, Run};
use http::{Response, StatusCode};
use model::plugins::api_breaker::ApiBreaker as Conf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct ApiBreaker {
    pub conf: Conf,
    pub state: Arc<Breaker>,
}

#[derive(Debug, Default)]
pub struct Breaker(Mutex<Counts>);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    unhealthy: u64,
    healthy: u64,
    /// When the last `failures`-th unhealthy answer came.
    tripped_at: Option<Instant>,
}

impl Counts {
    /// Whether the breaker is open at `now`: after `failures` unhealthy answers, for
    /// 2^(unhealthy / failures) seconds from the last trip, at most `max_breaker_sec`.
    pub fn open(&self, c: &Conf, now: Instant) -> bool {
        if self.unhealthy < c.failures {
            return false;
        }
        let exp = (self.unhealthy / c.failures).min(63) as u32;
        let secs = 2u64.saturating_pow(exp).min(c.max_breaker_sec);
        self.tripped_at.is_some_and(|at| {
            at.checked_add(Duration::from_secs(secs))
                .is_none_or(|end| now < end)
        })
    }

    /// One answer of the upstream.
    pub fn observe(&mut self, c: &Conf, status: u16, now: Instant) {
        if c.unhealthy_statuses.contains(&status) {
            self.unhealthy += 1;
            if self.unhealthy.is_multiple_of(c.failures) {
                self.tripped_at = Some(now);
            }
            self.healthy = 0;
        } else if c.healthy_statuses.contains(&status) && self.unhealthy > 0 {
            self.healthy += 1;
            if self.healthy >= c.successes {
                *self = Counts::default();
            }
        }
    }
}

impl Phases for ApiBreaker {
    fn in_rewrite(&self) -> bool {
        false
    }

    fn access(&self, req: &mut Req<'_>, _run: &mut Run) -> Option<Answer> {
        let counts = *self.state.0.lock().unwrap_or_else(|e| e.into_inner());
        if !counts.open(&self.conf, req.now()) {
            return None;
        }
        let c = &self.conf;
        let status = StatusCode::from_u16(c.break_response_code).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut answer = Answer::empty(status);
        if let Some(body) = &c.break_response_body {
            answer.body = body.clone().into();
        }
        for (name, value) in &c.break_response_headers {
            answer.headers.insert(name.clone(), value.clone());
        }
        Some(answer)
    }

    fn response(&self, run: &Run, _resp: &mut Response<crate::proxy::RespBody>) {
        if let Some(status) = run.upstream_status {
            let mut counts = self.state.0.lock().unwrap_or_else(|e| e.into_inner());
            counts.observe(&self.conf, status, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn opens_doubles_and_closes() {
        let c = Conf::parse(&json!({"break_response_code": 502,
            "unhealthy": {"http_statuses": [500, 503], "failures": 2},
            "healthy": {"successes": 2}, "max_breaker_sec": 3}))
        .unwrap();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut b = Counts::default();
        b.observe(&c, 500, at(0));
        assert!(!b.open(&c, at(0)), "one failure of two");
        b.observe(&c, 503, at(0));
        assert!(b.open(&c, at(0)) && b.open(&c, at(1)), "open for 2^1 s");
        assert!(!b.open(&c, at(2)), "half open after 2 s");
        // Two more failures: 2^2 = 4 s, capped at max_breaker_sec 3.
        b.observe(&c, 500, at(2));
        b.observe(&c, 500, at(2));
        assert!(b.open(&c, at(4)) && !b.open(&c, at(5)));
        // Healthy answers close it: two in a row; a failure in between starts over.
        b.observe(&c, 200, at(5));
        b.observe(&c, 500, at(5));
        b.observe(&c, 200, at(6));
        assert_ne!(b, Counts::default());
        b.observe(&c, 200, at(6));
        assert_eq!(b, Counts::default(), "closed");
        // Statuses neither healthy nor unhealthy change nothing.
        b.observe(&c, 404, at(7));
        assert_eq!(b, Counts::default());
    }
}
