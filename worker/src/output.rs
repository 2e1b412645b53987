//! From an SSM invocation to a target result: the status as muster names it,
//! and each step's output. ListCommandInvocations shows at most 2,500
//! characters per step; when that is cut, the full text comes from S3 or
//! CloudWatch Logs if the campaign sends output there, or else the first
//! 24,000 / 8,000 characters from GetCommandInvocation, marked truncated.
//! Only a bounded prefix (keep_bytes) is reported; the URL says where the
//! rest is.

use aws_sdk_ssm::types::{CommandInvocation, CommandPlugin};
use muster_proto::v1::{ExecuteSpec, StepOutput, TargetResult, TargetStatus, TimeoutKind};

use crate::api::Api;
use crate::scope_clients::{CallError, ScopeClients};

/// The API's own limits (GetCommandInvocation).
const API_STDOUT_CHARS: usize = 24_000;
const API_STDERR_CHARS: usize = 8_000;
const ERROR_TITLE: &str = "\n----------ERROR-------\n";
const OUT_MARK: &str = "\n---Output truncated---";
const ERR_MARK: &str = "\n---Error truncated----";

/// Muster's status for an SSM invocation status and StatusDetails. Details
/// decide where they are precise; Status is the fallback.
pub fn status_of(status: &str, details: &str) -> (TargetStatus, TimeoutKind) {
    match (details, status) {
        ("Success", _) => (TargetStatus::Success, TimeoutKind::Unspecified),
        ("DeliveryTimedOut", _) => (TargetStatus::TimedOut, TimeoutKind::Delivery),
        ("ExecutionTimedOut", _) => (TargetStatus::TimedOut, TimeoutKind::Execution),
        ("Undeliverable", _) => (TargetStatus::Undeliverable, TimeoutKind::Unspecified),
        ("Terminated", _) => (TargetStatus::Terminated, TimeoutKind::Unspecified),
        ("Cancelled", _) | (_, "Cancelled") => (TargetStatus::Cancelled, TimeoutKind::Unspecified),
        (_, "TimedOut") => (TargetStatus::TimedOut, TimeoutKind::Execution),
        (_, "Success") => (TargetStatus::Success, TimeoutKind::Unspecified),
        _ => (TargetStatus::Failed, TimeoutKind::Unspecified),
    }
}

/// Whether SSM is done with an invocation.
pub fn is_final(status: &str) -> bool {
    matches!(status, "Success" | "Failed" | "TimedOut" | "Cancelled")
}

/// One line for the result.
fn reason(status: TargetStatus, timeout: TimeoutKind, code: Option<i32>, spec: &ExecuteSpec) -> String {
    match (status, timeout) {
        (TargetStatus::Success, _) => "exit code 0".into(),
        (TargetStatus::Failed, _) => match code {
            Some(code) => format!("exit code {code}"),
            None => "failed".into(),
        },
        (TargetStatus::TimedOut, TimeoutKind::Delivery) => format!(
            "the SSM agent did not pick the command up within the delivery timeout ({}s)",
            spec.delivery_timeout_seconds
        ),
        (TargetStatus::TimedOut, _) => format!(
            "the command ran longer than its execution timeout ({}s)",
            spec.execution_timeout_seconds
        ),
        (TargetStatus::Undeliverable, _) => {
            "SSM could not deliver the command (instance gone or not responding)".into()
        }
        (TargetStatus::Terminated, _) => "SSM stopped sending the command (MaxErrors reached)".into(),
        (TargetStatus::Cancelled, _) => "cancelled".into(),
        _ => String::new(),
    }
}

