//! This machine's host name, read once (the metrics, the reports, the logs and the
//! dashboard all show it).

/// The kernel's host name, empty when it cannot be read.
pub fn hostname() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default()
    })
}
