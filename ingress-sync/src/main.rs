//! ingress-sync: Kubernetes Ingress -> etcd keys. Flags are final; the sync loop is not built yet.
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Sync Kubernetes Ingresses into the gateway's etcd keys"
)]
struct Args {
    #[arg(
        long,
        env = "ETCD_ENDPOINTS",
        default_value = "http://127.0.0.1:2379",
        value_delimiter = ','
    )]
    etcd_endpoints: Vec<String>,
    #[arg(long, env = "ETCD_PREFIX", default_value = "/gateway")]
    etcd_prefix: String,
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    log_format: String,
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<String>,
    #[arg(long, env = "INGRESS_CLASS", default_value = "gateway")]
    ingress_class: String,
    #[arg(
        long,
        env = "INGRESS_CONTROLLER_NAME",
        default_value = "gateway.dev/ingress-sync"
    )]
    controller_name: String,
    #[arg(long, env = "PUBLISH_ADDRESS")]
    publish_address: Option<String>,
    #[arg(long, env = "DATA_ENCRYPTION_KEYS", value_delimiter = ',')]
    data_encryption_keys: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::bail!(
        "ingress-sync is not implemented yet (would sync class {:?} into {} at {:?})",
        args.ingress_class,
        args.etcd_prefix,
        args.etcd_endpoints
    )
}
