//! The etcd key layout: `{prefix}/{kind}/{id}`, as APISIX stores it.
use crate::Id;

/// Every resource kind of the Admin API, named as in its URL and etcd key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Routes,
    Services,
    Upstreams,
    Ssls,
    Consumers,
    GlobalRules,
    PluginConfigs,
    ConsumerGroups,
    PluginMetadata,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Routes,
        Kind::Services,
        Kind::Upstreams,
        Kind::Ssls,
        Kind::Consumers,
        Kind::GlobalRules,
        Kind::PluginConfigs,
        Kind::ConsumerGroups,
        Kind::PluginMetadata,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Routes => "routes",
            Kind::Services => "services",
            Kind::Upstreams => "upstreams",
            Kind::Ssls => "ssls",
            Kind::Consumers => "consumers",
            Kind::GlobalRules => "global_rules",
            Kind::PluginConfigs => "plugin_configs",
            Kind::ConsumerGroups => "consumer_groups",
            Kind::PluginMetadata => "plugin_metadata",
        }
    }

    /// The singular noun used in messages ("route 1 not found").
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Routes => "route",
            Kind::Services => "service",
            Kind::Upstreams => "upstream",
            Kind::Ssls => "ssl",
            Kind::Consumers => "consumer",
            Kind::GlobalRules => "global rule",
            Kind::PluginConfigs => "plugin config",
            Kind::ConsumerGroups => "consumer group",
            Kind::PluginMetadata => "plugin metadata",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Normalises a prefix: leading slash, no trailing slash (`gateway/` -> `/gateway`).
pub fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    }
}

/// `{prefix}/{kind}/` — the range a kind's resources live in.
pub fn kind_prefix(prefix: &str, kind: Kind) -> String {
    format!("{}/{}/", normalize_prefix(prefix), kind.as_str())
}

/// `{prefix}/{kind}/{id}`.
pub fn resource_key(prefix: &str, kind: Kind, id: &Id) -> String {
    format!("{}{}", kind_prefix(prefix, kind), id)
}

/// `{prefix}/` — everything a gateway watches.
pub fn root_prefix(prefix: &str) -> String {
    format!("{}/", normalize_prefix(prefix))
}

/// Splits a key back into kind and id; `None` for keys outside the layout
/// (other tools may keep keys under the same prefix, which we leave alone).
pub fn parse_key(prefix: &str, key: &str) -> Option<(Kind, Id)> {
    let rest = key.strip_prefix(&root_prefix(prefix))?;
    let (kind, id) = rest.split_once('/')?;
    Some((Kind::parse(kind)?, Id::parse(id).ok()?))
}

/// The end of the etcd range that holds every key starting with `prefix`.
pub fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let id = Id::parse("7").unwrap();
        assert_eq!(
            resource_key("/gateway", Kind::Routes, &id),
            "/gateway/routes/7"
        );
        assert_eq!(
            resource_key("gateway/", Kind::GlobalRules, &id),
            "/gateway/global_rules/7"
        );
        assert_eq!(
            resource_key("/apisix", Kind::Upstreams, &id),
            "/apisix/upstreams/7"
        );
        assert_eq!(
            parse_key("/gateway", "/gateway/routes/7"),
            Some((Kind::Routes, id.clone()))
        );
        assert_eq!(parse_key("/gateway", "/gateway/routes/"), None);
        assert_eq!(parse_key("/gateway", "/gateway/unknown/7"), None);
        assert_eq!(parse_key("/gateway", "/other/routes/7"), None);
        assert_eq!(parse_key("/gateway", "/gateway/routes/a/b"), None);
        assert_eq!(range_end("/a/"), b"/a0".to_vec());
    }
}
