//! Test harness shared by every end-to-end test: a real etcd process on free loopback
//! ports, the real `gateway` and `admin-api` binaries, and real HTTP backends.
//!
//! Binaries are taken from the same target directory as the test executable, so run
//! `cargo build --workspace --bins` before `cargo test` (the README's test command does).
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod backend;
pub mod dns;
pub mod grpc;
pub mod kube_api;
pub mod load;
pub mod raw;
pub mod stack;
pub mod tls;
pub mod ws;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use backend::Backend;
pub use load::{Load, LoadReport};

/// A free loopback port (bound and released), never the same one twice in this process.
/// The kernel can hand a just-released port out again, and two tests running at once that
/// got the same one would silently share it: the gateway binds with SO_REUSEPORT, and a
/// second etcd's readiness check would be answered by the first. A race with other
/// processes remains possible but rare.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// The path of one of the workspace's binaries, built beside this test executable.
/// Test executables live in `target/<profile>/deps/`, tools of this crate in
/// `target/<profile>/`; either way the binaries sit in `target/<profile>/`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap();
    if dir.ends_with("deps") {
        dir = dir.parent().unwrap();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests",
        path.display()
    );
    path
}

/// A child process that is killed when dropped; its output goes to a log file that is
/// printed when the test panics, so a failure shows what the process said.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log_dir: &Path) -> Proc {
        let log = log_dir.join(format!("{name}-{}.log", free_port()));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends `sig` (`TERM`, `STOP`, …) with the shell's built-in `kill`: a minimal Debian
    /// has no `/bin/kill` (procps), and a signal silently not sent fails tests far away.
    pub fn signal(&self, sig: &str) {
        // Never `kill 0`: that would signal this whole process group.
        if self.child.is_none() {
            return;
        }
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{sig} {}", self.pid()))
            .status();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "kill -{sig} {} failed: {status:?}",
            self.pid()
        );
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit by itself; `None` if it is still running at the deadline.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Some(status);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let tail: String = log
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            eprintln!("----- last lines of {} -----\n{tail}", self.name);
        }
    }
}

/// A real `redis-server` on a free loopback port, without persistence, its files in a
/// temporary directory; killed when dropped.
pub struct Redis {
    pub port: u16,
    pub dir: tempfile::TempDir,
    proc: Option<Proc>,
}

impl Redis {
    pub fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            proc: None,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        self.proc = Some(Proc::spawn("redis", &mut cmd, self.dir.path()));
        wait_for_tcp(
            SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(20),
        );
    }

    /// Stops the server (a Redis outage).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

