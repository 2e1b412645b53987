//! The rollout across scopes, with the test playing the worker over gRPC:
//! a scope starts as soon as it is discovered, within limits that never
//! exceed the campaign's final ones, and not before a guardrail that needs
//! the final count has seen it; its first batches go to the worker that
//! discovered it, as far as that worker has room, and skip the queue; and a
//! Discover lease brings the same account's other regions with it.

use std::time::{Duration, Instant};

use muster_controller::guardrails::Guardrails;
use muster_proto::v1::worker_service_client::WorkerServiceClient;
use muster_proto::v1::{
    CampaignState, CompleteTaskRequest, DiscoveredInstance, Lease, LeaseOutcome, LeaseTaskRequest, LeaseTaskResponse,
    PingStatus, Platform, RateControl, RenewLeaseRequest, ReportTargetsRequest, TaskKind, TaskRef,
};
use muster_tests::client::{get, script_spec, submit, wait_for};
use muster_tests::fleets;
use muster_tests::stack::{Options, Stack};
use tonic::transport::Channel;

const EAST: &str = "us-east-1";
const WEST: &str = "eu-west-1";

/// The test as the only worker: takes TaskRefs off the queue and leases them.
struct FakeWorker<'a> {
    stack: &'a Stack,
    sqs: aws_sdk_sqs::Client,
    api: WorkerServiceClient<Channel>,
}

impl<'a> FakeWorker<'a> {
    fn new(stack: &'a Stack) -> Self {
        Self {
            stack,
            sqs: aws_sdk_sqs::Client::new(&stack.sb.hub_config(EAST)),
            api: Self::client(stack, "test-worker"),
        }
    }

    /// A client holding worker `name`'s own certificate.
    fn client(stack: &Stack, name: &str) -> WorkerServiceClient<Channel> {
        WorkerServiceClient::new(
            stack
                .creds
                .worker_endpoint(stack.controller.worker_addr.port(), name)
                .connect_lazy(),
        )
    }

    /// The next TaskRef on the queue (deleted), or None within `within`.
    async fn next_ref(&self, within: Duration) -> Option<TaskRef> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let got = self
                .sqs
                .receive_message()
                .queue_url(&self.stack.fleet.queue_url)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("ReceiveMessage");
            if let Some(message) = got.messages.unwrap_or_default().into_iter().next() {
                self.sqs
                    .delete_message()
                    .queue_url(&self.stack.fleet.queue_url)
                    .receipt_handle(message.receipt_handle().expect("a receipt handle"))
                    .send()
                    .await
                    .expect("DeleteMessage");
                return Some(muster_proto::decode_task_ref(message.body().expect("a body")).expect("a TaskRef"));
            }
        }
        None
    }

    async fn lease(&mut self, task: TaskRef) -> Lease {
        let answer = self
            .api
            .lease_task(LeaseTaskRequest {
                protocol: muster_proto::WORKER_PROTOCOL,
                task: Some(task),
                worker_id: "test-worker".into(),
                capacity: 0,
                ..Default::default()
            })
            .await
            .expect("LeaseTask")
            .into_inner();
        assert_eq!(answer.outcome, LeaseOutcome::Granted as i32, "{}", answer.detail);
        answer.lease.expect("a lease")
    }

    /// Asks to lease the next task on the queue as `worker_id` with room for
    /// `capacity` more; the answer, whatever it is.
    async fn lease_next_as(&mut self, worker_id: &str, capacity: u32) -> LeaseTaskResponse {
        let task = self
            .next_ref(Duration::from_secs(20))
            .await
            .expect("a task on the queue");
        Self::client(self.stack, worker_id)
            .lease_task(LeaseTaskRequest {
                protocol: muster_proto::WORKER_PROTOCOL,
                task: Some(task),
                worker_id: worker_id.into(),
                capacity,
                ..Default::default()
            })
            .await
            .expect("LeaseTask")
            .into_inner()
    }

    /// Leases the next `n` tasks on the queue, all of `kind`.
    async fn lease_next(&mut self, n: usize, kind: TaskKind) -> Vec<Lease> {
        let mut leases = Vec::new();
        for _ in 0..n {
            let task = self
                .next_ref(Duration::from_secs(20))
                .await
                .unwrap_or_else(|| panic!("a {kind:?} task on the queue"));
            let lease = self.lease(task).await;
            assert_eq!(lease.task.as_ref().expect("a task").kind, kind as i32);
            leases.push(lease);
        }
        leases
    }

    /// Reports every instance of the discover lease's region, then completes
    /// it offering `capacity` slots; returns the leases handed on.
    async fn discover(&mut self, lease: &Lease, capacity: u32) -> Vec<Lease> {
        let task = lease.task.as_ref().expect("a task");
        let instances: Vec<DiscoveredInstance> = self
            .stack
            .fleet
            .instances()
            .filter(|(account, region, _)| account.id == task.account_id && *region == task.region)
            .map(|(_, _, instance)| DiscoveredInstance {
                instance_id: instance.id.clone(),
                platform: Platform::Linux as i32,
                ping_status: PingStatus::Online as i32,
                ..Default::default()
            })
            .collect();
        self.api
            .report_targets(ReportTargetsRequest {
                task_id: task.task_id.clone(),
                lease_id: lease.lease_id,
                instances,
            })
            .await
            .expect("ReportTargets");
        self.api
            .complete_task(CompleteTaskRequest {
                protocol: muster_proto::WORKER_PROTOCOL,
                task_id: task.task_id.clone(),
                lease_id: lease.lease_id,
                capacity,
            })
            .await
            .expect("CompleteTask")
            .into_inner()
            .next
    }
}

