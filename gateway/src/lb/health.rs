//! Node health, and the choice of candidate nodes by health, priority and zone.
//!
//! The state machine is lua-resty-healthcheck's (APISIX's checker), so `checks` behave as
//! APISIX users expect: four counters per node (successes, HTTP failures, TCP failures,
//! timeouts), one threshold each. A success clears the failure counters and any failure
//! clears the success counter, so thresholds count *consecutive* outcomes, each failure kind
//! on its own. A node that reaches a threshold flips; in between it is "mostly" healthy or
//! unhealthy and still counts as what it was. Outcomes that agree with a settled state are
//! not counted. Active probes and passive verdicts feed the same counters, each with its
//! own thresholds, so an active success also resets passive failures.
use model::checks::{ActiveCheck, PassiveCheck};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// What one exchange with a node, or one probe of it, told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status: a success or an HTTP failure if the status is listed
    /// in `healthy` or `unhealthy.http_statuses`, else ignored.
    Status(u16),
    /// Something that was not an HTTP response: an HTTP failure.
    InvalidResponse,
    /// A TCP probe connected: a success.
    Connected,
    /// Connecting failed or the connection broke.
    TcpFailure,
    Timeout,
}

/// The thresholds of one kind of check (`checks.active` or `checks.passive`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thresholds {
    healthy_statuses: StatusSet,
    successes: u8,
    unhealthy_statuses: StatusSet,
    http_failures: u8,
    tcp_failures: u8,
    timeouts: u8,
}

impl Thresholds {
    pub fn active(c: &ActiveCheck) -> Thresholds {
        Thresholds {
            healthy_statuses: StatusSet::of(&c.healthy.http_statuses),
            successes: limit(c.healthy.successes),
            unhealthy_statuses: StatusSet::of(&c.unhealthy.http_statuses),
            http_failures: limit(c.unhealthy.http_failures),
            tcp_failures: limit(c.unhealthy.tcp_failures),
            timeouts: limit(c.unhealthy.timeouts),
        }
    }

    pub fn passive(c: &PassiveCheck) -> Thresholds {
        Thresholds {
            healthy_statuses: StatusSet::of(&c.healthy.http_statuses),
            successes: limit(c.healthy.successes),
            unhealthy_statuses: StatusSet::of(&c.unhealthy.http_statuses),
            http_failures: limit(c.unhealthy.http_failures),
            tcp_failures: limit(c.unhealthy.tcp_failures),
            timeouts: limit(c.unhealthy.timeouts),
        }
    }
}

/// The model bounds thresholds to 1..=254; 0 would disable a counter, as in
/// lua-resty-healthcheck.
fn limit(n: u32) -> u8 {
    n.min(254) as u8
}

/// HTTP statuses 0..=639 as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatusSet([u64; 10]);

impl StatusSet {
    fn of(statuses: &[u16]) -> StatusSet {
        let mut bits = [0u64; 10];
        for s in statuses.iter().filter(|s| **s < 640) {
            bits[usize::from(*s / 64)] |= 1 << (s % 64);
        }
        StatusSet(bits)
    }

    fn contains(&self, s: u16) -> bool {
        s < 640 && self.0[usize::from(s / 64)] & (1 << (s % 64)) != 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    #[default]
    Healthy,
    /// Healthy, with failures counting towards unhealthy.
    MostlyHealthy,
    /// Unhealthy, with successes counting towards healthy.
    MostlyUnhealthy,
    Unhealthy,
}

impl State {
    pub fn is_healthy(self) -> bool {
        matches!(self, State::Healthy | State::MostlyHealthy)
    }
}

/// A change of [`NodeHealth::is_healthy`], worth a log line and a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Unchanged,
    BecameHealthy,
    BecameUnhealthy,
}

/// One node's health. Nodes start healthy, as in lua-resty-healthcheck.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeHealth {
    state: State,
    successes: u8,
    http_failures: u8,
    tcp_failures: u8,
    timeouts: u8,
}

