//! `gateway` binary: parse flags, set up logging, run until SIGTERM.
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = gateway::Config::parse();
    gateway::init_tracing(&config.log_format);
    gateway::run(config, gateway::shutdown_signal()).await
}
