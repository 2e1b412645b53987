//! What we ship is what we test: the IAM policies in `deploy/cloudformation`
//! grant exactly the AWS actions muster's code calls, no more and no less.

use std::collections::BTreeSet;
use std::path::PathBuf;

use muster_sim::cfn::{Param, Template, allowed_actions};

fn template(name: &str) -> Template {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/cloudformation")
        .join(name);
    Template::load(&path).expect("the template parses").with_params([
        ("HubAccountId".to_owned(), Param::Str("123456789012".into())),
        ("ExternalId".to_owned(), Param::Str("ext".into())),
        ("OutputBucketName".to_owned(), Param::Str("output".into())),
        ("OrganizationId".to_owned(), Param::Str("o-abcdefghij".into())),
        ("AWS::AccountId".to_owned(), Param::Str("222222222222".into())),
        ("AWS::Partition".to_owned(), Param::Str("aws".into())),
        ("AWS::Region".to_owned(), Param::Str("us-east-1".into())),
    ])
}

fn granted(template: &Template, role: &str) -> BTreeSet<String> {
    template
        .role(role)
        .expect("the role resolves")
        .policies
        .iter()
        .flat_map(|(_, document)| allowed_actions(document))
        .collect()
}

fn compare(what: &str, granted: &BTreeSet<String>, called: &BTreeSet<String>) {
    let missing: Vec<&String> = called.difference(granted).collect();
    let extra: Vec<&String> = granted.difference(called).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: the code calls actions the policy lacks: {missing:?}; the policy grants actions the code never calls: {extra:?}"
    );
}

#[test]
fn the_execution_role_allows_exactly_what_the_worker_calls_in_target_accounts() {
    let called: BTreeSet<String> = muster_worker::api::execution_role_actions().into_iter().collect();
    compare(
        "target-account.yaml ExecutionRole",
        &granted(&template("target-account.yaml"), "ExecutionRole"),
        &called,
    );
}

#[test]
fn the_hub_worker_role_allows_exactly_what_the_worker_calls_as_itself() {
    let called: BTreeSet<String> = muster_worker::api::worker_role_actions().into_iter().collect();
    compare(
        "hub.yaml WorkerTaskRole",
        &granted(&template("hub.yaml"), "WorkerTaskRole"),
        &called,
    );
}

#[test]
fn the_hub_controller_role_allows_exactly_what_the_controller_calls() {
    let called: BTreeSet<String> = muster_controller::AWS_ACTIONS
        .iter()
        .map(|a| a.to_ascii_lowercase())
        .collect();
    compare(
        "hub.yaml ControllerTaskRole",
        &granted(&template("hub.yaml"), "ControllerTaskRole"),
        &called,
    );
}

#[test]
fn the_worker_may_assume_only_the_execution_role() {
    let role = template("hub.yaml").role("WorkerTaskRole").unwrap();
    let statement = role.policies[0].1["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Action"] == "sts:AssumeRole")
        .cloned()
        .unwrap();
    assert_eq!(statement["Resource"], "arn:aws:iam::*:role/muster-execution");
    let trust = template("target-account.yaml")
        .role("ExecutionRole")
        .unwrap()
        .trust_policy;
    assert_eq!(
        trust["Statement"][0]["Principal"]["AWS"],
        "arn:aws:iam::123456789012:role/muster-worker"
    );
    assert_eq!(
        trust["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"],
        "ext"
    );
    // No session without a SourceIdentity naming who asked, and the worker
    // may set it and tag the session.
    assert_eq!(
        trust["Statement"][0]["Condition"]["StringLike"]["sts:SourceIdentity"],
        "*"
    );
    assert_eq!(
        trust["Statement"][1]["Action"],
        serde_json::json!(["sts:SetSourceIdentity", "sts:TagSession"])
    );
    assert_eq!(trust["Statement"][1]["Principal"], trust["Statement"][0]["Principal"]);
}

