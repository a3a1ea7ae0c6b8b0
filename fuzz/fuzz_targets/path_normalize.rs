//! The request path normaliser: any path gives its normal form or a 400, and the normal
//! form has no `//`, no `.` or `..` segment, no escaped unreserved character, and is its
//! own normal form (so what is matched is what is forwarded, every time). Route path
//! patterns parse without panicking too.
#![no_main]
use gateway::normalize::normalize_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = model::path::PathPattern::parse(s);
    // What can reach the normaliser: the path of a target `http` accepted.
    let Ok(uri) = s.parse::<http::Uri>() else {
        return;
    };
    let path = uri.path();
    let Ok(out) = normalize_path(path) else {
        return;
    };
    if !path.starts_with('/') {
        assert_eq!(out, path);
        return;
    }
    assert!(out.starts_with('/'), "{path:?} -> {out:?}");
    assert!(!out.contains("//"), "{path:?} -> {out:?}");
    for segment in out.split('/') {
        assert!(segment != "." && segment != "..", "{path:?} -> {out:?}");
    }
    let twice = normalize_path(&out).expect("a normal form normalises");
    assert_eq!(twice, out, "{path:?}");
    assert!(out.parse::<http::uri::PathAndQuery>().is_ok(), "{out:?}");
});
