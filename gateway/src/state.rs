//! The configuration as read from etcd, one entry per key, each parsed or marked invalid.
//! Pure: the watch feeds it changes, the snapshot compiler reads it.
use crate::metrics::ConfigCounts;
use crate::tls::CertSet;
use model::credential::parse_credential_key;
use model::key::parse_key;
use model::{
    decode, Consumer, ConsumerGroup, Credential, GlobalRule, Id, Keyring, Kind, PluginConfig,
    PluginMetadata, Resource, Route, Service, Ssl, Upstream,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

/// One key's value: kept raw so an identical re-write is recognised and skipped.
#[derive(Debug, Clone)]
pub struct Entry<T> {
    pub raw: Vec<u8>,
    pub parsed: Result<Arc<T>, String>,
}

/// A change read from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The configuration changed: a new snapshot is due.
    Changed,
    /// The same value was written again, or a missing key deleted.
    Unchanged,
    /// Not a key of a kind the gateway serves.
    Ignored,
}

#[derive(Debug, Default, Clone)]
pub struct State {
    pub routes: BTreeMap<Id, Entry<Route>>,
    pub services: BTreeMap<Id, Entry<Service>>,
    pub upstreams: BTreeMap<Id, Entry<Upstream>>,
    pub ssls: BTreeMap<Id, Entry<Ssl>>,
    /// By username. Their credentials' secrets are still sealed here; the snapshot opens them.
    pub consumers: BTreeMap<Id, Entry<Consumer>>,
    /// By username, then credential id; a consumer's credentials count only while it
    /// exists.
    pub credentials: BTreeMap<Id, BTreeMap<Id, Entry<Credential>>>,
    pub plugin_configs: BTreeMap<Id, Entry<PluginConfig>>,
    pub consumer_groups: BTreeMap<Id, Entry<ConsumerGroup>>,
    /// By plugin name.
    pub plugin_metadata: BTreeMap<Id, Entry<PluginMetadata>>,
    pub global_rules: BTreeMap<Id, Entry<GlobalRule>>,
    /// The enabled ssls whose keys decrypted and matched their certificates, ready to
    /// serve. An ssl that fails that is invalid (its entry holds the reason).
    pub certs: BTreeMap<Id, Arc<CertSet>>,
    /// Decrypts the private keys of `ssls` (`--data-encryption-keys`).
    keyring: Arc<Keyring>,
    /// Valid and invalid entries per kind, kept as changes arrive so a snapshot never
    /// has to count 50,000 entries.
    counts: ConfigCounts,
    /// Node host names in use by valid entries, with how many entries use each.
    names: BTreeMap<String, usize>,
    /// The addresses each name resolved to (from `dns.rs`), an input of the compiler like
    /// the etcd values.
    dns: BTreeMap<String, Vec<IpAddr>>,
    /// What changed since the last [`State::take_dirty`]: the snapshot compiler redoes
    /// only that, so one change among 50,000 routes costs one route's work.
    dirty: Dirty,
    /// The invalid entries with their errors, kept as changes arrive (for `/status`).
    errors: BTreeMap<(Kind, Id), String>,
}

/// The ids whose values changed (added, replaced or deleted), or `all` when the state was
/// rebuilt from a list and the previous snapshot cannot be patched.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dirty {
    pub all: bool,
    pub routes: BTreeSet<Id>,
    pub services: BTreeSet<Id>,
    pub upstreams: BTreeSet<Id>,
    pub ssls: BTreeSet<Id>,
    pub consumers: BTreeSet<Id>,
    pub plugin_configs: BTreeSet<Id>,
    pub consumer_groups: BTreeSet<Id>,
    pub plugin_metadata: BTreeSet<Id>,
    pub global_rules: BTreeSet<Id>,
    /// The list of invalid entries changed.
    pub errors: bool,
}

