//! From a campaign file and flags to a `CampaignSpec`. The file is YAML or
//! TOML with friendly names; unknown keys are refused, so a typo is an error,
//! not a silently ignored setting. Flags override the file.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use muster_proto::v1::{
    AccessConfig, CampaignSpec, Command, Document, OutputConfig, ParameterValues, Platform, RateControl, ScopeSelector,
    Script, Stage, StageGate, TagFilter, TargetSelector, command,
};
use serde::Deserialize;

use crate::args::SpecArgs;

/// A campaign file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignFile {
    name: Option<String>,
    description: Option<String>,
    #[serde(default)]
    targets: TargetsFile,
    #[serde(default)]
    command: CommandFile,
    #[serde(default)]
    rate: RateFile,
    #[serde(default)]
    output: OutputFile,
    #[serde(default)]
    access: AccessFile,
    client_token: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    confirm_large: bool,
    #[serde(default)]
    stages: Vec<StageFile>,
    /// Commands after `command`, in order, on the targets that succeeded.
    #[serde(default)]
    then: Vec<CommandFile>,
}

/// One wave: which targets (accounts, OUs, regions, a share), its limits, its
/// bake time and its gate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StageFile {
    name: String,
    #[serde(default)]
    accounts: Vec<Scalar>,
    #[serde(default)]
    ous: Vec<String>,
    #[serde(default)]
    regions: Vec<String>,
    /// As targets.tags: KEY: value or [values] (empty: the key is there).
    #[serde(default)]
    tags: BTreeMap<String, Lines>,
    share: Option<Scalar>,
    max_concurrency: Option<Scalar>,
    max_errors: Option<Scalar>,
    /// "600", "10m", "1h".
    bake: Option<Scalar>,
    /// "automatic" (the default) or "manual".
    gate: Option<String>,
}

/// Tag filters as a campaign file writes them.
fn tag_filters(tags: BTreeMap<String, Lines>) -> Vec<TagFilter> {
    tags.into_iter()
        .map(|(key, values)| TagFilter {
            key,
            values: values.values().into_iter().filter(|v| !v.is_empty()).collect(),
        })
        .collect()
}

