//! Durations as flags and query parameters write them: `250ms`, `15s`, `2m`, or a bare
//! number of seconds.
use std::time::Duration;

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 15s or 500ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}, use ms, s or m")),
    };
    if secs < 0.0 {
        return Err(format!("{s:?} is not a valid duration"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a valid duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_table() {
        let table: &[(&str, Option<Duration>)] = &[
            ("15s", Some(Duration::from_secs(15))),
            ("15", Some(Duration::from_secs(15))),
            (" 250ms ", Some(Duration::from_millis(250))),
            ("2m", Some(Duration::from_secs(120))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("0", Some(Duration::ZERO)),
            ("", None),
            ("s", None),
            ("5h", None),
            ("-1s", None),
            ("1.2.3s", None),
            // Too large for a Duration: refused, not a panic.
            ("99999999999999999999999", None),
            (&"9".repeat(400), None),
        ];
        for (input, want) in table {
            assert_eq!(parse_duration(input).ok(), *want, "{input:?}");
        }
    }
}
