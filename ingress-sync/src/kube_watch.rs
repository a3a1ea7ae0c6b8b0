//! Reflector stores for the five kinds we read (eleven with `--gateway-api`), each fed by a kube-rs watcher with
//! backoff (re-listing after `410 Gone`), and one coalescing trigger: every event pokes a
//! `Notify`, whose single permit merges a burst into one wake-up; the caller then waits a
//! short debounce before it reads the stores.
use crate::gateway_api::{Gateway, GatewayClass, GrpcRoute, HttpRoute, ReferenceGrant};
use crate::translate::Cluster;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Clone)]
pub struct Stores {
    ingresses: Store<Ingress>,
    classes: Store<IngressClass>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    secrets: Store<Secret>,
    gateway_api: Option<GatewayStores>,
}

/// The Gateway API kinds, and Namespaces for `allowedRoutes` selectors.
#[derive(Clone)]
struct GatewayStores {
    classes: Store<GatewayClass>,
    gateways: Store<Gateway>,
    routes: Store<HttpRoute>,
    grpc_routes: Store<GrpcRoute>,
    grants: Store<ReferenceGrant>,
    namespaces: Store<Namespace>,
}

impl Stores {
    /// Starts the watchers; `trigger` is notified on every change. `gateway_api`: also
    /// the Gateway API kinds (their CRDs must be installed, or their watches keep failing).
    pub fn start(client: &Client, trigger: &Arc<Notify>, gateway_api: bool) -> Stores {
        let all = watcher::Config::default();
        Stores {
            gateway_api: gateway_api.then(|| GatewayStores {
                classes: spawn(Api::all(client.clone()), all.clone(), trigger),
                gateways: spawn(Api::all(client.clone()), all.clone(), trigger),
                routes: spawn(Api::all(client.clone()), all.clone(), trigger),
                grpc_routes: spawn(Api::all(client.clone()), all.clone(), trigger),
                grants: spawn(Api::all(client.clone()), all.clone(), trigger),
                namespaces: spawn(Api::all(client.clone()), all.clone(), trigger),
            }),
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

    /// Waits until every store holds its first full list, saying every 30 s which kind
    /// it still waits for.
    pub async fn wait_ready(&self) {
        ready(&self.ingresses).await;
        ready(&self.classes).await;
        ready(&self.services).await;
        ready(&self.slices).await;
        ready(&self.secrets).await;
        if let Some(g) = &self.gateway_api {
            ready(&g.classes).await;
            ready(&g.gateways).await;
            ready(&g.routes).await;
            ready(&g.grpc_routes).await;
            ready(&g.grants).await;
            ready(&g.namespaces).await;
        }
    }

    /// A copy of what the stores hold now: the translation's input.
    pub fn snapshot(&self) -> Cluster {
        fn all<K: kube::Resource + Clone>(s: &Store<K>) -> Vec<K>
        where
            K::DynamicType: Eq + std::hash::Hash + Clone,
        {
            s.state().iter().map(|o| (**o).clone()).collect()
        }
        let mut cluster = Cluster {
            ingresses: all(&self.ingresses),
            classes: all(&self.classes),
            services: all(&self.services),
            slices: all(&self.slices),
            secrets: all(&self.secrets),
            ..Cluster::default()
        };
        if let Some(g) = &self.gateway_api {
            cluster.gateway_classes = all(&g.classes);
            cluster.gateways = all(&g.gateways);
            cluster.http_routes = all(&g.routes);
            cluster.grpc_routes = all(&g.grpc_routes);
            cluster.reference_grants = all(&g.grants);
            cluster.namespaces = all(&g.namespaces);
        }
        cluster
    }
}

async fn ready<K>(store: &Store<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    while tokio::time::timeout(Duration::from_secs(30), store.wait_until_ready())
        .await
        .is_err()
    {
        tracing::warn!(
            kind,
            "not listed yet, so nothing is synced (with --gateway-api: are the Gateway API \
             CRDs installed?)"
        );
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
