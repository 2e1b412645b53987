//! Seeds a sandbox fleet through the sim, as a platform team would set up AWS:
//! an Organization with OUs and accounts, the execution role in each account
//! (from the same CloudFormation template that ships in `deploy/`), instances
//! per (account, region), the log groups, and in the hub the worker and
//! controller roles, the buckets and the task queue with its DLQ.
//!
//! Seeding is idempotent: what exists is reused, only what is missing is made.

pub mod fleet_file;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, anyhow};
use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use futures::{StreamExt as _, TryStreamExt as _};

use crate::cfn::{Param, Template};
use fleet_file::{AccountSpec, AccountState, FleetFile, FleetState, InstanceState, PlatformSpec};

/// moto's Windows AMI: instances from it report `Platform: windows`.
pub const WINDOWS_AMI: &str = "ami-03cf127a";
/// Any AMI id works for Linux in moto.
pub const LINUX_AMI: &str = "ami-0a1b2c3d4e5f67890";
/// The static access key seeding uses: it acts in the hub account.
pub const SEED_ACCESS_KEY: &str = "AKIAMUSTERSANDBOXSEED";

const ORG_ACCESS_ROLE: &str = "OrganizationAccountAccessRole";
const PARALLEL_ACCOUNTS: usize = 8;

/// Options for one seeding run.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    /// The sim's endpoint.
    pub endpoint: String,
    /// The target-account CloudFormation template.
    pub target_template: std::path::PathBuf,
}

fn sdk(endpoint: &str, region: &str, credentials: Credentials) -> SdkConfig {
    muster_common::aws::fixed(
        endpoint,
        region,
        credentials,
        aws_smithy_types::retry::RetryConfig::standard().with_max_attempts(6),
    )
}

fn err<E: std::error::Error + Send + Sync + 'static, R: std::fmt::Debug + Send + Sync + 'static>(
    what: &str,
) -> impl FnOnce(aws_smithy_runtime_api::client::result::SdkError<E, R>) -> anyhow::Error + '_ {
    move |e| anyhow!("{what}: {}", aws_smithy_types::error::display::DisplayErrorContext(&e))
}

/// Seeds `fleet` and returns what it made.
pub async fn seed(fleet: &FleetFile, options: &SeedOptions) -> anyhow::Result<FleetState> {
    let started = Instant::now();
    let hub_creds = Credentials::new(SEED_ACCESS_KEY, "muster-sandbox", None, None, "muster-seed");
    let hub = sdk(&options.endpoint, &fleet.hub_region, hub_creds);
    let hub_account = caller_account(&hub).await?;

    let org = aws_sdk_organizations::Client::new(&hub);
    let organization_id = ensure_organization(&org).await?;
    let root_id = org
        .list_roots()
        .send()
        .await
        .map_err(err("ListRoots"))?
        .roots()
        .first()
        .and_then(|r| r.id().map(str::to_owned))
        .context("the Organization has no root")?;
    let ous = ensure_ous(&org, &root_id, fleet).await?;
    let accounts = ensure_accounts(&org, &root_id, &ous, fleet).await?;
    tracing::info!(accounts = accounts.len(), elapsed = ?started.elapsed(), "organization ready");

    let (worker_role_arn, controller_role_arn) = ensure_hub_roles(&hub, &hub_account, fleet).await?;
    ensure_bucket(&hub, &fleet.output_bucket).await?;
    ensure_bucket(&hub, &fleet.results_bucket).await?;
    let (queue_url, dlq_url) = ensure_queue(&hub, &fleet.queue).await?;

    let template = Template::load(&options.target_template)?;
    let states: Vec<AccountState> = futures::stream::iter(accounts.into_iter().map(|(name, id, spec)| {
        let hub = hub.clone();
        let template = template.clone();
        let hub_account = hub_account.clone();
        async move { seed_account(&hub, &template, &hub_account, fleet, name, id, spec).await }
    }))
    .buffered(PARALLEL_ACCOUNTS)
    .try_collect()
    .await?;
    tracing::info!(elapsed = ?started.elapsed(), "fleet seeded");

    Ok(FleetState {
        fleet: fleet.name.clone(),
        organization_id,
        root_id,
        hub_account,
        hub_region: fleet.hub_region.clone(),
        ous,
        accounts: states,
        queue_url,
        dlq_url,
        output_bucket: fleet.output_bucket.clone(),
        output_prefix: fleet.output_prefix.clone(),
        results_bucket: fleet.results_bucket.clone(),
        log_group: fleet.log_group.clone(),
        external_id: fleet.external_id.clone(),
        execution_role: fleet.execution_role.clone(),
        worker_role_arn,
        controller_role_arn,
    })
}

