//! How the store's own types go into and come out of SQLite columns: ids as
//! text, statuses as their names, JSON as text. A value that cannot be read
//! back (an unknown status, text that is not JSON) is `Corrupt`, never
//! silently replaced by a default.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::ids::{CallId, DeliveryId, JobId, MsgId, TriggerId};
use crate::store::{CallStatus, DeliveryStatus, JobStatus, StoreError};

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::Corrupt(e.to_string()),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

macro_rules! text_column {
    ($t:ty, |$s:ident| $read:expr, |$v:ident| $write:expr) => {
        impl FromSql for $t {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let $s = value.as_str()?;
                $read
            }
        }

        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                let $v = self;
                Ok(ToSqlOutput::from($write))
            }
        }
    };
}

fn unknown(what: &str, s: &str) -> FromSqlError {
    FromSqlError::Other(format!("`{s}` is not a {what}").into())
}

text_column!(JobId, |s| Ok(JobId::from_stored(s.to_owned())), |v| v
    .as_str());
text_column!(CallId, |s| Ok(CallId::from_stored(s.to_owned())), |v| v
    .as_str());
text_column!(
    DeliveryId,
    |s| Ok(DeliveryId::from_stored(s.to_owned())),
    |v| v.as_str()
);
text_column!(MsgId, |s| Ok(MsgId::from_stored(s.to_owned())), |v| v
    .as_str());
text_column!(
    TriggerId,
    |s| TriggerId::parse(s).map_err(|e| FromSqlError::Other(e.into())),
    |v| v.as_str()
);
text_column!(
    JobStatus,
    |s| JobStatus::parse(s).ok_or_else(|| unknown("job status", s)),
    |v| v.as_str()
);
text_column!(
    CallStatus,
    |s| s
        .parse::<CallStatus>()
        .map_err(|_| unknown("call status", s)),
    |v| v.as_str()
);
text_column!(
    DeliveryStatus,
    |s| DeliveryStatus::parse(s).ok_or_else(|| unknown("delivery status", s)),
    |v| v.as_str()
);

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    #[test]
    fn unreadable_columns_are_corrupt_not_defaults() {
        let conn = Connection::open_in_memory().unwrap();
        let get = |sql: &str| -> Result<CallStatus, StoreError> {
            Ok(conn.query_row(sql, [], |r| r.get::<_, CallStatus>(0))?)
        };
        assert_eq!(get("SELECT 'completed'").unwrap(), CallStatus::Completed);
        assert!(matches!(get("SELECT 'done'"), Err(StoreError::Corrupt(_))));
        let json: Result<serde_json::Value, StoreError> = conn
            .query_row("SELECT '{not json'", [], |r| r.get(0))
            .map_err(StoreError::from);
        assert!(matches!(json, Err(StoreError::Corrupt(_))));
    }
}
