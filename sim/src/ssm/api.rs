//! The Run Command API: validation, error codes and JSON shapes as AWS has
//! them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::agent::Key;
use super::documents::{Document, Platform};
use super::model::{Command, Done, InvState, Invocation, OutputSettings};
use super::output;
use super::{ApiError, Ctx, Ssm};
use crate::audit::AuditEntry;
use crate::ec2::InstanceFact;
use crate::fleet::{AgentState, Behaviour};
use crate::policy::wildcard_match;

const MAX_INSTANCE_IDS: usize = 50;

pub(super) fn validation(message: &str) -> ApiError {
    ApiError::new("ValidationException", message)
}

pub(super) fn error(code: &'static str, message: &str) -> ApiError {
    ApiError::new(code, message)
}

pub(super) fn string<'a>(request: &'a Value, field: &str) -> Option<&'a str> {
    request.get(field).and_then(Value::as_str)
}

fn strings(request: &Value, field: &str) -> Option<Vec<String>> {
    request
        .get(field)
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
}

fn max_results(request: &Value, min: u64, max: u64, default: u64) -> Result<usize, ApiError> {
    match request.get("MaxResults").and_then(Value::as_u64) {
        None => Ok(default as usize),
        Some(n) if (min..=max).contains(&n) => Ok(n as usize),
        Some(n) => Err(validation(&format!(
            "1 validation error detected: Value '{n}' at 'maxResults' failed to satisfy constraint: Member must have value between {min} and {max}"
        ))),
    }
}

/// Pages a list with an opaque NextToken.
fn page<T>(items: Vec<T>, size: usize, token: Option<&str>) -> Result<(Vec<T>, Option<String>), ApiError> {
    let start = match token {
        None | Some("") => 0,
        Some(token) => token
            .strip_prefix("mstr-")
            .and_then(|n| usize::from_str_radix(n, 16).ok())
            .filter(|n| *n <= items.len())
            .ok_or_else(|| error("InvalidNextToken", "The specified token isn't valid."))?,
    };
    let end = (start + size).min(items.len());
    let next = (end < items.len()).then(|| format!("mstr-{end:x}"));
    Ok((items.into_iter().skip(start).take(size).collect(), next))
}

fn platform_of(instance: &InstanceFact) -> Platform {
    if instance.windows {
        Platform::Windows
    } else {
        Platform::Linux
    }
}

fn is_gone(instance: &InstanceFact) -> bool {
    matches!(instance.state.as_str(), "terminated" | "shutting-down")
}

pub(super) async fn send_command(ssm: &Ssm, ctx: &Ctx, request: &Value) -> Result<Value, ApiError> {
    let Some(document_name) = string(request, "DocumentName") else {
        return Err(validation(
            "1 validation error detected: Value null at 'documentName' failed to satisfy constraint: Member must not be null",
        ));
    };
    let document_version = string(request, "DocumentVersion").unwrap_or("$DEFAULT").to_owned();
    let document = ssm.document(ctx, document_name, &document_version)?;
    let limits = SendLimits::of(request)?;
    let parameters = parameters(request, &document)?;
    let output = output_settings(request, &document)?;
    let (instance_ids, targets, selected) = select_instances(ssm, ctx, request).await?;
    let now = Utc::now();
    let command_id = uuid::Uuid::new_v4().to_string();
    let invocations: Vec<Invocation> = selected
        .iter()
        .map(|instance| Invocation {
            instance_id: instance.id.clone(),
            instance_name: instance.private_dns.clone().unwrap_or_default(),
            platform: platform_of(instance),
            behaviour: Behaviour::of(instance),
            state: InvState::Pending,
            kill: None,
            before_reboots: None,
        })
        .collect();
    let mut command = Command {
        id: command_id.clone(),
        region: ctx.region.clone(),
        document,
        document_version,
        parameters,
        comment: limits.comment.clone(),
        instance_ids,
        targets,
        requested_at: now,
        requested: Instant::now(),
        timeout_seconds: limits.timeout_seconds,
        output,
        max_concurrency: limits.max_concurrency,
        max_errors: limits.max_errors,
        cancel_requested: false,
        released: 0,
        stopped_by_errors: false,
        invocations,
    };
    // MaxConcurrency: the first ones go now, the rest as these end.
    let released = super::agent::releases(&mut command);
    let body = json!({ "Command": command.to_json() });
    let key = store_command(ssm, ctx, command);
    ssm.start_released(&key, released);
    ssm.parts.audit.record(AuditEntry {
        at: now.to_rfc3339(),
        account: ctx.account.clone(),
        region: ctx.region.clone(),
        command_id,
        document_name: document_name.to_owned(),
        instance_ids: selected.iter().map(|i| i.id.clone()).collect(),
        comment: limits.comment,
        principal: ctx.principal.clone(),
    });
    Ok(body)
}

