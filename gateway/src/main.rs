//! `gateway` binary: parse flags, set up logging, run until SIGTERM.
use clap::Parser;

// The control plane (etcd watch, status, health checks) runs here; requests are served by
// the worker threads `gateway::run` starts, each with its own event loop.
#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    let config = gateway::Config::parse();
    gateway::init_tracing(&config.log_format);
    gateway::run(config, gateway::shutdown_signal()).await
}
