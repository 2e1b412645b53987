//! Fuzzing campaign validation, the first thing every submitted spec meets:
//! hostile or absurd specs are refused with errors that name a field and stay
//! short, never a panic; what passes is within every limit and passes again
//! unchanged. Bounded in time (MUSTER_FUZZ_SECONDS); see muster_common::fuzz.

use muster_common::fuzz::{self, Outcome};
use muster_controller::validate::{self, Defaults, MAX_ACCOUNTS, MAX_BATCH, MAX_REGIONS};
use muster_proto::v1::{
    AccessConfig, CampaignSpec, CampaignTargets, Command, Document, OutputConfig, ParameterValues, RateControl,
    ScopeSelector, Script, Stage, TagFilter, TargetSelector, command,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use prost::Message as _;

/// Strings that look right, nearly right, or nothing like it.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9-]{0,20}",
        2 => "[0-9]{12}",
        1 => "(ou|r)-[a-z0-9]{4}(-[a-z0-9]{8})?",
        1 => "(us|eu|ap)-(east|west|north)-[0-9]",
        1 => "i-[0-9a-f]{8,17}",
        1 => "[0-9]{0,3}%?",
        1 => "arn:aws:iam::\\{account\\}:role/[a-z*-]{0,10}",
        1 => any::<String>(),
        1 => Just(String::new()),
        1 => (0usize..200_000).prop_map(|n| "x".repeat(n)),
    ]
}

fn list() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        4 => vec(text(), 0..4),
        1 => (0usize..1_500).prop_map(|n| (0..n).map(|i| format!("{i:012}")).collect()),
    ]
}

fn number() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..100, any::<u32>(), Just(u32::MAX)]
}

/// Mostly `valid`, sometimes anything: specs near the valid ones find more
/// than specs that fail on their first field.
fn or<T: Clone + std::fmt::Debug + 'static>(valid: T, random: impl Strategy<Value = T> + 'static) -> BoxedStrategy<T> {
    prop_oneof![9 => Just(valid), 1 => random].boxed()
}

fn strings(valid: &[&str]) -> BoxedStrategy<Vec<String>> {
    or(valid.iter().map(|s| (*s).to_owned()).collect(), list())
}

fn command_strategy() -> impl Strategy<Value = Option<Command>> {
    let script = (strings(&["echo patched"]), strings(&[]), or(String::new(), text())).prop_map(
        |(linux_lines, windows_lines, working_directory)| {
            command::Kind::Script(Script {
                linux_lines,
                windows_lines,
                working_directory,
            })
        },
    );
    let document = (
        or("AWS-RunPatchBaseline".to_owned(), text()),
        or(String::new(), text()),
        btree_map(text(), list(), 0..3),
    )
        .prop_map(|(name, version, parameters)| {
            command::Kind::Document(Document {
                name,
                version,
                parameters: parameters
                    .into_iter()
                    .map(|(k, values)| (k, ParameterValues { values }))
                    .collect(),
            })
        });
    proptest::option::weighted(
        0.95,
        (
            proptest::option::weighted(0.95, prop_oneof![3 => script, 1 => document]),
            or(600, number()),
            or(600, number()),
        )
            .prop_map(|(kind, execution_timeout_seconds, delivery_timeout_seconds)| Command {
                kind,
                execution_timeout_seconds,
                delivery_timeout_seconds,
            }),
    )
}

fn spec() -> impl Strategy<Value = CampaignSpec> {
    let targets = (
        strings(&["111111111111", "222222222222"]),
        strings(&[]),
        strings(&[]),
        strings(&["us-east-1", "eu-west-1"]),
        or(
            vec![],
            vec(
                (text(), list()).prop_map(|(key, values)| TagFilter { key, values }),
                0..3,
            ),
        ),
        strings(&[]),
        or(vec![], vec(-2i32..6, 0..3)),
        or(
            vec![],
            vec(
                (
                    or("111111111111".to_owned(), text()),
                    or("us-east-1".to_owned(), text()),
                    list(),
                )
                    .prop_map(|(account_id, region, instance_ids)| ScopeSelector {
                        account_id,
                        region,
                        instance_ids,
                    }),
                0..3,
            ),
        ),
        proptest::option::weighted(
            0.1,
            (
                or("0190d3c4-0000-7000-8000-000000000001".to_owned(), text()),
                vec(-1i32..14, 0..4),
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
            )
                .prop_map(|(campaign_id, statuses, non_compliant, follow_reruns, critical)| {
                    CampaignTargets {
                        campaign_id,
                        statuses,
                        non_compliant,
                        follow_reruns,
                        critical,
                    }
                }),
        ),
    )
        .prop_map(
            |(
                account_ids,
                organizational_unit_ids,
                exclude_account_ids,
                regions,
                tags,
                instance_ids,
                platforms,
                scopes,
                from_campaign,
            )| {
                TargetSelector {
                    account_ids,
                    organizational_unit_ids,
                    exclude_account_ids,
                    regions,
                    tags,
                    instance_ids,
                    platforms,
                    scopes,
                    from_campaign,
                }
            },
        );
    let rate = (
        or("10%".to_owned(), text()),
        or("1".to_owned(), text()),
        or(10, number()),
        or(5.0, prop_oneof![Just(f64::NAN), Just(f64::INFINITY), -5.0..2000.0f64]),
    )
        .prop_map(
            |(max_concurrency, max_errors, batch_size, api_calls_per_second)| RateControl {
                max_concurrency,
                max_errors,
                batch_size,
                api_calls_per_second,
            },
        );
    let output = (
        or(String::new(), text()),
        or(String::new(), text()),
        or(String::new(), text()),
        or(0, number()),
    )
        .prop_map(
            |(s3_bucket, s3_key_prefix, cloudwatch_log_group, keep_bytes)| OutputConfig {
                s3_bucket,
                s3_key_prefix,
                cloudwatch_log_group,
                keep_bytes,
            },
        );
    let access = (
        or(String::new(), text()),
        or(String::new(), text()),
        or("ext-1".to_owned(), text()),
        or(0, number()),
        or(String::new(), text()),
    )
        .prop_map(
            |(role_name, role_arn_template, external_id, session_duration_seconds, partition)| AccessConfig {
                role_name,
                role_arn_template,
                external_id,
                session_duration_seconds,
                partition,
            },
        );
    (
        (
            or("patch".to_owned(), text()),
            or(String::new(), text()),
            or(String::new(), text()),
            or(Default::default(), btree_map(text(), text(), 0..3)),
            any::<bool>(),
        ),
        proptest::option::weighted(0.95, targets),
        command_strategy(),
        proptest::option::weighted(0.9, rate),
        proptest::option::weighted(0.9, output),
        proptest::option::weighted(0.9, access),
        (
            or(vec![], vec(stage_strategy(), 0..4)),
            or(vec![], vec(command_strategy(), 0..6)),
        ),
    )
        .prop_map(
            |(
                (name, description, client_token, labels, confirm_large),
                targets,
                command,
                rate,
                output,
                access,
                (stages, then),
            )| {
                CampaignSpec {
                    stages,
                    then: then.into_iter().flatten().collect(),
                    name,
                    description,
                    targets,
                    command,
                    rate,
                    output,
                    access,
                    client_token,
                    labels: labels.into_iter().collect(),
                    confirm_large,
                }
            },
        )
}

