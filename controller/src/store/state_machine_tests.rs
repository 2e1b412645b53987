//! The task state machine against the store itself, without processes: lease,
//! renew, fence, fail within the attempt budget, expire, extend after a
//! restart, re-enqueue and cancel. Each runs in milliseconds.

use crate::store::sql::Sql;
use crate::store::testing::store_matrix;
use muster_proto::v1::{LeaseOutcome, ScopeState, TargetStatus, TaskRef};

use super::campaigns::{self, NewCampaign};
use super::leases::{self, Ending, FailOutcome, Fenced, LeaseAnswer, LeaseSettings};
use super::queue;
use super::records::{now_ms, task_state};
use super::tasks;
use super::{StoreError, StoreResult};

const TTL_MS: i64 = 1_000;
const SETTINGS: LeaseSettings = LeaseSettings {
    ttl_ms: TTL_MS,
    max_tasks_per_scope: 4,
};

/// A store with one campaign of one scope: its Discover task's reference.
fn one_task(conn: &dyn Sql, max_attempts: u32) -> TaskRef {
    let new = NewCampaign::for_test("c1", max_attempts);
    campaigns::insert(conn, &new).unwrap();
    let task_id: String = conn.query_row("SELECT id FROM tasks", (), |r| r.get(0)).unwrap();
    TaskRef {
        campaign_id: "c1".into(),
        task_id,
        attempt: 1,
    }
}

/// Another campaign of one scope, beside the first: its Discover task.
fn one_task_more(conn: &dyn Sql, campaign_id: &str) -> TaskRef {
    campaigns::insert(conn, &NewCampaign::for_test(campaign_id, 3)).unwrap();
    let task_id: String = conn
        .query_row(
            "SELECT id FROM tasks WHERE campaign_id = ?1",
            crate::params![campaign_id],
            |r| r.get(0),
        )
        .unwrap();
    TaskRef {
        campaign_id: campaign_id.into(),
        task_id,
        attempt: 1,
    }
}

fn lease(conn: &dyn Sql, task_ref: &TaskRef, worker: &str) -> Result<u64, LeaseOutcome> {
    match leases::lease(conn, task_ref, worker, SETTINGS).unwrap() {
        LeaseAnswer::Granted(lease) => Ok(lease.lease_id),
        LeaseAnswer::Refused(outcome, _) => Err(outcome),
    }
}

/// Why a lease call was fenced; none when it was not.
fn fenced<T>(answer: StoreResult<T>) -> Option<Fenced> {
    match answer {
        Ok(_) => None,
        Err(StoreError::Lease(fenced)) => Some(fenced),
        Err(other) => panic!("a store failure, not a fence: {other}"),
    }
}

fn task(conn: &dyn Sql, task_ref: &TaskRef) -> tasks::TaskRow {
    tasks::get(conn, &task_ref.task_id).unwrap().unwrap()
}

