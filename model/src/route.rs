//! Routes: which requests match, and where they go.
use crate::codec::check_meta;
use crate::host::HostPattern;
use crate::path::PathPattern;
use crate::plugins::{self, Plugins, Scope};
use crate::timeout::Timeout;
use crate::vars::{parse_ip_or_cidr, Expr};
use crate::{Id, Kind, Resource, Upstream, ValidationError};
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub id: Option<Id>,
    pub uri: Option<PathPattern>,
    pub uris: Option<Vec<PathPattern>>,
    pub host: Option<HostPattern>,
    pub hosts: Option<Vec<HostPattern>>,
    pub methods: Option<Vec<Method>>,
    pub remote_addr: Option<IpRange>,
    pub remote_addrs: Option<Vec<IpRange>>,
    pub vars: Option<Vars>,
    #[serde(default)]
    pub priority: i64,
    pub upstream: Option<Upstream>,
    pub upstream_id: Option<Id>,
    pub service_id: Option<Id>,
    /// A plugin config whose plugins run under the route's own.
    pub plugin_config_id: Option<Id>,
    pub plugins: Option<Map<String, Value>>,
    /// `plugins`, parsed by [`Resource::parse_plugins`] (the enabled ones).
    #[serde(skip)]
    pub parsed_plugins: Plugins,
    #[serde(default = "enabled")]
    pub status: Status,
    pub timeout: Option<Timeout>,
    pub enable_websocket: Option<bool>,
    pub name: Option<String>,
    pub desc: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub create_time: Option<u64>,
    pub update_time: Option<u64>,
}

fn enabled() -> Status {
    Status(1)
}

/// `status`: 1 serves, 0 disables the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u8);

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u64::deserialize(d) {
            Ok(0) => Ok(Status(0)),
            Ok(1) => Ok(Status(1)),
            _ => Err(serde::de::Error::custom(
                "status must be 0 (disabled) or 1 (enabled)",
            )),
        }
    }
}

/// An HTTP method APISIX accepts in `methods`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Method(pub String);

pub const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE",
];

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if METHODS.contains(&s.as_str()) {
            Ok(Method(s))
        } else {
            Err(serde::de::Error::custom(format!(
                "unknown method {s:?}; expected one of {}",
                METHODS.join(", ")
            )))
        }
    }
}

/// An IP address or CIDR of `remote_addrs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange(pub IpNet);

impl<'de> Deserialize<'de> for IpRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_ip_or_cidr(&s)
            .map(IpRange)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not an IP address or CIDR")))
    }
}

/// A compiled `vars` expression.
#[derive(Debug, Clone)]
pub struct Vars(pub Expr);

impl<'de> Deserialize<'de> for Vars {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Expr::parse(&v).map(Vars).map_err(|(path, msg)| {
            if path.is_empty() {
                serde::de::Error::custom(msg)
            } else {
                serde::de::Error::custom(format!("at {path}: {msg}"))
            }
        })
    }
}

impl Route {
    pub fn paths(&self) -> Vec<&PathPattern> {
        match (&self.uri, &self.uris) {
            (Some(u), _) => vec![u],
            (None, Some(us)) => us.iter().collect(),
            _ => Vec::new(),
        }
    }

    /// The route's own hosts; empty means "inherit from the service, or any host".
    pub fn own_hosts(&self) -> Vec<&HostPattern> {
        match (&self.host, &self.hosts) {
            (Some(h), _) => vec![h],
            (None, Some(hs)) => hs.iter().collect(),
            _ => Vec::new(),
        }
    }

    pub fn remote_ranges(&self) -> Vec<IpNet> {
        match (&self.remote_addr, &self.remote_addrs) {
            (Some(r), _) => vec![r.0],
            (None, Some(rs)) => rs.iter().map(|r| r.0).collect(),
            _ => Vec::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.status.0 == 1
    }
}

fn exclusive(a: bool, b: bool, a_name: &str, b_name: &str) -> Result<(), ValidationError> {
    if a && b {
        Err(ValidationError::new(
            b_name,
            format!("give either {a_name} or {b_name}, not both"),
        ))
    } else {
        Ok(())
    }
}

impl Resource for Route {
    const KIND: Kind = Kind::Routes;

    fn id(&self) -> Option<&Id> {
        self.id.as_ref()
    }

    fn validate(&self) -> Result<(), ValidationError> {
        check_meta(
            self.name.as_deref(),
            self.desc.as_deref(),
            self.labels.as_ref(),
        )?;
        exclusive(self.uri.is_some(), self.uris.is_some(), "uri", "uris")?;
        exclusive(self.host.is_some(), self.hosts.is_some(), "host", "hosts")?;
        exclusive(
            self.remote_addr.is_some(),
            self.remote_addrs.is_some(),
            "remote_addr",
            "remote_addrs",
        )?;
        exclusive(
            self.upstream.is_some(),
            self.upstream_id.is_some(),
            "upstream",
            "upstream_id",
        )?;
        if self.uri.is_none() && self.uris.is_none() {
            return Err(ValidationError::new("uri", "a route needs uri or uris"));
        }
        for (field, empty) in [
            ("uris", matches!(&self.uris, Some(v) if v.is_empty())),
            ("hosts", matches!(&self.hosts, Some(v) if v.is_empty())),
            ("methods", matches!(&self.methods, Some(v) if v.is_empty())),
            (
                "remote_addrs",
                matches!(&self.remote_addrs, Some(v) if v.is_empty()),
            ),
        ] {
            if empty {
                return Err(ValidationError::new(field, "must not be empty when given"));
            }
        }
        // As APISIX's schema: plugins alone make a route (one that `public-api`,
        // `redirect` or an authentication answers; anything else it answers 503).
        let has_plugins = self.plugins.as_ref().is_some_and(|p| !p.is_empty());
        if self.upstream.is_none()
            && self.upstream_id.is_none()
            && self.service_id.is_none()
            && self.plugin_config_id.is_none()
            && !has_plugins
        {
            return Err(ValidationError::new(
                "upstream",
                "a route needs upstream, upstream_id, service_id, plugins or plugin_config_id",
            ));
        }
        if let Some(u) = &self.upstream {
            u.validate().map_err(|e| e.within("upstream"))?;
        }
        if let Some(t) = &self.timeout {
            t.validate()?;
        }
        Ok(())
    }

    fn parse_plugins(&mut self) -> Result<(), ValidationError> {
        self.parsed_plugins = plugins::parse(self.plugins.as_ref(), Scope::Route)?;
        Ok(())
    }

    fn references(&self) -> Vec<(Kind, &Id, String)> {
        let mut refs = Vec::new();
        if let Some(id) = &self.upstream_id {
            refs.push((Kind::Upstreams, id, "upstream_id".to_string()));
        }
        if let Some(id) = &self.service_id {
            refs.push((Kind::Services, id, "service_id".to_string()));
        }
        if let Some(id) = &self.plugin_config_id {
            refs.push((Kind::PluginConfigs, id, "plugin_config_id".to_string()));
        }
        refs.extend(self.parsed_plugins.references());
        refs
    }
}