impl Dirty {
    pub fn all() -> Dirty {
        Dirty {
            all: true,
            ..Dirty::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.all
            && self.routes.is_empty()
            && self.services.is_empty()
            && self.upstreams.is_empty()
            && self.ssls.is_empty()
            && self.consumers.is_empty()
            && self.plugin_configs.is_empty()
            && self.consumer_groups.is_empty()
            && self.plugin_metadata.is_empty()
            && self.global_rules.is_empty()
    }
}

impl State {
    /// An empty state whose ssls' keys are decrypted with `keyring`.
    pub fn with_keyring(keyring: Arc<Keyring>) -> State {
        State {
            keyring,
            ..State::default()
        }
    }

    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.keyring
    }

    pub fn apply(&mut self, prefix: &str, change: Change) -> Applied {
        let key = match &change {
            Change::Put { key, .. } | Change::Delete { key } => key,
        };
        if let Some((user, id)) = parse_credential_key(prefix, key) {
            let value = match change {
                Change::Put { value, .. } => Some(value),
                Change::Delete { .. } => None,
            };
            let applied = upsert_credential(&mut self.credentials, &user, &id, value);
            if applied == Applied::Changed {
                self.dirty.consumers.insert(user);
            }
            return applied;
        }
        let Some((kind, id)) = parse_key(prefix, key) else {
            return Applied::Ignored;
        };
        let value = match change {
            Change::Put { value, .. } => Some(value),
            Change::Delete { .. } => None,
        };
        let c = &mut self.counts;
        let (r, dirty, valid, invalid) = match kind {
            Kind::Routes => (
                replace(&mut self.routes, &id, value, route_upstreams),
                &mut self.dirty.routes,
                &mut c.routes,
                &mut c.invalid_routes,
            ),
            Kind::Services => (
                replace(&mut self.services, &id, value, service_upstreams),
                &mut self.dirty.services,
                &mut c.services,
                &mut c.invalid_services,
            ),
            Kind::Upstreams => (
                replace(&mut self.upstreams, &id, value, itself),
                &mut self.dirty.upstreams,
                &mut c.upstreams,
                &mut c.invalid_upstreams,
            ),
            Kind::Ssls => (
                replace_ssl(&mut self.ssls, &mut self.certs, &self.keyring, &id, value),
                &mut self.dirty.ssls,
                &mut c.ssls,
                &mut c.invalid_ssls,
            ),
            Kind::Consumers => (
                replace(&mut self.consumers, &id, value, |_| Vec::new()),
                &mut self.dirty.consumers,
                &mut c.consumers,
                &mut c.invalid_consumers,
            ),
            Kind::PluginConfigs => (
                replace(&mut self.plugin_configs, &id, value, |_| Vec::new()),
                &mut self.dirty.plugin_configs,
                &mut c.plugin_configs,
                &mut c.invalid_plugin_configs,
            ),
            Kind::ConsumerGroups => (
                replace(&mut self.consumer_groups, &id, value, |_| Vec::new()),
                &mut self.dirty.consumer_groups,
                &mut c.consumer_groups,
                &mut c.invalid_consumer_groups,
            ),
            Kind::PluginMetadata => {
                // Read when chains are compiled: every chain is compiled again.
                let r = replace(&mut self.plugin_metadata, &id, value, |_| Vec::new());
                if r.applied == Applied::Changed {
                    self.dirty.all = true;
                }
                (
                    r,
                    &mut self.dirty.plugin_metadata,
                    &mut c.plugin_metadata,
                    &mut c.invalid_plugin_metadata,
                )
            }
            Kind::GlobalRules => (
                replace(&mut self.global_rules, &id, value, |_| Vec::new()),
                &mut self.dirty.global_rules,
                &mut c.global_rules,
                &mut c.invalid_global_rules,
            ),
        };
        // New names first: a name the entry keeps never drops to zero uses on the way, so
        // its resolved addresses stay (the resolver only speaks when they change).
        for name in r.new_names {
            *self.names.entry(name).or_insert(0) += 1;
        }
        for name in r.old_names {
            if let Some(n) = self.names.get_mut(&name) {
                *n -= 1;
                if *n == 0 {
                    self.names.remove(&name);
                    self.dns.remove(&name);
                }
            }
        }
        for (state, delta) in [(r.before, -1isize), (r.after, 1)] {
            match state {
                Some(true) => *valid = valid.saturating_add_signed(delta),
                Some(false) => *invalid = invalid.saturating_add_signed(delta),
                None => {}
            }
        }
        let key = (kind, id.clone());
        let errors_changed = match (r.after, r.error) {
            (Some(false), Some(e)) => {
                self.errors.get(&key) != Some(&e) && {
                    self.errors.insert(key, e);
                    true
                }
            }
            _ => self.errors.remove(&key).is_some(),
        };
        self.dirty.errors |= errors_changed;
        if r.applied == Applied::Changed {
            dirty.insert(id);
        }
        r.applied
    }

