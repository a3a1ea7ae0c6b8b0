//! A Service port -> the gateway's upstream nodes, through the Service's EndpointSlices
//! (pure).
//!
//! - The Ingress names the Service port by number (`spec.ports[].port`) or by name.
//! - Each EndpointSlice carries its own port number for that port's name (a named
//!   `targetPort` can resolve differently per slice), so the port is taken per slice.
//! - `serving: false` endpoints are dropped; terminating (but serving) ones are used only
//!   when no other endpoint is left.
//! - The node's `zone` is the endpoint's zone, or the hinted zone when `hints.forZones`
//!   names zones that do not include it (docs/operations.md).
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// How an Ingress backend names a Service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PortRef {
    Number(i32),
    Name(String),
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(n) => f.write_str(n),
        }
    }
}

/// One node of the upstream, ordered so the output is deterministic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeSpec {
    pub host: String,
    pub port: u16,
    pub zone: Option<String>,
}

impl NodeSpec {
    pub fn to_json(&self) -> Value {
        let mut v = json!({"host": self.host, "port": self.port, "weight": 1});
        if let Some(z) = &self.zone {
            v["zone"] = json!(z);
        }
        v
    }
}

/// The nodes behind `service`'s port `port`; `Err` says why there are none (the route
/// then answers 503). `slices` are the Service's EndpointSlices.
pub fn nodes(
    service: &Service,
    port: &PortRef,
    slices: &[&EndpointSlice],
    allow_external_name: bool,
) -> Result<Vec<NodeSpec>, String> {
    let spec = service.spec.as_ref().ok_or("the Service has no spec")?;
    let ports = spec.ports.as_deref().unwrap_or_default();
    let svc_port = ports.iter().find(|p| match port {
        PortRef::Number(n) => p.port == *n,
        PortRef::Name(name) => p.name.as_deref() == Some(name.as_str()),
    });
    if spec.type_.as_deref() == Some("ExternalName") {
        if !allow_external_name {
            return Err(
                "the Service is of type ExternalName, allowed only with --allow-external-name"
                    .into(),
            );
        }
        let host = spec
            .external_name
            .clone()
            .ok_or("the ExternalName Service has no externalName")?;
        let number = match (port, svc_port) {
            (_, Some(p)) => p.port,
            (PortRef::Number(n), None) => *n,
            (PortRef::Name(name), None) => {
                return Err(format!("the Service has no port named {name:?}"))
            }
        };
        let port = u16::try_from(number).map_err(|_| format!("port {number} out of range"))?;
        return Ok(vec![NodeSpec {
            host: host.trim_end_matches('.').to_string(),
            port,
            zone: None,
        }]);
    }
    let svc_port = svc_port.ok_or_else(|| format!("the Service has no port {port}"))?;
    // An unnamed Service port shows up in the slices with no name (or "").
    let port_name = svc_port.name.clone().unwrap_or_default();
    let mut ready = BTreeSet::new();
    let mut terminating = BTreeSet::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6" | "FQDN") {
            continue;
        }
        let Some(number) = slice
            .ports
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|p| p.name.clone().unwrap_or_default() == port_name)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            let (serving, is_terminating) = conditions(ep);
            if !serving {
                continue;
            }
            let zone = zone_of(ep);
            for addr in &ep.addresses {
                let node = NodeSpec {
                    host: addr.clone(),
                    port: number,
                    zone: zone.clone(),
                };
                if is_terminating {
                    terminating.insert(node);
                } else {
                    ready.insert(node);
                }
            }
        }
    }
    let chosen = if ready.is_empty() { terminating } else { ready };
    if chosen.is_empty() {
        return Err("the Service has no serving endpoints".into());
    }
    Ok(chosen.into_iter().collect())
}

/// (serving, terminating), with the API's defaults: `serving` falls back to `ready`, and
/// an unknown `ready` counts as ready.
fn conditions(ep: &Endpoint) -> (bool, bool) {
    let c = ep.conditions.as_ref();
    let ready = c.and_then(|c| c.ready).unwrap_or(true);
    let serving = c.and_then(|c| c.serving).unwrap_or(ready);
    let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
    (serving, terminating)
}

fn zone_of(ep: &Endpoint) -> Option<String> {
    let hinted: Vec<&str> = ep
        .hints
        .as_ref()
        .and_then(|h| h.for_zones.as_ref())
        .map(|z| z.iter().map(|z| z.name.as_str()).collect())
        .unwrap_or_default();
    let zone = match ep.zone.as_deref() {
        Some(z) if hinted.is_empty() || hinted.contains(&z) => Some(z),
        _ => hinted.first().copied(),
    };
    zone.filter(|z| valid_zone(z)).map(str::to_string)
}

/// The model's rule for a node zone (a Kubernetes label value).
fn valid_zone(z: &str) -> bool {
    !z.is_empty()
        && z.len() <= 63
        && z.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && z.starts_with(|c: char| c.is_ascii_alphanumeric())
        && z.ends_with(|c: char| c.is_ascii_alphanumeric())
}