impl StageFile {
    fn build(self, i: usize) -> anyhow::Result<Stage> {
        let gate = match self
            .gate
            .as_deref()
            .map(str::trim)
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("automatic" | "auto") => StageGate::Automatic,
            Some("manual") => StageGate::Manual,
            Some(other) => bail!("stages[{i}].gate: '{other}' is not a gate (automatic, manual)"),
        };
        Ok(Stage {
            name: self.name,
            account_ids: self.accounts.iter().map(Scalar::text).collect(),
            ous: self.ous,
            ou_account_ids: Vec::new(),
            tags: tag_filters(self.tags),
            regions: self.regions,
            share: self.share.as_ref().map(Scalar::text).unwrap_or_default(),
            max_concurrency: self.max_concurrency.as_ref().map(Scalar::text).unwrap_or_default(),
            max_errors: self.max_errors.as_ref().map(Scalar::text).unwrap_or_default(),
            bake_seconds: match &self.bake {
                Some(bake) => seconds(&format!("stages[{i}].bake"), &bake.text())?,
                None => 0,
            },
            gate: gate as i32,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetsFile {
    #[serde(default)]
    accounts: Vec<Scalar>,
    #[serde(default)]
    ous: Vec<String>,
    #[serde(default)]
    exclude_accounts: Vec<Scalar>,
    #[serde(default)]
    regions: Vec<String>,
    /// Tag key to accepted values (empty: the key must exist).
    #[serde(default)]
    tags: BTreeMap<String, Lines>,
    #[serde(default)]
    instance_ids: Vec<String>,
    #[serde(default)]
    platforms: Vec<String>,
    /// Exact (account, region) pairs instead of accounts x regions.
    #[serde(default)]
    scopes: Vec<ScopeFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeFile {
    account: Scalar,
    region: String,
    #[serde(default)]
    instance_ids: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandFile {
    linux: Option<Lines>,
    windows: Option<Lines>,
    working_directory: Option<String>,
    document: Option<String>,
    document_version: Option<String>,
    #[serde(default)]
    parameters: BTreeMap<String, Lines>,
    execution_timeout: Option<Scalar>,
    delivery_timeout: Option<Scalar>,
}

impl CommandFile {
    /// A command after the first, as the file writes it (flags describe the
    /// first command only); `field` names it in errors.
    fn build(self, field: &str) -> anyhow::Result<Command> {
        let linux = self.linux.map(Lines::lines).unwrap_or_default();
        let windows = self.windows.map(Lines::lines).unwrap_or_default();
        let kind = match self.document {
            Some(_) if !linux.is_empty() || !windows.is_empty() => {
                bail!("{field}: give script lines or a document, not both")
            }
            Some(name) => Some(command::Kind::Document(Document {
                name,
                version: self.document_version.unwrap_or_default(),
                parameters: self
                    .parameters
                    .into_iter()
                    .map(|(k, v)| (k, ParameterValues { values: v.values() }))
                    .collect(),
            })),
            None if linux.is_empty() && windows.is_empty() => None,
            None => Some(command::Kind::Script(Script {
                linux_lines: linux,
                windows_lines: windows,
                working_directory: self.working_directory.unwrap_or_default(),
            })),
        };
        let timeout = |name: &str, value: Option<Scalar>| match value {
            Some(value) => seconds(&format!("{field}.{name}"), &value.text()),
            None => Ok(0),
        };
        Ok(Command {
            kind,
            execution_timeout_seconds: timeout("execution_timeout", self.execution_timeout)?,
            delivery_timeout_seconds: timeout("delivery_timeout", self.delivery_timeout)?,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateFile {
    max_concurrency: Option<Scalar>,
    max_errors: Option<Scalar>,
    batch_size: Option<u32>,
    api_calls_per_second: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputFile {
    s3_bucket: Option<String>,
    s3_key_prefix: Option<String>,
    cloudwatch_log_group: Option<String>,
    keep_bytes: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessFile {
    role_name: Option<String>,
    role_arn_template: Option<String>,
    external_id: Option<String>,
    session_duration: Option<Scalar>,
    partition: Option<String>,
}

/// A value written as a string or a number (YAML reads 123456789012 and 10
/// as numbers; account ids and counts are meant as text).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Number(u64),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Scalar::Text(s) => s.clone(),
            Scalar::Number(n) => n.to_string(),
        }
    }
}

/// One string (a multi-line block is split into lines) or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Lines {
    One(String),
    Many(Vec<String>),
}

impl Lines {
    fn lines(self) -> Vec<String> {
        match self {
            Lines::One(text) => text.lines().map(str::to_owned).collect(),
            Lines::Many(lines) => lines,
        }
    }

    fn values(self) -> Vec<String> {
        match self {
            Lines::One(text) => vec![text],
            Lines::Many(values) => values,
        }
    }
}

/// Reads a campaign file; the format comes from the extension (.toml, else
/// YAML).
pub fn read_file(path: &Path) -> anyhow::Result<CampaignFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read campaign file {}", path.display()))?;
    let is_toml = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    if is_toml {
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("campaign file {}: {e}", path.display()))
    } else {
        serde_yaml_ng::from_str(&text).map_err(|e| anyhow::anyhow!("campaign file {}: {e}", path.display()))
    }
}

/// Seconds from "90", "90s", "30m", "2h" or "1h30m".
pub fn seconds(field: &str, value: &str) -> anyhow::Result<u32> {
    let value = value.trim();
    if let Ok(n) = value.parse::<u32>() {
        return Ok(n);
    }
    let parsed: Duration = humantime::parse_duration(value)
        .with_context(|| format!("{field}: '{value}' is not a duration (for example 600, 10m, 2h)"))?;
    u32::try_from(parsed.as_secs()).with_context(|| format!("{field}: '{value}' is too long"))
}

fn platform(field: &str, name: &str) -> anyhow::Result<i32> {
    Ok(match name.trim().to_ascii_lowercase().as_str() {
        "linux" => Platform::Linux as i32,
        "windows" => Platform::Windows as i32,
        "macos" | "mac" => Platform::Macos as i32,
        other => bail!("{field}: '{other}' is not a platform (linux, windows, macos)"),
    })
}

fn key_value<'a>(field: &str, text: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    text.split_once('=')
        .with_context(|| format!("{field}: '{text}' is not KEY=VALUE"))
}

fn lines_of(path: &Path) -> anyhow::Result<Vec<String>> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("cannot read script {}", path.display()))?
        .lines()
        .map(str::to_owned)
        .collect())
}

/// Builds the spec from a file (if any) and flags. The controller validates
/// it; this only shapes it.
pub fn build(args: &SpecArgs) -> anyhow::Result<CampaignSpec> {
    let file = match &args.file {
        Some(path) => read_file(path)?,
        None => CampaignFile::default(),
    };
    let mut targets = TargetSelector {
        account_ids: file.targets.accounts.iter().map(Scalar::text).collect(),
        organizational_unit_ids: file.targets.ous,
        exclude_account_ids: file.targets.exclude_accounts.iter().map(Scalar::text).collect(),
        regions: file.targets.regions,
        tags: tag_filters(file.targets.tags),
        instance_ids: file.targets.instance_ids,
        platforms: file
            .targets
            .platforms
            .iter()
            .map(|p| platform("targets.platforms", p))
            .collect::<anyhow::Result<_>>()?,
        scopes: file
            .targets
            .scopes
            .into_iter()
            .map(|scope| ScopeSelector {
                account_id: scope.account.text(),
                region: scope.region,
                instance_ids: scope.instance_ids,
            })
            .collect(),
    };
    targets.account_ids.extend(args.accounts.iter().cloned());
    targets.organizational_unit_ids.extend(args.ous.iter().cloned());
    targets
        .exclude_account_ids
        .extend(args.exclude_accounts.iter().cloned());
    targets.regions.extend(args.regions.iter().cloned());
    targets.instance_ids.extend(args.instances.iter().cloned());
    for p in &args.platforms {
        targets.platforms.push(platform("--platform", p)?);
    }
    for tag in &args.tags {
        let (key, values) = tag.split_once('=').unwrap_or((tag.as_str(), ""));
        targets.tags.push(TagFilter {
            key: key.to_owned(),
            values: values.split(',').filter(|v| !v.is_empty()).map(str::to_owned).collect(),
        });
    }

    let mut linux = file.command.linux.map(Lines::lines).unwrap_or_default();
    let mut windows = file.command.windows.map(Lines::lines).unwrap_or_default();
    if !args.linux.is_empty() || args.linux_file.is_some() {
        linux = args.linux.clone();
        if let Some(path) = &args.linux_file {
            linux.extend(lines_of(path)?);
        }
    }
    if !args.windows.is_empty() || args.windows_file.is_some() {
        windows = args.windows.clone();
        if let Some(path) = &args.windows_file {
            windows.extend(lines_of(path)?);
        }
    }
    let document_name = args.document.clone().or(file.command.document);
    let mut parameters: BTreeMap<String, ParameterValues> = file
        .command
        .parameters
        .into_iter()
        .map(|(k, v)| (k, ParameterValues { values: v.values() }))
        .collect();
    for param in &args.params {
        let (name, value) = key_value("--param", param)?;
        parameters
            .entry(name.to_owned())
            .or_default()
            .values
            .push(value.to_owned());
    }
    let kind = match document_name {
        Some(name) => {
            if !linux.is_empty() || !windows.is_empty() {
                bail!("command: give script lines or a document, not both");
            }
            Some(command::Kind::Document(Document {
                name,
                version: args
                    .document_version
                    .clone()
                    .or(file.command.document_version)
                    .unwrap_or_default(),
                parameters,
            }))
        }
        None if linux.is_empty() && windows.is_empty() => None,
        None => Some(command::Kind::Script(Script {
            linux_lines: linux,
            windows_lines: windows,
            working_directory: args
                .working_directory
                .clone()
                .or(file.command.working_directory)
                .unwrap_or_default(),
        })),
    };
    let timeout = |field: &str, flag: &Option<String>, file: Option<Scalar>| -> anyhow::Result<u32> {
        match flag.clone().or(file.map(|s| s.text())) {
            Some(value) => seconds(field, &value),
            None => Ok(0),
        }
    };
    let command = Command {
        kind,
        execution_timeout_seconds: timeout(
            "command.execution_timeout",
            &args.execution_timeout,
            file.command.execution_timeout,
        )?,
        delivery_timeout_seconds: timeout(
            "command.delivery_timeout",
            &args.delivery_timeout,
            file.command.delivery_timeout,
        )?,
    };

    let rate = RateControl {
        max_concurrency: args
            .max_concurrency
            .clone()
            .or(file.rate.max_concurrency.map(|s| s.text()))
            .unwrap_or_default(),
        max_errors: args
            .max_errors
            .clone()
            .or(file.rate.max_errors.map(|s| s.text()))
            .unwrap_or_default(),
        batch_size: args.batch_size.or(file.rate.batch_size).unwrap_or(0),
        api_calls_per_second: args.api_rate.or(file.rate.api_calls_per_second).unwrap_or(0.0),
    };
    let output = OutputConfig {
        s3_bucket: args.s3_bucket.clone().or(file.output.s3_bucket).unwrap_or_default(),
        s3_key_prefix: args.s3_prefix.clone().or(file.output.s3_key_prefix).unwrap_or_default(),
        cloudwatch_log_group: args
            .log_group
            .clone()
            .or(file.output.cloudwatch_log_group)
            .unwrap_or_default(),
        keep_bytes: args.keep_bytes.or(file.output.keep_bytes).unwrap_or(0),
    };
    let access = AccessConfig {
        role_name: args.role_name.clone().or(file.access.role_name).unwrap_or_default(),
        role_arn_template: args
            .role_arn_template
            .clone()
            .or(file.access.role_arn_template)
            .unwrap_or_default(),
        external_id: args.external_id.clone().or(file.access.external_id).unwrap_or_default(),
        session_duration_seconds: match args
            .session_duration
            .clone()
            .or(file.access.session_duration.map(|s| s.text()))
        {
            Some(value) => seconds("access.session_duration", &value)?,
            None => 0,
        },
        partition: args.partition.clone().or(file.access.partition).unwrap_or_default(),
    };
    let mut labels = file.labels;
    for label in &args.labels {
        let (key, value) = key_value("--label", label)?;
        labels.insert(key.to_owned(), value.to_owned());
    }
    Ok(CampaignSpec {
        name: args.name.clone().or(file.name).unwrap_or_default(),
        description: file.description.unwrap_or_default(),
        targets: Some(targets),
        command: Some(command),
        rate: Some(rate),
        output: Some(output),
        access: Some(access),
        client_token: args.client_token.clone().or(file.client_token).unwrap_or_default(),
        labels,
        confirm_large: args.confirm_large || file.confirm_large,
        stages: file
            .stages
            .into_iter()
            .enumerate()
            .map(|(i, stage)| stage.build(i))
            .collect::<anyhow::Result<_>>()?,
        then: file
            .then
            .into_iter()
            .enumerate()
            .map(|(i, command)| command.build(&format!("then[{i}]")))
            .collect::<anyhow::Result<_>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> (tempfile::TempDir, SpecArgs) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        (
            dir,
            SpecArgs {
                file: Some(path),
                ..Default::default()
            },
        )
    }

    #[test]
    fn yaml_files_read_naturally_and_flags_win() {
        let (_dir, mut args) = file(
            "patch.yaml",
            "name: patch\ntargets:\n  accounts: [111111111111]\n  regions: [us-east-1]\n  tags:\n    Env: prod\n    Role: [web, api]\ncommand:\n  linux: |\n    dnf -y update\n    reboot-if-needed\n  execution_timeout: 30m\nrate:\n  max_concurrency: 10%\n  max_errors: 5\n",
        );
        args.regions = vec!["eu-west-1".into()];
        let spec = build(&args).unwrap();
        let targets = spec.targets.unwrap();
        assert_eq!(targets.account_ids, ["111111111111"]);
        assert_eq!(targets.regions, ["us-east-1", "eu-west-1"]);
        assert_eq!(targets.tags[0].values, ["prod"]);
        assert_eq!(targets.tags[1].values, ["web", "api"]);
        let command = spec.command.unwrap();
        assert_eq!(command.execution_timeout_seconds, 1800);
        match command.kind {
            Some(command::Kind::Script(s)) => assert_eq!(s.linux_lines, ["dnf -y update", "reboot-if-needed"]),
            other => panic!("{other:?}"),
        }
        let rate = spec.rate.unwrap();
        assert_eq!((rate.max_concurrency.as_str(), rate.max_errors.as_str()), ("10%", "5"));
    }

    #[test]
    fn exact_scopes_read_from_a_file() {
        let (_dir, args) = file(
            "rerun.yaml",
            "targets:\n  scopes:\n    - account: 111111111111\n      region: eu-west-1\n      instance_ids: [i-0abc]\n    - {account: \"222222222222\", region: us-east-1}\ncommand:\n  linux: uptime\n",
        );
        let scopes = build(&args).unwrap().targets.unwrap().scopes;
        assert_eq!(scopes.len(), 2);
        assert_eq!(
            (
                scopes[0].account_id.as_str(),
                scopes[0].region.as_str(),
                scopes[0].instance_ids.as_slice()
            ),
            ("111111111111", "eu-west-1", ["i-0abc".to_owned()].as_slice())
        );
        assert!(scopes[1].instance_ids.is_empty());
    }

    #[test]
    fn toml_files_and_documents() {
        let (_dir, args) = file(
            "patch.toml",
            "[targets]\nous = [\"ou-ab12-cd34ef56\"]\n[command]\ndocument = \"AWS-RunPatchBaseline\"\nparameters = { Operation = \"Install\" }\n",
        );
        let spec = build(&args).unwrap();
        match spec.command.unwrap().kind {
            Some(command::Kind::Document(d)) => {
                assert_eq!(d.name, "AWS-RunPatchBaseline");
                assert_eq!(d.parameters["Operation"].values, ["Install"]);
            }
            other => panic!("{other:?}"),
        }
        // A shared document by ARN, pinned: the flag wins over the file.
        let (_dir, mut args) = file(
            "inventory.yaml",
            "targets:\n  ous: [ou-ab12-cd34ef56]\ncommand:\n  document: arn:aws:ssm:us-east-1:111122223333:document/Acme-Inventory\n  document_version: \"2\"\n",
        );
        let pinned = |args: &SpecArgs| match build(args).unwrap().command.unwrap().kind {
            Some(command::Kind::Document(d)) => (d.name, d.version),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            pinned(&args),
            (
                "arn:aws:ssm:us-east-1:111122223333:document/Acme-Inventory".to_owned(),
                "2".to_owned()
            )
        );
        args.document_version = Some("$LATEST".into());
        assert_eq!(pinned(&args).1, "$LATEST");
    }

    #[test]
    fn typos_and_bad_values_are_named() {
        let (_dir, args) = file("x.yaml", "targets:\n  regons: [us-east-1]\n");
        let err = build(&args).unwrap_err().to_string();
        assert!(err.contains("unknown field `regons`"), "{err}");
        let args = SpecArgs {
            platforms: vec!["beos".into()],
            ..Default::default()
        };
        assert_eq!(
            build(&args).unwrap_err().to_string(),
            "--platform: 'beos' is not a platform (linux, windows, macos)"
        );
        let args = SpecArgs {
            execution_timeout: Some("soon".into()),
            ..Default::default()
        };
        assert!(
            build(&args)
                .unwrap_err()
                .to_string()
                .starts_with("command.execution_timeout: 'soon' is not a duration")
        );
        let args = SpecArgs {
            document: Some("AWS-RunPatchBaseline".into()),
            linux: vec!["x".into()],
            ..Default::default()
        };
        assert!(build(&args).unwrap_err().to_string().contains("not both"));
    }

    /// The shipped examples parse and pass the controller's own validation.
    #[test]
    fn the_examples_are_valid_campaigns() {
        let defaults = muster_controller::validate::Defaults {
            role_name: "muster-execution".into(),
            api_calls_per_second: 10.0,
        };
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        for name in ["campaign.yaml", "patch-baseline.toml", "patch-tuesday.yaml"] {
            let args = SpecArgs {
                file: Some(examples.join(name)),
                ..Default::default()
            };
            let spec = build(&args).unwrap_or_else(|e| panic!("{name}: {e}"));
            let spec = muster_controller::validate::validate(spec, &defaults).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!spec.name.is_empty(), "{name}");
        }
        let yaml = build(&SpecArgs {
            file: Some(examples.join("campaign.yaml")),
            ..Default::default()
        })
        .unwrap();
        let targets = yaml.targets.unwrap();
        assert_eq!(targets.exclude_account_ids, ["222222222222"]);
        assert_eq!(yaml.rate.unwrap().max_concurrency, "10%");
        assert_eq!(yaml.command.unwrap().execution_timeout_seconds, 1800);
        let waves = build(&SpecArgs {
            file: Some(examples.join("patch-tuesday.yaml")),
            ..Default::default()
        })
        .unwrap();
        let stages: Vec<(&str, u32, i32)> = waves
            .stages
            .iter()
            .map(|s| (s.name.as_str(), s.bake_seconds, s.gate))
            .collect();
        assert_eq!(
            stages,
            [
                ("canary-account", 1800, StageGate::Automatic as i32),
                ("canary-fleet", 3600, StageGate::Manual as i32),
                ("rest", 0, StageGate::Automatic as i32)
            ]
        );
        // Scan, then Install where the scan succeeded.
        let operation = |command: &Command| match &command.kind {
            Some(command::Kind::Document(d)) => d.parameters["Operation"].values.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(operation(waves.command.as_ref().unwrap()), ["Scan"]);
        assert_eq!(waves.then.len(), 1);
        assert_eq!(operation(&waves.then[0]), ["Install"]);
    }

    #[test]
    fn commands_after_the_first_come_from_the_file_and_are_named_in_errors() {
        let (_dir, args) = file(
            "c.yaml",
            "command:\n  linux: dnf check-update\nthen:\n  - linux: dnf -y update\n    execution_timeout: 2h\n  - document: Acme-Report\n    document_version: \"3\"\n",
        );
        let spec = build(&args).unwrap();
        assert_eq!(spec.then.len(), 2);
        assert_eq!(spec.then[0].execution_timeout_seconds, 7200);
        match &spec.then[1].kind {
            Some(command::Kind::Document(d)) => assert_eq!((d.name.as_str(), d.version.as_str()), ("Acme-Report", "3")),
            other => panic!("{other:?}"),
        }
        let (_dir, args) = file("c.yaml", "then:\n  - linux: x\n    delivery_timeout: soon\n");
        let err = build(&args).unwrap_err().to_string();
        assert!(err.starts_with("then[0].delivery_timeout"), "{err}");
        let (_dir, args) = file("c.yaml", "then:\n  - linux: x\n    document: AWS-RunShellScript\n");
        let err = build(&args).unwrap_err().to_string();
        assert_eq!(err, "then[0]: give script lines or a document, not both");
    }
}