    /// The node host names in use, for the resolver.
    pub fn names(&self) -> BTreeSet<String> {
        self.names.keys().cloned().collect()
    }

    /// Takes the resolved addresses of `previous` for the names this state uses (a relist
    /// builds a new state; the resolver does not answer again for names it already did).
    pub fn keep_dns(&mut self, previous: &State) {
        for (name, addrs) in &previous.dns {
            if self.names.contains_key(name) {
                self.dns.insert(name.clone(), addrs.clone());
            }
        }
    }

    /// Whether some name in use has had no first answer from the resolver yet: a route
    /// over it would not reach its nodes, so the revision is not reported applied.
    pub fn resolving(&self) -> bool {
        self.names.keys().any(|n| !self.dns.contains_key(n))
    }

    /// What each name in use resolved to (absent until first resolved).
    pub fn dns(&self) -> &BTreeMap<String, Vec<IpAddr>> {
        &self.dns
    }

    /// New addresses for `name`: every entry whose nodes use it is marked dirty.
    pub fn apply_dns(&mut self, name: &str, addrs: Vec<IpAddr>) -> Applied {
        if !self.names.contains_key(name) || self.dns.get(name) == Some(&addrs) {
            return Applied::Unchanged;
        }
        self.dns.insert(name.to_string(), addrs);
        fn mark<T>(
            dirty: &mut BTreeSet<Id>,
            m: &BTreeMap<Id, Entry<T>>,
            upstreams: fn(&T) -> Vec<&Upstream>,
            name: &str,
        ) {
            for (id, e) in m {
                let Ok(value) = &e.parsed else { continue };
                let nodes = upstreams(value).into_iter().flat_map(|u| u.nodes.0.iter());
                if nodes.into_iter().any(|n| n.host.eq_ignore_ascii_case(name)) {
                    dirty.insert(id.clone());
                }
            }
        }
        mark(&mut self.dirty.upstreams, &self.upstreams, itself, name);
        mark(
            &mut self.dirty.services,
            &self.services,
            service_upstreams,
            name,
        );
        mark(&mut self.dirty.routes, &self.routes, route_upstreams, name);
        Applied::Changed
    }

    /// Valid and invalid entries per kind.
    pub fn counts(&self) -> ConfigCounts {
        self.counts
    }

    /// The changes since the last call, leaving none behind.
    pub fn take_dirty(&mut self) -> Dirty {
        std::mem::take(&mut self.dirty)
    }

    /// For a state read whole from a list: the next snapshot must be compiled from scratch.
    pub fn mark_all_dirty(&mut self) {
        self.dirty = Dirty::all();
    }

    /// The invalid entries and why, kept as changes arrive.
    pub fn errors(&self) -> &BTreeMap<(Kind, Id), String> {
        &self.errors
    }

    /// Invalid entries with their errors, for logs and `/status`.
    pub fn invalid(&self) -> Vec<(Kind, &Id, &str)> {
        fn errs<T>(
            kind: Kind,
            m: &BTreeMap<Id, Entry<T>>,
        ) -> impl Iterator<Item = (Kind, &Id, &str)> {
            m.iter().filter_map(move |(id, e)| {
                e.parsed.as_ref().err().map(|err| (kind, id, err.as_str()))
            })
        }
        errs(Kind::Routes, &self.routes)
            .chain(errs(Kind::Services, &self.services))
            .chain(errs(Kind::Upstreams, &self.upstreams))
            .chain(errs(Kind::Ssls, &self.ssls))
            .chain(errs(Kind::Consumers, &self.consumers))
            .chain(errs(Kind::PluginConfigs, &self.plugin_configs))
            .chain(errs(Kind::ConsumerGroups, &self.consumer_groups))
            .chain(errs(Kind::PluginMetadata, &self.plugin_metadata))
            .chain(errs(Kind::GlobalRules, &self.global_rules))
            .collect()
    }
}

