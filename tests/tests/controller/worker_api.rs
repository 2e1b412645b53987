//! The worker API as a misbehaving worker meets it: fencing and duplicates.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_api_fences_leases_and_counts_duplicates_once() {
    let stack = Stack::start(
        &fleets::uniform(3, 0, 0.1),
        Options {
            workers: 0,
            ..Default::default()
        },
    )
    .await;
    let mut client = stack.client.clone();
    let id = submit(
        &mut client,
        script_spec(&[stack.account("only")], &[EAST], &["true"], &[], "ext-uniform"),
    )
    .await;
    let mut workers = WorkerServiceClient::new(
        stack
            .creds
            .endpoint(stack.controller.worker_addr.port(), Some(&stack.creds.pki.worker))
            .connect_lazy(),
    );
    let sqs = aws_sdk_sqs::Client::new(&stack.sb.hub_config(EAST));
    let next_ref = || async {
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
    };
    let lease = |task: TaskRef, worker: &str| LeaseTaskRequest {
        task: Some(task),
        worker_id: worker.into(),
        capacity: 0,
    };

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
    let other = workers
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
    assert_eq!(status.code(), Code::FailedPrecondition, "a stale lease id is fenced");
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
            task_id: discover.task_id.clone(),
            lease_id: lease_a.lease_id,
            // This test takes its Execute task from the queue.
            capacity: 0,
        })
        .await
        .unwrap();
    let finished = workers
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
    let granted = workers
        .lease_task(lease(execute.clone(), "a"))
        .await
        .unwrap()
        .into_inner()
        .lease
        .unwrap();
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
    let results: Vec<TargetResult> = spec
        .instance_ids
        .iter()
        .map(|i| TargetResult {
            instance_id: i.clone(),
            status: TargetStatus::Success as i32,
            exit_code: Some(0),
            reason: "exit code 0".into(),
            steps: vec![StepOutput {
                name: "aws:runShellScript".into(),
                // More than the campaign keeps (8 KiB): the store clips it.
                stdout: if *i == spec.instance_ids[0] {
                    "x".repeat(10_000)
                } else {
                    "ok".into()
                },
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    // A report larger than the bound both sides know is refused whole,
    // naming the rule; nothing of it is recorded.
    let mut huge = results.clone();
    huge[0].steps[0].stdout = "x".repeat(muster_proto::MAX_REPORT_BYTES);
    let refused = workers
        .report_results(ReportResultsRequest {
            task_id: execute.task_id.clone(),
            lease_id: granted.lease_id,
            results: huge,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().starts_with("results: this report is"), "{refused:?}");
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
    workers
        .complete_task(muster_proto::v1::CompleteTaskRequest {
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
}
