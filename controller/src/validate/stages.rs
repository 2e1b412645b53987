//! A campaign's stages (waves).

use muster_common::domain::{AccountId, RateLimit, RegionName, check_ou_id};

use super::targets::check_tags;
use super::{Errors, MAX_ACCOUNTS, MAX_OUS, MAX_REGIONS, SHORT_NAME_RULE, is_short_name};

/// Stages of a campaign in one spec.
pub const MAX_STAGES: usize = 20;
/// The longest bake after a stage: a week.
pub const MAX_BAKE_SECONDS: u32 = 604_800;

/// Waves: named once each, valid selectors, shares and limits, and a stage
/// that takes every target left only at the end.
pub(super) fn check_stages(stages: &[muster_proto::v1::Stage], errors: &mut Errors) {
    if stages.len() > MAX_STAGES {
        errors.add("stages", format!("{} stages; at most {MAX_STAGES}", stages.len()));
        return;
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, stage) in stages.iter().enumerate() {
        let field = |name: &str| format!("stages[{i}].{name}");
        if !is_short_name(&stage.name) {
            errors.add(field("name"), SHORT_NAME_RULE);
        } else if !names.insert(stage.name.as_str()) {
            errors.add(field("name"), format!("'{}' names two stages", stage.name));
        }
        if stage.account_ids.len() > MAX_ACCOUNTS {
            errors.add(field("account_ids"), format!("at most {MAX_ACCOUNTS} accounts"));
        }
        for (j, account) in stage.account_ids.iter().enumerate().take(MAX_ACCOUNTS) {
            if let Err(e) = AccountId::parse(account) {
                errors.add(format!("stages[{i}].account_ids[{j}]"), e);
            }
        }
        if stage.ous.len() > MAX_OUS {
            errors.add(field("ous"), format!("at most {MAX_OUS} OUs"));
        }
        for (j, ou) in stage.ous.iter().enumerate().take(MAX_OUS) {
            if let Err(e) = check_ou_id(ou) {
                errors.add(format!("stages[{i}].ous[{j}]"), e);
            }
        }
        check_tags(&field("tags"), &stage.tags, errors);
        if stage.regions.len() > MAX_REGIONS {
            errors.add(field("regions"), format!("at most {MAX_REGIONS} regions"));
        }
        for (j, region) in stage.regions.iter().enumerate().take(MAX_REGIONS) {
            if let Err(e) = RegionName::parse(region) {
                errors.add(format!("stages[{i}].regions[{j}]"), e);
            }
        }
        for (name, value, min) in [
            ("share", &stage.share, 1),
            ("max_concurrency", &stage.max_concurrency, 1),
            ("max_errors", &stage.max_errors, 0),
        ] {
            if !value.trim().is_empty()
                && let Err(e) = RateLimit::parse(value, min)
            {
                errors.add(field(name), e);
            }
        }
        if stage.bake_seconds > MAX_BAKE_SECONDS {
            errors.add(
                field("bake_seconds"),
                format!("{}; at most {MAX_BAKE_SECONDS} (a week)", stage.bake_seconds),
            );
        }
        let gate = muster_proto::v1::StageGate::try_from(stage.gate);
        if gate.is_err() {
            errors.add(field("gate"), "AUTOMATIC or MANUAL");
        }
        // A bake and a gate hold back the next stage; after the last one
        // the campaign ends, so either would be a setting that does nothing.
        if i + 1 == stages.len() {
            if stage.bake_seconds > 0 {
                errors.add(
                    field("bake_seconds"),
                    format!(
                        "{} on the last stage; a bake holds back the next stage and there is none (leave it out)",
                        stage.bake_seconds
                    ),
                );
            }
            if gate == Ok(muster_proto::v1::StageGate::Manual) {
                errors.add(
                    field("gate"),
                    "MANUAL on the last stage; a gate holds back the next stage and there is none (leave it out)",
                );
            }
        }
        if crate::waves::takes_the_rest(stage) && i + 1 < stages.len() {
            errors.add(
                field("name"),
                format!(
                    "stage '{}' has no accounts, OUs, regions, tags or share, so it takes every target left and must be the last",
                    stage.name
                ),
            );
        }
    }
}