/// What replacing one entry did: the outcome, the entry's validity before and after (for
/// the counts), and the node names its upstreams used before and after (for the resolver).
struct Replaced {
    applied: Applied,
    before: Option<bool>,
    after: Option<bool>,
    /// Why the entry is invalid, when it is.
    error: Option<String>,
    old_names: Vec<String>,
    new_names: Vec<String>,
}

fn replace<T: Resource>(
    map: &mut BTreeMap<Id, Entry<T>>,
    id: &Id,
    value: Option<Vec<u8>>,
    upstreams: fn(&T) -> Vec<&Upstream>,
) -> Replaced {
    let validity = |m: &BTreeMap<Id, Entry<T>>| m.get(id).map(|e| e.parsed.is_ok());
    let before = validity(map);
    let old_names = names_in(map.get(id), upstreams);
    let applied = upsert(map, id, value);
    Replaced {
        applied,
        before,
        after: validity(map),
        error: map.get(id).and_then(|e| e.parsed.as_ref().err().cloned()),
        old_names,
        new_names: names_in(map.get(id), upstreams),
    }
}

/// [`replace`] for an ssl, then the checks that need its keys: an enabled ssl whose keys
/// cannot be decrypted, or do not match its certificates, is invalid like a value that
/// does not parse, and the names it claimed are served by no certificate of its.
fn replace_ssl(
    ssls: &mut BTreeMap<Id, Entry<Ssl>>,
    certs: &mut BTreeMap<Id, Arc<CertSet>>,
    keyring: &Keyring,
    id: &Id,
    value: Option<Vec<u8>>,
) -> Replaced {
    let mut r = replace(ssls, id, value, |_| Vec::new());
    if r.applied != Applied::Changed {
        return r;
    }
    certs.remove(id);
    let Some(entry) = ssls.get_mut(id) else {
        return r;
    };
    let Ok(ssl) = &entry.parsed else {
        return r;
    };
    if !ssl.enabled() {
        return r;
    }
    match cert_set(ssl, keyring) {
        Ok(set) => {
            certs.insert(id.clone(), Arc::new(set));
        }
        Err(e) => {
            tracing::warn!(kind = "ssls", id = %id, error = %e, "unusable certificate in etcd: disabled");
            r.error = Some(e.clone());
            entry.parsed = Err(e);
            r.after = Some(false);
        }
    }
    r
}