/// A SendCommand's comment, timeout and rate controls, checked as SSM
/// checks them.
struct SendLimits {
    comment: String,
    timeout_seconds: u64,
    max_concurrency: String,
    max_errors: String,
}

impl SendLimits {
    fn of(request: &Value) -> Result<Self, ApiError> {
        let comment = string(request, "Comment").unwrap_or_default().to_owned();
        if comment.chars().count() > 100 {
            return Err(validation(
                "1 validation error detected: Value at 'comment' failed to satisfy constraint: Member must have length less than or equal to 100",
            ));
        }
        let timeout_seconds = request.get("TimeoutSeconds").and_then(Value::as_u64).unwrap_or(3_600);
        if !(30..=2_592_000).contains(&timeout_seconds) {
            return Err(validation(&format!(
                "1 validation error detected: Value '{timeout_seconds}' at 'timeoutSeconds' failed to satisfy constraint: Member must have value between 30 and 2592000"
            )));
        }
        let rate_ok = |value: &str, min: u32| {
            value.strip_suffix('%').map_or_else(
                || value.parse::<u64>().ok().filter(|n| *n >= u64::from(min)).is_some(),
                |p| p.parse::<u32>().ok().filter(|p| (min..=100).contains(p)).is_some(),
            )
        };
        let max_concurrency = string(request, "MaxConcurrency").unwrap_or("50").to_owned();
        let max_errors = string(request, "MaxErrors").unwrap_or("0").to_owned();
        if !rate_ok(&max_concurrency, 1) {
            return Err(validation(
                "1 validation error detected: Value at 'maxConcurrency' failed to satisfy constraint: Member must satisfy regular expression pattern: ^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$",
            ));
        }
        if !rate_ok(&max_errors, 0) {
            return Err(validation(
                "1 validation error detected: Value at 'maxErrors' failed to satisfy constraint: Member must satisfy regular expression pattern: ^([1-9][0-9]*|[0]|[1-9][0-9]%|[0-9]%|100%)$",
            ));
        }
        Ok(Self {
            comment,
            timeout_seconds,
            max_concurrency,
            max_errors,
        })
    }
}

/// The request's parameters, checked against the document: each one it
/// declares, allowed values, required ones given.
fn parameters(request: &Value, document: &Document) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    let mut parameters: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(given) = request.get("Parameters").and_then(Value::as_object) {
        for (name, values) in given {
            let Some(param) = document.params.iter().find(|p| p.name == *name) else {
                return Err(error(
                    "InvalidParameters",
                    &format!("Parameter \"{name}\" is not a parameter of document {}.", document.name),
                ));
            };
            let Some(values) = values.as_array() else {
                return Err(error(
                    "InvalidParameters",
                    &format!("Parameter \"{name}\" must be a list of strings."),
                ));
            };
            let values: Vec<String> = values.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
            if !param.allowed.is_empty() && values.iter().any(|v| !param.allowed.contains(v)) {
                return Err(error(
                    "InvalidParameters",
                    &format!("Parameter \"{name}\" must be one of {}.", param.allowed.join(", ")),
                ));
            }
            parameters.insert(name.clone(), values);
        }
    }
    for param in document.params.iter().filter(|p| p.required) {
        if parameters
            .get(&param.name)
            .is_none_or(|v| v.iter().all(String::is_empty))
        {
            return Err(error(
                "InvalidParameters",
                &format!(
                    "Parameter \"{}\" is required by document {}.",
                    param.name, document.name
                ),
            ));
        }
    }
    if let Some(timeout) = parameters.get("executionTimeout").and_then(|v| v.first()) {
        match timeout.parse::<u64>() {
            Ok(t) if (1..=172_800).contains(&t) => {}
            _ => {
                return Err(error(
                    "InvalidParameters",
                    "Parameter \"executionTimeout\" must be a number of seconds from 1 to 172800.",
                ));
            }
        }
    }
    Ok(parameters)
}

