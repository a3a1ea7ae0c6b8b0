//! The plugin registry: every plugin the gateway runs, by name, with its default priority
//! (APISIX's), the phases it takes part in, where it may be configured, and the parser that
//! turns its JSON into a typed configuration. A plugin is one file here (its configuration)
//! and one in `gateway/src/plugins/` (its behaviour); nothing else names it.
//!
//! `_meta` (`priority`, `disable`, `filter`) is read here for every plugin, so no plugin's
//! own parser sees it.
pub mod api_breaker;
pub mod basic_auth;
pub mod client_control;
pub mod consumer_restriction;
pub mod cors;
pub mod fault_injection;
pub mod hmac_auth;
pub mod http_logger;
pub mod ip_restriction;
pub mod jwt_auth;
pub mod key_auth;
pub mod limit_conn;
pub mod limit_count;
pub mod limit_req;
pub mod prometheus;
pub mod proxy_mirror;
pub mod proxy_rewrite;
pub mod public_api;
pub mod real_ip;
pub mod redirect;
pub mod referer_restriction;
pub mod request_id;
pub mod response_rewrite;
pub mod traffic_split;
pub mod ua_restriction;

use crate::vars::Expr;
use crate::{Id, Kind, ValidationError};
use serde_json::{Map, Value};

/// Where a plugin is configured: each plugin names the places it makes sense in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Route,
    Service,
    /// A consumer's plugins: its credential (`key-auth.key`) and the plugins merged over the
    /// route's once it is authenticated.
    Consumer,
    /// A plugin config, merged under the routes that name it.
    PluginConfig,
    /// A global rule: runs for every request.
    GlobalRule,
}

/// A plugin's typed configuration.
#[derive(Debug, Clone)]
pub enum Config {
    ApiBreaker(Box<api_breaker::ApiBreaker>),
    BasicAuth(basic_auth::BasicAuth),
    ClientControl(client_control::ClientControl),
    ConsumerRestriction(consumer_restriction::ConsumerRestriction),
    Cors(Box<cors::Cors>),
    FaultInjection(Box<fault_injection::FaultInjection>),
    HmacAuth(Box<hmac_auth::HmacAuth>),
    HttpLogger(Box<http_logger::HttpLogger>),
    IpRestriction(ip_restriction::IpRestriction),
    JwtAuth(Box<jwt_auth::JwtAuth>),
    KeyAuth(key_auth::KeyAuth),
    LimitConn(Box<limit_conn::LimitConn>),
    LimitCount(Box<limit_count::LimitCount>),
    LimitReq(Box<limit_req::LimitReq>),
    Prometheus(prometheus::Prometheus),
    ProxyMirror(Box<proxy_mirror::ProxyMirror>),
    ProxyRewrite(Box<proxy_rewrite::ProxyRewrite>),
    PublicApi(public_api::PublicApi),
    RealIp(real_ip::RealIp),
    Redirect(redirect::Redirect),
    RefererRestriction(referer_restriction::RefererRestriction),
    RequestId(request_id::RequestId),
    ResponseRewrite(Box<response_rewrite::ResponseRewrite>),
    TrafficSplit(traffic_split::TrafficSplit),
    UaRestriction(ua_restriction::UaRestriction),
}

/// One registered plugin.
pub struct Spec {
    pub name: &'static str,
    /// APISIX's default priority: higher runs first within a phase.
    pub priority: i64,
    scopes: &'static [Scope],
    parse: fn(&Value, Scope) -> Result<Config, ValidationError>,
    /// The JSON schema of its configuration where it is configured (a consumer's
    /// credential differs from a route's check), without `_meta`.
    schema: fn(Scope) -> Value,
}

fn schema_of<T: schemars::JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Null)
}

const ROUTE: &[Scope] = &[
    Scope::Route,
    Scope::Service,
    Scope::Consumer,
    Scope::PluginConfig,
    Scope::GlobalRule,
];
const ROUTE_ONLY: &[Scope] = &[Scope::Route];

