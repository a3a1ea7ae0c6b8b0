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
        Duration::from_secs_f64(self.connect)
    }
    pub fn send(&self) -> Duration {
        Duration::from_secs_f64(self.send)
    }
    pub fn read(&self) -> Duration {
        Duration::from_secs_f64(self.read)
    }
}