/// Decrypts an ssl's keys and pairs them with their certificates.
pub fn cert_set(ssl: &Ssl, keyring: &Keyring) -> Result<CertSet, String> {
    let mut plain = ssl.clone();
    plain.decrypt_keys(keyring).map_err(|e| e.to_string())?;
    let keys = plain
        .pairs()
        .enumerate()
        .map(|(i, (cert, key))| {
            model::ssl::certified_key(cert, key)
                .map(Arc::new)
                .map_err(|e| match i {
                    0 => format!("cert/key: {e}"),
                    n => format!("certs[{}]/keys[{}]: {e}", n - 1, n - 1),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CertSet {
        snis: plain.snis.clone(),
        keys,
    })
}

fn service_upstreams(s: &Service) -> Vec<&Upstream> {
    s.upstream.iter().collect()
}

fn itself(u: &Upstream) -> Vec<&Upstream> {
    vec![u]
}

/// A route's own inline upstream and those inside its `traffic-split` rules.
fn route_upstreams(r: &Route) -> Vec<&Upstream> {
    let split = r.parsed_plugins.traffic_split().into_iter().flat_map(|t| {
        t.rules.iter().flat_map(|rule| {
            rule.weighted_upstreams
                .iter()
                .filter_map(|w| w.upstream.as_ref())
        })
    });
    r.upstream.iter().chain(split).collect()
}

/// The node host names (not IP literals) of an entry's upstream, if it is valid.
fn names_in<T>(entry: Option<&Entry<T>>, upstreams: impl Fn(&T) -> Vec<&Upstream>) -> Vec<String> {
    let Some(Ok(value)) = entry.map(|e| &e.parsed) else {
        return Vec::new();
    };
    let mut names: Vec<String> = upstreams(value)
        .into_iter()
        .flat_map(|u| u.nodes.0.iter())
        .filter(|n| crate::dns::is_name(&n.host))
        .map(|n| n.host.to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    names
}

fn upsert<T: Resource>(
    map: &mut BTreeMap<Id, Entry<T>>,
    id: &Id,
    value: Option<Vec<u8>>,
) -> Applied {
    let Some(raw) = value else {
        return match map.remove(id) {
            Some(_) => Applied::Changed,
            None => Applied::Unchanged,
        };
    };
    let old = map.get(id);
    if old.is_some_and(|e| e.raw == raw) {
        return Applied::Unchanged;
    }
    let parsed = parse::<T>(id, &raw);
    if let Err(e) = &parsed {
        tracing::warn!(kind = T::KIND.as_str(), id = %id, error = %e, "invalid resource in etcd: disabled");
    }
    // The Admin API stamps `update_time` on every write, so re-saving the same resource
    // changes its bytes but nothing the gateway serves.
    let same = old
        .is_some_and(|e| e.parsed.is_ok() && parsed.is_ok() && same_but_update_time(&e.raw, &raw));
    map.insert(id.clone(), Entry { raw, parsed });
    if same {
        Applied::Unchanged
    } else {
        Applied::Changed
    }
}

/// Whether two stored JSON objects differ at most in their top-level `update_time`.
fn same_but_update_time(a: &[u8], b: &[u8]) -> bool {
    let strip = |raw: &[u8]| {
        let mut v: serde_json::Value = serde_json::from_slice(raw).ok()?;
        v.as_object_mut()?.remove("update_time");
        Some(v)
    };
    match (strip(a), strip(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// [`upsert`] for a credential, which is not a resource kind of its own.
fn upsert_credential(
    all: &mut BTreeMap<Id, BTreeMap<Id, Entry<Credential>>>,
    user: &Id,
    id: &Id,
    value: Option<Vec<u8>>,
) -> Applied {
    let Some(raw) = value else {
        let Some(of_user) = all.get_mut(user) else {
            return Applied::Unchanged;
        };
        let removed = of_user.remove(id).is_some();
        if of_user.is_empty() {
            all.remove(user);
        }
        return match removed {
            true => Applied::Changed,
            false => Applied::Unchanged,
        };
    };
    let of_user = all.entry(user.clone()).or_default();
    if of_user.get(id).is_some_and(|e| e.raw == raw) {
        return Applied::Unchanged;
    }
    let parsed = Credential::decode(&raw)
        .map(Arc::new)
        .map_err(|e| e.to_string());
    if let Err(e) = &parsed {
        tracing::warn!(consumer = %user, credential = %id, error = %e, "invalid credential in etcd: disabled");
    }
    of_user.insert(id.clone(), Entry { raw, parsed });
    Applied::Changed
}

fn parse<T: Resource>(id: &Id, raw: &[u8]) -> Result<Arc<T>, String> {
    let value = decode::<T>(raw).map_err(|e| e.to_string())?;
    match value.id() {
        Some(inner) if inner != id => Err(format!(
            "id {inner} in the value differs from the key's id {id}"
        )),
        _ => Ok(Arc::new(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Change {
        Change::Put {
            key: key.into(),
            value: value.as_bytes().to_vec(),
        }
    }
    fn del(key: &str) -> Change {
        Change::Delete { key: key.into() }
    }

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A name's resolved addresses outlive edits of the entries that use it, and a relist.
    #[test]
    fn resolved_names_survive_edits_and_relists() {
        let mut s = State::default();
        let up = |w: u32| {
            put(
                "/apisix/upstreams/u",
                &format!(r#"{{"nodes":{{"svc.test:80":{w}}}}}"#),
            )
        };
        s.apply("/apisix", up(1));
        assert!(s.resolving(), "a new name waits for its first answer");
        let addrs = vec!["10.0.0.1".parse().unwrap()];
        assert_eq!(s.apply_dns("svc.test", addrs.clone()), Applied::Changed);
        assert!(!s.resolving());
        // An edit of the only user of the name: its addresses stay.
        s.apply("/apisix", up(2));
        assert_eq!(s.dns().get("svc.test"), Some(&addrs));
        assert!(!s.resolving());
        // A relist builds a new state: it takes the addresses of the names it still uses.
        let mut relisted = State::default();
        relisted.apply("/apisix", up(3));
        relisted.apply(
            "/apisix",
            put("/apisix/upstreams/v", r#"{"nodes":{"other.test:80":1}}"#),
        );
        relisted.keep_dns(&s);
        assert_eq!(relisted.dns().get("svc.test"), Some(&addrs));
        assert!(relisted.resolving(), "other.test has had no answer yet");
        // The last user gone: the name and its addresses go.
        s.apply("/apisix", del("/apisix/upstreams/u"));
        assert!(s.dns().is_empty() && !s.resolving());
    }

    /// The list of invalid entries follows every change, and says when it changed.
    #[test]
    fn invalid_entries_are_kept_with_their_errors() {
        let mut s = State::default();
        let errors = |s: &State| -> Vec<String> {
            s.errors()
                .iter()
                .map(|((k, id), _)| format!("{} {id}", k.as_str()))
                .collect()
        };
        // (change, errors after, whether the list changed)
        let steps: Vec<(Change, &[&str], bool)> = vec![
            (
                put(
                    "/apisix/routes/1",
                    r#"{"uri":"/a","upstream":{"nodes":{"127.0.0.1:1":1}}}"#,
                ),
                &[],
                false,
            ),
            (put("/apisix/routes/2", r#"{"uri":5}"#), &["routes 2"], true),
            (
                put("/apisix/upstreams/u", r#"{"nodes":"x"}"#),
                &["routes 2", "upstreams u"],
                true,
            ),
            // Still invalid, for the same reason: no change to the list.
            (
                put("/apisix/routes/2", r#"{"uri":5}"#),
                &["routes 2", "upstreams u"],
                false,
            ),
            (
                put(
                    "/apisix/routes/2",
                    r#"{"uri":"/b","upstream":{"nodes":{"127.0.0.1:1":1}}}"#,
                ),
                &["upstreams u"],
                true,
            ),
            (del("/apisix/upstreams/u"), &[], true),
            (del("/apisix/routes/1"), &[], false),
        ];
        for (i, (change, want, changed)) in steps.into_iter().enumerate() {
            s.apply("/apisix", change);
            assert_eq!(errors(&s), want, "step {i}");
            assert_eq!(s.take_dirty().errors, changed, "step {i}");
        }
        let mut s = State::default();
        s.apply("/apisix", put("/apisix/routes/9", r#"{"uri":5}"#));
        assert!(s.errors()[&(Kind::Routes, Id::parse("9").unwrap())].contains("uri"));
    }

    #[test]
    fn ssls_are_decrypted_checked_and_counted() {
        let keyring = Arc::new(Keyring::new(&["0123456789abcdef".to_string()]).unwrap());
        let (cert, key) = pair("a.test");
        let (_, other_key) = pair("b.test");
        let ssl = |key: &str, status: u8| {
            serde_json::json!({"cert": cert, "key": key, "snis": ["a.test"], "status": status})
                .to_string()
        };
        let sealed = keyring.encrypt(&key);
        let foreign = Keyring::new(&["fedcba9876543210".to_string()])
            .unwrap()
            .encrypt(&key);
        // (change, applied, serving cert for id 1, valid, invalid)
        let steps = [
            (
                put("/gw/ssls/1", &ssl(&key, 1)),
                Applied::Changed,
                true,
                1,
                0,
            ),
            (
                put("/gw/ssls/1", &ssl(&sealed, 1)),
                Applied::Changed,
                true,
                1,
                0,
            ),
            (
                put("/gw/ssls/1", &ssl(&foreign, 1)),
                Applied::Changed,
                false,
                0,
                1,
            ),
            (
                put("/gw/ssls/1", &ssl(&other_key, 1)),
                Applied::Changed,
                false,
                0,
                1,
            ),
            (
                put("/gw/ssls/1", &ssl(&sealed, 0)),
                Applied::Changed,
                false,
                1,
                0,
            ),
            (
                put("/gw/ssls/1", &ssl(&sealed, 1)),
                Applied::Changed,
                true,
                1,
                0,
            ),
            (
                put("/gw/ssls/1", "{\"cert\": 1}"),
                Applied::Changed,
                false,
                0,
                1,
            ),
            (del("/gw/ssls/1"), Applied::Changed, false, 0, 0),
        ];
        let mut state = State::with_keyring(keyring.clone());
        for (i, (change, applied, serving, valid, invalid)) in steps.into_iter().enumerate() {
            assert_eq!(state.apply("/gw", change), applied, "step {i}");
            let id = Id::parse("1").unwrap();
            assert_eq!(state.certs.contains_key(&id), serving, "step {i}");
            assert_eq!(
                (state.counts().ssls, state.counts().invalid_ssls),
                (valid, invalid),
                "step {i}"
            );
            assert!(state.take_dirty().ssls.contains(&id), "step {i}");
        }
        // Without the keyring an encrypted key is unusable, with a reason.
        let mut bare = State::default();
        bare.apply("/gw", put("/gw/ssls/2", &ssl(&sealed, 1)));
        let err = bare
            .invalid()
            .into_iter()
            .map(|(_, _, e)| e.to_string())
            .collect::<Vec<_>>();
        assert!(err[0].contains("decrypt"), "{err:?}");
    }

    #[test]
    fn apply_table() {
        let route = r#"{"uri":"/a","upstream_id":"1"}"#;
        let steps: Vec<(Change, Applied, usize, usize)> = vec![
            // (change, result, valid routes, invalid entries)
            (put("/gw/routes/1", route), Applied::Changed, 1, 0),
            (put("/gw/routes/1", route), Applied::Unchanged, 1, 0),
            // A re-save through the Admin API: only update_time differs.
            (
                put(
                    "/gw/routes/1",
                    r#"{"uri":"/a","upstream_id":"1","update_time":5}"#,
                ),
                Applied::Unchanged,
                1,
                0,
            ),
            (
                put(
                    "/gw/routes/1",
                    r#"{"uri":"/a","upstream_id":"1","update_time":6}"#,
                ),
                Applied::Unchanged,
                1,
                0,
            ),
            (
                put(
                    "/gw/routes/1",
                    r#"{"uri":"/a","upstream_id":"1","update_time":6,"priority":1}"#,
                ),
                Applied::Changed,
                1,
                0,
            ),
            (put("/gw/routes/1", route), Applied::Changed, 1, 0),
            (
                put("/gw/routes/2", r#"{"uri":"x"}"#),
                Applied::Changed,
                1,
                1,
            ),
            (
                put("/gw/routes/3", r#"{"id":"4","uri":"/a","upstream_id":"1"}"#),
                Applied::Changed,
                1,
                2,
            ),
            (put("/gw/routes/2", route), Applied::Changed, 2, 1),
            (put("/gw/protos/1", "{}"), Applied::Ignored, 2, 1),
            (put("/other/routes/9", route), Applied::Ignored, 2, 1),
            (put("/gw/routes/", route), Applied::Ignored, 2, 1),
            (del("/gw/routes/1"), Applied::Changed, 1, 1),
            (del("/gw/routes/1"), Applied::Unchanged, 1, 1),
            (
                put("/gw/upstreams/1", r#"{"nodes":{"127.0.0.1:1":1}}"#),
                Applied::Changed,
                1,
                1,
            ),
            (put("/gw/upstreams/2", "not json"), Applied::Changed, 1, 2),
        ];
        let mut state = State::default();
        for (i, (change, want, valid, invalid)) in steps.into_iter().enumerate() {
            assert_eq!(
                state.apply("/gw", change.clone()),
                want,
                "step {i}: {change:?}"
            );
            let n_valid = state.routes.values().filter(|e| e.parsed.is_ok()).count();
            let n_invalid_routes = state.routes.values().filter(|e| e.parsed.is_err()).count();
            let c = state.counts();
            assert_eq!(
                (c.routes, c.invalid_routes),
                (n_valid, n_invalid_routes),
                "step {i}"
            );
            assert_eq!(
                c.invalid_routes + c.invalid_services + c.invalid_upstreams,
                state.invalid().len(),
                "step {i}"
            );
            assert_eq!(
                (n_valid, state.invalid().len()),
                (valid, invalid),
                "step {i}"
            );
        }
    }

    #[test]
    fn dirty_collects_changed_ids_until_taken() {
        let mut state = State::default();
        state.apply(
            "/gw",
            put("/gw/routes/1", r#"{"uri":"/a","upstream_id":"1"}"#),
        );
        state.apply(
            "/gw",
            put("/gw/upstreams/u", r#"{"nodes":{"127.0.0.1:1":1}}"#),
        );
        state.apply("/gw", del("/gw/services/none"));
        state.apply("/gw", put("/gw/ssls/1", "{}"));
        let d = state.take_dirty();
        let ids = |s: &BTreeSet<Id>| s.iter().map(|i| i.to_string()).collect::<Vec<_>>();
        assert!(!d.all);
        assert_eq!(ids(&d.routes), ["1"]);
        assert_eq!(ids(&d.upstreams), ["u"]);
        assert!(
            d.services.is_empty(),
            "deleting a missing key changes nothing"
        );
        assert!(state.take_dirty().is_empty());
        // Unchanged writes leave nothing to do.
        state.apply(
            "/gw",
            put("/gw/routes/1", r#"{"uri":"/a","upstream_id":"1"}"#),
        );
        assert!(state.take_dirty().is_empty());
        state.apply("/gw", del("/gw/routes/1"));
        assert_eq!(ids(&state.take_dirty().routes), ["1"]);
        state.mark_all_dirty();
        assert!(state.take_dirty().all);
    }

    #[test]
    fn node_names_are_tracked_and_resolutions_dirty_their_users() {
        let mut state = State::default();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        state.apply(
            "/gw",
            put(
                "/gw/upstreams/u",
                r#"{"nodes":{"Svc.Example:80":1,"10.0.0.1:80":1}}"#,
            ),
        );
        state.apply(
            "/gw",
            put(
                "/gw/routes/r",
                r#"{"uri":"/r","upstream":{"nodes":{"svc.example:81":1}}}"#,
            ),
        );
        state.apply(
            "/gw",
            put("/gw/routes/plain", r#"{"uri":"/p","upstream_id":"u"}"#),
        );
        assert_eq!(
            state.names().into_iter().collect::<Vec<_>>(),
            ["svc.example"]
        );
        state.take_dirty();
        // A name nobody uses is not stored; the same answer twice changes nothing.
        assert_eq!(
            state.apply_dns("nobody.example", vec![ip("10.0.0.9")]),
            Applied::Unchanged
        );
        assert_eq!(
            state.apply_dns("svc.example", vec![ip("10.0.0.2")]),
            Applied::Changed
        );
        let d = state.take_dirty();
        let ids = |s: &BTreeSet<Id>| s.iter().map(|i| i.to_string()).collect::<Vec<_>>();
        assert_eq!(
            (ids(&d.upstreams), ids(&d.routes)),
            (vec!["u".to_string()], vec!["r".to_string()])
        );
        assert_eq!(
            state.apply_dns("svc.example", vec![ip("10.0.0.2")]),
            Applied::Unchanged
        );
        // Once no entry uses the name, it and its addresses are forgotten.
        state.apply("/gw", del("/gw/routes/r"));
        assert_eq!(state.names().len(), 1);
        state.apply(
            "/gw",
            put("/gw/upstreams/u", r#"{"nodes":{"10.0.0.1:80":1}}"#),
        );
        assert!(state.names().is_empty());
        assert!(state.dns().is_empty());
    }
}