/// Where the command's output goes: an S3 bucket and prefix, a CloudWatch
/// log group (the document's default one when enabled without a name).
fn output_settings(request: &Value, document: &Document) -> Result<OutputSettings, ApiError> {
    let bucket = string(request, "OutputS3BucketName")
        .filter(|b| !b.is_empty())
        .map(str::to_owned);
    let prefix = string(request, "OutputS3KeyPrefix").unwrap_or_default().to_owned();
    if prefix.len() > 500 {
        return Err(validation(
            "1 validation error detected: Value at 'outputS3KeyPrefix' failed to satisfy constraint: Member must have length less than or equal to 500",
        ));
    }
    let log_group = request.get("CloudWatchOutputConfig").and_then(|cw| {
        let enabled = cw
            .get("CloudWatchOutputEnabled")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        enabled.then(|| {
            cw.get("CloudWatchLogGroupName")
                .and_then(Value::as_str)
                .filter(|g| !g.is_empty())
                .map_or_else(|| format!("/aws/ssm/{}", document.name), str::to_owned)
        })
    });
    if let Some(group) = &log_group
        && (group.len() > 512 || !group.chars().all(|c| c.is_ascii_alphanumeric() || "._-/#".contains(c)))
    {
        return Err(validation(
            "1 validation error detected: Value at 'cloudWatchOutputConfig.cloudWatchLogGroupName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\.\\-_/#A-Za-z0-9]+",
        ));
    }
    Ok(OutputSettings {
        s3_bucket: bucket,
        s3_prefix: prefix,
        log_group,
    })
}