/// A Redis Cluster of three masters (`redis-server --cluster-enabled yes`, joined by
/// `redis-cli --cluster create`), each on a free loopback port; killed when dropped.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    pub dir: tempfile::TempDir,
    _procs: Vec<Proc>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut procs = Vec::new();
        for port in &ports {
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).unwrap();
            let mut cmd = Command::new("redis-server");
            cmd.args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .arg("--dir")
                .arg(&node_dir);
            procs.push(Proc::spawn("redis-cluster", &mut cmd, dir.path()));
            wait_for_tcp(
                SocketAddr::from(([127, 0, 0, 1], *port)),
                Duration::from_secs(20),
            );
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli (Debian's redis-tools, installed with redis-server)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Every node must agree that all slots are served before the first request.
        let deadline = Instant::now() + Duration::from_secs(30);
        for port in &ports {
            loop {
                let info = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "cluster", "info"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cluster never became ok: {info}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        RedisCluster {
            ports,
            dir,
            _procs: procs,
        }
    }

    /// The seed nodes, as `redis_cluster_nodes` takes them.
    pub fn nodes(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// The keys each master holds, by a `KEYS pattern` on each.
    pub fn keys_per_node(&self, pattern: &str) -> Vec<usize> {
        self.ports
            .iter()
            .map(|p| {
                Command::new("redis-cli")
                    .args(["-p", &p.to_string(), "--raw", "keys", pattern])
                    .output()
                    .map(|o| {
                        String::from_utf8_lossy(&o.stdout)
                            .lines()
                            .filter(|l| !l.is_empty())
                            .count()
                    })
                    .unwrap_or(0)
            })
            .collect()
    }
}

/// A single-member etcd with its data in a temporary directory.
pub struct Etcd {
    pub url: String,
    client_port: u16,
    peer_port: u16,
    pub dir: tempfile::TempDir,
    proc: Option<Proc>,
    /// TLS with client certificates, when started so.
    pub certs: Option<EtcdCerts>,
    /// The `root` user's password, when auth is enabled.
    pub root_password: Option<String>,
}

/// The files a client of a TLS etcd needs (PEM): the CA, and a client certificate.
pub struct EtcdCerts {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Etcd {
    pub fn start() -> Etcd {
        Self::start_secured(false, None)
    }

    /// An etcd that serves only TLS and asks every client for a certificate of its CA
    /// (`tls`), and/or with `auth enable` and a `root` user with `root_password`.
    pub fn start_secured(tls: bool, root_password: Option<&str>) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let client_port = free_port();
        let peer_port = free_port();
        let certs = tls.then(|| {
            let ca = tls::TestCa::new("etcd test CA");
            let (server_cert, server_key) = ca.leaf(&["127.0.0.1", "localhost"]);
            let (client_cert, client_key) = ca.client("gateway");
            let write = |name: &str, pem: &str| {
                let p = dir.path().join(name);
                std::fs::write(&p, pem).unwrap();
                p
            };
            write("server.pem", &server_cert);
            write("server-key.pem", &server_key);
            EtcdCerts {
                ca: write("ca.pem", &ca.pem()),
                cert: write("client.pem", &client_cert),
                key: write("client-key.pem", &client_key),
            }
        });
        let scheme = if tls { "https" } else { "http" };
        let mut etcd = Etcd {
            url: format!("{scheme}://127.0.0.1:{client_port}"),
            client_port,
            peer_port,
            dir,
            proc: None,
            certs,
            root_password: None,
        };
        etcd.spawn();
        if let Some(pw) = root_password {
            etcd.ctl(&["user", "add", &format!("root:{pw}")]);
            etcd.ctl(&["auth", "enable"]);
            etcd.root_password = Some(pw.to_string());
        }
        etcd
    }

    /// The flags a binary needs to reach this etcd (TLS files, user and password; the
    /// password may come from `ETCD_PASSWORD` instead, see [`Etcd::client_env`]).
    pub fn client_flags(&self) -> Vec<String> {
        let mut flags = self.client_flags_without_password();
        if let Some(pw) = &self.root_password {
            flags.push(format!("--etcd-password={pw}"));
        }
        flags
    }

    /// [`Etcd::client_flags`] less the password.
    pub fn client_flags_without_password(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(c) = &self.certs {
            flags.push(format!("--etcd-cacert={}", c.ca.display()));
            flags.push(format!("--etcd-cert={}", c.cert.display()));
            flags.push(format!("--etcd-key={}", c.key.display()));
        }
        if self.root_password.is_some() {
            flags.push("--etcd-user=root".into());
        }
        flags
    }

    pub fn client_env(&self) -> Vec<(&'static str, String)> {
        self.root_password
            .iter()
            .map(|p| ("ETCD_PASSWORD", p.clone()))
            .collect()
    }

    /// etcdctl's flags for this member: endpoint, TLS files, user.
    fn ctl_args(&self) -> Vec<String> {
        let mut args = vec![format!("--endpoints={}", self.url)];
        if let Some(c) = &self.certs {
            args.push(format!("--cacert={}", c.ca.display()));
            args.push(format!("--cert={}", c.cert.display()));
            args.push(format!("--key={}", c.key.display()));
        }
        if let Some(pw) = &self.root_password {
            args.push(format!("--user=root:{pw}"));
        }
        args
    }

    fn spawn(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new("etcd");
        if self.certs.is_some() {
            let d = self.dir.path();
            cmd.arg(format!("--cert-file={}", d.join("server.pem").display()))
                .arg(format!("--key-file={}", d.join("server-key.pem").display()))
                .arg(format!("--trusted-ca-file={}", d.join("ca.pem").display()))
                .arg("--client-cert-auth");
        }
        cmd.arg("--name=test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={}", self.url))
            .arg(format!("--advertise-client-urls={}", self.url))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--log-level=warn");
        self.proc = Some(Proc::spawn("etcd", &mut cmd, self.dir.path()));
        wait_for_tcp(
            SocketAddr::from(([127, 0, 0, 1], self.client_port)),
            Duration::from_secs(20),
        );
        // A listening socket is not a serving member: wait until a write would succeed.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let out = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(self.ctl_args())
                .args(["endpoint", "health"])
                .output();
            if matches!(out, Ok(o) if o.status.success()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd did not become healthy");
    }

    /// Stops the process, keeping its data, so the test can simulate an outage.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Puts many keys in order, up to 128 per transaction (etcd's default `--max-txn-ops`;
    /// a transaction may not name a key twice, so a repeated key starts the next one).
    /// Runs on its own thread and runtime, so sync and async tests alike can call it.
    pub fn put_many(&self, kvs: &[(String, String)]) {
        let url = self.url.clone();
        let kvs = kvs.to_vec();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut c = etcd_client::Client::connect([url], None).await.unwrap();
                let mut chunks: Vec<Vec<&(String, String)>> = vec![Vec::new()];
                for kv in &kvs {
                    let last = chunks.last_mut().unwrap();
                    if last.len() == 128 || last.iter().any(|(k, _)| *k == kv.0) {
                        chunks.push(vec![kv]);
                    } else {
                        last.push(kv);
                    }
                }
                for chunk in chunks.into_iter().filter(|c| !c.is_empty()) {
                    let ops: Vec<etcd_client::TxnOp> = chunk
                        .iter()
                        .map(|(k, v)| etcd_client::TxnOp::put(k.as_str(), v.as_str(), None))
                        .collect();
                    c.txn(etcd_client::Txn::new().and_then(ops)).await.unwrap();
                }
            })
        })
        .join()
        .expect("put_many failed");
    }

    /// Runs `etcdctl` against this member and returns stdout.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(self.ctl_args())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