/// Every plugin, by name. Priorities are APISIX's (`apisix/plugins/*.lua`).
pub const REGISTRY: &[Spec] = &[
    Spec {
        name: real_ip::NAME,
        schema: |_| schema_of::<real_ip::Raw>(),
        priority: 23000,
        scopes: ROUTE,
        parse: |v, _| real_ip::RealIp::parse(v).map(Config::RealIp),
    },
    Spec {
        name: client_control::NAME,
        schema: |_| schema_of::<client_control::Raw>(),
        priority: 22000,
        scopes: ROUTE,
        parse: |v, _| client_control::ClientControl::parse(v).map(Config::ClientControl),
    },
    Spec {
        name: request_id::NAME,
        schema: |_| schema_of::<request_id::Raw>(),
        priority: 12015,
        scopes: ROUTE,
        parse: |v, _| request_id::RequestId::parse(v).map(Config::RequestId),
    },
    Spec {
        name: fault_injection::NAME,
        schema: |_| schema_of::<fault_injection::Raw>(),
        priority: 11000,
        scopes: ROUTE,
        parse: |v, _| {
            fault_injection::FaultInjection::parse(v).map(|c| Config::FaultInjection(Box::new(c)))
        },
    },
    Spec {
        name: cors::NAME,
        schema: |_| schema_of::<cors::Raw>(),
        priority: 4000,
        scopes: ROUTE,
        parse: |v, _| cors::Cors::parse(v).map(|c| Config::Cors(Box::new(c))),
    },
    Spec {
        name: ip_restriction::NAME,
        schema: |_| schema_of::<ip_restriction::Raw>(),
        priority: 3000,
        scopes: ROUTE,
        parse: |v, _| ip_restriction::IpRestriction::parse(v).map(Config::IpRestriction),
    },
    Spec {
        name: ua_restriction::NAME,
        schema: |_| schema_of::<ua_restriction::Raw>(),
        priority: 2999,
        scopes: ROUTE,
        parse: |v, _| ua_restriction::UaRestriction::parse(v).map(Config::UaRestriction),
    },
    Spec {
        name: referer_restriction::NAME,
        schema: |_| schema_of::<referer_restriction::Raw>(),
        priority: 2990,
        scopes: ROUTE,
        parse: |v, _| {
            referer_restriction::RefererRestriction::parse(v).map(Config::RefererRestriction)
        },
    },
    Spec {
        name: hmac_auth::NAME,
        schema: |s| match s {
            Scope::Consumer => schema_of::<hmac_auth::RawCredential>(),
            _ => schema_of::<hmac_auth::RawCheck>(),
        },
        priority: 2530,
        scopes: ROUTE,
        parse: |v, scope| {
            hmac_auth::HmacAuth::parse(v, scope).map(|c| Config::HmacAuth(Box::new(c)))
        },
    },
    Spec {
        name: basic_auth::NAME,
        schema: |s| match s {
            Scope::Consumer => schema_of::<basic_auth::RawCredential>(),
            _ => schema_of::<basic_auth::RawCheck>(),
        },
        priority: 2520,
        scopes: ROUTE,
        parse: |v, scope| basic_auth::BasicAuth::parse(v, scope).map(Config::BasicAuth),
    },
    Spec {
        name: jwt_auth::NAME,
        schema: |s| match s {
            Scope::Consumer => schema_of::<jwt_auth::RawCredential>(),
            _ => schema_of::<jwt_auth::RawCheck>(),
        },
        priority: 2510,
        scopes: ROUTE,
        parse: |v, scope| jwt_auth::JwtAuth::parse(v, scope).map(|c| Config::JwtAuth(Box::new(c))),
    },
    Spec {
        name: limit_req::NAME,
        schema: |_| schema_of::<limit_req::Raw>(),
        priority: 1001,
        scopes: ROUTE,
        parse: |v, _| limit_req::LimitReq::parse(v).map(|c| Config::LimitReq(Box::new(c))),
    },
    Spec {
        name: api_breaker::NAME,
        schema: |_| schema_of::<api_breaker::Raw>(),
        priority: 1005,
        scopes: ROUTE,
        parse: |v, _| api_breaker::ApiBreaker::parse(v).map(|c| Config::ApiBreaker(Box::new(c))),
    },
    Spec {
        name: limit_conn::NAME,
        schema: |_| schema_of::<limit_conn::Raw>(),
        priority: 1003,
        scopes: ROUTE,
        parse: |v, _| limit_conn::LimitConn::parse(v).map(|c| Config::LimitConn(Box::new(c))),
    },
    Spec {
        name: limit_count::NAME,
        schema: |_| schema_of::<limit_count::Raw>(),
        priority: 1002,
        scopes: ROUTE,
        parse: |v, _| limit_count::LimitCount::parse(v).map(|c| Config::LimitCount(Box::new(c))),
    },
    Spec {
        name: key_auth::NAME,
        schema: |s| match s {
            Scope::Consumer => schema_of::<key_auth::RawCredential>(),
            _ => schema_of::<key_auth::RawCheck>(),
        },
        priority: 2500,
        scopes: ROUTE,
        parse: |v, scope| key_auth::KeyAuth::parse(v, scope).map(Config::KeyAuth),
    },
    Spec {
        name: consumer_restriction::NAME,
        schema: |_| schema_of::<consumer_restriction::Raw>(),
        priority: 2400,
        scopes: ROUTE,
        parse: |v, _| {
            consumer_restriction::ConsumerRestriction::parse(v).map(Config::ConsumerRestriction)
        },
    },
    Spec {
        name: proxy_mirror::NAME,
        schema: |_| schema_of::<proxy_mirror::Raw>(),
        priority: 1010,
        scopes: ROUTE,
        parse: |v, _| proxy_mirror::ProxyMirror::parse(v).map(|c| Config::ProxyMirror(Box::new(c))),
    },
    Spec {
        name: proxy_rewrite::NAME,
        schema: |_| schema_of::<proxy_rewrite::Raw>(),
        priority: 1008,
        scopes: ROUTE,
        parse: |v, _| {
            proxy_rewrite::ProxyRewrite::parse(v).map(|c| Config::ProxyRewrite(Box::new(c)))
        },
    },
    Spec {
        name: traffic_split::NAME,
        schema: |_| schema_of::<traffic_split::TrafficSplit>(),
        priority: 966,
        scopes: ROUTE_ONLY,
        parse: |v, _| traffic_split::TrafficSplit::parse(v).map(Config::TrafficSplit),
    },
    Spec {
        name: redirect::NAME,
        schema: |_| schema_of::<redirect::Raw>(),
        priority: 900,
        scopes: ROUTE,
        parse: |v, _| redirect::Redirect::parse(v).map(Config::Redirect),
    },
    Spec {
        name: public_api::NAME,
        schema: |_| schema_of::<public_api::Raw>(),
        priority: 501,
        scopes: ROUTE_ONLY,
        parse: |v, _| public_api::PublicApi::parse(v).map(Config::PublicApi),
    },
    Spec {
        name: http_logger::NAME,
        schema: |_| schema_of::<http_logger::Raw>(),
        priority: 410,
        scopes: &[
            Scope::Route,
            Scope::Service,
            Scope::PluginConfig,
            Scope::GlobalRule,
        ],
        parse: |v, _| http_logger::HttpLogger::parse(v).map(|c| Config::HttpLogger(Box::new(c))),
    },
    Spec {
        name: prometheus::NAME,
        schema: |_| schema_of::<prometheus::Raw>(),
        priority: 500,
        scopes: &[
            Scope::Route,
            Scope::Service,
            Scope::PluginConfig,
            Scope::GlobalRule,
        ],
        parse: |v, _| prometheus::Prometheus::parse(v).map(Config::Prometheus),
    },
    Spec {
        name: response_rewrite::NAME,
        schema: |_| schema_of::<response_rewrite::Raw>(),
        priority: 899,
        scopes: ROUTE,
        parse: |v, _| {
            response_rewrite::ResponseRewrite::parse(v)
                .map(|c| Config::ResponseRewrite(Box::new(c)))
        },
    },
];

