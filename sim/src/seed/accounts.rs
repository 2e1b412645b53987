//! One target account: the execution role from the shipped template, the log
//! groups, and the instances of each region.

use std::collections::BTreeMap;

use anyhow::Context as _;
use aws_config::SdkConfig;
use aws_credential_types::Credentials;

use super::fleet_file::{self, AccountSpec, AccountState, FleetFile, InstanceState, PlatformSpec};
use super::hub::{ensure_role, remove_role};
use super::{LINUX_AMI, ORG_ACCESS_ROLE, WINDOWS_AMI, err, sdk};
use crate::cfn::{Param, Template};

pub(super) async fn seed_account(
    hub: &SdkConfig,
    template: &Template,
    hub_account: &str,
    fleet: &FleetFile,
    name: String,
    id: String,
    spec: &AccountSpec,
) -> anyhow::Result<AccountState> {
    let creds = account_credentials(hub, &id).await?;
    let endpoint = hub.endpoint_url().unwrap_or_default().to_owned();
    let in_account = |region: &str| sdk(&endpoint, region, creds.clone());

    let iam = aws_sdk_iam::Client::new(&in_account(&fleet.hub_region));
    if spec.execution_role {
        seed_execution_role(&iam, template, hub_account, fleet, &id).await?;
    } else {
        remove_role(&iam, &fleet.execution_role).await?;
    }

    let mut instances = BTreeMap::new();
    for region in &spec.regions {
        let seeded = seed_region(&in_account(region), fleet, spec, region).await?;
        instances.insert(region.clone(), seeded);
    }
    Ok(AccountState {
        name,
        id,
        ou: spec.ou.clone(),
        execution_role: spec.execution_role,
        instances,
    })
}

/// The account's administrator, as the organization's management account
/// reaches it.
async fn account_credentials(hub: &SdkConfig, id: &str) -> anyhow::Result<Credentials> {
    let sts = aws_sdk_sts::Client::new(hub);
    let assumed = sts
        .assume_role()
        .role_arn(format!("arn:aws:iam::{id}:role/{ORG_ACCESS_ROLE}"))
        .role_session_name("muster-seed")
        .send()
        .await
        .map_err(err("AssumeRole OrganizationAccountAccessRole"))?;
    let creds = assumed.credentials.context("AssumeRole returned no credentials")?;
    Ok(Credentials::new(
        creds.access_key_id,
        creds.secret_access_key,
        Some(creds.session_token),
        None,
        "muster-seed-account",
    ))
}

/// The execution role as the shipped template defines it for this account.
async fn seed_execution_role(
    iam: &aws_sdk_iam::Client,
    template: &Template,
    hub_account: &str,
    fleet: &FleetFile,
    id: &str,
) -> anyhow::Result<()> {
    let documents = template
        .clone()
        .with_params([
            ("HubAccountId".to_owned(), Param::Str(hub_account.to_owned())),
            ("WorkerRoleName".to_owned(), Param::Str(fleet.worker_role.clone())),
            ("ExecutionRoleName".to_owned(), Param::Str(fleet.execution_role.clone())),
            ("ExternalId".to_owned(), Param::Str(fleet.external_id.clone())),
            ("OutputBucketName".to_owned(), Param::Str(fleet.output_bucket.clone())),
            ("OutputKeyPrefix".to_owned(), Param::Str(fleet.output_prefix.clone())),
            ("AWS::AccountId".to_owned(), Param::Str(id.to_owned())),
            ("AWS::Partition".to_owned(), Param::Str("aws".into())),
            ("AWS::Region".to_owned(), Param::Str(fleet.hub_region.clone())),
        ])
        .role("ExecutionRole")?;
    let max_session = documents.max_session_seconds.unwrap_or(3600) as i32;
    ensure_role(
        iam,
        &fleet.execution_role,
        &documents.trust_policy,
        &documents.policies,
        max_session,
    )
    .await?;
    Ok(())
}

/// One region of the account: each instance group topped up to its count
/// (instances seeded earlier are kept), and the output log group.
async fn seed_region(
    config: &SdkConfig,
    fleet: &FleetFile,
    spec: &AccountSpec,
    region: &str,
) -> anyhow::Result<Vec<InstanceState>> {
    let ec2 = aws_sdk_ec2::Client::new(config);
    let existing = fleet_instances(&ec2, &fleet.name).await?;
    let mut region_instances = Vec::new();
    for (index, group) in spec.instances.iter().enumerate() {
        if group.regions.as_ref().is_some_and(|r| !r.iter().any(|g| g == region)) {
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
    let logs = aws_sdk_cloudwatchlogs::Client::new(config);
    match logs.create_log_group().log_group_name(&fleet.log_group).send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_already_exists_exception()) => {}
        Err(e) => return Err(err("CreateLogGroup")(e)),
    }
    Ok(region_instances)
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

/// Most instances one RunInstances call makes while seeding.
const RUN_AT_ONCE: usize = 500;

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
    // One call per instance only when names differ; otherwise one call makes
    // up to RUN_AT_ONCE (moto takes over two minutes to answer one call for
    // 5,000, past the SDK's timeout).
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
        (0..count)
            .step_by(RUN_AT_ONCE)
            .map(|from| ((count - from).min(RUN_AT_ONCE), group.name.clone()))
            .collect()
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
