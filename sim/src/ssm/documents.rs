//! The SSM Command documents the sim knows, with their steps, platforms and
//! parameters, so that SendCommand validates as SSM does: AWS's own, and
//! the versions of customers' documents (see [`super::registry`]).

use std::sync::Arc;

/// Platforms as SSM names them (PlatformType).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// Linux.
    Linux,
    /// Windows.
    Windows,
    /// macOS.
    MacOs,
}

impl Platform {
    /// The PlatformType string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Linux => "Linux",
            Self::Windows => "Windows",
            Self::MacOs => "MacOS",
        }
    }
}

/// Document schema versions that change how steps are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// 1.2: one runtimeConfig plugin; the plugin name is the action.
    V1_2,
    /// 2.2: mainSteps with names and platform preconditions.
    V2_2,
}

/// One step of a built-in (AWS-owned) document, as the table writes it.
#[derive(Debug)]
struct BuiltinStep {
    /// Step name as reported: the action for 1.2 documents ("aws:runShellScript"),
    /// the step's own name for 2.2 ("PatchLinux").
    pub name: &'static str,
    /// The plugin that runs it.
    pub action: &'static str,
    /// Platforms it runs on; on others it is skipped (2.2) or fails (1.2).
    pub platforms: &'static [Platform],
    /// The step's own `timeoutSeconds`; none where the document's
    /// `executionTimeout` parameter sets it (the script documents).
    pub timeout_seconds: Option<u32>,
}

/// One parameter of a built-in document.
#[derive(Debug)]
struct BuiltinParam {
    /// Name.
    pub name: &'static str,
    /// Whether SendCommand must pass it.
    pub required: bool,
    /// Allowed values, when restricted.
    pub allowed: &'static [&'static str],
}

/// A built-in (AWS-owned) Command document, as the table writes it.
#[derive(Debug)]
struct BuiltinDocument {
    /// Name, e.g. "AWS-RunShellScript".
    pub name: &'static str,
    /// Schema version.
    pub schema: Schema,
    /// Steps in order.
    pub steps: &'static [BuiltinStep],
    /// Parameters.
    pub params: &'static [BuiltinParam],
}

const SCRIPT_PARAMS: &[BuiltinParam] = &[
    BuiltinParam {
        name: "commands",
        required: true,
        allowed: &[],
    },
    BuiltinParam {
        name: "workingDirectory",
        required: false,
        allowed: &[],
    },
    BuiltinParam {
        name: "executionTimeout",
        required: false,
        allowed: &[],
    },
];

/// The AWS-owned documents the sim serves.
const BUILTIN: &[BuiltinDocument] = &[
    BuiltinDocument {
        name: "AWS-RunShellScript",
        schema: Schema::V1_2,
        steps: &[BuiltinStep {
            name: "aws:runShellScript",
            action: "aws:runShellScript",
            timeout_seconds: None,
            platforms: &[Platform::Linux, Platform::MacOs],
        }],
        params: SCRIPT_PARAMS,
    },
    BuiltinDocument {
        name: "AWS-RunPowerShellScript",
        schema: Schema::V1_2,
        steps: &[BuiltinStep {
            name: "aws:runPowerShellScript",
            action: "aws:runPowerShellScript",
            timeout_seconds: None,
            platforms: &[Platform::Windows, Platform::Linux],
        }],
        params: SCRIPT_PARAMS,
    },
    BuiltinDocument {
        name: "AWS-RunPatchBaseline",
        schema: Schema::V2_2,
        steps: &[
            BuiltinStep {
                name: "PatchWindows",
                action: "aws:runPowerShellScript",
                timeout_seconds: Some(7_200),
                platforms: &[Platform::Windows],
            },
            BuiltinStep {
                name: "PatchLinux",
                action: "aws:runShellScript",
                timeout_seconds: Some(7_200),
                platforms: &[Platform::Linux],
            },
            BuiltinStep {
                name: "PatchMacOS",
                action: "aws:runShellScript",
                timeout_seconds: Some(7_200),
                platforms: &[Platform::MacOs],
            },
        ],
        params: &[
            BuiltinParam {
                name: "Operation",
                required: true,
                allowed: &["Scan", "Install"],
            },
            BuiltinParam {
                name: "SnapshotId",
                required: false,
                allowed: &[],
            },
            BuiltinParam {
                name: "InstallOverrideList",
                required: false,
                allowed: &[],
            },
            BuiltinParam {
                name: "BaselineOverride",
                required: false,
                allowed: &[],
            },
            BuiltinParam {
                name: "RebootOption",
                required: false,
                allowed: &["RebootIfNeeded", "NoReboot"],
            },
            BuiltinParam {
                name: "AssociationId",
                required: false,
                allowed: &[],
            },
        ],
    },
];

