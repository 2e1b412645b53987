//! From a campaign file and flags to a `CampaignSpec`. The file is YAML or
//! TOML with friendly names; unknown keys are refused, so a typo is an error,
//! not a silently ignored setting. Flags override the file.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use muster_proto::v1::{
    AccessConfig, Campaign, CampaignSpec, CampaignTargets, Command, Document, OutputConfig, ParameterValues, Platform,
    RateControl, ScopeSelector, Script, Stage, StageGate, TagFilter, TargetSelector, TargetStatus, command,
};
use serde::Deserialize;

use crate::args::SpecArgs;

mod flags;
pub(crate) use flags::with_flags;

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
    /// An ended campaign's targets instead of accounts and regions.
    from_campaign: Option<FromCampaignFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FromCampaignFile {
    /// Empty when `--from-campaign` gives it.
    #[serde(default)]
    id: String,
    #[serde(default)]
    statuses: Vec<String>,
    #[serde(default)]
    non_compliant: bool,
    #[serde(default)]
    follow_reruns: bool,
    #[serde(default)]
    critical: bool,
}

impl FromCampaignFile {
    fn build(self) -> anyhow::Result<CampaignTargets> {
        Ok(CampaignTargets {
            campaign_id: self.id,
            statuses: self
                .statuses
                .iter()
                .enumerate()
                .map(|(i, name)| end_status(&format!("targets.from_campaign.statuses[{i}]"), name))
                .collect::<anyhow::Result<_>>()?,
            non_compliant: self.non_compliant,
            follow_reruns: self.follow_reruns,
            critical: self.critical,
        })
    }
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
        Ok(Command {
            kind,
            execution_timeout_seconds: written_duration(
                &format!("{field}.execution_timeout"),
                self.execution_timeout,
                &EXECUTION_TIMEOUT,
            )?,
            delivery_timeout_seconds: written_duration(
                &format!("{field}.delivery_timeout"),
                self.delivery_timeout,
                &DELIVERY_TIMEOUT,
            )?,
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

/// Seconds from "90", "90s", "30m", "2h" or "1h30m".
pub fn seconds(field: &str, value: &str) -> anyhow::Result<u32> {
    let value = value.trim();
    if let Ok(n) = value.parse::<u32>() {
        return Ok(n);
    }
    let parsed: Duration = humantime::parse_duration(value)
        .with_context(|| format!("{field}: '{value}' is not a duration (for example 600, 10m, 2h)"))?;
    if parsed.as_secs() == 0 && !parsed.is_zero() {
        bail!("{field}: '{value}' is less than a second; these durations are whole seconds");
    }
    u32::try_from(parsed.as_secs()).with_context(|| format!("{field}: '{value}' is too long"))
}

/// What a setting must be, and what leaving it out gives, for refusing a 0
/// that someone wrote: the API reads 0 as "not given" (proto3), so a written
/// 0 would silently become the default.
struct NotZero {
    rule: &'static str,
    default: &'static str,
}

const BATCH_SIZE: NotZero = NotZero {
    rule: "1 to 50 instances a SendCommand",
    default: "50",
};
const API_RATE: NotZero = NotZero {
    rule: "0.1 to 1000 calls per second",
    default: "the controller's default",
};
const KEEP_BYTES: NotZero = NotZero {
    rule: "1 to 1048576 bytes",
    default: "8192",
};
const EXECUTION_TIMEOUT: NotZero = NotZero {
    rule: "1 second to 48 hours",
    default: "an hour for a script, the document's own timeouts for a document",
};
const DELIVERY_TIMEOUT: NotZero = NotZero {
    rule: "30 seconds to 30 days",
    default: "10 minutes",
};
const SESSION_DURATION: NotZero = NotZero {
    rule: "15 minutes to an hour",
    default: "an hour",
};

/// `value`, or an error naming `field` when it is 0 (see [`NotZero`]).
fn not_zero<T: Default + PartialEq>(field: &str, value: T, setting: &NotZero) -> anyhow::Result<T> {
    if value == T::default() {
        bail!(
            "{field}: must be {}, not 0 (leave it out for {})",
            setting.rule,
            setting.default
        );
    }
    Ok(value)
}

/// `value`, 0 when it is not given, and an error when it is given as 0.
fn optional<T: Default + PartialEq>(field: &str, value: Option<T>, setting: &NotZero) -> anyhow::Result<T> {
    value.map_or(Ok(T::default()), |v| not_zero(field, v, setting))
}

/// Seconds of a duration written in a file or a flag, refused when it is 0.
fn duration_of(field: &str, value: &str, setting: &NotZero) -> anyhow::Result<u32> {
    not_zero(field, seconds(field, value)?, setting)
}

/// A file's duration as [`duration_of`]; 0 (the default) when not written.
fn written_duration(field: &str, value: Option<Scalar>, setting: &NotZero) -> anyhow::Result<u32> {
    value.map_or(Ok(0), |v| duration_of(field, &v.text(), setting))
}

fn platform(field: &str, name: &str) -> anyhow::Result<i32> {
    Ok(match name.trim().to_ascii_lowercase().as_str() {
        "linux" => Platform::Linux as i32,
        "windows" => Platform::Windows as i32,
        "macos" | "mac" => Platform::Macos as i32,
        other => bail!("{field}: '{other}' is not a platform (linux, windows, macos)"),
    })
}

/// A status a target ends in, by its short name ("failed", "timed_out");
/// the error names `field`.
pub(crate) fn end_status(field: &str, name: &str) -> anyhow::Result<i32> {
    match TargetStatus::from_short_name(name) {
        Some(status) if status.is_terminal() => Ok(status as i32),
        _ => bail!(
            "{field}: '{name}' is not a status a target ends in (failed, timed_out, undeliverable, error, \
             cancelled, terminated, skipped, success)"
        ),
    }
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
    let (spec, _) = from_file(args)?;
    with_flags(spec, args)
}

/// The spec the file `-f` names gives alone (before flags), and where it
/// came from; an empty spec without a file.
pub(crate) fn from_file(args: &SpecArgs) -> anyhow::Result<(CampaignSpec, Option<Source>)> {
    match &args.file {
        Some(path) => read_document(path).map(|(spec, source)| (spec, Some(source))),
        None => Ok((CampaignFile::default().into_spec()?, None)),
    }
}

/// The file a spec was read from.
#[derive(Debug, Clone)]
pub struct Source {
    /// As its author named it (or "standard input").
    pub name: String,
    /// Whose names its keys are.
    pub keys: Keys,
}

/// The names a file's keys have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// A campaign file's own (`targets.accounts`, `stages[0].bake`).
    Campaign,
    /// The API's, in proto3 JSON under `spec` (a campaign as `muster show
    /// -o yaml` prints it: `spec.targets.accountIds`).
    Api,
}

/// The spec `-f` names (a path, or `-` for standard input): a campaign
/// file, whose format comes from the extension (.toml, else YAML, which JSON
/// is too), or a campaign as `muster show -o yaml|json` prints it, a
/// document with a top-level `spec` (the proto3 JSON mapping of
/// `muster.v1.Campaign`, whose spec is submitted again).
fn read_document(path: &Path) -> anyhow::Result<(CampaignSpec, Source)> {
    let stdin = path.as_os_str() == "-";
    let name = if stdin {
        "standard input".to_owned()
    } else {
        path.display().to_string()
    };
    let text = if stdin {
        std::io::read_to_string(std::io::stdin()).context("cannot read a campaign file from standard input")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read campaign file {name}"))?
    };
    let file = |keys| Source {
        name: name.clone(),
        keys,
    };
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("toml")) {
        let spec: CampaignFile = toml::from_str(&text).map_err(|e| anyhow::anyhow!("campaign file {name}: {e}"))?;
        return Ok((spec.into_spec()?, file(Keys::Campaign)));
    }
    // A campaign file is read from the text, so its errors say where.
    let document: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).map_err(|e| anyhow::anyhow!("campaign file {name}: {e}"))?;
    if document.get("spec").is_some() {
        let document = serde_json::to_value(document)
            .map_err(|e| anyhow::anyhow!("campaign file {name}: not a campaign document: {e}"))?;
        let campaign = muster_proto::json::from_json::<Campaign>(document)
            .map_err(|e| anyhow::anyhow!("campaign file {name}: a document with a `spec` is a campaign: {e}"))?;
        let spec = campaign
            .spec
            .with_context(|| format!("campaign file {name}: spec: a campaign's spec is required"))?;
        return Ok((spec, file(Keys::Api)));
    }
    let spec: CampaignFile =
        serde_yaml_ng::from_str(&text).map_err(|e| anyhow::anyhow!("campaign file {name}: {e}"))?;
    Ok((spec.into_spec()?, file(Keys::Campaign)))
}

