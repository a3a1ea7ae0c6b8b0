//! A client's request head, as the own HTTP/1.1 loop keeps it as bytes
//! (`gateway::client_head::ClientHead`): parsed with httparse's defaults, as the loop
//! parses it, then judged. Invariants for a head kept as bytes: the header map built from
//! it is the one built from httparse's own fields; every header's values read from it are
//! the map's; the lines passed on are whole CRLF lines written `name: value` (as the map's
//! path writes them but for the name's case), and are exactly the head's lines but
//! `Host`, the hop-by-hop ones and the forwarding headers, in order; its `Host` line is
//! the one `Host`, written so too.
#![no_main]
use bytes::Bytes;
use gateway::client_head::ClientHead;
use gateway::h1_client::{header_spans, Span, MAX_HEADERS};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fn passed_on(name: &str) -> bool {
    !gateway::headers::is_hop_by_hop_name(name.as_bytes())
        && !matches!(
            name.to_ascii_lowercase().as_str(),
            "host"
                | "x-forwarded-for"
                | "x-real-ip"
                | "x-forwarded-proto"
                | "x-forwarded-host"
                | "x-forwarded-port"
        )
}

fuzz_target!(|data: &[u8]| {
    if data.len() > usize::from(u16::MAX) {
        return;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(len)) = req.parse(data) else {
        return;
    };
    let mut spans: [Span; MAX_HEADERS] = [(0, 0, 0, 0); MAX_HEADERS];
    header_spans(data, req.headers, &mut spans);
    let count = req.headers.len();
    let head = Bytes::copy_from_slice(&data[..len]);
    let Some(raw) = ClientHead::of(&head, &spans[..count]) else {
        return;
    };
    let mut map = HeaderMap::new();
    let mut lines = Vec::new();
    for h in req.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            panic!("httparse took a field http refuses: {h:?}");
        };
        map.append(name, value);
        if passed_on(h.name) {
            lines.push(format!("{}: {}", h.name, String::from_utf8_lossy(h.value)));
        }
    }
    assert_eq!(raw.header_map(), map);
    for name in map.keys() {
        let want: Vec<&str> = map
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert_eq!(raw.values(name.as_str()).collect::<Vec<_>>(), want);
    }
    let hosts: Vec<_> = map.get_all(http::header::HOST).iter().collect();
    assert_eq!(hosts.len(), 1);
    assert_eq!(raw.host().as_ref(), Some(hosts[0]));
    let host_line = String::from_utf8_lossy(raw.host_line()).into_owned();
    assert!(host_line.ends_with("\r\n"), "{host_line:?}");
    let runs: Vec<u8> = raw.runs().flatten().copied().collect();
    let runs = String::from_utf8_lossy(&runs).into_owned();
    assert!(runs.is_empty() || runs.ends_with("\r\n"), "{runs:?}");
    // Each line exactly as the map's path writes it but for the name's case: `name:
    // value`, one space.
    let kept: Vec<&str> = runs.split_terminator("\r\n").collect();
    for l in &kept {
        assert!(!l.contains('\n') && !l.contains('\r'), "{l:?}");
    }
    assert_eq!(kept, lines);
    let host = hosts[0].as_bytes();
    assert_eq!(raw.host_line().len(), "host: \r\n".len() + host.len());
    assert!(raw.host_line().ends_with(&[host, b"\r\n"].concat()));
});