/// Builds the result of one terminal invocation, fetching output as needed.
pub async fn result_of(
    scope: &ScopeClients,
    spec: &ExecuteSpec,
    invocation: &CommandInvocation,
) -> Result<TargetResult, CallError> {
    let status = invocation.status().map(|s| s.as_str()).unwrap_or_default();
    let details = invocation.status_details().unwrap_or_default();
    let (status, timeout) = status_of(status, details);
    let plugins = invocation.command_plugins();
    let ran = plugins
        .iter()
        .any(|p| p.response_code() >= 0 && p.response_start_date_time().is_some());
    // For multi-step documents the one that did not skip decides the code.
    let exit_code = plugins
        .iter()
        .find(|p| p.response_code() != 0)
        .or_else(|| plugins.first())
        .map(CommandPlugin::response_code)
        .filter(|code| *code >= 0 && ran);
    let mut steps = Vec::with_capacity(plugins.len());
    if ran {
        for plugin in plugins {
            steps.push(step_output(scope, spec, invocation, plugin, plugins.len() > 1).await?);
        }
    }
    let started = plugins.iter().filter_map(|p| p.response_start_date_time()).min();
    let finished = plugins.iter().filter_map(|p| p.response_finish_date_time()).max();
    let timestamp = |t: &aws_smithy_types::DateTime| prost_types::Timestamp {
        seconds: t.secs(),
        nanos: t.subsec_nanos() as i32,
    };
    Ok(TargetResult {
        instance_id: invocation.instance_id().unwrap_or_default().to_owned(),
        status: status as i32,
        timeout_kind: timeout as i32,
        exit_code,
        reason: reason(status, timeout, exit_code, spec),
        command_id: invocation.command_id().unwrap_or_default().to_owned(),
        ssm_status_details: details.to_owned(),
        steps,
        started_at: started.map(timestamp),
        finished_at: finished.map(timestamp),
        // The reporter compresses long output where the lease says so.
        compressed_steps: Vec::new(),
        // A patch document's run reads it after ([`crate::patch_states`]).
        patch_state: None,
    })
}

async fn step_output(
    scope: &ScopeClients,
    spec: &ExecuteSpec,
    invocation: &CommandInvocation,
    plugin: &CommandPlugin,
    multi_step: bool,
) -> Result<StepOutput, CallError> {
    let keep = spec.keep_bytes.max(1) as usize;
    let name = plugin.name().unwrap_or_default().to_owned();
    let command_id = invocation.command_id().unwrap_or_default();
    let instance_id = invocation.instance_id().unwrap_or_default();
    let shown = plugin.output().unwrap_or_default();
    let mut step = StepOutput {
        name: name.clone(),
        status: plugin.status().map(|s| s.as_str().to_owned()).unwrap_or_default(),
        exit_code: Some(plugin.response_code()),
        ..Default::default()
    };

    let s3 = |url: Option<&str>| url.filter(|u| !u.is_empty()).and_then(parse_s3_url);
    if !spec.output_s3_bucket.is_empty()
        && let (Some(out), err) = (s3(plugin.standard_output_url()), s3(plugin.standard_error_url()))
    {
        from_s3(scope, &mut step, &out, err.as_ref(), keep).await?;
        return Ok(step);
    }
    if !spec.cloudwatch_log_group.is_empty() {
        let segment = if multi_step {
            name.clone()
        } else {
            name.replace(':', "-")
        };
        let prefix = format!("{command_id}/{instance_id}/{segment}");
        from_logs(scope, &mut step, &spec.cloudwatch_log_group, &prefix, keep).await?;
        return Ok(step);
    }
    if !shown.contains(OUT_MARK) && !shown.contains(ERR_MARK) {
        let (stdout, stderr) = split_plugin_output(shown);
        (step.stdout, step.stdout_truncated) = clip(stdout, keep, false);
        (step.stderr, step.stderr_truncated) = clip(stderr, keep, false);
        return Ok(step);
    }
    // Cut in the listing and kept nowhere else: the API's own 24,000 / 8,000.
    from_invocation(scope, &mut step, invocation, multi_step, keep).await?;
    Ok(step)
}

/// The step's streams from the objects SSM wrote to S3.
async fn from_s3(
    scope: &ScopeClients,
    step: &mut StepOutput,
    out: &(String, String),
    err: Option<&(String, String)>,
    keep: usize,
) -> Result<(), CallError> {
    (step.stdout, step.stdout_truncated) = read_s3(scope, out, keep).await?;
    step.stdout_url = format!("s3://{}/{}", out.0, out.1);
    if let Some(err) = err {
        (step.stderr, step.stderr_truncated) = read_s3(scope, err, keep).await?;
        step.stderr_url = format!("s3://{}/{}", err.0, err.1);
    }
    Ok(())
}

