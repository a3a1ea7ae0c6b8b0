//! `vars` expressions: parsing any JSON, then evaluating what parsed against a request's
//! variables. Neither may panic, recurse without bound or hang (the regex crate is linear).
#![no_main]
use libfuzzer_sys::fuzz_target;
use model::vars::{Expr, VarSource};
use std::borrow::Cow;

struct Vars<'a>(&'a str);

impl VarSource for Vars<'_> {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        match name {
            "uri" => Some(Cow::Borrowed("/a/b")),
            "remote_addr" => Some(Cow::Borrowed("10.1.2.3")),
            "http_x" | "arg_q" | "cookie_c" => Some(Cow::Borrowed(self.0)),
            _ => None,
        }
    }

    fn get_all(&self, name: &str) -> Vec<Cow<'_, str>> {
        self.get(name).into_iter().chain(self.get(name)).collect()
    }
}

fuzz_target!(|data: &[u8]| {
    // The first line is the value variables take; the rest is the expression.
    let (value, expr) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b""[..], data),
    };
    let Ok(value) = std::str::from_utf8(value) else {
        return;
    };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(expr) else {
        return;
    };
    if let Ok(e) = Expr::parse(&json) {
        let _ = e.eval(&Vars(value));
    }
});
