//! The gateway's data plane: one listener dispatching every request through a radix router
//! held in an `arc-swap` snapshot, fed by an etcd watch. See docs/architecture.md.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod balancer;
pub mod client_body;
pub mod client_head;
pub mod client_request;
pub mod config;
pub mod config_file;
pub mod consumers;
pub mod dns;
pub mod h1_client;
pub mod h1_server;
pub mod headers;
pub mod health_check;
pub mod held_body;
pub mod http_date;
pub mod lb;
pub mod metrics;
pub mod normalize;
pub mod outbound;
pub mod park;
pub mod plugin_state;
pub mod plugins;
pub mod pool;
pub mod prometheus;
pub mod proxy;
pub mod report;
pub mod request_body;
pub mod request_vars;
pub mod response_end;
pub mod router;
pub mod send_timeout;
pub mod server;
pub mod snapshot;
pub mod split;
pub mod state;
pub mod status;
pub mod tls;
pub mod transport;
pub mod upstream_body;
pub mod watch;
pub mod workers;

use arc_swap::ArcSwap;
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

pub use config::Config;

/// What outlives snapshots: the current snapshot itself, the upstream connection pool and
/// the counters. Requests read it; only the watch task writes the snapshot.
pub struct Shared {
    pub snapshot: ArcSwap<snapshot::Snapshot>,
    pub pool: Arc<pool::Pool>,
    pub metrics: metrics::Metrics,
    /// True once the first full list from etcd has been applied.
    pub ready: AtomicBool,
    pub etcd_connected: AtomicBool,
    /// Active health-check tasks, matched to each new snapshot by the watch.
    pub checkers: health_check::Checkers,
    /// Node host names in use, published after each build for the resolver (`dns.rs`).
    pub dns_names: tokio::sync::watch::Sender<std::collections::BTreeSet<String>>,
    /// This replica's `--zone`: nodes in it are preferred while any of them is healthy.
    pub zone: Option<String>,
    /// The HTTPS listener's port, for `redirect` with `http_to_https`.
    pub https_port: u16,
    /// Request-serving threads (`workers.rs`).
    pub workers: usize,
    /// `--client-max-body-size` (`None`: no limit); a route's `client-control` overrides it.
    pub max_body_size: Option<u64>,
    /// `--access-log`, unless `off`.
    pub access_log: Option<Arc<access_log::AccessLog>>,
    /// The `prometheus` plugin's request metrics.
    pub requests: Arc<prometheus::RequestMetrics>,
    /// Whether any route or global rule of the current snapshot has the `prometheus`
    /// plugin: until one does, requests skip the timing and labels it needs.
    pub records_metrics: AtomicBool,
}

impl Shared {
    pub fn new(
        zone: Option<String>,
        https_port: u16,
        workers: usize,
        max_body_size: Option<u64>,
        access_log: Option<Arc<access_log::AccessLog>>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot::Snapshot::empty()),
            pool: Arc::new(pool::Pool::new(workers)),
            metrics: metrics::Metrics::new(workers),
            requests: Arc::new(prometheus::RequestMetrics::new(workers)),
            records_metrics: AtomicBool::new(false),
            workers,
            max_body_size,
            access_log,
            ready: AtomicBool::new(false),
            etcd_connected: AtomicBool::new(false),
            zone,
            https_port,
            checkers: health_check::Checkers::default(),
            dns_names: tokio::sync::watch::Sender::new(Default::default()),
        })
    }
}