impl Spec {
    pub fn allowed_in(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// The JSON schema of its configuration in `scope`, with `_meta` as every plugin
    /// takes it (APISIX's `/apisix/admin/plugins/{name}`).
    pub fn schema(&self, scope: Scope) -> Value {
        let mut schema = (self.schema)(scope);
        if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
            props.insert("_meta".into(), meta_schema());
        }
        schema
    }
}

fn meta_schema() -> Value {
    serde_json::json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "priority": {"type": "integer", "description": "overrides the plugin's priority"},
            "disable": {"type": "boolean", "description": "configured but off"},
            "filter": {"type": "array", "description": "a vars expression: the plugin runs only for requests that match"}
        }
    })
}

pub fn spec(name: &str) -> Option<&'static Spec> {
    REGISTRY.iter().find(|s| s.name == name)
}

/// `_meta`, as APISIX reads it for every plugin.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// Overrides the plugin's default priority.
    pub priority: Option<i64>,
    /// The plugin is configured but off.
    pub disable: bool,
    /// The plugin runs only for requests that match.
    pub filter: Option<Expr>,
}

/// One configured plugin.
#[derive(Debug, Clone)]
pub struct Plugin {
    pub name: &'static str,
    /// The priority it runs at: `_meta.priority`, else the plugin's default.
    pub priority: i64,
    pub filter: Option<Expr>,
    pub config: Config,
    /// The configuration exactly as written (`_meta` included), canonical JSON: plugin
    /// state that outlives a snapshot is keyed by it, so that only a change of the
    /// plugin's own configuration starts it afresh.
    pub source: String,
}

