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

/// A status a target ends in, by its short name ("failed", "timed_out").
fn end_status(field: &str, name: &str) -> anyhow::Result<i32> {
    match TargetStatus::from_short_name(name.trim()) {
        Some(status) if status.is_terminal() => Ok(status as i32),
        _ => bail!(
            "{field}: '{name}' is not a status a target ends in (success, failed, timed_out, undeliverable, \
             error, cancelled, terminated, skipped)"
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

/// `slot` takes the flag's value when the flag was given.
fn set<T: Clone>(slot: &mut T, flag: &Option<T>) {
    if let Some(value) = flag {
        *slot = value.clone();
    }
}

/// The flags over a spec read from a file: a flag's value replaces the
/// file's, a flag's list adds to the file's (script lines replace them).
pub(crate) fn with_flags(mut spec: CampaignSpec, args: &SpecArgs) -> anyhow::Result<CampaignSpec> {
    set(&mut spec.name, &args.name);
    set(&mut spec.client_token, &args.client_token);
    spec.confirm_large |= args.confirm_large;
    for label in &args.labels {
        let (key, value) = key_value("--label", label)?;
        spec.labels.insert(key.to_owned(), value.to_owned());
    }

    let targets = spec.targets.get_or_insert_default();
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
    if let Some(id) = &args.from_campaign {
        targets.from_campaign.get_or_insert_default().campaign_id = id.clone();
    }
    let choosing = [
        ("--from-status", !args.from_statuses.is_empty()),
        ("--non-compliant", args.non_compliant),
        ("--follow-reruns", args.follow_reruns),
    ];
    for (flag, given) in choosing {
        if given && targets.from_campaign.is_none() {
            bail!(
                "{flag}: chooses among the targets of an earlier campaign; name it with --from-campaign \
                 (or targets.from_campaign in the file)"
            );
        }
    }
    if let Some(from) = targets.from_campaign.as_mut() {
        for name in &args.from_statuses {
            from.statuses.push(end_status("--from-status", name)?);
        }
        from.non_compliant |= args.non_compliant;
        from.follow_reruns |= args.follow_reruns;
        if from.campaign_id.is_empty() {
            bail!("targets.from_campaign.id: is required; give the campaign in the file or with --from-campaign");
        }
    }
    for tag in &args.tags {
        let (key, values) = tag.split_once('=').unwrap_or((tag.as_str(), ""));
        targets.tags.push(TagFilter {
            key: key.to_owned(),
            values: values.split(',').filter(|v| !v.is_empty()).map(str::to_owned).collect(),
        });
    }

    let command = spec.command.get_or_insert_default();
    command.kind = command_with_flags(command.kind.take(), args)?;
    if let Some(value) = &args.execution_timeout {
        command.execution_timeout_seconds = duration_of("--execution-timeout", value, &EXECUTION_TIMEOUT)?;
    }
    if let Some(value) = &args.delivery_timeout {
        command.delivery_timeout_seconds = duration_of("--delivery-timeout", value, &DELIVERY_TIMEOUT)?;
    }

    let rate = spec.rate.get_or_insert_default();
    set(&mut rate.max_concurrency, &args.max_concurrency);
    set(&mut rate.max_errors, &args.max_errors);
    if let Some(n) = args.batch_size {
        rate.batch_size = not_zero("--batch-size", n, &BATCH_SIZE)?;
    }
    if let Some(n) = args.api_rate {
        rate.api_calls_per_second = not_zero("--api-rate", n, &API_RATE)?;
    }

    let output = spec.output.get_or_insert_default();
    set(&mut output.s3_bucket, &args.s3_bucket);
    set(&mut output.s3_key_prefix, &args.s3_prefix);
    set(&mut output.cloudwatch_log_group, &args.log_group);
    if let Some(n) = args.keep_bytes {
        output.keep_bytes = not_zero("--keep-bytes", n, &KEEP_BYTES)?;
    }

    let access = spec.access.get_or_insert_default();
    set(&mut access.role_name, &args.role_name);
    set(&mut access.role_arn_template, &args.role_arn_template);
    set(&mut access.external_id, &args.external_id);
    set(&mut access.partition, &args.partition);
    if let Some(value) = &args.session_duration {
        access.session_duration_seconds = duration_of("--session-duration", value, &SESSION_DURATION)?;
    }
    Ok(spec)
}

/// The first command's kind with the flags over it: script lines given
/// replace the file's for their platform; a document, its version and its
/// parameters add to or replace the file's.
fn command_with_flags(kind: Option<command::Kind>, args: &SpecArgs) -> anyhow::Result<Option<command::Kind>> {
    let (mut script, mut document) = match kind {
        Some(command::Kind::Script(script)) => (script, None),
        Some(command::Kind::Document(document)) => (Script::default(), Some(document)),
        None => (Script::default(), None),
    };
    if !args.linux.is_empty() || args.linux_file.is_some() {
        script.linux_lines = args.linux.clone();
        if let Some(path) = &args.linux_file {
            script.linux_lines.extend(lines_of(path)?);
        }
    }
    if !args.windows.is_empty() || args.windows_file.is_some() {
        script.windows_lines = args.windows.clone();
        if let Some(path) = &args.windows_file {
            script.windows_lines.extend(lines_of(path)?);
        }
    }
    set(&mut script.working_directory, &args.working_directory);
    if let Some(name) = &args.document {
        document.get_or_insert_default().name = name.clone();
    }
    let has_lines = !script.linux_lines.is_empty() || !script.windows_lines.is_empty();
    let Some(mut document) = document else {
        if let Some(param) = args.params.first() {
            bail!("--param: '{param}' is a document's parameter; name the document (--document or command.document)");
        }
        return Ok(has_lines.then_some(command::Kind::Script(script)));
    };
    if has_lines {
        bail!("command: give script lines or a document, not both");
    }
    if !script.working_directory.is_empty() {
        bail!("--working-directory: a script's, not a document's (a document takes it as a parameter, if at all)");
    }
    set(&mut document.version, &args.document_version);
    for param in &args.params {
        let (name, value) = key_value("--param", param)?;
        document
            .parameters
            .entry(name.to_owned())
            .or_default()
            .values
            .push(value.to_owned());
    }
    Ok(Some(command::Kind::Document(document)))
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
    fn an_earlier_campaigns_targets_from_a_file_or_flags() {
        let id = "0190d3c4-0000-7000-8000-000000000001";
        let (_dir, mut args) = file(
            "install.yaml",
            &format!(
                "targets:\n  from_campaign:\n    id: {id}\n    statuses: [success]\n    follow_reruns: true\n  platforms: [linux]\ncommand:\n  document: AWS-RunPatchBaseline\n"
            ),
        );
        args.non_compliant = true;
        args.from_statuses = vec!["failed".into()];
        let targets = build(&args).unwrap().targets.unwrap();
        let from = targets.from_campaign.unwrap();
        assert_eq!(from.campaign_id, id);
        assert_eq!(
            from.statuses,
            [TargetStatus::Success as i32, TargetStatus::Failed as i32],
            "the file's, then the flags'"
        );
        assert!(from.non_compliant && from.follow_reruns);
        assert_eq!(targets.platforms, [Platform::Linux as i32]);

        let (_dir, args) = file(
            "bad.yaml",
            &format!("targets:\n  from_campaign:\n    id: {id}\n    statuses: [running]\ncommand:\n  linux: uptime\n"),
        );
        let error = build(&args).unwrap_err().to_string();
        assert!(
            error.starts_with("targets.from_campaign.statuses[0]: 'running' is not a status a target ends in"),
            "{error}"
        );

        let (_dir, args) = file(
            "no-id.yaml",
            "targets:\n  from_campaign: {non_compliant: true}\ncommand:\n  linux: uptime\n",
        );
        let error = build(&args).unwrap_err().to_string();
        assert!(error.starts_with("targets.from_campaign.id: is required"), "{error}");

        let flags = SpecArgs {
            linux: vec!["uptime".into()],
            non_compliant: true,
            ..Default::default()
        };
        let error = build(&flags).unwrap_err().to_string();
        assert!(
            error.starts_with("--non-compliant: chooses among the targets of an earlier campaign"),
            "{error}"
        );
        let flags = SpecArgs {
            from_campaign: Some(id.into()),
            ..flags
        };
        let from = build(&flags).unwrap().targets.unwrap().from_campaign.unwrap();
        assert!(from.non_compliant && from.statuses.is_empty() && !from.follow_reruns);
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
                .starts_with("--execution-timeout: 'soon' is not a duration")
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
        for name in [
            "campaign.yaml",
            "patch-baseline.toml",
            "patch-tuesday.yaml",
            "install-non-compliant.yaml",
        ] {
            let args = SpecArgs {
                file: Some(examples.join(name)),
                // The one example that takes an ended campaign's targets
                // is given it as its header says.
                from_campaign: (name == "install-non-compliant.yaml")
                    .then(|| "0190d3c4-0000-7000-8000-000000000001".into()),
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

    #[test]
    fn a_campaign_as_show_prints_it_reads_back_as_its_spec_and_flags_still_win() {
        let spec = CampaignSpec {
            name: "patch".into(),
            targets: Some(TargetSelector {
                account_ids: vec!["111111111111".into()],
                regions: vec!["us-east-1".into()],
                ..Default::default()
            }),
            command: Some(Command {
                kind: Some(command::Kind::Document(Document {
                    name: "AWS-RunPatchBaseline".into(),
                    version: String::new(),
                    parameters: BTreeMap::from([(
                        "Operation".to_owned(),
                        ParameterValues {
                            values: vec!["Scan".into()],
                        },
                    )]),
                })),
                execution_timeout_seconds: 1800,
                delivery_timeout_seconds: 0,
            }),
            client_token: "patch-2026-12".into(),
            ..Default::default()
        };
        let shown = Campaign {
            id: "3f2a".into(),
            spec: Some(spec.clone()),
            state: muster_proto::v1::CampaignState::Succeeded as i32,
            ..Default::default()
        };
        let yaml = serde_yaml_ng::to_string(&muster_proto::json::to_json(&shown)).unwrap();
        let (_dir, mut args) = file("shown.yaml", &yaml);
        let read = build(&args).unwrap();
        assert_eq!(read.name, spec.name);
        assert_eq!(read.targets, spec.targets);
        assert_eq!(read.command, spec.command);
        assert_eq!(read.client_token, "patch-2026-12");

        args.client_token = Some("patch-again".into());
        args.params = vec!["Operation=Install".into()];
        args.regions = vec!["eu-west-1".into()];
        let read = build(&args).unwrap();
        assert_eq!(read.client_token, "patch-again");
        assert_eq!(read.targets.unwrap().regions, ["us-east-1", "eu-west-1"]);
        match read.command.unwrap().kind {
            Some(command::Kind::Document(d)) => assert_eq!(d.parameters["Operation"].values, ["Scan", "Install"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_campaign_document_with_a_typo_is_refused_naming_it() {
        let (_dir, args) = file(
            "shown.yaml",
            "id: x\nspec:\n  name: patch\n  rate:\n    maxConcurency: 10%\n",
        );
        let err = build(&args).unwrap_err().to_string();
        assert!(err.contains("muster.v1.Campaign"), "{err}");
        assert!(err.contains("maxConcurency"), "{err}");
    }

    #[test]
    fn flags_that_do_not_fit_the_command_are_refused_not_ignored() {
        let args = SpecArgs {
            linux: vec!["uptime".into()],
            params: vec!["Operation=Scan".into()],
            ..Default::default()
        };
        let err = build(&args).unwrap_err().to_string();
        assert!(
            err.starts_with("--param: 'Operation=Scan' is a document's parameter"),
            "{err}"
        );
        let args = SpecArgs {
            document: Some("AWS-RunPatchBaseline".into()),
            working_directory: Some("/tmp".into()),
            ..Default::default()
        };
        let err = build(&args).unwrap_err().to_string();
        assert!(err.starts_with("--working-directory:"), "{err}");
    }

    /// The API reads 0 as "not given", so a 0 someone writes would quietly
    /// become the default: it is refused, in a flag or in a file, naming
    /// where it was written, the rule and what leaving it out gives.
    #[test]
    fn a_written_zero_is_refused_not_taken_for_the_default() {
        let flags = [
            (
                SpecArgs {
                    batch_size: Some(0),
                    ..Default::default()
                },
                "--batch-size: must be 1 to 50 instances a SendCommand, not 0 (leave it out for 50)",
            ),
            (
                SpecArgs {
                    api_rate: Some(0.0),
                    ..Default::default()
                },
                "--api-rate: must be 0.1 to 1000 calls per second, not 0 (leave it out for the controller's default)",
            ),
            (
                SpecArgs {
                    keep_bytes: Some(0),
                    ..Default::default()
                },
                "--keep-bytes: must be 1 to 1048576 bytes, not 0 (leave it out for 8192)",
            ),
            (
                SpecArgs {
                    execution_timeout: Some("0s".into()),
                    ..Default::default()
                },
                "--execution-timeout: must be 1 second to 48 hours, not 0 (leave it out for an hour for a script, \
                 the document's own timeouts for a document)",
            ),
            (
                SpecArgs {
                    delivery_timeout: Some("0".into()),
                    ..Default::default()
                },
                "--delivery-timeout: must be 30 seconds to 30 days, not 0 (leave it out for 10 minutes)",
            ),
            (
                SpecArgs {
                    session_duration: Some("0m".into()),
                    ..Default::default()
                },
                "--session-duration: must be 15 minutes to an hour, not 0 (leave it out for an hour)",
            ),
            (
                SpecArgs {
                    execution_timeout: Some("500ms".into()),
                    ..Default::default()
                },
                "--execution-timeout: '500ms' is less than a second; these durations are whole seconds",
            ),
        ];
        for (args, expected) in flags {
            assert_eq!(build(&args).unwrap_err().to_string(), expected);
        }
        for (text, field) in [
            ("rate:\n  batch_size: 0\n", "rate.batch_size: must be 1 to 50"),
            (
                "rate:\n  api_calls_per_second: 0.0\n",
                "rate.api_calls_per_second: must be 0.1",
            ),
            ("output:\n  keep_bytes: 0\n", "output.keep_bytes: must be 1 to"),
            (
                "command:\n  linux: x\n  execution_timeout: 0\n",
                "command.execution_timeout: must be",
            ),
            (
                "command:\n  linux: x\n  delivery_timeout: 0s\n",
                "command.delivery_timeout: must be",
            ),
            ("access:\n  session_duration: 0\n", "access.session_duration: must be"),
            (
                "command:\n  linux: x\nthen:\n  - linux: y\n    execution_timeout: 0\n",
                "then[0].execution_timeout: must be",
            ),
        ] {
            let (_dir, args) = file("zero.yaml", text);
            let err = build(&args).unwrap_err().to_string();
            assert!(err.starts_with(field), "{text}: {err}");
        }
        // Given, and not 0, they are taken as written.
        let (_dir, mut args) = file("set.yaml", "rate:\n  batch_size: 7\noutput:\n  keep_bytes: 100\n");
        args.api_rate = Some(2.5);
        args.execution_timeout = Some("90s".into());
        let spec = build(&args).unwrap();
        let rate = spec.rate.unwrap();
        assert_eq!((rate.batch_size, rate.api_calls_per_second), (7, 2.5));
        assert_eq!(spec.output.unwrap().keep_bytes, 100);
        assert_eq!(spec.command.unwrap().execution_timeout_seconds, 90);
    }
}
