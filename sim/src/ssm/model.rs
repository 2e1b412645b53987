//! Commands and their invocations, and how the API renders them.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::documents::{Document, Platform};
use super::output;
use crate::events::{self, CommandFacts};
use crate::fleet::Behaviour;

/// Where one invocation is.
#[derive(Debug, Clone)]
pub enum InvState {
    /// Not yet picked up by the agent.
    Pending,
    /// Running since `started`.
    InProgress {
        /// When the agent started it.
        started: DateTime<Utc>,
    },
    /// Finished, one way or another.
    Done(Done),
}

/// A terminal invocation.
#[derive(Debug, Clone)]
pub struct Done {
    /// Status (CommandInvocationStatus).
    pub status: &'static str,
    /// StatusDetails.
    pub details: &'static str,
    /// ResponseCode; -1 when the command never ran.
    pub response_code: i32,
    /// When it started, if it did.
    pub started: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished: DateTime<Utc>,
    /// Per-step results; empty when the command never ran.
    pub steps: Vec<StepResult>,
}

/// The result of one step.
#[derive(Debug, Clone)]
pub struct StepResult {
    /// Step (plugin) name.
    pub name: String,
    /// Status.
    pub status: &'static str,
    /// StatusDetails.
    pub details: &'static str,
    /// ResponseCode.
    pub response_code: i32,
    /// Full stdout.
    pub stdout: String,
    /// Full stderr.
    pub stderr: String,
    /// S3 URL of stdout, when S3 output is on.
    pub stdout_url: String,
    /// S3 URL of stderr, when S3 output is on.
    pub stderr_url: String,
}

/// One instance's copy of a command.
#[derive(Debug)]
pub struct Invocation {
    /// Instance id.
    pub instance_id: String,
    /// ComputerName-like name.
    pub instance_name: String,
    /// Platform at send time.
    pub platform: Platform,
    /// Scripted behaviour at send time.
    pub behaviour: Behaviour,
    /// Where it is.
    pub state: InvState,
    /// Stops a command that runs for real.
    pub kill: Option<CancellationToken>,
    /// What earlier runs of a real script printed before they asked for a
    /// reboot (exit 194 or 3010); the script runs again after it.
    pub before_reboots: Option<RunOutput>,
}

/// What runs of a script printed.
#[derive(Debug, Clone, Default)]
pub struct RunOutput {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Invocation {
    /// Status and details strings.
    pub fn status(&self) -> (&'static str, &'static str) {
        match &self.state {
            InvState::Pending => ("Pending", "Pending"),
            InvState::InProgress { .. } => ("InProgress", "InProgress"),
            InvState::Done(done) => (done.status, done.details),
        }
    }
}

/// Output settings of a command.
#[derive(Debug, Clone, Default)]
pub struct OutputSettings {
    /// S3 bucket.
    pub s3_bucket: Option<String>,
    /// S3 key prefix.
    pub s3_prefix: String,
    /// CloudWatch Logs group, when CloudWatch output is on.
    pub log_group: Option<String>,
}

/// One SendCommand.
#[derive(Debug)]
pub struct Command {
    /// Command id (a UUID, 36 characters).
    pub id: String,
    /// Region it belongs to.
    pub region: String,
    /// The document.
    pub document: std::sync::Arc<Document>,
    /// DocumentVersion as sent.
    pub document_version: String,
    /// Parameters as sent, with defaults.
    pub parameters: BTreeMap<String, Vec<String>>,
    /// Comment.
    pub comment: String,
    /// InstanceIds as sent.
    pub instance_ids: Vec<String>,
    /// Targets as sent.
    pub targets: Value,
    /// When it was accepted.
    pub requested_at: DateTime<Utc>,
    /// The same, on the monotonic clock (for visibility).
    pub requested: Instant,
    /// Delivery timeout in seconds.
    pub timeout_seconds: u64,
    /// Where output goes.
    pub output: OutputSettings,
    /// MaxConcurrency as sent.
    pub max_concurrency: String,
    /// MaxErrors as sent.
    pub max_errors: String,
    /// CancelCommand was called for the whole command.
    pub cancel_requested: bool,
    /// Invocations handed to their agents so far (in order): MaxConcurrency
    /// holds the rest back until earlier ones end.
    pub released: usize,
    /// More invocations failed than MaxErrors allows: the rest were never
    /// sent.
    pub stopped_by_errors: bool,
    /// The invocations.
    pub invocations: Vec<Invocation>,
}

fn epoch(t: &DateTime<Utc>) -> Value {
    json!(t.timestamp_millis() as f64 / 1000.0)
}

/// The statuses of a command and its invocations at one moment, to tell
/// which changed.
pub struct Statuses {
    command: &'static str,
    invocations: Vec<&'static str>,
}

/// A MaxConcurrency or MaxErrors value ("10" or "10%") resolved against
/// `targets`: a share rounds down, and a concurrency is at least 1.
pub fn resolve_rate(value: &str, targets: usize, at_least: usize) -> usize {
    let n = match value.strip_suffix('%') {
        Some(percent) => percent.parse::<usize>().unwrap_or(100) * targets / 100,
        None => value.parse::<usize>().unwrap_or(usize::MAX),
    };
    n.max(at_least)
}

/// Whether an ended invocation counts against MaxErrors.
fn is_error(done: &Done) -> bool {
    (done.status == "Failed" && done.details == "Failed") || done.details == "ExecutionTimedOut"
}

impl Command {
    /// The invocations to hand to their agents now, as SSM's rate controls
    /// allow: within MaxConcurrency of those running, until more than
    /// MaxErrors failed; past that, the ones never sent end Cancelled and
    /// the command Failed. Call after any invocation changed.
    pub fn release(&mut self) -> Vec<usize> {
        let targets = self.invocations.len();
        let errors = self
            .invocations
            .iter()
            .filter(|i| matches!(&i.state, InvState::Done(d) if is_error(d)))
            .count();
        if !self.stopped_by_errors && errors > resolve_rate(&self.max_errors, targets, 0) {
            self.stopped_by_errors = true;
            let now = Utc::now();
            for invocation in &mut self.invocations[self.released..] {
                if matches!(invocation.state, InvState::Pending) {
                    invocation.state = InvState::Done(Done {
                        status: "Cancelled",
                        details: "Cancelled",
                        response_code: -1,
                        started: None,
                        finished: now,
                        steps: Vec::new(),
                    });
                }
            }
            self.released = targets;
        }
        let limit = resolve_rate(&self.max_concurrency, targets, 1);
        let running = self.invocations[..self.released]
            .iter()
            .filter(|i| !matches!(i.state, InvState::Done(_)))
            .count();
        let mut now = Vec::new();
        while self.released < targets && running + now.len() < limit {
            if matches!(self.invocations[self.released].state, InvState::Pending) {
                now.push(self.released);
            }
            self.released += 1;
        }
        now
    }