/// The instances a SendCommand names, by id or by Targets: (the ids as
/// given, the Targets as given, the managed instances selected). Named ids
/// that are not managed running instances refuse the whole call, as SSM
/// does.
async fn select_instances(
    ssm: &Ssm,
    ctx: &Ctx,
    request: &Value,
) -> Result<(Vec<String>, Value, Vec<InstanceFact>), ApiError> {
    let instance_ids = strings(request, "InstanceIds").unwrap_or_default();
    let targets = request.get("Targets").cloned().unwrap_or(Value::Array(Vec::new()));
    let has_targets = targets.as_array().is_some_and(|t| !t.is_empty());
    if instance_ids.is_empty() != has_targets {
        return Err(validation("Exactly one of InstanceIds and Targets must be given."));
    }
    if instance_ids.len() > MAX_INSTANCE_IDS {
        return Err(validation(&format!(
            "1 validation error detected: Value '{:?}' at 'instanceIds' failed to satisfy constraint: Member must have length less than or equal to {MAX_INSTANCE_IDS}",
            instance_ids
        )));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(duplicate) = instance_ids.iter().find(|id| !seen.insert(id.as_str())) {
        return Err(error(
            "DuplicateInstanceId",
            &format!("Instance {duplicate} is listed more than once."),
        ));
    }
    let max_age = Duration::from_millis(ssm.tunables().fleet_cache_ms);
    let moto_error = |e: crate::moto::MotoError| error("InternalServerError", &e.to_string());
    let managed = |i: &InstanceFact| !is_gone(i) && Behaviour::of(i).agent != AgentState::Unmanaged;
    if has_targets {
        let fleet = ssm
            .parts
            .fleet
            .all(&ctx.account, &ctx.region, max_age)
            .await
            .map_err(moto_error)?;
        let selected = resolve_targets(&targets, &fleet)?
            .into_iter()
            .filter(|i| managed(i))
            .collect();
        return Ok((instance_ids, targets, selected));
    }
    let found = ssm
        .parts
        .fleet
        .by_ids(&ctx.account, &ctx.region, &instance_ids, max_age)
        .await
        .map_err(moto_error)?;
    let bad: Vec<&str> = instance_ids
        .iter()
        .filter(|id| !found.iter().any(|i| &i.id == *id && managed(i)))
        .map(String::as_str)
        .collect();
    if !bad.is_empty() {
        return Err(error(
            "InvalidInstanceId",
            &format!(
                "Instances [[{}]] not in a valid state for account {}",
                bad.join(", "),
                ctx.account
            ),
        ));
    }
    Ok((instance_ids, targets, found))
}

/// Keeps `command` in its (account, region); the key of its first
/// invocation.
fn store_command(ssm: &Ssm, ctx: &Ctx, command: Command) -> Key {
    let mut store = ssm.store.lock().expect("ssm lock");
    let epoch = store.epoch;
    let scope = store
        .scopes
        .entry((ctx.account.clone(), ctx.region.clone()))
        .or_default();
    scope.push(command);
    Key {
        epoch,
        account: ctx.account.clone(),
        region: ctx.region.clone(),
        command: scope.len() - 1,
        invocation: 0,
    }
}

fn resolve_targets(targets: &Value, fleet: &[InstanceFact]) -> Result<Vec<InstanceFact>, ApiError> {
    let targets = targets.as_array().cloned().unwrap_or_default();
    if targets.len() > 5 {
        return Err(validation(
            "1 validation error detected: Value at 'targets' failed to satisfy constraint: Member must have length less than or equal to 5",
        ));
    }
    let mut selected: Vec<InstanceFact> = fleet.to_vec();
    for target in &targets {
        let key = target.get("Key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<String> = strings(target, "Values").unwrap_or_default();
        selected.retain(|instance| {
            if key == "InstanceIds" {
                values.contains(&instance.id)
            } else if key == "tag-key" {
                values.iter().any(|k| instance.tags.contains_key(k))
            } else if let Some(tag) = key.strip_prefix("tag:") {
                instance
                    .tags
                    .get(tag)
                    .is_some_and(|v| values.iter().any(|want| wildcard_match(want, v)))
            } else {
                false
            }
        });
        if !(key == "InstanceIds" || key == "tag-key" || key.starts_with("tag:")) {
            return Err(error("InvalidTarget", &format!("Target key {key} is not supported.")));
        }
    }
    Ok(selected)
}

fn visible(command: &Command, delay: Duration) -> bool {
    command.requested.elapsed() >= delay
}

/// GetDocument: a Command document's content (JSON), as SSM returns it.
pub(super) fn get_document(ssm: &super::Ssm, ctx: &Ctx, request: &Value) -> Result<Value, ApiError> {
    let Some(name) = string(request, "Name") else {
        return Err(validation(
            "1 validation error detected: Value null at 'name' failed to satisfy constraint: Member must not be null",
        ));
    };
    let version = string(request, "DocumentVersion").unwrap_or("$DEFAULT");
    let document = ssm.document(ctx, name, version)?;
    let format = string(request, "DocumentFormat").unwrap_or("JSON");
    if format != "JSON" {
        return Err(error(
            "InvalidDocumentType",
            &format!("muster-sim serves documents as JSON only, not {format}"),
        ));
    }
    Ok(serde_json::json!({
        "Name": document.name,
        "DocumentVersion": document.version.to_string(),
        "Status": "Active",
        "Content": document.content(),
        "DocumentType": "Command",
        "DocumentFormat": "JSON",
    }))
}

pub(super) fn list_commands(ssm: &Ssm, ctx: &Ctx, request: &Value) -> Result<Value, ApiError> {
    let size = max_results(request, 1, 50, 50)?;
    let command_id = string(request, "CommandId");
    let instance_id = string(request, "InstanceId");
    let mut after: Option<DateTime<Utc>> = None;
    let mut before: Option<DateTime<Utc>> = None;
    let mut status_filter: Option<String> = None;
    let mut document_filter: Option<String> = None;
    for filter in request.get("Filters").and_then(Value::as_array).into_iter().flatten() {
        let key = filter.get("key").and_then(Value::as_str).unwrap_or_default();
        let value = filter.get("value").and_then(Value::as_str).unwrap_or_default();
        let time = || {
            DateTime::parse_from_rfc3339(value)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    error(
                        "InvalidFilterValue",
                        &format!("Filter value {value} is not a valid date and time."),
                    )
                })
        };
        match key {
            "InvokedAfter" => after = Some(time()?),
            "InvokedBefore" => before = Some(time()?),
            "Status" => status_filter = Some(value.to_owned()),
            "DocumentName" => document_filter = Some(value.to_owned()),
            "ExecutionStage" => {}
            other => return Err(error("InvalidFilterKey", &format!("Filter key {other} is not valid."))),
        }
    }
    let store = ssm.store.lock().expect("ssm lock");
    let commands: Vec<&Command> = store
        .scopes
        .get(&(ctx.account.clone(), ctx.region.clone()))
        .map(|c| c.iter().rev().collect())
        .unwrap_or_default();
    if let Some(id) = command_id
        && !commands.iter().any(|c| c.id == id)
    {
        return Err(error("InvalidCommandId", &format!("Command {id} does not exist.")));
    }
    // Like its invocations, a new command shows in listings only after a
    // moment: a caller that lost SendCommand's answer must allow for that.
    let delay = Duration::from_millis(ssm.tunables().visibility_delay_ms);
    let matching: Vec<Value> = commands
        .into_iter()
        .filter(|c| visible(c, delay))
        .filter(|c| command_id.is_none_or(|id| c.id == id))
        .filter(|c| instance_id.is_none_or(|id| c.invocations.iter().any(|i| i.instance_id == id)))
        .filter(|c| after.is_none_or(|t| c.requested_at >= t))
        .filter(|c| before.is_none_or(|t| c.requested_at <= t))
        .filter(|c| document_filter.as_deref().is_none_or(|d| c.document.name == d))
        .map(Command::to_json)
        .filter(|c| status_filter.as_deref().is_none_or(|s| c["Status"] == s))
        .collect();
    let (items, next) = page(matching, size, string(request, "NextToken"))?;
    Ok(json!({ "Commands": items, "NextToken": next }))
}

