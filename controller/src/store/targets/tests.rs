//! The store's targets on both engines: listings, their filters and
//! pages, and what a later campaign takes of an ended one.

use super::*;
use crate::store::campaigns::{self, NewCampaign};
use crate::store::testing::store_matrix;

/// Targets i-1..i-6 over two accounts and two statuses.
fn seeded(conn: &dyn Sql) {
    campaigns::insert(conn, &NewCampaign::for_test("c1", 3)).unwrap();
    for (n, account) in [(1, "111"), (2, "111"), (3, "111"), (4, "222"), (5, "222"), (6, "222")] {
        let status = if n % 2 == 0 {
            TargetStatus::Success
        } else {
            TargetStatus::Failed
        };
        conn.execute(
            "INSERT INTO targets (campaign_id, account_id, region, instance_id, status) VALUES ('c1', ?1, 'us-east-1', ?2, ?3)",
            params![account, format!("i-{n}"), status as i32],
        )
        .unwrap();
    }
}

fn ids(page: &[Target]) -> Vec<&str> {
    page.iter().map(|t| t.instance_id.as_str()).collect()
}

store_matrix! {
    fn a_filtered_list_takes_every_filter_and_pages_in_order(conn) {
        seeded(&conn);
        let filter = TargetFilter {
            statuses: vec![TargetStatus::Success as i32],
            accounts: vec!["111".into(), "222".into()],
            regions: vec!["us-east-1".into()],
            instances: vec![],
            patch: PatchChoice::Any,
        };
        let (first, next) = list(&conn, "c1", &filter, 2, None, false).unwrap();
        assert_eq!(ids(&first), ["i-2", "i-4"]);
        let (second, next) = list(&conn, "c1", &filter, 2, next, false).unwrap();
        assert_eq!(ids(&second), ["i-6"]);
        assert_eq!(next, None);

        let filter = TargetFilter {
            accounts: vec!["222".into()],
            instances: vec!["i-1".into(), "i-5".into()],
            ..Default::default()
        };
        let (only, _) = list(&conn, "c1", &filter, 10, None, false).unwrap();
        assert_eq!(ids(&only), ["i-5"], "every filter applies");
    }
}