/// One account in us-east-1 and eu-west-1, four instances each, and no
/// worker but the test.
async fn two_regions(options: Options) -> Stack {
    Stack::start(
        &fleets::grid(1, &[EAST, WEST], 4, 0.1),
        Options { workers: 0, ..options },
    )
    .await
}

/// Leases the campaign's two Discover tasks: (us-east-1, eu-west-1).
async fn lease_discovers(worker: &mut FakeWorker<'_>) -> (Lease, Lease) {
    let mut discovers = worker.lease_next(2, TaskKind::Discover).await;
    discovers.sort_by(|a, b| region_of(b).cmp(region_of(a)));
    let west = discovers.pop().expect("two");
    let east = discovers.pop().expect("two");
    assert_eq!((region_of(&east), region_of(&west)), (EAST, WEST));
    (east, west)
}

fn region_of(lease: &Lease) -> &str {
    &lease.task.as_ref().expect("a task").region
}

fn spec_at(stack: &Stack, concurrency: &str, batch_size: u32) -> muster_proto::v1::CampaignSpec {
    let mut spec = script_spec(&[stack.account("a000")], &[EAST, WEST], &["true"], &[]);
    spec.rate = Some(RateControl {
        max_concurrency: concurrency.into(),
        max_errors: String::new(),
        batch_size,
        api_calls_per_second: 10.0,
    });
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovered_scope_starts_while_another_is_still_listed_within_the_final_limit() {
    let stack = two_regions(Options::default()).await;
    let mut client = stack.client.clone();
    let mut worker = FakeWorker::new(&stack);
    // 50% of the 8 targets the campaign will have is 4 at once; batches of 2.
    let id = submit(&mut client, spec_at(&stack, "50%", 2)).await;
    let (east, west) = lease_discovers(&mut worker).await;

    // us-east-1 is listed; eu-west-1 is still being listed.
    assert!(
        worker.discover(&east, 0).await.is_empty(),
        "nothing handed to a worker without room"
    );
    let first = worker.lease_next(1, TaskKind::Execute).await;
    let task = first[0].task.as_ref().expect("a task");
    assert_eq!(task.region, EAST, "only the discovered scope starts");
    assert_eq!(
        task.execute.as_ref().expect("an execute spec").instance_ids.len(),
        2,
        "50% of the 4 targets known so far: one whole batch"
    );
    let campaign = get(&mut client, &id).await;
    assert_eq!(
        campaign.state(),
        CampaignState::Discovering,
        "{}",
        campaign.state_reason
    );
    assert_eq!(
        campaign.concurrency_limit, 2,
        "the limit against the targets found so far"
    );
    let counters = campaign.counters.expect("counters");
    assert_eq!((counters.queued, counters.pending), (2, 2), "{counters:?}");
    assert_eq!(
        worker.next_ref(Duration::from_secs(2)).await,
        None,
        "nothing beyond the limit is released"
    );

    // Once eu-west-1 is listed the campaign knows all 8: 4 at once.
    worker.discover(&west, 0).await;
    let campaign = wait_for(&mut client, &id, Duration::from_secs(20), "running", |c| {
        c.state() == CampaignState::Running
    })
    .await;
    assert_eq!(campaign.concurrency_limit, 4);
    let more = worker.lease_next(1, TaskKind::Execute).await;
    let released = 2 + more[0]
        .task
        .as_ref()
        .and_then(|t| t.execute.as_ref())
        .map_or(0, |e| e.instance_ids.len());
    assert_eq!(released, 4, "the final limit, and no more");
    let counters = get(&mut client, &id).await.counters.expect("counters");
    assert_eq!(counters.queued + counters.running, 4, "{counters:?}");
    assert_eq!(counters.pending, 4, "{counters:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_guardrail_holds_every_scope_until_the_count_is_known() {
    let stack = two_regions(Options {
        guardrails: |_| Guardrails {
            confirm_above_targets: Some(100),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut client = stack.client.clone();
    let mut worker = FakeWorker::new(&stack);
    let id = submit(&mut client, spec_at(&stack, "100%", 50)).await;
    let (east, west) = lease_discovers(&mut worker).await;
    assert!(worker.discover(&east, 4).await.is_empty(), "held by the guardrail");
    // The guardrail can only judge the whole count: nothing may start yet.
    assert_eq!(worker.next_ref(Duration::from_secs(3)).await, None);
    let counters = get(&mut client, &id).await.counters.expect("counters");
    assert_eq!((counters.pending, counters.queued), (4, 0), "{counters:?}");

    worker.discover(&west, 0).await;
    let both = worker.lease_next(2, TaskKind::Execute).await;
    let sent: usize = both
        .iter()
        .filter_map(|l| l.task.as_ref().and_then(|t| t.execute.as_ref()))
        .map(|e| e.instance_ids.len())
        .sum();
    assert_eq!(sent, 8, "8 targets are under the guardrail, so all run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scopes_first_batches_go_to_the_worker_that_discovered_it_as_far_as_it_has_room() {
    let stack = two_regions(Options::default()).await;
    let mut client = stack.client.clone();
    let mut worker = FakeWorker::new(&stack);
    // Batches of 2: each scope's 4 targets make two batches.
    let id = submit(&mut client, spec_at(&stack, "100%", 2)).await;
    let (east, _west) = lease_discovers(&mut worker).await;

    // Room for one: one batch of us-east-1 comes with the answer.
    let handed = worker.discover(&east, 1).await;
    assert_eq!(handed.len(), 1, "as many as the worker has room for");
    let lease = &handed[0];
    let task = lease.task.as_ref().expect("a task");
    assert_eq!((task.kind, task.region.as_str()), (TaskKind::Execute as i32, EAST));
    assert_eq!(task.execute.as_ref().expect("an execute spec").instance_ids.len(), 2);
    // It is a lease like any other: renewable, and nobody else can take it.
    worker
        .api
        .renew_lease(RenewLeaseRequest {
            task_id: task.task_id.clone(),
            lease_id: lease.lease_id,
        })
        .await
        .expect("the handed-on lease renews");
    let elsewhere = FakeWorker::client(&stack, "another-worker")
        .lease_task(LeaseTaskRequest {
            protocol: muster_proto::WORKER_PROTOCOL,
            task: Some(TaskRef {
                campaign_id: id.clone(),
                task_id: task.task_id.clone(),
                attempt: task.attempt,
            }),
            worker_id: "another-worker".into(),
            capacity: 0,
            ..Default::default()
        })
        .await
        .expect("LeaseTask")
        .into_inner();
    assert_eq!(elsewhere.outcome, LeaseOutcome::LeasedElsewhere as i32);

    // The scope's other batch goes through the queue, and the handed-on one
    // never does.
    let queued = worker.lease_next(1, TaskKind::Execute).await;
    let other = queued[0].task.as_ref().expect("a task");
    assert_eq!(other.region, EAST);
    assert_ne!(other.task_id, task.task_id);
    assert_eq!(
        worker.next_ref(Duration::from_secs(2)).await,
        None,
        "nothing else is queued"
    );
    let counters = get(&mut client, &id).await.counters.expect("counters");
    assert_eq!(
        (counters.queued, counters.pending),
        (4, 0),
        "eu-west-1 is not listed yet: {counters:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discover_lease_brings_the_same_accounts_other_regions_as_far_as_the_worker_has_room() {
    const THIRD: &str = "us-west-2";
    let regions = [EAST, WEST, THIRD];
    let stack = Stack::start(
        &fleets::grid(2, &regions, 1, 0.1),
        Options {
            workers: 0,
            ..Default::default()
        },
    )
    .await;
    let mut client = stack.client.clone();
    let mut worker = FakeWorker::new(&stack);
    let accounts = [stack.account("a000"), stack.account("a001")];
    submit(&mut client, script_spec(&accounts, &regions, &["true"], &[])).await;

    // Room for eight: the account's two other regions come with the lease.
    let answer = worker.lease_next_as("worker-1", 8).await;
    assert_eq!(answer.outcome, LeaseOutcome::Granted as i32, "{}", answer.detail);
    let task = answer.lease.as_ref().and_then(|l| l.task.as_ref()).expect("a task");
    let account = task.account_id.clone();
    let mut siblings: Vec<&str> = answer
        .same_account
        .iter()
        .map(|l| {
            let sibling = l.task.as_ref().expect("a task");
            assert_eq!(sibling.kind, TaskKind::Discover as i32);
            assert_eq!(sibling.account_id, account, "only the same account");
            sibling.region.as_str()
        })
        .collect();
    siblings.sort_unstable();
    let mut others: Vec<&str> = regions.iter().copied().filter(|r| *r != task.region).collect();
    others.sort_unstable();
    assert_eq!(siblings, others, "every other region of the account, once");
    // They are leases like any other, held by worker-1 and only by it.
    let mut holder = FakeWorker::client(&stack, "worker-1");
    for sibling in &answer.same_account {
        holder
            .renew_lease(RenewLeaseRequest {
                task_id: sibling.task.as_ref().expect("a task").task_id.clone(),
                lease_id: sibling.lease_id,
            })
            .await
            .expect("a sibling lease renews");
    }

    // Another worker with room for one: the first account's messages are
    // leased elsewhere; of the second account's three it leases two
    // (one of them with one sibling), and its last message is the sibling's.
    let (mut granted, mut elsewhere, mut brought) = (0, 0, 0);
    for _ in 0..5 {
        let answer = worker.lease_next_as("worker-2", 1).await;
        match LeaseOutcome::try_from(answer.outcome) {
            Ok(LeaseOutcome::Granted) => {
                let task = answer.lease.as_ref().and_then(|l| l.task.as_ref()).expect("a task");
                assert_ne!(task.account_id, account, "{}", answer.detail);
                granted += 1;
                brought += answer.same_account.len();
            }
            Ok(LeaseOutcome::LeasedElsewhere) => elsewhere += 1,
            other => panic!("unexpected outcome {other:?}: {}", answer.detail),
        }
    }
    assert_eq!((granted, brought, elsewhere), (2, 1, 3));
    assert_eq!(
        worker.next_ref(Duration::from_secs(2)).await,
        None,
        "six messages in all"
    );
}
