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
                platforms: &[Platform::Windows],
            },
            Step {
                name: "PatchLinux",
                action: "aws:runShellScript",
                platforms: &[Platform::Linux],
            },
            Step {
                name: "PatchMacOS",
                action: "aws:runShellScript",
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
}