/// The step's streams from the CloudWatch Logs streams under `prefix`
/// (`<command>/<instance>/<step>`) in `group`.
async fn from_logs(
    scope: &ScopeClients,
    step: &mut StepOutput,
    group: &str,
    prefix: &str,
    keep: usize,
) -> Result<(), CallError> {
    for (stream, text, truncated, url) in [
        (
            "stdout",
            &mut step.stdout,
            &mut step.stdout_truncated,
            &mut step.stdout_url,
        ),
        (
            "stderr",
            &mut step.stderr,
            &mut step.stderr_truncated,
            &mut step.stderr_url,
        ),
    ] {
        let log_stream = format!("{prefix}/{stream}");
        (*text, *truncated) = read_logs(scope, group, &log_stream, keep).await?;
        *url = format!("cloudwatch://{group}/{log_stream}");
    }
    Ok(())
}

/// The step's streams as GetCommandInvocation gives them: longer than the
/// listing's, and marked truncated when they reach the API's own limits.
async fn from_invocation(
    scope: &ScopeClients,
    step: &mut StepOutput,
    invocation: &CommandInvocation,
    multi_step: bool,
    keep: usize,
) -> Result<(), CallError> {
    let command_id = invocation.command_id().unwrap_or_default();
    let instance_id = invocation.instance_id().unwrap_or_default();
    let detail = scope
        .call(Api::GetCommandInvocation, || {
            let request = scope
                .ssm
                .get_command_invocation()
                .command_id(command_id)
                .instance_id(instance_id);
            let request = if multi_step {
                request.plugin_name(step.name.clone())
            } else {
                request
            };
            request.send()
        })
        .await?;
    let stdout = detail.standard_output_content().unwrap_or_default();
    let stderr = detail.standard_error_content().unwrap_or_default();
    (step.stdout, step.stdout_truncated) = clip(stdout, keep, stdout.chars().count() >= API_STDOUT_CHARS);
    (step.stderr, step.stderr_truncated) = clip(stderr, keep, stderr.chars().count() >= API_STDERR_CHARS);
    Ok(())
}

/// Splits the agent's combined output into stdout and stderr.
pub fn split_plugin_output(shown: &str) -> (&str, &str) {
    match shown.split_once(ERROR_TITLE) {
        Some((out, err)) => (out, err),
        None => (shown, ""),
    }
}

/// The first `keep` bytes of `text` (on a character boundary), and whether
/// anything was cut here or before.
pub fn clip(text: &str, keep: usize, already_cut: bool) -> (String, bool) {
    if text.len() <= keep {
        return (text.to_owned(), already_cut);
    }
    let mut end = keep;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_owned(), true)
}

