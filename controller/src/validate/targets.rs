//! The targets: accounts, OUs and regions, or exact scopes, and tag filters.

use muster_common::domain::{AccountId, RegionName, check_instance_id, check_ou_id, clip};
use muster_proto::v1::{CampaignTargets, Platform, TargetSelector, TargetStatus};

use super::{
    Errors, MAX_ACCOUNTS, MAX_INSTANCE_IDS, MAX_OUS, MAX_REGIONS, MAX_SCOPES, MAX_TAG_FILTERS, MAX_TAG_VALUES,
};

/// The targets: accounts x regions, exact scopes, or an earlier campaign's.
pub(super) fn check_targets(targets: &mut TargetSelector, errors: &mut Errors) {
    if let Some(from) = targets.from_campaign.as_mut() {
        check_from_campaign(from, errors);
        alone(
            targets,
            "targets.from_campaign names the campaign whose targets to take",
            errors,
        );
    } else if !targets.scopes.is_empty() {
        check_scopes(targets, errors);
    } else if targets.account_ids.is_empty() && targets.organizational_unit_ids.is_empty() {
        errors.add(
            "targets",
            "name at least one account id (targets.account_ids), OU (targets.organizational_unit_ids) or scope (targets.scopes)",
        );
    }
    let accounts = targets.account_ids.len();
    each_within(
        errors,
        ("targets.account_ids", &targets.account_ids),
        MAX_ACCOUNTS,
        || format!("{accounts} accounts; at most {MAX_ACCOUNTS} per campaign (target OUs instead)"),
        AccountId::parse,
    );
    each_within(
        errors,
        ("targets.organizational_unit_ids", &targets.organizational_unit_ids),
        MAX_OUS,
        || format!("at most {MAX_OUS} OUs"),
        check_ou_id,
    );
    each_within(
        errors,
        ("targets.exclude_account_ids", &targets.exclude_account_ids),
        MAX_ACCOUNTS,
        || format!("at most {MAX_ACCOUNTS} accounts"),
        AccountId::parse,
    );
    each_within(
        errors,
        ("targets.regions", &targets.regions),
        MAX_REGIONS,
        || format!("at most {MAX_REGIONS} regions"),
        RegionName::parse,
    );
    check_tags("targets.tags", &targets.tags, errors);
    each_within(
        errors,
        ("targets.instance_ids", &targets.instance_ids),
        MAX_INSTANCE_IDS,
        || format!("at most {MAX_INSTANCE_IDS} instance ids"),
        check_instance_id,
    );
    for (i, platform) in targets.platforms.iter().enumerate() {
        if !matches!(
            Platform::try_from(*platform),
            Ok(Platform::Linux | Platform::Windows | Platform::Macos)
        ) {
            errors.add(format!("targets.platforms[{i}]"), "must be LINUX, WINDOWS or MACOS");
        }
    }
    targets.account_ids.sort();
    targets.account_ids.dedup();
    targets.regions.sort();
    targets.regions.dedup();
}

/// A list of at most `max` items, each of which `check` takes: past the
/// bound, one error naming the list (`too_many` says how); within it, one
/// per item refused, named by its index.
fn each_within<T, E: std::fmt::Display>(
    errors: &mut Errors,
    (field, items): (&str, &[String]),
    max: usize,
    too_many: impl FnOnce() -> String,
    check: impl Fn(&str) -> Result<T, E>,
) {
    if items.len() > max {
        errors.add(field, too_many());
        return;
    }
    for (i, item) in items.iter().enumerate() {
        if let Err(e) = check(item) {
            errors.add(format!("{field}[{i}]"), e);
        }
    }
}

/// An earlier campaign's targets: a campaign id, and terminal statuses.
fn check_from_campaign(from: &mut CampaignTargets, errors: &mut Errors) {
    if from.campaign_id.is_empty() {
        errors.add("targets.from_campaign.campaign_id", "is required");
    } else if uuid::Uuid::parse_str(&from.campaign_id).is_err() || from.campaign_id.len() != 36 {
        errors.add(
            "targets.from_campaign.campaign_id",
            format!("'{}' is not a campaign id (a UUID)", clip(&from.campaign_id)),
        );
    }
    for error in end_statuses("targets.from_campaign.statuses", &from.statuses) {
        errors.0.push(error);
    }
    from.statuses.sort_unstable();
    from.statuses.dedup();
}

