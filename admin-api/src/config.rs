//! Command-line flags and their environment variables, as fixed by design.md, and the
//! checks that make the admin-api refuse to start with an unsafe or unusable configuration.
use clap::{Parser, ValueEnum};
use model::Keyring;
use std::fmt;
use std::net::SocketAddr;

#[derive(Parser, Clone)]
#[command(
    version,
    about = "APISIX-compatible Admin API: validates resources and stores them in etcd"
)]
pub struct Config {
    /// etcd endpoints, comma-separated; all of them are used.
    #[arg(
        long,
        env = "ETCD_ENDPOINTS",
        default_value = "http://127.0.0.1:2379",
        value_delimiter = ','
    )]
    pub etcd_endpoints: Vec<String>,
    /// Key prefix the resources live under (`/apisix` shares APISIX's data).
    #[arg(long, env = "ETCD_PREFIX", default_value = "/gateway")]
    pub etcd_prefix: String,
    #[command(flatten)]
    pub etcd_access: common::etcd::EtcdAccess,
    /// Log line format; levels come from RUST_LOG.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Address the Admin API listens on.
    #[arg(long, env = "ADMIN_LISTEN", default_value = "127.0.0.1:9180")]
    pub listen: SocketAddr,
    /// The key every request must carry in `X-API-KEY` (or `?api_key=`); at least
    /// 16 characters, and not APISIX's published default key.
    #[arg(long, env = "ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// A second key that may only read (GET), as APISIX's `viewer` role; same rules.
    #[arg(long, env = "ADMIN_VIEWER_KEY", hide_env_values = true)]
    pub viewer_key: Option<String>,
    /// Serve without any authentication (local experiments only).
    #[arg(long, env = "ADMIN_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// AES keys (16 or 32 characters), comma-separated: the first encrypts, any decrypts.
    #[arg(
        long,
        env = "DATA_ENCRYPTION_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub data_encryption_keys: Vec<String>,
    /// Serve HTTPS with this certificate chain (PEM); with `--tls-key`. Re-read when the
    /// file changes.
    #[arg(long, env = "ADMIN_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of `--tls-cert`.
    #[arg(long, env = "ADMIN_TLS_KEY")]
    pub tls_key: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// How requests are authenticated, once the flags have been checked.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    Keys {
        admin: String,
        /// Allowed GET only.
        viewer: Option<String>,
    },
    Disabled,
}

impl Auth {
    /// An admin key and no viewer key.
    pub fn key(admin: &str) -> Auth {
        Auth::Keys {
            admin: admin.to_string(),
            viewer: None,
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Keys { viewer, .. } => write!(
                f,
                "Keys(<redacted>{})",
                if viewer.is_some() { ", viewer" } else { "" }
            ),
            Auth::Disabled => f.write_str("Disabled"),
        }
    }
}

/// The admin key APISIX ships in its default configuration: published, so anyone can try it.
pub const APISIX_DEFAULT_KEY: &str = "edd1c9f034335f136f87ad84b625c8f1";

/// The viewer key APISIX ships in its default configuration.
pub const APISIX_DEFAULT_VIEWER_KEY: &str = "4054f7cf07e344346cd3f287985e76a2";

/// Shortest key accepted: 16 characters, as `openssl rand -hex 8` gives.
pub const MIN_KEY_LEN: usize = 16;

/// Refuses keys that are guessable: short, or published with APISIX.
fn check_key(flag: &str, key: &str) -> Result<(), String> {
    if key == APISIX_DEFAULT_KEY || key == APISIX_DEFAULT_VIEWER_KEY {
        return Err(format!(
            "{flag}: this is APISIX's published default key, which anyone can try; \
             generate one with `openssl rand -hex 16`"
        ));
    }
    if key.chars().count() < MIN_KEY_LEN {
        return Err(format!(
            "{flag}: the key must be at least {MIN_KEY_LEN} characters long, got {}; \
             generate one with `openssl rand -hex 16`",
            key.chars().count()
        ));
    }
    Ok(())
}

/// Keys and secrets never reach the logs, so `Debug` is written by hand.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("etcd_endpoints", &self.etcd_endpoints)
            .field("etcd_prefix", &self.etcd_prefix)
            .field("etcd_access", &self.etcd_access)
            .field("log_format", &self.log_format)
            .field("listen", &self.listen)
            .field("admin_key", &self.admin_key.as_ref().map(|_| "<redacted>"))
            .field(
                "viewer_key",
                &self.viewer_key.as_ref().map(|_| "<redacted>"),
            )
            .field("insecure_no_auth", &self.insecure_no_auth)
            .field("data_encryption_keys", &self.data_encryption_keys.len())
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .finish()
    }
}