fn stage_strategy() -> impl Strategy<Value = Stage> {
    (
        or("canary".to_owned(), text()),
        strings(&["111111111111"]),
        strings(&["us-east-1"]),
        (
            or(String::new(), text()),
            or(String::new(), text()),
            or(String::new(), text()),
        ),
        or(0, number()),
        or(1, -1i32..4),
    )
        .prop_map(
            |(name, account_ids, regions, (share, max_concurrency, max_errors), bake_seconds, gate)| Stage {
                name,
                account_ids,
                regions,
                share,
                max_concurrency,
                max_errors,
                bake_seconds,
                gate,
                ..Default::default()
            },
        )
}

const FIELDS: &[&str] = &[
    "name",
    "description",
    "client_token",
    "labels",
    "targets",
    "command",
    "rate",
    "output",
    "access",
    "stages",
    "then",
];

fn check(spec: &CampaignSpec) -> Outcome {
    let defaults = Defaults {
        role_name: "muster-execution".into(),
        api_calls_per_second: 10.0,
    };
    match validate::validate(spec.clone(), &defaults) {
        Err(invalid) => {
            if invalid.0.is_empty() {
                return Err("refused without saying why".into());
            }
            for error in &invalid.0 {
                // "targets.account_ids[3]: ...", "labels['k']: ...": a field
                // of the spec, then the rule.
                let top = error.split(['.', '[', ':']).next().unwrap_or_default();
                if !FIELDS.contains(&top) || !error.contains(": ") {
                    return Err(format!("an error that names no field: {error:.200}"));
                }
                if error.len() > 1_000 {
                    return Err(format!(
                        "an error of {} bytes quotes too much: {error:.200}",
                        error.len()
                    ));
                }
            }
            Ok(false)
        }
        Ok(valid) => {
            let targets = valid.targets.as_ref().ok_or("accepted without targets")?;
            let rate = valid.rate.as_ref().ok_or("accepted without a rate")?;
            if targets.account_ids.len() > MAX_ACCOUNTS || targets.regions.len() > MAX_REGIONS {
                return Err("accepted more accounts or regions than allowed".into());
            }
            if targets
                .account_ids
                .iter()
                .any(|a| a.len() != 12 || !a.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(format!(
                    "accepted an account id that is not 12 digits: {:?}",
                    targets.account_ids
                ));
            }
            if !(1..=MAX_BATCH).contains(&rate.batch_size) {
                return Err(format!("accepted batch_size {}", rate.batch_size));
            }
            if !(rate.api_calls_per_second.is_finite() && rate.api_calls_per_second > 0.0) {
                return Err(format!("accepted api_calls_per_second {}", rate.api_calls_per_second));
            }
            if valid.command.as_ref().and_then(|c| c.kind.as_ref()).is_none() {
                return Err("accepted without a command".into());
            }
            if valid.encoded_len() > 4 * 1024 * 1024 {
                return Err(format!("accepted a spec of {} bytes", valid.encoded_len()));
            }
            let again = validate::validate(valid.clone(), &defaults)
                .map_err(|e| format!("a validated spec fails validation: {:?}", e.0))?;
            if again != valid {
                return Err("validating twice changed the spec".into());
            }
            Ok(true)
        }
    }
}

#[test]
fn fuzz_campaign_validation() {
    let report = fuzz::run("fuzz_campaign_validation", spec(), check);
    assert!(report.cases > 100, "too few cases to mean anything: {report:?}");
    assert!(report.accepted > 0, "no valid spec was generated: {report:?}");
    assert!(report.accepted < report.cases, "nothing was refused: {report:?}");
}