async fn caller_account(sdk: &SdkConfig) -> anyhow::Result<String> {
    aws_sdk_sts::Client::new(sdk)
        .get_caller_identity()
        .send()
        .await
        .map_err(err("GetCallerIdentity"))?
        .account
        .context("GetCallerIdentity returned no account")
}

async fn ensure_organization(org: &aws_sdk_organizations::Client) -> anyhow::Result<String> {
    match org.describe_organization().send().await {
        Ok(out) => Ok(out.organization.and_then(|o| o.id).unwrap_or_default()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_aws_organizations_not_in_use_exception()) =>
        {
            let out = org
                .create_organization()
                .feature_set(aws_sdk_organizations::types::OrganizationFeatureSet::All)
                .send()
                .await
                .map_err(err("CreateOrganization"))?;
            Ok(out.organization.and_then(|o| o.id).unwrap_or_default())
        }
        Err(e) => Err(err("DescribeOrganization")(e)),
    }
}

async fn ensure_ous(
    org: &aws_sdk_organizations::Client,
    root_id: &str,
    fleet: &FleetFile,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut ids = BTreeMap::new();
    let mut paths: Vec<&str> = fleet.ous.iter().map(|o| o.path.as_str()).collect();
    paths.sort_by_key(|p| p.matches('/').count());
    for path in paths {
        let mut parent = root_id.to_owned();
        let mut so_far = String::new();
        for name in path.split('/') {
            so_far = if so_far.is_empty() {
                name.to_owned()
            } else {
                format!("{so_far}/{name}")
            };
            if let Some(id) = ids.get(&so_far) {
                parent = String::clone(id);
                continue;
            }
            let pages: Vec<_> = org
                .list_organizational_units_for_parent()
                .parent_id(&parent)
                .into_paginator()
                .send()
                .try_collect()
                .await
                .map_err(err("ListOrganizationalUnitsForParent"))?;
            let existing: Vec<_> = pages.iter().flat_map(|p| p.organizational_units()).collect();
            let id = match existing
                .iter()
                .find(|ou| ou.name() == Some(name))
                .and_then(|ou| ou.id())
            {
                Some(id) => id.to_owned(),
                None => org
                    .create_organizational_unit()
                    .parent_id(&parent)
                    .name(name)
                    .send()
                    .await
                    .map_err(err("CreateOrganizationalUnit"))?
                    .organizational_unit
                    .and_then(|ou| ou.id)
                    .context("CreateOrganizationalUnit returned no id")?,
            };
            ids.insert(so_far.clone(), id.clone());
            parent = id;
        }
    }
    Ok(ids)
}

async fn ensure_accounts<'a>(
    org: &aws_sdk_organizations::Client,
    root_id: &str,
    ous: &BTreeMap<String, String>,
    fleet: &'a FleetFile,
) -> anyhow::Result<Vec<(String, String, &'a AccountSpec)>> {
    let pages: Vec<_> = org
        .list_accounts()
        .into_paginator()
        .send()
        .try_collect()
        .await
        .map_err(err("ListAccounts"))?;
    let existing: Vec<_> = pages.iter().flat_map(|p| p.accounts()).collect();
    let mut out = Vec::new();
    for (name, spec) in fleet.expanded_accounts() {
        let id = match existing
            .iter()
            .find(|a| a.name() == Some(name.as_str()))
            .and_then(|a| a.id())
        {
            Some(id) => id.to_owned(),
            None => org
                .create_account()
                .account_name(&name)
                .email(format!("{name}@sandbox.muster.invalid"))
                .send()
                .await
                .map_err(err("CreateAccount"))?
                .create_account_status
                .and_then(|s| s.account_id)
                .context("CreateAccount returned no account id")?,
        };
        let wanted_parent = spec
            .ou
            .as_ref()
            .and_then(|path| ous.get(path))
            .cloned()
            .unwrap_or_else(|| root_id.to_owned());
        let current_parent = org
            .list_parents()
            .child_id(&id)
            .send()
            .await
            .map_err(err("ListParents"))?
            .parents()
            .first()
            .and_then(|p| p.id().map(str::to_owned))
            .unwrap_or_else(|| root_id.to_owned());
        if current_parent != wanted_parent {
            org.move_account()
                .account_id(&id)
                .source_parent_id(&current_parent)
                .destination_parent_id(&wanted_parent)
                .send()
                .await
                .map_err(err("MoveAccount"))?;
        }
        out.push((name, id, spec));
    }
    Ok(out)
}

