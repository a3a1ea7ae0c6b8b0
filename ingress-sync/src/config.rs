//! Flags (every one also as an environment variable), as fixed by design.md, plus the few
//! ingress-sync adds (documented in docs/ingress-sync.md).
use clap::Parser;
use std::time::Duration;

#[derive(Parser, Debug, Clone)]
#[command(
    version,
    about = "Sync Kubernetes Ingresses into the gateway's etcd keys"
)]
pub struct Args {
    #[arg(
        long,
        env = "ETCD_ENDPOINTS",
        default_value = "http://127.0.0.1:2379",
        value_delimiter = ','
    )]
    pub etcd_endpoints: Vec<String>,
    #[arg(long, env = "ETCD_PREFIX", default_value = "/gateway")]
    pub etcd_prefix: String,
    #[command(flatten)]
    pub etcd_access: common::etcd::EtcdAccess,
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Kubeconfig file; without it the in-cluster configuration (service account) is used.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<String>,
    /// Value of the legacy `kubernetes.io/ingress.class` annotation that selects us.
    #[arg(long, env = "INGRESS_CLASS", default_value = "gateway")]
    pub ingress_class: String,
    /// `spec.controller` of the IngressClasses that are ours.
    #[arg(
        long,
        env = "INGRESS_CONTROLLER_NAME",
        default_value = "gateway.dev/ingress-sync"
    )]
    pub controller_name: String,
    /// IP or host name written to `status.loadBalancer.ingress` of the Ingresses we serve.
    #[arg(long, env = "PUBLISH_ADDRESS")]
    pub publish_address: Option<String>,
    #[arg(long, env = "DATA_ENCRYPTION_KEYS", value_delimiter = ',')]
    pub data_encryption_keys: Vec<String>,
    /// Allow backends that are `type: ExternalName` Services (their DNS name becomes the node).
    #[arg(long, env = "INGRESS_ALLOW_EXTERNAL_NAME", default_value_t = false)]
    pub allow_external_name: bool,
    /// Also serve the Kubernetes Gateway API (GatewayClass, Gateway, HTTPRoute,
    /// ReferenceGrant): its CRDs must be installed in the cluster.
    #[arg(long, env = "GATEWAY_API", default_value_t = false)]
    pub gateway_api: bool,
    /// Seconds of the leader's etcd lease: a new leader takes over within this after a crash.
    #[arg(long, env = "INGRESS_LEADER_TTL", default_value_t = 5)]
    pub leader_ttl: i64,
    /// Milliseconds to wait after the first event of a burst before reconciling.
    #[arg(long, env = "INGRESS_DEBOUNCE_MS", default_value_t = 100)]
    pub debounce_ms: u64,
    /// Seconds to wait for every gateway replica to serve a change before its Ingresses'
    /// status is written (`{prefix}.cluster/gateways/`); past it the status waits for a
    /// later pass.
    #[arg(long, env = "INGRESS_STATUS_WAIT_SECONDS", default_value_t = 10)]
    pub status_wait_seconds: u64,
    /// Seconds between full reconciles when nothing changes (repairs edits made behind our back).
    #[arg(long, env = "INGRESS_RESYNC_SECONDS", default_value_t = 30)]
    pub resync_seconds: u64,
}

impl Args {
    pub fn debounce(&self) -> Duration {
        Duration::from_millis(self.debounce_ms)
    }

    pub fn status_wait(&self) -> Duration {
        Duration::from_secs(self.status_wait_seconds)
    }

    pub fn resync(&self) -> Duration {
        Duration::from_secs(self.resync_seconds.max(1))
    }

    /// The etcd election's name: beside the prefix, not under it, so gateways watching the
    /// prefix never see the election's keys.
    pub fn election_name(&self) -> String {
        format!(
            "{}.ingress-sync/leader",
            model::key::normalize_prefix(&self.etcd_prefix)
        )
    }
}
