//! The `traffic-split` plugin (APISIX): rules of `vars` matches, each sending requests to
//! weighted upstreams, for canary and blue-green releases. Parsed from a route's `plugins`.
use crate::codec::from_value;
use crate::plugins::{Plugins, Scope};
use crate::route::Vars;
use crate::upstream::MAX_WEIGHT;
use crate::vars::Expr;
use crate::{Id, Resource, Upstream, ValidationError};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

/// The plugin's name under `plugins`.
pub const NAME: &str = "traffic-split";

/// APISIX's `maxItems` of `weighted_upstreams`.
pub const MAX_WEIGHTED_UPSTREAMS: usize = 20;

/// A validated `traffic-split` configuration.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficSplit {
    #[serde(default)]
    pub rules: Vec<SplitRule>,
}

/// One rule: when any of `matches` holds (or there is none), the request goes to one of
/// `weighted_upstreams`, chosen by smooth weighted round robin.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitRule {
    #[serde(rename = "match", default)]
    pub matches: Vec<SplitMatch>,
    /// APISIX's default: the route's own upstream with weight 1.
    #[serde(default = "own_upstream")]
    pub weighted_upstreams: Vec<WeightedUpstream>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitMatch {
    /// A `vars` expression (APISIX's lua-resty-expr), as on routes.
    #[schemars(with = "Vec<serde_json::Value>")]
    pub vars: Vars,
}

/// One target of a rule. Neither `upstream_id` nor `upstream` means the route's own
/// upstream (or its service's).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WeightedUpstream {
    #[schemars(with = "Option<String>")]
    pub upstream_id: Option<Id>,
    /// An upstream, as the `upstreams` resource takes it.
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub upstream: Option<Upstream>,
    #[serde(default = "one")]
    pub weight: u32,
    /// Our extension (APISIX has none): plugins that run only for the requests sent to
    /// this target, after the route's, such as a Gateway API backendRef's own filters.
    /// Only the plugins that shape what is forwarded or answered ([`TARGET_PLUGINS`]).
    #[serde(default)]
    pub plugins: Option<serde_json::Map<String, Value>>,
    /// `plugins`, parsed.
    #[serde(skip)]
    #[schemars(skip)]
    pub parsed_plugins: Plugins,
}

/// What a weighted upstream's `plugins` may hold: the plugins whose work is on the
/// request as forwarded and on the response, none that decides whether the request is
/// served (those belong to the route, before the split chooses).
pub const TARGET_PLUGINS: &[&str] = &[
    crate::plugins::proxy_rewrite::NAME,
    crate::plugins::response_rewrite::NAME,
    crate::plugins::proxy_mirror::NAME,
];

fn one() -> u32 {
    1
}

fn own_upstream() -> Vec<WeightedUpstream> {
    vec![WeightedUpstream {
        upstream_id: None,
        upstream: None,
        weight: 1,
        plugins: None,
        parsed_plugins: Plugins::default(),
    }]
}

impl SplitRule {
    /// Whether the rule applies to a request: no `match` entries, or any of them holds.
    pub fn matches(&self, vars: &dyn crate::vars::VarSource) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.vars.0.eval(vars))
    }
}

impl SplitMatch {
    pub fn expr(&self) -> &Expr {
        &self.vars.0
    }
}

impl TrafficSplit {
    /// Parses and validates the plugin's configuration; errors name the field below
    /// `plugins.traffic-split` (`rules[0].weighted_upstreams[1].weight`).
    pub fn parse(value: &Value) -> Result<TrafficSplit, ValidationError> {
        let within = format!("plugins.{NAME}");
        if !value.is_object() {
            return Err(ValidationError::new(within, "must be an object"));
        }
        let mut split: TrafficSplit = from_value(value).map_err(|e| e.within(&within))?;
        split.validate().map_err(|e| e.within(&within))?;
        Ok(split)
    }

    fn validate(&mut self) -> Result<(), ValidationError> {
        for (r, rule) in self.rules.iter_mut().enumerate() {
            let at = format!("rules[{r}].weighted_upstreams");
            let ups = &mut rule.weighted_upstreams;
            if ups.is_empty() || ups.len() > MAX_WEIGHTED_UPSTREAMS {
                return Err(ValidationError::new(
                    at,
                    format!("must have 1 to {MAX_WEIGHTED_UPSTREAMS} entries"),
                ));
            }
            for (i, w) in ups.iter_mut().enumerate() {
                let at = format!("{at}[{i}]");
                if w.upstream_id.is_some() && w.upstream.is_some() {
                    return Err(ValidationError::new(
                        format!("{at}.upstream"),
                        "give either upstream_id or upstream, not both",
                    ));
                }
                if w.weight > MAX_WEIGHT {
                    return Err(ValidationError::new(
                        format!("{at}.weight"),
                        format!("must be at most {MAX_WEIGHT}"),
                    ));
                }
                if let Some(u) = &w.upstream {
                    u.validate()
                        .map_err(|e| e.within(&format!("{at}.upstream")))?;
                }
                if let Some(plugins) = &w.plugins {
                    if let Some(name) = plugins
                        .keys()
                        .find(|n| !TARGET_PLUGINS.contains(&n.as_str()))
                    {
                        return Err(ValidationError::new(
                            format!("{at}.plugins.{name}"),
                            format!(
                                "not supported on a weighted upstream (supported: {})",
                                TARGET_PLUGINS.join(", ")
                            ),
                        ));
                    }
                    w.parsed_plugins = crate::plugins::parse(Some(plugins), Scope::Route)
                        .map_err(|e| e.within(&at))?;
                }
            }
        }
        Ok(())
    }

    /// Every `upstream_id` of the rules, with the field that names it.
    pub fn upstream_ids(&self) -> impl Iterator<Item = (String, &Id)> {
        self.rules.iter().enumerate().flat_map(|(r, rule)| {
            rule.weighted_upstreams
                .iter()
                .enumerate()
                .filter_map(move |(i, w)| {
                    w.upstream_id.as_ref().map(|id| {
                        (
                            format!(
                                "plugins.{NAME}.rules[{r}].weighted_upstreams[{i}].upstream_id"
                            ),
                            id,
                        )
                    })
                })
        })
    }
}
