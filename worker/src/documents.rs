//! What the worker reads of the documents it sends, once per (account,
//! region, name, version) for the process's life (SSM GetDocument, in the
//! target account, as the execution role):
//!
//! - how long a document's command may run when the campaign leaves it to
//!   the document (execution_timeout_seconds 0): AWS-RunPatchBaseline's
//!   steps allow two hours each, a customer's document whatever it says. The
//!   poll gives up only that long (plus delivery and a margin) after sending;
//! - whether SendCommand would take the document and the parameters the
//!   campaign sends it ([`refusal`]), checked at discovery so that a wrong
//!   parameter or a document missing in an account fails that scope before
//!   anything is sent, and shows in `muster plan`.

use std::collections::BTreeMap;
use std::sync::Arc;

use muster_proto::v1::{DocumentCheck, ExecuteSpec, ParameterValues};
use serde_json::Value;

use crate::api::Api;
use crate::lru_map::LruMap;
use crate::scope_clients::{CallError, ScopeClients};

/// A step's timeout when the document gives none (SSM's plugins' default).
pub const DEFAULT_STEP_SECONDS: u64 = 3_600;
/// The longest a command can run (SSM's executionTimeout maximum): what the
/// worker waits when it cannot read the document.
pub const LONGEST_SECONDS: u64 = 172_800;

/// A document in one scope: (account, region, name, version).
type DocumentKey = (String, String, String, String);

/// Most documents kept: a worker reaching a thousand accounts in twenty
/// regions with two documents would otherwise keep 40,000.
const MAX_DOCUMENTS: usize = 4_096;

/// Documents read so far, by where and which: of each, only what
/// [`refusal`] and [`own_timeout`] read ([`kept`]), a few hundred bytes
/// where the content with its descriptions and scripts is many KB.
pub struct Documents {
    known: LruMap<DocumentKey, Arc<Value>>,
}

impl Default for Documents {
    fn default() -> Self {
        Self {
            known: LruMap::new(MAX_DOCUMENTS),
        }
    }
}

impl std::fmt::Debug for Documents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Documents").field("kept", &self.known.len()).finish()
    }
}