/// Runs the gateway until `shutdown` resolves, then drains within the grace period.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let keyring =
        model::Keyring::new(&config.data_encryption_keys).map_err(|e| anyhow::anyhow!(e))?;
    let etcd_access = config
        .etcd_access
        .resolve(&config.etcd_endpoints)
        .map_err(anyhow::Error::msg)?;
    let workers = config
        .workers
        .map_or_else(workers::default_count, std::num::NonZeroUsize::get);
    if workers > workers::MAX {
        anyhow::bail!("--workers {workers}: at most {} are allowed", workers::MAX);
    }
    let listeners = workers::bind(workers, config.listen, config.tls_listen)?;
    let https_port = listeners[0].https.local_addr()?.port();
    let max_body_size = Some(config.client_max_body_size).filter(|n| *n > 0);
    let access_log = match config.access_log_target() {
        Some(target) => {
            let log = access_log::AccessLog::start(target, config.access_log_format.clone())
                .map_err(|e| {
                    anyhow::anyhow!("cannot open --access-log {}: {e}", config.access_log)
                })?;
            // logrotate's postrotate sends SIGUSR1: the file is opened again.
            let reopen = log.clone();
            let mut usr1 =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
            tokio::spawn(async move {
                while usr1.recv().await.is_some() {
                    reopen.reopen();
                }
            });
            Some(log)
        }
        None => None,
    };
    let shared = Shared::new(
        config.zone.clone(),
        https_port,
        workers,
        max_body_size,
        access_log,
    );
    // Before the first snapshot is built: chains take the client from the states.
    shared
        .snapshot
        .load()
        .states
        .set_outbound(outbound::Outbound::start());
    let status = server::bind(config.status_listen).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {} (--status-listen): {e}",
            config.status_listen
        )
    })?;
    tracing::info!(listen = %config.listen, tls_listen = %config.tls_listen, status = %config.status_listen, prefix = %config.etcd_prefix, workers, "gateway starting");
    // Two stop signals: the listener stops accepting first; the etcd watch and the status
    // listener stay live while connections drain, so they are served with the current
    // configuration and the process still answers `/healthz`.
    let (stop_accepting, stop_accepting_rx) = tokio::sync::watch::channel(false);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (dns_tx, dns_rx) = tokio::sync::mpsc::channel(64);
    let resolver = tokio::spawn(dns::run(
        shared.dns_names.subscribe(),
        dns_tx,
        config.dns_resolver,
    ));
    let report_access = etcd_access.clone();
    let dns_link = watch::DnsLink { updates: dns_rx };
    // File mode: no etcd at all (no watch, no report).
    let watcher = match &config.config_file {
        Some(path) => tokio::spawn(config_file::run(
            path.clone(),
            shared.clone(),
            stop_rx.clone(),
            dns_link,
            Arc::new(keyring),
        )),
        None => tokio::spawn(watch::run(
            config.etcd_endpoints.clone(),
            etcd_access,
            config.etcd_prefix.clone(),
            shared.clone(),
            stop_rx.clone(),
            dns_link,
            Arc::new(keyring),
        )),
    };
    let status_task = tokio::spawn(status::serve(status, shared.clone(), stop_rx.clone()));
    let identity = report::Identity {
        id: config
            .instance_id
            .clone()
            .unwrap_or_else(report::default_instance_id),
        hostname: report::hostname(),
        listen: vec![
            config.listen.to_string(),
            config.tls_listen.to_string(),
            config.status_listen.to_string(),
        ],
        zone: config.zone.clone(),
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        workers,
    };
    // Leaves (revokes its key) as soon as the replica stops accepting.
    let reporter = config.config_file.is_none().then(|| {
        tokio::spawn(report::run(
            config.etcd_endpoints.clone(),
            report_access,
            config.etcd_prefix.clone(),
            identity,
            config.report_ttl,
            shared.clone(),
            stop_accepting_rx.clone(),
        ))
    });
    let sweeper = {
        let pool = shared.pool.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                pool.sweep(Duration::from_secs(300));
            }
        })
    };
    let served = workers::start(
        listeners,
        &shared,
        &stop_accepting_rx,
        config.grace_period,
        server::ClientLimits {
            send_timeout: config.client_send_timeout,
            header_timeout: config.client_header_timeout,
            keepalive_timeout: config.keepalive_timeout,
            max_connections: u64::from(config.worker_connections),
        },
        &tls::server_config(shared.clone(), config.tls_fallback_sni.clone()),
    )?;
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_accepting.send(true);
    if let Some(reporter) = reporter {
        let _ = reporter.await;
    }
    for worker in served {
        let _ = worker.await;
    }
    let _ = stop_tx.send(true);
    sweeper.abort();
    let _ = watcher.await;
    resolver.abort();
    let _ = status_task.await;
    tracing::info!("stopped");
    Ok(())
}

/// Sets up `tracing` from `RUST_LOG` (default `info`) in text or JSON.
pub fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves once `rx` turns true (or its sender is gone).
pub async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
