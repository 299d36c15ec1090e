//! Console sessions as stored: server-side, so that a session made through
//! one instance works on every instance sharing the database, and a logout
//! ends it everywhere at once.

/// One operator's console session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// Hex SHA-256 of the session token: the token itself (the cookie) is
    /// never stored, so a copy of the database opens no session.
    pub id_hash: String,
    /// The principal the session acts as (`key:<name>`).
    pub principal: String,
    /// The key's scopes at login, as written.
    pub scopes: Vec<String>,
    /// The token every state-changing form carries.
    pub csrf_token: String,
    pub created_at_ms: i64,
    /// Refreshed at most once a minute (`console::session`).
    pub last_seen_at_ms: i64,
}
