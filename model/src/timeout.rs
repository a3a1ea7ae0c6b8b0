//! Upstream timeouts, in seconds as APISIX writes them.
use crate::ValidationError;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeout {
    pub connect: f64,
    pub send: f64,
    pub read: f64,
}

impl Default for Timeout {
    /// APISIX's defaults.
    fn default() -> Self {
        Timeout {
            connect: 60.0,
            send: 60.0,
            read: 60.0,
        }
    }
}

impl Timeout {
    pub fn validate(&self) -> Result<(), ValidationError> {
        for (name, v) in [
            ("connect", self.connect),
            ("send", self.send),
            ("read", self.read),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
                return Err(ValidationError::new(
                    format!("timeout.{name}"),
                    format!("must be a number of seconds above 0 and at most 86400, got {v}"),
                ));
            }
        }
        Ok(())
    }

    pub fn connect(&self) -> Duration {
        seconds(self.connect)
    }
    pub fn send(&self) -> Duration {
        seconds(self.send)
    }
    pub fn read(&self) -> Duration {
        seconds(self.read)
    }
}

/// A validated number of seconds as a `Duration`, to the nanosecond. Unlike
/// `Duration::from_secs_f64`, a value `validate` refuses does not panic: it saturates
/// (NaN is zero).
fn seconds(v: f64) -> Duration {
    // `+ 0.5` rounds without `f64::round`, a libm call as dear as the rest.
    Duration::from_nanos((v * 1e9 + 0.5) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_exact_to_the_nanosecond_and_never_panic() {
        for v in [60.0, 0.1, 0.3, 1.5, 0.000_000_001, 86_400.0, 12.345_678_9] {
            assert_eq!(seconds(v), Duration::from_secs_f64(v), "{v}");
        }
        // What `validate` refuses does not panic here.
        assert_eq!(seconds(-1.0), Duration::ZERO);
        assert_eq!(seconds(f64::NAN), Duration::ZERO);
        assert_eq!(seconds(f64::INFINITY), Duration::from_nanos(u64::MAX));
    }
}
