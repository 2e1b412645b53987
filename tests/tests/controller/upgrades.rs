//! A rolling deploy, as the controller it replaces sees it.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_stops_once_a_newer_one_migrated_the_schema_under_it() {
    let stack = without_workers(&fleets::uniform(3, 0, 0.1)).await;
    let ctl = stack.controller.controller.clone();
    assert!(ctl.leader.is_leader(), "the lone controller leads");
    let mut client = stack.client.clone();
    client
        .list_campaigns(ListCampaignsRequest::default())
        .await
        .expect("it serves");

    // A newer controller starts on the same database and migrates it, as
    // its first act in a rolling deploy.
    let newer = muster_controller::store::newest_known() + 1;
    ctl.store
        .write(move |txn| {
            txn.execute(
                "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
                 VALUES (?1, 'from_a_newer_muster', '2026-12-05T00:00:00Z', '0')",
                muster_controller::store::sql::params![newer as i32],
            )?;
            Ok(())
        })
        .await
        .unwrap();

    // At its next claim (a third of the leader TTL, 5 s) it leaves the lead
    // and stops serving: nothing more is served by a controller that cannot
    // read all of it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !stack.controller.stopping() {
        assert!(
            std::time::Instant::now() < deadline,
            "still serving on a schema it does not know"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!ctl.leader.is_leader(), "it left the lead");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while client.list_campaigns(ListCampaignsRequest::default()).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "it still answers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, _, expires_ms) = ctl
        .store
        .read(|conn| muster_controller::store::leadership::current(conn))
        .await
        .unwrap()
        .expect("the leadership row");
    assert_eq!(
        expires_ms, 0,
        "its term ended at once: a newer controller leads at its first claim"
    );
}