#[test]
fn ecs_reads_the_tls_secret_the_external_id_and_the_database_password_and_nothing_else() {
    let tls = "arn:aws:secretsmanager:us-east-1:222222222222:secret:muster-tls-AbCdEf";
    let external_id = "arn:aws:secretsmanager:us-east-1:222222222222:secret:muster-external-id-AbCdEf";
    let hub = template("hub.yaml").with_params([
        ("TlsSecretArn".to_owned(), Param::Str(tls.into())),
        ("ExternalIdSecretArn".to_owned(), Param::Str(external_id.into())),
    ]);
    assert_eq!(
        granted(&hub, "TaskExecutionRole"),
        BTreeSet::from(["secretsmanager:getsecretvalue".to_owned()]),
        "beyond the managed ECS execution policy"
    );
    let role = hub.role("TaskExecutionRole").expect("the role resolves");
    let resources: Vec<String> = role
        .policies
        .iter()
        .flat_map(|(_, document)| document["Statement"].as_array().cloned().unwrap_or_default())
        .flat_map(|statement| match &statement["Resource"] {
            serde_json::Value::Array(list) => list.clone(),
            one => vec![one.clone()],
        })
        .map(|r| r.as_str().map_or_else(|| r.to_string(), str::to_owned))
        .collect();
    assert_eq!(resources.len(), 3, "{resources:?}");
    assert_eq!(resources[..2], [tls, external_id], "{resources:?}");
    assert!(
        resources[2].contains("Database") && resources[2].contains("MasterUserSecret"),
        "the database's managed password secret: {resources:?}"
    );
}

/// Whether the execution role may call `action` on `resource`: some Allow
/// statement names both (IAM wildcards).
fn allows(template: &muster_sim::cfn::Template, action: &str, resource: &str) -> bool {
    let role = template.role("ExecutionRole").expect("the role resolves");
    let as_list = |value: &serde_json::Value| -> Vec<String> {
        match value {
            serde_json::Value::Array(list) => list.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
            one => one.as_str().map(str::to_owned).into_iter().collect(),
        }
    };
    role.policies
        .iter()
        .flat_map(|(_, document)| document["Statement"].as_array().cloned().unwrap_or_default())
        .filter(|s| s["Effect"] == "Allow")
        .any(|s| {
            as_list(&s["Action"]).iter().any(|a| a.eq_ignore_ascii_case(action))
                && as_list(&s["Resource"])
                    .iter()
                    .any(|r| muster_sim::policy::wildcard_match(r, resource))
        })
}

#[test]
fn the_execution_role_runs_aws_documents_by_name_and_customer_documents_only_when_listed() {
    let aws = "arn:aws:ssm:eu-west-1::document/AWS-RunPatchBaseline";
    let shared = "arn:aws:ssm:eu-west-1:111122223333:document/Acme-Patch-Linux";
    let foreign = "arn:aws:ssm:eu-west-1:999999999999:document/Acme-Patch-Linux";
    let plain = template("target-account.yaml");
    assert!(allows(&plain, "ssm:SendCommand", aws));
    assert!(allows(&plain, "ssm:GetDocument", aws));
    assert!(
        !allows(&plain, "ssm:SendCommand", shared),
        "no customer documents by default"
    );
    assert!(!allows(
        &plain,
        "ssm:SendCommand",
        "arn:aws:ssm:eu-west-1::document/AWS-ApplyAnsiblePlaybooks"
    ));

    let listed = template("target-account.yaml").with_params([(
        "CustomerDocuments".to_owned(),
        Param::List(vec![
            "arn:aws:ssm:*:111122223333:document/Acme-Patch-*".into(),
            "arn:aws:ssm:*:222222222222:document/Inventory".into(),
        ]),
    )]);
    for action in ["ssm:SendCommand", "ssm:GetDocument"] {
        assert!(allows(&listed, action, shared), "{action}");
        assert!(allows(
            &listed,
            action,
            "arn:aws:ssm:us-east-1:222222222222:document/Inventory"
        ));
        assert!(
            !allows(&listed, action, foreign),
            "{action}: only the owner account named"
        );
        assert!(allows(&listed, action, aws), "{action}: AWS documents still");
    }
}

