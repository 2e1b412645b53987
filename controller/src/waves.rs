//! Waves, as pure functions: which stage each target belongs to, and a
//! stage's limits. The reconcile loop reads targets and counts from the
//! store and writes these decisions back; nothing here does I/O.
//!
//! Stages take targets in order: each takes, of the targets no earlier
//! stage took, those in its accounts and regions, then its share of them,
//! picked round-robin over (account, region) so that a canary of 10% touches
//! as many scopes as it can rather than the first account's instances.

use std::collections::BTreeMap;

use muster_common::domain::RateLimit;
use muster_proto::v1::{CampaignSpec, Stage};

/// A target as waves see it: (account, region, instance).
pub type Key = (String, String, String);

/// A target's tags that stages select by.
pub type Tags = std::collections::BTreeMap<String, String>;

/// Whether `stage` takes every target left (no accounts, OUs, regions,
/// tags or share): only the last stage may.
pub fn takes_the_rest(stage: &Stage) -> bool {
    stage.account_ids.is_empty()
        && stage.ous.is_empty()
        && stage.regions.is_empty()
        && stage.tags.is_empty()
        && stage.share.trim().is_empty()
}

fn selects(stage: &Stage, (account, region, _): &Key, tags: &Tags) -> bool {
    let by_account = stage.account_ids.is_empty() && stage.ous.is_empty();
    (by_account
        || stage
            .account_ids
            .iter()
            .chain(&stage.ou_account_ids)
            .any(|a| a == account))
        && (stage.regions.is_empty() || stage.regions.iter().any(|r| r == region))
        && stage.tags.iter().all(|filter| {
            tags.get(&filter.key)
                .is_some_and(|value| filter.values.is_empty() || crate::guardrails::matches_any(&filter.values, value))
        })
}

/// How many of `candidates` targets a stage's share takes.
fn share_of(stage: &Stage, candidates: usize) -> usize {
    if stage.share.trim().is_empty() || candidates == 0 {
        return candidates;
    }
    RateLimit::parse(&stage.share, 1)
        .map(|share| share.concurrency(candidates as u64))
        .map_or(candidates, |n| usize::try_from(n).unwrap_or(usize::MAX).min(candidates))
}

/// `take` of `candidates` (indexes into `targets`, in key order), one
/// (account, region) after another.
fn round_robin(candidates: &[usize], targets: &[Key], take: usize) -> Vec<usize> {
    let mut by_scope: BTreeMap<(&str, &str), std::collections::VecDeque<usize>> = BTreeMap::new();
    for &i in candidates {
        let (account, region, _) = &targets[i];
        by_scope.entry((account, region)).or_default().push_back(i);
    }
    let mut picked = Vec::with_capacity(take);
    while picked.len() < take {
        for queue in by_scope.values_mut() {
            if picked.len() == take {
                break;
            }
            if let Some(i) = queue.pop_front() {
                picked.push(i);
            }
        }
    }
    picked
}

/// The stage of each of `targets` (in key order, with their `tags`), or
/// `None` for a target no stage takes.
pub fn assign(stages: &[Stage], targets: &[Key], tags: &[Tags]) -> Vec<Option<usize>> {
    let mut assigned = vec![None; targets.len()];
    let none = Tags::new();
    for (index, stage) in stages.iter().enumerate() {
        let candidates: Vec<usize> = (0..targets.len())
            .filter(|&i| assigned[i].is_none() && selects(stage, &targets[i], tags.get(i).unwrap_or(&none)))
            .collect();
        let take = share_of(stage, candidates.len());
        for i in round_robin(&candidates, targets, take) {
            assigned[i] = Some(index);
        }
    }
    assigned
}

