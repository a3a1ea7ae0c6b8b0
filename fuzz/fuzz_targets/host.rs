//! Host names from clients: `Host` / `:authority` checking and normalising, host patterns
//! of routes, SNI of TLS handshakes. Invariants: an accepted `Host` normalises exactly as
//! the router's normaliser does, and its normal form is accepted and stable.
#![no_main]
use libfuzzer_sys::fuzz_target;
use model::host::{normalize_request_host, parse_request_host, HostPattern};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = parse_request_host(s) {
        assert_eq!(name, normalize_request_host(s), "{s:?}");
        let again = parse_request_host(&name).expect("the normal form is a valid host");
        assert_eq!(again, name, "{s:?}");
    }
    if let Ok(p) = HostPattern::parse(s) {
        let _ = p.matches(&normalize_request_host(s));
    }
    let _ = model::ssl::check_sni(s);
    let _ = gateway::tls::CertTable::default().lookup(s);
});
