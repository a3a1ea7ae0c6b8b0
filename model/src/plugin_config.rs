//! Plugin configs, consumer groups and global rules: named sets of plugins. A route takes a
//! plugin config's plugins through `plugin_config_id` (its own win); a consumer takes its
//! group's through `group_id` (its own win); global rules run for every request, before
//! the route's plugins.
use crate::codec::check_meta;
use crate::plugins::{self, Plugins, Scope};
use crate::{Id, Kind, Resource, ValidationError};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::marker::PhantomData;

/// A named set of plugins, stored as the kind `K` says: a plugin config or a consumer
/// group (the same fields in APISIX; a group's plugins are checked as a plugin config's,
/// so neither holds a credential).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, bound = "")]
pub struct PluginSet<K> {
    pub id: Option<Id>,
    pub plugins: Map<String, Value>,
    #[serde(skip)]
    pub parsed_plugins: Plugins,
    pub name: Option<String>,
    pub desc: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub create_time: Option<u64>,
    pub update_time: Option<u64>,
    #[serde(skip)]
    kind: PhantomData<K>,
}

/// Which kind a [`PluginSet`] is.
pub trait SetKind: std::fmt::Debug + Clone + Send + Sync + 'static {
    const KIND: Kind;
}

#[derive(Debug, Clone)]
pub struct OfPluginConfigs;
impl SetKind for OfPluginConfigs {
    const KIND: Kind = Kind::PluginConfigs;
}

#[derive(Debug, Clone)]
pub struct OfConsumerGroups;
impl SetKind for OfConsumerGroups {
    const KIND: Kind = Kind::ConsumerGroups;
}

/// Plugins for the routes whose `plugin_config_id` names it.
pub type PluginConfig = PluginSet<OfPluginConfigs>;
/// Plugins for the consumers whose `group_id` names it.
pub type ConsumerGroup = PluginSet<OfConsumerGroups>;

impl<K: SetKind> Resource for PluginSet<K> {
    const KIND: Kind = K::KIND;

    fn id(&self) -> Option<&Id> {
        self.id.as_ref()
    }

    fn validate(&self) -> Result<(), ValidationError> {
        check_meta(
            self.name.as_deref(),
            self.desc.as_deref(),
            self.labels.as_ref(),
        )
    }

    fn parse_plugins(&mut self) -> Result<(), ValidationError> {
        self.parsed_plugins = plugins::parse(Some(&self.plugins), Scope::PluginConfig)?;
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalRule {
    pub id: Option<Id>,
    pub plugins: Map<String, Value>,
    #[serde(skip)]
    pub parsed_plugins: Plugins,
    pub create_time: Option<u64>,
    pub update_time: Option<u64>,
}

impl Resource for GlobalRule {
    const KIND: Kind = Kind::GlobalRules;

    fn id(&self) -> Option<&Id> {
        self.id.as_ref()
    }

    fn validate(&self) -> Result<(), ValidationError> {
        Ok(())
    }

    fn parse_plugins(&mut self) -> Result<(), ValidationError> {
        self.parsed_plugins = plugins::parse(Some(&self.plugins), Scope::GlobalRule)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode;

    #[test]
    fn sets_of_plugins() {
        let pc: PluginConfig =
            decode(br#"{"id":"1","plugins":{"proxy-rewrite":{"uri":"/x"}},"desc":"d"}"#).unwrap();
        assert!(pc.parsed_plugins.get("proxy-rewrite").is_some());
        let g: GlobalRule = decode(br#"{"id":"1","plugins":{"request-id":{}}}"#).unwrap();
        assert!(g.parsed_plugins.get("request-id").is_some());
        for (bad, field) in [
            (r#"{"id":"1"}"#, "plugins"),
            (
                r#"{"plugins":{"traffic-split":{}}}"#,
                "plugins.traffic-split",
            ),
            (
                r#"{"plugins":{"cors":{"max_age":"x"}}}"#,
                "plugins.cors.max_age",
            ),
        ] {
            assert_eq!(
                decode::<PluginConfig>(bad.as_bytes()).unwrap_err().field,
                field,
                "{bad}"
            );
            assert_eq!(
                decode::<GlobalRule>(bad.as_bytes()).unwrap_err().field,
                field,
                "{bad}"
            );
        }
        let e = decode::<GlobalRule>(br#"{"plugins":{},"desc":"x"}"#).unwrap_err();
        assert_eq!(e.field, "desc");
    }
}