/// Of a document's `content`, what [`refusal`] and [`own_timeout`] read:
/// each parameter's type, default, allowed values and pattern, and each
/// step's timeout. Descriptions and the steps' scripts are left out.
pub fn kept(content: &Value) -> Value {
    let pick = |from: &Value, keys: &[&str]| -> Value {
        let mut kept = serde_json::Map::new();
        for key in keys {
            if let Some(value) = from.get(*key) {
                kept.insert((*key).to_owned(), value.clone());
            }
        }
        Value::Object(kept)
    };
    let mut out = serde_json::Map::new();
    if let Some(parameters) = content["parameters"].as_object() {
        let parameters = parameters
            .iter()
            .map(|(name, p)| {
                let p = pick(p, &["type", "default", "allowedValues", "allowedPattern"]);
                (name.clone(), p)
            })
            .collect();
        out.insert("parameters".into(), Value::Object(parameters));
    }
    if let Some(steps) = content["mainSteps"].as_array() {
        let steps = steps
            .iter()
            .map(|step| serde_json::json!({"inputs": pick(&step["inputs"], &["timeoutSeconds"])}))
            .collect();
        out.insert("mainSteps".into(), Value::Array(steps));
    }
    if let Some(plugins) = content["runtimeConfig"].as_object() {
        let plugins = plugins
            .iter()
            .map(|(name, plugin)| {
                let properties: Vec<Value> = plugin["properties"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| pick(p, &["timeoutSeconds"]))
                    .collect();
                (name.clone(), serde_json::json!({"properties": properties}))
            })
            .collect();
        out.insert("runtimeConfig".into(), Value::Object(plugins));
    }
    Value::Object(out)
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

/// AWS's error codes for a document that is not there: SendCommand
/// answers a send of it with the same.
const MISSING: [&str; 2] = ["InvalidDocument", "InvalidDocumentVersion"];

/// Why SendCommand would refuse `given` for the document of `content`
/// (its `parameters`, as the SSM documents' syntax declares them), or none.
/// Only what SSM certainly refuses: a parameter the document does not
/// declare, one it requires (it has no default) missing or empty, a value
/// outside `allowedValues` or not matching `allowedPattern`. A value that
/// refers to a Parameter Store parameter (`{{ssm:...}}`) is resolved by
/// SSM, so it is not checked; nor is a pattern that this regex dialect
/// cannot read, nor a value of several lines against a pattern.
pub fn refusal(content: &Value, given: &BTreeMap<String, ParameterValues>) -> Option<String> {
    let declared = content["parameters"].as_object();
    let empty = serde_json::Map::new();
    let declared = declared.unwrap_or(&empty);
    if let Some(name) = given.keys().find(|name| !declared.contains_key(*name)) {
        let known = declared.keys().cloned().collect::<Vec<_>>().join(", ");
        return Some(format!(
            "parameter '{name}' is not one of the document's ({})",
            if known.is_empty() { "it takes none" } else { &known }
        ));
    }
    let missing = |name: &String| given.get(name).is_none_or(|v| v.values.iter().all(String::is_empty));
    if let Some((name, _)) = declared
        .iter()
        .find(|(name, parameter)| parameter.get("default").is_none() && missing(name))
    {
        return Some(format!(
            "parameter '{name}' is required (the document gives it no default)"
        ));
    }
    for (name, values) in given {
        let parameter = &declared[name];
        let allowed: Vec<&str> = parameter["allowedValues"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let pattern = parameter["allowedPattern"]
            .as_str()
            .and_then(|p| regex::Regex::new(p).ok());
        for value in values.values.iter().filter(|v| !v.contains("{{")) {
            if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
                return Some(format!(
                    "parameter '{name}': '{value}' is not one of {}",
                    allowed.join(", ")
                ));
            }
            // Where dialects differ on line ends ("$" before a last newline),
            // SSM decides.
            if let Some(pattern) = &pattern
                && !value.contains('\n')
                && !pattern.is_match(value)
            {
                return Some(format!(
                    "parameter '{name}': '{value}' does not match the document's allowedPattern {}",
                    pattern.as_str()
                ));
            }
        }
    }
    None
}

impl Documents {
    /// The content of document `name` at `version` ("" for $DEFAULT) in
    /// the scope, read once, or read again when `again` (the default
    /// version may have changed since), and whether it was read now.
    async fn read(
        &self,
        scope: &ScopeClients,
        (name, version): (&str, &str),
        again: bool,
    ) -> Result<(Arc<Value>, bool), CallError> {
        let version = if version.is_empty() { "$DEFAULT" } else { version };
        let key = (
            scope.account.clone(),
            scope.region.clone(),
            name.to_owned(),
            version.to_owned(),
        );
        if !again && let Some(known) = self.known.get(&key) {
            return Ok((known, false));
        }
        let document = scope
            .call(Api::GetDocument, || {
                scope
                    .ssm
                    .get_document()
                    .name(name)
                    .document_version(version)
                    .document_format(aws_sdk_ssm::types::DocumentFormat::Json)
                    .send()
            })
            .await?;
        let content = serde_json::from_str::<Value>(document.content().unwrap_or_default()).map_err(|e| CallError {
            api: "GetDocument",
            account: scope.account.clone(),
            region: scope.region.clone(),
            class: muster_common::retry::ErrorClass::Final,
            code: None,
            message: format!("document {name}: its content is not JSON: {e}"),
        })?;
        let content = Arc::new(kept(&content));
        self.known.insert(key, content.clone());
        Ok((content, true))
    }

    /// How long `spec`'s command may run on an instance: the campaign's
    /// execution timeout, or (when it leaves it to the document) the
    /// document's own, read from SSM; [`LONGEST_SECONDS`] when the
    /// document cannot be read.
    pub async fn timeout(&self, scope: &ScopeClients, spec: &ExecuteSpec) -> u64 {
        if spec.execution_timeout_seconds > 0 {
            return u64::from(spec.execution_timeout_seconds);
        }
        let given = spec
            .parameters
            .get("executionTimeout")
            .and_then(|v| v.values.first())
            .map(String::as_str);
        match self
            .read(scope, (&spec.document_name, &spec.document_version), false)
            .await
        {
            Ok((content, _)) => own_timeout(&content, given),
            Err(error) => {
                tracing::warn!(document = %spec.document_name, %error, "cannot read the document's timeout; waiting up to 48 hours for its commands");
                LONGEST_SECONDS
            }
        }
    }

    /// Why SendCommand would refuse `check`'s document in the scope: it is
    /// not there (for this version), or [`refusal`] of its parameters. None
    /// when it would take it, and when the document cannot be read for
    /// another reason (access, throttling past the budget): then SSM decides
    /// at the send, as without the check.
    pub async fn refused(&self, scope: &ScopeClients, check: &DocumentCheck) -> Option<String> {
        let where_ = format!(
            "{}: document {}{} in account {} region {}",
            check.field,
            check.name,
            if check.version.is_empty() {
                String::new()
            } else {
                format!(" version {}", check.version)
            },
            scope.account,
            scope.region
        );
        let mut read = self.read(scope, (&check.name, &check.version), false).await;
        // A refusal rests on the document as it is now, never on a copy
        // kept from before its owner changed it.
        if let Ok((content, false)) = &read
            && refusal(content, &check.parameters).is_some()
        {
            read = self.read(scope, (&check.name, &check.version), true).await;
        }
        let (outcome, why) = match read {
            Ok((content, _)) => match refusal(&content, &check.parameters) {
                Some(why) => ("refused", Some(format!("{where_}: {why}"))),
                None => ("passed", None),
            },
            Err(error) if error.code.as_deref().is_some_and(|c| MISSING.contains(&c)) => {
                ("missing", Some(format!("{where_}: not found ({})", error.message)))
            }
            Err(error) => {
                tracing::warn!(document = %check.name, %error, "cannot read the document to check its parameters; SSM checks them at the send");
                ("unchecked", None)
            }
        };
        scope.stats().document_check(outcome);
        why
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn given(pairs: &[(&str, &[&str])]) -> BTreeMap<String, ParameterValues> {
        pairs
            .iter()
            .map(|(name, values)| {
                (
                    (*name).to_owned(),
                    ParameterValues {
                        values: values.iter().map(|v| (*v).to_owned()).collect(),
                    },
                )
            })
            .collect()
    }

    /// AWS-RunPatchBaseline's parameters as AWS declares them (in part),
    /// and a customer's with a pattern and a list.
    #[test]
    fn what_send_command_would_refuse_is_named() {
        let patch = json!({"schemaVersion": "2.2", "parameters": {
            "Operation": {"type": "String", "allowedValues": ["Scan", "Install"]},
            "SnapshotId": {"type": "String", "default": ""},
            "RebootOption": {"type": "String", "default": "RebootIfNeeded", "allowedValues": ["RebootIfNeeded", "NoReboot"]},
        }});
        assert_eq!(refusal(&patch, &given(&[("Operation", &["Install"])])), None);
        assert_eq!(
            refusal(&patch, &given(&[("Operation", &["Destroy"])])).as_deref(),
            Some("parameter 'Operation': 'Destroy' is not one of Scan, Install")
        );
        assert_eq!(
            refusal(&patch, &given(&[("RebootOption", &["NoReboot"])])).as_deref(),
            Some("parameter 'Operation' is required (the document gives it no default)")
        );
        assert_eq!(
            refusal(&patch, &given(&[("Operation", &[""])])).as_deref(),
            Some("parameter 'Operation' is required (the document gives it no default)"),
            "an empty value is no value"
        );
        assert_eq!(
            refusal(&patch, &given(&[("Operation", &["Scan"]), ("Operaton", &["Scan"])])).as_deref(),
            Some("parameter 'Operaton' is not one of the document's (Operation, RebootOption, SnapshotId)")
        );
        assert_eq!(
            refusal(&patch, &given(&[("Operation", &["{{ssm:/patching/operation}}"])])),
            None,
            "SSM resolves a Parameter Store reference before it checks"
        );

        let custom = json!({"schemaVersion": "2.2", "parameters": {
            "Packages": {"type": "StringList", "default": [], "allowedPattern": "^[a-z0-9.+-]+$"},
            "Odd": {"type": "String", "default": "", "allowedPattern": "^(?!x)"},
        }});
        assert_eq!(refusal(&custom, &given(&[("Packages", &["openssl", "kernel"])])), None);
        assert_eq!(
            refusal(&custom, &given(&[("Packages", &["openssl", "rm -rf /"])])).as_deref(),
            Some("parameter 'Packages': 'rm -rf /' does not match the document's allowedPattern ^[a-z0-9.+-]+$")
        );
        assert_eq!(
            refusal(&custom, &given(&[("Odd", &["xyz"])])),
            None,
            "a pattern this dialect cannot read (a lookahead) is left to SSM"
        );
        assert_eq!(
            refusal(&custom, &given(&[("Packages", &["kernel\n"])])),
            None,
            "line ends are where dialects differ"
        );
        let bare = json!({"schemaVersion": "2.2", "mainSteps": []});
        assert_eq!(
            refusal(&bare, &given(&[("Anything", &["1"])])).as_deref(),
            Some("parameter 'Anything' is not one of the document's (it takes none)")
        );
        assert_eq!(refusal(&bare, &given(&[])), None);
    }

    /// What is kept of a document answers as the whole does, in a fraction
    /// of it.
    #[test]
    fn what_is_kept_answers_as_the_whole_document() {
        let script: Vec<String> = (0..200).map(|i| format!("echo line {i} of the patch script")).collect();
        let patch = json!({"schemaVersion": "2.2", "description": "Scans for or installs patches. ".repeat(20),
        "parameters": {
            "Operation": {"type": "String", "description": "Scan or install. ".repeat(10), "allowedValues": ["Scan", "Install"]},
            "SnapshotId": {"type": "String", "default": "", "allowedPattern": "(^$)|^[0-9a-f-]{36}$", "description": "A snapshot. ".repeat(10)},
        },
        "mainSteps": [
            {"action": "aws:runPowerShellScript", "name": "PatchWindows", "inputs": {"timeoutSeconds": 7200, "runCommand": script}},
            {"action": "aws:runShellScript", "name": "PatchLinux", "inputs": {"timeoutSeconds": "7200", "runCommand": script}},
        ]});
        let legacy = json!({"schemaVersion": "1.2",
            "parameters": {"commands": {"type": "StringList", "description": "Lines."},
                           "executionTimeout": {"type": "String", "default": "3600", "description": "Seconds."}},
            "runtimeConfig": {"aws:runShellScript": {"properties": [{"runCommand": "{{ commands }}", "timeoutSeconds": "{{ executionTimeout }}"}]}}});
        for (content, tries) in [
            (
                &patch,
                vec![
                    given(&[("Operation", &["Install"])]),
                    given(&[("Operation", &["Destroy"])]),
                    given(&[("Operation", &["Scan"]), ("SnapshotId", &["not-a-uuid"])]),
                    given(&[]),
                ],
            ),
            (
                &legacy,
                vec![given(&[("commands", &["uptime"])]), given(&[("Extra", &["1"])])],
            ),
        ] {
            let small = kept(content);
            for given in &tries {
                assert_eq!(refusal(&small, given), refusal(content, given), "{given:?}");
            }
            for timeout in [None, Some("900")] {
                assert_eq!(own_timeout(&small, timeout), own_timeout(content, timeout));
            }
        }
        let (small, whole) = (kept(&patch).to_string().len(), patch.to_string().len());
        assert!(small * 20 < whole, "{small} bytes kept of {whole}");
    }

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
