//! admin-api's PATCH: a JSON merge patch and a sub-path replacement applied to any stored
//! document. Neither may panic, and the result must stay shallow enough to serialise and
//! drop (a deep sub-path once overflowed the stack).
#![no_main]
use admin_api::patch::{merge, set_path};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    doc: &'a [u8],
    patch: &'a [u8],
    path: &'a str,
    repeat: u16,
}

fuzz_target!(|input: Input<'_>| {
    let (Ok(mut doc), Ok(patch)) = (
        serde_json::from_slice::<serde_json::Value>(input.doc),
        serde_json::from_slice::<serde_json::Value>(input.patch),
    ) else {
        return;
    };
    let mut merged = doc.clone();
    merge(&mut merged, &patch);
    let _ = serde_json::to_string(&merged);
    // A path as deep as the fuzzer likes, up to 10,000 segments.
    let path = vec![input.path; usize::from(input.repeat % 10_000) + 1].join("/");
    if set_path(&mut doc, &path, patch).is_ok() {
        let _ = serde_json::to_string(&doc);
    }
});
