//! Discover tasks: list the instances of one (account, region) with EC2,
//! ask SSM which of them it manages and whether their agents are online, and
//! report every one: managed and online, or SKIPPED with the reason. Nothing
//! is silently dropped.

use std::collections::HashMap;

use aws_sdk_ec2::types::Filter;
use aws_sdk_ssm::types::{
    InstanceInformation, InstanceInformationFilter, InstanceInformationFilterKey, PingStatus as SsmPing,
};
use muster_proto::v1::{DiscoverSpec, DiscoveredInstance, PingStatus, Platform, ReportTargetsRequest};

use crate::TaskError;
use crate::api::Api;
use crate::controller::WorkerCalls;
use crate::documents::Documents;
use crate::scope_clients::{CallError, ScopeClients};

/// States worth reporting: terminated instances are gone, the rest are
/// targets (stopped ones end SKIPPED, so the operator sees them).
const STATES: [&str; 4] = ["pending", "running", "stopping", "stopped"];
/// EC2 takes at most 200 values per filter.
const FILTER_VALUES: usize = 200;
/// DescribeInstanceInformation's page and InstanceIds filter limit.
const SSM_PAGE: usize = 50;
/// Instances per ReportTargets request.
const REPORT_PAGE: usize = 1_000;

/// An EC2 instance as discovery sees it.
#[derive(Debug, Clone)]
struct Ec2Instance {
    id: String,
    state: String,
    windows: bool,
    name: String,
    /// Its tags of the keys the spec asks to report.
    tags: std::collections::HashMap<String, String>,
}

/// Lists and joins, checks the documents the campaign would send here,
/// then reports. Returns how many instances were reported.
pub async fn discover(
    scope: &ScopeClients,
    spec: &DiscoverSpec,
    (controller, documents): (&dyn WorkerCalls, &Documents),
    task_id: &str,
    lease_id: u64,
) -> Result<usize, TaskError> {
    if spec.check_region_enabled && !region_enabled(scope).await? {
        tracing::info!(account = %scope.account, region = %scope.region, "region not enabled in the account; nothing to discover");
        return Ok(0);
    }
    let instances = ec2_instances(scope, spec).await?;
    let ids: Vec<String> = instances
        .iter()
        .filter(|i| i.state == "running")
        .map(|i| i.id.clone())
        .collect();
    let managed = ssm_nodes(scope, &ids).await?;
    let discovered: Vec<DiscoveredInstance> = instances.iter().map(|i| judge(i, managed.get(&i.id), spec)).collect();
    // Before anything is reported: a scope whose sends SSM would refuse
    // fails as a whole, with the reason, and nothing is sent there. Only
    // where something would be sent: a customer's document may be only in
    // the regions that use it.
    if discovered.iter().any(|d| d.skip_reason.is_empty()) {
        for check in &spec.documents {
            if let Some(why) = documents.refused(scope, check).await {
                return Err(TaskError::Refused(why));
            }
        }
    }
    let count = discovered.len();
    for page in discovered.chunks(REPORT_PAGE) {
        controller
            .report_targets(ReportTargetsRequest {
                task_id: task_id.to_owned(),
                lease_id,
                instances: page.to_vec(),
            })
            .await
            .map_err(|e| CallError {
                api: "ReportTargets",
                account: scope.account.clone(),
                region: scope.region.clone(),
                class: muster_common::retry::ErrorClass::Transient,
                code: None,
                message: e.to_string(),
            })?;
    }
    tracing::info!(account = %scope.account, region = %scope.region, instances = count, managed = managed.len(), "discovered");
    Ok(count)
}

async fn region_enabled(scope: &ScopeClients) -> Result<bool, CallError> {
    let region = scope.region.clone();
    let answer = scope
        .call(Api::DescribeRegions, || {
            scope
                .ec2
                .describe_regions()
                .all_regions(true)
                .region_names(region.clone())
                .send()
        })
        .await?;
    Ok(answer
        .regions()
        .iter()
        .any(|r| r.opt_in_status().is_none_or(|s| s != "not-opted-in")))
}