/// The enabled plugins of one resource, in name order. Disabled ones are validated, then
/// left out.
#[derive(Debug, Clone, Default)]
pub struct Plugins(pub Vec<Plugin>);

impl Plugins {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Plugin> {
        self.0.iter().find(|p| p.name == name)
    }

    pub fn traffic_split(&self) -> Option<&traffic_split::TrafficSplit> {
        self.0.iter().find_map(|p| match &p.config {
            Config::TrafficSplit(t) => Some(t),
            _ => None,
        })
    }

    /// Other resources the plugins point at, with the field that names each.
    pub fn references(&self) -> Vec<(Kind, &Id, String)> {
        let mut refs = Vec::new();
        if let Some(split) = self.traffic_split() {
            refs.extend(
                split
                    .upstream_ids()
                    .map(|(field, id)| (Kind::Upstreams, id, field)),
            );
        }
        refs
    }

    /// `over` wins: APISIX's merge of the same plugin configured in two places (route over
    /// service, consumer over route).
    pub fn merged(&self, over: &Plugins) -> Plugins {
        let mut out = over.0.clone();
        for p in &self.0 {
            if over.get(p.name).is_none() {
                out.push(p.clone());
            }
        }
        out.sort_by(|a, b| a.name.cmp(b.name));
        Plugins(out)
    }
}

/// Parses a resource's `plugins`: each name must be registered and allowed in `scope`, each
/// configuration valid; errors name `plugins.<name>.<field>`.
pub fn parse(
    plugins: Option<&Map<String, Value>>,
    scope: Scope,
) -> Result<Plugins, ValidationError> {
    let mut out = Vec::new();
    for (name, value) in plugins.into_iter().flatten() {
        let within = format!("plugins.{name}");
        let spec = spec(name)
            .filter(|s| s.scopes.contains(&scope))
            .ok_or_else(|| {
                let here: Vec<&str> = REGISTRY
                    .iter()
                    .filter(|s| s.scopes.contains(&scope))
                    .map(|s| s.name)
                    .collect();
                ValidationError::new(
                    &within,
                    format!(
                        "plugin {name:?} is not supported here (supported: {})",
                        here.join(", ")
                    ),
                )
            })?;
        let Some(obj) = value.as_object() else {
            return Err(ValidationError::new(within, "must be an object"));
        };
        let mut own = obj.clone();
        let meta = match own.remove("_meta") {
            Some(m) => parse_meta(&m).map_err(|e| e.within(&format!("{within}._meta")))?,
            None => Meta::default(),
        };
        let config = (spec.parse)(&Value::Object(own), scope)?;
        if meta.disable {
            continue;
        }
        out.push(Plugin {
            name: spec.name,
            priority: meta.priority.unwrap_or(spec.priority),
            filter: meta.filter,
            config,
            source: value.to_string(),
        });
    }
    Ok(Plugins(out))
}