store_matrix! {
    fn the_pending_set_follows_release_and_a_result_touches_no_index(conn) {
        use muster_proto::v1::{Platform, TargetResult};
        let scope = ("111111111111", "us-east-1");
        crate::store::testing::pending_campaign(&conn, scope, 6);
        let linux = Platform::Linux as i32;
        let pending = |conn: &dyn Sql| pending_instances(conn, "c1", scope, linux, None, 100).unwrap();
        assert_eq!(pending(&conn), ["i-1", "i-2", "i-3", "i-4", "i-5", "i-6"]);

        let campaign = campaigns::get(&conn, "c1").unwrap().unwrap();
        let batch: Vec<String> = ["i-1", "i-2", "i-3", "i-4"].map(String::from).into();
        let task_id =
            crate::store::tasks::create_execute(&conn, &campaign, scope.0, scope.1, Platform::Linux, &batch, 3)
                .unwrap();
        assert_eq!(pending(&conn), ["i-5", "i-6"], "released targets leave the pending set");
        assert_eq!(
            pending_by_scope(&conn, "c1", None, Window::ALL).unwrap(),
            [((scope.0.to_owned(), scope.1.to_owned()), linux, 2)]
        );
        let task = crate::store::tasks::get(&conn, &task_id).unwrap().unwrap();
        record_dispatch(&conn, &task, ("cmd-1", 0), &batch, Some(1), false).unwrap();

        // A result moves RUNNING to a final status, which changes no
        // indexed value: on PostgreSQL every such update is HOT, so
        // ingest writes the row's page and no index (pgbench: 1.8x).
        let results: Vec<TargetResult> = batch
            .iter()
            .map(|id| TargetResult {
                instance_id: id.clone(),
                status: TargetStatus::Success as i32,
                exit_code: Some(0),
                command_id: "cmd-1".into(),
                ..Default::default()
            })
            .collect();
        // The backend's counts not yet reported, which include this
        // transaction's: read before and after the results.
        let updates = |conn: &dyn Sql| -> (i64, i64) {
            conn.query_row(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = 'targets'",
                (),
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
        };
        let postgres = conn.engine() == crate::store::Engine::Postgres;
        let before = postgres.then(|| {
            conn.execute_batch("BEGIN").unwrap();
            updates(&conn)
        });
        let ingested = crate::store::ingest::results(&conn, &task, &crate::store::ingest::reported(&results)).unwrap();
        assert_eq!(ingested.accepted(), 4);
        if let Some((updated, hot)) = before {
            let (updated_after, hot_after) = updates(&conn);
            conn.execute_batch("COMMIT").unwrap();
            assert_eq!(
                (updated_after - updated, hot_after - hot),
                (4, 4),
                "every result's update is HOT"
            );
        }
        assert_eq!(pending(&conn), ["i-5", "i-6"], "results leave the pending set alone");

        let ended = end_pending(&conn, "c1", TargetStatus::Cancelled, "cancelled").unwrap();
        assert_eq!(ended, 2);
        assert!(pending(&conn).is_empty());
        assert!(pending_by_scope(&conn, "c1", None, Window::ALL).unwrap().is_empty());
    }
}

/// A campaign with `targets` (account, region, instance, status) and
/// one scope per (account, region) named, rerunning `of`.
fn campaign_of(conn: &dyn Sql, id: &str, of: &str, targets: &[(&str, &str, &str, TargetStatus)]) {
    let mut new = NewCampaign::for_test(id, 3);
    new.rerun_of = of.into();
    new.scopes = targets
        .iter()
        .map(|(a, r, _, _)| ((*a).to_owned(), (*r).to_owned()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        campaigns::insert(conn, &new).unwrap(),
        campaigns::Inserted::Created(id.into())
    );
    for (account, region, instance, status) in targets {
        conn.execute(
            "INSERT INTO targets (campaign_id, account_id, region, instance_id, status) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, *account, *region, *instance, *status as i32],
        )
        .unwrap();
    }
}

fn end(conn: &dyn Sql, id: &str) {
    campaigns::set_state(conn, id, muster_proto::v1::CampaignState::CompletedWithErrors, "done").unwrap();
}

fn everything(conn: &dyn Sql, chain: &[String], filter: &TargetFilter, page: usize) -> Vec<(String, String, i32)> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let (rows, next) = list_latest(conn, chain, filter, page, cursor, false).unwrap();
        assert!(rows.len() <= page);
        all.extend(rows.into_iter().map(|t| {
            (
                t.campaign_id,
                format!("{}/{}/{}", t.account_id, t.region, t.instance_id),
                t.status,
            )
        }));
        match next {
            Some(next) => cursor = Some(next),
            None => return all,
        }
    }
}

/// Gives `instance` of `campaign` a patch state with `missing` patches
/// missing and `pending` waiting for a reboot, `critical` of them
/// critical.
fn patched(conn: &dyn Sql, campaign: &str, instance: &str, (missing, pending, critical): (u32, u32, u32)) {
    let state = muster_proto::v1::PatchState {
        operation: "Scan".into(),
        missing,
        installed_pending_reboot: pending,
        critical_non_compliant: critical,
        ..Default::default()
    };
    conn.execute(
        "UPDATE targets SET patch_state = ?1 WHERE campaign_id = ?2 AND instance_id = ?3",
        params![prost::Message::encode_to_vec(&state), campaign, instance],
    )
    .unwrap();
}

