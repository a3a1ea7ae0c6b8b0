//! The `ip-restriction` plugin (APISIX): lets only, or all but, the listed client addresses
//! and networks through.
use crate::codec::from_value;
use crate::vars::parse_ip_or_cidr;
use crate::ValidationError;
use ipnet::IpNet;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use std::net::IpAddr;

pub const NAME: &str = "ip-restriction";

#[derive(Debug, Clone)]
pub struct IpRestriction {
    /// `whitelist` (true): only these pass; `blacklist` (false): these do not.
    pub allow: bool,
    pub nets: Vec<IpNet>,
    pub message: String,
    pub response_code: u16,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    whitelist: Option<Vec<String>>,
    blacklist: Option<Vec<String>>,
    message: Option<String>,
    response_code: Option<u16>,
}

impl IpRestriction {
    pub fn parse(value: &Value) -> Result<IpRestriction, ValidationError> {
        let within = format!("plugins.{NAME}");
        let raw: Raw = from_value(value).map_err(|e| e.within(&within))?;
        let at = |f: &str| format!("{within}.{f}");
        let (allow, field, list) = match (raw.whitelist, raw.blacklist) {
            (Some(l), None) => (true, "whitelist", l),
            (None, Some(l)) => (false, "blacklist", l),
            _ => {
                return Err(ValidationError::new(
                    within,
                    "give exactly one of whitelist or blacklist",
                ))
            }
        };
        if list.is_empty() {
            return Err(ValidationError::new(at(field), "must not be empty"));
        }
        let nets = list
            .iter()
            .enumerate()
            .map(|(i, s)| {
                parse_ip_or_cidr(s).ok_or_else(|| {
                    ValidationError::new(
                        format!("{within}.{field}[{i}]"),
                        format!("{s:?} is not an IP address or CIDR"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let message = raw
            .message
            .unwrap_or_else(|| "Your IP address is not allowed".into());
        if message.is_empty() || message.len() > 1024 {
            return Err(ValidationError::new(
                at("message"),
                "must be 1 to 1024 characters long",
            ));
        }
        let response_code = raw.response_code.unwrap_or(403);
        if !(403..=404).contains(&response_code) {
            return Err(ValidationError::new(
                at("response_code"),
                "must be 403 or 404",
            ));
        }
        Ok(IpRestriction {
            allow,
            nets,
            message,
            response_code,
        })
    }

    /// Whether a client at `ip` may pass.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.nets.iter().any(|n| n.contains(&ip)) == self.allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decides_by_address() {
        let w = IpRestriction::parse(&json!({"whitelist": ["127.0.0.1", "10.0.0.0/8"]})).unwrap();
        let b = IpRestriction::parse(&json!({"blacklist": ["10.0.0.0/8"]})).unwrap();
        for (ip, white, black) in [
            ("127.0.0.1", true, true),
            ("10.1.2.3", true, false),
            ("192.168.0.1", false, true),
            ("::ffff:10.0.0.1", true, false),
            ("::1", false, true),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(w.allows(ip), white, "{ip} whitelist");
            assert_eq!(b.allows(ip), black, "{ip} blacklist");
        }
        assert_eq!(w.response_code, 403);
        assert_eq!(w.message, "Your IP address is not allowed");
    }

    #[test]
    fn refuses_bad_configs() {
        for (bad, field) in [
            (json!({}), "plugins.ip-restriction"),
            (
                json!({"whitelist": ["1.1.1.1"], "blacklist": ["2.2.2.2"]}),
                "plugins.ip-restriction",
            ),
            (json!({"whitelist": []}), "plugins.ip-restriction.whitelist"),
            (
                json!({"whitelist": ["1.1.1.1", "nope"]}),
                "plugins.ip-restriction.whitelist[1]",
            ),
            (
                json!({"blacklist": ["1.1.1.1"], "response_code": 500}),
                "plugins.ip-restriction.response_code",
            ),
        ] {
            assert_eq!(
                IpRestriction::parse(&bad).unwrap_err().field,
                field,
                "{bad}"
            );
        }
    }
}