    /// The command's status and each invocation's, now.
    pub fn statuses(&self) -> Statuses {
        Statuses {
            command: self.aggregate().0,
            invocations: self.invocations.iter().map(|i| i.status().0).collect(),
        }
    }

    /// Run Command's events for what changed since `before`: each
    /// invocation's new status, then the command's.
    pub fn changes(&self, account: &str, before: &Statuses) -> Vec<Value> {
        let now = self.statuses();
        let facts = CommandFacts {
            account,
            region: &self.region,
            command_id: &self.id,
            document_name: &self.document.name,
            requested_at: self.requested_at,
            expires_at: self.requested_at + chrono::Duration::seconds(self.timeout_seconds as i64),
        };
        let mut events: Vec<Value> = self
            .invocations
            .iter()
            .zip(now.invocations.iter().zip(&before.invocations))
            .filter(|(_, (now, before))| now != before)
            .map(|(invocation, (status, _))| events::invocation_event(&facts, &invocation.instance_id, status))
            .collect();
        if now.command != before.command {
            events.push(events::command_event(
                &facts,
                &self.instance_ids,
                &self.parameters,
                now.command,
            ));
        }
        events
    }
}

impl Command {
    /// Command status, StatusDetails and counts, aggregated from invocations.
    fn aggregate(&self) -> (&'static str, &'static str, usize, usize, usize) {
        let done: Vec<&Done> = self
            .invocations
            .iter()
            .filter_map(|i| match &i.state {
                InvState::Done(d) => Some(d),
                _ => None,
            })
            .collect();
        let errors = done.iter().filter(|d| is_error(d)).count();
        let delivery_timeouts = done.iter().filter(|d| d.details == "DeliveryTimedOut").count();
        let (status, details) = if done.len() < self.invocations.len() {
            if self.cancel_requested {
                ("Cancelling", "Cancelling")
            } else if self.invocations.iter().all(|i| matches!(i.state, InvState::Pending)) {
                ("Pending", "Pending")
            } else {
                ("InProgress", "InProgress")
            }
        } else if self.stopped_by_errors {
            ("Failed", "Failed")
        } else if done.iter().any(|d| d.status == "Cancelled") {
            ("Cancelled", "Cancelled")
        } else if done.iter().all(|d| d.status == "Success") {
            ("Success", "Success")
        } else if errors > 0 {
            ("Failed", "Failed")
        } else {
            ("Failed", "Incomplete")
        };
        (status, details, done.len(), errors, delivery_timeouts)
    }

