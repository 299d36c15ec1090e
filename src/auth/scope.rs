//! Scopes: what a principal may do.
//!
//! `triggers:run` runs any trigger, `trigger:<id>` runs one, `jobs:read` reads
//! jobs that another principal created (a principal always reads its own),
//! `jobs:write` cancels and retries jobs (anyone's).
//! `deliveries:read` / `deliveries:write` read and replay the delivery log
//! (`deliveries:read` also reads the endpoints' health), `actions:invoke`
//! calls mid-call actions, `metrics:read` scrapes `/metrics` and reads the
//! charts' series (`/v1/stats`), `dnc:read` / `dnc:write` read and change
//! the do-not-call list, `keys:read` / `keys:write` list and make or
//! disable the API keys stored in the database (a key made grants none of
//! its creator lacks), `console` logs in to the operator console (whose
//! pages then need the scopes above, as the API does).

use std::fmt;

/// One permission.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `triggers:run`: every trigger.
    TriggersRun,
    /// `trigger:<id>`: one trigger.
    Trigger(String),
    /// `jobs:read`: any job, not only the principal's own.
    JobsRead,
    /// `jobs:write`: cancel and retry any job.
    JobsWrite,
    /// `deliveries:read`: the outbound delivery log.
    DeliveriesRead,
    /// `deliveries:write`: replay deliveries.
    DeliveriesWrite,
    /// `actions:invoke`: mid-call actions (the voice runtime's key).
    ActionsInvoke,
    /// `metrics:read`: `GET /metrics`.
    MetricsRead,
    /// `dnc:read`: read the do-not-call list.
    DncRead,
    /// `dnc:write`: add to, remove from and import into the do-not-call list.
    DncWrite,
    /// `keys:read`: list API keys (never their hashes).
    KeysRead,
    /// `keys:write`: make and disable stored API keys.
    KeysWrite,
    /// `console`: log in to the operator console at `/console`.
    Console,
}

/// Every scope that is not per trigger, as written.
pub const NAMED_SCOPES: [(&str, Scope); 12] = [
    ("triggers:run", Scope::TriggersRun),
    ("jobs:read", Scope::JobsRead),
    ("jobs:write", Scope::JobsWrite),
    ("console", Scope::Console),
    ("deliveries:read", Scope::DeliveriesRead),
    ("deliveries:write", Scope::DeliveriesWrite),
    ("actions:invoke", Scope::ActionsInvoke),
    ("metrics:read", Scope::MetricsRead),
    ("dnc:read", Scope::DncRead),
    ("dnc:write", Scope::DncWrite),
    ("keys:read", Scope::KeysRead),
    ("keys:write", Scope::KeysWrite),
];

impl Scope {
    /// Parses a known scope; unknown scopes are `None`.
    pub fn parse(s: &str) -> Option<Self> {
        if let Some((_, scope)) = NAMED_SCOPES.iter().find(|(name, _)| *name == s) {
            return Some(scope.clone());
        }
        s.strip_prefix("trigger:")
            .filter(|id| crate::ids::TriggerId::parse(id).is_ok())
            .map(|id| Scope::Trigger(id.to_owned()))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Trigger(id) => write!(f, "trigger:{id}"),
            other => {
                let name = NAMED_SCOPES
                    .iter()
                    .find(|(_, s)| s == other)
                    .map(|(n, _)| *n)
                    .unwrap_or_default();
                f.write_str(name)
            }
        }
    }
}

/// Every scope as written, for messages: `triggers:run, …, trigger:<id>`
/// (from `NAMED_SCOPES`, so a scope added there is named here).
pub fn known_scopes() -> String {
    let mut names: Vec<&str> = NAMED_SCOPES.iter().map(|(n, _)| *n).collect();
    names.push("trigger:<id>");
    names.join(", ")
}

/// A principal's scopes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    pub fn new(scopes: Vec<Scope>) -> Self {
        Self(scopes)
    }

    /// Parses what it knows and ignores the rest (JWT issuers carry scopes
    /// meant for other services).
    pub fn parse_lenient<'a>(items: impl IntoIterator<Item = &'a str>) -> Self {
        Self(items.into_iter().filter_map(Scope::parse).collect())
    }

    pub fn may_run(&self, trigger_id: &str) -> bool {
        self.0.iter().any(|s| match s {
            Scope::TriggersRun => true,
            Scope::Trigger(id) => id == trigger_id,
            _ => false,
        })
    }

    pub fn has(&self, scope: &Scope) -> bool {
        self.0.contains(scope)
    }

    /// Whether these scopes include `scope`: held as such, or a
    /// `trigger:<id>` within `triggers:run`. A key made by a principal may
    /// carry only scopes its creator's cover.
    pub fn covers(&self, scope: &Scope) -> bool {
        match scope {
            Scope::Trigger(id) => self.may_run(id),
            other => self.has(other),
        }
    }

    pub fn may_read_all_jobs(&self) -> bool {
        self.0.contains(&Scope::JobsRead)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_scopes_cover_exactly_their_trigger() {
        let s = Scopes::parse_lenient(["trigger:demo-call", "openid", "trigger:bad id"]);
        assert!(s.may_run("demo-call"));
        assert!(!s.may_run("other"));
        assert!(!s.may_read_all_jobs());
        assert_eq!(s.iter().count(), 1);
        let all = Scopes::parse_lenient(["triggers:run", "jobs:read"]);
        assert!(all.may_run("anything") && all.may_read_all_jobs());
        assert!(all.covers(&Scope::Trigger("demo-call".into())));
        assert!(!s.covers(&Scope::TriggersRun) && !all.covers(&Scope::KeysWrite));
    }

    #[test]
    fn the_unknown_scope_message_names_every_scope() {
        let known = known_scopes();
        for (name, scope) in NAMED_SCOPES {
            assert!(known.contains(name), "{known}");
            assert_eq!(Scope::parse(name), Some(scope));
        }
        assert!(known.ends_with("trigger:<id>"));
    }
}