async fn ec2_instances(scope: &ScopeClients, spec: &DiscoverSpec) -> Result<Vec<Ec2Instance>, CallError> {
    let base = instance_filters(spec);
    let id_chunks: Vec<Option<Vec<String>>> = if spec.instance_ids.is_empty() {
        vec![None]
    } else {
        spec.instance_ids
            .chunks(FILTER_VALUES)
            .map(|c| Some(c.to_vec()))
            .collect()
    };
    let mut found = Vec::new();
    for ids in id_chunks {
        let mut filters = base.clone();
        if let Some(ids) = ids {
            filters.push(Filter::builder().name("instance-id").set_values(Some(ids)).build());
        }
        let mut token: Option<String> = None;
        loop {
            let page = scope
                .call(Api::DescribeInstances, || {
                    scope
                        .ec2
                        .describe_instances()
                        .set_filters(Some(filters.clone()))
                        .max_results(1000)
                        .set_next_token(token.clone())
                        .send()
                })
                .await?;
            let instances = page.reservations().iter().flat_map(|r| r.instances());
            found.extend(instances.filter_map(|instance| Ec2Instance::of(instance, &spec.report_tag_keys)));
            token = page.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    found.dedup_by(|a, b| a.id == b.id);
    Ok(found)
}

/// The DescribeInstances filters of the spec's states and tags.
fn instance_filters(spec: &DiscoverSpec) -> Vec<Filter> {
    let mut filters = vec![
        Filter::builder()
            .name("instance-state-name")
            .set_values(Some(STATES.map(String::from).to_vec()))
            .build(),
    ];
    for tag in &spec.tags {
        filters.push(if tag.values.is_empty() {
            Filter::builder().name("tag-key").values(tag.key.clone()).build()
        } else {
            Filter::builder()
                .name(format!("tag:{}", tag.key))
                .set_values(Some(tag.values.clone()))
                .build()
        });
    }
    filters
}

impl Ec2Instance {
    /// What discovery keeps of an instance EC2 listed: its tags only those
    /// the campaign reports.
    fn of(instance: &aws_sdk_ec2::types::Instance, report_tag_keys: &[String]) -> Option<Self> {
        let tag = |key: &str| {
            instance
                .tags()
                .iter()
                .find(|t| t.key() == Some(key))
                .and_then(|t| t.value())
                .unwrap_or_default()
                .to_owned()
        };
        Some(Ec2Instance {
            id: instance.instance_id()?.to_owned(),
            state: instance
                .state()
                .and_then(|s| s.name())
                .map(|n| n.as_str().to_owned())
                .unwrap_or_default(),
            windows: instance
                .platform()
                .is_some_and(|p| p.as_str().eq_ignore_ascii_case("windows")),
            name: tag("Name"),
            tags: instance
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned())))
                .filter(|(key, _)| report_tag_keys.contains(key))
                .collect(),
        })
    }
}

