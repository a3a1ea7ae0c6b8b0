//! Ids that POST assigns: 20 digits, milliseconds since the epoch then 7 random digits, so
//! ids sort by creation time and replicas practically never pick the same one (a collision
//! is still caught by the create-only transaction and retried with a fresh id).
use rand::Rng;
use std::time::{SystemTime, UNIX_EPOCH};

const RANDOM_DIGITS: u32 = 7;

/// A fresh id from the clock and the thread's random generator.
pub fn generate() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let random = rand::rng().random_range(0..10u64.pow(RANDOM_DIGITS));
    format_id(millis, random)
}

/// `millis` (13 digits, good until the year 2286) followed by `random` (7 digits).
pub fn format_id(millis: u64, random: u64) -> String {
    format!(
        "{:013}{:07}",
        millis % 10u64.pow(13),
        random % 10u64.pow(RANDOM_DIGITS)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(millis: u64, random: u64, expected: &str) {
        assert_eq!(format_id(millis, random), expected);
    }

    #[test]
    fn format() {
        check(0, 0, "00000000000000000000");
        check(1_767_225_600_000, 42, "17672256000000000042");
        check(1_767_225_600_001, 9_999_999, "17672256000019999999");
        check(10_000_000_000_000, 10_000_000, "00000000000000000000");
    }

    #[test]
    fn generated() {
        let a = generate();
        assert_eq!(a.len(), 20, "{a}");
        assert!(a.bytes().all(|b| b.is_ascii_digit()), "{a}");
        assert!(model::Id::parse(&a).is_ok());
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = generate();
        assert!(a[..13] < b[..13], "{a} then {b}: time first");
    }
}
