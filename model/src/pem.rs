//! PEM parsing shared by the certificate fields (`tls.ca`, `ssls`).
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Every certificate in a PEM text, in order; an error for a block that does not parse.
pub fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("is not a PEM certificate: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        assert_eq!(certificates("").unwrap().len(), 0);
        assert_eq!(certificates("not pem at all").unwrap().len(), 0);
        assert!(
            certificates("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n").is_err()
        );
    }
}
