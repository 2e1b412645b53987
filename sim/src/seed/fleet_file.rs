//! The fleet file (TOML) that describes a sandbox fleet, and the state file
//! that seeding writes: which ids the Organization, OUs, accounts and
//! instances got.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A fleet to seed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetFile {
    /// Fleet name; tags every instance (`muster:fleet`).
    pub name: String,
    /// Region of the hub's queue and buckets.
    #[serde(default = "default_hub_region")]
    pub hub_region: String,
    /// ExternalId the execution roles demand.
    pub external_id: String,
    /// Execution role name in every target account.
    #[serde(default = "default_execution_role")]
    pub execution_role: String,
    /// The hub's worker role, which the execution roles trust.
    #[serde(default = "default_worker_role")]
    pub worker_role: String,
    /// The hub's controller role.
    #[serde(default = "default_controller_role")]
    pub controller_role: String,
    /// Bucket for full command output.
    #[serde(default)]
    pub output_bucket: String,
    /// Key prefix for command output.
    #[serde(default = "default_output_prefix")]
    pub output_prefix: String,
    /// Bucket for results exports.
    #[serde(default)]
    pub results_bucket: String,
    /// Log group created in every target (account, region) for command output.
    #[serde(default = "default_log_group")]
    pub log_group: String,
    /// The hub's task queue (its DLQ is "<queue>-dlq").
    #[serde(default = "default_queue")]
    pub queue: String,
    /// OUs, by path from the root ("Workloads/Prod").
    #[serde(default)]
    pub ous: Vec<OuSpec>,
    /// Accounts.
    pub accounts: Vec<AccountSpec>,
}

fn default_hub_region() -> String {
    "us-east-1".into()
}
fn default_execution_role() -> String {
    "muster-execution".into()
}
fn default_worker_role() -> String {
    "muster-worker".into()
}
fn default_controller_role() -> String {
    "muster-controller".into()
}
fn default_output_prefix() -> String {
    "muster/".into()
}
fn default_log_group() -> String {
    "/muster/sandbox".into()
}
fn default_queue() -> String {
    "muster-tasks".into()
}
fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}

/// An OU.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OuSpec {
    /// Path from the root, e.g. "Workloads/Prod".
    pub path: String,
}

/// One account, or `count` alike accounts named with `{n}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSpec {
    /// Account name; with `count` > 1 it must contain `{n}`.
    pub name: String,
    /// How many accounts this entry makes.
    #[serde(default = "one")]
    pub count: u32,
    /// OU path; empty for the root.
    #[serde(default)]
    pub ou: Option<String>,
    /// Regions with instances.
    pub regions: Vec<String>,
    /// Whether the execution role exists (false models a missing role).
    #[serde(default = "yes")]
    pub execution_role: bool,
    /// Instance groups, in every region of the account unless they say.
    #[serde(default)]
    pub instances: Vec<InstanceGroup>,
}

/// Alike instances.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceGroup {
    /// Instances per region.
    pub count: u32,
    /// "linux" or "windows".
    #[serde(default)]
    pub platform: PlatformSpec,
    /// Name tag; `{i}` becomes the instance's number in the group.
    #[serde(default)]
    pub name: Option<String>,
    /// Tags, including `muster-sim:` behaviour tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Only these regions of the account.
    #[serde(default)]
    pub regions: Option<Vec<String>>,
}

/// Instance platform in a fleet file.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PlatformSpec {
    /// Linux.
    #[default]
    Linux,
    /// Windows (moto's Windows AMI).
    Windows,
}

