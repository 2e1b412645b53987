//! Every field of a campaign spec, checked before anything is stored
//! (invariant 6). Each error names the field and the rule:
//! "targets.account_ids[0]: '12345' is not a 12-digit account id".
//! A spec that passes comes back with its defaults filled in.

use muster_common::domain::{
    AccountId, Partition, RateLimit, RegionName, RoleArn, check_external_id, check_role_name, clip,
};
use muster_proto::v1::CampaignSpec;

mod commands;
mod stages;
mod targets;

use commands::check_command;
use stages::check_stages;
pub use stages::{MAX_BAKE_SECONDS, MAX_STAGES};
use targets::check_targets;
pub(crate) use targets::end_statuses;

/// The longest role session AWS grants when it is assumed from another
/// role's session (role chaining), as workers always do.
pub const MAX_CHAINED_SESSION_SECONDS: u32 = 3_600;
/// SendCommand takes at most 50 instance ids.
pub const MAX_BATCH: u32 = 50;
/// Accounts named in one spec.
pub const MAX_ACCOUNTS: usize = 1_000;
/// OUs named in one spec.
pub const MAX_OUS: usize = 100;
/// Regions named in one spec.
pub const MAX_REGIONS: usize = 40;
/// Tag filters in one spec.
pub const MAX_TAG_FILTERS: usize = 20;
/// Values of one tag filter.
pub const MAX_TAG_VALUES: usize = 50;
/// Instance ids named in one spec.
pub const MAX_INSTANCE_IDS: usize = 10_000;
/// Exact (account, region) scopes named in one spec.
pub const MAX_SCOPES: usize = 10_000;
/// Script lines, in bytes, per platform. SSM documents and their parameters
/// are limited in size; a script this long belongs in a document or in S3.
pub const MAX_SCRIPT_BYTES: usize = 100 * 1024;
/// Serialized document parameters, in bytes.
pub const MAX_PARAMETER_BYTES: usize = 100 * 1024;
/// Most commands after the first in a campaign's sequence (`then`).
pub const MAX_THEN: usize = 4;
/// Output bytes kept per step and stream.
pub const MAX_KEEP_BYTES: u32 = 1024 * 1024;
/// Default bytes kept.
pub const DEFAULT_KEEP_BYTES: u32 = 8 * 1024;

/// Controller defaults applied to empty fields.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// Execution role name.
    pub role_name: String,
    /// API calls per second per (account, region).
    pub api_calls_per_second: f64,
}

/// The rule of a short name (a stage, an approval rule, a webhook).
pub const SHORT_NAME_RULE: &str = "1 to 64 of letters, digits and _.-";

/// Whether `name` is 1 to 64 of letters, digits and _.-.
pub fn is_short_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// The errors of a spec, each "field: rule".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct Invalid(pub Vec<String>);

impl Invalid {
    /// INVALID_ARGUMENT: see [`invalid_argument`]; `prefix` is the path of
    /// the spec in the request ("spec.").
    pub fn into_status(self, prefix: &str) -> tonic::Status {
        invalid_argument(&self.0, prefix)
    }
}

/// The `google.rpc.ErrorInfo` domain of muster's refusals.
pub const ERROR_DOMAIN: &str = "muster.v1";

/// INVALID_ARGUMENT for `errors` ("field: rule" each): the message people
/// read (every error, joined), and the `google.rpc` details clients read: a
/// BadRequest with one FieldViolation per error and field it names, its
/// field the path in the request (`prefix` + field), and an ErrorInfo (reason INVALID_ARGUMENT,
/// domain [`ERROR_DOMAIN`]).
pub fn invalid_argument(errors: &[String], prefix: &str) -> tonic::Status {
    use tonic_types::{ErrorDetails, FieldViolation, StatusExt};
    let violations: Vec<FieldViolation> = errors
        .iter()
        .flat_map(|e| {
            // A rule about several fields ("cron, at: give one of them") is
            // one violation per field, as AIP-193 has it, each with the rule.
            let (fields, rule) = fields_and_rule(e);
            fields
                .into_iter()
                .map(move |field| FieldViolation::new(format!("{prefix}{field}"), rule))
        })
        .collect();
    let count = violations.len();
    let mut details = ErrorDetails::with_bad_request(violations);
    details.set_error_info(
        "INVALID_ARGUMENT",
        ERROR_DOMAIN,
        [("violations".to_owned(), count.to_string())],
    );
    tonic::Status::with_error_details(tonic::Code::InvalidArgument, errors.join("; "), details)
}