/// What SSM's plugins allow a step when nothing sets its timeout.
pub const DEFAULT_STEP_TIMEOUT_SECONDS: u32 = 3_600;

/// One step of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Step name as reported: the action for 1.2 documents ("aws:runShellScript"),
    /// the step's own name for 2.2 ("PatchLinux").
    pub name: String,
    /// The plugin that runs it.
    pub action: String,
    /// Platforms it runs on; on others it is skipped (2.2) or fails (1.2).
    pub platforms: Vec<Platform>,
    /// The step's own `timeoutSeconds`; none where the document's
    /// `executionTimeout` parameter sets it (the script documents).
    pub timeout_seconds: Option<u32>,
}

/// One parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Name.
    pub name: String,
    /// Whether SendCommand must pass it (it has no default).
    pub required: bool,
    /// Allowed values, when restricted.
    pub allowed: Vec<String>,
}

/// A Command document: one of AWS's, or one version of a customer's.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Name, e.g. "AWS-RunShellScript" or "Acme-Patch".
    pub name: String,
    /// The owner account; empty for AWS's.
    pub owner: String,
    /// This version (1 for AWS's).
    pub version: u32,
    /// Schema version.
    pub schema: Schema,
    /// Steps in order.
    pub steps: Vec<Step>,
    /// Parameters.
    pub params: Vec<Param>,
    /// The content as the customer wrote it; none for AWS's (generated).
    pub written: Option<String>,
}

impl From<&BuiltinDocument> for Document {
    fn from(builtin: &BuiltinDocument) -> Self {
        Self {
            name: builtin.name.to_owned(),
            owner: String::new(),
            version: 1,
            schema: builtin.schema,
            steps: builtin
                .steps
                .iter()
                .map(|s| Step {
                    name: s.name.to_owned(),
                    action: s.action.to_owned(),
                    platforms: s.platforms.to_vec(),
                    timeout_seconds: s.timeout_seconds,
                })
                .collect(),
            params: builtin
                .params
                .iter()
                .map(|p| Param {
                    name: p.name.to_owned(),
                    required: p.required,
                    allowed: p.allowed.iter().map(|a| (*a).to_owned()).collect(),
                })
                .collect(),
            written: None,
        }
    }
}

static AWS_DOCUMENTS: std::sync::LazyLock<Vec<Arc<Document>>> =
    std::sync::LazyLock::new(|| BUILTIN.iter().map(|b| Arc::new(Document::from(b))).collect());

/// Finds an AWS-owned document by name or by its ARN
/// ("arn:aws:ssm:REGION::document/NAME").
pub fn find(name: &str) -> Option<Arc<Document>> {
    let name = name.rsplit_once(":document/").map_or(name, |(_, n)| n);
    AWS_DOCUMENTS.iter().find(|d| d.name == name).cloned()
}

/// Names SSM keeps for AWS's own documents.
pub fn is_reserved(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    ["aws", "amazon", "amzn"].iter().any(|prefix| lower.starts_with(prefix))
}

