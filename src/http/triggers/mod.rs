//! Trigger routes: accept (`accept.rs`, signed senders in `signed.rs`,
//! campaign dedupe in `dedupe.rs`),
//! list and describe (`list.rs`).

mod accept;
mod dedupe;
mod list;
mod signed;

use std::sync::Arc;

pub use accept::accept_trigger;
pub use list::{get_trigger, list_triggers};

use crate::auth::{Principal, Scope};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::ids::TriggerId;
use crate::trigger::Trigger;

/// The trigger `id` if the principal may run it. Scope first (403), then
/// existence (404): a principal limited to one trigger learns nothing about
/// the others.
pub(crate) fn authorize(
    app: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<Arc<Trigger>, ApiError> {
    if !principal.scopes.may_run(id) {
        // `trigger:<id>` exists only for a well-formed id.
        let mut scopes = vec![Scope::TriggersRun];
        scopes.extend(
            TriggerId::parse(id)
                .ok()
                .map(|_| Scope::Trigger(id.to_owned())),
        );
        return Err(ApiError::missing_scope(
            scopes,
            format!("this credential lacks the `triggers:run` or `trigger:{id}` scope"),
        ));
    }
    TriggerId::parse(id)
        .ok()
        .and_then(|id| app.config.triggers.get(&id).cloned())
        .ok_or_else(|| ApiError::NotFound(format!("no trigger `{id}`")))
}
