//! How long a document's command may run when the campaign leaves it to the
//! document (execution_timeout_seconds 0): AWS-RunPatchBaseline's steps
//! allow two hours each, a customer's document whatever it says. The worker
//! reads the document once (SSM GetDocument, in the target account, as the
//! execution role) and keeps the answer for the process's life; the poll
//! gives up only that long (plus delivery and a margin) after sending.

use std::collections::HashMap;
use std::sync::Mutex;

use muster_proto::v1::ExecuteSpec;
use serde_json::Value;

use crate::api::Api;
use crate::scope_clients::ScopeClients;

/// A step's timeout when the document gives none (SSM's plugins' default).
pub const DEFAULT_STEP_SECONDS: u64 = 3_600;
/// The longest a command can run (SSM's executionTimeout maximum): what the
/// worker waits when it cannot read the document.
pub const LONGEST_SECONDS: u64 = 172_800;

/// Document timeouts read so far, by (account, region, name, version).
#[derive(Debug, Default)]
pub struct DocumentTimeouts {
    known: Mutex<HashMap<(String, String, String, String), u64>>,
}

/// The number in a JSON value that is a number or a numeric string.
fn seconds(value: &Value) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
}

/// How long a command of a document with this `content` may run, given the
/// `executionTimeout` parameter it was sent with (if any): that parameter
/// (or its default) where the document takes one; else its steps'
/// `timeoutSeconds`, one after another (all steps, an upper bound for a
/// step skipped on the platform).
pub fn own_timeout(content: &Value, execution_timeout: Option<&str>) -> u64 {
    if let Some(parameter) = content["parameters"].get("executionTimeout") {
        return execution_timeout
            .and_then(|v| v.trim().parse().ok())
            .or_else(|| seconds(&parameter["default"]))
            .unwrap_or(DEFAULT_STEP_SECONDS);
    }
    let step_timeout = |step: &Value| seconds(&step["timeoutSeconds"]).unwrap_or(DEFAULT_STEP_SECONDS);
    let steps: Vec<u64> = match content["mainSteps"].as_array() {
        Some(steps) => steps.iter().map(|s| step_timeout(&s["inputs"])).collect(),
        None => content["runtimeConfig"]
            .as_object()
            .into_iter()
            .flat_map(|plugins| plugins.values())
            .flat_map(|plugin| plugin["properties"].as_array().cloned().unwrap_or_default())
            .map(|property| step_timeout(&property))
            .collect(),
    };
    if steps.is_empty() {
        DEFAULT_STEP_SECONDS
    } else {
        steps.iter().sum::<u64>().min(LONGEST_SECONDS)
    }
}

impl DocumentTimeouts {
    /// How long `spec`'s command may run on an instance: the campaign's
    /// execution timeout, or (when it leaves it to the document) the
    /// document's own, read from SSM; [`LONGEST_SECONDS`] when the
    /// document cannot be read.
    pub async fn of(&self, scope: &ScopeClients, spec: &ExecuteSpec) -> u64 {
        if spec.execution_timeout_seconds > 0 {
            return u64::from(spec.execution_timeout_seconds);
        }
        let version = if spec.document_version.is_empty() {
            "$DEFAULT".to_owned()
        } else {
            spec.document_version.clone()
        };
        let key = (
            scope.account.clone(),
            scope.region.clone(),
            spec.document_name.clone(),
            version.clone(),
        );
        let given = spec
            .parameters
            .get("executionTimeout")
            .and_then(|v| v.values.first())
            .cloned();
        if given.is_none()
            && let Some(known) = self.known.lock().expect("document lock").get(&key)
        {
            return *known;
        }
        let answer = scope
            .call(Api::GetDocument, || {
                scope
                    .ssm
                    .get_document()
                    .name(&spec.document_name)
                    .document_version(&version)
                    .document_format(aws_sdk_ssm::types::DocumentFormat::Json)
                    .send()
            })
            .await;
        let content = match answer {
            Ok(document) => serde_json::from_str::<Value>(document.content().unwrap_or_default()).ok(),
            Err(error) => {
                tracing::warn!(document = %spec.document_name, %error, "cannot read the document's timeout; waiting up to 48 hours for its commands");
                None
            }
        };
        let Some(content) = content else {
            return LONGEST_SECONDS;
        };
        let timeout = own_timeout(&content, given.as_deref());
        if given.is_none() {
            self.known.lock().expect("document lock").insert(key, timeout);
        }
        timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_patch_documents_steps_and_a_scripts_parameter_set_the_timeout() {
        let patch = json!({"schemaVersion": "2.2", "parameters": {"Operation": {"type": "String"}},
        "mainSteps": [
            {"name": "PatchWindows", "inputs": {"timeoutSeconds": 7200}},
            {"name": "PatchLinux", "inputs": {"timeoutSeconds": "7200"}},
        ]});
        assert_eq!(own_timeout(&patch, None), 14_400, "steps add up (an upper bound)");
        let script = json!({"schemaVersion": "1.2",
            "parameters": {"executionTimeout": {"type": "String", "default": "3600"}},
            "runtimeConfig": {"aws:runShellScript": {"properties": [{"timeoutSeconds": "{{ executionTimeout }}"}]}}});
        assert_eq!(own_timeout(&script, None), 3_600);
        assert_eq!(own_timeout(&script, Some("900")), 900);
        let bare = json!({"schemaVersion": "2.2", "mainSteps": [{"inputs": {}}, {"inputs": {}}]});
        assert_eq!(own_timeout(&bare, None), 7_200, "SSM's default per step");
        let huge =
            json!({"mainSteps": [{"inputs": {"timeoutSeconds": 172800}}, {"inputs": {"timeoutSeconds": 172800}}]});
        assert_eq!(own_timeout(&huge, None), LONGEST_SECONDS);
    }
}