#[test]
fn run_command_events_reach_the_hub_bus_through_a_role_that_may_only_put_there() {
    let hub_region = ("HubRegion".to_owned(), Param::Str("eu-west-1".into()));
    let role = template("target-account.yaml")
        .with_params([hub_region.clone()])
        .role("EventForwardRole")
        .unwrap();
    assert_eq!(
        role.trust_policy["Statement"][0]["Principal"]["Service"],
        "events.amazonaws.com"
    );
    let statements = role.policies[0].1["Statement"].as_array().unwrap().clone();
    assert_eq!(statements.len(), 1);
    assert_eq!(statements[0]["Action"], "events:PutEvents");
    let bus = "arn:aws:events:eu-west-1:123456789012:event-bus/muster-command-events";
    assert_eq!(statements[0]["Resource"], bus);

    // Every region's rule targets that bus with that role, and only final
    // statuses of whole commands go.
    let rule = template("target-events.yaml")
        .with_params([hub_region])
        .properties("CommandEventsRule", "AWS::Events::Rule")
        .unwrap();
    assert_eq!(rule["Targets"][0]["Arn"], bus);
    assert_eq!(
        rule["Targets"][0]["RoleArn"],
        "arn:aws:iam::222222222222:role/muster-event-forward"
    );
    assert_eq!(
        rule["EventPattern"]["detail-type"],
        serde_json::json!(["EC2 Command Status-change Notification"])
    );
    assert_eq!(
        rule["EventPattern"]["detail"]["status"],
        serde_json::json!(["Success", "Failed", "TimedOut", "Cancelled"])
    );

    // Without a hub region there is no forwarding role (muster polls). The
    // resolver does not evaluate resource conditions, so read the template.
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/cloudformation/target-account.yaml"),
    )
    .unwrap();
    assert!(text.contains("  EventForwardRole:\n    Type: AWS::IAM::Role\n    Condition: ForwardsEvents\n"));
}

#[test]
fn a_scaled_in_worker_hands_its_work_back_before_ecs_kills_it_and_the_fleet_tracks_the_controllers_signal() {
    let hub = template("hub.yaml").with_params(
        [
            ("OrganizationId", "o-abcd1234"),
            ("ControllerImage", "controller:1"),
            ("WorkerImage", "worker:1"),
            (
                "TlsSecretArn",
                "arn:aws:secretsmanager:us-east-1:222222222222:secret:tls",
            ),
            (
                "ExternalIdSecretArn",
                "arn:aws:secretsmanager:us-east-1:222222222222:secret:ext",
            ),
            ("ApiTokenHashes", "sha256:x"),
        ]
        .map(|(name, value)| (name.to_owned(), Param::Str(value.into()))),
    );
    let task = hub
        .properties("WorkerTaskDefinition", "AWS::ECS::TaskDefinition")
        .expect("the worker's task definition resolves");
    let container = &task["ContainerDefinitions"][0];
    let command: Vec<String> = container["Command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        .collect();
    let flag = |name: &str| -> u64 {
        let at = command
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("{name} in {command:?}"));
        command[at + 1].parse().unwrap()
    };
    let stop_timeout = container["StopTimeout"].as_u64().expect("a StopTimeout");
    let budget = muster_worker::stop_budget(std::time::Duration::from_secs(flag("--shutdown-grace")));
    assert!(
        budget.as_secs() <= stop_timeout,
        "ECS kills a stopping worker {stop_timeout}s after SIGTERM; it needs {}s to hand back what it holds",
        budget.as_secs()
    );
    assert!(stop_timeout <= 120, "Fargate allows at most 120 s");

    // The autoscaler aims below what one worker may hold.
    let max_tasks = flag("--max-tasks");
    let policy = hub
        .properties("WorkerScalingPolicy", "AWS::ApplicationAutoScaling::ScalingPolicy")
        .unwrap();
    let tracking = &policy["TargetTrackingScalingPolicyConfiguration"];
    let target: u64 = tracking["TargetValue"].as_str().unwrap().parse().unwrap();
    assert!(
        target < max_tasks,
        "target {target} tasks per worker, --max-tasks {max_tasks}"
    );
    // On the metric the controller publishes, in the namespace its role
    // may put into.
    let metric = &tracking["CustomizedMetricSpecification"];
    assert_eq!(
        (metric["Namespace"].as_str(), metric["MetricName"].as_str()),
        (Some("Muster"), Some("TaskDemandPerWorker"))
    );
    let controller = hub
        .properties("ControllerTaskDefinition", "AWS::ECS::TaskDefinition")
        .unwrap();
    let environment = controller["ContainerDefinitions"][0]["Environment"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        environment
            .iter()
            .any(|e| e["Name"] == "MUSTER_SCALING_NAMESPACE" && e["Value"] == "Muster"),
        "{environment:?}"
    );
    let role = hub.role("ControllerTaskRole").unwrap();
    let statement = role.policies[0].1["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Action"] == "cloudwatch:PutMetricData")
        .cloned()
        .unwrap();
    assert_eq!(statement["Condition"]["StringEquals"]["cloudwatch:namespace"], "Muster");
}
