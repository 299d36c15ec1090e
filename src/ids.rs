//! Prefixed, time-sortable identifiers (`job_01J…`): a ULID after a type
//! prefix, so ids sort by creation time and say what they name.

use std::fmt;

use serde::Serialize;
use ulid::Ulid;

/// The id of a job created by an accepted trigger.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(String);

impl JobId {
    const PREFIX: &'static str = "job_";

    /// A new id for a job created at `now_ms` (Unix milliseconds).
    pub fn new(now_ms: i64) -> Self {
        let ulid = Ulid::from_parts(now_ms.max(0) as u64, rand_bits());
        Self(format!("{}{}", Self::PREFIX, ulid))
    }

    /// Parses `job_<ULID>`; anything else is `None` (a 404, not a 400: ids
    /// are opaque to clients).
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix(Self::PREFIX)?;
        let ulid = Ulid::from_string(rest).ok()?;
        Some(Self(format!("{}{}", Self::PREFIX, ulid)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn rand_bits() -> u128 {
    let mut bytes = [0u8; 16];
    crate::auth::random_bytes(&mut bytes);
    u128::from_le_bytes(bytes)
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for JobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A new prefixed, time-sortable id (`call_01J…`) for a record created at
/// `now_ms`.
pub fn prefixed(prefix: &str, now_ms: i64) -> String {
    format!(
        "{prefix}_{}",
        Ulid::from_parts(now_ms.max(0) as u64, rand_bits())
    )
}

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
    }

    #[test]
    fn prefixed_ids_are_recognised_exactly() {
        let id = prefixed("dlv", 1_700_000_000_000);
        assert!(is_prefixed("dlv", &id), "{id}");
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
}
