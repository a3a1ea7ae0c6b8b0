//! What a node answers, as the inline HTTP/1.1 client reads it (`gateway::h1_client`):
//! the first byte picks the request method and whether a verbatim head is asked for, the
//! rest is the response. Invariants: no hop-by-hop header reaches the client (in the map
//! or in verbatim lines), a verbatim head is whole CRLF-ended lines and frames its body
//! as the map's path does, every frame makes progress, the body never has more bytes than
//! arrived, and a connection is reusable only when its body has ended.
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
    let verbatim = (first / 3) % 2 == 1;
    let mut buf = BytesMut::from(bytes);
    let parsed = parse_head(&mut buf, &method, verbatim);
    // Asked for verbatim lines or not, a head is refused, taken or incomplete alike, and
    // framed alike.
    let mut other = BytesMut::from(bytes);
    let other = parse_head(&mut other, &method, !verbatim);
    assert_eq!(parsed.is_ok(), other.is_ok());
    let Ok(Some((parts, mut decoder, lines))) = parsed else {
        return;
    };
    let Ok(Some((other_parts, other_decoder, _))) = other else {
        panic!("taken one way only");
    };
    assert_eq!(parts.status, other_parts.status);
    assert_eq!(
        decoder.size_hint().exact(),
        other_decoder.size_hint().exact()
    );
    assert_eq!(decoder.reusable(), other_decoder.reusable());
    assert_eq!(decoder.is_end_stream(), other_decoder.is_end_stream());
    const HOP: [&str; 6] = [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
    ];
    for name in HOP {
        assert!(!parts.headers.contains_key(name), "{name} forwarded");
    }
    if let Some(lines) = lines {
        assert!(verbatim && parts.headers.is_empty());
        for run in lines.runs() {
            assert!(run.ends_with(b"\r\n"), "a run that is not whole lines");
            for line in run.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let name = line.split(|&b| b == b':').next().unwrap_or_default();
                let name = String::from_utf8_lossy(name).to_ascii_lowercase();
                assert!(!HOP.contains(&name.as_str()), "{name} forwarded verbatim");
            }
        }
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
