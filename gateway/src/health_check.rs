//! Active health checks: one task per upstream with `checks`, probing each node every
//! `interval` and recording the outcome in the node's `HealthCell`, which lives beside
//! the snapshots (see `lb/mod.rs`), so probes and traffic share one verdict per node.
//!
//! After each snapshot swap, [`Checkers::reconcile`] starts a task for every checked
//! upstream that is new or was rebuilt and stops the tasks of upstreams that went away.
//! A rebuilt upstream keeps its nodes' health (carried over by address), so restarting
//! its task loses nothing.
use crate::lb::health::{Outcome, Thresholds};
use crate::snapshot::{log_transition, NodeRt, Snapshot, UpstreamRt};
use model::checks::{ActiveCheck, CheckType};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

#[derive(Default)]
pub struct Checkers {
    /// By upstream key: the runtime the task probes (by pointer) and its handle.
    tasks: Mutex<HashMap<String, (usize, AbortHandle)>>,
}

impl Drop for Checkers {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().unwrap_or_else(|p| p.into_inner());
        for (_, (_, handle)) in tasks.drain() {
            handle.abort();
        }
    }
}

impl Checkers {
    /// Makes the running probes match `snapshot.checked`. Must run inside the runtime.
    pub fn reconcile(&self, snapshot: &Snapshot) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|key, (ptr, handle)| match snapshot.checked.get(key) {
            Some(rt) if Arc::as_ptr(rt) as usize == *ptr => true,
            _ => {
                handle.abort();
                false
            }
        });
        for (key, rt) in snapshot.checked.iter() {
            if tasks.contains_key(key) {
                continue;
            }
            let handle = tokio::spawn(probe_loop(rt.clone())).abort_handle();
            tasks.insert(key.clone(), (Arc::as_ptr(rt) as usize, handle));
        }
    }

    pub fn running(&self) -> usize {
        self.tasks.lock().map(|t| t.len()).unwrap_or(0)
    }
}

async fn probe_loop(rt: Arc<UpstreamRt>) {
    let Some(checks) = &rt.checks else { return };
    let active = &checks.active;
    let thresholds = Thresholds::active(active);
    let tls = match active.kind {
        CheckType::Https => match rt.transport.probe_config(active.https_verify_certificate) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(upstream = %rt.key, error = %e, "https health checks cannot run");
                return;
            }
        },
        _ => None,
    };
    loop {
        let probes = rt.nodes.iter().map(|node| async {
            let outcome = probe(active, node, tls.as_ref()).await;
            let change = node.state.health.record(outcome, &thresholds);
            log_transition(&rt.key, &node.addr, change, "active");
        });
        futures_util::future::join_all(probes).await;
        // An unhealthy node is probed at its own (usually shorter) interval, so it
        // comes back soon after it recovers.
        let all_healthy = rt.nodes.iter().all(|n| n.state.health.is_healthy());
        tokio::time::sleep(active.interval(all_healthy)).await;
    }
}

/// One probe: a TCP connect, and for `http` (over TLS for `https`) one `GET http_path`
/// whose status counts.
async fn probe(
    check: &ActiveCheck,
    node: &NodeRt,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Outcome {
    let addr = match check.port {
        Some(port) => match node.addr.rsplit_once(':') {
            Some((host, _)) => format!("{host}:{port}"),
            None => format!("{}:{port}", node.addr),
        },
        None => node.addr.clone(),
    };
    match tokio::time::timeout(check.timeout(), exchange(check, node, &addr, tls)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Timeout,
    }
}

async fn exchange(
    check: &ActiveCheck,
    node: &NodeRt,
    addr: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Outcome {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return Outcome::TcpFailure;
    };
    if check.kind == CheckType::Tcp {
        return Outcome::Connected;
    }
    let host = check
        .host
        .clone()
        .or_else(|| {
            node.host_header
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| addr.to_string());
    let Some(config) = tls else {
        return http_get(check, &host, stream).await;
    };
    // The name the node's certificate is checked against: the upstream's, else the host.
    let Some(name) = node
        .tls_name
        .clone()
        .or_else(|| crate::transport::server_name(&host))
    else {
        return Outcome::TcpFailure;
    };
    match tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, stream)
        .await
    {
        Ok(stream) => http_get(check, &host, stream).await,
        Err(e) => {
            tracing::debug!(node = %addr, error = %e, "https health probe: TLS handshake failed");
            Outcome::TcpFailure
        }
    }
}

async fn http_get<S>(check: &ActiveCheck, host: &str, mut stream: S) -> Outcome
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: gateway-health-check\r\nConnection: close\r\n",
        check.http_path
    );
    for line in check.req_headers.iter().flatten() {
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return Outcome::TcpFailure;
    }
    // The status line is all a probe needs; 64 bytes hold it.
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < head.len() {
        match stream.read(&mut head[len..]).await {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(_) => return Outcome::TcpFailure,
        }
        if head[..len].contains(&b'\n') {
            break;
        }
    }
    parse_status(&head[..len]).map_or(Outcome::InvalidResponse, Outcome::Status)
}

/// `HTTP/1.x NNN ...` -> NNN.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(head).ok()?.lines().next()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code: u16 = parts.next()?.parse().ok()?;
    (100..=599).contains(&code).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::parse_status;

    #[test]
    fn status_lines() {
        for (head, want) in [
            (&b"HTTP/1.1 200 OK\r\n"[..], Some(200)),
            (b"HTTP/1.0 503 Service Unavailable\r\n", Some(503)),
            (b"HTTP/1.1 404", Some(404)),
            (b"HTTP/2 200\r\n", None),
            (b"SSH-2.0-OpenSSH\r\n", None),
            (b"HTTP/1.1 999 x\r\n", None),
            (b"", None),
        ] {
            assert_eq!(
                parse_status(head),
                want,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }
}
