//! From a campaign's spec to what a worker is told to do: the controller
//! resolves documents, parameters and output locations, so a worker runs
//! exactly what it leased and interprets nothing.

use muster_proto::v1::{CampaignSpec, DiscoverSpec, ExecuteSpec, ParameterValues, Platform, command};

/// The Comment of every SendCommand of a task: how a later attempt finds
/// commands an earlier one sent (ListCommands) without a record of them.
pub fn comment(task_id: &str) -> String {
    format!("muster task {task_id}")
}

/// Platforms whose instances have nothing to run under this spec.
pub fn platforms_without_command(spec: &CampaignSpec) -> Vec<i32> {
    match spec.command.as_ref().and_then(|c| c.kind.as_ref()) {
        Some(command::Kind::Script(script)) => {
            let mut without = Vec::new();
            if script.linux_lines.is_empty() {
                without.extend([Platform::Linux as i32, Platform::Macos as i32]);
            }
            if script.windows_lines.is_empty() {
                without.push(Platform::Windows as i32);
            }
            without
        }
        _ => Vec::new(),
    }
}

/// What the Discover task of (`account`, `region`) looks for.
pub fn discover_spec(spec: &CampaignSpec, account: &str, region: &str) -> DiscoverSpec {
    let targets = spec.targets.clone().unwrap_or_default();
    let (check_region_enabled, instance_ids) = if targets.scopes.is_empty() {
        (targets.regions.is_empty(), targets.instance_ids)
    } else {
        let scope = targets
            .scopes
            .into_iter()
            .find(|s| s.account_id == account && s.region == region);
        (false, scope.map(|s| s.instance_ids).unwrap_or_default())
    };
    DiscoverSpec {
        check_region_enabled,
        tags: targets.tags,
        instance_ids,
        platforms: targets.platforms,
        platforms_without_command: platforms_without_command(spec),
        report_tag_keys: spec
            .stages
            .iter()
            .flat_map(|stage| stage.tags.iter().map(|t| t.key.clone()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
    }
}

/// The document that runs on `platform` in `region`. A document named by
/// ARN (a shared or customer-owned one) is sent with the scope's region in
/// its ARN: SSM runs only documents of the command's own region, and a
/// document shared across an Organization exists once per region.
pub fn document_for(spec: &CampaignSpec, platform: Platform, region: &str) -> String {
    match spec.command.as_ref().and_then(|c| c.kind.as_ref()) {
        Some(command::Kind::Document(document)) => in_region(&document.name, region),
        _ if platform == Platform::Windows => "AWS-RunPowerShellScript".into(),
        _ => "AWS-RunShellScript".into(),
    }
}

/// `name` with `region` in place of its ARN's region; a name as it is.
fn in_region(name: &str, region: &str) -> String {
    let parts: Vec<&str> = name.splitn(6, ':').collect();
    match parts[..] {
        ["arn", partition, "ssm", _, account, resource] => format!("arn:{partition}:ssm:{region}:{account}:{resource}"),
        _ => name.to_owned(),
    }
}

fn values(values: Vec<String>) -> ParameterValues {
    ParameterValues { values }
}

/// What an Execute task sends.
pub fn execute_spec(
    campaign_id: &str,
    task_id: &str,
    spec: &CampaignSpec,
    (platform, region): (Platform, &str),
    instance_ids: Vec<String>,
) -> ExecuteSpec {
    let command = spec.command.clone().unwrap_or_default();
    let output = spec.output.clone().unwrap_or_default();
    let (document_version, parameters) = match command.kind {
        Some(command::Kind::Document(document)) => (document.version, document.parameters),
        Some(command::Kind::Script(script)) => {
            let lines = if platform == Platform::Windows {
                script.windows_lines
            } else {
                script.linux_lines
            };
            let mut parameters = std::collections::BTreeMap::from([
                ("commands".to_owned(), values(lines)),
                (
                    "executionTimeout".to_owned(),
                    values(vec![command.execution_timeout_seconds.to_string()]),
                ),
            ]);
            if !script.working_directory.is_empty() {
                parameters.insert("workingDirectory".into(), values(vec![script.working_directory]));
            }
            (String::new(), parameters)
        }
        None => (String::new(), Default::default()),
    };
    let prefix = output.s3_key_prefix.trim_matches('/');
    ExecuteSpec {
        platform: platform as i32,
        instance_ids,
        document_name: document_for(spec, platform, region),
        document_version,
        parameters,
        delivery_timeout_seconds: command.delivery_timeout_seconds,
        comment: comment(task_id),
        output_s3_key_prefix: if output.s3_bucket.is_empty() {
            String::new()
        } else if prefix.is_empty() {
            campaign_id.to_owned()
        } else {
            format!("{prefix}/{campaign_id}")
        },
        output_s3_bucket: output.s3_bucket,
        cloudwatch_log_group: output.cloudwatch_log_group,
        keep_bytes: output.keep_bytes,
        execution_timeout_seconds: command.execution_timeout_seconds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_proto::v1::{Command, Document, OutputConfig, Script};

    fn script(linux: &[&str], windows: &[&str]) -> CampaignSpec {
        CampaignSpec {
            command: Some(Command {
                kind: Some(command::Kind::Script(Script {
                    linux_lines: linux.iter().map(|s| s.to_string()).collect(),
                    windows_lines: windows.iter().map(|s| s.to_string()).collect(),
                    working_directory: "/tmp".into(),
                })),
                execution_timeout_seconds: 120,
                delivery_timeout_seconds: 600,
            }),
            output: Some(OutputConfig {
                s3_bucket: "out".into(),
                s3_key_prefix: "muster/".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn scripts_become_the_platforms_document() {
        let spec = script(&["uname -a"], &["Get-Date"]);
        let linux = execute_spec("c1", "t1", &spec, (Platform::Linux, "us-east-1"), vec!["i-1".into()]);
        assert_eq!(linux.document_name, "AWS-RunShellScript");
        assert_eq!(linux.parameters["commands"].values, ["uname -a"]);
        assert_eq!(linux.parameters["executionTimeout"].values, ["120"]);
        assert_eq!(linux.parameters["workingDirectory"].values, ["/tmp"]);
        assert_eq!(linux.comment, "muster task t1");
        assert_eq!(linux.output_s3_key_prefix, "muster/c1");
        let windows = execute_spec("c1", "t1", &spec, (Platform::Windows, "us-east-1"), vec!["i-2".into()]);
        assert_eq!(windows.document_name, "AWS-RunPowerShellScript");
        assert_eq!(windows.parameters["commands"].values, ["Get-Date"]);
    }

    #[test]
    fn platforms_without_lines_are_skipped_at_discovery() {
        assert_eq!(
            platforms_without_command(&script(&["x"], &[])),
            [Platform::Windows as i32]
        );
        assert_eq!(
            platforms_without_command(&script(&[], &["x"])),
            [Platform::Linux as i32, Platform::Macos as i32]
        );
        let document = CampaignSpec {
            command: Some(Command {
                kind: Some(command::Kind::Document(Document {
                    name: "AWS-RunPatchBaseline".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(platforms_without_command(&document).is_empty());
        assert_eq!(
            document_for(&document, Platform::Windows, "eu-west-1"),
            "AWS-RunPatchBaseline"
        );
    }

    #[test]
    fn a_document_arn_is_sent_in_each_scopes_region() {
        let arn = "arn:aws:ssm:us-east-1:111122223333:document/Acme-Patch";
        assert_eq!(
            in_region(arn, "eu-west-1"),
            "arn:aws:ssm:eu-west-1:111122223333:document/Acme-Patch"
        );
        assert_eq!(in_region(arn, "us-east-1"), arn);
        assert_eq!(in_region("Acme-Patch", "eu-west-1"), "Acme-Patch");
        assert_eq!(
            in_region(
                "arn:aws-us-gov:ssm:us-gov-west-1:111122223333:document/X",
                "us-gov-east-1"
            ),
            "arn:aws-us-gov:ssm:us-gov-east-1:111122223333:document/X"
        );
    }
}