/// The fields an error ("field: rule") names and its rule: "cron, at: give
/// one of them" is (["cron", "at"], "give one of them"). What a field quotes
/// in its brackets is its own (`labels['a, b: c']: ...` names one field);
/// an error without a field is ([""], the error).
fn fields_and_rule(error: &str) -> (Vec<&str>, &str) {
    let (mut fields, mut start) = (Vec::new(), 0);
    let (mut depth, mut quoted) = (0u32, false);
    for (at, c) in error.char_indices() {
        match c {
            '\'' if depth > 0 => quoted = !quoted,
            '[' if !quoted => depth += 1,
            ']' if !quoted => depth = depth.saturating_sub(1),
            ',' | ':' if depth == 0 && error[at + 1..].starts_with(' ') => {
                fields.push(&error[start..at]);
                start = at + 2;
                if c == ':' {
                    return (fields, &error[start..]);
                }
            }
            _ => {}
        }
    }
    (vec![""], error)
}

/// INVALID_ARGUMENT for one `error` ("field: rule", the field named by its
/// path in the request), with the details of [`invalid_argument`], as
/// every refusal of bad input answers.
pub fn refused(error: impl Into<String>) -> tonic::Status {
    invalid_argument(&[error.into()], "")
}

struct Errors(Vec<String>);

impl Errors {
    fn add(&mut self, field: impl std::fmt::Display, rule: impl std::fmt::Display) {
        if self.0.len() < 20 {
            self.0.push(format!("{field}: {rule}"));
        }
    }
}

fn text(errors: &mut Errors, field: &str, value: &str, max: usize) {
    if value.chars().count() > max {
        errors.add(field, format!("{} characters; at most {max}", value.chars().count()));
    }
    if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        errors.add(field, "must not contain control characters");
    }
}

/// Checks `spec` and fills in its defaults; every broken rule is reported,
/// each naming its field.
pub fn validate(mut spec: CampaignSpec, defaults: &Defaults) -> Result<CampaignSpec, Invalid> {
    let mut errors = Errors(Vec::new());
    check_identity(&spec, &mut errors);
    // Before the targets' regions are sorted: errors name them where written.
    check_partition(&spec, &mut errors);
    check_targets(spec.targets.get_or_insert_with(Default::default), &mut errors);
    check_command(
        spec.command.get_or_insert_with(Default::default),
        "command",
        &mut errors,
    );
    if spec.then.len() > MAX_THEN {
        errors.add("then", format!("{} commands; at most {MAX_THEN}", spec.then.len()));
    }
    for (i, command) in spec.then.iter_mut().enumerate() {
        check_command(command, &format!("then[{i}]"), &mut errors);
    }
    check_stages(&spec.stages, &mut errors);
    // Output only: the controller fills it at submit.
    for stage in &mut spec.stages {
        stage.ou_account_ids.clear();
    }
    check_rate(spec.rate.get_or_insert_with(Default::default), defaults, &mut errors);
    check_output(spec.output.get_or_insert_with(Default::default), &mut errors);
    check_access(spec.access.get_or_insert_with(Default::default), defaults, &mut errors);
    if errors.0.is_empty() {
        Ok(spec)
    } else {
        Err(Invalid(errors.0))
    }
}

/// Every region named is in the campaign's partition: the execution roles'
/// ARNs are of that partition, so a region of another cannot be reached.
fn check_partition(spec: &CampaignSpec, errors: &mut Errors) {
    let Ok(partition) = Partition::parse(spec.access.as_ref().map_or("", |a| a.partition.as_str())) else {
        return;
    };
    let (regions, scopes) = spec
        .targets
        .as_ref()
        .map_or((&[][..], &[][..]), |t| (&t.regions[..], &t.scopes[..]));
    let named = regions
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("targets.regions[{i}]"), r))
        .chain(
            scopes
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("targets.scopes[{i}].region"), &s.region)),
        )
        .chain(spec.stages.iter().enumerate().flat_map(|(i, stage)| {
            stage
                .regions
                .iter()
                .enumerate()
                .map(move |(j, r)| (format!("stages[{i}].regions[{j}]"), r))
        }));
    for (field, region) in named {
        if let Ok(name) = RegionName::parse(region)
            && name.partition() != partition
        {
            errors.add(
                field,
                format!(
                    "'{region}' is in partition {}, not the campaign's {} (access.partition)",
                    name.partition().as_str(),
                    partition.as_str()
                ),
            );
        }
    }
}