/// What is wrong with `statuses` as statuses a target ends in, each named
/// by its index under `field`.
pub(crate) fn end_statuses(field: &str, statuses: &[i32]) -> Vec<String> {
    let mut errors = Vec::new();
    for (i, status) in statuses.iter().enumerate() {
        match TargetStatus::try_from(*status) {
            Ok(s) if s.is_terminal() => {}
            Ok(s) => errors.push(format!(
                "{field}[{i}]: {} is not a status a target ends in",
                s.short_name()
            )),
            Err(_) => errors.push(format!("{field}[{i}]: {status} is not a target status")),
        }
    }
    errors
}

/// Refuses the fields that name accounts, regions and instances beside a
/// way of naming the targets that stands alone; `what` says which: exact
/// scopes, or an ended campaign's targets (beside which scopes are refused
/// too).
fn alone(targets: &TargetSelector, what: &str, errors: &mut Errors) {
    let beside = [
        ("targets.account_ids", targets.account_ids.is_empty()),
        (
            "targets.organizational_unit_ids",
            targets.organizational_unit_ids.is_empty(),
        ),
        ("targets.exclude_account_ids", targets.exclude_account_ids.is_empty()),
        ("targets.regions", targets.regions.is_empty()),
        ("targets.instance_ids", targets.instance_ids.is_empty()),
        (
            "targets.scopes",
            targets.from_campaign.is_none() || targets.scopes.is_empty(),
        ),
    ];
    for (field, empty) in beside {
        if !empty {
            errors.add(field, format!("must be empty when {what}"));
        }
    }
}

/// Exact scopes: alone (no accounts, OUs or regions beside them), each a
/// valid account and region once, with valid instance ids, within bounds.
fn check_scopes(targets: &mut TargetSelector, errors: &mut Errors) {
    alone(targets, "targets.scopes names the (account, region) pairs", errors);
    if targets.scopes.len() > MAX_SCOPES {
        errors.add(
            "targets.scopes",
            format!("{} scopes; at most {MAX_SCOPES}", targets.scopes.len()),
        );
        return;
    }
    let instances: usize = targets.scopes.iter().map(|s| s.instance_ids.len()).sum();
    if instances > MAX_INSTANCE_IDS {
        errors.add(
            "targets.scopes",
            format!("{instances} instance ids in all; at most {MAX_INSTANCE_IDS}"),
        );
        return;
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, scope) in targets.scopes.iter_mut().enumerate() {
        if let Err(e) = AccountId::parse(&scope.account_id) {
            errors.add(format!("targets.scopes[{i}].account_id"), e);
        }
        if let Err(e) = RegionName::parse(&scope.region) {
            errors.add(format!("targets.scopes[{i}].region"), e);
        }
        if !seen.insert((scope.account_id.clone(), scope.region.clone())) {
            errors.add(
                format!("targets.scopes[{i}]"),
                format!("{} {} is named twice", scope.account_id, scope.region),
            );
        }
        for (j, id) in scope.instance_ids.iter().enumerate() {
            if let Err(e) = check_instance_id(id) {
                errors.add(format!("targets.scopes[{i}].instance_ids[{j}]"), e);
            }
        }
        scope.instance_ids.sort();
        scope.instance_ids.dedup();
    }
    targets
        .scopes
        .sort_by(|a, b| (&a.account_id, &a.region).cmp(&(&b.account_id, &b.region)));
}

/// Tag filters (of the targets or of a stage) under `field`.
pub(super) fn check_tags(field: &str, tags: &[muster_proto::v1::TagFilter], errors: &mut Errors) {
    if tags.len() > MAX_TAG_FILTERS {
        errors.add(field, format!("at most {MAX_TAG_FILTERS} tag filters"));
    }
    for (i, tag) in tags.iter().enumerate().take(MAX_TAG_FILTERS) {
        if tag.key.is_empty() || tag.key.chars().count() > 128 {
            errors.add(format!("{field}[{i}].key"), "tag keys are 1 to 128 characters");
        }
        if tag.values.len() > MAX_TAG_VALUES {
            errors.add(
                format!("{field}[{i}].values"),
                format!("at most {MAX_TAG_VALUES} values"),
            );
        }
        for (j, value) in tag.values.iter().enumerate().take(MAX_TAG_VALUES) {
            if value.chars().count() > 256 {
                errors.add(
                    format!("{field}[{i}].values[{j}]"),
                    "tag values are at most 256 characters",
                );
            }
        }
    }
}
