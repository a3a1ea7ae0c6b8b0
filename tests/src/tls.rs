//! Certificates for TLS tests, made with rcgen (ECDSA P-256, ring backend): a test CA that
//! signs server certificates for given names, and self-signed certificates.
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

/// A certificate authority for one test: trust [`TestCa::pem`] in the client, serve the
/// leaves it signs.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// A fresh CA whose common name is `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = common_name(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.as_ref().pem()
    }

    /// A server certificate signed by this CA for `names` (DNS names, `*.x` wildcards or IP
    /// addresses as subject alternative names; the first is also the common name):
    /// `(certificate PEM, private key PEM)`. The certificate PEM holds the leaf only.
    pub fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = server_params(names).signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A self-signed server certificate for `names`: `(certificate PEM, private key PEM)`.
pub fn self_signed(names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let cert = server_params(names).self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn server_params(names: &[&str]) -> CertificateParams {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    if let Some(first) = names.first() {
        params.distinguished_name = common_name(first);
    }
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_are_pem() {
        let ca = TestCa::new("test ca");
        assert!(ca.pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let (cert, key) = ca.leaf(&["a.test", "*.b.test", "127.0.0.1"]);
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key.contains("PRIVATE KEY"));
        let (cert2, _) = self_signed(&["c.test"]);
        assert_ne!(cert, cert2);
    }
}