/// Name, description, client token and labels.
fn check_identity(spec: &CampaignSpec, errors: &mut Errors) {
    text(errors, "name", &spec.name, 128);
    text(errors, "description", &spec.description, 1024);
    if spec.client_token.len() > 64
        || !spec
            .client_token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        errors.add("client_token", "1 to 64 of letters, digits and _.-");
    }
    if spec.labels.len() > 32 {
        errors.add("labels", format!("{} labels; at most 32", spec.labels.len()));
    }
    for (key, value) in &spec.labels {
        if key.is_empty() || key.len() > 64 {
            errors.add(format!("labels['{}']", clip(key)), "keys are 1 to 64 characters");
        }
        text(errors, &format!("labels['{}']", clip(key)), value, 256);
    }
}

/// Concurrency, error threshold, batch size and API rate, with their
/// defaults.
fn check_rate(rate: &mut muster_proto::v1::RateControl, defaults: &Defaults, errors: &mut Errors) {
    if rate.max_concurrency.trim().is_empty() {
        rate.max_concurrency = "50".into();
    }
    if let Err(e) = RateLimit::parse(&rate.max_concurrency, 1) {
        errors.add("rate.max_concurrency", e);
    }
    if !rate.max_errors.trim().is_empty()
        && let Err(e) = RateLimit::parse(&rate.max_errors, 0)
    {
        errors.add("rate.max_errors", e);
    }
    if rate.batch_size == 0 {
        rate.batch_size = MAX_BATCH;
    } else if rate.batch_size > MAX_BATCH {
        errors.add(
            "rate.batch_size",
            format!(
                "{} is more than {MAX_BATCH}, SendCommand's limit of instance ids",
                rate.batch_size
            ),
        );
    }
    if rate.api_calls_per_second == 0.0 {
        rate.api_calls_per_second = defaults.api_calls_per_second;
    } else if !(0.1..=1000.0).contains(&rate.api_calls_per_second) {
        errors.add(
            "rate.api_calls_per_second",
            format!("{}; must be 0.1 to 1000", rate.api_calls_per_second),
        );
    }
}

