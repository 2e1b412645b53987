//! The worker API as a misbehaving worker meets it: fencing, duplicates,
//! and leases bound to the worker that holds them.

use super::*;

/// The next task reference on the queue, taken off it.
async fn next_task_ref(stack: &Stack) -> TaskRef {
    let sqs = aws_sdk_sqs::Client::new(&stack.sb.hub_config(EAST));
    loop {
        let got = sqs
            .receive_message()
            .queue_url(&stack.fleet.queue_url)
            .wait_time_seconds(5)
            .send()
            .await
            .unwrap();
        if let Some(message) = got.messages.unwrap_or_default().into_iter().next() {
            sqs.delete_message()
                .queue_url(&stack.fleet.queue_url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
            return muster_proto::decode_task_ref(message.body().unwrap()).unwrap();
        }
    }
}

/// Three instances in one scope, a campaign over them, and no worker: the
/// test plays the workers.
async fn three_instances_submitted() -> (Stack, String) {
    let stack = without_workers(&fleets::uniform(3, 0, 0.1)).await;
    let mut client = stack.client.clone();
    let id = submit(
        &mut client,
        script_spec(&[stack.account("only")], &[EAST], &["true"], &[]),
    )
    .await;
    (stack, id)
}

/// LeaseTask for `task` as `worker`, asking for nothing more.
fn lease_request(task: TaskRef, worker: &str) -> LeaseTaskRequest {
    LeaseTaskRequest {
        protocol: muster_proto::WORKER_PROTOCOL,
        task: Some(task),
        worker_id: worker.into(),
        capacity: 0,
        request_id: String::new(),
    }
}

/// The fleet's instances, as a discovery reports them: online Linux.
/// Leases `task` as `worker` through `client`, which must be granted.
async fn granted_lease(
    client: &mut WorkerServiceClient<tonic::transport::Channel>,
    task: &TaskRef,
    worker: &str,
) -> muster_proto::v1::Lease {
    client
        .lease_task(lease_request(task.clone(), worker))
        .await
        .unwrap()
        .into_inner()
        .lease
        .unwrap_or_else(|| panic!("{worker} is granted a lease on {}", task.task_id))
}

fn discovered(stack: &Stack) -> Vec<DiscoveredInstance> {
    stack
        .fleet
        .instances()
        .map(|(_, _, i)| DiscoveredInstance {
            instance_id: i.id.clone(),
            platform: Platform::Linux as i32,
            ping_status: PingStatus::Online as i32,
            ..Default::default()
        })
        .collect()
}

/// A WorkerService client holding worker `name`'s own certificate.
fn worker_client(stack: &Stack, name: &str) -> WorkerServiceClient<tonic::transport::Channel> {
    WorkerServiceClient::new(
        stack
            .creds
            .worker_endpoint(stack.controller.worker_addr.port(), name)
            .connect_lazy(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_api_fences_leases_and_counts_duplicates_once() {
    let (stack, id) = three_instances_submitted().await;
    let mut client = stack.client.clone();
    let mut workers = worker_client(&stack, "a");
    let next_ref = || next_task_ref(&stack);
    let lease = lease_request;

    // Discover: lease, a second lease is refused, report, complete.
    let discover = next_ref().await;
    let granted = workers
        .lease_task(lease(discover.clone(), "a"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(granted.outcome, LeaseOutcome::Granted as i32);
    let lease_a = granted.lease.unwrap();
    assert_eq!(lease_a.task.as_ref().unwrap().kind, TaskKind::Discover as i32);
    let other = worker_client(&stack, "b")
        .lease_task(lease(discover.clone(), "b"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(other.outcome, LeaseOutcome::LeasedElsewhere as i32);
    let status = workers
        .renew_lease(RenewLeaseRequest {
            task_id: discover.task_id.clone(),
            lease_id: lease_a.lease_id + 1,
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "a lease id that was never granted is refused: {status:?}"
    );
    let ids: Vec<String> = stack.fleet.instances().map(|(_, _, i)| i.id.clone()).collect();
    let found: Vec<DiscoveredInstance> = ids
        .iter()
        .map(|id| DiscoveredInstance {
            instance_id: id.clone(),
            platform: Platform::Linux as i32,
            ping_status: PingStatus::Online as i32,
            ..Default::default()
        })
        .collect();
    for _ in 0..2 {
        workers
            .report_targets(ReportTargetsRequest {
                task_id: discover.task_id.clone(),
                lease_id: lease_a.lease_id,
                instances: found.clone(),
            })
            .await
            .unwrap();
    }
    workers
        .complete_task(muster_proto::v1::CompleteTaskRequest {
            protocol: muster_proto::WORKER_PROTOCOL,
            task_id: discover.task_id.clone(),
            lease_id: lease_a.lease_id,
            // This test takes its Execute task from the queue.
            capacity: 0,
        })
        .await
        .unwrap();
    let finished = worker_client(&stack, "c")
        .lease_task(lease(discover.clone(), "c"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(finished.outcome, LeaseOutcome::Finished as i32);
    assert_eq!(
        get(&mut client, &id).await.counters.unwrap().total,
        3,
        "targets reported twice are recorded once"
    );

    // Execute: dispatch, results twice, counted once.
    let execute = next_ref().await;
    let granted = granted_lease(&mut workers, &execute, "a").await;
    let spec = granted.task.unwrap().execute.unwrap();
    assert_eq!(spec.instance_ids.len(), 3);
    assert_eq!(spec.comment, format!("muster task {}", execute.task_id));
    workers
        .report_dispatch(ReportDispatchRequest {
            task_id: execute.task_id.clone(),
            lease_id: granted.lease_id,
            command_id: "c0ffee00-0000-0000-0000-000000000000".into(),
            instance_ids: spec.instance_ids.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    // The first instance's output is more than the campaign keeps (8
    // KiB): the store clips it. The second's is a patch log, which goes
    // compressed as a worker sends it to a controller that takes that.
    assert!(
        granted.takes_compressed_steps,
        "this controller takes compressed output"
    );
    let log: String = (0..80)
        .map(|i| format!("Installed: kernel-livepatch-6.1.{i}-1.amzn2023 x86_64\n"))
        .collect();
    let step = |stdout: String| StepOutput {
        name: "aws:runShellScript".into(),
        stdout,
        ..Default::default()
    };
    let results: Vec<TargetResult> = spec
        .instance_ids
        .iter()
        .enumerate()
        .map(|(n, i)| {
            let mut result = TargetResult {
                instance_id: i.clone(),
                status: TargetStatus::Success as i32,
                exit_code: Some(0),
                reason: "exit code 0".into(),
                steps: match n {
                    0 => vec![step("x".repeat(10_000))],
                    1 => vec![step(log.clone()), step("done\n".into())],
                    _ => vec![step("ok".into())],
                },
                ..Default::default()
            };
            muster_proto::compress_result(&mut result);
            result
        })
        .collect();
    assert!(
        results[..2]
            .iter()
            .all(|r| r.steps.is_empty() && !r.compressed_steps.is_empty())
            && !results[2].steps.is_empty(),
        "long output goes compressed, a line as it is"
    );
    // A report larger than the bound both sides know is refused whole,
    // naming the rule, and so is compressed output that comes with plain
    // steps too or would expand past what a report may carry plain. Nothing
    // of such a report is recorded.
    let mut huge = results.clone();
    huge[0].compressed_steps = Vec::new();
    huge[0].steps = vec![step("x".repeat(muster_proto::MAX_REPORT_BYTES))];
    let mut both = results.clone();
    both[1].steps = vec![step("plain too".into())];
    let mut bomb = results.clone();
    bomb[1].compressed_steps =
        muster_proto::compress_steps(&[step("y".repeat(muster_proto::MAX_REPORT_BYTES))]).unwrap();
    assert!(bomb[1].compressed_steps.len() < 100_000, "it is small on the wire");
    for (refused_report, rule) in [
        (huge, "results: this report is"),
        (
            both,
            "results[1].compressed_steps: sent with steps; send the one or the other",
        ),
        (bomb, "results[1].compressed_steps: the frame holds 167772"),
    ] {
        let refused = workers
            .report_results(ReportResultsRequest {
                task_id: execute.task_id.clone(),
                lease_id: granted.lease_id,
                results: refused_report,
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().starts_with(rule), "{refused:?}");
    }
    let first = workers
        .report_results(ReportResultsRequest {
            task_id: execute.task_id.clone(),
            lease_id: granted.lease_id,
            results: results.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let second = workers
        .report_results(ReportResultsRequest {
            task_id: execute.task_id.clone(),
            lease_id: granted.lease_id,
            results,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((first.accepted, first.duplicates), (3, 0));
    assert_eq!((second.accepted, second.duplicates), (0, 3));
    let unknown = workers
        .report_results(ReportResultsRequest {
            task_id: uuid::Uuid::new_v4().to_string(),
            lease_id: 1,
            results: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let unleased = workers
        .report_results(ReportResultsRequest {
            task_id: execute.task_id.clone(),
            lease_id: granted.lease_id ^ 1,
            results: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(unleased.code(), Code::PermissionDenied, "{unleased:?}");
    assert_eq!(
        unleased.message(),
        format!(
            "lease_id: {} is not a lease of task {}",
            granted.lease_id ^ 1,
            execute.task_id
        )
    );
    workers
        .complete_task(muster_proto::v1::CompleteTaskRequest {
            protocol: muster_proto::WORKER_PROTOCOL,
            task_id: execute.task_id.clone(),
            lease_id: granted.lease_id,
            capacity: 0,
        })
        .await
        .unwrap();
    let campaign = wait_done(&mut client, &id, Duration::from_secs(30)).await;
    assert_eq!(campaign.state, CampaignState::Succeeded as i32);
    assert_eq!(campaign.counters.unwrap().success, 3);
    let stored = targets(&mut client, &id, true).await;
    let loud = stored
        .iter()
        .find(|t| t.instance_id == spec.instance_ids[0])
        .expect("the loud instance");
    assert_eq!(loud.steps[0].stdout.len(), 8 * 1024, "clipped to keep_bytes");
    assert!(loud.steps[0].stdout_truncated, "and marked so");
    let patched = stored
        .iter()
        .find(|t| t.instance_id == spec.instance_ids[1])
        .expect("the patched instance");
    assert_eq!(
        patched.steps,
        [step(log.clone()), step("done\n".into())],
        "compressed output reads back as it was sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_bound_to_the_lease_holder_and_to_the_task_scope() {
    let (stack, id) = three_instances_submitted().await;
    let mut client = stack.client.clone();
    let (mut a, mut b) = (worker_client(&stack, "a"), worker_client(&stack, "b"));
    let next_ref = || next_task_ref(&stack);
    let held_by_a = |lease_id: u64, task_id: &str| {
        format!(
            "lease_id: lease {lease_id} of task {task_id} is held by worker a, not by the caller b; only a lease's \
             holder may use it"
        )
    };

    // Discovery under a's lease: b can neither report nor end it.
    let discover = next_ref().await;
    let lease_a = granted_lease(&mut a, &discover, "a").await;
    let found = discovered(&stack);
    let status = b
        .report_targets(ReportTargetsRequest {
            task_id: discover.task_id.clone(),
            lease_id: lease_a.lease_id,
            instances: found.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), held_by_a(lease_a.lease_id, &discover.task_id));
    let renew = RenewLeaseRequest {
        task_id: discover.task_id.clone(),
        lease_id: lease_a.lease_id,
    };
    let status = b.renew_lease(renew.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let complete = muster_proto::v1::CompleteTaskRequest {
        protocol: muster_proto::WORKER_PROTOCOL,
        task_id: discover.task_id.clone(),
        lease_id: lease_a.lease_id,
        capacity: 0,
    };
    let status = b.complete_task(complete.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = b
        .fail_task(muster_proto::v1::FailTaskRequest {
            task_id: discover.task_id.clone(),
            lease_id: lease_a.lease_id,
            reason: "forged".into(),
            retryable: false,
            handed_back: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        get(&mut client, &id).await.counters.unwrap().total,
        0,
        "nothing was recorded"
    );
    // a's lease is untouched by all that: it renews, reports and completes.
    a.renew_lease(renew).await.expect("a still holds its lease");
    a.report_targets(ReportTargetsRequest {
        task_id: discover.task_id.clone(),
        lease_id: lease_a.lease_id,
        instances: found.clone(),
    })
    .await
    .unwrap();
    a.complete_task(complete).await.unwrap();
    // A finished discovery takes no more instances, even from its holder.
    let late = a
        .report_targets(ReportTargetsRequest {
            task_id: discover.task_id.clone(),
            lease_id: lease_a.lease_id,
            instances: vec![DiscoveredInstance {
                instance_id: "i-0fedcba9876543210".into(),
                platform: Platform::Linux as i32,
                ping_status: PingStatus::Online as i32,
                ..Default::default()
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition, "{late:?}");
    assert_eq!(get(&mut client, &id).await.counters.unwrap().total, 3);

    // Execution under a's lease: b forges neither a dispatch nor a result,
    // and a reports only on its task's own instances.
    let execute = next_ref().await;
    let lease_a = granted_lease(&mut a, &execute, "a").await;
    let ids = lease_a.task.clone().unwrap().execute.unwrap().instance_ids;
    let outsider = "i-0123456789abcdef0".to_owned();
    let dispatch = |instance_ids: Vec<String>| ReportDispatchRequest {
        task_id: execute.task_id.clone(),
        lease_id: lease_a.lease_id,
        command_id: "c0ffee00-0000-0000-0000-000000000000".into(),
        instance_ids,
        ..Default::default()
    };
    let forged = |instance_ids: &[String]| ReportResultsRequest {
        task_id: execute.task_id.clone(),
        lease_id: lease_a.lease_id,
        results: instance_ids
            .iter()
            .map(|i| TargetResult {
                instance_id: i.clone(),
                status: TargetStatus::Success as i32,
                exit_code: Some(0),
                reason: "forged".into(),
                ..Default::default()
            })
            .collect(),
    };
    let status = b.report_dispatch(dispatch(ids.clone())).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), held_by_a(lease_a.lease_id, &execute.task_id));
    let status = b.report_results(forged(&ids)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let mut with_outsider = ids.clone();
    with_outsider.push(outsider.clone());
    let status = a.report_dispatch(dispatch(with_outsider.clone())).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        format!(
            "instance_ids[{}]: {outsider} is not a target of task {}; a lease reports only on its own task's instances",
            ids.len(),
            execute.task_id
        )
    );
    let status = a.report_results(forged(&with_outsider)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().starts_with(&format!(
            "results[{}].instance_id: {outsider} is not a target of task",
            ids.len()
        )),
        "{status:?}"
    );
    // Every refusal changed nothing: the targets still wait, unsent.
    for target in targets(&mut client, &id, false).await {
        assert_eq!(target.status, TargetStatus::Queued as i32, "{target:?}");
        assert!(target.command_id.is_empty() && target.reason.is_empty(), "{target:?}");
    }
    // And each was counted by its rule.
    let metrics = muster_controller::metrics::render(&stack.controller.controller).await;
    for (method, rule, count) in [
        ("ReportTargets", "lease_holder", 1),
        ("RenewLease", "lease_holder", 1),
        ("CompleteTask", "lease_holder", 1),
        ("FailTask", "lease_holder", 1),
        ("ReportDispatch", "lease_holder", 1),
        ("ReportResults", "lease_holder", 1),
        ("ReportDispatch", "task_scope", 1),
        ("ReportResults", "task_scope", 1),
    ] {
        let line =
            format!("muster_controller_worker_calls_refused_total{{method=\"{method}\",rule=\"{rule}\"}} {count}");
        assert!(metrics.contains(&line), "no '{line}' in\n{metrics}");
    }

    // The holder's own reports run the campaign to its end.
    a.report_dispatch(dispatch(ids.clone())).await.unwrap();
    let mut real = forged(&ids);
    for result in &mut real.results {
        result.reason = "exit code 0".into();
    }
    assert_eq!(a.report_results(real).await.unwrap().into_inner().accepted, 3);
    a.complete_task(muster_proto::v1::CompleteTaskRequest {
        protocol: muster_proto::WORKER_PROTOCOL,
        task_id: execute.task_id.clone(),
        lease_id: lease_a.lease_id,
        capacity: 0,
    })
    .await
    .unwrap();
    let campaign = wait_done(&mut client, &id, Duration::from_secs(30)).await;
    assert_eq!(campaign.state, CampaignState::Succeeded as i32);
    assert_eq!(campaign.counters.unwrap().success, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_or_completion_asked_again_is_answered_as_the_first_time() {
    // A worker whose answer was lost asks again with the same request: it
    // gets the same lease, not LEASED_ELSEWHERE (which would leave the lease
    // to expire and cost the task an attempt). Anyone else, or another ask,
    // is refused as before.
    let (stack, _id) = three_instances_submitted().await;
    let mut a = worker_client(&stack, "a");
    let discover = next_task_ref(&stack).await;
    let ask = |worker: &str, request_id: &str| LeaseTaskRequest {
        request_id: request_id.into(),
        ..lease_request(discover.clone(), worker)
    };
    let first = a.lease_task(ask("a", "r1")).await.unwrap().into_inner();
    assert_eq!(first.outcome, LeaseOutcome::Granted as i32);
    let lease = first.lease.unwrap();
    let again = a.lease_task(ask("a", "r1")).await.unwrap().into_inner();
    assert_eq!(again.outcome, LeaseOutcome::Granted as i32, "{again:?}");
    assert_eq!(again.lease.unwrap().lease_id, lease.lease_id, "the same lease");
    for (worker, request_id) in [("a", "r2"), ("a", "")] {
        let other = a.lease_task(ask(worker, request_id)).await.unwrap().into_inner();
        assert_eq!(
            other.outcome,
            LeaseOutcome::LeasedElsewhere as i32,
            "another ask ({request_id:?}) is refused"
        );
    }
    let b = worker_client(&stack, "b")
        .lease_task(ask("b", "r1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b.outcome, LeaseOutcome::LeasedElsewhere as i32, "another worker's ask");
    let long = a.lease_task(ask("a", &"r".repeat(65))).await.unwrap_err();
    assert_eq!(long.code(), Code::InvalidArgument);
    assert_eq!(long.message(), "request_id: at most 64 characters, got 65");

    // The completion hands the scope's batch on; asked again, it hands on
    // the same lease, and that lease renews.
    a.report_targets(ReportTargetsRequest {
        task_id: discover.task_id.clone(),
        lease_id: lease.lease_id,
        instances: discovered(&stack),
    })
    .await
    .unwrap();
    let complete = muster_proto::v1::CompleteTaskRequest {
        protocol: muster_proto::WORKER_PROTOCOL,
        task_id: discover.task_id.clone(),
        lease_id: lease.lease_id,
        capacity: 4,
    };
    let mut handed: Vec<Vec<u64>> = Vec::new();
    for _ in 0..2 {
        let answer = a.complete_task(complete.clone()).await.unwrap().into_inner();
        handed.push(answer.next.iter().map(|l| l.lease_id).collect());
    }
    assert_eq!(handed[0].len(), 1, "the scope's one batch is handed on");
    assert_eq!(handed[1], handed[0], "the same leases, again");
    let execute = a
        .complete_task(complete.clone())
        .await
        .unwrap()
        .into_inner()
        .next
        .remove(0);
    a.renew_lease(RenewLeaseRequest {
        task_id: execute.task.unwrap().task_id,
        lease_id: execute.lease_id,
    })
    .await
    .expect("the handed-on lease is held");
    let stranger = worker_client(&stack, "b").complete_task(complete).await.unwrap_err();
    assert_eq!(
        stranger.code(),
        Code::PermissionDenied,
        "only the holder asks again: {stranger:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_asked_again_is_answered_as_the_first_time_and_counted_once() {
    // A worker whose FailTask answer was lost asks again: it is told what
    // the first ask decided (queued again, or failed for good), not refused
    // as a stale lease, and the task spends one attempt, not two.
    let (stack, id) = three_instances_submitted().await;
    let mut client = stack.client.clone();
    let mut a = worker_client(&stack, "a");
    let fail = |task: &TaskRef, lease_id: u64, retryable: bool| muster_proto::v1::FailTaskRequest {
        task_id: task.task_id.clone(),
        lease_id,
        reason: if retryable { "throttled" } else { "AccessDenied" }.into(),
        retryable,
        handed_back: false,
    };
    // Leases the queue's next task and fails it twice: what each ask is told.
    let mut lease_and_fail_twice = async |retryable: bool| {
        let task = next_task_ref(&stack).await;
        let lease = granted_lease(&mut a, &task, "a").await;
        let mut told = Vec::new();
        for _ in 0..2 {
            told.push(
                a.fail_task(fail(&task, lease.lease_id, retryable))
                    .await
                    .unwrap()
                    .into_inner()
                    .will_retry,
            );
        }
        (task, lease.lease_id, told)
    };
    let (first, lease_id, told) = lease_and_fail_twice(true).await;
    assert_eq!(told, [true, true], "queued again, and told so again");
    let stranger = worker_client(&stack, "b")
        .fail_task(fail(&first, lease_id, true))
        .await
        .unwrap_err();
    assert_eq!(stranger.code(), Code::PermissionDenied, "{stranger:?}");

    // The second attempt, failed for good, is told so twice.
    let (second, _, told) = lease_and_fail_twice(false).await;
    assert_eq!(second.attempt, 2, "one attempt spent: {second:?}");
    assert_eq!(told, [false, false], "failed for good, and told so again");
    let campaign = wait_done(&mut client, &id, Duration::from_secs(30)).await;
    assert_eq!(campaign.counters.unwrap().error, 1, "the scope's one ERROR target");
    let metrics = muster_controller::metrics::render(&stack.controller.controller).await;
    for retried in ["true", "false"] {
        let line = format!("muster_controller_tasks_failed_total{{retried=\"{retried}\"}} 1");
        assert!(
            metrics.contains(&line),
            "each failure counted once: no '{line}' in\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_older_than_the_protocol_is_leased_nothing_and_its_task_waits_for_another() {
    // A muster 0.1 worker sends no protocol (0). It knows nothing of command
    // sequences or of leases that may only cancel, so it would run a task
    // of this controller wrongly. It is refused, and the task stays for a
    // worker that speaks the protocol.
    let (stack, _id) = three_instances_submitted().await;
    let discover = next_task_ref(&stack).await;
    let refused = worker_client(&stack, "old")
        .lease_task(LeaseTaskRequest {
            protocol: 0,
            ..lease_request(discover.clone(), "old")
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(
        refused.message(),
        "protocol: worker 'old' speaks worker protocol 0, older than this controller's 1: upgrade the worker; \
         it is leased nothing, and the task's message goes back to the queue for a worker that speaks it"
    );
    let metrics = muster_controller::metrics::render(&stack.controller.controller).await;
    assert!(
        metrics.contains(r#"muster_controller_worker_calls_refused_total{method="LeaseTask",rule="protocol"} 1"#),
        "{metrics}"
    );

    // Nothing was granted: a current worker leases the task at once.
    let mut new = worker_client(&stack, "new");
    let granted = new
        .lease_task(lease_request(discover.clone(), "new"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(granted.outcome, LeaseOutcome::Granted as i32, "{granted:?}");
    let lease = granted.lease.unwrap();

    // A discovery completed by an older worker (one leased before its
    // controller was upgraded) hands it no batch: the batch is queued for
    // any worker that speaks the protocol.
    new.report_targets(ReportTargetsRequest {
        task_id: discover.task_id.clone(),
        lease_id: lease.lease_id,
        instances: discovered(&stack),
    })
    .await
    .unwrap();
    let answer = new
        .complete_task(muster_proto::v1::CompleteTaskRequest {
            task_id: discover.task_id.clone(),
            lease_id: lease.lease_id,
            capacity: 4,
            protocol: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(answer.next.is_empty(), "no batch handed to an older worker: {answer:?}");
    let execute = next_task_ref(&stack).await;
    assert_ne!(execute.task_id, discover.task_id, "the scope's batch, on the queue");
    let batch = new
        .lease_task(lease_request(execute, "new"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.outcome, LeaseOutcome::Granted as i32, "{batch:?}");
    assert_eq!(
        batch.lease.unwrap().task.unwrap().kind,
        TaskKind::Execute as i32,
        "the batch goes to a current worker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_await_commands_hears_a_cancel_of_a_campaign_it_names() {
    let (stack, id) = three_instances_submitted().await;
    let mut client = stack.client.clone();
    let workers = worker_client(&stack, "a");
    let ask = |campaign_ids: Vec<String>, wait_seconds: i64| AwaitCommandsRequest {
        command_ids: Vec::new(),
        wait: Some(prost_types::Duration {
            seconds: wait_seconds,
            nanos: 0,
        }),
        campaign_ids,
    };
    let now = workers
        .clone()
        .await_commands(ask(vec![id.clone(), "no-such-campaign".into()], 0))
        .await
        .unwrap()
        .into_inner();
    assert!(now.answers_campaigns, "{now:?}");
    assert!(now.cancelling_campaigns.is_empty(), "running: {now:?}");

    // A long poll, waiting when the cancel comes, answers with it (without
    // the cancel it would wait its 20 s and answer empty).
    let mut waiting = workers.clone();
    let asked = ask(vec![id.clone()], 20);
    let answer = tokio::spawn(async move { waiting.await_commands(asked).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    client
        .cancel_campaign(CancelCampaignRequest {
            campaign_id: id.clone(),
            reason: "change freeze".into(),
        })
        .await
        .unwrap();
    let heard = answer.await.unwrap().unwrap().into_inner();
    assert_eq!(heard.cancelling_campaigns, vec![id.clone()], "{heard:?}");

    // Asked again, it says so at once.
    let again = workers.clone().await_commands(ask(vec![id.clone()], 20)).await.unwrap();
    assert_eq!(again.get_ref().cancelling_campaigns, vec![id.clone()]);

    // Bad lists name the field and the rule.
    let too_many = workers
        .clone()
        .await_commands(ask((0..101).map(|n| format!("c{n}")).collect(), 0))
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), Code::InvalidArgument);
    assert_eq!(too_many.message(), "campaign_ids: at most 100 ids, got 101");
    let empty = workers
        .clone()
        .await_commands(ask(vec![String::new()], 0))
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(
        empty
            .message()
            .starts_with("campaign_ids: each id is 1 to 64 characters"),
        "{}",
        empty.message()
    );
}
