//! Plugin state that outlives snapshots (rate-limit windows…), keyed by who owns it (a
//! route, a consumer, a `limit-count` group), the plugin, and the plugin's configuration
//! exactly as written: recompiling a route for an unrelated change finds the same state;
//! a change of the plugin's own configuration finds none and starts afresh.
//!
//! Only the snapshot compiler touches this table (one watch task): the request path holds
//! the state itself, through the compiled chain.
use crate::state::Entry;
use model::plugin_metadata::{Metadata, PluginMetadata};
use model::Id;
use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// What compiling a chain reads besides the plugins' configurations: the state that
/// outlives snapshots, and the plugins' metadata (`plugin_metadata/{name}`).
#[derive(Clone, Copy)]
pub struct ChainEnv<'a> {
    pub states: &'a PluginStates,
    pub metadata: &'a BTreeMap<Id, Entry<PluginMetadata>>,
}

impl ChainEnv<'_> {
    /// The valid metadata of `plugin`, if any.
    pub fn metadata(&self, plugin: &str) -> Option<&Metadata> {
        let id = Id::parse(plugin).ok()?;
        self.metadata
            .get(&id)?
            .parsed
            .as_ref()
            .ok()?
            .parsed
            .as_ref()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StateKey {
    /// `routes/1`, `consumers/jack`, `global_rules`, `limit-count-group/g1`.
    pub owner: String,
    pub plugin: &'static str,
    /// The plugin's configuration as written (`Plugin::source`).
    pub source: String,
}

type Shared = Arc<dyn Any + Send + Sync>;

#[derive(Default)]
pub struct PluginStates {
    all: Mutex<HashMap<StateKey, Shared>>,
    /// The client of the requests plugins send on their own (mirror copies, log
    /// batches); set once when the gateway starts, absent in unit tests.
    outbound: std::sync::OnceLock<Arc<crate::outbound::Outbound>>,
}

impl PluginStates {
    pub fn set_outbound(&self, outbound: Arc<crate::outbound::Outbound>) {
        let _ = self.outbound.set(outbound);
    }

    pub fn outbound(&self) -> Option<&Arc<crate::outbound::Outbound>> {
        self.outbound.get()
    }

    /// The state of `key`, made by `new` the first time.
    pub fn get_or_insert<T: Any + Send + Sync>(
        &self,
        key: StateKey,
        new: impl FnOnce() -> T,
    ) -> Arc<T> {
        let mut all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = all.get(&key).and_then(|s| s.clone().downcast::<T>().ok()) {
            return found;
        }
        let made = Arc::new(new());
        all.insert(key, made.clone());
        made
    }

    /// Forgets the states no compiled chain holds any more (once the snapshots that held
    /// them are gone: a state an older snapshot still serves with is kept until then).
    pub fn sweep(&self) {
        let mut all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|_, s| Arc::strong_count(s) > 1);
    }

    pub fn len(&self) -> usize {
        self.all.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn key(owner: &str, source: &str) -> StateKey {
        StateKey {
            owner: owner.into(),
            plugin: "limit-count",
            source: source.into(),
        }
    }

    #[test]
    fn same_key_same_state_until_nobody_holds_it() {
        let states = PluginStates::default();
        let a = states.get_or_insert(key("routes/1", "{\"count\":1}"), || AtomicU64::new(0));
        a.fetch_add(5, Ordering::Relaxed);
        let again = states.get_or_insert(key("routes/1", "{\"count\":1}"), || AtomicU64::new(0));
        assert_eq!(again.load(Ordering::Relaxed), 5, "same key: same state");
        let other_conf =
            states.get_or_insert(key("routes/1", "{\"count\":2}"), || AtomicU64::new(0));
        let other_route =
            states.get_or_insert(key("routes/2", "{\"count\":1}"), || AtomicU64::new(0));
        assert_eq!(other_conf.load(Ordering::Relaxed), 0);
        assert_eq!(other_route.load(Ordering::Relaxed), 0);
        drop((again, other_conf));
        states.sweep();
        assert_eq!(states.len(), 2, "held states stay");
        drop((a, other_route));
        states.sweep();
        assert!(states.is_empty());
        let fresh = states.get_or_insert(key("routes/1", "{\"count\":1}"), || AtomicU64::new(0));
        assert_eq!(
            fresh.load(Ordering::Relaxed),
            0,
            "a swept state starts afresh"
        );
    }
}