/// A customer's Command document (schemaVersion 2.2, JSON) as SSM reads it
/// in CreateDocument and UpdateDocument; the error says what is wrong.
pub fn parse(name: &str, owner: &str, version: u32, content: &str) -> Result<Document, String> {
    let doc: serde_json::Value =
        serde_json::from_str(content).map_err(|e| format!("The content is not valid JSON: {e}"))?;
    if doc["schemaVersion"] != "2.2" {
        return Err(format!(
            "muster-sim takes Command documents of schemaVersion 2.2, not {}",
            doc["schemaVersion"]
        ));
    }
    let mut params = Vec::new();
    for (param_name, spec) in doc["parameters"].as_object().into_iter().flatten() {
        params.push(Param {
            name: param_name.clone(),
            required: spec.get("default").is_none(),
            allowed: spec["allowedValues"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        });
    }
    let steps = doc["mainSteps"]
        .as_array()
        .filter(|steps| !steps.is_empty())
        .ok_or("mainSteps: a 2.2 document needs at least one step")?;
    let mut parsed = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let action = step["action"].as_str().unwrap_or_default();
        let mut platforms = match action {
            "aws:runShellScript" => vec![Platform::Linux, Platform::MacOs],
            "aws:runPowerShellScript" => vec![Platform::Windows],
            other => {
                return Err(format!(
                    "mainSteps[{i}].action: muster-sim runs aws:runShellScript and aws:runPowerShellScript steps, not '{other}'"
                ));
            }
        };
        if let Some(wanted) = step["precondition"]["StringEquals"].as_array().and_then(|p| p.get(1)) {
            platforms.retain(|p| Some(p.as_str()) == wanted.as_str());
        }
        let step_name = step["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("mainSteps[{i}].name: is required"))?;
        let timeout = &step["inputs"]["timeoutSeconds"];
        parsed.push(Step {
            name: step_name.to_owned(),
            action: action.to_owned(),
            platforms,
            timeout_seconds: timeout
                .as_u64()
                .or_else(|| timeout.as_str().and_then(|t| t.parse().ok()))
                .and_then(|t| u32::try_from(t).ok()),
        });
    }
    Ok(Document {
        name: name.to_owned(),
        owner: owner.to_owned(),
        version,
        schema: Schema::V2_2,
        steps: parsed,
        params,
        written: Some(content.to_owned()),
    })
}

impl Document {
    /// How long a command of this document may run on an instance of
    /// `platform` when `execution_timeout` (the executionTimeout parameter,
    /// for documents that take one) is not given: the steps that run there,
    /// one after another.
    pub fn own_timeout_seconds(&self, platform: Platform, execution_timeout: Option<f64>) -> f64 {
        if let Some(seconds) = execution_timeout {
            return seconds;
        }
        self.steps
            .iter()
            .filter(|step| self.schema == Schema::V1_2 || step.runs_on(platform))
            .map(|step| f64::from(step.timeout_seconds.unwrap_or(DEFAULT_STEP_TIMEOUT_SECONDS)))
            .sum()
    }

    /// The document's content as GetDocument returns it (JSON): a
    /// customer's as written; AWS's generated from its parameters and
    /// steps, with their timeouts.
    pub fn content(&self) -> String {
        if let Some(written) = &self.written {
            return written.clone();
        }
        let mut parameters = serde_json::Map::new();
        for param in &self.params {
            let mut spec = serde_json::json!({"type": if param.name == "commands" { "StringList" } else { "String" }});
            if !param.allowed.is_empty() {
                spec["allowedValues"] = param.allowed.clone().into();
            }
            if param.name == "executionTimeout" {
                spec["default"] = DEFAULT_STEP_TIMEOUT_SECONDS.to_string().into();
            } else if !param.required {
                spec["default"] = "".into();
            }
            parameters.insert(param.name.clone(), spec);
        }
        let content = match self.schema {
            Schema::V1_2 => {
                let plugin = self.steps[0].action.clone();
                serde_json::json!({
                    "schemaVersion": "1.2",
                    "parameters": parameters,
                    "runtimeConfig": {plugin.clone(): {"properties": [{
                        "id": format!("0.{plugin}"),
                        "runCommand": "{{ commands }}",
                        "workingDirectory": "{{ workingDirectory }}",
                        "timeoutSeconds": "{{ executionTimeout }}",
                    }]}},
                })
            }
            Schema::V2_2 => serde_json::json!({
                "schemaVersion": "2.2",
                "parameters": parameters,
                "mainSteps": self.steps.iter().map(|step| {
                    let mut inputs = serde_json::json!({"runCommand": ["..."]});
                    if let Some(timeout) = step.timeout_seconds {
                        inputs["timeoutSeconds"] = timeout.into();
                    }
                    serde_json::json!({
                        "action": step.action,
                        "name": step.name,
                        "precondition": {"StringEquals": ["platformType", step.platforms.first().map_or("Linux", |p| p.as_str())]},
                        "inputs": inputs,
                    })
                }).collect::<Vec<_>>(),
            }),
        };
        content.to_string()
    }
}

impl Step {
    /// The S3 path segment SSM uses for this step's output, below
    /// `<prefix>/<command id>/<instance id>/`.
    pub fn s3_dir(&self, schema: Schema) -> String {
        let plugin = self.action.replace(':', "");
        match schema {
            Schema::V1_2 => format!("{plugin}/0.{plugin}"),
            Schema::V2_2 => format!("{plugin}/{}", self.name),
        }
    }

    /// The CloudWatch Logs stream segment SSM uses for this step, between
    /// `<command id>/<instance id>/` and `/stdout`.
    pub fn log_stream_segment(&self, schema: Schema) -> String {
        match schema {
            Schema::V1_2 => self.action.replace(':', "-"),
            Schema::V2_2 => self.name.clone(),
        }
    }

    /// Whether the step runs on `platform`.
    pub fn runs_on(&self, platform: Platform) -> bool {
        self.platforms.contains(&platform)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_ssm_layouts() {
        let shell = find("AWS-RunShellScript").unwrap();
        assert_eq!(
            shell.steps[0].s3_dir(shell.schema),
            "awsrunShellScript/0.awsrunShellScript"
        );
        assert_eq!(shell.steps[0].log_stream_segment(shell.schema), "aws-runShellScript");
        let patch = find("arn:aws:ssm:us-east-1::document/AWS-RunPatchBaseline").unwrap();
        assert_eq!(patch.steps[1].s3_dir(patch.schema), "awsrunShellScript/PatchLinux");
        assert_eq!(patch.steps[1].log_stream_segment(patch.schema), "PatchLinux");
        assert!(find("AWS-DoesNotExist").is_none());
    }

    #[test]
    fn a_patch_runs_two_hours_and_a_script_its_execution_timeout() {
        let patch = find("AWS-RunPatchBaseline").unwrap();
        assert_eq!(patch.own_timeout_seconds(Platform::Linux, None), 7_200.0);
        let content: serde_json::Value = serde_json::from_str(&patch.content()).unwrap();
        assert_eq!(content["mainSteps"][1]["inputs"]["timeoutSeconds"], 7_200);
        let shell = find("AWS-RunShellScript").unwrap();
        assert_eq!(shell.own_timeout_seconds(Platform::Linux, None), 3_600.0);
        assert_eq!(shell.own_timeout_seconds(Platform::Linux, Some(60.0)), 60.0);
        let content: serde_json::Value = serde_json::from_str(&shell.content()).unwrap();
        assert_eq!(content["parameters"]["executionTimeout"]["default"], "3600");
    }

    #[test]
    fn a_customer_document_is_read_as_ssm_reads_it() {
        let content = r#"{"schemaVersion":"2.2","parameters":{"Level":{"type":"String","allowedValues":["low","high"]},
            "Note":{"type":"String","default":""}},"mainSteps":[
            {"action":"aws:runShellScript","name":"Scan","precondition":{"StringEquals":["platformType","Linux"]},
             "inputs":{"runCommand":["scan"],"timeoutSeconds":"600"}},
            {"action":"aws:runShellScript","name":"Install","inputs":{"runCommand":["install"]}}]}"#;
        let doc = parse("Acme-Patch", "111122223333", 2, content).unwrap();
        assert_eq!((doc.version, doc.steps.len()), (2, 2));
        assert_eq!(doc.steps[0].platforms, [Platform::Linux]);
        assert_eq!(doc.steps[0].timeout_seconds, Some(600));
        assert_eq!(doc.own_timeout_seconds(Platform::Linux, None), 4_200.0);
        assert!(
            doc.params
                .iter()
                .any(|p| p.name == "Level" && p.required && p.allowed == ["low", "high"])
        );
        assert!(doc.params.iter().any(|p| p.name == "Note" && !p.required));
        assert_eq!(doc.content(), content, "GetDocument returns it as written");
        let bad = parse(
            "x",
            "1",
            1,
            r#"{"schemaVersion":"2.2","mainSteps":[{"action":"aws:runDocument","name":"a"}]}"#,
        );
        assert!(bad.unwrap_err().starts_with("mainSteps[0].action: muster-sim runs"));
        assert!(is_reserved("AWS-Mine") && is_reserved("amazon-x") && !is_reserved("Acme-Patch"));
    }
}