async fn ensure_hub_roles(hub: &SdkConfig, hub_account: &str, fleet: &FleetFile) -> anyhow::Result<(String, String)> {
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
    Ok((worker, controller))
}

async fn ensure_role(
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

async fn remove_role(iam: &aws_sdk_iam::Client, name: &str) -> anyhow::Result<()> {
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

async fn ensure_bucket(hub: &SdkConfig, bucket: &str) -> anyhow::Result<()> {
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

async fn ensure_queue(hub: &SdkConfig, name: &str) -> anyhow::Result<(String, String)> {
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

async fn seed_account(
    hub: &SdkConfig,
    template: &Template,
    hub_account: &str,
    fleet: &FleetFile,
    name: String,
    id: String,
    spec: &AccountSpec,
) -> anyhow::Result<AccountState> {
    let sts = aws_sdk_sts::Client::new(hub);
    let assumed = sts
        .assume_role()
        .role_arn(format!("arn:aws:iam::{id}:role/{ORG_ACCESS_ROLE}"))
        .role_session_name("muster-seed")
        .send()
        .await
        .map_err(err("AssumeRole OrganizationAccountAccessRole"))?;
    let creds = assumed.credentials.context("AssumeRole returned no credentials")?;
    let creds = Credentials::new(
        creds.access_key_id,
        creds.secret_access_key,
        Some(creds.session_token),
        None,
        "muster-seed-account",
    );
    let endpoint = hub.endpoint_url().unwrap_or_default().to_owned();
    let in_account = |region: &str| sdk(&endpoint, region, creds.clone());

    let iam = aws_sdk_iam::Client::new(&in_account(&fleet.hub_region));
    if spec.execution_role {
        let documents = template
            .clone()
            .with_params([
                ("HubAccountId".to_owned(), Param::Str(hub_account.to_owned())),
                ("WorkerRoleName".to_owned(), Param::Str(fleet.worker_role.clone())),
                ("ExecutionRoleName".to_owned(), Param::Str(fleet.execution_role.clone())),
                ("ExternalId".to_owned(), Param::Str(fleet.external_id.clone())),
                ("OutputBucketName".to_owned(), Param::Str(fleet.output_bucket.clone())),
                ("OutputKeyPrefix".to_owned(), Param::Str(fleet.output_prefix.clone())),
                ("AWS::AccountId".to_owned(), Param::Str(id.clone())),
                ("AWS::Partition".to_owned(), Param::Str("aws".into())),
                ("AWS::Region".to_owned(), Param::Str(fleet.hub_region.clone())),
            ])
            .role("ExecutionRole")?;
        let max_session = documents.max_session_seconds.unwrap_or(3600) as i32;
        ensure_role(
            &iam,
            &fleet.execution_role,
            &documents.trust_policy,
            &documents.policies,
            max_session,
        )
        .await?;
    } else {
        remove_role(&iam, &fleet.execution_role).await?;
    }

    let mut instances = BTreeMap::new();
    for region in &spec.regions {
        let config = in_account(region);
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let existing = fleet_instances(&ec2, &fleet.name).await?;
        let mut region_instances = Vec::new();
        for (index, group) in spec.instances.iter().enumerate() {
            if group.regions.as_ref().is_some_and(|r| !r.contains(region)) {
                continue;
            }
            let group_id = index.to_string();
            let mut have: Vec<InstanceState> = existing
                .iter()
                .filter(|i| i.tags.get("muster:group") == Some(&group_id))
                .cloned()
                .collect();
            let missing = (group.count as usize).saturating_sub(have.len());
            if missing > 0 {
                let created = run_instances(&ec2, fleet, &group_id, group, missing, have.len()).await?;
                have.extend(created);
            }
            region_instances.extend(have);
        }
        let logs = aws_sdk_cloudwatchlogs::Client::new(&config);
        match logs.create_log_group().log_group_name(&fleet.log_group).send().await {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_already_exists_exception()) => {}
            Err(e) => return Err(err("CreateLogGroup")(e)),
        }
        instances.insert(region.clone(), region_instances);
    }
    Ok(AccountState {
        name,
        id,
        ou: spec.ou.clone(),
        execution_role: spec.execution_role,
        instances,
    })
}

async fn fleet_instances(ec2: &aws_sdk_ec2::Client, fleet: &str) -> anyhow::Result<Vec<InstanceState>> {
    use aws_sdk_ec2::types::Filter;
    let reservations: Vec<_> = ec2
        .describe_instances()
        .filters(Filter::builder().name("tag:muster:fleet").values(fleet).build())
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .values("stopping")
                .values("stopped")
                .build(),
        )
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(err("DescribeInstances"))?;
    Ok(reservations
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| {
            Some(InstanceState {
                id: i.instance_id()?.to_owned(),
                platform: if i.platform().is_some() {
                    PlatformSpec::Windows
                } else {
                    PlatformSpec::Linux
                },
                tags: i
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned())))
                    .collect(),
            })
        })
        .collect())
}

