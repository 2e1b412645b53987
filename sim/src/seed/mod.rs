//! Seeds a sandbox fleet through the sim, as a platform team would set up AWS:
//! an Organization with OUs and accounts, the execution role in each account
//! (from the same CloudFormation template that ships in `deploy/`), instances
//! per (account, region), the log groups, and in the hub the worker and
//! controller roles, the buckets and the task queue with its DLQ.
//!
//! Seeding is idempotent: what exists is reused, only what is missing is made.

mod accounts;
pub mod fleet_file;
mod hub;
mod org;

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, anyhow};
use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use futures::{StreamExt as _, TryStreamExt as _};

use crate::cfn::Template;
use accounts::seed_account;
use fleet_file::{AccountState, FleetFile, FleetState};
use hub::{ensure_bucket, ensure_event_queue, ensure_hub_roles, ensure_queue};
use org::{ensure_accounts, ensure_organization, ensure_ous};

/// moto's Windows AMI: instances from it report `Platform: windows`.
pub const WINDOWS_AMI: &str = "ami-03cf127a";
/// Any AMI id works for Linux in moto.
pub const LINUX_AMI: &str = "ami-0a1b2c3d4e5f67890";
/// The static access key seeding uses: it acts in the hub account.
pub const SEED_ACCESS_KEY: &str = "AKIAMUSTERSANDBOXSEED";

const ORG_ACCESS_ROLE: &str = "OrganizationAccountAccessRole";
const PARALLEL_ACCOUNTS: usize = 8;
/// hub.yaml's CommandEventQueue.
pub const COMMAND_EVENTS_QUEUE: &str = "muster-command-events";

/// Options for one seeding run.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    /// The sim's endpoint.
    pub endpoint: String,
    /// The target-account CloudFormation template.
    pub target_template: std::path::PathBuf,
}

fn sdk(endpoint: &str, region: &str, credentials: Credentials) -> SdkConfig {
    muster_common::aws::fixed(
        endpoint,
        region,
        credentials,
        aws_smithy_types::retry::RetryConfig::standard().with_max_attempts(6),
    )
}

fn err<E: std::error::Error + Send + Sync + 'static, R: std::fmt::Debug + Send + Sync + 'static>(
    what: &str,
) -> impl FnOnce(aws_smithy_runtime_api::client::result::SdkError<E, R>) -> anyhow::Error + '_ {
    move |e| anyhow!("{what}: {}", aws_smithy_types::error::display::DisplayErrorContext(&e))
}

/// Seeds `fleet` and returns what it made.
pub async fn seed(fleet: &FleetFile, options: &SeedOptions) -> anyhow::Result<FleetState> {
    let started = Instant::now();
    let hub_creds = Credentials::new(SEED_ACCESS_KEY, "muster-sandbox", None, None, "muster-seed");
    let hub = sdk(&options.endpoint, &fleet.hub_region, hub_creds);
    let hub_account = caller_account(&hub).await?;

    let org = aws_sdk_organizations::Client::new(&hub);
    let organization_id = ensure_organization(&org).await?;
    let root_id = org
        .list_roots()
        .send()
        .await
        .map_err(err("ListRoots"))?
        .roots()
        .first()
        .and_then(|r| r.id().map(str::to_owned))
        .context("the Organization has no root")?;
    let ous = ensure_ous(&org, &root_id, fleet).await?;
    let accounts = ensure_accounts(&org, &root_id, &ous, fleet).await?;
    tracing::info!(accounts = accounts.len(), elapsed = ?started.elapsed(), "organization ready");

    let roles = ensure_hub_roles(&hub, &hub_account, fleet).await?;
    ensure_bucket(&hub, &fleet.output_bucket).await?;
    ensure_bucket(&hub, &fleet.results_bucket).await?;
    let (queue_url, dlq_url) = ensure_queue(&hub, &fleet.queue).await?;
    let command_events_queue_url = ensure_event_queue(&hub, COMMAND_EVENTS_QUEUE).await?;
    route_events(options, &command_events_queue_url, &fleet.hub_region).await?;

    let template = Template::load(&options.target_template)?;
    let states: Vec<AccountState> = futures::stream::iter(accounts.into_iter().map(|(name, id, spec)| {
        let hub = hub.clone();
        let template = template.clone();
        let hub_account = hub_account.clone();
        async move { seed_account(&hub, &template, &hub_account, fleet, name, id, spec).await }
    }))
    .buffered(PARALLEL_ACCOUNTS)
    .try_collect()
    .await?;
    tracing::info!(elapsed = ?started.elapsed(), "fleet seeded");

    Ok(FleetState {
        fleet: fleet.name.clone(),
        organization_id,
        root_id,
        hub_account,
        hub_region: fleet.hub_region.clone(),
        ous,
        accounts: states,
        queue_url,
        dlq_url,
        command_events_queue_url,
        output_bucket: fleet.output_bucket.clone(),
        output_prefix: fleet.output_prefix.clone(),
        results_bucket: fleet.results_bucket.clone(),
        log_group: fleet.log_group.clone(),
        external_id: fleet.external_id.clone(),
        execution_role: fleet.execution_role.clone(),
        worker_role_arn: roles.worker,
        controller_role_arn: roles.controller,
        people_roles: roles.people,
    })
}

/// Points the sim's Run Command events at the hub's queue through the rule of
/// `target-events.yaml` (next to the target-account template), as the
/// StackSet would; delivery faults already set are kept.
async fn route_events(options: &SeedOptions, queue_url: &str, hub_region: &str) -> anyhow::Result<()> {
    let path = options.target_template.with_file_name("target-events.yaml");
    let hub_account = queue_url.rsplit('/').nth(1).unwrap_or_default().to_owned();
    let template = Template::load(&path)?.with_params(
        [
            ("AWS::Partition", "aws"),
            ("AWS::AccountId", hub_account.as_str()),
            ("HubAccountId", hub_account.as_str()),
            ("HubRegion", hub_region),
        ]
        .map(|(k, v)| (k.to_owned(), crate::cfn::Param::Str(v.to_owned()))),
    );
    let rule = template.properties("CommandEventsRule", "AWS::Events::Rule")?;
    let pattern = rule
        .get("EventPattern")
        .cloned()
        .context("CommandEventsRule has no EventPattern")?;
    let admin = crate::admin::Client::new(&options.endpoint);
    let current = admin.config().await?;
    let mut routing = serde_json::json!({
        "queue_url": queue_url,
        "region": hub_region,
        "pattern": pattern,
    });
    if let Some(old) = current.get("events").and_then(serde_json::Value::as_object) {
        for key in ["drop_percent", "duplicate_percent", "delay_ms"] {
            if let Some(value) = old.get(key) {
                routing[key] = value.clone();
            }
        }
    }
    admin.patch_config(&serde_json::json!({ "events": routing })).await
}

async fn caller_account(sdk: &SdkConfig) -> anyhow::Result<String> {
    aws_sdk_sts::Client::new(sdk)
        .get_caller_identity()
        .send()
        .await
        .map_err(err("GetCallerIdentity"))?
        .account
        .context("GetCallerIdentity returned no account")
}

/// Reads a fleet state file written by `muster-sim seed`.
pub fn load_state(path: &Path) -> anyhow::Result<FleetState> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read fleet state {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("fleet state {} is not valid", path.display()))
}
