//! The sim's settings. `SimConfig` is fixed at start; `Tunables` can be changed
//! while it runs through `PUT /_sim/config`, so one sandbox can serve many test
//! scenarios.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Fixed settings, from flags.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where moto listens, e.g. "http://127.0.0.1:5000"; several processes
    /// share the accounts, the first holding everything global.
    pub moto_urls: Vec<String>,
    /// The account that static (non-session) access keys act in: moto's
    /// default, the Organization's management account in the sandbox.
    pub default_account: String,
    /// Scratch space for commands run for real.
    pub scratch_dir: PathBuf,
    /// Initial tunables.
    pub tunables: Tunables,
}

/// Settings that can change at run time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Tunables {
    /// Whether quotas are enforced at all.
    pub throttling: bool,
    /// Token buckets per (account, region, API). The most specific rule wins:
    /// an exact API name, then "*" for the service.
    pub quotas: Vec<Quota>,
    /// Latency added to every AWS call, in milliseconds (uniform in
    /// [min, max]).
    pub latency_ms: LatencyRange,
    /// Injected faults.
    pub faults: Vec<FaultRule>,
    /// Seeds the choice of probabilistic faults, so a scenario replays
    /// exactly; unset draws from the OS.
    pub fault_seed: Option<u64>,
    /// Caps the lifetime of credentials from AssumeRole, in seconds, whatever
    /// DurationSeconds asked for: how tests make sessions shorter than a
    /// campaign. Requests signed with an expired key get ExpiredToken.
    pub session_ttl_seconds: Option<u64>,
    /// Simulated seconds per real second for agent timings (tag durations,
    /// delivery and execution timeouts). 10 makes a 30-second timeout take 3.
    pub time_scale: f64,
    /// Run AWS-RunShellScript lines for real with `sh` (output is real), or
    /// simulate them from the instance's tags.
    pub exec_mode: ExecMode,
    /// How long a new command's invocations stay invisible to
    /// GetCommandInvocation and ListCommandInvocations, in real milliseconds
    /// (SSM is eventually consistent right after SendCommand).
    pub visibility_delay_ms: u64,
    /// How long the agent takes to pick a command up, in simulated
    /// milliseconds.
    pub delivery_delay_ms: u64,
    /// How long a simulated command runs when its instance has no duration
    /// tag, in simulated milliseconds.
    pub default_duration_ms: u64,
    /// How long a patch run's patch state takes to show in
    /// DescribeInstancePatchStates after the run ended, in real
    /// milliseconds (0: before its status does).
    pub patch_state_lag_ms: u64,
    /// How long instance facts and DescribeInstances answers read from moto
    /// are reused, in milliseconds. Any EC2 write made through the sim
    /// invalidates its (account, region) at once.
    pub fleet_cache_ms: u64,
    /// Where Run Command's EventBridge events go (the target accounts' rule
    /// and the hub's queue), with delivery faults; none are sent without it.
    pub events: Option<EventRouting>,
}

impl Default for Tunables {
    fn default() -> Self {
        Self {
            throttling: true,
            quotas: default_quotas(),
            latency_ms: LatencyRange::default(),
            faults: Vec::new(),
            fault_seed: None,
            session_ttl_seconds: None,
            time_scale: 1.0,
            exec_mode: ExecMode::Simulated,
            visibility_delay_ms: 300,
            delivery_delay_ms: 200,
            default_duration_ms: 1_000,
            patch_state_lag_ms: 0,
            fleet_cache_ms: 60_000,
            events: None,
        }
    }
}

/// Sandbox defaults, in the spirit of AWS's per-account, per-region API
/// rates. They are not AWS's exact figures (AWS does not publish all of them);
/// benchmarks set their own.
fn default_quotas() -> Vec<Quota> {
    let q = Quota::new;
    vec![
        q("ssm", "SendCommand", 10.0, 20.0),
        q("ssm", "ListCommandInvocations", 20.0, 40.0),
        q("ssm", "GetCommandInvocation", 20.0, 40.0),
        q("ssm", "ListCommands", 10.0, 20.0),
        q("ssm", "CancelCommand", 10.0, 20.0),
        q("ssm", "DescribeInstanceInformation", 10.0, 20.0),
        q("ssm", "DescribeInstancePatchStates", 10.0, 20.0),
        q("ssm", "GetDocument", 10.0, 20.0),
        q("ec2", "*", 20.0, 100.0),
        q("sts", "AssumeRole", 50.0, 100.0),
        q("logs", "GetLogEvents", 25.0, 50.0),
    ]
}

/// One token bucket rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Service as in the SigV4 scope: "ssm", "ec2", "sts", "logs", "s3".
    pub service: String,
    /// API name ("SendCommand") or "*" for every API of the service.
    pub api: String,
    /// Tokens per second.
    pub rate: f64,
    /// Bucket size.
    pub burst: f64,
}

impl Quota {
    /// `rate` calls per second of `api` (or `*`) of `service`, in bursts
    /// of up to `burst`.
    pub fn new(service: &str, api: &str, rate: f64, burst: f64) -> Self {
        Self {
            service: service.into(),
            api: api.into(),
            rate,
            burst,
        }
    }
}

