//! How a binary reaches etcd beyond its endpoints: TLS with a private CA, a client
//! certificate, and a user with a password. The same flags and environment variables in
//! every binary; files are read once at start, so a bad path fails there, not mid-run.
use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
use std::fmt;
use std::path::PathBuf;

/// The flags, flattened into each binary's own.
#[derive(clap::Args, Clone, Default)]
pub struct EtcdAccess {
    /// CA certificate (PEM) that etcd's server certificate must chain to. Turns TLS on:
    /// every endpoint must then be `https://`.
    #[arg(long, env = "ETCD_CACERT")]
    pub etcd_cacert: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's `--client-cert-auth`; needs `--etcd-key`.
    #[arg(long, env = "ETCD_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// Private key (PEM) of `--etcd-cert`.
    #[arg(long, env = "ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user, for an etcd with `auth enable`; the password comes from `ETCD_PASSWORD`.
    #[arg(long, env = "ETCD_USER")]
    pub etcd_user: Option<String>,
    /// The user's password; prefer the environment variable (a flag shows in `ps`).
    #[arg(
        long,
        env = "ETCD_PASSWORD",
        hide_env_values = true,
        requires = "etcd_user"
    )]
    pub etcd_password: Option<String>,
}

impl fmt::Debug for EtcdAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdAccess")
            .field("etcd_cacert", &self.etcd_cacert)
            .field("etcd_cert", &self.etcd_cert)
            .field("etcd_key", &self.etcd_key)
            .field("etcd_user", &self.etcd_user)
            .field(
                "etcd_password",
                &self.etcd_password.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The flags checked and the files read: what each connection to etcd applies.
#[derive(Clone, Default)]
pub struct Access {
    tls: Option<TlsOptions>,
    user: Option<(String, String)>,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("tls", &self.tls.is_some())
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl EtcdAccess {
    /// Checks the flags against the endpoints and reads the files. Errors name the flag.
    pub fn resolve(&self, endpoints: &[String]) -> Result<Access, String> {
        let read = |flag: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
        };
        let tls = match (&self.etcd_cacert, &self.etcd_cert, &self.etcd_key) {
            (None, None, None) => None,
            (None, _, _) => {
                return Err("--etcd-cert needs --etcd-cacert: TLS to etcd verifies its \
                            server certificate against that CA"
                    .into())
            }
            (Some(ca), cert, key) => {
                let mut tls = TlsOptions::new()
                    .ca_certificate(Certificate::from_pem(read("--etcd-cacert", ca)?));
                if let (Some(cert), Some(key)) = (cert, key) {
                    tls = tls.identity(Identity::from_pem(
                        read("--etcd-cert", cert)?,
                        read("--etcd-key", key)?,
                    ));
                }
                Some(tls)
            }
        };
        for e in endpoints {
            let https = e.starts_with("https://");
            if tls.is_some() && !https {
                return Err(format!(
                    "--etcd-endpoints {e}: with --etcd-cacert every endpoint must be https://"
                ));
            }
            if tls.is_none() && https {
                return Err(format!(
                    "--etcd-endpoints {e}: an https:// endpoint needs --etcd-cacert"
                ));
            }
        }
        let user = match (&self.etcd_user, &self.etcd_password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            (Some(_), None) => return Err("--etcd-user needs a password in ETCD_PASSWORD".into()),
            _ => None,
        };
        Ok(Access { tls, user })
    }
}

impl Access {
    /// `options` with this TLS configuration and user added.
    pub fn apply(&self, options: ConnectOptions) -> ConnectOptions {
        let options = match &self.tls {
            Some(tls) => options.with_tls(tls.clone()),
            None => options,
        };
        match &self.user {
            // Simple tokens expire (5 min idle, or an etcd restart): without the refresh a
            // long-lived client fails every call from then on.
            Some((user, password)) => options
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true),
            None => options,
        }
    }

    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(cacert: bool, cert: bool, user: Option<&str>, password: Option<&str>) -> EtcdAccess {
        let dir = std::env::temp_dir();
        let file = |name: &str| {
            let p = dir.join(format!("common-etcd-test-{name}.pem"));
            std::fs::write(&p, "not checked until a connection is made").unwrap();
            p
        };
        EtcdAccess {
            etcd_cacert: cacert.then(|| file("ca")),
            etcd_cert: cert.then(|| file("cert")),
            etcd_key: cert.then(|| file("key")),
            etcd_user: user.map(str::to_string),
            etcd_password: password.map(str::to_string),
        }
    }

    #[test]
    fn flags_are_checked_against_each_other_and_the_endpoints() {
        let http = ["http://127.0.0.1:2379".to_string()];
        let https = ["https://127.0.0.1:2379".to_string()];
        /// Flags, endpoints, and either (TLS on, user) or a piece of the error.
        type Case<'a> = (
            EtcdAccess,
            &'a [String],
            Result<(bool, Option<&'a str>), &'a str>,
        );
        let cases: &[Case] = &[
            (access(false, false, None, None), &http, Ok((false, None))),
            (access(true, false, None, None), &https, Ok((true, None))),
            (
                access(true, true, Some("gw"), Some("pw")),
                &https,
                Ok((true, Some("gw"))),
            ),
            (
                access(false, false, Some("gw"), Some("pw")),
                &http,
                Ok((false, Some("gw"))),
            ),
            (
                access(true, false, None, None),
                &http,
                Err("must be https://"),
            ),
            (
                access(false, false, None, None),
                &https,
                Err("needs --etcd-cacert"),
            ),
            (
                access(false, true, None, None),
                &http,
                Err("--etcd-cert needs --etcd-cacert"),
            ),
            (
                access(false, false, Some("gw"), None),
                &http,
                Err("ETCD_PASSWORD"),
            ),
        ];
        for (flags, endpoints, want) in cases {
            let got = flags.resolve(endpoints);
            match (got, want) {
                (Ok(a), Ok((tls, user))) => {
                    assert_eq!(a.tls(), *tls, "{flags:?}");
                    assert_eq!(a.user.as_ref().map(|(u, _)| u.as_str()), *user, "{flags:?}");
                }
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{flags:?}: {e}"),
                (got, want) => panic!("{flags:?}: got {got:?}, want {want:?}"),
            }
        }
        let missing = EtcdAccess {
            etcd_cacert: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let e = missing.resolve(&https).unwrap_err();
        assert!(e.contains("--etcd-cacert /nonexistent/ca.pem"), "{e}");
        assert!(
            !format!("{:?}", access(false, false, Some("u"), Some("secret"))).contains("secret")
        );
    }
}