impl CampaignFile {
    /// The spec this file describes (before flags).
    fn into_spec(self) -> anyhow::Result<CampaignSpec> {
        let targets = TargetSelector {
            account_ids: self.targets.accounts.iter().map(Scalar::text).collect(),
            organizational_unit_ids: self.targets.ous,
            exclude_account_ids: self.targets.exclude_accounts.iter().map(Scalar::text).collect(),
            regions: self.targets.regions,
            tags: tag_filters(self.targets.tags),
            instance_ids: self.targets.instance_ids,
            platforms: self
                .targets
                .platforms
                .iter()
                .map(|p| platform("targets.platforms", p))
                .collect::<anyhow::Result<_>>()?,
            scopes: self
                .targets
                .scopes
                .into_iter()
                .map(|scope| ScopeSelector {
                    account_id: scope.account.text(),
                    region: scope.region,
                    instance_ids: scope.instance_ids,
                })
                .collect(),
            from_campaign: self.targets.from_campaign.map(FromCampaignFile::build).transpose()?,
        };
        Ok(CampaignSpec {
            name: self.name.unwrap_or_default(),
            description: self.description.unwrap_or_default(),
            targets: Some(targets),
            command: Some(self.command.build("command")?),
            rate: Some(RateControl {
                max_concurrency: self.rate.max_concurrency.map(|s| s.text()).unwrap_or_default(),
                max_errors: self.rate.max_errors.map(|s| s.text()).unwrap_or_default(),
                batch_size: optional("rate.batch_size", self.rate.batch_size, &BATCH_SIZE)?,
                api_calls_per_second: optional("rate.api_calls_per_second", self.rate.api_calls_per_second, &API_RATE)?,
            }),
            output: Some(OutputConfig {
                s3_bucket: self.output.s3_bucket.unwrap_or_default(),
                s3_key_prefix: self.output.s3_key_prefix.unwrap_or_default(),
                cloudwatch_log_group: self.output.cloudwatch_log_group.unwrap_or_default(),
                keep_bytes: optional("output.keep_bytes", self.output.keep_bytes, &KEEP_BYTES)?,
            }),
            access: Some(AccessConfig {
                role_name: self.access.role_name.unwrap_or_default(),
                role_arn_template: self.access.role_arn_template.unwrap_or_default(),
                external_id: self.access.external_id.unwrap_or_default(),
                session_duration_seconds: written_duration(
                    "access.session_duration",
                    self.access.session_duration,
                    &SESSION_DURATION,
                )?,
                partition: self.access.partition.unwrap_or_default(),
            }),
            client_token: self.client_token.unwrap_or_default(),
            labels: self.labels,
            confirm_large: self.confirm_large,
            stages: self
                .stages
                .into_iter()
                .enumerate()
                .map(|(i, stage)| stage.build(i))
                .collect::<anyhow::Result<_>>()?,
            then: self
                .then
                .into_iter()
                .enumerate()
                .map(|(i, command)| command.build(&format!("then[{i}]")))
                .collect::<anyhow::Result<_>>()?,
        })
    }
}

#[cfg(test)]
mod tests;
