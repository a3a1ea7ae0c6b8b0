//! The `real-ip` plugin (APISIX): takes the client's address from a header or argument
//! (`http_x_forwarded_for`, `arg_realip`…) when the connection comes from a trusted proxy.
use crate::codec::from_value;
use crate::vars::parse_ip_or_cidr;
use crate::ValidationError;
use ipnet::IpNet;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};

pub const NAME: &str = "real-ip";

#[derive(Debug, Clone)]
pub struct RealIp {
    /// The variable that holds the address (`http_x_forwarded_for`, `arg_realip`).
    pub source: String,
    /// Only connections from these are believed; none listed: every connection is.
    pub trusted: Vec<IpNet>,
    /// For a list of addresses: the last one not trusted, rather than the last one.
    pub recursive: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    source: String,
    trusted_addresses: Option<Vec<String>>,
    #[serde(default)]
    recursive: bool,
}

impl RealIp {
    pub fn parse(value: &Value) -> Result<RealIp, ValidationError> {
        let within = format!("plugins.{NAME}");
        let raw: Raw = from_value(value).map_err(|e| e.within(&within))?;
        if raw.source.is_empty() {
            return Err(ValidationError::new(
                format!("{within}.source"),
                "must not be empty",
            ));
        }
        let trusted = raw
            .trusted_addresses
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, s)| {
                parse_ip_or_cidr(s).ok_or_else(|| {
                    ValidationError::new(
                        format!("{within}.trusted_addresses[{i}]"),
                        format!("{s:?} is not an IP address or CIDR"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(RealIp {
            source: raw.source,
            trusted,
            recursive: raw.recursive,
        })
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// The client's address, from the connection's `peer` and the source's `value`;
    /// `None` leaves the connection's. An address without a port keeps the peer's port.
    pub fn resolve(&self, peer: SocketAddr, value: Option<&str>) -> Option<SocketAddr> {
        if !self.trusted.is_empty() && !self.trusts(peer.ip()) {
            return None;
        }
        let mut addrs = value?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .rev();
        let pick = if self.recursive && !self.trusted.is_empty() {
            // From the right, skip the proxies we trust; the first other is the client.
            let mut last = None;
            for a in addrs {
                let parsed = parse_addr(a, peer.port())?;
                last = Some(parsed);
                if !self.trusts(parsed.ip()) {
                    break;
                }
            }
            last?
        } else {
            parse_addr(addrs.next()?, peer.port())?
        };
        Some(pick)
    }
}

fn parse_addr(s: &str, port: u16) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let ip = s.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resolution() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let outside: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        let any = RealIp::parse(&json!({"source": "http_x_forwarded_for"})).unwrap();
        let trusted = RealIp::parse(&json!({"source": "http_x_forwarded_for",
            "trusted_addresses": ["127.0.0.0/24", "10.0.0.0/8"]}))
        .unwrap();
        let recursive = RealIp::parse(&json!({"source": "http_x_forwarded_for",
            "trusted_addresses": ["127.0.0.0/24", "10.0.0.0/8"], "recursive": true}))
        .unwrap();
        let at = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        for (conf, from, value, expect) in [
            (&any, peer, Some("1.2.3.4"), at("1.2.3.4:5000")),
            (&any, peer, Some("1.2.3.4:8080"), at("1.2.3.4:8080")),
            (&any, peer, Some("9.9.9.9, 1.2.3.4"), at("1.2.3.4:5000")),
            (&any, peer, Some("::1"), at("[::1]:5000")),
            (&any, peer, Some("not an ip"), None),
            (&any, peer, None, None),
            (&trusted, outside, Some("1.2.3.4"), None),
            (
                &trusted,
                peer,
                Some("9.9.9.9, 10.0.0.2"),
                at("10.0.0.2:5000"),
            ),
            (
                &recursive,
                peer,
                Some("9.9.9.9, 8.8.8.8, 10.0.0.2"),
                at("8.8.8.8:5000"),
            ),
            (
                &recursive,
                peer,
                Some("10.0.0.3, 10.0.0.2"),
                at("10.0.0.3:5000"),
            ),
        ] {
            assert_eq!(conf.resolve(from, value), expect, "{value:?}");
        }
        for (bad, field) in [
            (json!({}), "plugins.real-ip.source"),
            (json!({"source": ""}), "plugins.real-ip.source"),
            (
                json!({"source": "arg_a", "trusted_addresses": ["x"]}),
                "plugins.real-ip.trusted_addresses[0]",
            ),
        ] {
            assert_eq!(RealIp::parse(&bad).unwrap_err().field, field, "{bad}");
        }
    }
}