fn parse_meta(v: &Value) -> Result<Meta, ValidationError> {
    let Some(obj) = v.as_object() else {
        return Err(ValidationError::new("", "must be an object"));
    };
    let mut meta = Meta::default();
    for (k, v) in obj {
        match k.as_str() {
            "priority" => {
                meta.priority = Some(
                    v.as_i64()
                        .ok_or_else(|| ValidationError::new("priority", "must be an integer"))?,
                )
            }
            "disable" => {
                meta.disable = v
                    .as_bool()
                    .ok_or_else(|| ValidationError::new("disable", "must be a boolean"))?
            }
            "filter" => {
                meta.filter = Some(Expr::parse(v).map_err(|(path, msg)| {
                    ValidationError::new("filter", format!("{path} {msg}").trim().to_string())
                })?)
            }
            // APISIX's error_response and pre_function are not supported: refusing them
            // beats ignoring them.
            other => {
                return Err(ValidationError::new(
                    other,
                    "not supported (supported: priority, disable, filter)",
                ))
            }
        }
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_json(v: Value, scope: Scope) -> Result<Plugins, ValidationError> {
        parse(v.as_object(), scope)
    }

    #[test]
    fn meta_and_scopes() {
        let p = parse_json(
            json!({
                "redirect": {"http_to_https": true, "_meta": {"priority": 5}},
                "request-id": {"_meta": {"disable": true}},
                "proxy-rewrite": {"uri": "/x", "_meta": {"filter": [["arg_a", "==", "1"]]}},
            }),
            Scope::Route,
        )
        .unwrap();
        let names: Vec<_> = p.0.iter().map(|p| (p.name, p.priority)).collect();
        assert_eq!(names, [("proxy-rewrite", 1008), ("redirect", 5)]);
        assert!(p.get("proxy-rewrite").unwrap().filter.is_some());

        for (bad, field) in [
            (json!({"nope": {}}), "plugins.nope"),
            (json!({"redirect": 1}), "plugins.redirect"),
            (
                json!({"redirect": {"http_to_https": true, "_meta": {"priority": "x"}}}),
                "plugins.redirect._meta.priority",
            ),
            (
                json!({"redirect": {"http_to_https": true, "_meta": {"error_response": {}}}}),
                "plugins.redirect._meta.error_response",
            ),
            (
                json!({"redirect": {"http_to_https": true, "_meta": {"filter": [["a", "~~", 1]]}}}),
                "plugins.redirect._meta.filter",
            ),
            // A disabled plugin is still validated.
            (
                json!({"redirect": {"_meta": {"disable": true}}}),
                "plugins.redirect",
            ),
        ] {
            let e = parse_json(bad.clone(), Scope::Route).unwrap_err();
            assert_eq!(e.field, field, "{bad}: {e}");
        }
        let e = parse_json(json!({"traffic-split": {"rules": []}}), Scope::Service).unwrap_err();
        assert_eq!(e.field, "plugins.traffic-split");
    }

    #[test]
    fn merge_prefers_the_closer_resource() {
        let service = parse_json(
            json!({"proxy-rewrite": {"uri": "/service"}, "request-id": {}}),
            Scope::Service,
        )
        .unwrap();
        let route = parse_json(json!({"proxy-rewrite": {"uri": "/route"}}), Scope::Route).unwrap();
        let m = service.merged(&route);
        let names: Vec<_> = m.0.iter().map(|p| p.name).collect();
        assert_eq!(names, ["proxy-rewrite", "request-id"]);
        assert!(m.get("proxy-rewrite").unwrap().source.contains("/route"));
    }
}
