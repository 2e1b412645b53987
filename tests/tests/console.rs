//! The web console in a real headless Chromium: sign in, watch a running
//! campaign's map change, drill into a failed target's output, cancel as an
//! operator and be refused as a viewer. Each page's screenshot is written
//! among the test artifacts (`muster_tests::browser::artifacts_dir`).

use std::time::Duration;

use fantoccini::Locator;
use muster_proto::v1::{
    CampaignState, GetTargetRequest, PlanCampaignRequest, PromoteCampaignRequest, RateControl, Stage, StageGate,
    TagFilter, TargetStatus,
};
use muster_tests::browser::Browser;
use muster_tests::client::{self, script_spec};
use muster_tests::stack::{Options, Stack};

/// Two accounts in two regions: three instances that take a few seconds
/// and one that fails with output, in each; and one that never finishes.
const FLEET: &str = r#"
name = "console"
external_id = "ext-console"
output_bucket = "muster-output"
results_bucket = "muster-results"

[[accounts]]
name = "blue"
regions = ["us-east-1", "eu-west-1"]
  [[accounts.instances]]
  count = 3
  tags = { Role = "web", "muster-sim:duration" = "1.5" }
  [[accounts.instances]]
  count = 1
  tags = { Role = "web", "muster-sim:exit-code" = "2", "muster-sim:duration" = "0.5", "muster-sim:stdout-bytes" = "300" }

[[accounts]]
name = "green"
regions = ["us-east-1", "eu-west-1"]
  [[accounts.instances]]
  count = 3
  tags = { Role = "web", "muster-sim:duration" = "1.5" }
  [[accounts.instances]]
  count = 1
  tags = { Role = "slow", "muster-sim:duration" = "900" }
"#;

fn base(stack: &Stack) -> String {
    format!("https://localhost:{}", stack.controller.campaign_addr.port())
}

