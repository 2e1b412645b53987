//! From a spec's targets to (account, region) scopes: explicit accounts plus
//! every active account in the named OUs and their child OUs (Organizations,
//! in the controller's account), minus exclusions; explicit regions, or every
//! region enabled in the controller's account (EC2 DescribeRegions), which
//! each target account's Discover task then checks for itself.

use std::collections::{BTreeSet, VecDeque};

use muster_common::domain::{Partition, RegionName};
use muster_proto::v1::CampaignSpec;

/// Scopes a campaign may have: a bound on the work one submit can create.
pub const MAX_SCOPES: usize = 50_000;

/// Where a campaign runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expansion {
    /// Accounts, sorted.
    pub accounts: Vec<String>,
    /// Regions, sorted.
    pub regions: Vec<String>,
    /// True when the spec named no regions and these came from the
    /// controller's account: Discover tasks check each is enabled.
    pub regions_from_controller: bool,
    /// The exact (account, region) pairs the spec named
    /// (`targets.scopes`), instead of every account in every region.
    pub exact: Option<Vec<(String, String)>>,
}

impl Expansion {
    /// Every (account, region).
    pub fn scopes(&self) -> Vec<(String, String)> {
        if let Some(exact) = &self.exact {
            return exact.clone();
        }
        self.accounts
            .iter()
            .flat_map(|a| self.regions.iter().map(move |r| (a.clone(), r.clone())))
            .collect()
    }

    /// The exact scopes of a (validated) spec: no AWS call is needed.
    fn exact(scopes: &[muster_proto::v1::ScopeSelector]) -> Self {
        let pairs: Vec<(String, String)> = scopes
            .iter()
            .map(|s| (s.account_id.clone(), s.region.clone()))
            .collect();
        let accounts: BTreeSet<String> = pairs.iter().map(|(a, _)| a.clone()).collect();
        let regions: BTreeSet<String> = pairs.iter().map(|(_, r)| r.clone()).collect();
        Self {
            accounts: accounts.into_iter().collect(),
            regions: regions.into_iter().collect(),
            regions_from_controller: false,
            exact: Some(pairs),
        }
    }
}

/// Why targets could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// The spec names something that is not there (INVALID_ARGUMENT).
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The controller could not ask AWS (FAILED_PRECONDITION or UNAVAILABLE).
    #[error("{0}")]
    Aws(String),
}

fn describe<E: std::error::Error + aws_smithy_types::error::metadata::ProvideErrorMetadata, R>(
    e: &aws_smithy_runtime_api::client::result::SdkError<E, R>,
) -> String {
    muster_common::retry::describe(e)
}

/// Expands `spec`'s targets.
pub async fn expand(
    orgs: &aws_sdk_organizations::Client,
    ec2: &aws_sdk_ec2::Client,
    spec: &CampaignSpec,
) -> Result<Expansion, ExpandError> {
    let targets = spec.targets.clone().unwrap_or_default();
    if !targets.scopes.is_empty() {
        return Ok(Expansion::exact(&targets.scopes));
    }
    let mut accounts: BTreeSet<String> = targets.account_ids.iter().cloned().collect();
    for (i, ou) in targets.organizational_unit_ids.iter().enumerate() {
        let found = accounts_under(orgs, ou).await.map_err(|e| match e {
            OuError::NotFound => ExpandError::Invalid {
                field: format!("targets.organizational_unit_ids[{i}]"),
                message: format!("{ou} is not an OU or root of the controller's Organization"),
            },
            OuError::Aws(message) => ExpandError::Aws(format!("cannot list the accounts of {ou}: {message}")),
        })?;
        accounts.extend(found);
    }
    for excluded in &targets.exclude_account_ids {
        accounts.remove(excluded);
    }
    if accounts.is_empty() {
        return Err(ExpandError::Invalid {
            field: "targets".into(),
            message: "no account is left to target (the OUs are empty or every account is excluded)".into(),
        });
    }
    let (regions, from_controller) = if targets.regions.is_empty() {
        let partition = spec.access.as_ref().map_or("", |a| a.partition.as_str());
        let partition = Partition::parse(partition).unwrap_or(Partition::Aws);
        (enabled_regions(ec2, partition).await?, true)
    } else {
        (targets.regions.clone(), false)
    };
    let expansion = Expansion {
        accounts: accounts.into_iter().collect(),
        regions,
        regions_from_controller: from_controller,
        exact: None,
    };
    let scopes = expansion.accounts.len() * expansion.regions.len();
    if scopes > MAX_SCOPES {
        return Err(ExpandError::Invalid {
            field: "targets".into(),
            message: format!(
                "{} accounts x {} regions = {scopes} (account, region) pairs; at most {MAX_SCOPES} per campaign",
                expansion.accounts.len(),
                expansion.regions.len()
            ),
        });
    }
    Ok(expansion)
}

