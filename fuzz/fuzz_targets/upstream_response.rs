//! What a node answers, as the inline HTTP/1.1 client reads it (`gateway::h1_client`):
//! the first byte picks the request method, the rest is the response. Invariants: no
//! hop-by-hop header reaches the client, every frame makes progress, the body never has
//! more bytes than arrived, and a connection is reusable only when its body has ended.
#![no_main]
use bytes::BytesMut;
use gateway::h1_client::{parse_head, Decoder};
use http::Method;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((first, bytes)) = data.split_first() else {
        return;
    };
    let method = match first % 3 {
        0 => Method::GET,
        1 => Method::HEAD,
        _ => Method::DELETE,
    };
    let mut buf = BytesMut::from(bytes);
    let Ok(Some((parts, mut decoder))) = parse_head(&mut buf, &method) else {
        return;
    };
    for name in ["connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer"] {
        assert!(!parts.headers.contains_key(name), "{name} forwarded");
    }
    let available = buf.len();
    let mut body = 0;
    loop {
        let before = buf.len();
        match decoder.step(&mut buf) {
            Err(_) | Ok(None) => break,
            Ok(Some(None)) => {
                assert!(decoder.is_end_stream());
                break;
            }
            Ok(Some(Some(frame))) => {
                assert!(buf.len() < before, "a frame that consumed nothing");
                if let Some(data) = frame.data_ref() {
                    body += data.len();
                }
            }
        }
        assert!(body <= available);
    }
    if decoder.reusable() {
        assert!(decoder.is_end_stream());
    }
    let _: &Decoder = &decoder;
});