/// Where full output goes (S3, CloudWatch Logs) and how much the store
/// keeps.
fn check_output(output: &mut muster_proto::v1::OutputConfig, errors: &mut Errors) {
    if !output.s3_bucket.is_empty() && !bucket_name_ok(&output.s3_bucket) {
        errors.add(
            "output.s3_bucket",
            format!(
                "'{}' is not an S3 bucket name (3 to 63 of a-z, 0-9, . and -)",
                clip(&output.s3_bucket)
            ),
        );
    }
    if output.s3_key_prefix.len() > 400 {
        errors.add("output.s3_key_prefix", "at most 400 characters");
    }
    if !output.cloudwatch_log_group.is_empty()
        && (output.cloudwatch_log_group.len() > 512
            || !output
                .cloudwatch_log_group
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-/#".contains(c)))
    {
        errors.add("output.cloudwatch_log_group", "1 to 512 of letters, digits and ._-/#");
    }
    if output.keep_bytes == 0 {
        output.keep_bytes = DEFAULT_KEEP_BYTES;
    } else if output.keep_bytes > MAX_KEEP_BYTES {
        errors.add(
            "output.keep_bytes",
            format!("{}; at most {MAX_KEEP_BYTES}", output.keep_bytes),
        );
    }
}

/// How workers get into each target account: partition, execution role
/// (by name or ARN template), ExternalId and session length.
fn check_access(access: &mut muster_proto::v1::AccessConfig, defaults: &Defaults, errors: &mut Errors) {
    if access.partition.is_empty() {
        access.partition = "aws".into();
    }
    let partition = match Partition::parse(&access.partition) {
        Ok(p) => p,
        Err(e) => {
            errors.add("access.partition", e);
            Partition::Aws
        }
    };
    if !access.role_arn_template.is_empty() {
        let probe = AccountId::parse("123456789012").expect("a valid account id");
        if let Err(e) = RoleArn::from_template(&access.role_arn_template, &probe, partition) {
            errors.add("access.role_arn_template", e);
        }
    } else {
        if access.role_name.is_empty() {
            access.role_name = defaults.role_name.clone();
        }
        if let Err(e) = check_role_name(&access.role_name) {
            errors.add("access.role_name", e);
        }
    }
    if !access.external_id.is_empty()
        && let Err(e) = check_external_id(&access.external_id)
    {
        errors.add("access.external_id", e);
    }
    if access.session_duration_seconds == 0 {
        access.session_duration_seconds = 3_600;
    } else if !(900..=MAX_CHAINED_SESSION_SECONDS).contains(&access.session_duration_seconds) {
        errors.add(
            "access.session_duration_seconds",
            format!(
                "{}; must be 900 to 3600: workers assume the execution role from their own role's session, and \
                 AWS caps such chained sessions at one hour (workers renew sessions before they expire, so a long \
                 campaign needs no longer one)",
                access.session_duration_seconds
            ),
        );
    }
}

fn bucket_name_ok(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The role ARN of an account under a (validated) spec.
pub fn role_arn(spec: &CampaignSpec, account: &str) -> String {
    let access = spec.access.clone().unwrap_or_default();
    let partition = Partition::parse(&access.partition).unwrap_or(Partition::Aws);
    let account = AccountId::parse(account).expect("accounts are validated before roles are built");
    if access.role_arn_template.is_empty() {
        RoleArn::named(&access.role_name, &account, partition)
    } else {
        RoleArn::from_template(&access.role_arn_template, &account, partition)
    }
    .map(|arn| arn.to_string())
    .expect("role settings are validated at submit")
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_proto::v1::{AccessConfig, Command, Document, RateControl, Script, TargetSelector, command};

    fn defaults() -> Defaults {
        Defaults {
            role_name: "muster-execution".into(),
            api_calls_per_second: 10.0,
        }
    }

    fn good() -> CampaignSpec {
        CampaignSpec {
            name: "patch".into(),
            targets: Some(TargetSelector {
                account_ids: vec!["111111111111".into()],
                regions: vec!["us-east-1".into()],
                ..Default::default()
            }),
            command: Some(Command {
                kind: Some(command::Kind::Script(Script {
                    linux_lines: vec!["uptime".into()],
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn errors_of(spec: CampaignSpec) -> String {
        validate(spec, &defaults()).unwrap_err().to_string()
    }

    #[test]
    fn a_refusal_has_one_violation_per_field_it_names() {
        use tonic_types::StatusExt;
        let errors = [
            "cron, at: give one of them, not both".to_owned(),
            "labels['a, b: c']: keys are 1 to 64 characters".to_owned(),
            "no field here, none at all".to_owned(),
        ];
        let status = invalid_argument(&errors, "spec.");
        assert_eq!(status.message(), errors.join("; "), "people read every error as it was");
        let bad = status.get_details_bad_request().unwrap();
        let said: Vec<(&str, &str)> = bad
            .field_violations
            .iter()
            .map(|v| (v.field.as_str(), v.description.as_str()))
            .collect();
        assert_eq!(
            said,
            [
                ("spec.cron", "give one of them, not both"),
                ("spec.at", "give one of them, not both"),
                ("spec.labels['a, b: c']", "keys are 1 to 64 characters"),
                ("spec.", "no field here, none at all"),
            ]
        );
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.metadata["violations"], "4");
    }

    #[test]
    fn a_good_spec_gets_its_defaults() {
        let spec = validate(good(), &defaults()).unwrap();
        let rate = spec.rate.unwrap();
        assert_eq!(rate.batch_size, 50);
        assert_eq!(rate.max_concurrency, "50");
        assert_eq!(rate.api_calls_per_second, 10.0);
        assert_eq!(spec.access.as_ref().unwrap().role_name, "muster-execution");
        assert_eq!(spec.command.as_ref().unwrap().execution_timeout_seconds, 3600);
        assert_eq!(spec.output.unwrap().keep_bytes, DEFAULT_KEEP_BYTES);
        let spec = validate(good(), &defaults()).unwrap();
        assert_eq!(
            role_arn(&spec, "222222222222"),
            "arn:aws:iam::222222222222:role/muster-execution"
        );
    }

    #[test]
    fn the_acceptance_cases_name_their_field() {
        let mut spec = good();
        spec.targets.as_mut().unwrap().account_ids = vec!["12345".into()];
        assert_eq!(
            errors_of(spec),
            "targets.account_ids[0]: '12345' is not a 12-digit account id"
        );

        let mut spec = good();
        spec.targets.as_mut().unwrap().regions = vec!["us-middle-7".into()];
        assert!(errors_of(spec).starts_with("targets.regions[0]: 'us-middle-7' is not an AWS region"));

        let mut spec = good();
        spec.rate = Some(RateControl {
            max_concurrency: "110%".into(),
            ..Default::default()
        });
        assert!(errors_of(spec).starts_with("rate.max_concurrency: '110%' is not a count"));

        let mut spec = good();
        spec.rate = Some(RateControl {
            batch_size: 51,
            ..Default::default()
        });
        assert_eq!(
            errors_of(spec),
            "rate.batch_size: 51 is more than 50, SendCommand's limit of instance ids"
        );

        let mut spec = good();
        spec.command = Some(Command {
            kind: Some(command::Kind::Script(Script::default())),
            ..Default::default()
        });
        assert_eq!(
            errors_of(spec),
            "command.script: is empty: give linux_lines and/or windows_lines"
        );

        let mut spec = good();
        spec.targets.as_mut().unwrap().account_ids = (0..10_000).map(|i| format!("{:012}", i)).collect();
        assert!(errors_of(spec).starts_with("targets.account_ids: 10000 accounts; at most 1000"));

        let mut spec = good();
        spec.command = Some(Command {
            kind: Some(command::Kind::Script(Script {
                linux_lines: vec!["x".repeat(1024 * 1024)],
                ..Default::default()
            })),
            ..Default::default()
        });
        assert!(errors_of(spec).starts_with("command.script.linux_lines: 1048577 bytes; at most 102400"));
    }

    #[test]
    fn exact_scopes_stand_alone_and_name_each_pair_once() {
        let scope = |account: &str, region: &str, ids: &[&str]| muster_proto::v1::ScopeSelector {
            account_id: account.into(),
            region: region.into(),
            instance_ids: ids.iter().map(|i| (*i).to_owned()).collect(),
        };
        let mut spec = good();
        let targets = spec.targets.as_mut().unwrap();
        targets.account_ids.clear();
        targets.regions.clear();
        targets.scopes = vec![
            scope(
                "222222222222",
                "us-east-1",
                &["i-0000000000000000b", "i-0000000000000000a"],
            ),
            scope("111111111111", "eu-west-1", &[]),
        ];
        let spec = validate(spec, &defaults()).unwrap();
        let scopes = spec.targets.unwrap().scopes;
        assert_eq!(scopes[0].account_id, "111111111111", "sorted by account and region");
        assert_eq!(scopes[1].instance_ids, ["i-0000000000000000a", "i-0000000000000000b"]);

        let mut spec = good();
        spec.targets.as_mut().unwrap().scopes = vec![
            scope("111111111111", "us-east-1", &["i-0000000000000000a"]),
            scope("111111111111", "us-east-1", &["bogus"]),
            scope("1", "mars-1", &[]),
        ];
        let errors = errors_of(spec);
        for expected in [
            "targets.account_ids: must be empty when targets.scopes names the (account, region) pairs",
            "targets.regions: must be empty when targets.scopes names the (account, region) pairs",
            "targets.scopes[1]: 111111111111 us-east-1 is named twice",
            "targets.scopes[1].instance_ids[0]: ",
            "targets.scopes[2].account_id: '1' is not a 12-digit account id",
            "targets.scopes[2].region: 'mars-1' is not an AWS region",
        ] {
            assert!(errors.contains(expected), "{expected} in {errors}");
        }

        let mut spec = good();
        let targets = spec.targets.as_mut().unwrap();
        targets.account_ids.clear();
        targets.regions.clear();
        let ids: Vec<String> = (0..6_000).map(|n| format!("i-{n:017x}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        targets.scopes = vec![
            scope("111111111111", "us-east-1", &ids),
            scope("111111111111", "eu-west-1", &ids),
        ];
        assert_eq!(
            errors_of(spec),
            "targets.scopes: 12000 instance ids in all; at most 10000"
        );
    }

    #[test]
    fn an_earlier_campaigns_targets_stand_alone_beside_tags_and_platforms() {
        use muster_proto::v1::{CampaignTargets, Platform, TargetStatus};
        let from = |id: &str, statuses: &[i32]| CampaignTargets {
            campaign_id: id.into(),
            statuses: statuses.to_vec(),
            non_compliant: true,
            follow_reruns: false,
            critical: false,
        };
        let id = "0190d3c4-0000-7000-8000-000000000001";
        let mut spec = good();
        let targets = spec.targets.as_mut().unwrap();
        targets.account_ids.clear();
        targets.regions.clear();
        targets.platforms = vec![Platform::Linux as i32];
        let failed = TargetStatus::Failed as i32;
        targets.from_campaign = Some(from(id, &[failed, TargetStatus::Error as i32, failed]));
        let spec = validate(spec, &defaults()).unwrap();
        let taken = spec.targets.unwrap().from_campaign.unwrap();
        assert_eq!(
            taken.statuses,
            [failed, TargetStatus::Error as i32],
            "sorted, once each"
        );

        let mut spec = good();
        spec.targets.as_mut().unwrap().from_campaign = Some(from("c-1", &[TargetStatus::Running as i32, 99]));
        let errors = errors_of(spec);
        for expected in [
            "targets.from_campaign.campaign_id: 'c-1' is not a campaign id (a UUID)",
            "targets.from_campaign.statuses[0]: running is not a status a target ends in",
            "targets.from_campaign.statuses[1]: 99 is not a target status",
            "targets.account_ids: must be empty when targets.from_campaign names the campaign whose targets to take",
            "targets.regions: must be empty when targets.from_campaign",
        ] {
            assert!(errors.contains(expected), "{expected} in {errors}");
        }
        assert!(!errors.contains("name at least one account id"), "{errors}");

        let mut spec = good();
        let targets = spec.targets.as_mut().unwrap();
        targets.account_ids.clear();
        targets.regions.clear();
        targets.from_campaign = Some(from("", &[]));
        assert_eq!(errors_of(spec), "targets.from_campaign.campaign_id: is required");
    }

    #[test]
    fn stages_are_named_once_and_only_the_last_takes_the_rest() {
        use muster_proto::v1::Stage;
        let stage = |name: &str, share: &str| Stage {
            name: name.into(),
            share: share.into(),
            ..Default::default()
        };
        let mut spec = good();
        spec.stages = vec![stage("canary", "1"), stage("rest", "")];
        assert!(validate(spec, &defaults()).is_ok());

        let mut spec = good();
        spec.stages = vec![
            stage("rest", ""),
            Stage {
                account_ids: vec!["12".into()],
                ous: vec!["ou-nope".into()],
                tags: vec![muster_proto::v1::TagFilter {
                    key: String::new(),
                    values: vec![],
                }],
                regions: vec!["mars-1".into()],
                max_concurrency: "0".into(),
                max_errors: "x".into(),
                bake_seconds: 700_000,
                gate: 7,
                ..stage("rest", "150%")
            },
            stage("bad name!", "5"),
        ];
        let errors = errors_of(spec);
        for expected in [
            "stages[0].name: stage 'rest' has no accounts, OUs, regions, tags or share, so it takes every target left and must be the last",
            "stages[1].name: 'rest' names two stages",
            "stages[1].account_ids[0]: '12' is not a 12-digit account id",
            "stages[1].ous[0]: 'ou-nope'",
            "stages[1].tags[0].key: tag keys are 1 to 128 characters",
            "stages[1].regions[0]: 'mars-1' is not an AWS region",
            "stages[1].share: '150%'",
            "stages[1].max_concurrency: '0'",
            "stages[1].max_errors: 'x'",
            "stages[1].bake_seconds: 700000; at most 604800 (a week)",
            "stages[1].gate: AUTOMATIC or MANUAL",
            "stages[2].name: 1 to 64 of letters, digits and _.-",
        ] {
            assert!(errors.contains(expected), "{expected} in {errors}");
        }
    }

    #[test]
    fn the_last_stage_has_no_bake_or_gate_because_nothing_follows_it() {
        use muster_proto::v1::{Stage, StageGate};
        let stage = |name: &str, bake_seconds, gate: StageGate| Stage {
            name: name.into(),
            share: "1".into(),
            bake_seconds,
            gate: gate as i32,
            ..Default::default()
        };
        let mut spec = good();
        spec.stages = vec![
            stage("canary", 600, StageGate::Manual),
            stage("rest", 0, StageGate::Automatic),
        ];
        assert!(validate(spec, &defaults()).is_ok());

        let mut spec = good();
        spec.stages = vec![
            stage("canary", 600, StageGate::Manual),
            stage("rest", 1800, StageGate::Manual),
        ];
        let errors = errors_of(spec);
        for expected in [
            "stages[1].bake_seconds: 1800 on the last stage; a bake holds back the next stage and there is none",
            "stages[1].gate: MANUAL on the last stage; a gate holds back the next stage and there is none",
        ] {
            assert!(errors.contains(expected), "{expected} in {errors}");
        }
        assert!(!errors.contains("stages[0]"), "{errors}");
    }

    #[test]
    fn sessions_are_chained_so_at_most_an_hour() {
        for (seconds, ok) in [
            (0, true),
            (900, true),
            (3_600, true),
            (899, false),
            (3_601, false),
            (43_200, false),
        ] {
            let mut spec = good();
            spec.access = Some(AccessConfig {
                session_duration_seconds: seconds,
                ..Default::default()
            });
            match validate(spec, &defaults()) {
                Ok(spec) => {
                    assert!(ok, "{seconds} is accepted");
                    let granted = spec.access.unwrap().session_duration_seconds;
                    assert_eq!(granted, if seconds == 0 { 3_600 } else { seconds });
                }
                Err(e) => {
                    assert!(!ok, "{seconds}: {e}");
                    let text = e.to_string();
                    assert!(
                        text.starts_with(&format!(
                            "access.session_duration_seconds: {seconds}; must be 900 to 3600: "
                        )),
                        "{text}"
                    );
                    assert!(text.contains("chained sessions at one hour"), "{text}");
                }
            }
        }
    }

    #[test]
    fn several_errors_are_all_reported() {
        let mut spec = good();
        spec.targets.as_mut().unwrap().account_ids = vec!["x".into(), "111111111111".into(), "y".into()];
        spec.access = Some(AccessConfig {
            external_id: "!".into(),
            partition: "aws-moon".into(),
            ..Default::default()
        });
        spec.command = Some(Command {
            kind: Some(command::Kind::Document(Document {
                name: "no spaces allowed".into(),
                ..Default::default()
            })),
            delivery_timeout_seconds: 5,
            ..Default::default()
        });
        let message = errors_of(spec);
        for field in [
            "targets.account_ids[0]",
            "targets.account_ids[2]",
            "access.partition",
            "access.external_id",
            "command.document.name",
            "command.delivery_timeout_seconds",
        ] {
            assert!(message.contains(field), "{field} missing from: {message}");
        }
        assert!(!message.contains("targets.account_ids[1]"));
    }

    #[test]
    fn role_templates_need_an_account_placeholder() {
        let mut spec = good();
        spec.access = Some(AccessConfig {
            role_arn_template: "arn:aws:iam::111111111111:role/x".into(),
            ..Default::default()
        });
        assert_eq!(errors_of(spec), "access.role_arn_template: must contain {account}");
        let mut spec = good();
        spec.targets.as_mut().unwrap().regions = vec!["us-gov-west-1".into()];
        spec.access = Some(AccessConfig {
            role_arn_template: "arn:{partition}:iam::{account}:role/ops/muster".into(),
            partition: "aws-us-gov".into(),
            ..Default::default()
        });
        let spec = validate(spec, &defaults()).unwrap();
        assert_eq!(
            role_arn(&spec, "222222222222"),
            "arn:aws-us-gov:iam::222222222222:role/ops/muster"
        );
    }

    #[test]
    fn a_region_of_another_partition_is_refused_naming_both() {
        let mut spec = good();
        spec.targets.as_mut().unwrap().regions = vec!["us-east-1".into(), "cn-north-1".into()];
        assert_eq!(
            errors_of(spec),
            "targets.regions[1]: 'cn-north-1' is in partition aws-cn, not the campaign's aws (access.partition)"
        );
        let mut spec = good();
        spec.targets.as_mut().unwrap().regions = vec!["cn-north-1".into()];
        spec.access = Some(AccessConfig {
            partition: "aws-cn".into(),
            ..Default::default()
        });
        assert!(validate(spec, &defaults()).is_ok(), "its own partition's region");
    }
}
