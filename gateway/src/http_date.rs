//! The `Date` header's value, formatted once a second per thread (as hyper caches it).
use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Appends the current date in the IMF-fixdate form (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn extend(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            *c = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(c.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_date_hyper_would_write() {
        let mut out = Vec::new();
        super::extend(&mut out);
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s.len(), 29, "{s}");
        assert!(s.ends_with(" GMT"), "{s}");
        assert!(httpdate::parse_http_date(&s).is_ok(), "{s}");
    }
}