/// SSM's view of the given (running) instances.
async fn ssm_nodes(scope: &ScopeClients, ids: &[String]) -> Result<HashMap<String, InstanceInformation>, CallError> {
    let mut nodes = HashMap::new();
    for chunk in ids.chunks(SSM_PAGE) {
        let filter = InstanceInformationFilter::builder()
            .key(InstanceInformationFilterKey::InstanceIds)
            .set_value_set(Some(chunk.to_vec()))
            .build()
            .expect("key and values are set");
        let mut token: Option<String> = None;
        loop {
            let page = scope
                .call(Api::DescribeInstanceInformation, || {
                    scope
                        .ssm
                        .describe_instance_information()
                        .instance_information_filter_list(filter.clone())
                        .max_results(SSM_PAGE as i32)
                        .set_next_token(token.clone())
                        .send()
                })
                .await?;
            for node in page.instance_information_list() {
                if let Some(id) = node.instance_id() {
                    nodes.insert(id.to_owned(), node.clone());
                }
            }
            token = page.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
    }
    Ok(nodes)
}

fn platform_of(node: Option<&InstanceInformation>, ec2: &Ec2Instance) -> Platform {
    match node.and_then(|n| n.platform_type()).map(|p| p.as_str()) {
        Some("Windows") => Platform::Windows,
        Some("MacOS") => Platform::Macos,
        Some("Linux") => Platform::Linux,
        _ if ec2.windows => Platform::Windows,
        _ => Platform::Linux,
    }
}

/// Decides whether an instance can run, and if not, says why.
fn judge(ec2: &Ec2Instance, node: Option<&InstanceInformation>, spec: &DiscoverSpec) -> DiscoveredInstance {
    let platform = platform_of(node, ec2);
    let ping = match node.and_then(|n| n.ping_status()) {
        None => PingStatus::NotManaged,
        Some(SsmPing::Online) => PingStatus::Online,
        Some(SsmPing::ConnectionLost) => PingStatus::ConnectionLost,
        Some(_) => PingStatus::Inactive,
    };
    let platform_name = platform
        .as_str_name()
        .trim_start_matches("PLATFORM_")
        .to_ascii_lowercase();
    let skip_reason = if !spec.platforms.is_empty() && !spec.platforms.contains(&(platform as i32)) {
        format!("platform {platform_name} is excluded by targets.platforms")
    } else if spec.platforms_without_command.contains(&(platform as i32)) {
        format!("the command has no lines for platform {platform_name}")
    } else if ec2.state != "running" {
        format!("instance is {}", ec2.state)
    } else {
        match ping {
            PingStatus::Online => String::new(),
            PingStatus::NotManaged => {
                "not managed by SSM (no agent, no instance profile, or no route to the SSM endpoints)".to_owned()
            }
            PingStatus::ConnectionLost => "SSM agent offline (PingStatus ConnectionLost)".to_owned(),
            _ => "SSM agent inactive".to_owned(),
        }
    };
    DiscoveredInstance {
        instance_id: ec2.id.clone(),
        platform: platform as i32,
        ping_status: ping as i32,
        name: ec2.name.clone(),
        platform_name: node.and_then(|n| n.platform_name()).unwrap_or_default().to_owned(),
        agent_version: node.and_then(|n| n.agent_version()).unwrap_or_default().to_owned(),
        skip_reason,
        tags: ec2.tags.clone().into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ec2(state: &str, windows: bool) -> Ec2Instance {
        Ec2Instance {
            id: "i-0123456789abcdef0".into(),
            state: state.into(),
            windows,
            name: "web-1".into(),
            tags: Default::default(),
        }
    }

    fn node(ping: SsmPing, platform: &str) -> InstanceInformation {
        InstanceInformation::builder()
            .instance_id("i-0123456789abcdef0")
            .ping_status(ping)
            .platform_type(platform.into())
            .build()
    }

    #[test]
    fn every_instance_is_judged_with_a_reason() {
        let spec = DiscoverSpec::default();
        let online = judge(&ec2("running", false), Some(&node(SsmPing::Online, "Linux")), &spec);
        assert_eq!(online.skip_reason, "");
        assert_eq!(online.platform, Platform::Linux as i32);
        let offline = judge(
            &ec2("running", false),
            Some(&node(SsmPing::ConnectionLost, "Linux")),
            &spec,
        );
        assert!(offline.skip_reason.contains("offline"));
        let unmanaged = judge(&ec2("running", true), None, &spec);
        assert!(unmanaged.skip_reason.contains("not managed by SSM"));
        assert_eq!(
            unmanaged.platform,
            Platform::Windows as i32,
            "platform falls back to EC2's"
        );
        assert_eq!(unmanaged.ping_status, PingStatus::NotManaged as i32);
        let stopped = judge(&ec2("stopped", false), None, &spec);
        assert_eq!(stopped.skip_reason, "instance is stopped");
    }

    #[test]
    fn platform_rules_skip_with_the_field_named() {
        let spec = DiscoverSpec {
            platforms: vec![Platform::Linux as i32],
            ..Default::default()
        };
        let windows = judge(&ec2("running", true), Some(&node(SsmPing::Online, "Windows")), &spec);
        assert_eq!(windows.skip_reason, "platform windows is excluded by targets.platforms");
        let spec = DiscoverSpec {
            platforms_without_command: vec![Platform::Windows as i32],
            ..Default::default()
        };
        let windows = judge(&ec2("running", true), Some(&node(SsmPing::Online, "Windows")), &spec);
        assert_eq!(windows.skip_reason, "the command has no lines for platform windows");
    }
}
