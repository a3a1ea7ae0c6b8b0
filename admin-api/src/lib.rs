//! The control plane: an APISIX-compatible Admin API that validates resources with the
//! shared `model` crate and stores them in etcd. It keeps no state of its own, so any
//! number of replicas behave as one.
#![forbid(unsafe_code)]

pub mod auth;
pub mod cluster;
pub mod config;
pub mod credentials;
pub mod error;
pub mod filter;
pub mod handlers;
pub mod ids;
pub mod openapi;
pub mod paging;
pub mod patch;
pub mod plugin_info;
pub mod resource;
pub mod store;
pub mod tls;
pub mod traffic;
pub mod ui;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, patch as patch_route};
use axum::Router;
use config::{Auth, Config};
use model::key::{normalize_prefix, resource_key};
use model::{Id, Keyring, Kind};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use store::Store;
use tokio::net::TcpListener;
use tracing::Instrument;

/// What every handler shares: the etcd store, how requests authenticate, and the keyring
/// secrets (SSL private keys) are encrypted with at rest.
pub struct App {
    pub store: Store,
    pub auth: Auth,
    pub keyring: Keyring,
    /// The dashboard's last per-route traffic sample, for request rates between views.
    pub traffic: std::sync::Mutex<Option<traffic::Sample>>,
    /// The monotonic clock of those samples.
    pub started: std::time::Instant,
}

impl App {
    /// An app without a keyring: secrets are stored in plaintext.
    pub fn new(store: Store, auth: Auth) -> App {
        App {
            store,
            auth,
            keyring: Keyring::default(),
            traffic: std::sync::Mutex::new(None),
            started: std::time::Instant::now(),
        }
    }

    pub fn with_keyring(self, keyring: Keyring) -> App {
        App { keyring, ..self }
    }

    /// `{prefix}/{kind}/{id}`.
    pub fn key(&self, kind: Kind, id: &Id) -> String {
        resource_key(self.store.prefix(), kind, id)
    }
}

/// The Admin API's routes, errors as JSON everywhere (unknown paths and methods too).
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(openapi::OPENAPI_PATH, get(openapi::serve))
        .route("/apisix/admin/cluster", get(cluster::get))
        .route("/ui/", get(ui::page))
        .route("/ui", get(ui::page))
        .route(
            "/apisix/admin/{kind}",
            get(handlers::list)
                .put(handlers::put_without_id)
                .post(handlers::create),
        )
        .route(
            "/apisix/admin/{kind}/{id}",
            get(handlers::get_one)
                .put(handlers::put_with_id)
                .patch(handlers::patch_merge)
                .delete(handlers::delete),
        )
        .route("/apisix/admin/plugins/list", get(plugin_info::list))
        .route("/apisix/admin/plugins/{name}", get(plugin_info::get_schema))
        .route(
            "/apisix/admin/schema/plugins/{name}",
            get(plugin_info::get_schema),
        )
        .route(
            "/apisix/admin/consumers/{username}/credentials",
            get(credentials::list),
        )
        .route(
            "/apisix/admin/consumers/{username}/credentials/{id}",
            get(credentials::get_one)
                .put(credentials::put)
                .delete(credentials::delete),
        )
        .route(
            "/apisix/admin/{kind}/{id}/{*path}",
            patch_route(handlers::patch_path),
        )
        .fallback(handlers::fallback)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(error::BODY_LIMIT))
        // Inside the key check: only an allowed write waits.
        .layer(middleware::from_fn_with_state(
            app.clone(),
            cluster::wait_layer,
        ))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            auth::require_key,
        ))
        .layer(middleware::from_fn(log_request))
        .with_state(app)
}

/// One span per request; the query is left out because it may carry the admin key.
async fn log_request(req: Request, next: Next) -> Response {
    let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path());
    async move {
        let started = Instant::now();
        let resp = next.run(req).await;
        tracing::info!(
            status = resp.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "handled"
        );
        resp
    }
    .instrument(span)
    .await
}

/// Serves the Admin API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving the Admin API")
}

/// Checks the configuration, binds the listener and serves until `shutdown` completes.
/// etcd is not contacted here: the first request connects, so etcd may still be down.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let auth = config.auth().map_err(anyhow::Error::msg)?;
    let endpoints = config.endpoints().map_err(anyhow::Error::msg)?;
    let keyring = config.keyring().map_err(anyhow::Error::msg)?;
    if keyring.is_empty() {
        tracing::warn!(
            "no --data-encryption-keys (DATA_ENCRYPTION_KEYS): SSL private keys will be stored \
             in etcd in plaintext"
        );
    }
    if auth == Auth::Disabled {
        tracing::warn!("--insecure-no-auth: the Admin API accepts every request without a key");
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(
        listen = %config.listen,
        etcd_endpoints = ?endpoints,
        etcd_prefix = %normalize_prefix(&config.etcd_prefix),
        "admin-api listening"
    );
    let access = config
        .etcd_access
        .resolve(&endpoints)
        .map_err(anyhow::Error::msg)?;
    let store = Store::new(endpoints, &config.etcd_prefix, access);
    let app = Arc::new(App::new(store, auth).with_keyring(keyring));
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let files = Arc::new(tls::Files::load(cert, key).context("--tls-cert/--tls-key")?);
            let listener = tls::listen(listener, files)?;
            axum::serve(listener, router(app))
                .with_graceful_shutdown(shutdown)
                .await
                .context("serving the Admin API over HTTPS")
        }
        (None, None) => serve(listener, app, shutdown).await,
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    }
}