impl Config {
    /// A configuration for tests and embedding: one endpoint, the given key.
    pub fn new(etcd_endpoints: Vec<String>, etcd_prefix: &str, admin_key: Option<String>) -> Self {
        Config {
            etcd_endpoints,
            etcd_prefix: etcd_prefix.to_string(),
            etcd_access: Default::default(),
            log_format: LogFormat::Text,
            listen: SocketAddr::from(([127, 0, 0, 1], 9180)),
            insecure_no_auth: admin_key.is_none(),
            admin_key,
            viewer_key: None,
            data_encryption_keys: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }

    /// Checks the flags that clap cannot check alone; the error says what to change.
    pub fn auth(&self) -> Result<Auth, String> {
        let given = |k: &Option<String>| {
            k.as_deref()
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_string)
        };
        let (key, viewer) = (given(&self.admin_key), given(&self.viewer_key));
        match (key, self.insecure_no_auth) {
            (Some(_), true) => Err(
                "--admin-key (ADMIN_KEY) and --insecure-no-auth contradict each other; give one"
                    .into(),
            ),
            (Some(admin), false) => {
                check_key("--admin-key (ADMIN_KEY)", &admin)?;
                if let Some(v) = &viewer {
                    check_key("--viewer-key (ADMIN_VIEWER_KEY)", v)?;
                    if *v == admin {
                        return Err(
                            "--viewer-key must differ from --admin-key: a viewer could write"
                                .into(),
                        );
                    }
                }
                Ok(Auth::Keys { admin, viewer })
            }
            (None, true) if viewer.is_some() => {
                Err("--viewer-key needs --admin-key: without one nobody could write".into())
            }
            (None, true) => Ok(Auth::Disabled),
            (None, false) => Err("no admin key: set --admin-key (ADMIN_KEY), or pass \
                 --insecure-no-auth to serve the Admin API without authentication"
                .into()),
        }
    }

    /// The endpoints with blanks removed; at least one is required.
    pub fn endpoints(&self) -> Result<Vec<String>, String> {
        let eps: Vec<String> = self
            .etcd_endpoints
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if eps.is_empty() {
            return Err("--etcd-endpoints (ETCD_ENDPOINTS) is empty".into());
        }
        Ok(eps)
    }

    /// The keyring of `--data-encryption-keys`: AES-128 or AES-256 keys of 16 or 32
    /// characters; the error names the key at fault by position.
    pub fn keyring(&self) -> Result<Keyring, String> {
        Keyring::new(&self.data_encryption_keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        Config::try_parse_from(std::iter::once("admin-api").chain(args.iter().copied()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn flags() {
        let key = "k".repeat(MIN_KEY_LEN);
        let c = parse(&[
            "--etcd-endpoints=http://a:1,http://b:2",
            &format!("--admin-key={key}"),
        ])
        .unwrap();
        assert_eq!(c.endpoints().unwrap(), ["http://a:1", "http://b:2"]);
        assert_eq!(c.auth().unwrap(), Auth::key(&key));
        assert_eq!(c.etcd_prefix, "/gateway");
        assert_eq!(c.listen.to_string(), "127.0.0.1:9180");
        assert!(!format!("{c:?}").contains(&key));

        let c = parse(&["--insecure-no-auth"]).unwrap();
        assert_eq!(c.auth().unwrap(), Auth::Disabled);
        assert!(parse(&[])
            .unwrap()
            .auth()
            .unwrap_err()
            .contains("no admin key"));
        let both = parse(&["--insecure-no-auth", &format!("--admin-key={key}")]).unwrap();
        assert!(both.auth().unwrap_err().contains("contradict"));
        assert!(parse(&["--log-format=xml"]).is_err());
        assert_eq!(
            parse(&["--log-format=json"]).unwrap().log_format,
            LogFormat::Json
        );
    }

    #[test]
    fn guessable_keys_are_refused() {
        let long = "v".repeat(MIN_KEY_LEN);
        let short = "s".repeat(MIN_KEY_LEN - 1);
        let admin = format!("--admin-key={}", "a".repeat(MIN_KEY_LEN));
        let cases: &[(&[&str], Option<&str>)] = &[
            (&["--admin-key=k"], Some("at least 16")),
            (&[&format!("--admin-key={short}")], Some("got 15")),
            (
                &[&format!("--admin-key={APISIX_DEFAULT_KEY}")],
                Some("published"),
            ),
            (&[&format!("--admin-key=  {long}  ")], None),
            (&[&admin, &format!("--viewer-key={long}")], None),
            (
                &[&admin, &format!("--viewer-key={short}")],
                Some("--viewer-key"),
            ),
            (
                &[&admin, &format!("--viewer-key={APISIX_DEFAULT_VIEWER_KEY}")],
                Some("published"),
            ),
            (&[&admin, &admin.replace("admin", "viewer")], Some("differ")),
            (
                &["--insecure-no-auth", &format!("--viewer-key={long}")],
                Some("needs"),
            ),
        ];
        for (args, want) in cases {
            let got = parse(args).unwrap().auth();
            match want {
                None => assert!(got.is_ok(), "{args:?}: {got:?}"),
                Some(needle) => {
                    let err = got.expect_err(&format!("{args:?} must be refused"));
                    assert!(err.contains(needle), "{args:?}: {err}");
                }
            }
        }
    }

    #[test]
    fn encryption_keys() {
        let check = |keys: &[&str], ok: bool| {
            let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            let mut c = Config::new(Vec::new(), "/gateway", None);
            c.data_encryption_keys = keys.clone();
            assert_eq!(c.keyring().is_ok(), ok, "{keys:?}");
        };
        check(&[], true);
        check(&["a".repeat(16).as_str()], true);
        check(&["a".repeat(32).as_str(), "b".repeat(16).as_str()], true);
        check(&["short"], false);
        check(&["a".repeat(16).as_str(), "a".repeat(24).as_str()], false);
    }
}
