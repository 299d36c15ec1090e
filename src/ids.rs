//! Identifiers. Records get prefixed, time-sortable ids (`job_01J…`): a ULID
//! after a type prefix, so ids sort by creation time and say what they
//! name. Triggers are named by the operator (`TriggerId`).
//!
//! Policy: an id from outside (a URL, a query) is parsed, and one that is
//! not exactly what this API writes is `None` (a 404, not a 400: ids are
//! opaque to clients). Ids read back from storage were checked when they
//! were made and are taken as stored.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use ulid::Ulid;

/// Whether `s` is `<prefix>_` and a ULID as this API writes them: 26
/// upper-case Crockford base32 digits, the first at most `7`. (The `ulid`
/// crate's parser is laxer; clients are told this exact form, and
/// `openapi.yaml` states it as a pattern.)
pub fn is_prefixed(prefix: &str, s: &str) -> bool {
    const CROCKFORD: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let Some(ulid) = s
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
    else {
        return false;
    };
    ulid.len() == 26 && ulid.as_bytes()[0] <= b'7' && ulid.bytes().all(|b| CROCKFORD.contains(&b))
}

fn rand_bits() -> u128 {
    let mut bytes = [0u8; 16];
    crate::crypto::random_bytes(&mut bytes);
    u128::from_le_bytes(bytes)
}

/// A new `<prefix>_<ULID>` for a record created at `now_ms`.
fn prefixed(prefix: &str, now_ms: i64) -> String {
    format!(
        "{prefix}_{}",
        Ulid::from_parts(now_ms.max(0) as u64, rand_bits())
    )
}

macro_rules! record_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The type prefix (before the `_`).
            pub const PREFIX: &'static str = $prefix;

            /// A new id for a record created at `now_ms` (Unix ms).
            pub fn new(now_ms: i64) -> Self {
                Self(prefixed(Self::PREFIX, now_ms))
            }

            /// The lowest id a record created at `at_ms` can have: ids made
            /// earlier sort below it, ids made then or later not (a time
            /// range as a range of ids).
            pub fn floor(at_ms: i64) -> Self {
                Self(format!("{}_{}", Self::PREFIX, Ulid::from_parts(at_ms.max(0) as u64, 0)))
            }

            /// Parses an id from outside; anything but this API's exact
            /// form is `None`.
            pub fn parse(s: &str) -> Option<Self> {
                is_prefixed(Self::PREFIX, s).then(|| Self(s.to_owned()))
            }

            /// An id as storage holds it (checked when it was made).
            pub fn from_stored(s: String) -> Self {
                Self(s)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        /// Reads an id stored in a record of ours (a job's progress, an
        /// action): taken as written, like `from_stored`.
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d).map(Self)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

record_id!(
    /// A job, created by an accepted trigger or a call event.
    JobId,
    "job"
);
record_id!(
    /// A call placed through a provider.
    CallId,
    "call"
);
record_id!(
    /// An outbound webhook delivery.
    DeliveryId,
    "dlv"
);
record_id!(
    /// A delivery's Standard Webhooks `webhook-id`: the same for every
    /// attempt and replay, so receivers deduplicate on it.
    MsgId,
    "msg"
);

/// A trigger id: 1–64 of `A-Z a-z 0-9 _ -`, starting with a letter or digit.
/// Constructing one is the only validation.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TriggerId(Arc<str>);

impl TriggerId {
    pub fn parse(s: &str) -> Result<Self, String> {
        let valid_len = (1..=64).contains(&s.len());
        let first_ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        let chars_ok = s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if valid_len && first_ok && chars_ok {
            Ok(Self(Arc::from(s)))
        } else {
            Err(format!(
                "`{s}` is not a valid trigger id (1-64 of A-Z a-z 0-9 _ -, starting with a letter or digit)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TriggerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TriggerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TriggerId({})", self.0)
    }
}

impl Serialize for TriggerId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_creation_time_and_round_trip() {
        let a = JobId::new(1_700_000_000_000);
        let b = JobId::new(1_700_000_000_001);
        assert!(a < b);
        assert!(a.as_str().starts_with("job_"));
        assert_eq!(JobId::parse(a.as_str()), Some(a.clone()));
        assert_eq!(JobId::parse("job_nope"), None);
        assert_eq!(JobId::parse(&a.as_str()[4..]), None);
        assert_eq!(CallId::parse(a.as_str()), None, "prefixes differ");
        // floor: a time window as a range of ids, for any random part.
        for _ in 0..100 {
            let t = 1_700_000_000_000;
            let (before, at, end) = (JobId::new(t - 1), JobId::new(t), JobId::new(t + 999));
            assert!(before < JobId::floor(t) && JobId::floor(t) <= at);
            assert!(end < JobId::floor(t + 1_000) && at < JobId::floor(t + 1));
        }
        let d = DeliveryId::new(1);
        assert!(d.as_str().starts_with("dlv_"));
        assert!(MsgId::new(1).as_str().starts_with("msg_"));
    }

    #[test]
    fn prefixed_ids_are_recognised_exactly() {
        let id = DeliveryId::new(1_700_000_000_000);
        assert!(is_prefixed("dlv", id.as_str()), "{id}");
        assert!(is_prefixed("dlv", "dlv_7ZZZZZZZZZZZZZZZZZZZZZZZZZ"));
        for bad in [
            "dlv_8ZZZZZZZZZZZZZZZZZZZZZZZZZ",
            "dlv_01M8D4HEYCA2B4C6D8E0F2G4H",
            "dlv_01M8D4HEYCA2B4C6D8E0F2G4H6X",
            "dlv_01m8d4heyca2b4c6d8e0f2g4h6",
            "dlv_01M8D4HEYCA2B4C6D8E0F2G4HU",
            "job_01M8D4HEYCA2B4C6D8E0F2G4H6",
            "00000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert!(!is_prefixed("dlv", bad), "{bad}");
        }
    }

    #[test]
    fn trigger_ids_are_validated_once() {
        assert!(TriggerId::parse("demo-call").is_ok());
        for bad in ["", "-x", "a b", &"x".repeat(65)] {
            assert!(TriggerId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