pub(super) fn list_command_invocations(ssm: &Ssm, ctx: &Ctx, request: &Value) -> Result<Value, ApiError> {
    let size = max_results(request, 1, 50, 50)?;
    let details = request.get("Details").and_then(Value::as_bool).unwrap_or(false);
    let command_id = string(request, "CommandId");
    let instance_id = string(request, "InstanceId");
    let delay = Duration::from_millis(ssm.tunables().visibility_delay_ms);
    let store = ssm.store.lock().expect("ssm lock");
    let commands = store
        .scopes
        .get(&(ctx.account.clone(), ctx.region.clone()))
        .map(Vec::as_slice)
        .unwrap_or_default();
    let items: Vec<Value> = commands
        .iter()
        .rev()
        .filter(|c| command_id.is_none_or(|id| c.id == id))
        .filter(|c| visible(c, delay))
        .flat_map(|c| {
            c.invocations
                .iter()
                .filter(|i| instance_id.is_none_or(|id| i.instance_id == id))
                .map(move |i| c.invocation_json(i, details))
        })
        .collect();
    let (items, next) = page(items, size, string(request, "NextToken"))?;
    Ok(json!({ "CommandInvocations": items, "NextToken": next }))
}

pub(super) fn get_command_invocation(ssm: &Ssm, ctx: &Ctx, request: &Value) -> Result<Value, ApiError> {
    let (Some(command_id), Some(instance_id)) = (string(request, "CommandId"), string(request, "InstanceId")) else {
        return Err(validation("CommandId and InstanceId are required."));
    };
    let plugin_name = string(request, "PluginName");
    let delay = Duration::from_millis(ssm.tunables().visibility_delay_ms);
    let store = ssm.store.lock().expect("ssm lock");
    let found = store
        .scopes
        .get(&(ctx.account.clone(), ctx.region.clone()))
        .and_then(|commands| commands.iter().find(|c| c.id == command_id))
        .filter(|c| visible(c, delay))
        .and_then(|c| {
            c.invocations
                .iter()
                .find(|i| i.instance_id == instance_id)
                .map(|i| (c, i))
        });
    let Some((command, invocation)) = found else {
        return Err(error(
            "InvocationDoesNotExist",
            "An error occurred (InvocationDoesNotExist) when calling the GetCommandInvocation operation",
        ));
    };
    let steps = &command.document.steps;
    let step = match plugin_name {
        Some(name) => match steps.iter().position(|s| s.name == name) {
            Some(index) => index,
            None => {
                return Err(error(
                    "InvalidPluginName",
                    &format!("Plugin {name} is not part of document {}.", command.document.name),
                ));
            }
        },
        None if steps.len() == 1 => 0,
        None => {
            return Err(error(
                "InvalidPluginName",
                "The document has more than one step; PluginName is required.",
            ));
        }
    };
    let (status, details) = invocation.status();
    let mut body = json!({
        "CommandId": command.id,
        "InstanceId": invocation.instance_id,
        "Comment": command.comment,
        "DocumentName": command.document.name,
        "DocumentVersion": command.document_version,
        "PluginName": steps[step].name,
        "ResponseCode": -1,
        "ExecutionStartDateTime": "",
        "ExecutionElapsedTime": "",
        "ExecutionEndDateTime": "",
        "Status": status,
        "StatusDetails": details,
        "StandardOutputContent": "",
        "StandardOutputUrl": "",
        "StandardErrorContent": "",
        "StandardErrorUrl": "",
        "CloudWatchOutputConfig": {
            "CloudWatchLogGroupName": command.output.log_group.clone().unwrap_or_default(),
            "CloudWatchOutputEnabled": command.output.log_group.is_some(),
        },
    });
    match &invocation.state {
        InvState::InProgress { started } => {
            body["ExecutionStartDateTime"] = json!(iso(started));
        }
        InvState::Done(done) => fill_done(&mut body, done, step),
        InvState::Pending => {}
    }
    Ok(body)
}