async fn run_instances(
    ec2: &aws_sdk_ec2::Client,
    fleet: &FleetFile,
    group_id: &str,
    group: &fleet_file::InstanceGroup,
    count: usize,
    first_number: usize,
) -> anyhow::Result<Vec<InstanceState>> {
    use aws_sdk_ec2::types::{InstanceType, ResourceType, Tag, TagSpecification};
    let mut tags: BTreeMap<String, String> = group.tags.clone();
    tags.insert("muster:fleet".into(), fleet.name.clone());
    tags.insert("muster:group".into(), group_id.to_owned());
    let mut created = Vec::new();
    // One call per instance only when names differ; otherwise one call makes them all.
    let named = group.name.as_ref().is_some_and(|n| n.contains("{i}"));
    let batches: Vec<(usize, Option<String>)> = if named {
        (0..count)
            .map(|k| {
                (
                    1,
                    group
                        .name
                        .as_ref()
                        .map(|n| n.replace("{i}", &format!("{:03}", first_number + k + 1))),
                )
            })
            .collect()
    } else {
        vec![(count, group.name.clone())]
    };
    for (n, name) in batches {
        let mut spec = TagSpecification::builder().resource_type(ResourceType::Instance);
        let mut instance_tags = tags.clone();
        if let Some(name) = &name {
            instance_tags.insert("Name".into(), name.clone());
        }
        for (k, v) in &instance_tags {
            spec = spec.tags(Tag::builder().key(k).value(v).build());
        }
        let ami = match group.platform {
            PlatformSpec::Windows => WINDOWS_AMI,
            PlatformSpec::Linux => LINUX_AMI,
        };
        let out = ec2
            .run_instances()
            .image_id(ami)
            .instance_type(InstanceType::T3Micro)
            .min_count(n as i32)
            .max_count(n as i32)
            .tag_specifications(spec.build())
            .send()
            .await
            .map_err(err("RunInstances"))?;
        for instance in out.instances() {
            created.push(InstanceState {
                id: instance.instance_id().unwrap_or_default().to_owned(),
                platform: group.platform,
                tags: instance_tags.clone(),
            });
        }
    }
    Ok(created)
}

/// Reads a fleet state file written by `muster-sim seed`.
pub fn load_state(path: &Path) -> anyhow::Result<FleetState> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read fleet state {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("fleet state {} is not valid", path.display()))
}
