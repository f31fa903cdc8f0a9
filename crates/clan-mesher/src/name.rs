//! File names: `^[a-z0-9_]{1,255}(/[a-z0-9_]{1,255})*$`, checked wherever a name enters (CLI,
//! HTTP, config, peers) so nothing past the edge can name a path outside the state directory.

use std::fmt;
use std::str::FromStr;

/// Longest name accepted as a whole, so a path built from it stays well under `PATH_MAX`.
pub const MAX_NAME_LEN: usize = 1024;
const MAX_SEGMENT_LEN: usize = 255;

/// A validated file name such as `dns/zone` or `machines_fleet`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileName(String);

/// Why a file name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid file name `{shown}`: {reason}")]
pub struct NameError {
    shown: String,
    reason: &'static str,
}

impl FileName {
    /// Checks `name` against the grammar; the error names what is wrong.
    pub fn parse(name: &str) -> Result<Self, NameError> {
        let fail = |reason| NameError {
            shown: name.escape_debug().take(80).collect(),
            reason,
        };
        if name.is_empty() {
            return Err(fail("it is empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(fail("it is longer than 1024 bytes"));
        }
        for segment in name.split('/') {
            if segment.is_empty() {
                return Err(fail(
                    "it has an empty segment (leading, trailing or double `/`)",
                ));
            }
            if segment.len() > MAX_SEGMENT_LEN {
                return Err(fail("a segment is longer than 255 bytes"));
            }
            if !segment
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(fail(
                    "only `a-z`, `0-9`, `_` and `/` between segments are allowed",
                ));
            }
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for FileName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileName({})", self.0)
    }
}

impl<'de> serde::Deserialize<'de> for FileName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl clan_error::Hint for NameError {}
clan_error::register!(NameError);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_nested_names() {
        for good in ["a", "dns_zone", "dns/zone", "a/b/c", "0", &"x".repeat(255)] {
            assert!(FileName::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn refuses_every_form_of_bad_name() {
        let long_segment = "x".repeat(256);
        let long_name = ["y"; 600].join("/");
        for bad in [
            "",
            "..",
            "a/..",
            "../a",
            "/a",
            "a/",
            "a//b",
            "A",
            "dns/Zone",
            "a\0b",
            "a.b",
            "a-b",
            "a b",
            "ä",
            &long_segment,
            &long_name,
        ] {
            assert!(FileName::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn error_names_the_subject() {
        let error = FileName::parse("a//b").unwrap_err().to_string();
        assert!(
            error.contains("`a//b`") && error.contains("empty segment"),
            "{error}"
        );
    }
}