/// (bucket, key) from the URLs SSM reports: path-style
/// ("https://s3.eu-west-1.amazonaws.com/bucket/key", "https://s3-eu-west-1...",
/// "https://s3.amazonaws.com/bucket/key") or virtual-hosted
/// ("https://bucket.s3.eu-west-1.amazonaws.com/key").
pub fn parse_s3_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let (host, path) = rest.split_once('/')?;
    let decode = |s: &str| percent_decode(s);
    if host.starts_with("s3.") || host.starts_with("s3-") {
        let (bucket, key) = path.split_once('/')?;
        Some((bucket.to_owned(), decode(key)))
    } else {
        let bucket = host.split(".s3").next()?;
        Some((bucket.to_owned(), decode(path)))
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn read_s3(
    scope: &ScopeClients,
    (bucket, key): &(String, String),
    keep: usize,
) -> Result<(String, bool), CallError> {
    let answer = scope
        .call(Api::GetObject, || {
            scope
                .s3
                .get_object()
                .bucket(bucket)
                .key(key)
                // One byte more than kept tells whether there is more.
                .range(format!("bytes=0-{keep}"))
                .send()
        })
        .await;
    let object = match answer {
        Ok(object) => object,
        // SSM writes no object for an empty stream.
        Err(e) if matches!(e.code.as_deref(), Some("NoSuchKey") | Some("InvalidRange")) => {
            return Ok((String::new(), false));
        }
        Err(e) => return Err(e),
    };
    let total = object
        .content_range()
        .and_then(|r| r.rsplit('/').next())
        .and_then(|n| n.parse::<usize>().ok());
    let bytes = object.body.collect().await.map(|b| b.into_bytes()).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let (kept, cut) = clip(&text, keep, false);
    Ok((kept, cut || total.is_some_and(|t| t > keep)))
}

async fn read_logs(scope: &ScopeClients, group: &str, stream: &str, keep: usize) -> Result<(String, bool), CallError> {
    let mut text = String::new();
    let mut token: Option<String> = None;
    loop {
        let answer = scope
            .call(Api::GetLogEvents, || {
                scope
                    .logs
                    .get_log_events()
                    .log_group_name(group)
                    .log_stream_name(stream)
                    .start_from_head(true)
                    .set_next_token(token.clone())
                    .send()
            })
            .await;
        let page = match answer {
            Ok(page) => page,
            // No stream: the command wrote nothing to it.
            Err(e) if e.code.as_deref() == Some("ResourceNotFoundException") => return Ok((String::new(), false)),
            Err(e) => return Err(e),
        };
        for event in page.events() {
            text.push_str(event.message().unwrap_or_default());
        }
        if text.len() > keep {
            return Ok(clip(&text, keep, true));
        }
        let next = page.next_forward_token().map(str::to_owned);
        if page.events().is_empty() || next.is_none() || next == token {
            return Ok((text, false));
        }
        token = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_by_details_first() {
        assert_eq!(status_of("Success", "Success").0, TargetStatus::Success);
        assert_eq!(status_of("Failed", "Failed").0, TargetStatus::Failed);
        assert_eq!(
            status_of("TimedOut", "DeliveryTimedOut"),
            (TargetStatus::TimedOut, TimeoutKind::Delivery)
        );
        assert_eq!(
            status_of("TimedOut", "ExecutionTimedOut"),
            (TargetStatus::TimedOut, TimeoutKind::Execution)
        );
        assert_eq!(
            status_of("Failed", "ExecutionTimedOut"),
            (TargetStatus::TimedOut, TimeoutKind::Execution)
        );
        assert_eq!(status_of("Failed", "Undeliverable").0, TargetStatus::Undeliverable);
        assert_eq!(status_of("Cancelled", "Cancelled").0, TargetStatus::Cancelled);
        assert_eq!(status_of("TimedOut", "").1, TimeoutKind::Execution);
    }

    #[test]
    fn s3_urls_in_every_style() {
        let want = Some((
            "out".to_owned(),
            "runs/c1/cmd/i-1/awsrunShellScript/0.awsrunShellScript/stdout".to_owned(),
        ));
        assert_eq!(
            parse_s3_url(
                "https://s3.eu-west-1.amazonaws.com/out/runs/c1/cmd/i-1/awsrunShellScript/0.awsrunShellScript/stdout"
            ),
            want
        );
        assert_eq!(
            parse_s3_url(
                "https://s3-eu-west-1.amazonaws.com/out/runs/c1/cmd/i-1/awsrunShellScript/0.awsrunShellScript/stdout"
            ),
            want
        );
        assert_eq!(
            parse_s3_url(
                "https://out.s3.eu-west-1.amazonaws.com/runs/c1/cmd/i-1/awsrunShellScript/0.awsrunShellScript/stdout"
            ),
            want
        );
        assert_eq!(
            parse_s3_url("https://s3.amazonaws.com/b/a%20b"),
            Some(("b".into(), "a b".into()))
        );
        assert_eq!(parse_s3_url("nonsense"), None);
    }

    #[test]
    fn output_is_split_and_clipped_on_character_boundaries() {
        assert_eq!(split_plugin_output("out\n----------ERROR-------\nerr"), ("out", "err"));
        assert_eq!(split_plugin_output("only out"), ("only out", ""));
        assert_eq!(clip("héllo", 2, false), ("h".into(), true));
        assert_eq!(clip("hello", 10, false), ("hello".into(), false));
        assert_eq!(clip("hello", 10, true), ("hello".into(), true));
    }
}
