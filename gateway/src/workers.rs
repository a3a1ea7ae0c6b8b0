//! The request-serving threads. Each worker runs its own single-threaded event loop with
//! its own listening sockets on the shared ports (SO_REUSEPORT: the kernel spreads new
//! connections over them), so a connection, its requests and the upstream connections
//! they use (see `pool`) stay on one thread: no task hand-offs between threads and no
//! work-stealing wake-ups on the request path. The control plane (etcd watch, status
//! listener, health checks, DNS) runs on the main runtime and reaches the workers only
//! through `Shared`: a snapshot swap is seen by every worker's next request.
use crate::{server, Shared};
use std::cell::Cell;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// The calling worker's index; 0 on threads that are not workers.
pub fn current() -> usize {
    CURRENT.with(Cell::get)
}

/// More would only add threads fighting for the same cores.
pub const MAX: usize = 1024;

/// One per available core (the `--workers` default).
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The listening sockets of one worker.
pub struct Listeners {
    pub http: TcpListener,
    pub https: TcpListener,
}

/// Binds `n` sockets on each address. When port 0 is asked for, the first socket's port
/// is used for the others, so that they all share one port.
pub fn bind(n: usize, http: SocketAddr, https: SocketAddr) -> anyhow::Result<Vec<Listeners>> {
    let group = |addr: SocketAddr, flag: &str| -> anyhow::Result<Vec<TcpListener>> {
        let err = |e| anyhow::anyhow!("cannot listen on {addr} ({flag}): {e}");
        let first = server::bind_std(addr).map_err(err)?;
        let addr = first.local_addr().map_err(err)?;
        let mut all = vec![first];
        for _ in 1..n {
            all.push(server::bind_std(addr).map_err(err)?);
        }
        Ok(all)
    };
    let https = group(https, "--tls-listen")?;
    Ok(group(http, "--listen")?
        .into_iter()
        .zip(https)
        .map(|(http, https)| Listeners { http, https })
        .collect())
}

/// Starts one thread per set of listeners. Each serves until `stop` turns true and its
/// connections have drained (within `grace`), then resolves its receiver. Client
/// connections are bound by `limits` (timeouts, connections per worker).
pub fn start(
    listeners: Vec<Listeners>,
    shared: &Arc<Shared>,
    stop: &watch::Receiver<bool>,
    grace: Duration,
    limits: server::ClientLimits,
    tls: &Arc<rustls::ServerConfig>,
) -> anyhow::Result<Vec<oneshot::Receiver<()>>> {
    let mut done = Vec::new();
    for (index, l) in listeners.into_iter().enumerate() {
        let (shared, stop, tls) = (shared.clone(), stop.clone(), tls.clone());
        let (finished, finished_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || {
                CURRENT.with(|c| c.set(index));
                // Built here, not by the caller: a runtime must not be dropped inside
                // another's async context, as it would be if this spawn failed.
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(worker = index, error = %e, "worker cannot start its event loop");
                        return;
                    }
                };
                runtime.block_on(serve(l, shared, stop, grace, limits, tls));
                // Whatever is left (idle upstream connections' tasks, tunnels past the
                // grace period) ends with the loop.
                runtime.shutdown_timeout(Duration::from_secs(1));
                let _ = finished.send(());
            })?;
        done.push(finished_rx);
    }
    Ok(done)
}

async fn serve(
    l: Listeners,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    grace: Duration,
    limits: server::ClientLimits,
    tls: Arc<rustls::ServerConfig>,
) {
    let listeners = tokio::net::TcpListener::from_std(l.http)
        .and_then(|http| Ok((http, tokio::net::TcpListener::from_std(l.https)?)));
    let (http, https) = match listeners {
        Ok(both) => both,
        Err(e) => {
            tracing::error!(worker = current(), error = %e, "worker cannot use its listeners");
            return;
        }
    };
    tokio::join!(
        server::serve(http, shared.clone(), stop.clone(), grace, limits, None),
        server::serve(https, shared, stop, grace, limits, Some(tls)),
    );
}
