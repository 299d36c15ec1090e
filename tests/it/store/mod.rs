//! The store conformance suite: every operation of the `Store` interface,
//! run against a fresh database of every engine (`engines.rs`), through
//! `&dyn Store` only. What a case checks is what callers rely on, so an
//! engine that passes can replace another.
//!
//! A case is `async fn case(store: &dyn Store)`; the few that need more
//! than the store (another configuration, another client holding the
//! write lock, a value written behind the store's back) take the engine's
//! `&TestDb`. Each is listed once below and runs as one test per case.

mod alerts;
mod api_keys;
mod call_events;
mod call_list;
mod calls;
mod claims;
mod dedupe;
mod deliveries;
mod delivery_log;
mod dnc;
mod engines;
mod job_ops;
mod jobs;
mod leadership;
mod lifecycle;
mod lines;
mod make;
mod ops;
mod postgres;
mod sessions;
mod shared;

use callgate::config::StorageConfig;

/// One test per case, each on a fresh store of every engine.
macro_rules! conformance {
    (
        store: [$($module:ident :: $case:ident),* $(,)?],
        db: [$($db_module:ident :: $db_case:ident),* $(,)?] $(,)?
    ) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                for db in engines::all(&StorageConfig::default(), stringify!($case)).await {
                    eprintln!("{}: {}", db.engine, stringify!($case));
                    $module::$case(db.store()).await;
                    db.store.close().await;
                }
            }
        )*
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $db_case() {
                for db in engines::all(&StorageConfig::default(), stringify!($db_case)).await {
                    eprintln!("{}: {}", db.engine, stringify!($db_case));
                    $db_module::$db_case(&db).await;
                    db.store.close().await;
                }
            }
        )*
    };
}

conformance! {
    store: [
        jobs::enqueued_jobs_read_back_exactly_as_written,
        jobs::many_concurrent_enqueues_are_all_committed,
        jobs::an_idempotency_key_is_claimed_once_replayed_and_expires,
        jobs::concurrent_requests_with_one_key_insert_one_job,
        jobs::inserted_jobs_are_deduplicated_by_key,
        dedupe::a_dedupe_key_makes_one_job_until_it_expires_and_is_purged,
        jobs::jobs_are_listed_newest_first_by_filter_and_cursor,
        jobs::json_that_does_not_parse_is_an_error_not_a_default,
        job_ops::jobs_are_listed_by_the_number_they_call,
        job_ops::only_queued_scheduled_and_waiting_jobs_are_cancelled_and_never_claimed_after,
        job_ops::a_cancel_and_a_claim_never_both_win,
        claims::claims_take_due_jobs_earliest_first,
        claims::a_waiting_job_is_claimed_again_when_its_time_comes,
        claims::an_expired_lease_is_taken_over_and_the_old_owner_is_fenced,
        claims::released_leases_are_claimable_at_once_and_only_the_owners,
        claims::wake_jobs_makes_waiting_and_scheduled_jobs_due_now,
        claims::a_stalled_claim_is_fenced_even_when_its_own_owner_claims_again,
        claims::release_leases_matches_its_owner_exactly,
        lines::a_freed_line_wakes_the_oldest_waiter_only,
        lines::a_woken_job_that_waits_again_writes_no_event,
        lines::a_line_freed_before_the_wait_is_written_makes_the_job_due_at_once,
        lines::every_way_a_call_leaves_its_line_wakes_one_waiter,
        calls::reserving_a_line_creates_finds_or_refuses_a_call,
        calls::a_dial_answer_is_recorded_and_never_moves_the_call_backwards,
        calls::set_call_status_sets_the_status_outright,
        calls::stale_calls_are_the_line_holding_ones_without_news,
        calls::a_refused_call_is_dialed_again_only_on_a_free_line,
        call_list::calls_are_listed_newest_first_by_filter_and_cursor,
        call_events::call_events_apply_once_forward_only_and_merge_details,
        call_events::a_final_call_event_wakes_the_job_frees_the_line_and_starts_its_jobs,
        call_events::a_call_event_whose_jobs_cannot_be_inserted_changes_nothing,
        deliveries::deliveries_are_created_once_per_key_and_read_back_exactly,
        deliveries::an_expired_lease_counts_as_an_interrupted_attempt_and_dedupe_finds_the_first,
        delivery_log::an_interrupted_delivery_to_an_unconfigured_endpoint_fails_once_its_lease_is_over,
        deliveries::claims_are_per_endpoint_oldest_due_first_and_fenced_by_claim,
        deliveries::a_stalled_delivery_claim_is_fenced_even_when_its_own_owner_claims_again,
        deliveries::released_deliveries_are_due_again_untried,
        delivery_log::only_failed_and_dead_deliveries_are_replayed,
        delivery_log::the_delivery_log_filters_and_pages_newest_first,
        delivery_log::pending_deliveries_to_unconfigured_endpoints_fail_visibly,
        delivery_log::purge_deletes_finished_deliveries_and_keeps_unfinished_ones,
        delivery_log::a_large_purge_removes_every_finished_delivery,
        lifecycle::status_counts_count_every_record_by_status,
        lifecycle::check_writable_commits_through_the_writer,
        shared::a_rate_allows_its_burst_then_refuses_with_the_wait_and_refills,
        shared::a_breaker_opens_lets_one_probe_through_reopens_longer_and_closes,
        shared::the_capped_claim_takes_at_most_the_cap_less_unexpired_leases,
        lifecycle::a_lone_instance_leads_the_housekeeping,
        dnc::do_not_call_entries_are_added_once_listed_in_order_and_removed,
        api_keys::api_keys_are_made_once_per_name_disabled_and_their_use_recorded,
        sessions::console_sessions_read_back_touch_forward_and_are_deleted,
        sessions::console_sessions_are_purged_when_idle_or_too_old,
        alerts::an_alert_is_claimed_once_per_window,
        dnc::a_large_do_not_call_import_is_added_in_one_call,
        ops::only_failed_and_needs_attention_jobs_are_retried_in_a_new_round,
        ops::concurrent_retries_of_one_job_let_exactly_one_win,
        ops::endpoint_health_reports_windows_the_last_error_counts_and_the_breaker,
        ops::stats_count_jobs_refusals_calls_and_attempts_by_bucket,
    ],
    db: [
        sessions::a_session_made_by_one_store_is_seen_and_ended_by_another,
        lifecycle::a_blocked_writer_refuses_enqueues_at_once_past_its_bound,
        api_keys::an_api_key_made_by_one_store_is_seen_by_another_at_once,
        alerts::of_two_stores_racing_for_an_alert_one_wins,
        lifecycle::close_commits_what_was_accepted_and_refuses_more,
        jobs::a_status_no_engine_writes_is_an_error_not_a_default,
        shared::two_stores_on_one_database_share_a_rate,
        shared::concurrent_capped_claims_from_two_stores_never_exceed_the_cap,
        dnc::an_entry_added_by_one_store_is_seen_by_another_at_once,
        ops::refusal_counts_written_by_two_stores_add_up,
    ],
}