store_matrix! {
    fn a_renewal_and_the_long_poll_say_alike_which_campaigns_are_being_cancelled(conn) {
        let (first, second, third) = (one_task(&conn, 3), one_task_more(&conn, "c2"), one_task_more(&conn, "c3"));
        let held: Vec<u64> = [&first, &second, &third].map(|t| lease(&conn, t, "w1").unwrap()).to_vec();
        let all: Vec<String> = ["c1", "c2", "c3", "no-such-campaign"].map(String::from).to_vec();
        assert!(leases::cancelling_among(&conn, &all).unwrap().is_empty());
        assert!(!leases::renew(&conn, &first.task_id, held[0], TTL_MS).unwrap());

        let tester = crate::store::audit::Actor {
            principal: "tester".into(),
            ..Default::default()
        };
        campaigns::request_cancel(&conn, "c1", &tester, "stop").unwrap();
        campaigns::set_window_cancelling(&conn, "c2", true).unwrap();
        let mut cancelling = leases::cancelling_among(&conn, &all).unwrap();
        cancelling.sort();
        assert_eq!(cancelling, ["c1", "c2"], "a cancel, and a window that cancels what is in flight");
        assert!(leases::renew(&conn, &first.task_id, held[0], TTL_MS).unwrap(), "cancelled");
        assert!(leases::renew(&conn, &second.task_id, held[1], TTL_MS).unwrap(), "its window closed");
        assert!(!leases::renew(&conn, &third.task_id, held[2], TTL_MS).unwrap(), "runs on");

        campaigns::set_window_cancelling(&conn, "c2", false).unwrap();
        assert_eq!(leases::cancelling_among(&conn, &all).unwrap(), ["c1"], "the mark cleared");
        assert!(!leases::renew(&conn, &second.task_id, held[1], TTL_MS).unwrap());
    }

    fn one_lease_at_a_time_and_only_its_holder_speaks(conn) {
        let task_ref = one_task(&conn, 3);
        let held = lease(&conn, &task_ref, "w1").unwrap();
        assert_eq!(lease(&conn, &task_ref, "w2"), Err(LeaseOutcome::LeasedElsewhere));
        assert!(!leases::renew(&conn, &task_ref.task_id, held, TTL_MS).unwrap());
        assert_eq!(
            fenced(leases::renew(&conn, &task_ref.task_id, held + 1, TTL_MS)),
            Some(Fenced::Stale)
        );
        assert_eq!(
            fenced(leases::complete(&conn, &task_ref.task_id, held + 1)),
            Some(Fenced::Stale),
            "another lease id cannot complete the task"
        );
        assert!(leases::complete(&conn, &task_ref.task_id, held).is_ok());
        assert_eq!(task(&conn, &task_ref).state, task_state::COMPLETED);
        assert_eq!(lease(&conn, &task_ref, "w2"), Err(LeaseOutcome::Finished));
        assert_eq!(
            fenced(leases::renew(&conn, &task_ref.task_id, held, TTL_MS)),
            Some(Fenced::Stale),
            "a finished task's lease is over"
        );
    }

    fn a_task_whose_campaign_ended_while_it_was_held_is_not_queued_again(conn) {
        // The campaign ends (its targets all ended: max_errors passed)
        // while a worker holds a task; that lease then runs out, or the
        // worker fails it as retryable. Queued again, the task would wait
        // for good and go back on the queue at every requeue_after.
        let expiring = one_task(&conn, 3);
        lease(&conn, &expiring, "w1").unwrap();
        let failing = one_task_more(&conn, "c2");
        let held = lease(&conn, &failing, "w2").unwrap();
        for id in ["c1", "c2"] {
            campaigns::set_state(&conn, id, muster_proto::v1::CampaignState::Failed, "error threshold exceeded")
                .unwrap();
        }
        assert_eq!(
            leases::fail(&conn, &failing.task_id, Some(held), "throttled", Ending::Retryable).unwrap(),
            FailOutcome::CampaignOver
        );
        let expired = leases::expire_leases(&conn, now_ms() + TTL_MS + 1).unwrap();
        let outcomes: Vec<_> = expired.iter().map(|(t, outcome)| (t.id.clone(), outcome.clone())).collect();
        assert_eq!(outcomes, [(expiring.task_id.clone(), FailOutcome::CampaignOver)]);
        for task_ref in [&expiring, &failing] {
            let row = task(&conn, task_ref);
            assert_eq!((row.state, row.attempt), (task_state::CANCELLED, 1), "{row:?}");
            assert!(row.last_error.ends_with("not retried: its campaign has ended"), "{}", row.last_error);
        }
        assert!(queue::to_enqueue(&conn, 10).unwrap().is_empty(), "nothing goes on the queue");
        assert!(queue::overdue(&conn, now_ms() + 1_000_000, 10).unwrap().is_empty(), "nor comes back to it");
        assert_eq!(
            leases::failed_under(&conn, &failing.task_id, held).unwrap(),
            Some(false),
            "a repeated FailTask is told it will not retry, as the first was"
        );
    }

    fn expiry_retries_within_the_budget_then_fails_saying_so(conn) {
        let first = one_task(&conn, 2);
        let held = lease(&conn, &first, "w1").unwrap();
        let expired = leases::expire_leases(&conn, now_ms() + TTL_MS + 1).unwrap();
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].1, FailOutcome::Retrying);
        let row = task(&conn, &first);
        assert_eq!((row.state, row.attempt), (task_state::QUEUED, 2));
        assert_eq!(
            fenced(leases::renew(&conn, &first.task_id, held, TTL_MS)),
            Some(Fenced::Stale),
            "the expired lease is fenced"
        );
        assert_eq!(
            lease(&conn, &first, "w2"),
            Err(LeaseOutcome::StaleAttempt),
            "a message of the first attempt leases nothing"
        );

        let second = TaskRef { attempt: 2, ..first };
        lease(&conn, &second, "w2").unwrap();
        let expired = leases::expire_leases(&conn, now_ms() + TTL_MS + 1).unwrap();
        assert_eq!(expired[0].1, FailOutcome::Failed);
        let row = task(&conn, &second);
        assert_eq!(row.state, task_state::FAILED);
        assert!(
            row.last_error.contains("gave up after 2 attempts"),
            "{}",
            row.last_error
        );
        // The scope could not be looked into: it says so in the results.
        let (scope_state, status): (i32, i32) = conn
            .query_row(
                "SELECT s.state, t.status FROM scopes s JOIN targets t ON t.campaign_id = s.campaign_id",
                (),
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(scope_state, ScopeState::Failed as i32);
        assert_eq!(status, TargetStatus::Error as i32);
    }

    fn a_restart_extends_the_leases_it_finds_instead_of_expiring_them(conn) {
        let task_ref = one_task(&conn, 3);
        let held = lease(&conn, &task_ref, "w1").unwrap();
        // The controller comes back ten TTLs later.
        let restarted = now_ms() + 10 * TTL_MS;
        assert_eq!(leases::extend_leases(&conn, restarted, TTL_MS).unwrap(), 1);
        assert!(
            leases::expire_leases(&conn, restarted + TTL_MS / 2).unwrap().is_empty(),
            "a live worker has one TTL to renew"
        );
        assert!(
            !leases::renew(&conn, &task_ref.task_id, held, TTL_MS).unwrap(),
            "and renews it (not cancelled)"
        );
        assert_eq!(task(&conn, &task_ref).attempt, 1, "the outage cost no attempt");
        // A worker that is gone does not renew: its lease then expires.
        let expired = leases::expire_leases(&conn, restarted + 2 * TTL_MS).unwrap();
        assert_eq!(expired.len(), 1);
    }

    fn an_attempt_left_on_the_queue_is_due_again(conn) {
        let task_ref = one_task(&conn, 3);
        let due = |conn: &dyn Sql| -> Vec<String> {
            queue::to_enqueue(conn, 10)
                .unwrap()
                .into_iter()
                .map(|d| d.task.task_id)
                .collect()
        };
        assert_eq!(due(&conn), vec![task_ref.task_id.clone()]);
        let sent_at = 1_000_000;
        queue::mark_enqueued(&conn, std::slice::from_ref(&task_ref), sent_at).unwrap();
        assert!(due(&conn).is_empty(), "on the queue now");
        assert!(
            queue::overdue(&conn, sent_at, 10).unwrap().is_empty(),
            "not overdue yet"
        );
        let overdue = queue::overdue(&conn, sent_at + 1, 10).unwrap();
        assert_eq!(overdue.len(), 1, "unleased past the bound: sent again");
        assert_eq!(overdue[0].task, task_ref);
        assert_eq!(queue::overdue_count(&conn, sent_at + 1).unwrap(), 1);

        // Its message went to the dead-letter queue: due again at once.
        let stale = TaskRef {
            attempt: 7,
            ..task_ref.clone()
        };
        assert_eq!(queue::dead_lettered(&conn, &[stale]).unwrap(), 0, "not its attempt");
        assert_eq!(queue::dead_lettered(&conn, std::slice::from_ref(&task_ref)).unwrap(), 1);
        assert_eq!(due(&conn), vec![task_ref.task_id.clone()]);

        // Once leased it is neither due nor overdue, and a dead letter of it is
        // only deleted.
        lease(&conn, &task_ref, "w1").unwrap();
        assert!(due(&conn).is_empty());
        assert!(queue::overdue(&conn, i64::MAX, 10).unwrap().is_empty());
        assert_eq!(queue::dead_lettered(&conn, &[task_ref]).unwrap(), 0);
    }

    fn cancel_ends_what_nobody_holds(conn) {
        let task_ref = one_task(&conn, 3);
        assert!(!tasks::cancel_unleased(&conn, "c1", "cancelled before it was sent").unwrap(), "nothing held");
        assert_eq!(task(&conn, &task_ref).state, task_state::CANCELLED);
        assert_eq!(lease(&conn, &task_ref, "w1"), Err(LeaseOutcome::Finished));
    }

    fn cancel_waits_for_what_is_held(conn) {
        let task_ref = one_task(&conn, 3);
        lease(&conn, &task_ref, "w1").unwrap();
        assert!(tasks::cancel_unleased(&conn, "c1", "cancelled before it was sent").unwrap(), "one task is held");
        assert_eq!(task(&conn, &task_ref).state, task_state::LEASED);
    }

    fn a_cancelled_batch_that_may_have_been_sent_waits_for_a_worker_to_cancel_it(conn) {
        let _ = one_task(&conn, 3);
        let campaign = campaigns::get(&conn, "c1").unwrap().unwrap();
        let execute = |conn: &dyn Sql| {
            let id = tasks::create_execute(
                conn,
                &campaign,
                "111111111111",
                "us-east-1",
                muster_proto::v1::Platform::Linux,
                &[],
                3,
            )
            .unwrap();
            TaskRef {
                campaign_id: "c1".into(),
                task_id: id,
                attempt: 1,
            }
        };
        let unsent = execute(&conn);
        let sent = execute(&conn);
        // The first holder of `sent` died after sending: its lease expired.
        lease(&conn, &sent, "w1").unwrap();
        leases::expire_leases(&conn, now_ms() + TTL_MS + 1).unwrap();
        let sent = TaskRef { attempt: 2, ..sent };

        let tester = crate::store::audit::Actor {
            principal: "tester".into(),
            ..Default::default()
        };
        campaigns::request_cancel(&conn, "c1", &tester, "stop").unwrap();
        assert!(tasks::cancel_unleased(&conn, "c1", "cancelled before it was sent").unwrap(), "a worker is still needed");
        assert_eq!(task(&conn, &unsent).state, task_state::CANCELLED, "never sent: over");
        assert_eq!(task(&conn, &sent).state, task_state::QUEUED, "may run: waits");
        assert!(
            queue::to_enqueue(&conn, 10)
                .unwrap()
                .iter()
                .any(|d| d.task.task_id == sent.task_id),
            "and goes on the queue"
        );
        match leases::lease(&conn, &sent, "w2", SETTINGS).unwrap() {
            LeaseAnswer::Granted(lease) => assert!(lease.campaign_cancelled, "to cancel, not to send"),
            LeaseAnswer::Refused(outcome, why) => panic!("refused: {outcome:?} {why}"),
        }
        assert_eq!(
            lease(&conn, &unsent, "w2"),
            Err(LeaseOutcome::Finished),
            "the unsent one is not leased"
        );
    }

    fn a_lease_gets_its_scopes_rate_shared_by_the_batches_the_scope_can_have_at_once(conn) {
        let mut new = NewCampaign::for_test("c1", 3);
        new.spec.rate = Some(muster_proto::v1::RateControl {
            api_calls_per_second: 8.0,
            batch_size: 50,
            ..Default::default()
        });
        campaigns::insert(&conn, &new).unwrap();
        let campaign = campaigns::get(&conn, "c1").unwrap().unwrap();
        let rate = 8.0;
        let execute = |conn: &dyn Sql| TaskRef {
            campaign_id: "c1".into(),
            task_id: tasks::create_execute(conn, &campaign, "111111111111", "us-east-1", muster_proto::v1::Platform::Linux, &[], 3)
                .unwrap(),
            attempt: 1,
        };
        let share = |conn: &dyn Sql, task_ref: &TaskRef| match leases::lease(conn, task_ref, "w1", SETTINGS).unwrap() {
            LeaseAnswer::Granted(lease) => lease.task.unwrap().api_calls_per_second,
            LeaseAnswer::Refused(outcome, why) => panic!("refused: {outcome:?} {why}"),
        };
        // A scope of one batch: its whole rate, not a fourth of it.
        let only = execute(&conn);
        assert_eq!(share(&conn, &only), rate);
        // Six batches out, four at most at once: a fourth each.
        let more: Vec<TaskRef> = (0..5).map(|_| execute(&conn)).collect();
        assert_eq!(share(&conn, &more[0]), rate / 4.0);
        // Once fewer remain, each remaining one gets more; the shares of the
        // leases held at once never add up to more than the rate.
        for done in [&only, &more[0], &more[1], &more[2]] {
            conn.execute("UPDATE tasks SET state = ?2 WHERE id = ?1", crate::params![done.task_id, task_state::COMPLETED]).unwrap();
        }
        assert_eq!(share(&conn, &more[3]), rate / 2.0);
    }

    fn a_task_handed_back_by_stopping_workers_keeps_its_attempts(conn) {
        let mut task_ref = one_task(&conn, 2);
        let mut end = |ending| {
            let id = lease(&conn, &task_ref, "w1").unwrap();
            let outcome = leases::fail(&conn, &task_ref.task_id, Some(id), "stopping", ending).unwrap();
            task_ref.attempt += 1;
            outcome
        };
        // Three scale-ins in a row: each a new attempt, none counted.
        for _ in 0..3 {
            assert_eq!(end(Ending::HandedBack), FailOutcome::Retrying);
        }
        // Failures still end it after the two it was given.
        assert_eq!(end(Ending::Retryable), FailOutcome::Retrying);
        assert_eq!(end(Ending::Retryable), FailOutcome::Failed);
    }

    fn a_failure_is_known_by_its_lease_and_an_expiry_or_completion_is_not(conn) {
        // What a repeated FailTask is told: the first answer's will_retry,
        // found from the lease it failed under, and nothing for a lease that
        // ended any other way or is still held.
        let mut task_ref = one_task(&conn, 3);
        let failed_under = |conn: &dyn Sql, task_ref: &TaskRef, id| leases::failed_under(conn, &task_ref.task_id, id).unwrap();
        let held = lease(&conn, &task_ref, "w1").unwrap();
        assert_eq!(failed_under(&conn, &task_ref, held), None, "still held");
        leases::fail(&conn, &task_ref.task_id, Some(held), "throttled", Ending::Retryable).unwrap();
        assert_eq!(failed_under(&conn, &task_ref, held), Some(true), "queued again");
        assert_eq!(
            fenced(leases::fail(&conn, &task_ref.task_id, Some(held), "throttled", Ending::Retryable)),
            Some(Fenced::Stale),
            "failing it again changes nothing"
        );
        assert_eq!(task(&conn, &task_ref).attempt, 2, "one attempt spent, not two");
        task_ref.attempt = 2;
        let expired = lease(&conn, &task_ref, "w1").unwrap();
        leases::expire_leases(&conn, now_ms() + TTL_MS + 1).unwrap();
        assert_eq!(failed_under(&conn, &task_ref, expired), None, "it ran out; its worker failed nothing");
        assert_eq!(failed_under(&conn, &task_ref, held), Some(true), "the earlier answer stands");
        task_ref.attempt = 3;
        let last = lease(&conn, &task_ref, "w1").unwrap();
        leases::fail(&conn, &task_ref.task_id, Some(last), "AccessDenied", Ending::Failed).unwrap();
        assert_eq!(failed_under(&conn, &task_ref, last), Some(false), "failed for good");

        let done_ref = one_task_more(&conn, "c2");
        let done = lease(&conn, &done_ref, "w1").unwrap();
        leases::complete(&conn, &done_ref.task_id, done).unwrap();
        assert_eq!(failed_under(&conn, &done_ref, done), None, "completed");
        assert_eq!(failed_under(&conn, &done_ref, last), None, "another task's lease");
    }

    fn lease_ids_cannot_be_guessed_from_one_another(conn) {
        let mut task_ref = one_task(&conn, 5);
        let mut ids = Vec::new();
        for _ in 0..4 {
            let id = lease(&conn, &task_ref, "w1").unwrap();
            ids.push(id);
            leases::fail(&conn, &task_ref.task_id, Some(id), "again", Ending::Retryable).unwrap();
            task_ref.attempt += 1;
        }
        for pair in ids.windows(2) {
            assert!(pair[0].abs_diff(pair[1]) > 1, "not a counter: {ids:?}");
        }
        assert!(
            ids.iter().all(|id| *id > u64::from(u32::MAX)),
            "63 random bits, not small numbers: {ids:?}"
        );
    }
}
