//! Shared test code: the storage suite every backend runs, a private `redis-server`, the
//! real `hueyd` binary, and the testbed's fault-injection tasks.
#![allow(dead_code, unused_macros)]

pub mod hueyd;
pub mod redis_server;
pub mod suite;
pub mod testbed;

/// Expand to one `#[test]` per storage behaviour, each calling the suite with a fresh factory.
///
/// `$make` is an expression evaluated once per test that yields a factory
/// (`Fn() -> Arc<dyn Storage>`); repeated calls of that factory must return handles on the
/// same storage.
macro_rules! storage_suite {
    ($make:expr) => {
        storage_suite!(@tests $make;
            enqueued_message_is_delivered_once_with_its_payload,
            priority_orders_dequeue_and_fifo_within_priority,
            named_queues_are_served_in_order_given,
            dequeue_takes_at_most_max,
            leased_message_is_not_delivered_again_while_its_lease_holds,
            ack_deletes_and_stale_ack_is_ignored,
            unknown_or_malformed_leases_are_ignored,
            expired_lease_is_redelivered_to_another_consumer,
            message_delivered_too_often_is_dead_lettered,
            extend_keeps_a_lease_alive,
            release_makes_a_message_ready_at_once,
            batch_writes_every_part,
            batch_is_atomic_to_concurrent_readers,
            due_schedule_entries_are_promoted_in_eta_order,
            promote_due_moves_at_most_max,
            next_eta_is_the_earliest_scheduled,
            blocking_dequeue_wakes_on_enqueue_from_another_handle,
            blocking_dequeue_wakes_on_enqueue_from_the_same_handle,
            blocking_dequeue_gives_up_after_its_wait,
            wait_result_wakes_when_result_is_written,
            wait_result_times_out_with_none,
            take_result_is_destructive_and_preserve_is_not,
            result_with_ttl_expires,
            delete_result_reports_whether_there_was_one,
            kv_put_get_and_take,
            kv_entries_with_ttl_expire,
            put_if_empty_is_exclusive_until_ttl_expires,
            put_if_empty_is_exclusive_across_handles,
            namespaces_are_separate,
            list_returns_sorted_live_keys,
            counters_add_atomically,
            delete_if_deletes_only_the_matching_value,
            expiring_counters_add_atomically_and_start_over_after_their_ttl,
            counts_reflect_each_part,
            expired_lease_counts_as_ready,
            pending_lists_ready_payloads_in_run_order,
            pending_orders_across_queues_by_priority_then_age,
            scheduled_lists_payloads_by_eta,
            dead_letters_are_listed_oldest_first,
            dead_letters_can_be_retried,
            flush_empties_only_the_parts_chosen,
            flush_all_empties_everything,
            huge_waits_leases_and_ttls_are_accepted,
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let factory = $make;
                crate::common::suite::$name(&factory);
            }
        )*
    };
}

/// An example binary, built by `cargo test` beside the test binaries (built here if missing).
pub fn example(name: &str) -> std::path::PathBuf {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let exe = deps.parent().unwrap().join("examples").join(name);
    if !exe.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--example", name])
            .status()
            .unwrap();
        assert!(status.success());
    }
    exe
}