store_matrix! {
    fn an_earlier_campaigns_targets_are_chosen_by_status_patch_state_and_its_reruns(conn) {
        use TargetStatus::{Failed, Success};
        campaign_of(&conn, "scan", "", &[
            ("111", "east", "i-1", Success),
            ("111", "east", "i-2", Success),
            ("111", "west", "i-3", Success),
            ("222", "east", "i-4", Failed),
            ("222", "east", "i-5", Success),
            ("333", "east", "", Failed),
        ]);
        patched(&conn, "scan", "i-1", (0, 0, 0));
        patched(&conn, "scan", "i-2", (3, 0, 0));
        patched(&conn, "scan", "i-3", (0, 2, 1));
        end(&conn, "scan");
        let chosen = |choice: Choice<'_>, limit| -> Vec<String> {
            selection(&conn, "scan", choice, limit)
                .unwrap()
                .into_iter()
                .flat_map(|((account, region), ids)| {
                    if ids.is_empty() {
                        return vec![format!("{account}/{region}")];
                    }
                    ids.into_iter().map(|id| format!("{account}/{region}/{id}")).collect()
                })
                .collect()
        };
        let non_compliant = Choice { patch: PatchChoice::NonCompliant, ..Default::default() };
        assert_eq!(
            chosen(non_compliant, 100),
            ["111/east/i-2", "111/west/i-3"],
            "missing or pending a reboot; neither compliant nor without a state"
        );
        let critical = Choice { patch: PatchChoice::Critical, ..Default::default() };
        assert_eq!(chosen(critical, 100), ["111/west/i-3"], "only a critical patch behind");
        assert_eq!(chosen(Choice::default(), 100).len(), 6, "any: every target");
        assert_eq!(
            chosen(Choice { statuses: &[Failed as i32], ..Default::default() }, 100),
            ["222/east/i-4", "333/east"],
            "an undiscovered scope whole"
        );
        let failed_non_compliant = Choice { statuses: &[Failed as i32], ..non_compliant };
        assert!(chosen(failed_non_compliant, 100).is_empty(), "both must hold");
        assert_eq!(chosen(Choice::default(), 2).len(), 3, "one past the limit, to tell it");

        // The Install reruns i-2, which it leaves compliant.
        campaign_of(&conn, "again", "scan", &[("111", "east", "i-2", Success)]);
        patched(&conn, "again", "i-2", (0, 0, 0));
        end(&conn, "again");
        assert_eq!(chosen(non_compliant, 100), ["111/east/i-2", "111/west/i-3"], "the campaign's own");
        let followed = Choice { follow_reruns: true, ..non_compliant };
        assert_eq!(chosen(followed, 100), ["111/west/i-3"], "as the rerun left them");
    }
}

store_matrix! {
    fn a_listing_by_patch_state_fills_its_pages_past_the_targets_it_leaves_out(conn) {
        use TargetStatus::Success;
        // 2,500 compliant targets, and three behind among them: the
        // filter reads past a chunk of rows it leaves out.
        let mut rows: Vec<(String, String, String, TargetStatus)> = (0..2_500)
            .map(|i| ("111".to_owned(), "east".to_owned(), format!("i-{i:05}"), Success))
            .collect();
        rows.push(("222".into(), "east".into(), "i-none".into(), Success));
        let rows: Vec<(&str, &str, &str, TargetStatus)> =
            rows.iter().map(|(a, r, i, s)| (a.as_str(), r.as_str(), i.as_str(), *s)).collect();
        campaign_of(&conn, "scan", "", &rows);
        for i in 0..2_500 {
            let behind = match i {
                10 => (2, 0, 0),
                1_700 => (0, 1, 1),
                2_499 => (5, 0, 2),
                _ => (0, 0, 0),
            };
            patched(&conn, "scan", &format!("i-{i:05}"), behind);
        }
        end(&conn, "scan");
        let listed_with = |filter: TargetFilter, page_size| {
            let mut pages = Vec::new();
            let mut cursor = None;
            loop {
                let (page, next) = list(&conn, "scan", &filter, page_size, cursor, false).unwrap();
                pages.push(page.into_iter().map(|t| t.instance_id).collect::<Vec<_>>());
                match next {
                    Some(next) => cursor = Some(next),
                    None => return pages,
                }
            }
        };
        let listed = |patch, page_size| {
            listed_with(TargetFilter { patch, ..Default::default() }, page_size)
        };
        assert_eq!(
            listed(PatchChoice::NonCompliant, 2),
            [vec!["i-00010", "i-01700"], vec!["i-02499"]],
            "full pages, then the rest; neither compliant nor without a state"
        );
        assert_eq!(listed(PatchChoice::Critical, 1), [vec!["i-01700"], vec!["i-02499"]]);
        assert_eq!(listed(PatchChoice::Any, 5_000)[0].len(), 2_501, "no filter: every target");
        let with_status = |status: TargetStatus| TargetFilter {
            statuses: vec![status as i32],
            patch: PatchChoice::NonCompliant,
            ..Default::default()
        };
        assert_eq!(listed_with(with_status(Success), 5)[0].len(), 3, "both hold");
        assert_eq!(listed_with(with_status(TargetStatus::Failed), 5), [Vec::<String>::new()], "both must hold");
    }
}