impl FleetFile {
    /// Reads and checks a fleet file.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read fleet file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("fleet file {}: {e}", path.display()))
    }

    /// Parses and checks fleet TOML.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let fleet: Self = toml::from_str(text)?;
        fleet.check()?;
        Ok(fleet)
    }

    fn check(&self) -> anyhow::Result<()> {
        for (i, account) in self.accounts.iter().enumerate() {
            if account.count > 1 && !account.name.contains("{n}") {
                anyhow::bail!(
                    "accounts[{i}].name: '{}' must contain {{n}} when count is {}",
                    account.name,
                    account.count
                );
            }
            if account.count == 0 {
                anyhow::bail!("accounts[{i}].count: must be at least 1");
            }
            for region in &account.regions {
                muster_common::domain::RegionName::parse(region)
                    .map_err(|e| anyhow::anyhow!("accounts[{i}].regions: {e}"))?;
            }
            if let Some(ou) = &account.ou
                && !self.ous.iter().any(|o| &o.path == ou)
            {
                anyhow::bail!("accounts[{i}].ou: '{ou}' is not one of the fleet's ous");
            }
        }
        Ok(())
    }

    /// Every account, with `{n}` names expanded.
    pub fn expanded_accounts(&self) -> Vec<(String, &AccountSpec)> {
        self.accounts
            .iter()
            .flat_map(|spec| {
                (1..=spec.count).map(move |n| {
                    let name = if spec.count > 1 {
                        spec.name.replace("{n}", &format!("{n:02}"))
                    } else {
                        spec.name.replace("{n}", "01")
                    };
                    (name, spec)
                })
            })
            .collect()
    }

    /// Instances the fleet has in all.
    pub fn instance_count(&self) -> u64 {
        self.expanded_accounts()
            .iter()
            .map(|(_, spec)| {
                spec.regions
                    .iter()
                    .map(|region| {
                        spec.instances
                            .iter()
                            .filter(|g| g.regions.as_ref().is_none_or(|r| r.contains(region)))
                            .map(|g| u64::from(g.count))
                            .sum::<u64>()
                    })
                    .sum::<u64>()
            })
            .sum()
    }
}

/// What seeding created, for tests, the demo and people.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetState {
    /// Fleet name.
    pub fleet: String,
    /// The Organization's id.
    pub organization_id: String,
    /// The root's id.
    pub root_id: String,
    /// The hub (management) account.
    pub hub_account: String,
    /// Hub region.
    pub hub_region: String,
    /// OU ids by path.
    pub ous: BTreeMap<String, String>,
    /// Accounts.
    pub accounts: Vec<AccountState>,
    /// The task queue.
    pub queue_url: String,
    /// Its dead-letter queue.
    pub dlq_url: String,
    /// The queue Run Command's status changes reach (hub.yaml
    /// CommandEventQueue); empty in a state seeded before it existed.
    #[serde(default)]
    pub command_events_queue_url: String,
    /// Output bucket.
    pub output_bucket: String,
    /// Output key prefix.
    pub output_prefix: String,
    /// Results bucket.
    pub results_bucket: String,
    /// Log group in every target (account, region).
    pub log_group: String,
    /// ExternalId of the execution roles.
    pub external_id: String,
    /// Execution role name.
    pub execution_role: String,
    /// The hub worker role's ARN.
    pub worker_role_arn: String,
    /// The hub controller role's ARN.
    pub controller_role_arn: String,
    /// Roles people sign in with, by permission set (see
    /// `seed::hub::PEOPLE_ROLES`).
    #[serde(default)]
    pub people_roles: BTreeMap<String, String>,
}

/// One seeded account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountState {
    /// Name.
    pub name: String,
    /// Id.
    pub id: String,
    /// OU path, if any.
    pub ou: Option<String>,
    /// Whether its execution role exists.
    pub execution_role: bool,
    /// Instances per region.
    pub instances: BTreeMap<String, Vec<InstanceState>>,
}

/// One seeded instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceState {
    /// Instance id.
    pub id: String,
    /// Platform.
    pub platform: PlatformSpec,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

impl FleetState {
    /// Every instance, as (account, region, instance).
    pub fn instances(&self) -> impl Iterator<Item = (&AccountState, &str, &InstanceState)> {
        self.accounts.iter().flat_map(|account| {
            account
                .instances
                .iter()
                .flat_map(move |(region, list)| list.iter().map(move |i| (account, region.as_str(), i)))
        })
    }

    /// The account named `name`.
    pub fn account(&self, name: &str) -> Option<&AccountState> {
        self.accounts.iter().find(|a| a.name == name)
    }
}
