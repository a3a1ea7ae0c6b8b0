//! Reflector stores for the five kinds we read, each fed by a kube-rs watcher with
//! backoff (re-listing after `410 Gone`), and one coalescing trigger: every event pokes a
//! `Notify`, whose single permit merges a burst into one wake-up; the caller then waits a
//! short debounce before it reads the stores.
use crate::translate::Cluster;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use tokio::sync::Notify;

#[derive(Clone)]
pub struct Stores {
    ingresses: Store<Ingress>,
    classes: Store<IngressClass>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    secrets: Store<Secret>,
}

impl Stores {
    /// Starts the five watchers; `trigger` is notified on every change.
    pub fn start(client: &Client, trigger: &Arc<Notify>) -> Stores {
        let all = watcher::Config::default();
        Stores {
            ingresses: spawn(Api::all(client.clone()), all.clone(), trigger),
            classes: spawn(Api::all(client.clone()), all.clone(), trigger),
            services: spawn(Api::all(client.clone()), all.clone(), trigger),
            slices: spawn(Api::all(client.clone()), all.clone(), trigger),
            // Only TLS Secrets can matter; the server filters the rest out.
            secrets: spawn(
                Api::all(client.clone()),
                all.fields("type=kubernetes.io/tls"),
                trigger,
            ),
        }
    }

    /// Waits until every store holds its first full list.
    pub async fn wait_ready(&self) {
        let _ = self.ingresses.wait_until_ready().await;
        let _ = self.classes.wait_until_ready().await;
        let _ = self.services.wait_until_ready().await;
        let _ = self.slices.wait_until_ready().await;
        let _ = self.secrets.wait_until_ready().await;
    }

    /// A copy of what the stores hold now: the translation's input.
    pub fn snapshot(&self) -> Cluster {
        fn all<K: kube::Resource + Clone>(s: &Store<K>) -> Vec<K>
        where
            K::DynamicType: Eq + std::hash::Hash + Clone,
        {
            s.state().iter().map(|o| (**o).clone()).collect()
        }
        Cluster {
            ingresses: all(&self.ingresses),
            classes: all(&self.classes),
            services: all(&self.services),
            slices: all(&self.slices),
            secrets: all(&self.secrets),
        }
    }
}

fn spawn<K>(api: Api<K>, config: watcher::Config, trigger: &Arc<Notify>) -> Store<K>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let trigger = trigger.clone();
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    tokio::spawn(async move {
        let mut events = watcher(api, config)
            .default_backoff()
            .reflect(writer)
            .boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => trigger.notify_one(),
                Err(e) => tracing::warn!(kind, error = %e, "watch failed; retrying with backoff"),
            }
        }
        tracing::error!(kind, "watch stream ended");
    });
    reader
}
