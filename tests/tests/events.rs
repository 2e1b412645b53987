//! Event-driven completion (issue 20): a batch learns that its command
//! ended from Run Command's status-change event (the sandbox routes them
//! through target-events.yaml's rule to the hub's queue) and reads its
//! results with one listing. Polling stays as the fallback: events that are
//! lost cost a late poll, never a result.

use std::time::Duration;

use muster_proto::v1::{CampaignState, TargetStatus};
use muster_sim::LatencyRange;
use muster_tests::client::{assert_counters_add_up, script_spec, submit, targets, wait_done};
use muster_tests::fleets;
use muster_tests::stack::{Options, Stack};

const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];
/// Two accounts x two regions x 6 instances: four batches.
const BATCHES: u64 = 4;
const INSTANCES: usize = 24;

async fn stack(command_events: bool) -> Stack {
    Stack::start(
        &fleets::grid(2, &REGIONS, 6, 3.0),
        Options {
            command_events,
            ..Default::default()
        },
    )
    .await
}

/// Runs one campaign over the whole fleet and checks what a user would:
/// it succeeded, every instance ran once with its result, the counters add
/// up. Returns the ListCommandInvocations calls it took.
async fn run_campaign(stack: &mut Stack) -> u64 {
    let accounts = vec![stack.account("a000"), stack.account("a001")];
    let lists_before = stack.sb.count("ssm", "ListCommandInvocations", "ok");
    let id = submit(&mut stack.client, script_spec(&accounts, &REGIONS, &["echo done"], &[])).await;
    let campaign = wait_done(&mut stack.client, &id, Duration::from_secs(120)).await;
    assert_eq!(campaign.state(), CampaignState::Succeeded);
    let all = targets(&mut stack.client, &id, true).await;
    assert_eq!(all.len(), INSTANCES);
    assert!(all.iter().all(|t| t.status() == TargetStatus::Success), "{all:#?}");
    assert_counters_add_up(&campaign, &all);
    let sends = stack.sends_per_instance();
    assert_eq!(sends.len(), INSTANCES);
    assert!(sends.values().all(|n| *n == 1), "every instance ran once: {sends:?}");
    stack.sb.count("ssm", "ListCommandInvocations", "ok") - lists_before
}

fn polls(stack: &Stack, why: &'static str) -> u64 {
    stack.workers.iter().map(|w| w.ctx.stats.polls(why)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_batch_is_read_once_when_its_event_arrives_even_late_and_twice() {
    let mut stack = stack(true).await;
    // EventBridge delivers at least once, maybe late, maybe out of order.
    stack.sb.tune(|t| {
        let events = t.events.as_mut().expect("seeding routes events");
        events.duplicate_percent = 100.0;
        events.delay_ms = LatencyRange { min: 0, max: 1_500 };
    });
    let lists = run_campaign(&mut stack).await;
    assert_eq!(lists, BATCHES, "one listing per batch, after its event");
    assert_eq!(polls(&stack, "event"), BATCHES);
    assert_eq!(polls(&stack, "cadence"), 0, "no poll before the event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_events_cost_a_fallback_poll_never_a_result() {
    let mut stack = Stack::start(&fleets::grid(4, &REGIONS, 6, 3.0), Options::default()).await;
    stack
        .sb
        .tune(|t| t.events.as_mut().expect("seeding routes events").drop_percent = 50.0);
    let accounts: Vec<String> = (0..4).map(|i| stack.account(&format!("a{i:03}"))).collect();
    let lists_before = stack.sb.count("ssm", "ListCommandInvocations", "ok");
    let id = submit(&mut stack.client, script_spec(&accounts, &REGIONS, &["echo done"], &[])).await;
    let campaign = wait_done(&mut stack.client, &id, Duration::from_secs(180)).await;
    assert_eq!(campaign.state(), CampaignState::Succeeded);
    let all = targets(&mut stack.client, &id, true).await;
    assert_eq!(all.len(), 48);
    assert!(all.iter().all(|t| t.status() == TargetStatus::Success), "{all:#?}");
    assert!(stack.sends_per_instance().values().all(|n| *n == 1));
    // A batch whose event was lost is polled once, a grace after the end
    // its campaign's other batches taught it to expect (a minute after the
    // send if every event of the campaign was lost): still one listing.
    let lists = stack.sb.count("ssm", "ListCommandInvocations", "ok") - lists_before;
    let counters = stack.sb.state().events.counters.to_json();
    let lost = counters["dropped"].as_u64().unwrap_or_default();
    assert_eq!(lists, 8, "{counters}");
    assert_eq!(polls(&stack, "cadence"), lost, "{counters}");
    assert_eq!(polls(&stack, "event"), 8 - lost, "{counters}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_events_batches_poll_at_their_usual_cadence() {
    let mut stack = stack(false).await;
    let lists = run_campaign(&mut stack).await;
    assert_eq!(polls(&stack, "event"), 0);
    // A 3 s command polled at 1.5 s, 3.75 s (maybe not yet) and on: more
    // than one listing per batch.
    assert!(lists > BATCHES, "{lists} listings");
    assert_eq!(lists, polls(&stack, "cadence"));
}

/// The controller records an event's ending, then deletes its message.
/// When that delete fails (the message comes back after its visibility
/// timeout, as after a controller that died between the two), the ending is
/// read again and recorded once; the batch is still read once and nothing
/// runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_delete_failed_comes_back_and_is_recorded_once() {
    let mut stack = stack(true).await;
    // Every DeleteMessageBatch fails before it takes effect: the task
    // queue's messages come back too, and are answered "finished" again.
    stack.sb.tune(|t| {
        t.faults.push(muster_sim::FaultRule::new(
            "sqs",
            "DeleteMessageBatch",
            muster_sim::FaultKind::Error500,
        ))
    });
    let lists = run_campaign(&mut stack).await;
    assert_eq!(lists, BATCHES, "one listing per batch, after its event");
    // The visibility timeout (30 s) brings every event message back once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let metric = |name: &str, text: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with("muster_controller_command_events_total") && l.contains(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    loop {
        let text = muster_controller::metrics::render(&stack.controller.controller).await;
        let (recorded, repeated) = (metric("\"recorded\"", &text), metric("\"repeated\"", &text));
        assert_eq!(recorded, BATCHES, "each command's ending recorded once:\n{text}");
        if repeated >= BATCHES {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the event messages did not come back: {repeated} repeated\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        stack.sends_per_instance().values().all(|n| *n == 1),
        "nothing ran twice after the messages came back"
    );
}
