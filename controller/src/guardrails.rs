//! Guardrails: limits the controller's operator sets on what any campaign may
//! do, whoever submits it. Which accounts (listed, or under listed OUs), which
//! execution roles, which SSM documents, and a target count above which a
//! campaign runs only with `confirm_large`. An empty list allows everything of
//! its kind.
//!
//! Roles, documents and accounts are checked at Submit and Plan, before
//! anything is stored or enqueued (PERMISSION_DENIED). The target count is
//! known only after discovery: a campaign above it without `confirm_large`
//! then ends FAILED and runs nothing.

use muster_common::config::ConfigError;
use std::collections::BTreeSet;

use muster_proto::v1::{CampaignSpec, command};
use serde::Deserialize;
use tonic::Status;

/// The controller's guardrails.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guardrails {
    /// Accounts campaigns may target (with those under `allowed_ous`).
    #[serde(default)]
    pub allowed_accounts: Vec<String>,
    /// OUs (or roots) whose accounts, at any depth, campaigns may target.
    #[serde(default)]
    pub allowed_ous: Vec<String>,
    /// Execution roles campaigns may assume: the role's path and name after
    /// `:role/`, `*` matching any run of characters (e.g. `muster-*`).
    #[serde(default)]
    pub allowed_roles: Vec<String>,
    /// SSM documents campaigns may run (`AWS-RunShellScript` for Linux
    /// lines, `AWS-RunPowerShellScript` for Windows lines, or the named
    /// document); `*` matches any run of characters.
    #[serde(default)]
    pub allowed_documents: Vec<String>,
    /// Campaigns with more targets than this run only with `confirm_large`.
    #[serde(default)]
    pub confirm_above_targets: Option<u64>,
}

impl Guardrails {
    /// Checks the configured values; names what is wrong.
    pub fn check(&self) -> Result<(), ConfigError> {
        for (i, account) in self.allowed_accounts.iter().enumerate() {
            muster_common::domain::AccountId::parse(account)
                .map_err(|e| ConfigError::invalid(&format!("guardrails.allowed_accounts[{i}]"), e))?;
        }
        for (i, ou) in self.allowed_ous.iter().enumerate() {
            muster_common::domain::check_ou_id(ou)
                .map_err(|e| ConfigError::invalid(&format!("guardrails.allowed_ous[{i}]"), e))?;
        }
        for (field, patterns) in [
            ("allowed_roles", &self.allowed_roles),
            ("allowed_documents", &self.allowed_documents),
        ] {
            for (i, pattern) in patterns.iter().enumerate() {
                let field = format!("guardrails.{field}[{i}]");
                if pattern.is_empty() || pattern.len() > 256 {
                    return Err(ConfigError::invalid(&field, "must be 1 to 256 characters"));
                }
                glob::Pattern::new(pattern).map_err(|e| ConfigError::invalid(&field, e))?;
            }
        }
        if self.confirm_above_targets == Some(0) {
            return Err(ConfigError::invalid(
                "guardrails.confirm_above_targets",
                "must be at least 1 (leave it out for no limit)",
            ));
        }
        Ok(())
    }

    /// True when accounts are limited.
    pub fn limits_accounts(&self) -> bool {
        !self.allowed_accounts.is_empty() || !self.allowed_ous.is_empty()
    }

    /// Checks the execution role and documents of a validated spec.
    pub fn check_spec(&self, spec: &CampaignSpec, role_arn_example: &str) -> Result<(), Status> {
        if !self.allowed_roles.is_empty() {
            let role = role_arn_example
                .split_once(":role/")
                .map(|(_, role)| role)
                .unwrap_or(role_arn_example);
            if !matches_any(&self.allowed_roles, role) {
                return Err(Status::permission_denied(format!(
                    "spec.access: guardrail: role '{role}' is not one the controller allows ({})",
                    self.allowed_roles.join(", ")
                )));
            }
        }
        if !self.allowed_documents.is_empty() {
            for document in documents(spec) {
                if !matches_any(&self.allowed_documents, &document) {
                    return Err(Status::permission_denied(format!(
                        "spec.command: guardrail: document '{document}' is not one the controller allows ({})",
                        self.allowed_documents.join(", ")
                    )));
                }
            }
        }
        Ok(())
    }

    /// Checks expanded accounts against the allowed ones (`allowed`: the
    /// listed accounts plus every account under the allowed OUs).
    pub fn check_accounts(&self, accounts: &[String], allowed: &BTreeSet<String>) -> Result<(), Status> {
        if !self.limits_accounts() {
            return Ok(());
        }
        let outside: Vec<&str> = accounts
            .iter()
            .filter(|a| !allowed.contains(*a))
            .map(String::as_str)
            .collect();
        if outside.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = outside.iter().take(5).copied().collect();
        let more = if outside.len() > shown.len() {
            format!(" and {} more", outside.len() - shown.len())
        } else {
            String::new()
        };
        Err(Status::permission_denied(format!(
            "spec.targets: guardrail: account {}{more} is outside the controller's allowed accounts and OUs",
            shown.join(", ")
        )))
    }

    /// Why a campaign of `targets` targets may not run, if it may not.
    pub fn needs_confirmation(&self, targets: u64, confirmed: bool) -> Option<String> {
        let limit = self.confirm_above_targets?;
        (targets > limit && !confirmed).then(|| {
            format!(
                "guardrail: {targets} targets is above confirm_above_targets ({limit}); nothing ran. \
                 Submit again with confirm_large (muster submit --confirm-large) to run it"
            )
        })
    }
}