#[derive(Clone, Copy)]
enum Counter {
    Successes,
    HttpFailures,
    TcpFailures,
    Timeouts,
}

impl NodeHealth {
    pub fn state(&self) -> State {
        self.state
    }

    pub fn is_healthy(&self) -> bool {
        self.state.is_healthy()
    }

    /// Counts `outcome` against `t` and moves the state.
    pub fn record(&mut self, outcome: Outcome, t: &Thresholds) -> Transition {
        let (counter, limit) = match outcome {
            Outcome::Status(s) if t.healthy_statuses.contains(s) => {
                (Counter::Successes, t.successes)
            }
            Outcome::Status(s) if t.unhealthy_statuses.contains(s) => {
                (Counter::HttpFailures, t.http_failures)
            }
            Outcome::Status(_) => return Transition::Unchanged,
            Outcome::InvalidResponse => (Counter::HttpFailures, t.http_failures),
            Outcome::Connected => (Counter::Successes, t.successes),
            Outcome::TcpFailure => (Counter::TcpFailures, t.tcp_failures),
            Outcome::Timeout => (Counter::Timeouts, t.timeouts),
        };
        let success = matches!(counter, Counter::Successes);
        let settled = if success {
            State::Healthy
        } else {
            State::Unhealthy
        };
        if limit == 0 || self.state == settled {
            return Transition::Unchanged;
        }
        let was_healthy = self.is_healthy();
        if success {
            (self.http_failures, self.tcp_failures, self.timeouts) = (0, 0, 0);
        } else {
            self.successes = 0;
        }
        let count = match counter {
            Counter::Successes => &mut self.successes,
            Counter::HttpFailures => &mut self.http_failures,
            Counter::TcpFailures => &mut self.tcp_failures,
            Counter::Timeouts => &mut self.timeouts,
        };
        *count = count.saturating_add(1);
        if *count >= limit {
            self.state = settled;
        } else if self.state == State::Healthy && !success {
            self.state = State::MostlyHealthy;
        } else if self.state == State::Unhealthy && success {
            self.state = State::MostlyUnhealthy;
        }
        transition(was_healthy, self.is_healthy())
    }

    /// Sets the state outright and clears the counters (an operator's override).
    pub fn force(&mut self, healthy: bool) -> Transition {
        let was_healthy = self.is_healthy();
        *self = NodeHealth {
            state: if healthy {
                State::Healthy
            } else {
                State::Unhealthy
            },
            ..NodeHealth::default()
        };
        transition(was_healthy, healthy)
    }
}

fn transition(was: bool, is: bool) -> Transition {
    match (was, is) {
        (false, true) => Transition::BecameHealthy,
        (true, false) => Transition::BecameUnhealthy,
        _ => Transition::Unchanged,
    }
}

/// A [`NodeHealth`] shared by the request path (reads) and the checkers (writes). Reads
/// take no lock.
#[derive(Debug)]
pub struct HealthCell {
    state: Mutex<NodeHealth>,
    healthy: AtomicBool,
}

impl Default for HealthCell {
    fn default() -> Self {
        HealthCell {
            state: Mutex::new(NodeHealth::default()),
            healthy: AtomicBool::new(true),
        }
    }
}

impl HealthCell {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn get(&self) -> NodeHealth {
        *self.lock()
    }

    pub fn record(&self, outcome: Outcome, t: &Thresholds) -> Transition {
        self.update(|h| h.record(outcome, t))
    }

    pub fn force(&self, healthy: bool) -> Transition {
        self.update(|h| h.force(healthy))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NodeHealth> {
        // The state is plain counters: still meaningful after a panic elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut NodeHealth) -> Transition) -> Transition {
        let mut h = self.lock();
        let t = f(&mut h);
        // Stored under the lock, so the flag never lags behind a later update.
        self.healthy.store(h.is_healthy(), Ordering::Relaxed);
        t
    }
}

/// What [`select`] needs to know of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub weight: u32,
    /// Higher first (APISIX).
    pub priority: i32,
    pub zone: Option<&'a str>,
    pub healthy: bool,
}

