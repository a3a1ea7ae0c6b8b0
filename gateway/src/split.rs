//! A route's compiled `traffic-split`: rules evaluated in order against the request's
//! variables; the first that matches picks one of its weighted upstreams by smooth
//! weighted round robin. Built by the snapshot compile, read per request.
use crate::balancer::Balancer;
use crate::plugins::Chain;
use model::plugins::traffic_split::TrafficSplit;
use model::plugins::Plugins;
use model::vars::{Expr, VarSource};
use std::sync::Arc;

pub struct Split {
    pub rules: Vec<SplitRule>,
    /// The keys of the inline upstreams this split put into the snapshot's upstream map,
    /// so that a change of the route removes them.
    pub inline_keys: Vec<String>,
}

pub struct SplitRule {
    /// Any of them must hold; none means the rule always applies.
    pub matches: Vec<Expr>,
    /// Per weighted upstream: its key in `Snapshot::upstreams`, or `None` for the route's
    /// own upstream.
    pub targets: Vec<Option<String>>,
    /// Per weighted upstream: its own plugins (our extension), run after the route's
    /// for the requests sent there.
    pub chains: Vec<Option<Arc<Chain>>>,
    /// Over the weights of `targets`; shared with the previous snapshot's rule when the
    /// targets and weights stayed, so a swap does not restart the rotation.
    pub balancer: Arc<Balancer>,
}

/// What the split decided for one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Choice<'a> {
    /// No rule matched, the matching rule picked the route's own upstream, or every
    /// weight of the matching rule is 0.
    RouteUpstream,
    /// The upstream with this key.
    Upstream(&'a str),
}

/// The split's decision with the chosen target's own plugins.
pub struct Picked<'a> {
    pub choice: Choice<'a>,
    pub chain: Option<&'a Arc<Chain>>,
}