/// A 3-member etcd cluster on loopback, each member with its own data directory.
pub struct EtcdCluster {
    pub members: Vec<Option<Proc>>,
    pub urls: Vec<String>,
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    pub fn start() -> EtcdCluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        let mut urls = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let mut cmd = Command::new("etcd");
            cmd.arg(format!("--name=m{i}"))
                .arg(format!(
                    "--data-dir={}",
                    dir.path().join(format!("m{i}")).display()
                ))
                .arg(format!("--listen-client-urls={url}"))
                .arg(format!("--advertise-client-urls={url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster={initial}"))
                .arg("--initial-cluster-state=new")
                .arg("--log-level=warn");
            members.push(Some(Proc::spawn(
                &format!("etcd-m{i}"),
                &mut cmd,
                dir.path(),
            )));
            urls.push(url);
        }
        let cluster = EtcdCluster { members, urls, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let out = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", cluster.endpoints()))
                .args(["endpoint", "health", "--cluster"])
                .output();
            if matches!(out, Ok(o) if o.status.success()) {
                return cluster;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("etcd cluster did not become healthy");
    }

    /// All client URLs, comma-separated, as every binary takes them.
    pub fn endpoints(&self) -> String {
        self.urls.join(",")
    }

    /// Kills member `i` (SIGKILL), as a crashed machine would.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].take() {
            p.kill();
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Blocks until something accepts TCP connections at `addr`.
pub fn wait_for_tcp(addr: SocketAddr, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on {addr} after {within:?}");
}

/// Polls `check` until it returns true; panics with `what` at the deadline.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running `gateway` binary.
pub struct Gateway {
    pub proc: Proc,
    pub http: SocketAddr,
    pub status: SocketAddr,
    /// The flags it was started with, so a replacement can take the very same.
    pub args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts a gateway on free ports and waits until its status listener answers (not
    /// until it is ready).
    pub fn start(etcd_endpoints: &str, prefix: &str, extra: &[&str]) -> Gateway {
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let status = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut args = vec![
            format!("--etcd-endpoints={etcd_endpoints}"),
            format!("--etcd-prefix={prefix}"),
            format!("--listen={http}"),
            format!("--tls-listen={tls}"),
            format!("--status-listen={status}"),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        Self::spawn(args, http, status)
    }

    /// Starts a second process with exactly this one's flags, hence on the same ports, as
    /// an operator replacing it would. Its status port already answers (this process does),
    /// so wait for [`Gateway::wait_listed`] rather than for readiness.
    pub fn start_replacement(&self) -> Gateway {
        Self::spawn(self.args.clone(), self.http, self.status)
    }

    fn spawn(args: Vec<String>, http: SocketAddr, status: SocketAddr) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(bin("gateway"));
        cmd.args(&args).env("RUST_LOG", "info");
        let proc = Proc::spawn("gateway", &mut cmd, dir.path());
        wait_for_tcp(status, Duration::from_secs(20));
        Gateway {
            proc,
            http,
            status,
            args,
            _dir: dir,
        }
    }

    /// Waits until this very process has applied its first full list from etcd, as its
    /// log says: unlike `/readyz`, this cannot be answered by another process sharing the
    /// status port.
    pub async fn wait_listed(&self) {
        eventually(
            Duration::from_secs(20),
            "the gateway's log says it listed etcd",
            || async { self.proc.log().contains("listed configuration from etcd") },
        )
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// The HTTPS listener's address (`--tls-listen`).
    pub fn https(&self) -> SocketAddr {
        self.args
            .iter()
            .find_map(|a| a.strip_prefix("--tls-listen="))
            .and_then(|a| a.parse().ok())
            .expect("started with --tls-listen")
    }

    pub fn status_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.status)
    }

    /// `GET /status` as JSON.
    pub async fn status_json(&self) -> serde_json::Value {
        reqwest::get(self.status_url("/status"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `GET /metrics`, the Prometheus text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.status_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of an unlabelled metric, `None` when absent.
    pub async fn metric_value(&self, name: &str) -> Option<f64> {
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// The value of an unlabelled metric (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        self.metric_value(name).await.unwrap_or(0.0)
    }

    pub async fn is_ready(&self) -> bool {
        matches!(reqwest::get(self.status_url("/readyz")).await, Ok(r) if r.status() == 200)
    }

    pub async fn wait_ready(&self) {
        eventually(Duration::from_secs(20), "gateway ready", || self.is_ready()).await;
    }

    /// Waits until the gateway is ready and its snapshot holds exactly `n` valid routes.
    pub async fn wait_routes(&self, n: u64) {
        self.wait_ready().await;
        eventually(
            Duration::from_secs(5),
            &format!("{n} routes loaded"),
            || async { self.status_json().await["routes"].as_u64() == Some(n) },
        )
        .await;
    }
}

/// A running `admin-api` binary.
pub struct AdminApi {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub key: String,
    _dir: tempfile::TempDir,
}

impl AdminApi {
    pub fn start(etcd_endpoints: &str, prefix: &str, key: &str) -> AdminApi {
        Self::start_with_env(etcd_endpoints, prefix, key, &[])
    }

    /// Like [`AdminApi::start`], with extra environment variables
    /// (`DATA_ENCRYPTION_KEYS`, …).
    pub fn start_with_env(
        etcd_endpoints: &str,
        prefix: &str,
        key: &str,
        env: &[(&str, &str)],
    ) -> AdminApi {
        let dir = tempfile::tempdir().unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut cmd = Command::new(bin("admin-api"));
        cmd.arg(format!("--etcd-endpoints={etcd_endpoints}"))
            .arg(format!("--etcd-prefix={prefix}"))
            .arg(format!("--listen={addr}"))
            .arg(format!("--admin-key={key}"))
            .env("RUST_LOG", "info")
            .envs(env.iter().copied());
        let proc = Proc::spawn("admin-api", &mut cmd, dir.path());
        wait_for_tcp(addr, Duration::from_secs(20));
        AdminApi {
            proc,
            addr,
            key: key.to_string(),
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/apisix/admin{path}", self.addr)
    }

    /// Sends `method` to `/apisix/admin{path}` with the key and an optional JSON body;
    /// returns the status and the JSON body (`Null` if the body is not JSON).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let client = reqwest::Client::new();
        let mut req = client
            .request(method.parse().unwrap(), self.url(path))
            .header("X-API-KEY", &self.key);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Like `call`, but panics unless the status is 2xx.
    pub async fn ok(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let (status, json) = self.call(method, path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {json}"
        );
        json
    }
}

/// A running `ingress-sync` binary, pointed at a kubeconfig (the stand-in API server of
/// [`kube_api`]) and an etcd.
pub struct IngressSync {
    pub proc: Proc,
    _dir: tempfile::TempDir,
}

impl IngressSync {
    pub fn start(
        etcd_endpoints: &str,
        prefix: &str,
        kubeconfig: &Path,
        extra: &[&str],
    ) -> IngressSync {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(bin("ingress-sync"));
        cmd.arg(format!("--etcd-endpoints={etcd_endpoints}"))
            .arg(format!("--etcd-prefix={prefix}"))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(extra)
            .env("RUST_LOG", "info,kube=warn");
        let proc = Proc::spawn("ingress-sync", &mut cmd, dir.path());
        IngressSync { proc, _dir: dir }
    }

    pub fn is_leader(&self) -> bool {
        let log = self.proc.log();
        log.matches("elected leader").count() > log.matches("leadership lost").count()
    }

    /// How many times it wrote to etcd.
    pub fn writes(&self) -> usize {
        self.proc.log().matches("etcd updated").count()
    }
}
