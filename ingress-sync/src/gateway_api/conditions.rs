//! Status conditions as the Gateway API writes them (pure): `type`, `status`, `reason`,
//! `message`, `observedGeneration`, and a `lastTransitionTime` that moves only when the
//! condition's status does, so an unchanged object compares equal and is not patched.
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub type_: &'static str,
    pub ok: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Condition {
    pub fn yes(type_: &'static str, reason: &'static str) -> Condition {
        Condition {
            type_,
            ok: true,
            reason,
            message: String::new(),
        }
    }

    pub fn no(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Condition {
        Condition {
            type_,
            ok: false,
            reason,
            message: message.into(),
        }
    }
}

/// The `conditions` list for `want`, keeping each condition's `lastTransitionTime` from
/// `current` (a `conditions` array, or null) when its status is unchanged; `now` is an
/// RFC 3339 time for the others.
pub fn render(current: &Value, want: &[Condition], generation: i64, now: &str) -> Value {
    let list: Vec<Value> = want
        .iter()
        .map(|c| {
            let status = if c.ok { "True" } else { "False" };
            let since = current
                .as_array()
                .into_iter()
                .flatten()
                .find(|old| old["type"] == c.type_ && old["status"] == status)
                .and_then(|old| old["lastTransitionTime"].as_str())
                .unwrap_or(now);
            json!({
                "type": c.type_,
                "status": status,
                "reason": c.reason,
                "message": c.message,
                "observedGeneration": generation,
                "lastTransitionTime": since,
            })
        })
        .collect();
    Value::Array(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let want = [
            Condition::yes("Accepted", "Accepted"),
            Condition::no("ResolvedRefs", "BackendNotFound", "no Service web/x"),
        ];
        let first = render(&Value::Null, &want, 3, "2026-01-01T00:00:00Z");
        assert_eq!(first[0]["lastTransitionTime"], "2026-01-01T00:00:00Z");
        assert_eq!(first[1]["status"], "False");
        assert_eq!(first[1]["observedGeneration"], 3);
        // Same statuses later: the same value, so nothing to patch.
        let again = render(&first, &want, 3, "2026-02-02T00:00:00Z");
        assert_eq!(again, first);
        // ResolvedRefs turns True: only its time moves.
        let fixed = [
            Condition::yes("Accepted", "Accepted"),
            Condition::yes("ResolvedRefs", "ResolvedRefs"),
        ];
        let third = render(&again, &fixed, 4, "2026-03-03T00:00:00Z");
        assert_eq!(third[0]["lastTransitionTime"], "2026-01-01T00:00:00Z");
        assert_eq!(third[1]["lastTransitionTime"], "2026-03-03T00:00:00Z");
        assert_eq!(third[0]["observedGeneration"], 4);
    }
}
