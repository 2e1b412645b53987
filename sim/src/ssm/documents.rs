//! The SSM Command documents the sim knows, with their steps, platforms and
//! parameters, so that SendCommand validates as SSM does.

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

/// One step of a document.
#[derive(Debug)]
pub struct Step {
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

/// One parameter.
#[derive(Debug)]
pub struct Param {
    /// Name.
    pub name: &'static str,
    /// Whether SendCommand must pass it.
    pub required: bool,
    /// Allowed values, when restricted.
    pub allowed: &'static [&'static str],
}

/// A Command document.
#[derive(Debug)]
pub struct Document {
    /// Name, e.g. "AWS-RunShellScript".
    pub name: &'static str,
    /// Schema version.
    pub schema: Schema,
    /// Steps in order.
    pub steps: &'static [Step],
    /// Parameters.
    pub params: &'static [Param],
}

const SCRIPT_PARAMS: &[Param] = &[
    Param {
        name: "commands",
        required: true,
        allowed: &[],
    },
    Param {
        name: "workingDirectory",
        required: false,
        allowed: &[],
    },
    Param {
        name: "executionTimeout",
        required: false,
        allowed: &[],
    },
];

/// Every document the sim serves.
pub const DOCUMENTS: &[Document] = &[
    Document {
        name: "AWS-RunShellScript",
        schema: Schema::V1_2,
        steps: &[Step {
            name: "aws:runShellScript",
            action: "aws:runShellScript",
            timeout_seconds: None,
            platforms: &[Platform::Linux, Platform::MacOs],
        }],
        params: SCRIPT_PARAMS,
    },
    Document {
        name: "AWS-RunPowerShellScript",
        schema: Schema::V1_2,
        steps: &[Step {
            name: "aws:runPowerShellScript",
            action: "aws:runPowerShellScript",
            timeout_seconds: None,
            platforms: &[Platform::Windows, Platform::Linux],
        }],
        params: SCRIPT_PARAMS,
    },
    Document {
        name: "AWS-RunPatchBaseline",
        schema: Schema::V2_2,
        steps: &[
            Step {
                name: "PatchWindows",
                action: "aws:runPowerShellScript",
                timeout_seconds: Some(7_200),
                platforms: &[Platform::Windows],
            },
            Step {
                name: "PatchLinux",
                action: "aws:runShellScript",
                timeout_seconds: Some(7_200),
                platforms: &[Platform::Linux],
            },
            Step {
                name: "PatchMacOS",
                action: "aws:runShellScript",
                timeout_seconds: Some(7_200),
                platforms: &[Platform::MacOs],
            },
        ],
        params: &[
            Param {
                name: "Operation",
                required: true,
                allowed: &["Scan", "Install"],
            },
            Param {
                name: "SnapshotId",
                required: false,
                allowed: &[],
            },
            Param {
                name: "InstallOverrideList",
                required: false,
                allowed: &[],
            },
            Param {
                name: "BaselineOverride",
                required: false,
                allowed: &[],
            },
            Param {
                name: "RebootOption",
                required: false,
                allowed: &["RebootIfNeeded", "NoReboot"],
            },
            Param {
                name: "AssociationId",
                required: false,
                allowed: &[],
            },
        ],
    },
];

/// What SSM's plugins allow a step when nothing sets its timeout.
pub const DEFAULT_STEP_TIMEOUT_SECONDS: u32 = 3_600;

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

    /// The document's content as GetDocument returns it (JSON): its
    /// parameters and steps, with their timeouts.
    pub fn content(&self) -> serde_json::Value {
        let mut parameters = serde_json::Map::new();
        for param in self.params {
            let mut spec = serde_json::json!({"type": if param.name == "commands" { "StringList" } else { "String" }});
            if !param.allowed.is_empty() {
                spec["allowedValues"] = param.allowed.into();
            }
            if param.name == "executionTimeout" {
                spec["default"] = DEFAULT_STEP_TIMEOUT_SECONDS.to_string().into();
            } else if !param.required {
                spec["default"] = "".into();
            }
            parameters.insert(param.name.to_owned(), spec);
        }
        match self.schema {
            Schema::V1_2 => {
                let plugin = self.steps[0].action;
                serde_json::json!({
                    "schemaVersion": "1.2",
                    "parameters": parameters,
                    "runtimeConfig": {plugin: {"properties": [{
                        "id": "0.".to_owned() + plugin,
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
        }
    }
}

/// Finds a document by name or by ARN ("arn:aws:ssm:...:document/NAME").
pub fn find(name: &str) -> Option<&'static Document> {
    let name = name.rsplit_once(":document/").map_or(name, |(_, n)| n);
    DOCUMENTS.iter().find(|d| d.name == name)
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
            Schema::V2_2 => self.name.to_owned(),
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
        assert_eq!(patch.content()["mainSteps"][1]["inputs"]["timeoutSeconds"], 7_200);
        let shell = find("AWS-RunShellScript").unwrap();
        assert_eq!(shell.own_timeout_seconds(Platform::Linux, None), 3_600.0);
        assert_eq!(shell.own_timeout_seconds(Platform::Linux, Some(60.0)), 60.0);
        assert_eq!(shell.content()["parameters"]["executionTimeout"]["default"], "3600");
    }
}