/// Added latency.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LatencyRange {
    /// Least added milliseconds.
    pub min: u64,
    /// Most added milliseconds.
    pub max: u64,
}

/// A fault to inject into matching calls.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// Service ("ssm") or "*".
    pub service: String,
    /// API ("SendCommand") or "*".
    #[serde(default = "star")]
    pub api: String,
    /// What happens.
    pub kind: FaultKind,
    /// Chance per matching call, 0 to 1. Ignored when `every` is set.
    #[serde(default)]
    pub probability: f64,
    /// Fail every n-th matching call (deterministic).
    #[serde(default)]
    pub every: Option<u64>,
    /// Stop after this many injected faults.
    #[serde(default)]
    pub limit: Option<u64>,
    /// Before the call is served (nothing happened), or after it (the effect
    /// happened and only the answer is lost or late).
    #[serde(default)]
    pub when: FaultWhen,
    /// How long a `slow` fault holds the answer, in milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
}

impl FaultRule {
    /// A fault on every matching call, before it is served. The methods
    /// below narrow it: `every`, `probability`, `limit`, `after_effect`.
    pub fn new(service: &str, api: &str, kind: FaultKind) -> Self {
        Self {
            service: service.into(),
            api: api.into(),
            kind,
            probability: 1.0,
            every: None,
            limit: None,
            when: FaultWhen::Before,
            delay_ms: 0,
        }
    }

    /// Every matching call held `delay_ms` before it is served (after it,
    /// with `after_effect`).
    pub fn slow(service: &str, api: &str, delay_ms: u64) -> Self {
        Self {
            delay_ms,
            ..Self::new(service, api, FaultKind::Slow)
        }
    }

    /// Strike every n-th matching call instead of drawing a chance.
    pub fn every(self, n: u64) -> Self {
        Self {
            every: Some(n),
            probability: 0.0,
            ..self
        }
    }

    /// Strike each matching call with this chance, 0 to 1.
    pub fn probability(self, probability: f64) -> Self {
        Self {
            probability,
            every: None,
            ..self
        }
    }

    /// Stop after this many injected faults.
    pub fn limit(self, limit: u64) -> Self {
        Self {
            limit: Some(limit),
            ..self
        }
    }

    /// Strike after the call was served: its effect stands, its answer is
    /// lost or late.
    pub fn after_effect(self) -> Self {
        Self {
            when: FaultWhen::After,
            ..self
        }
    }
}

/// When an injected fault strikes.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FaultWhen {
    /// Instead of serving the call: AWS never saw it.
    #[default]
    Before,
    /// After serving it: the SendCommand ran, the message was sent, the role
    /// was assumed, and the caller cannot know.
    After,
}

fn star() -> String {
    "*".into()
}

/// Kinds of injected fault.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// HTTP 500 with the service's InternalError shape.
    Error500,
    /// HTTP 503 with the service's ServiceUnavailable shape.
    Error503,
    /// Close the connection without answering.
    Drop,
    /// Answer `delay_ms` late (past a client's timeout, if long enough).
    Slow,
    /// SQS ReceiveMessage only, after the call: the answer arrives, and the
    /// messages in it are visible again at once, so another receive gets
    /// them too (the duplicate delivery SQS standard queues allow).
    Duplicate,
}

/// How simulated commands run.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ExecMode {
    /// Outcomes come from instance tags; nothing runs.
    #[default]
    Simulated,
    /// Shell lines run for real with `sh` in a scratch directory (PowerShell
    /// lines with `pwsh` when it is installed). Instances whose tags script
    /// an outcome (exit code, hang, output size, undeliverable) keep it.
    Real,
}

impl FaultKind {
    /// The kind as the configuration spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Error500 => "error500",
            Self::Error503 => "error503",
            Self::Drop => "drop",
            Self::Slow => "slow",
            Self::Duplicate => "duplicate",
        }
    }
}

impl Tunables {
    /// Checks values that would make the sim misbehave, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.time_scale > 0.0 && self.time_scale.is_finite()) {
            return Err(format!("time_scale: {} must be a positive number", self.time_scale));
        }
        if self.latency_ms.min > self.latency_ms.max {
            return Err("latency_ms: min must not exceed max".into());
        }
        for (i, quota) in self.quotas.iter().enumerate() {
            if !(quota.rate > 0.0 && quota.burst >= 1.0) {
                return Err(format!("quotas[{i}]: rate must be > 0 and burst >= 1"));
            }
        }
        for (i, fault) in self.faults.iter().enumerate() {
            if !(0.0..=1.0).contains(&fault.probability) {
                return Err(format!("faults[{i}].probability: must be between 0 and 1"));
            }
            if fault.every == Some(0) {
                return Err(format!("faults[{i}].every: must be at least 1"));
            }
            if fault.kind == FaultKind::Slow && fault.delay_ms == 0 {
                return Err(format!(
                    "faults[{i}].delay_ms: a slow fault needs a delay of at least 1 ms"
                ));
            }
            if fault.kind == FaultKind::Duplicate
                && (fault.service != "sqs" || fault.api != "ReceiveMessage" || fault.when != FaultWhen::After)
            {
                return Err(format!(
                    "faults[{i}].kind: duplicate applies to service \"sqs\", api \"ReceiveMessage\", when \"after\" only"
                ));
            }
        }
        if self.session_ttl_seconds == Some(0) {
            return Err("session_ttl_seconds: must be at least 1".into());
        }
        if let Some(events) = &self.events {
            events.validate()?;
        }
        Ok(())
    }
}