async fn cell_label(browser: &Browser, id: &str) -> String {
    browser
        .eval(&format!("return document.querySelector('#{id} .label').textContent"))
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_watches_a_campaign_live_drills_into_a_failure_and_a_viewer_cannot_cancel() {
    let mut stack = Stack::start(FLEET, Options::default()).await;
    let accounts = vec![stack.account("blue"), stack.account("green")];
    let regions = ["us-east-1", "eu-west-1"];
    // One at a time per scope, so the map has time to change in front of
    // the page.
    let mut spec = script_spec(&accounts, &regions, &["echo patched"], &[]);
    spec.name = "console-watch".into();
    spec.targets.as_mut().unwrap().tags = vec![TagFilter {
        key: "Role".into(),
        values: vec!["web".into()],
    }];
    spec.rate = Some(RateControl {
        max_concurrency: "2".into(),
        batch_size: 1,
        ..Default::default()
    });
    // Blue waits behind green's manual gate, so the cell the page watches
    // is still to change when the page opens, however long the browser
    // takes to start on a loaded machine.
    spec.stages = vec![
        Stage {
            name: "green".into(),
            account_ids: vec![accounts[1].clone()],
            gate: StageGate::Manual as i32,
            ..Default::default()
        },
        Stage {
            name: "blue".into(),
            ..Default::default()
        },
    ];
    let watched = client::submit(&mut stack.client, spec).await;

    let browser = Browser::start("operator").await;
    // Not signed in: the console asks for a token first.
    browser
        .goto(&format!("{}/console/campaigns/{watched}", base(&stack)))
        .await;
    browser.element("token").await;
    assert!(
        browser
            .client
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/console/signin")
    );
    browser.screenshot("01-sign-in").await;
    // A wrong token is refused with the reason.
    browser.element("token").await.send_keys("mst_wrong").await.unwrap();
    browser
        .client
        .find(Locator::Css("form.signin button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // (The page it came from says why too: wait for the new one.)
    browser
        .until(Duration::from_secs(10), "the refusal's reason", || async {
            browser.text_of("why").await.contains("unknown bearer token")
        })
        .await;

    browser.sign_in(&base(&stack), &stack.creds.submit_token).await;
    assert!(
        browser.text_of("who").await.contains("ci"),
        "the header names who signed in"
    );
    browser.goto(&format!("{}/console/", base(&stack))).await;
    let list = browser.text_of("campaigns").await;
    assert!(list.contains("console-watch"), "{list}");
    browser.screenshot("02-campaigns").await;
    // The page may run only its own script and may not be framed.
    let csp = browser
        .eval_async(
            "const done = arguments[0]; \
             fetch('/console/').then(r => done(r.headers.get('content-security-policy')));",
        )
        .await;
    let csp = csp.as_str().unwrap_or_default();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );

    // The campaign page, live: cells change as targets finish, without a
    // reload (a marker set in the page survives).
    browser
        .goto(&format!("{}/console/campaigns/{watched}", base(&stack)))
        .await;
    browser.element("heatmap").await;
    browser.eval("window.__sameDocument = 42; return 0").await;
    let cell = muster_controller::console::views::cell_id(&accounts[0], "us-east-1");
    let first = cell_label(&browser, &cell).await;
    browser.screenshot("03-campaign-running").await;
    client::wait_for(
        &mut stack.client,
        &watched,
        Duration::from_secs(60),
        "green's gate",
        |c| c.state == CampaignState::AwaitingPromotion as i32,
    )
    .await;
    stack
        .client
        .promote_campaign(PromoteCampaignRequest {
            campaign_id: watched.clone(),
            stage: "green".into(),
            reason: "green is healthy".into(),
        })
        .await
        .expect("promote green");
    browser
        .until(Duration::from_secs(60), "the cell's count moving", || async {
            let now = cell_label(&browser, &cell).await;
            !now.is_empty() && now != first
        })
        .await;
    browser
        .until(Duration::from_secs(120), "the campaign ending", || async {
            browser.text_of("state").await == "completed with errors"
        })
        .await;
    // The stages follow too: the campaign stayed "running" between them,
    // and each stage's phase is redrawn as it passes.
    browser
        .until(Duration::from_secs(20), "both stages shown as passed", || async {
            stage_rows(&browser).await
                == [
                    "green|passed|waits to be promoted".to_owned(),
                    "blue|passed|the campaign ends".to_owned(),
                ]
        })
        .await;
    assert_eq!(
        browser.eval("return window.__sameDocument").await,
        42,
        "the page was not reloaded"
    );
    let campaign = client::get(&mut stack.client, &watched).await;
    let counters = campaign.counters.unwrap();
    // What the page shows is what the API says, to the target.
    assert_eq!(browser.text_of("done").await, (counters.total).to_string());
    assert_eq!(browser.text_of("n-failed").await, counters.failed.to_string());
    assert_eq!(counters.failed, 2, "the failing instance of each of blue's regions");
    let failures = browser.text_of("failures").await;
    assert_eq!(failures.lines().count(), 2, "{failures}");
    assert!(failures.contains("failed"), "{failures}");
    let word = browser
        .eval(&format!("return document.querySelector('#{cell} .word').textContent"))
        .await;
    assert_eq!(word, "failed", "a scope with a failure says so in words");
    // Colour is never the only signal: every cell says its state in words
    // to screen readers, and is a link the keyboard reaches.
    let unlabelled = browser
        .eval(
            "return [...document.querySelectorAll('a.cell')].filter(a => !/^\\d+ [a-z0-9-]+: (failed|succeeded|running|waiting|not run|discovering|discovery failed|empty);/.test(a.getAttribute('aria-label'))).length",
        )
        .await;
    assert_eq!(unlabelled, 0, "every cell names its state in its label");
    let focused = browser
        .eval(&format!(
            "document.getElementById('{cell}').focus(); return document.activeElement.id"
        ))
        .await;
    assert_eq!(focused, cell.as_str());
    browser.screenshot("04-campaign-ended").await;

    // Drill down: the failed cell, then the failed target and its output.
    browser.element(&cell).await.click().await.unwrap();
    let rows = browser.text_of("targets").await;
    assert!(rows.contains("failed") && rows.contains("success"), "{rows}");
    assert_eq!(
        browser.text_of("crumb-campaign").await,
        "console-watch",
        "the way back names the campaign"
    );
    browser.screenshot("05-scope").await;
    browser
        .client
        .find(Locator::Css("#targets tr.failed a"))
        .await
        .expect("a failed target's link")
        .click()
        .await
        .unwrap();
    assert_eq!(browser.text_of("status").await, "failed");
    assert_eq!(browser.text_of("crumb-campaign").await, "console-watch");
    let instance = browser.client.current_url().await.unwrap();
    let instance = instance.path().rsplit('/').next().unwrap().to_owned();
    let expected = stack
        .client
        .get_target(GetTargetRequest {
            campaign_id: watched.clone(),
            instance_id: instance.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .target
        .unwrap();
    assert_eq!(expected.status, TargetStatus::Failed as i32);
    let shown = browser
        .eval("return document.querySelector('pre.stdout').textContent")
        .await;
    let kept = &expected.steps[0].stdout;
    assert!(!kept.is_empty(), "the failing instance wrote output");
    assert_eq!(shown.as_str().unwrap(), kept, "the page shows the output the API keeps");
    assert!(browser.text_of("facts").await.contains(&expected.command_id));
    browser.screenshot("06-target").await;

    // The plan view: what a spec would target, per account and region.
    // ap-south-1 has no instances: its two accounts/regions are folded.
    let mut spec = script_spec(
        &accounts,
        &[regions[0], regions[1], "ap-south-1"],
        &["echo patched"],
        &[],
    );
    spec.name = "console-plan".into();
    spec.stages = vec![
        Stage {
            name: "first".into(),
            account_ids: vec![accounts[0].clone()],
            bake_seconds: 600,
            gate: StageGate::Manual as i32,
            ..Default::default()
        },
        Stage {
            name: "rest".into(),
            ..Default::default()
        },
    ];
    let plan = stack
        .client
        .plan_campaign(PlanCampaignRequest {
            spec: Some(spec),
            wait_seconds: 60,
        })
        .await
        .expect("a plan")
        .into_inner();
    assert!(plan.complete);
    browser.goto(&format!("{}/console/?plans=only", base(&stack))).await;
    assert!(browser.text_of("campaigns").await.contains("console-plan"));
    browser
        .goto(&format!("{}/console/campaigns/{}", base(&stack), plan.campaign_id))
        .await;
    let table = browser.text_of("plan").await;
    let planned = plan.campaign.unwrap();
    assert_eq!(planned.scopes.len(), 6);
    assert!(!table.contains("ap-south-1"), "{table}");
    assert_eq!(
        browser.text_of("map-folded").await,
        "2 more accounts/regions matched no instance."
    );
    for scope in planned.scopes.iter().filter(|s| s.region != "ap-south-1") {
        let line = format!(
            "{} {} discovered {}",
            scope.account_id,
            scope.region,
            scope.counters.unwrap().pending
        );
        assert!(table.contains(&line), "the plan shows {line}: {table}");
    }
    let first = &planned.scopes[0];
    browser
        .goto(&format!(
            "{}/console/campaigns/{}/scopes/{}/{}",
            base(&stack),
            plan.campaign_id,
            first.account_id,
            first.region
        ))
        .await;
    assert_eq!(browser.text_of("crumb-campaign").await, "Plan: console-plan");
    browser
        .goto(&format!("{}/console/campaigns/{}", base(&stack), plan.campaign_id))
        .await;
    // Its stages: what each would run and what follows it.
    let expected: Vec<String> = planned
        .stages
        .iter()
        .zip(["bakes 10m, then waits to be promoted", "the campaign ends"])
        .map(|(stage, follows)| {
            let total = stage.counters.unwrap_or_default().total;
            format!("{}|{total}|{follows}", stage.name)
        })
        .collect();
    assert_eq!(planned.stages.len(), 2);
    assert_eq!(plan_stage_rows(&browser).await, expected);
    // Its cells say what would run: nothing in a plan is waiting or done.
    let cell = muster_controller::console::views::cell_id(&accounts[0], "us-east-1");
    assert_eq!(
        browser
            .eval(&format!("return document.querySelector('#{cell} .word').textContent"))
            .await,
        "would run"
    );
    browser.screenshot("07-plan").await;

    // A campaign that will not end by itself.
    let mut spec = script_spec(&accounts[1..], &["us-east-1"], &["sleep 900"], &[]);
    spec.name = "console-cancel".into();
    spec.targets.as_mut().unwrap().tags = vec![TagFilter {
        key: "Role".into(),
        values: vec!["slow".into()],
    }];
    let slow = client::submit(&mut stack.client, spec).await;
    client::wait_for(
        &mut stack.client,
        &slow,
        Duration::from_secs(60),
        "the slow target running",
        |c| c.counters.is_some_and(|n| n.running == 1),
    )
    .await;

    // The viewer sees it, and is refused the cancel with the reason.
    let viewer = Browser::start("viewer").await;
    viewer.sign_in(&base(&stack), &stack.creds.read_token).await;
    viewer.goto(&format!("{}/console/campaigns/{slow}", base(&stack))).await;
    viewer.element("action-cancel").await.click().await.unwrap();
    let refusal = viewer.text_of("error").await;
    assert!(
        refusal.contains("dashboard") && refusal.contains("CancelCampaign"),
        "{refusal}"
    );
    viewer.screenshot("08-viewer-refused").await;
    let still = client::get(&mut stack.client, &slow).await;
    assert_eq!(
        still.state,
        CampaignState::Running as i32,
        "the refused cancel changed nothing"
    );

    // The operator cancels it; the page follows to the end.
    browser
        .goto(&format!("{}/console/campaigns/{slow}", base(&stack)))
        .await;
    browser
        .element("reason-cancel")
        .await
        .send_keys("console test")
        .await
        .unwrap();
    browser.element("action-cancel").await.click().await.unwrap();
    browser
        .until(Duration::from_secs(60), "the campaign cancelled", || async {
            browser.text_of("state").await == "cancelled"
        })
        .await;
    let cancelled = client::get(&mut stack.client, &slow).await;
    assert_eq!(cancelled.state, CampaignState::Cancelled as i32);
    assert!(cancelled.state_reason.contains("ci"), "{}", cancelled.state_reason);
    browser.screenshot("09-cancelled").await;
}

/// The live page's stages table: each row's name, phase and what follows.
async fn stage_rows(browser: &Browser) -> Vec<String> {
    table_rows(browser, "[...r.cells].filter((_, i) => [0, 1, 4].includes(i))").await
}

/// A plan page's stages table: each row's name, targets and what follows.
async fn plan_stage_rows(browser: &Browser) -> Vec<String> {
    table_rows(browser, "[...r.cells].filter((_, i) => [0, 1, 3].includes(i))").await
}

/// The rows of `#stages`, each the chosen cells' text joined by `|`.
/// The audit page's events, a line each.
async fn event_rows(browser: &Browser) -> Vec<String> {
    let rows = browser
        .eval("return [...document.querySelectorAll('#events tbody tr')].map(r => r.textContent.trim())")
        .await;
    rows.as_array()
        .map(|rows| rows.iter().filter_map(|r| r.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

async fn table_rows(browser: &Browser, cells: &str) -> Vec<String> {
    let rows = browser
        .eval(&format!(
            "return [...document.querySelectorAll('#stages tbody tr')].map(r => {cells}.map(c => c.textContent.trim()).join('|'))"
        ))
        .await;
    rows.as_array()
        .map(|rows| rows.iter().filter_map(|r| r.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// The schedules page lists each schedule with when it runs, its window,
/// its next run and how its last run went; one schedule's page shows what
/// it runs and its runs, each leading to its campaign, whose page leads
/// back. A viewer may read them all; the audit trail of what happened is an
/// admin's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_viewer_follows_a_schedule_to_its_campaign_and_an_admin_reads_the_audit_trail() {
    use muster_proto::v1::{AfterWindow, GetScheduleRequest, PutScheduleRequest, RunOutcome, ScheduleSpec};
    let stack = Stack::start(FLEET, Options::default()).await;
    let account = stack.account("blue");
    let mut schedules = stack.schedules();
    let mut spec = script_spec(std::slice::from_ref(&account), &["us-east-1"], &["echo patched"], &[]);
    spec.name = "patch-web".into();
    spec.targets.as_mut().unwrap().tags = vec![TagFilter {
        key: "Role".into(),
        values: vec!["web".into()],
    }];
    let put = |schedule: ScheduleSpec| PutScheduleRequest {
        spec: Some(schedule),
        expected_version: 0,
    };
    schedules
        .put_schedule(put(ScheduleSpec {
            name: "tuesdays".into(),
            description: "Tuesday nights, Berlin time".into(),
            campaign: Some(spec.clone()),
            cron: "0 2 * * TUE".into(),
            time_zone: "Europe/Berlin".into(),
            window_seconds: 4 * 3_600,
            after_window: AfterWindow::NextWindow as i32,
            ..Default::default()
        }))
        .await
        .expect("the cron schedule is stored");
    let at = std::time::SystemTime::now() + Duration::from_secs(2);
    schedules
        .put_schedule(put(ScheduleSpec {
            name: "soon".into(),
            campaign: Some(spec),
            at: Some(at.into()),
            ..Default::default()
        }))
        .await
        .expect("the one-off schedule is stored");
    let run =
        client::runs_until(&mut schedules, "soon", Duration::from_secs(60), |runs| !runs.is_empty()).await[0].clone();
    assert_eq!(run.outcome, RunOutcome::Started as i32, "{run:?}");

    let viewer = Browser::start("schedules").await;
    viewer.sign_in(&base(&stack), &stack.creds.read_token).await;
    viewer.element("who").await;
    // The header leads to the schedules.
    viewer.click(Locator::LinkText("Schedules")).await;
    let list = viewer.text_of("schedules").await;
    for said in [
        "tuesdays",
        "cron \"0 2 * * TUE\" Europe/Berlin",
        "4h; then in-flight batches finish, targets not sent wait for the next window",
        "soon",
        "none (runs to its end)",
        "started",
    ] {
        assert!(list.contains(said), "the list says {said:?}: {list}");
    }
    // The cron's next run is on a Tuesday at 02:00 Berlin time: 00:00 or
    // 01:00 UTC, by the season.
    let tuesdays = list.lines().find(|l| l.contains("tuesdays")).unwrap_or_default();
    assert!(
        tuesdays.contains(" 00:00:00 UTC") || tuesdays.contains(" 01:00:00 UTC"),
        "{tuesdays}"
    );
    viewer.screenshot("10-schedules").await;

    viewer.click(Locator::LinkText("soon")).await;
    let facts = viewer.text_of("facts").await;
    assert!(facts.contains("1 account in us-east-1; tag Role=web"), "{facts}");
    assert!(facts.contains("a script"), "{facts}");
    let next_run = viewer
        .eval(
            "return [...document.querySelectorAll('#facts dt')] \
             .find(dt => dt.textContent == 'Next run').nextElementSibling.textContent",
        )
        .await;
    assert_eq!(next_run, "none", "a past instant runs no more: {facts}");
    let runs = viewer.text_of("runs").await;
    assert!(runs.contains("started") && runs.contains(&run.campaign_id), "{runs}");
    viewer.screenshot("11-schedule").await;

    // Its run leads to the campaign it started, and that page leads back.
    viewer.click(Locator::LinkText(&run.campaign_id)).await;
    viewer
        .until(Duration::from_secs(10), "the run's campaign", || async {
            viewer.client.current_url().await.unwrap().path() == format!("/console/campaigns/{}", run.campaign_id)
        })
        .await;
    viewer.click(Locator::LinkText("Schedule soon")).await;
    viewer
        .until(Duration::from_secs(10), "the schedule's page again", || async {
            viewer.client.current_url().await.unwrap().path() == "/console/schedules/soon"
        })
        .await;

    // An older version says which is current.
    let mut second = schedules
        .get_schedule(GetScheduleRequest {
            name: "tuesdays".into(),
            ..Default::default()
        })
        .await
        .expect("GetSchedule")
        .into_inner()
        .schedule
        .and_then(|s| s.spec)
        .expect("the stored spec");
    second.window_seconds = 2 * 3_600;
    second.paused = true;
    schedules
        .put_schedule(PutScheduleRequest {
            spec: Some(second),
            expected_version: 1,
        })
        .await
        .expect("a second version");
    viewer
        .goto(&format!("{}/console/schedules/tuesdays?version=1", base(&stack)))
        .await;
    assert_eq!(
        viewer.text_of("older").await,
        "An older version: the current one is version 2."
    );
    assert!(viewer.text_of("facts").await.contains("4h;"), "version 1's window");
    viewer
        .goto(&format!("{}/console/schedules/tuesdays", base(&stack)))
        .await;
    let facts = viewer.text_of("facts").await;
    assert!(facts.contains("2h;"), "version 2's window: {facts}");
    assert!(
        facts.contains("yes: its run times start nothing until it is resumed (the button above, or `muster schedule resume tuesdays`)"),
        "version 2 is paused: {facts}"
    );
    // A viewer may not resume it: the API refuses, naming the rule.
    viewer.element("action-resume").await.click().await.unwrap();
    let refusal = viewer.text_of("error").await;
    assert!(
        refusal.contains("dashboard") && refusal.contains("PutSchedule"),
        "{refusal}"
    );
    viewer.goto(&format!("{}/console/schedules", base(&stack))).await;
    let tuesdays = viewer.text_of("schedules").await;
    let tuesdays = tuesdays.lines().find(|l| l.contains("tuesdays")).unwrap_or_default();
    assert!(tuesdays.contains("paused"), "the list says it is paused: {tuesdays}");

    // A version that is not a number, and a schedule that is not there, are
    // said so.
    viewer
        .goto(&format!("{}/console/schedules/soon?version=latest", base(&stack)))
        .await;
    let error = viewer.text_of("error").await;
    assert!(
        error.contains("version: \"latest\" is not a schedule version"),
        "{error}"
    );
    viewer
        .goto(&format!("{}/console/schedules/nightly", base(&stack)))
        .await;
    let error = viewer.text_of("error").await;
    assert!(error.contains("no schedule with that name"), "{error}");

    // The audit trail is an admin's: a viewer's header does not offer it,
    // and the page refuses the viewer with the rule.
    let offers_audit = "return document.querySelector('nav a[href=\"/console/audit\"]') !== null";
    viewer.goto(&format!("{}/console/schedules", base(&stack))).await;
    assert_eq!(viewer.eval(offers_audit).await, false);
    viewer.goto(&format!("{}/console/audit", base(&stack))).await;
    let refusal = viewer.text_of("error").await;
    assert!(
        refusal.contains("dashboard") && refusal.contains("ListAuditEvents"),
        "{refusal}"
    );

    // An admin follows the run's campaign to its trail: the schedule
    // submitted it. The whole trail has the schedules stored and the
    // viewer's refusal.
    let admin = Browser::start("audit").await;
    admin.sign_in(&base(&stack), &stack.creds.admin_token).await;
    assert_eq!(admin.eval(offers_audit).await, true);
    admin
        .goto(&format!("{}/console/campaigns/{}", base(&stack), run.campaign_id))
        .await;
    admin.element("campaign-audit").await.click().await.unwrap();
    let trail = admin.text_of("events").await;
    assert!(
        trail.contains("submitted") && trail.contains("\"schedule\":\"soon\""),
        "{trail}"
    );
    let rows = event_rows(&admin).await;
    assert!(
        !rows.is_empty() && rows.iter().all(|row| row.contains(&run.campaign_id)),
        "only that campaign's events: {rows:?}"
    );
    admin.screenshot("12-campaign-audit").await;
    admin.goto(&format!("{}/console/audit", base(&stack))).await;
    let trail = admin.text_of("events").await;
    for said in ["schedule created", "schedule updated", "\"schedule\":\"tuesdays\""] {
        assert!(trail.contains(said), "the trail says {said:?}: {trail}");
    }
    admin
        .goto(&format!("{}/console/audit?principal=dashboard", base(&stack)))
        .await;
    let trail = admin.text_of("events").await;
    assert!(
        trail.contains("refused") && trail.contains("ListAuditEvents"),
        "the viewer's refusal: {trail}"
    );
    let rows = event_rows(&admin).await;
    assert!(
        !rows.is_empty()
            && rows
                .iter()
                .all(|row| row.starts_with("20") && row.contains("dashboard")),
        "only the viewer's events: {rows:?}"
    );
    admin.screenshot("13-audit").await;
    // More than a page: the viewer is refused 100 times more, and the
    // trail pages by 100, newest first, back to its refusals from before.
    let mut reader = stack
        .creds
        .token_client(stack.controller.campaign_addr.port(), Some(&stack.creds.read_token));
    for _ in 0..100 {
        reader
            .list_audit_events(muster_proto::v1::ListAuditEventsRequest::default())
            .await
            .expect_err("a viewer may not read the trail");
    }
    admin
        .goto(&format!("{}/console/audit?principal=dashboard", base(&stack)))
        .await;
    let first_page = event_rows(&admin).await;
    assert_eq!(first_page.len(), 100);
    admin.click(Locator::Css("a[rel=next]")).await;
    admin
        .until(Duration::from_secs(10), "the older page", || async {
            admin
                .client
                .current_url()
                .await
                .unwrap()
                .query()
                .is_some_and(|q| q.contains("page="))
        })
        .await;
    assert_eq!(
        event_rows(&admin).await,
        rows,
        "the older page: the viewer's refusals from before"
    );

    // An admin resumes the paused schedule, and pauses it again: each a
    // version, with the admin as its owner.
    let version_fact = "return [...document.querySelectorAll('#facts dt')] \
         .find(dt => dt.textContent == 'Version').nextElementSibling.textContent";
    admin
        .goto(&format!("{}/console/schedules/tuesdays", base(&stack)))
        .await;
    admin.element("action-resume").await.click().await.unwrap();
    admin.element("action-pause").await;
    let version = admin.eval(version_fact).await;
    assert!(
        version.as_str().is_some_and(|v| v.starts_with("3 by auditor")),
        "{version}"
    );
    assert!(!admin.text_of("facts").await.contains("Paused"), "resumed");
    admin.element("action-pause").await.click().await.unwrap();
    admin.element("action-resume").await;
    let version = admin.eval(version_fact).await;
    assert!(
        version.as_str().is_some_and(|v| v.starts_with("4 by auditor")),
        "{version}"
    );
    let current = schedules
        .get_schedule(GetScheduleRequest {
            name: "tuesdays".into(),
            ..Default::default()
        })
        .await
        .expect("GetSchedule")
        .into_inner()
        .schedule
        .expect("the schedule");
    assert_eq!(
        (
            current.version,
            current.spec.unwrap().paused,
            current.created_by.as_str()
        ),
        (4, true, "auditor")
    );
    admin.screenshot("14-schedule-paused").await;
}
