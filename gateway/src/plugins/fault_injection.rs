//! The `fault-injection` plugin (rewrite phase): a share of the matching requests waits
//! `delay.duration` (the proxy sleeps once the snapshot is released), and a share is
//! answered `abort.http_status` instead of being proxied.
use super::{Answer, Phases, Req, Run};
use crate::request_vars::expand;
use http::{HeaderValue, StatusCode};
use model::plugins::fault_injection::When;
use model::vars::VarSource;
use rand::Rng;

pub struct FaultInjection(pub model::plugins::fault_injection::FaultInjection);

fn applies(when: &When, vars: &dyn VarSource) -> bool {
    let matched = when.vars.is_empty() || when.vars.iter().any(|e| e.eval(vars));
    matched
        && when
            .percentage
            .is_none_or(|p| rand::rng().random_range(1..=100u8) <= p)
}

impl Phases for FaultInjection {
    fn rewrite(&self, req: &mut Req<'_>, run: &mut Run) -> Option<Answer> {
        let vars = req.vars();
        if let Some(delay) = &self.0.delay {
            if applies(&delay.when, &vars) {
                run.delay = Some(run.delay.unwrap_or_default() + delay.duration);
            }
        }
        let abort = self.0.abort.as_ref()?;
        if !applies(&abort.when, &vars) {
            return None;
        }
        let status = StatusCode::from_u16(abort.status).unwrap_or(StatusCode::OK);
        let mut answer = Answer::empty(status);
        if let Some(body) = &abort.body {
            answer.body = expand(body, &vars).into();
        }
        for (name, template) in &abort.headers {
            if let Ok(v) = HeaderValue::from_str(&expand(template, &vars)) {
                answer.headers.insert(name.clone(), v);
            }
        }
        Some(answer)
    }
}