    fn cloudwatch_config(&self) -> Value {
        match &self.output.log_group {
            Some(group) => json!({"CloudWatchLogGroupName": group, "CloudWatchOutputEnabled": true}),
            None => json!({"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": false}),
        }
    }

    /// The Command object of SendCommand and ListCommands.
    pub fn to_json(&self) -> Value {
        let (status, details, completed, errors, delivery_timeouts) = self.aggregate();
        let expires = self.requested_at + chrono::Duration::seconds(self.timeout_seconds as i64);
        json!({
            "CommandId": self.id,
            "DocumentName": self.document.name,
            "DocumentVersion": self.document_version,
            "Comment": self.comment,
            "ExpiresAfter": epoch(&expires),
            "Parameters": self.parameters,
            "InstanceIds": self.instance_ids,
            "Targets": self.targets,
            "RequestedDateTime": epoch(&self.requested_at),
            "Status": status,
            "StatusDetails": details,
            "OutputS3Region": self.region,
            "OutputS3BucketName": self.output.s3_bucket.clone().unwrap_or_default(),
            "OutputS3KeyPrefix": self.output.s3_prefix,
            "MaxConcurrency": self.max_concurrency,
            "MaxErrors": self.max_errors,
            "TargetCount": self.invocations.len(),
            "CompletedCount": completed,
            "ErrorCount": errors,
            "DeliveryTimedOutCount": delivery_timeouts,
            "ServiceRole": "",
            "NotificationConfig": {"NotificationArn": "", "NotificationEvents": [], "NotificationType": ""},
            "CloudWatchOutputConfig": self.cloudwatch_config(),
            "TimeoutSeconds": self.timeout_seconds,
        })
    }

    /// The CommandInvocation object of ListCommandInvocations.
    pub fn invocation_json(&self, invocation: &Invocation, details: bool) -> Value {
        let (status, status_details) = invocation.status();
        let (stdout_url, stderr_url) = match &invocation.state {
            InvState::Done(done) => done
                .steps
                .iter()
                .find(|s| s.details != "Skipped")
                .map(|s| (s.stdout_url.clone(), s.stderr_url.clone()))
                .unwrap_or_default(),
            _ => Default::default(),
        };
        let mut value = json!({
            "CommandId": self.id,
            "InstanceId": invocation.instance_id,
            "InstanceName": invocation.instance_name,
            "Comment": self.comment,
            "DocumentName": self.document.name,
            "DocumentVersion": self.document_version,
            "RequestedDateTime": epoch(&self.requested_at),
            "Status": status,
            "StatusDetails": status_details,
            "TraceOutput": "",
            "StandardOutputUrl": stdout_url,
            "StandardErrorUrl": stderr_url,
            "ServiceRole": "",
            "NotificationConfig": {"NotificationArn": "", "NotificationEvents": [], "NotificationType": ""},
            "CloudWatchOutputConfig": self.cloudwatch_config(),
        });
        if details {
            value["CommandPlugins"] = Value::Array(self.plugins_json(invocation));
        }
        value
    }

    fn plugins_json(&self, invocation: &Invocation) -> Vec<Value> {
        let bucket = self.output.s3_bucket.clone().unwrap_or_default();
        let prefix = &self.output.s3_prefix;
        match &invocation.state {
            InvState::Done(done) if !done.steps.is_empty() => done
                .steps
                .iter()
                .map(|step| {
                    json!({
                        "Name": step.name,
                        "Status": step.status,
                        "StatusDetails": step.details,
                        "ResponseCode": step.response_code,
                        "ResponseStartDateTime": done.started.as_ref().map(epoch),
                        "ResponseFinishDateTime": epoch(&done.finished),
                        "Output": output::plugin_output(&step.stdout, &step.stderr, output::PLUGIN_OUTPUT_CHARS),
                        "StandardOutputUrl": step.stdout_url,
                        "StandardErrorUrl": step.stderr_url,
                        "OutputS3Region": self.region,
                        "OutputS3BucketName": bucket,
                        "OutputS3KeyPrefix": prefix,
                    })
                })
                .collect(),
            state => {
                let (status, details) = invocation.status();
                let started = match state {
                    InvState::InProgress { started } => Some(epoch(started)),
                    _ => None,
                };
                self.document
                    .steps
                    .iter()
                    .map(|step| {
                        json!({
                            "Name": step.name,
                            "Status": status,
                            "StatusDetails": details,
                            "ResponseCode": -1,
                            "ResponseStartDateTime": started,
                            "Output": "",
                            "StandardOutputUrl": "",
                            "StandardErrorUrl": "",
                            "OutputS3Region": self.region,
                            "OutputS3BucketName": bucket,
                            "OutputS3KeyPrefix": prefix,
                        })
                    })
                    .collect()
            }
        }
    }
}