impl Split {
    /// Compiles `def` for route `owner` (a key like `routes/7`). `key_of(id)` gives the key
    /// of a referenced upstream; inline ones get `{owner}/split/{rule}/{index}`, returned
    /// with their definitions for the caller to put into the upstream map. Balancers are
    /// carried over from `prev` rule by rule when targets and weights are the same.
    /// `chain_of(plugins, owner)` compiles a target's plugins, owned by
    /// `{owner}/split/{rule}/{index}` as its inline upstream is.
    pub fn compile<'d>(
        owner: &str,
        def: &'d TrafficSplit,
        key_of: impl Fn(&model::Id) -> String,
        chain_of: impl Fn(&Plugins, &str) -> Option<Arc<Chain>>,
        prev: Option<&Split>,
    ) -> (Split, Vec<(String, &'d model::Upstream)>) {
        let mut inline = Vec::new();
        let rules = def
            .rules
            .iter()
            .enumerate()
            .map(|(r, rule)| {
                let targets: Vec<Option<String>> = rule
                    .weighted_upstreams
                    .iter()
                    .enumerate()
                    .map(|(i, w)| match (&w.upstream_id, &w.upstream) {
                        (Some(id), _) => Some(key_of(id)),
                        (None, Some(up)) => {
                            let key = format!("{owner}/split/{r}/{i}");
                            inline.push((key.clone(), up));
                            Some(key)
                        }
                        (None, None) => None,
                    })
                    .collect();
                let chains = rule
                    .weighted_upstreams
                    .iter()
                    .enumerate()
                    .map(|(i, w)| {
                        (!w.parsed_plugins.is_empty())
                            .then(|| chain_of(&w.parsed_plugins, &format!("{owner}/split/{r}/{i}")))
                            .flatten()
                    })
                    .collect();
                let weights: Vec<u32> = rule.weighted_upstreams.iter().map(|w| w.weight).collect();
                let balancer = prev
                    .and_then(|p| p.rules.get(r))
                    .filter(|p| {
                        p.targets == targets
                            && p.balancer
                                .weights()
                                .iter()
                                .copied()
                                .eq(weights.iter().map(|w| i64::from(*w)))
                    })
                    .map(|p| p.balancer.clone())
                    .unwrap_or_else(|| Arc::new(Balancer::new(&weights)));
                SplitRule {
                    matches: rule.matches.iter().map(|m| m.expr().clone()).collect(),
                    targets,
                    chains,
                    balancer,
                }
            })
            .collect();
        let split = Split {
            rules,
            inline_keys: inline.iter().map(|(k, _)| k.clone()).collect(),
        };
        (split, inline)
    }

    /// The first rule that matches decides; its balancer picks the target.
    pub fn choose(&self, vars: &dyn VarSource) -> Picked<'_> {
        let none = Picked {
            choice: Choice::RouteUpstream,
            chain: None,
        };
        let Some(rule) = self
            .rules
            .iter()
            .find(|r| r.matches.is_empty() || r.matches.iter().any(|m| m.eval(vars)))
        else {
            return none;
        };
        let Some(i) = rule.balancer.pick(&[]) else {
            return none;
        };
        Picked {
            choice: match rule.targets.get(i) {
                Some(Some(key)) => Choice::Upstream(key),
                _ => Choice::RouteUpstream,
            },
            chain: rule.chains.get(i).and_then(Option::as_ref),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::borrow::Cow;

    struct Vars(&'static [(&'static str, &'static str)]);
    impl VarSource for Vars {
        fn get(&self, name: &str) -> Option<Cow<'_, str>> {
            self.0
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).into())
        }
    }

    fn no_chain(_: &Plugins, _: &str) -> Option<Arc<Chain>> {
        None
    }

    fn split(def: serde_json::Value) -> Split {
        let route: model::Route = model::codec::decode_value(&json!({
            "uri": "/", "upstream_id": "own", "plugins": {"traffic-split": def}
        }))
        .expect("valid route");
        let def = route
            .parsed_plugins
            .traffic_split()
            .cloned()
            .expect("has a split");
        Split::compile(
            "routes/r",
            &def,
            |id| format!("upstreams/{id}"),
            no_chain,
            None,
        )
        .0
    }

    fn picks(s: &Split, vars: &Vars, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| match s.choose(vars).choice {
                Choice::RouteUpstream => "own".to_string(),
                Choice::Upstream(k) => k.to_string(),
            })
            .collect()
    }

    #[test]
    fn rules_in_order_and_weighted_picks() {
        let s = split(json!({"rules": [
            {"match": [{"vars": [["http_x-canary", "==", "1"]]}, {"vars": [["arg_canary", "==", "1"]]}],
             "weighted_upstreams": [{"upstream_id": "canary"}]},
            {"match": [{"vars": [["arg_beta", "==", "1"]]}],
             "weighted_upstreams": [{"upstream_id": "b", "weight": 2}, {"weight": 1},
                                    {"upstream": {"nodes": {"127.0.0.1:1": 1}}, "weight": 1}]},
            {"match": [{"vars": [["arg_off", "==", "1"]]}],
             "weighted_upstreams": [{"upstream_id": "b", "weight": 0}]}
        ]}));
        assert_eq!(s.inline_keys, ["routes/r/split/1/2"]);
        let canary = ["upstreams/canary"; 2];
        assert_eq!(picks(&s, &Vars(&[("http_x-canary", "1")]), 2), canary);
        assert_eq!(picks(&s, &Vars(&[("arg_canary", "1")]), 2), canary);
        assert_eq!(picks(&s, &Vars(&[("arg_canary", "2")]), 1), ["own"]);
        assert_eq!(
            picks(&s, &Vars(&[("arg_beta", "1")]), 4),
            ["upstreams/b", "own", "routes/r/split/1/2", "upstreams/b"]
        );
        assert_eq!(picks(&s, &Vars(&[("arg_off", "1")]), 1), ["own"]);
        assert_eq!(picks(&s, &Vars(&[]), 1), ["own"]);
    }

    /// A target's own plugins: compiled as `{owner}/split/{rule}/{index}`, handed out with
    /// exactly the target the balancer picked.
    #[test]
    fn each_pick_comes_with_its_targets_own_chain() {
        let route: model::Route = model::codec::decode_value(&json!({
            "uri": "/", "upstream_id": "own", "plugins": {"traffic-split": {"rules": [
                {"weighted_upstreams": [
                    {"upstream_id": "a", "plugins": {"proxy-rewrite": {"uri": "/a"}}},
                    {"upstream_id": "b"},
                    {"plugins": {"proxy-rewrite": {"uri": "/own"}}}]}]}}
        }))
        .expect("valid route");
        let def = route.parsed_plugins.traffic_split().cloned().unwrap();
        let states = crate::plugin_state::PluginStates::default();
        let metadata = std::collections::BTreeMap::new();
        let owners = std::cell::RefCell::new(Vec::new());
        let chain_of = |p: &Plugins, owner: &str| {
            owners.borrow_mut().push(owner.to_string());
            let env = crate::plugin_state::ChainEnv {
                states: &states,
                metadata: &metadata,
            };
            Chain::compile(p, crate::plugins::Of::SplitTarget, env, owner)
        };
        let key = |id: &model::Id| format!("upstreams/{id}");
        let (s, _) = Split::compile("routes/r", &def, key, chain_of, None);
        assert_eq!(
            *owners.borrow(),
            ["routes/r/split/0/0", "routes/r/split/0/2"]
        );
        let rule = &s.rules[0];
        for _ in 0..6 {
            let picked = s.choose(&Vars(&[]));
            let want = match picked.choice {
                Choice::Upstream("upstreams/a") => Some(&rule.chains[0]),
                Choice::Upstream(_) => None,
                Choice::RouteUpstream => Some(&rule.chains[2]),
            };
            match (picked.chain, want) {
                (None, None) => {}
                (Some(got), Some(Some(want))) => assert!(Arc::ptr_eq(got, want)),
                (got, want) => panic!(
                    "{:?}: {} vs {}",
                    picked.choice,
                    got.is_some(),
                    want.is_some()
                ),
            }
        }
    }

    #[test]
    fn balancers_carry_over_only_when_the_rule_stays() {
        let def = |w: u32| {
            let route: model::Route = model::codec::decode_value(&json!({
                "uri": "/", "upstream_id": "own", "plugins": {"traffic-split": {"rules": [
                    {"weighted_upstreams": [{"upstream_id": "a", "weight": w}, {"weight": 1}]}
                ]}}
            }))
            .expect("valid route");
            route
                .parsed_plugins
                .traffic_split()
                .cloned()
                .expect("has a split")
        };
        let key = |id: &model::Id| format!("upstreams/{id}");
        let (first, _) = Split::compile("routes/r", &def(3), key, no_chain, None);
        let (same, _) = Split::compile("routes/r", &def(3), key, no_chain, Some(&first));
        let (other, _) = Split::compile("routes/r", &def(2), key, no_chain, Some(&first));
        assert!(Arc::ptr_eq(
            &first.rules[0].balancer,
            &same.rules[0].balancer
        ));
        assert!(!Arc::ptr_eq(
            &first.rules[0].balancer,
            &other.rules[0].balancer
        ));
    }
}
