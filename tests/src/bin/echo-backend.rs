//! A demo upstream for the local stack: `echo-backend [LISTEN] [NAME]` answers every request
//! with a JSON echo of what it received.
use e2e::backend::{Backend, BackendOptions};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:9100".into());
    let name = args.next().unwrap_or_else(|| "demo".into());
    let Ok(addr) = listen.parse() else {
        eprintln!("usage: echo-backend [LISTEN_ADDR] [NAME]  (got {listen:?})");
        std::process::exit(2);
    };
    let backend = Backend::start_on(addr, &name, BackendOptions::default()).await;
    println!("echo-backend {name:?} listening on {}", backend.addr);
    let _ = tokio::signal::ctrl_c().await;
}
