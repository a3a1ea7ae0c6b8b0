//! Services: shared hosts and upstream that routes can inherit through `service_id`.
use crate::codec::check_meta;
use crate::host::HostPattern;
use crate::plugins::{self, Plugins, Scope};
use crate::{Id, Kind, Resource, Upstream, ValidationError};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub id: Option<Id>,
    pub upstream: Option<Upstream>,
    pub upstream_id: Option<Id>,
    pub hosts: Option<Vec<HostPattern>>,
    pub plugins: Option<Map<String, Value>>,
    /// `plugins`, parsed by [`Resource::parse_plugins`]; merged under each route's.
    #[serde(skip)]
    pub parsed_plugins: Plugins,
    pub enable_websocket: Option<bool>,
    pub name: Option<String>,
    pub desc: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub create_time: Option<u64>,
    pub update_time: Option<u64>,
}

impl Resource for Service {
    const KIND: Kind = Kind::Services;

    fn id(&self) -> Option<&Id> {
        self.id.as_ref()
    }

    fn validate(&self) -> Result<(), ValidationError> {
        check_meta(
            self.name.as_deref(),
            self.desc.as_deref(),
            self.labels.as_ref(),
        )?;
        if self.upstream.is_some() && self.upstream_id.is_some() {
            return Err(ValidationError::new(
                "upstream_id",
                "give either upstream or upstream_id, not both",
            ));
        }
        if let Some(u) = &self.upstream {
            u.validate().map_err(|e| e.within("upstream"))?;
        }
        if matches!(&self.hosts, Some(h) if h.is_empty()) {
            return Err(ValidationError::new(
                "hosts",
                "must not be empty when given",
            ));
        }
        Ok(())
    }

    fn parse_plugins(&mut self) -> Result<(), ValidationError> {
        self.parsed_plugins = plugins::parse(self.plugins.as_ref(), Scope::Service)?;
        Ok(())
    }

    fn references(&self) -> Vec<(Kind, &Id, String)> {
        self.upstream_id
            .iter()
            .map(|id| (Kind::Upstreams, id, "upstream_id".to_string()))
            .collect()
    }
}