/// The indices of the nodes a balancer may choose from for one attempt, in order:
///
/// 1. nodes of weight 0 and nodes this request already `tried` are out;
/// 2. healthy nodes only, unless no node at all is healthy: then every node, since
///    refusing all traffic is worse than trying (APISIX). Only the nodes' own health
///    counts, so a request whose healthy nodes all failed is not retried on unhealthy ones;
/// 3. the highest priority left: lower priorities are fallbacks for when every node
///    above them is unhealthy or tried;
/// 4. with this gateway's `zone`, the nodes of that zone if any is left, else all.
///
/// Empty when nothing is left.
pub fn select(nodes: &[Candidate<'_>], tried: &[usize], zone: Option<&str>) -> Vec<usize> {
    let any_healthy = nodes.iter().any(|n| n.weight > 0 && n.healthy);
    let mut pool: Vec<usize> = nodes
        .iter()
        .enumerate()
        .filter(|(i, n)| n.weight > 0 && !tried.contains(i) && (n.healthy || !any_healthy))
        .map(|(i, _)| i)
        .collect();
    if let Some(top) = pool.iter().map(|i| nodes[*i].priority).max() {
        pool.retain(|i| nodes[*i].priority == top);
    }
    if let Some(z) = zone {
        if pool.iter().any(|i| nodes[*i].zone == Some(z)) {
            pool.retain(|i| nodes[*i].zone == Some(z));
        }
    }
    pool
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passive() -> Thresholds {
        Thresholds::passive(&PassiveCheck::default())
    }

    fn active() -> Thresholds {
        Thresholds::active(&ActiveCheck::default())
    }

    fn letter(s: State) -> char {
        match s {
            State::Healthy => 'H',
            State::MostlyHealthy => 'h',
            State::MostlyUnhealthy => 'u',
            State::Unhealthy => 'U',
        }
    }

    fn state(letter: char) -> State {
        match letter {
            'H' => State::Healthy,
            'h' => State::MostlyHealthy,
            'u' => State::MostlyUnhealthy,
            _ => State::Unhealthy,
        }
    }

    /// Runs `steps` from `start` and gives the state after each, one letter each (H, h for
    /// mostly healthy, u, U). A step is `p` (passive) or `a` (active), then a status, `T`
    /// (TCP failure), `O` (timeout), `I` (invalid response) or `C` (connected), optionally
    /// `*n` for n times: `p500*5 a200`.
    fn run(start: char, steps: &str) -> String {
        let (p, a) = (passive(), active());
        let mut h = NodeHealth {
            state: state(start),
            ..NodeHealth::default()
        };
        let mut out = String::new();
        for step in steps.split_whitespace() {
            let (step, times) = match step.split_once('*') {
                Some((s, n)) => (s, n.parse().unwrap()),
                None => (step, 1),
            };
            let t = if step.starts_with('p') { &p } else { &a };
            let outcome = match &step[1..] {
                "T" => Outcome::TcpFailure,
                "O" => Outcome::Timeout,
                "I" => Outcome::InvalidResponse,
                "C" => Outcome::Connected,
                status => Outcome::Status(status.parse().unwrap()),
            };
            for _ in 0..times {
                h.record(outcome, t);
                out.push(letter(h.state()));
            }
        }
        out
    }

    /// Checks the states after `steps` from `start`, as [`run`] writes them.
    fn check_states(name: &str, start: char, steps: &str, want: &str) {
        assert_eq!(run(start, steps), want, "{name}: {steps}");
    }

    /// Passive defaults: successes 5 of 2xx/3xx; failures 5 of 429/500/503, 2 TCP, 7
    /// timeouts. Active: successes 2 of 200/302; failures 5 of 404/429/5xx, 2 TCP, 3 timeouts.
    #[test]
    fn state_machine() {
        check_states("passive: 5 unhealthy statuses", 'H', "p500*5", "hhhhU");
        check_states(
            "503 and 429 count alike",
            'H',
            "p503 p429 p500 p503 p429",
            "hhhhU",
        );
        check_states(
            "a success restarts the count",
            'H',
            "p500*2 p200 p500*5",
            "hhhhhhhU",
        );
        check_states(
            "unlisted statuses are ignored",
            'H',
            "p404 p502 p100",
            "HHH",
        );
        check_states("not HTTP is an HTTP failure", 'H', "pI*5", "hhhhU");
        check_states("2 TCP failures", 'H', "pT*2", "hU");
        check_states("7 timeouts", 'H', "pO*7", "hhhhhhU");
        check_states(
            "failure kinds count apart",
            'H',
            "pT pO p500 pO pT",
            "hhhhU",
        );
        check_states("successes not counted when healthy", 'H', "p200*3", "HHH");
        check_states("failures not counted when unhealthy", 'U', "p500 pT", "UU");
        check_states("passive: 5 successes heal", 'U', "p204*5", "uuuuH");
        check_states(
            "a failure restarts the healing",
            'U',
            "p200*2 p500 p200*2",
            "uuuuu",
        );
        check_states("active: 2 successes heal", 'U', "a200 a302", "uH");
        check_states("active: tcp probe connects", 'U', "aC*2", "uH");
        check_states("active: 404 is a failure", 'H', "a404*5", "hhhhU");
        check_states("active: 201 is neither", 'H', "a201", "H");
        check_states("active: 3 timeouts", 'H', "aO*3", "hhU");
        check_states(
            "active success resets passive",
            'H',
            "p500*4 a200 p500*4",
            "hhhhhhhhh",
        );
        check_states("mostly healthy heals anew", 'h', "a200 a200", "hH");
    }

    #[test]
    fn transitions_are_reported_once() {
        let p = passive();
        let mut h = NodeHealth::default();
        let got: Vec<Transition> = (0..6).map(|_| h.record(Outcome::TcpFailure, &p)).collect();
        use Transition::*;
        assert_eq!(
            got,
            [
                Unchanged,
                BecameUnhealthy,
                Unchanged,
                Unchanged,
                Unchanged,
                Unchanged
            ]
        );
        let got: Vec<Transition> = (0..6).map(|_| h.record(Outcome::Status(200), &p)).collect();
        assert_eq!(
            got,
            [
                Unchanged,
                Unchanged,
                Unchanged,
                Unchanged,
                BecameHealthy,
                Unchanged
            ]
        );
        assert_eq!(h.force(false), BecameUnhealthy);
        assert_eq!(h.force(false), Unchanged);
        assert_eq!(
            h,
            NodeHealth {
                state: State::Unhealthy,
                ..NodeHealth::default()
            }
        );
    }

    #[test]
    fn thresholds_from_checks() {
        let mut c = PassiveCheck::default();
        c.unhealthy.http_statuses = vec![502];
        c.unhealthy.http_failures = 1;
        let t = Thresholds::passive(&c);
        let mut h = NodeHealth::default();
        assert_eq!(h.record(Outcome::Status(500), &t), Transition::Unchanged);
        assert_eq!(
            h.record(Outcome::Status(502), &t),
            Transition::BecameUnhealthy
        );
        assert!(StatusSet::of(&[200, 599, 639]).contains(639));
        assert!(!StatusSet::of(&[700]).contains(700));
    }

    #[test]
    fn cell_flag_follows_the_state() {
        let cell = HealthCell::default();
        let p = passive();
        assert!(cell.is_healthy());
        cell.record(Outcome::TcpFailure, &p);
        assert!(cell.is_healthy(), "mostly healthy is healthy");
        assert_eq!(
            cell.record(Outcome::TcpFailure, &p),
            Transition::BecameUnhealthy
        );
        assert!(!cell.is_healthy());
        assert_eq!(cell.get().state(), State::Unhealthy);
        assert_eq!(cell.force(true), Transition::BecameHealthy);
        assert!(cell.is_healthy());
    }

    /// `h`/`u` healthy or not, then the priority, then an optional zone: `h0`, `u1b`;
    /// a `w0:` prefix gives weight 0 (else 1).
    fn nodes(spec: &str) -> Vec<Candidate<'_>> {
        spec.split_whitespace()
            .map(|n| {
                let (weight, n) = match n.strip_prefix("w0:") {
                    Some(rest) => (0, rest),
                    None => (1, n),
                };
                let digits = n[1..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '-')
                    .count();
                let zone = &n[1 + digits..];
                Candidate {
                    weight,
                    healthy: n.starts_with('h'),
                    priority: n[1..1 + digits].parse().unwrap(),
                    zone: (!zone.is_empty()).then_some(zone),
                }
            })
            .collect()
    }

    /// Checks one selection: `spec` as for [`nodes`], the indices already `tried`, the
    /// gateway's zone, and the indices expected.
    fn check(name: &str, spec: &str, tried: &[usize], zone: Option<&str>, want: &[usize]) {
        assert_eq!(select(&nodes(spec), tried, zone), want, "{name}: {spec}");
    }

    #[test]
    fn selection_by_health() {
        check("all healthy", "h0 h0 h0", &[], None, &[0, 1, 2]);
        check("unhealthy skipped", "h0 u0 h0", &[], None, &[0, 2]);
        check("none healthy: all", "u0 u0", &[], None, &[0, 1]);
        check("weight 0 never", "w0:h0 h0 w0:u0", &[], None, &[1]);
        check(
            "weight 0 healthy does not count",
            "w0:h0 u0",
            &[],
            None,
            &[1],
        );
        check("nothing", "", &[], None, &[]);
    }

    #[test]
    fn selection_on_retry() {
        check("tried skipped", "h0 h0 h0", &[1], None, &[0, 2]);
        check(
            "healthy all tried: no unhealthy retry",
            "h0 u0 u0",
            &[0],
            None,
            &[],
        );
        check(
            "none healthy, retry the rest",
            "u0 u0 u0",
            &[2],
            None,
            &[0, 1],
        );
    }

    #[test]
    fn selection_by_priority() {
        check("highest priority first", "h1 h0 h1 h-1", &[], None, &[0, 2]);
        check(
            "higher group down: next group",
            "u1 u1 h0 h0 h-1",
            &[],
            None,
            &[2, 3],
        );
        check("partly down group still wins", "u1 h1 h0", &[], None, &[1]);
        check(
            "all down: highest group of all",
            "u1 u0 u1",
            &[],
            None,
            &[0, 2],
        );
        check(
            "higher group tried: next group",
            "h1 h0 h0",
            &[0],
            None,
            &[1, 2],
        );
        check("negative priorities", "h-2 h-1", &[], None, &[1]);
    }

    #[test]
    fn selection_by_zone() {
        check("prefer own zone", "h0a h0b h0a", &[], Some("a"), &[0, 2]);
        check("no node in zone: all", "h0b h0c", &[], Some("a"), &[0, 1]);
        check(
            "zone nodes unhealthy: others",
            "u0a h0b h0c",
            &[],
            Some("a"),
            &[1, 2],
        );
        check("zone nodes tried: others", "h0a h0b", &[0], Some("a"), &[1]);
        check(
            "no zone given: no preference",
            "h0a h0b",
            &[],
            None,
            &[0, 1],
        );
        check("priority before zone", "h1b h0a", &[], Some("a"), &[0]);
        check(
            "zone within the chosen group",
            "h1b h1a h0a",
            &[],
            Some("a"),
            &[1],
        );
    }
}