/// A stage's max_concurrency and max_errors, resolved against its `size`
/// targets: its own, or the campaign's where it has none.
pub fn limits(spec: &CampaignSpec, stage: &Stage, size: u64) -> (u64, Option<u64>) {
    let rate = spec.rate.clone().unwrap_or_default();
    let concurrency = if stage.max_concurrency.trim().is_empty() {
        rate.max_concurrency
    } else {
        stage.max_concurrency.clone()
    };
    let errors = if stage.max_errors.trim().is_empty() {
        rate.max_errors
    } else {
        stage.max_errors.clone()
    };
    let concurrency = RateLimit::parse(&concurrency, 1)
        .map(|l| l.concurrency(size))
        .unwrap_or(50);
    let threshold = (!errors.trim().is_empty())
        .then(|| RateLimit::parse(&errors, 0).ok())
        .flatten()
        .map(|l| l.errors(size));
    (concurrency, threshold)
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_proto::v1::RateControl;

    fn key(account: &str, region: &str, instance: &str) -> Key {
        (account.into(), region.into(), instance.into())
    }

    fn stage(name: &str, accounts: &[&str], share: &str) -> Stage {
        Stage {
            name: name.into(),
            account_ids: accounts.iter().map(|a| (*a).to_owned()).collect(),
            share: share.into(),
            ..Default::default()
        }
    }

    /// Two accounts: 111 with 4 instances in east and 2 in west, 222 with 4.
    fn fleet() -> Vec<Key> {
        let mut keys = Vec::new();
        for i in 0..4 {
            keys.push(key("111", "east", &format!("i-a{i}")));
        }
        for i in 0..2 {
            keys.push(key("111", "west", &format!("i-b{i}")));
        }
        for i in 0..4 {
            keys.push(key("222", "east", &format!("i-c{i}")));
        }
        keys
    }

    #[test]
    fn a_stage_by_tag_takes_the_targets_whose_tags_match() {
        let keys = fleet();
        let tags: Vec<Tags> = keys
            .iter()
            .enumerate()
            .map(|(i, _)| match i % 3 {
                0 => Tags::from([("PatchGroup".to_owned(), "canary-1".to_owned())]),
                1 => Tags::from([("PatchGroup".to_owned(), "main".to_owned())]),
                _ => Tags::new(),
            })
            .collect();
        let canary = Stage {
            name: "canary".into(),
            tags: vec![muster_proto::v1::TagFilter {
                key: "PatchGroup".into(),
                values: vec!["canary-*".into()],
            }],
            ..Default::default()
        };
        assert!(!takes_the_rest(&canary));
        let tagged = Stage {
            name: "tagged".into(),
            tags: vec![muster_proto::v1::TagFilter {
                key: "PatchGroup".into(),
                values: vec![],
            }],
            ..Default::default()
        };
        let assigned = assign(&[canary, tagged, stage("rest", &[], "")], &keys, &tags);
        for (i, stage) in assigned.iter().enumerate() {
            assert_eq!(
                *stage,
                Some(i % 3),
                "target {i}: canary-*, then any PatchGroup, then the rest"
            );
        }
    }

    #[test]
    fn a_stage_by_ou_takes_the_accounts_the_ou_held_at_submit() {
        let keys = fleet();
        let prod = Stage {
            name: "prod".into(),
            ous: vec!["ou-ab12-prod0000".into()],
            ou_account_ids: vec!["222".into()],
            ..Default::default()
        };
        assert!(!takes_the_rest(&prod), "an OU stage selects");
        let stages = [prod.clone(), stage("rest", &[], "")];
        let assigned = assign(&stages, &keys, &[]);
        let in_prod: Vec<&str> = keys
            .iter()
            .zip(&assigned)
            .filter(|(_, s)| **s == Some(0))
            .map(|(k, _)| k.0.as_str())
            .collect();
        assert_eq!(in_prod, ["222"; 4]);
        // An OU with no accounts takes nothing (it does not mean "any").
        let empty = Stage {
            ou_account_ids: vec![],
            ..prod.clone()
        };
        assert!(
            assign(&[empty, stage("rest", &[], "")], &keys, &[])
                .iter()
                .all(|s| *s == Some(1))
        );
        // Accounts and OUs together: either.
        let both = Stage {
            account_ids: vec!["111".into()],
            ..prod
        };
        assert!(assign(&[both], &keys, &[]).iter().all(|s| *s == Some(0)));
    }

    #[test]
    fn canary_account_then_a_share_then_the_rest() {
        let keys = fleet();
        let stages = [
            stage("canary", &["222"], "1"),
            stage("tenth", &[], "30%"),
            stage("rest", &[], ""),
        ];
        let assigned = assign(&stages, &keys, &[]);
        let of = |index: usize| -> Vec<&str> {
            keys.iter()
                .zip(&assigned)
                .filter(|(_, a)| **a == Some(index))
                .map(|(k, _)| k.2.as_str())
                .collect()
        };
        assert_eq!(of(0), ["i-c0"], "one of account 222");
        // 30% of the 9 left rounds up to 3, one per (account, region) first.
        assert_eq!(of(1), ["i-a0", "i-b0", "i-c1"]);
        assert_eq!(of(2).len(), 6);
        assert!(assigned.iter().all(Option::is_some), "the rest takes everything left");
    }

    #[test]
    fn targets_no_stage_takes_are_left_out_and_empty_stages_stay_empty() {
        let keys = fleet();
        let stages = [stage("nobody", &["333"], ""), stage("west", &[], "")];
        let mut west = stages[1].clone();
        west.regions = vec!["west".into()];
        let assigned = assign(&[stages[0].clone(), west], &keys, &[]);
        assert_eq!(assigned.iter().filter(|a| **a == Some(0)).count(), 0);
        assert_eq!(assigned.iter().filter(|a| **a == Some(1)).count(), 2);
        assert_eq!(assigned.iter().filter(|a| a.is_none()).count(), 8);
    }

    #[test]
    fn a_stage_without_limits_takes_the_campaigns() {
        let spec = CampaignSpec {
            rate: Some(RateControl {
                max_concurrency: "50%".into(),
                max_errors: "10%".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(limits(&spec, &stage("all", &[], ""), 40), (20, Some(4)));
        let own = Stage {
            max_concurrency: "1".into(),
            max_errors: "0".into(),
            ..stage("canary", &[], "1")
        };
        assert_eq!(limits(&spec, &own, 1), (1, Some(0)));
        assert_eq!(limits(&CampaignSpec::default(), &own, 1).0, 1);
        assert_eq!(limits(&CampaignSpec::default(), &stage("x", &[], ""), 7), (50, None));
    }
}