/// The tunables in force, shared by the parts of the sim that read them
/// (the server, SSM, the event router); replaced whole by the admin API.
#[derive(Debug)]
pub struct LiveTunables(std::sync::RwLock<std::sync::Arc<Tunables>>);

impl LiveTunables {
    /// These tunables in force.
    pub fn new(tunables: Tunables) -> Self {
        Self(std::sync::RwLock::new(std::sync::Arc::new(tunables)))
    }

    /// Those in force now.
    pub fn get(&self) -> std::sync::Arc<Tunables> {
        self.0.read().expect("tunables lock").clone()
    }

    /// Puts `tunables` in force.
    pub fn set(&self, tunables: Tunables) {
        *self.0.write().expect("tunables lock") = std::sync::Arc::new(tunables);
    }
}

/// Where matched events go, and how faithfully.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EventRouting {
    /// The hub's SQS queue the hub rule targets.
    pub queue_url: String,
    /// The hub's region (where the queue is).
    pub region: String,
    /// The target accounts' rule: an EventBridge event pattern (literal
    /// value lists, nested objects).
    pub pattern: Value,
    /// Share of matched events never delivered, 0 to 100.
    #[serde(default)]
    pub drop_percent: f64,
    /// Share of delivered events delivered twice, 0 to 100.
    #[serde(default)]
    pub duplicate_percent: f64,
    /// Delivery delay of each copy (uniform in [min, max] milliseconds); a
    /// spread lets later events overtake earlier ones.
    #[serde(default)]
    pub delay_ms: LatencyRange,
}

impl EventRouting {
    /// Checks every field, naming the one at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.queue_url.is_empty() {
            return Err("events.queue_url: must not be empty".into());
        }
        if self.region.is_empty() {
            return Err("events.region: must not be empty".into());
        }
        check_pattern(&self.pattern, "events.pattern")?;
        for (name, value) in [
            ("events.drop_percent", self.drop_percent),
            ("events.duplicate_percent", self.duplicate_percent),
        ] {
            if !(0.0..=100.0).contains(&value) {
                return Err(format!("{name}: must be between 0 and 100, got {value}"));
            }
        }
        if self.delay_ms.min > self.delay_ms.max {
            return Err(format!(
                "events.delay_ms: min {} is above max {}",
                self.delay_ms.min, self.delay_ms.max
            ));
        }
        Ok(())
    }
}

/// An event pattern must be an object whose leaves are non-empty arrays of
/// literal values (the subset muster's templates use).
fn check_pattern(pattern: &Value, path: &str) -> Result<(), String> {
    let Value::Object(fields) = pattern else {
        return Err(format!("{path}: must be an object of fields"));
    };
    if fields.is_empty() {
        return Err(format!("{path}: must name at least one field"));
    }
    for (key, value) in fields {
        let path = format!("{path}.{key}");
        match value {
            Value::Object(_) => check_pattern(value, &path)?,
            Value::Array(values) if !values.is_empty() => {
                if let Some(bad) = values.iter().find(|v| v.is_object() || v.is_array()) {
                    return Err(format!(
                        "{path}: only literal values are supported (no content filters), got {bad}"
                    ));
                }
            }
            _ => return Err(format!("{path}: must be a non-empty array of values or an object")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn routing_errors_name_the_field() {
        let good = EventRouting {
            queue_url: "http://q".into(),
            region: "us-east-1".into(),
            pattern: json!({"source": ["aws.ssm"]}),
            drop_percent: 0.0,
            duplicate_percent: 0.0,
            delay_ms: LatencyRange::default(),
        };
        assert_eq!(good.validate(), Ok(()));
        let with = |change: fn(&mut EventRouting)| {
            let mut routing = good.clone();
            change(&mut routing);
            routing.validate().unwrap_err()
        };
        assert!(with(|r| r.drop_percent = 101.0).starts_with("events.drop_percent:"));
        assert!(with(|r| r.duplicate_percent = -1.0).starts_with("events.duplicate_percent:"));
        assert!(with(|r| r.queue_url.clear()).starts_with("events.queue_url:"));
        assert!(with(|r| r.delay_ms = LatencyRange { min: 5, max: 1 }).starts_with("events.delay_ms:"));
        assert!(
            with(|r| r.pattern = json!({"detail": {"status": "Success"}})).starts_with("events.pattern.detail.status:")
        );
        assert!(
            with(|r| r.pattern = json!({"detail": {"status": [{"prefix": "S"}]}}))
                .starts_with("events.pattern.detail.status:")
        );
    }
}