fn fill_done(body: &mut Value, done: &Done, step: usize) {
    body["ResponseCode"] = json!(done.response_code);
    if let Some(started) = &done.started {
        body["ExecutionStartDateTime"] = json!(iso(started));
        let elapsed = (done.finished - *started).num_milliseconds().max(0) as f64 / 1000.0;
        body["ExecutionElapsedTime"] = json!(format!("PT{elapsed:.3}S"));
        body["ExecutionEndDateTime"] = json!(iso(&done.finished));
    }
    if let Some(result) = done.steps.get(step) {
        body["ResponseCode"] = json!(result.response_code);
        body["Status"] = json!(result.status);
        body["StatusDetails"] = json!(result.details);
        body["StandardOutputContent"] = json!(output::first_chars(&result.stdout, output::STDOUT_CHARS));
        body["StandardErrorContent"] = json!(output::first_chars(&result.stderr, output::STDERR_CHARS));
        body["StandardOutputUrl"] = json!(result.stdout_url);
        body["StandardErrorUrl"] = json!(result.stderr_url);
    }
}

fn iso(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub(super) fn cancel_command(ssm: &Ssm, ctx: &Ctx, request: &Value) -> Result<Value, ApiError> {
    let Some(command_id) = string(request, "CommandId") else {
        return Err(validation(
            "1 validation error detected: Value null at 'commandId' failed to satisfy constraint: Member must not be null",
        ));
    };
    let only: Option<Vec<String>> = strings(request, "InstanceIds").filter(|ids| !ids.is_empty());
    let mut store = ssm.store.lock().expect("ssm lock");
    let epoch = store.epoch;
    let Some((index, command)) = store
        .scopes
        .get_mut(&(ctx.account.clone(), ctx.region.clone()))
        .and_then(|commands| commands.iter_mut().enumerate().find(|(_, c)| c.id == command_id))
    else {
        return Err(error(
            "InvalidCommandId",
            &format!("Command {command_id} does not exist."),
        ));
    };
    let tunables = ssm.tunables();
    let before = tunables.events.is_some().then(|| command.statuses());
    if only.is_none() {
        command.cancel_requested = true;
    }
    let now = Utc::now();
    for invocation in &mut command.invocations {
        if only.as_ref().is_some_and(|ids| !ids.contains(&invocation.instance_id)) {
            continue;
        }
        let started = match invocation.state {
            InvState::Pending => None,
            // An agent lost mid-run never hears of the cancel.
            InvState::InProgress { .. } if invocation.behaviour.stuck => continue,
            InvState::InProgress { started } => Some(started),
            InvState::Done(_) => continue,
        };
        if let Some(kill) = invocation.kill.take() {
            kill.cancel();
        }
        invocation.state = InvState::Done(Done {
            status: "Cancelled",
            details: "Cancelled",
            response_code: -1,
            started,
            finished: now,
            steps: Vec::new(),
        });
    }
    // Cancelling some frees their places for the ones held back.
    let released = super::agent::releases(command);
    let events = before.map(|b| command.changes(&ctx.account, &b)).unwrap_or_default();
    drop(store);
    let key = Key {
        epoch,
        account: ctx.account.clone(),
        region: ctx.region.clone(),
        command: index,
        invocation: 0,
    };
    ssm.start_released(&key, released);
    ssm.emit(&tunables, events);
    Ok(json!({}))
}

pub(super) async fn describe_instance_information(ssm: &Ssm, ctx: &Ctx, request: &Value) -> Result<Value, ApiError> {
    let size = max_results(request, 5, 50, 10)?;
    let conditions = information_filters(request)?;
    let max_age = Duration::from_millis(ssm.tunables().fleet_cache_ms);
    let wanted_ids = conditions
        .iter()
        .find(|(key, _)| key == "InstanceIds")
        .map(|(_, ids)| ids.clone());
    let fleet = match &wanted_ids {
        Some(ids) => ssm.parts.fleet.by_ids(&ctx.account, &ctx.region, ids, max_age).await,
        None => ssm.parts.fleet.all(&ctx.account, &ctx.region, max_age).await,
    }
    .map_err(|e| error("InternalServerError", &e.to_string()))?;
    let mut nodes: Vec<(&InstanceFact, Value)> = fleet
        .iter()
        .filter(|i| !is_gone(i) && Behaviour::of(i).agent != AgentState::Unmanaged)
        .map(|instance| (instance, instance_information(ssm, ctx, instance)))
        .filter(|(instance, info)| passes(&conditions, instance, info))
        .collect();
    nodes.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    let infos: Vec<Value> = nodes.into_iter().map(|(_, info)| info).collect();
    let (items, next) = page(infos, size, string(request, "NextToken"))?;
    Ok(json!({ "InstanceInformationList": items, "NextToken": next }))
}

/// DescribeInstancePatchStates: the patch state of each named instance
/// that has reported one (the others are left out, as SSM leaves out
/// instances Patch Manager has not heard from), in the order named. A
/// state younger than the tunables' lag is not shown yet: the one it
/// replaced is, if any.
pub(super) fn describe_instance_patch_states(ssm: &Ssm, ctx: &Ctx, request: &Value) -> Result<Value, ApiError> {
    let size = max_results(request, 10, 100, 50)?;
    let Some(ids) = strings(request, "InstanceIds") else {
        return Err(validation(
            "1 validation error detected: Value null at 'instanceIds' failed to satisfy constraint: Member must not be null",
        ));
    };
    if ids.len() > MAX_INSTANCE_IDS {
        return Err(validation(&format!(
            "1 validation error detected: Value at 'instanceIds' failed to satisfy constraint: Member must have length less than or equal to {MAX_INSTANCE_IDS}"
        )));
    }
    let states: Vec<Value> = {
        let store = ssm.store.lock().expect("ssm lock");
        ids.iter()
            .filter_map(|id| {
                let key = (ctx.account.clone(), ctx.region.clone(), id.clone());
                store
                    .patches
                    .get(&key)
                    .and_then(super::patches::PatchState::shown)
                    .map(|state| super::patches::describe(id, state))
            })
            .collect()
    };
    let (items, next) = page(states, size, string(request, "NextToken"))?;
    Ok(json!({ "InstancePatchStates": items, "NextToken": next }))
}

/// DescribeInstanceInformation's conditions, (key, values), from either
/// of its two filter lists (not both), checked as SSM checks them.
fn information_filters(request: &Value) -> Result<Vec<(String, Vec<String>)>, ApiError> {
    const KEYS: &[&str] = &[
        "InstanceIds",
        "PingStatus",
        "PlatformTypes",
        "ResourceType",
        "AgentVersion",
        "IamRole",
        "ActivationIds",
        "AssociationStatus",
    ];
    let filter_list = request.get("InstanceInformationFilterList").and_then(Value::as_array);
    let filters = request.get("Filters").and_then(Value::as_array);
    if filter_list.is_some_and(|f| !f.is_empty()) && filters.is_some_and(|f| !f.is_empty()) {
        return Err(validation(
            "InstanceInformationFilterList and Filters cannot be used together.",
        ));
    }
    let condition = |f: &Value, key: &str, values: &str| {
        (
            f.get(key).and_then(Value::as_str).unwrap_or_default().to_owned(),
            strings(f, values).unwrap_or_default(),
        )
    };
    let conditions: Vec<(String, Vec<String>)> = filter_list
        .into_iter()
        .flatten()
        .map(|f| condition(f, "key", "valueSet"))
        .chain(filters.into_iter().flatten().map(|f| condition(f, "Key", "Values")))
        .collect();
    for (key, values) in &conditions {
        if !(KEYS.contains(&key.as_str()) || key.starts_with("tag:") || key == "tag-key") {
            return Err(error(
                "InvalidInstanceInformationFilterValue",
                &format!("Filter key {key} is not valid."),
            ));
        }
        if values.is_empty() {
            return Err(error(
                "InvalidInstanceInformationFilterValue",
                &format!("Filter {key} needs at least one value."),
            ));
        }
    }
    Ok(conditions)
}

/// What SSM says of a managed instance: its agent's ping (ConnectionLost
/// while offline or rebooting), platform and addresses.
fn instance_information(ssm: &Ssm, ctx: &Ctx, instance: &InstanceFact) -> Value {
    let behaviour = Behaviour::of(instance);
    let online = behaviour.agent == AgentState::Online && !ssm.rebooting(&ctx.account, &instance.id);
    let platform = platform_of(instance);
    let (platform_name, version) = match platform {
        Platform::Windows => ("Microsoft Windows Server 2022 Datacenter", "10.0.20348"),
        _ => ("Amazon Linux", "2023"),
    };
    json!({
        "InstanceId": instance.id,
        "PingStatus": if online { "Online" } else { "ConnectionLost" },
        "LastPingDateTime": Utc::now().timestamp(),
        "AgentVersion": "3.3.1142.0",
        "IsLatestVersion": true,
        "PlatformType": platform.as_str(),
        "PlatformName": platform_name,
        "PlatformVersion": version,
        "ResourceType": "EC2Instance",
        "IPAddress": instance.private_ip.clone().unwrap_or_default(),
        "ComputerName": instance.private_dns.clone().unwrap_or_default(),
        "SourceId": instance.id,
        "SourceType": "AWS::EC2::Instance",
    })
}

/// Whether an instance (and what SSM says of it) meets every condition;
/// keys the sim does not model pass.
fn passes(conditions: &[(String, Vec<String>)], instance: &InstanceFact, info: &Value) -> bool {
    conditions.iter().all(|(key, values)| match key.as_str() {
        "InstanceIds" => values.contains(&instance.id),
        "PingStatus" => values.iter().any(|v| info["PingStatus"] == v.as_str()),
        "PlatformTypes" => values.iter().any(|v| info["PlatformType"] == v.as_str()),
        "ResourceType" => values.iter().any(|v| v == "EC2Instance"),
        "tag-key" => values.iter().any(|k| instance.tags.contains_key(k)),
        key => match key.strip_prefix("tag:") {
            Some(tag) => instance.tags.get(tag).is_some_and(|v| values.contains(v)),
            None => true,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_with_opaque_tokens() {
        let items: Vec<u32> = (0..120).collect();
        let (first, next) = page(items.clone(), 50, None).ok().unwrap();
        assert_eq!(first.len(), 50);
        let (second, next) = page(items.clone(), 50, next.as_deref()).ok().unwrap();
        assert_eq!(second[0], 50);
        let (third, next) = page(items.clone(), 50, next.as_deref()).ok().unwrap();
        assert_eq!(third.len(), 20);
        assert!(next.is_none());
        assert!(page(items, 50, Some("garbage")).is_err());
    }
}