enum OuError {
    NotFound,
    Aws(String),
}

/// Every active account under the guardrail's allowed OUs (`field` names
/// the setting in errors).
pub async fn accounts_in_ous(
    orgs: &aws_sdk_organizations::Client,
    field: &str,
    ous: &[String],
) -> Result<BTreeSet<String>, ExpandError> {
    let mut accounts = BTreeSet::new();
    for (i, ou) in ous.iter().enumerate() {
        let found = accounts_under(orgs, ou).await.map_err(|e| match e {
            OuError::NotFound => ExpandError::Aws(format!(
                "{field}[{i}]: {ou} is not an OU or root of the controller's Organization"
            )),
            OuError::Aws(message) => ExpandError::Aws(format!("cannot list the accounts of {ou}: {message}")),
        })?;
        accounts.extend(found);
    }
    Ok(accounts)
}

/// Active accounts in `root_or_ou` and every OU below it.
async fn accounts_under(orgs: &aws_sdk_organizations::Client, root_or_ou: &str) -> Result<Vec<String>, OuError> {
    let mut accounts = Vec::new();
    let mut parents = VecDeque::from([root_or_ou.to_owned()]);
    while let Some(parent) = parents.pop_front() {
        let mut pages = orgs
            .list_accounts_for_parent()
            .parent_id(&parent)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            accounts.extend(
                page.map_err(|e| ou_error(&e))?
                    .accounts()
                    .iter()
                    .filter(|a| a.status().is_none_or(|s| s.as_str() == "ACTIVE"))
                    .filter_map(|a| a.id().map(str::to_owned)),
            );
        }
        let mut pages = orgs
            .list_organizational_units_for_parent()
            .parent_id(&parent)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            parents.extend(
                page.map_err(|e| ou_error(&e))?
                    .organizational_units()
                    .iter()
                    .filter_map(|ou| ou.id().map(str::to_owned)),
            );
        }
    }
    Ok(accounts)
}

/// What an Organizations listing of a parent's children failed with: the
/// parent is not there, or AWS said something else.
fn ou_error<E: std::error::Error + aws_smithy_types::error::metadata::ProvideErrorMetadata, R>(
    e: &aws_smithy_runtime_api::client::result::SdkError<E, R>,
) -> OuError {
    if e.as_service_error().and_then(|s| s.code()) == Some("ParentNotFoundException") {
        OuError::NotFound
    } else {
        OuError::Aws(describe(e))
    }
}

/// The regions enabled in the hub account that are in `partition` (AWS
/// lists only its own partition's; the sandbox lists them all).
async fn enabled_regions(ec2: &aws_sdk_ec2::Client, partition: Partition) -> Result<Vec<String>, ExpandError> {
    let answer = ec2.describe_regions().send().await.map_err(|e| {
        ExpandError::Aws(format!(
            "cannot list the enabled regions (ec2:DescribeRegions): {}",
            describe(&e)
        ))
    })?;
    let mut regions: Vec<String> = answer
        .regions()
        .iter()
        .filter(|r| r.opt_in_status().is_none_or(|s| s != "not-opted-in"))
        .filter_map(|r| r.region_name().map(str::to_owned))
        .filter(|r| RegionName::parse(r).is_ok_and(|r| r.partition() == partition))
        .collect();
    regions.sort();
    regions.dedup();
    if regions.is_empty() {
        return Err(ExpandError::Aws("ec2:DescribeRegions returned no regions".into()));
    }
    Ok(regions)
}

/// How long the accounts of an OU are taken as known.
const OU_MEMBERS_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// The accounts of OUs, asked of Organizations at most every five minutes
/// per OU: scoped roles and ExternalIds by OU need them on many calls.
#[derive(Debug, Default)]
pub struct OuMembers {
    known: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, BTreeSet<String>)>>,
}

impl OuMembers {
    /// The accounts (at any depth) of each of `ous`; `field` names the
    /// setting in errors.
    pub async fn of(
        &self,
        orgs: &aws_sdk_organizations::Client,
        field: &str,
        ous: &BTreeSet<String>,
    ) -> Result<std::collections::HashMap<String, BTreeSet<String>>, ExpandError> {
        let mut found = std::collections::HashMap::new();
        for ou in ous {
            let cached = self
                .known
                .lock()
                .expect("OU cache lock")
                .get(ou)
                .filter(|(at, _)| at.elapsed() < OU_MEMBERS_TTL)
                .map(|(_, members)| members.clone());
            let members = match cached {
                Some(members) => members,
                None => {
                    let members = accounts_in_ous(orgs, field, std::slice::from_ref(ou)).await?;
                    self.known
                        .lock()
                        .expect("OU cache lock")
                        .insert(ou.clone(), (std::time::Instant::now(), members.clone()));
                    members
                }
            };
            found.insert(ou.clone(), members);
        }
        Ok(found)
    }
}