store_matrix! {
    fn reruns_read_together_each_target_as_the_latest_left_it(conn) {
        use TargetStatus::{Error, Failed, Success};
        campaign_of(&conn, "first", "", &[
            ("111", "east", "i-1", Success),
            ("111", "east", "i-2", Failed),
            ("111", "east", "i-3", Failed),
            ("111", "west", "i-4", Success),
            ("222", "east", "", Error),
            ("333", "east", "", Error),
        ]);
        end(&conn, "first");
        let failures = Choice { statuses: &[Failed as i32, Error as i32], ..Default::default() };
        let selection = selection(&conn, "first", failures, 100).unwrap();
        assert_eq!(
            selection.into_iter().collect::<Vec<_>>(),
            [
                (("111".to_owned(), "east".to_owned()), vec!["i-2".to_owned(), "i-3".to_owned()]),
                (("222".into(), "east".into()), vec![]),
                (("333".into(), "east".into()), vec![]),
            ],
            "instances by scope; an undiscovered scope whole"
        );
        // The rerun: i-2 now succeeds, i-3 fails again, 222 is found
        // and runs, 333 still cannot be discovered.
        campaign_of(&conn, "rerun", "first", &[
            ("111", "east", "i-2", Success),
            ("111", "east", "i-3", Failed),
            ("222", "east", "i-7", Success),
            ("222", "east", "i-8", Failed),
            ("333", "east", "", Error),
        ]);
        let chain = campaigns::rerun_chain(&conn, "first").unwrap();
        assert_eq!(chain, ["first", "rerun"]);
        assert_eq!(campaigns::rerun_chain(&conn, "rerun").unwrap(), ["rerun"]);
        let expected = vec![
            ("first".to_owned(), "111/east/i-1".to_owned(), Success as i32),
            ("rerun".into(), "111/east/i-2".into(), Success as i32),
            ("rerun".into(), "111/east/i-3".into(), Failed as i32),
            ("first".into(), "111/west/i-4".into(), Success as i32),
            ("rerun".into(), "222/east/i-7".into(), Success as i32),
            ("rerun".into(), "222/east/i-8".into(), Failed as i32),
            ("rerun".into(), "333/east/".into(), Error as i32),
        ];
        for page in [1, 2, 3, 100] {
            assert_eq!(everything(&conn, &chain, &TargetFilter::default(), page), expected, "pages of {page}");
        }
        let failed = TargetFilter { statuses: vec![Failed as i32], ..Default::default() };
        let only: Vec<String> = everything(&conn, &chain, &failed, 1).into_iter().map(|(_, k, _)| k).collect();
        assert_eq!(only, ["111/east/i-3", "222/east/i-8"], "the filter applies to the latest result");
        let east_222 = TargetFilter { accounts: vec!["222".into()], ..Default::default() };
        assert_eq!(everything(&conn, &chain, &east_222, 5).len(), 2);

        // One rerun at a time: a second while the first runs is refused,
        // and goes once it has ended.
        let mut again = NewCampaign::for_test("second", 3);
        again.rerun_of = "first".into();
        assert_eq!(
            campaigns::insert(&conn, &again).unwrap(),
            campaigns::Inserted::RerunInProgress("rerun".into())
        );
        assert!(campaigns::get(&conn, "second").unwrap().is_none(), "nothing stored");
        end(&conn, "rerun");
        assert_eq!(campaigns::insert(&conn, &again).unwrap(), campaigns::Inserted::Created("second".into()));
        assert_eq!(campaigns::reruns(&conn, "first").unwrap(), ["rerun", "second"]);
    }
}
