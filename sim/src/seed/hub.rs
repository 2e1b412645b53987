//! The hub account: the worker and controller roles, the buckets, and the
//! task queue with its DLQ.

use anyhow::Context as _;
use aws_config::SdkConfig;

use super::err;
use super::fleet_file::FleetFile;

/// Roles people sign in with, named as IAM Identity Center names a
/// permission set's role in each account (`AWSReservedSSO_<set>_<hash>`):
/// the sandbox's stand-ins for an Organization's SSO, mapped to muster roles
/// by the sandbox's policy file.
pub const PEOPLE_ROLES: [(&str, &str); 2] = [
    ("PatchOperators", "AWSReservedSSO_PatchOperators_5f2c1a9b3e7d4c60"),
    ("ReadOnly", "AWSReservedSSO_ReadOnly_0b8e6d2f4a1c9e37"),
];

/// The hub's roles, by ARN.
pub(super) struct HubRoles {
    pub worker: String,
    pub controller: String,
    /// [`PEOPLE_ROLES`] by permission set.
    pub people: std::collections::BTreeMap<String, String>,
}

pub(super) async fn ensure_hub_roles(
    hub: &SdkConfig,
    hub_account: &str,
    fleet: &FleetFile,
) -> anyhow::Result<HubRoles> {
    let iam = aws_sdk_iam::Client::new(hub);
    // In AWS these are ECS task roles trusted by ecs-tasks.amazonaws.com (see
    // deploy/cloudformation/hub.yaml). In the sandbox the processes run with
    // the hub's static keys and assume them, so they trust the hub account.
    let trust = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{hub_account}:root")},
            "Action": "sts:AssumeRole"
        }]
    });
    let worker_policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": "sts:AssumeRole",
            "Resource": format!("arn:aws:iam::*:role/{}", fleet.execution_role)
        }]
    });
    let worker = ensure_role(
        &iam,
        &fleet.worker_role,
        &trust,
        &[("assume-execution-roles".into(), worker_policy)],
        3600,
    )
    .await?;
    let controller = ensure_role(&iam, &fleet.controller_role, &trust, &[], 3600).await?;
    let mut people = std::collections::BTreeMap::new();
    for (set, role) in PEOPLE_ROLES {
        people.insert(set.to_owned(), ensure_role(&iam, role, &trust, &[], 3600).await?);
    }
    Ok(HubRoles {
        worker,
        controller,
        people,
    })
}

pub(super) async fn ensure_role(
    iam: &aws_sdk_iam::Client,
    name: &str,
    trust: &serde_json::Value,
    policies: &[(String, serde_json::Value)],
    max_session: i32,
) -> anyhow::Result<String> {
    let arn = match iam.get_role().role_name(name).send().await {
        Ok(out) => {
            iam.update_assume_role_policy()
                .role_name(name)
                .policy_document(trust.to_string())
                .send()
                .await
                .map_err(err("UpdateAssumeRolePolicy"))?;
            out.role.map(|r| r.arn).unwrap_or_default()
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_entity_exception()) => iam
            .create_role()
            .role_name(name)
            .assume_role_policy_document(trust.to_string())
            .max_session_duration(max_session)
            .send()
            .await
            .map_err(err("CreateRole"))?
            .role
            .map(|r| r.arn)
            .unwrap_or_default(),
        Err(e) => return Err(err("GetRole")(e)),
    };
    for (policy_name, document) in policies {
        iam.put_role_policy()
            .role_name(name)
            .policy_name(policy_name)
            .policy_document(document.to_string())
            .send()
            .await
            .map_err(err("PutRolePolicy"))?;
    }
    Ok(arn)
}

pub(super) async fn remove_role(iam: &aws_sdk_iam::Client, name: &str) -> anyhow::Result<()> {
    match iam.list_role_policies().role_name(name).send().await {
        Ok(out) => {
            for policy in out.policy_names() {
                iam.delete_role_policy()
                    .role_name(name)
                    .policy_name(policy)
                    .send()
                    .await
                    .map_err(err("DeleteRolePolicy"))?;
            }
            iam.delete_role()
                .role_name(name)
                .send()
                .await
                .map_err(err("DeleteRole"))?;
            Ok(())
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_entity_exception()) => Ok(()),
        Err(e) => Err(err("ListRolePolicies")(e)),
    }
}

pub(super) async fn ensure_bucket(hub: &SdkConfig, bucket: &str) -> anyhow::Result<()> {
    if bucket.is_empty() {
        return Ok(());
    }
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(hub).force_path_style(true).build());
    match s3.create_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists()) =>
        {
            Ok(())
        }
        Err(e) => Err(err("CreateBucket")(e)),
    }
}

pub(super) async fn ensure_queue(hub: &SdkConfig, name: &str) -> anyhow::Result<(String, String)> {
    use aws_sdk_sqs::types::QueueAttributeName;
    let sqs = aws_sdk_sqs::Client::new(hub);
    let dlq_url = sqs
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
        .send()
        .await
        .map_err(err("CreateQueue"))?
        .queue_url
        .context("CreateQueue returned no url")?;
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(err("GetQueueAttributes"))?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .context("the DLQ has no ARN")?;
    let redrive = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}).to_string();
    let queue_url = sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        // Workers delete a message as soon as its task is leased; a message a
        // dead worker received comes back after this.
        .attributes(QueueAttributeName::VisibilityTimeout, "30")
        .attributes(QueueAttributeName::ReceiveMessageWaitTimeSeconds, "20")
        .send()
        .await
        .map_err(err("CreateQueue"))?
        .queue_url
        .context("CreateQueue returned no url")?;
    Ok((queue_url, dlq_url))
}

/// The queue the hub's rule sends Run Command status changes to, as
/// hub.yaml's CommandEventQueue.
pub(super) async fn ensure_event_queue(hub: &SdkConfig, name: &str) -> anyhow::Result<String> {
    use aws_sdk_sqs::types::QueueAttributeName;
    aws_sdk_sqs::Client::new(hub)
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::MessageRetentionPeriod, "3600")
        .attributes(QueueAttributeName::VisibilityTimeout, "30")
        .attributes(QueueAttributeName::ReceiveMessageWaitTimeSeconds, "20")
        .send()
        .await
        .map_err(err("CreateQueue"))?
        .queue_url
        .context("CreateQueue returned no url")
}
