//! Resource ids: APISIX accepts a string or an integer; we store and compare strings.
use serde::{Deserialize, Serialize};
use std::fmt;

/// A validated resource id: 1–64 characters of `[a-zA-Z0-9-_.]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Id(String);

impl Id {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 64 {
            return Err(format!(
                "id must be 1 to 64 characters long, got {}",
                s.len()
            ));
        }
        // Each is a path segment of its own key and of the Admin API's URLs, where `.`
        // and `..` mean "this folder" and "the parent".
        if s == "." || s == ".." {
            return Err(format!(
                "id {s:?} is not allowed: it reads as a relative path"
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(format!(
                "id {s:?} contains {c:?}; only letters, digits, '-', '_' and '.' are allowed"
            ));
        }
        Ok(Id(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Orders ids the way people expect (`2` before `10`) so tie-breaks read naturally;
    /// numeric ids sort before non-numeric ones, and the string order breaks the rest.
    pub fn sort_key(&self) -> (u8, u128, &str) {
        match self.0.parse::<u128>() {
            Ok(n) => (0, n, &self.0),
            Err(_) => (1, 0, &self.0),
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            N(u64),
        }
        let s = match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("id must be a string or a non-negative integer")
        })? {
            Raw::S(s) => s,
            Raw::N(n) => n.to_string(),
        };
        Id::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["1", "abc", "a-b_c.d", &"x".repeat(64), "...", ".a"] {
            assert!(Id::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "a b", "é", &"x".repeat(65), ".", ".."] {
            assert!(Id::parse(bad).is_err(), "{bad}");
        }
        let n: Id = serde_json::from_str("12").unwrap();
        assert_eq!(n.as_str(), "12");
        assert!(Id::parse("2").unwrap().sort_key() < Id::parse("10").unwrap().sort_key());
    }
}