/// Whether `value` matches one of the glob `patterns` (`*` as a wildcard).
pub fn matches_any(patterns: &[String], value: &str) -> bool {
    patterns
        .iter()
        .any(|p| glob::Pattern::new(p).is_ok_and(|p| p.matches(value)))
}

/// The SSM documents a spec runs: its command's and those of the commands
/// after it, each once.
pub fn documents(spec: &CampaignSpec) -> Vec<String> {
    let mut documents: Vec<String> = Vec::new();
    let kinds = spec.command.iter().chain(&spec.then).filter_map(|c| c.kind.as_ref());
    for kind in kinds {
        let names = match kind {
            command::Kind::Document(document) => vec![document.name.clone()],
            command::Kind::Script(script) => [
                (!script.linux_lines.is_empty()).then(|| "AWS-RunShellScript".to_owned()),
                (!script.windows_lines.is_empty()).then(|| "AWS-RunPowerShellScript".to_owned()),
            ]
            .into_iter()
            .flatten()
            .collect(),
        };
        for name in names {
            if !documents.contains(&name) {
                documents.push(name);
            }
        }
    }
    documents
}

#[cfg(test)]
mod tests {
    use muster_proto::v1::{Command, Document, Script};

    use super::*;

    fn script(linux: &[&str], windows: &[&str]) -> CampaignSpec {
        CampaignSpec {
            command: Some(Command {
                kind: Some(command::Kind::Script(Script {
                    linux_lines: linux.iter().map(|s| (*s).to_owned()).collect(),
                    windows_lines: windows.iter().map(|s| (*s).to_owned()).collect(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn roles_and_documents_outside_the_lists_are_denied() {
        let rails = Guardrails {
            allowed_roles: vec!["muster-*".into()],
            allowed_documents: vec!["AWS-RunShellScript".into(), "AWS-RunPatchBaseline".into()],
            ..Default::default()
        };
        rails.check().unwrap();
        let linux = script(&["uptime"], &[]);
        rails
            .check_spec(&linux, "arn:aws:iam::111111111111:role/muster-execution")
            .unwrap();
        let err = rails
            .check_spec(&linux, "arn:aws:iam::111111111111:role/Admin")
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            err.message(),
            "spec.access: guardrail: role 'Admin' is not one the controller allows (muster-*)"
        );
        let both = script(&["uptime"], &["Get-Date"]);
        let err = rails
            .check_spec(&both, "arn:aws:iam::111111111111:role/muster-execution")
            .unwrap_err();
        assert!(
            err.message().contains("document 'AWS-RunPowerShellScript'"),
            "{}",
            err.message()
        );
        let document = CampaignSpec {
            command: Some(Command {
                kind: Some(command::Kind::Document(Document {
                    name: "AWS-RunPatchBaseline".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        rails
            .check_spec(&document, "arn:aws:iam::111111111111:role/muster-execution")
            .unwrap();
        // A command later in the sequence is held to the same list.
        let mut then = document;
        then.then = script(&[], &["Restart-Computer"]).command.into_iter().collect();
        let err = rails
            .check_spec(&then, "arn:aws:iam::111111111111:role/muster-execution")
            .unwrap_err();
        assert!(
            err.message().contains("document 'AWS-RunPowerShellScript'"),
            "{}",
            err.message()
        );
        assert_eq!(documents(&then), ["AWS-RunPatchBaseline", "AWS-RunPowerShellScript"]);
    }

    #[test]
    fn accounts_outside_the_allowed_set_are_named() {
        let rails = Guardrails {
            allowed_accounts: vec!["111111111111".into()],
            ..Default::default()
        };
        let allowed: BTreeSet<String> = ["111111111111".to_owned()].into();
        rails.check_accounts(&["111111111111".into()], &allowed).unwrap();
        let err = rails
            .check_accounts(&["111111111111".into(), "999999999999".into()], &allowed)
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            err.message(),
            "spec.targets: guardrail: account 999999999999 is outside the controller's allowed accounts and OUs"
        );
        assert!(
            Guardrails::default()
                .check_accounts(&["999999999999".into()], &BTreeSet::new())
                .is_ok()
        );
    }

    #[test]
    fn large_campaigns_need_confirmation() {
        let rails = Guardrails {
            confirm_above_targets: Some(100),
            ..Default::default()
        };
        assert_eq!(rails.needs_confirmation(100, false), None);
        assert!(rails.needs_confirmation(101, false).unwrap().contains("101 targets"));
        assert_eq!(rails.needs_confirmation(101, true), None);
        assert_eq!(Guardrails::default().needs_confirmation(1_000_000, false), None);
    }

    #[test]
    fn bad_configuration_is_named() {
        let bad = Guardrails {
            allowed_accounts: vec!["12345".into()],
            ..Default::default()
        };
        assert_eq!(bad.check().unwrap_err().field(), "guardrails.allowed_accounts[0]");
        let bad = Guardrails {
            allowed_roles: vec!["[".into()],
            ..Default::default()
        };
        assert_eq!(bad.check().unwrap_err().field(), "guardrails.allowed_roles[0]");
        let bad = Guardrails {
            confirm_above_targets: Some(0),
            ..Default::default()
        };
        assert_eq!(bad.check().unwrap_err().field(), "guardrails.confirm_above_targets");
    }
}
