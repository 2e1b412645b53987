//! From a campaign's spec to what a worker is told to do: the controller
//! resolves documents, parameters and output locations, so a worker runs
//! exactly what it leased and interprets nothing.

use muster_proto::v1::{
    CampaignSpec, Command, DiscoverSpec, DocumentCheck, ExecuteSpec, ParameterValues, Platform, command,
};

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
        documents: document_checks(spec, region),
    }
}

/// The documents `spec` sends in `region`, named as SendCommand will name
/// them, with the parameters it sends: what discovery checks before
/// anything is sent. Scripts are muster's own parameters and need none.
fn document_checks(spec: &CampaignSpec, region: &str) -> Vec<DocumentCheck> {
    let then = spec.then.iter().enumerate().map(|(i, c)| (format!("then[{i}]"), c));
    spec.command
        .iter()
        .map(|c| ("command".to_owned(), c))
        .chain(then)
        .filter_map(|(field, command)| match &command.kind {
            Some(command::Kind::Document(document)) => Some(DocumentCheck {
                field,
                name: in_region(&document.name, region),
                version: document.version.clone(),
                parameters: document.parameters.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// The document that runs on `platform` in `region`. A document named by
/// ARN (a shared or customer-owned one) is sent with the scope's region in
/// its ARN: SSM runs only documents of the command's own region, and a
/// document shared across an Organization exists once per region.
pub fn document_for(spec: &CampaignSpec, platform: Platform, region: &str) -> String {
    document_of(&spec.command.clone().unwrap_or_default(), platform, region)
}

/// The document that runs `command` on `platform` in `region`.
fn document_of(command: &Command, platform: Platform, region: &str) -> String {
    match &command.kind {
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

/// What an Execute task sends: the campaign's command, then the commands
/// after it that have something to run on `platform`.
pub fn execute_spec(
    campaign_id: &str,
    task_id: &str,
    spec: &CampaignSpec,
    (platform, region): (Platform, &str),
    instance_ids: Vec<String>,
) -> ExecuteSpec {
    let output = spec.output.clone().unwrap_or_default();
    let prefix = output.s3_key_prefix.trim_matches('/');
    let base = ExecuteSpec {
        platform: platform as i32,
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
        ..Default::default()
    };
    let mut first = with_command(&base, &spec.command.clone().unwrap_or_default(), region)
        .expect("a platform without lines is skipped at discovery");
    first.instance_ids = instance_ids;
    first.then = spec
        .then
        .iter()
        .filter_map(|command| with_command(&base, command, region))
        .enumerate()
        .map(|(k, mut then)| {
            then.comment = format!("{} command {}", base.comment, k + 2);
            then
        })
        .collect();
    first
}

/// `base` set to send `command` on its platform in `region`; none when the
/// command has no lines for that platform.
fn with_command(base: &ExecuteSpec, command: &Command, region: &str) -> Option<ExecuteSpec> {
    let platform = Platform::try_from(base.platform).unwrap_or(Platform::Linux);
    let (document_version, parameters) = match command.kind.clone() {
        Some(command::Kind::Document(document)) => (document.version, document.parameters),
        Some(command::Kind::Script(script)) => {
            let lines = if platform == Platform::Windows {
                script.windows_lines
            } else {
                script.linux_lines
            };
            if lines.is_empty() {
                return None;
            }
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
    Some(ExecuteSpec {
        document_name: document_of(command, platform, region),
        document_version,
        parameters,
        delivery_timeout_seconds: command.delivery_timeout_seconds,
        execution_timeout_seconds: command.execution_timeout_seconds,
        ..base.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_proto::v1::{Document, OutputConfig, Script};

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
    fn commands_after_the_first_run_where_they_have_lines_and_say_their_place() {
        let mut spec = script(&["scan"], &["Scan"]);
        spec.then = vec![
            script(&["install"], &[]).command.unwrap(),
            Command {
                kind: Some(command::Kind::Document(Document {
                    name: "arn:aws:ssm:us-east-1:111122223333:document/Acme-Report".into(),
                    version: "3".into(),
                    ..Default::default()
                })),
                execution_timeout_seconds: 0,
                delivery_timeout_seconds: 900,
            },
        ];
        let linux = execute_spec("c1", "t1", &spec, (Platform::Linux, "eu-west-1"), vec!["i-1".into()]);
        let then: Vec<(&str, &str, &str)> = linux
            .then
            .iter()
            .map(|t| {
                (
                    t.document_name.as_str(),
                    t.document_version.as_str(),
                    t.comment.as_str(),
                )
            })
            .collect();
        assert_eq!(
            then,
            [
                ("AWS-RunShellScript", "", "muster task t1 command 2"),
                (
                    "arn:aws:ssm:eu-west-1:111122223333:document/Acme-Report",
                    "3",
                    "muster task t1 command 3"
                ),
            ]
        );
        assert_eq!(linux.then[0].parameters["commands"].values, ["install"]);
        assert!(
            linux
                .then
                .iter()
                .all(|t| t.instance_ids.is_empty() && t.then.is_empty())
        );
        assert_eq!(
            (
                linux.then[1].delivery_timeout_seconds,
                linux.then[1].output_s3_key_prefix.as_str()
            ),
            (900, "muster/c1")
        );
        // Windows has no install lines: its sequence is the scan, then the
        // report, numbered as it runs.
        let windows = execute_spec("c1", "t1", &spec, (Platform::Windows, "eu-west-1"), vec!["i-2".into()]);
        let comments: Vec<&str> = windows.then.iter().map(|t| t.comment.as_str()).collect();
        assert_eq!(comments, ["muster task t1 command 2"]);
        assert!(windows.then[0].document_name.ends_with("Acme-Report"));
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
    fn discovery_checks_each_document_as_it_will_be_sent() {
        let patch = Document {
            name: "arn:aws:ssm:us-east-1:111122223333:document/Acme-Patch".into(),
            version: "3".into(),
            parameters: [("Operation".to_owned(), values(vec!["Install".into()]))].into(),
        };
        let spec = CampaignSpec {
            command: Some(Command {
                kind: script(&["dnf check-update"], &[]).command.unwrap().kind,
                ..Default::default()
            }),
            then: vec![
                Command {
                    kind: Some(command::Kind::Document(patch.clone())),
                    ..Default::default()
                },
                script(&["reboot"], &[]).command.unwrap(),
            ],
            ..Default::default()
        };
        let checks = discover_spec(&spec, "111122223333", "eu-west-1").documents;
        assert_eq!(checks.len(), 1, "scripts are muster's own parameters: {checks:?}");
        assert_eq!(checks[0].field, "then[0]");
        assert_eq!(
            checks[0].name, "arn:aws:ssm:eu-west-1:111122223333:document/Acme-Patch",
            "named as SendCommand will name it in the scope's region"
        );
        assert_eq!(
            (checks[0].version.as_str(), &checks[0].parameters),
            ("3", &patch.parameters)
        );
        assert!(
            discover_spec(&script(&["x"], &[]), "1", "eu-west-1")
                .documents
                .is_empty()
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
