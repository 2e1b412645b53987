//! What each caller may do, and where: roles scoped to accounts, OUs,
//! regions and documents.
//!
//! A grant gives a principal (a token's or a client certificate's name) a
//! role, within a scope. Roles are cumulative sets of actions:
//!
//! | role     | read | read output | plan, submit, cancel | approve | admin |
//! |----------|------|-------------|----------------------|---------|-------|
//! | viewer   | yes  |             |                      |         |       |
//! | operator | yes  | yes         | yes                  |         |       |
//! | approver | yes  | yes         |                      | yes     |       |
//! | admin    | yes  | yes         | yes                  | yes     | yes   |
//!
//! A scope names accounts, OUs (their accounts at any depth), regions and
//! SSM documents (`*` as a wildcard); an empty list allows any. An action on
//! a campaign is allowed when one grant of the caller both allows the action
//! and holds the whole campaign: every account and region it targets, and
//! every document it runs. So a principal sees only the campaigns within its
//! scope, and may plan, submit or cancel only within it.

use muster_common::config::ConfigError;
use std::collections::{BTreeSet, HashMap};
use std::fmt;

use muster_common::domain::{AccountId, RegionName, check_ou_id};
use serde::Deserialize;

/// A set of actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads campaigns, their progress and their targets' results.
    Viewer,
    /// A viewer that also reads output, and plans, submits and cancels.
    Operator,
    /// A viewer that also reads output and approves (waves to come).
    Approver,
    /// Everything, including the audit trail and the policy.
    Admin,
}

/// Something a caller asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Get, list and watch campaigns; targets without output.
    Read,
    /// Targets' stdout and stderr.
    ReadOutput,
    /// Plan a campaign (a dry run).
    Plan,
    /// Submit a campaign.
    Submit,
    /// Cancel a campaign.
    Cancel,
    /// Approve a campaign's next wave.
    Approve,
    /// Read the audit trail and the policy.
    Admin,
}

impl Action {
    /// As errors name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::ReadOutput => "read output",
            Self::Plan => "plan",
            Self::Submit => "submit",
            Self::Cancel => "cancel",
            Self::Approve => "approve",
            Self::Admin => "administer",
        }
    }
}

impl Role {
    /// Parses a role; `read` and `submit` are the names of viewer and
    /// operator before roles had scopes.
    pub fn parse(field: &str, text: &str) -> Result<Self, ConfigError> {
        match text.trim() {
            "viewer" | "read" => Ok(Self::Viewer),
            "operator" | "submit" => Ok(Self::Operator),
            "approver" => Ok(Self::Approver),
            "admin" => Ok(Self::Admin),
            other => Err(ConfigError::invalid(
                field,
                format!(
                    "'{}' is not a role (viewer, operator, approver, admin)",
                    muster_common::domain::clip(other)
                ),
            )),
        }
    }

    /// Whether the role allows `action`.
    pub fn allows(self, action: Action) -> bool {
        match self {
            Self::Admin => true,
            Self::Viewer => action == Action::Read,
            Self::Operator => matches!(
                action,
                Action::Read | Action::ReadOutput | Action::Plan | Action::Submit | Action::Cancel
            ),
            Self::Approver => matches!(action, Action::Read | Action::ReadOutput | Action::Approve),
        }
    }

    /// The roles that allow `action`, for errors.
    pub fn allowing(action: Action) -> Vec<Self> {
        [Self::Viewer, Self::Operator, Self::Approver, Self::Admin]
            .into_iter()
            .filter(|r| r.allows(action))
            .collect()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Approver => "approver",
            Self::Admin => "admin",
        })
    }
}

/// Where a grant holds; an empty list allows any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Accounts.
    pub accounts: BTreeSet<String>,
    /// OUs and roots (their accounts at any depth).
    pub ous: BTreeSet<String>,
    /// Regions.
    pub regions: BTreeSet<String>,
    /// SSM documents, `*` as a wildcard.
    pub documents: Vec<String>,
}

impl Scope {
    /// Whether it allows anything anywhere.
    pub fn is_unlimited(&self) -> bool {
        self.accounts.is_empty() && self.ous.is_empty() && self.regions.is_empty() && self.documents.is_empty()
    }

    /// Whether it limits accounts.
    pub fn limits_accounts(&self) -> bool {
        !self.accounts.is_empty() || !self.ous.is_empty()
    }

    /// The first part of `campaign` outside this scope, as an error names
    /// it; none when the scope holds it all. `members` gives each OU's
    /// accounts.
    pub fn excludes(&self, campaign: &Footprint, members: &HashMap<String, BTreeSet<String>>) -> Option<String> {
        if self.limits_accounts() {
            let inside = |account: &String| {
                self.accounts.contains(account)
                    || self
                        .ous
                        .iter()
                        .any(|ou| members.get(ou).is_some_and(|m| m.contains(account)))
            };
            if let Some(account) = campaign.accounts.iter().find(|a| !inside(a)) {
                return Some(format!("account {account}"));
            }
        }
        if !self.regions.is_empty()
            && let Some(region) = campaign.regions.iter().find(|r| !self.regions.contains(*r))
        {
            return Some(format!("region {region}"));
        }
        if !self.documents.is_empty()
            && let Some(document) = campaign
                .documents
                .iter()
                .find(|d| !crate::guardrails::matches_any(&self.documents, d))
        {
            return Some(format!("document {document}"));
        }
        None
    }

    /// One line for errors: "accounts 1, 2; OUs ou-x; regions us-east-1".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let list = |set: &mut dyn Iterator<Item = &String>| set.cloned().collect::<Vec<_>>().join(", ");
        if !self.accounts.is_empty() {
            parts.push(format!("accounts {}", list(&mut self.accounts.iter())));
        }
        if !self.ous.is_empty() {
            parts.push(format!("OUs {}", list(&mut self.ous.iter())));
        }
        if !self.regions.is_empty() {
            parts.push(format!("regions {}", list(&mut self.regions.iter())));
        }
        if !self.documents.is_empty() {
            parts.push(format!("documents {}", list(&mut self.documents.iter())));
        }
        if parts.is_empty() {
            "everywhere".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

/// Where a campaign reaches: what a scope must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Accounts it targets.
    pub accounts: BTreeSet<String>,
    /// Regions it targets.
    pub regions: BTreeSet<String>,
    /// SSM documents it runs.
    pub documents: BTreeSet<String>,
}

/// A role within a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The role.
    pub role: Role,
    /// Where.
    pub scope: Scope,
}

/// A grant as the policy file writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantEntry {
    /// Token or certificate names it applies to.
    pub principals: Vec<String>,
    /// viewer, operator, approver or admin.
    pub role: String,
    /// Accounts (empty with no OUs: any).
    #[serde(default)]
    pub accounts: Vec<String>,
    /// OUs and roots.
    #[serde(default)]
    pub ous: Vec<String>,
    /// Regions (empty: any).
    #[serde(default)]
    pub regions: Vec<String>,
    /// SSM documents, `*` as a wildcard (empty: any).
    #[serde(default)]
    pub documents: Vec<String>,
}

impl GrantEntry {
    /// The grant, checked; `field` names it in errors.
    pub fn grant(&self, field: &str) -> Result<Grant, ConfigError> {
        let role = Role::parse(&format!("{field}.role"), &self.role)?;
        for (i, account) in self.accounts.iter().enumerate() {
            AccountId::parse(account)
                .map_err(|e| ConfigError::invalid(&format!("{field}.accounts[{i}]"), format!("{e}")))?;
        }
        for (i, ou) in self.ous.iter().enumerate() {
            check_ou_id(ou).map_err(|e| ConfigError::invalid(&format!("{field}.ous[{i}]"), format!("{e}")))?;
        }
        for (i, region) in self.regions.iter().enumerate() {
            RegionName::parse(region)
                .map_err(|e| ConfigError::invalid(&format!("{field}.regions[{i}]"), format!("{e}")))?;
        }
        for (i, document) in self.documents.iter().enumerate() {
            if document.is_empty() || document.len() > 256 {
                return Err(ConfigError::invalid(
                    &format!("{field}.documents[{i}]"),
                    "1 to 256 characters",
                ));
            }
        }
        Ok(Grant {
            role,
            scope: Scope {
                accounts: self.accounts.iter().cloned().collect(),
                ous: self.ous.iter().cloned().collect(),
                regions: self.regions.iter().cloned().collect(),
                documents: self.documents.clone(),
            },
        })
    }
}

/// Why a caller may not act on a campaign: PERMISSION_DENIED's message.
/// A policy rule that asks for an approval of campaigns that reach into
/// its scope (any account of it, any region, any document), from
/// `min_targets` targets up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRule {
    /// Its name, for people and the audit trail.
    pub name: String,
    /// What it protects; an empty list matches any.
    pub scope: Scope,
    /// Only campaigns of at least this many targets.
    pub min_targets: u64,
    /// How long a request waits for a decision, in seconds.
    pub expires_s: u64,
}

/// The longest an approval request may wait: a week.
pub const MAX_APPROVAL_SECONDS: u64 = 604_800;

/// An approval rule as the policy file writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalEntry {
    /// 1 to 64 of letters, digits and _.-.
    pub name: String,
    /// Accounts (empty with no OUs: any).
    #[serde(default)]
    pub accounts: Vec<String>,
    /// OUs and roots.
    #[serde(default)]
    pub ous: Vec<String>,
    /// Regions (empty: any).
    #[serde(default)]
    pub regions: Vec<String>,
    /// SSM documents, `*` as a wildcard (empty: any).
    #[serde(default)]
    pub documents: Vec<String>,
    /// Only campaigns of at least this many targets (default 0: all).
    #[serde(default)]
    pub min_targets: u64,
    /// How long a request waits: "24h" (the default), "30m"; 1s to 7d.
    pub expires: Option<String>,
}

impl ApprovalEntry {
    /// The rule, checked; `field` names it in errors.
    pub fn rule(&self, field: &str) -> Result<ApprovalRule, ConfigError> {
        if !crate::validate::is_short_name(&self.name) {
            return Err(ConfigError::invalid(
                &format!("{field}.name"),
                crate::validate::SHORT_NAME_RULE,
            ));
        }
        // The same checks as a grant's scope.
        let scope = GrantEntry {
            principals: Vec::new(),
            role: "viewer".into(),
            accounts: self.accounts.clone(),
            ous: self.ous.clone(),
            regions: self.regions.clone(),
            documents: self.documents.clone(),
        }
        .grant(field)?
        .scope;
        let expires_s = match self.expires.as_deref() {
            None => 86_400,
            Some(text) => humantime::parse_duration(text.trim())
                .map_err(|_| {
                    ConfigError::invalid(
                        &format!("{field}.expires"),
                        format!("'{text}' is not a duration (for example 30m, 24h)"),
                    )
                })?
                .as_secs(),
        };
        if !(1..=MAX_APPROVAL_SECONDS).contains(&expires_s) {
            return Err(ConfigError::invalid(
                &format!("{field}.expires"),
                format!("{expires_s}s; 1s to 7 days"),
            ));
        }
        Ok(ApprovalRule {
            name: self.name.clone(),
            scope,
            min_targets: self.min_targets,
            expires_s,
        })
    }
}

impl Scope {
    /// The first part of `campaign` inside this scope, as a reason names it
    /// ("account 1111..."), when the campaign reaches into it in every
    /// dimension the scope limits; none when it stays outside.
    pub fn touches(&self, campaign: &Footprint, members: &HashMap<String, BTreeSet<String>>) -> Option<String> {
        let mut parts = Vec::new();
        if self.limits_accounts() {
            let inside = |account: &&String| {
                self.accounts.contains(*account)
                    || self
                        .ous
                        .iter()
                        .any(|ou| members.get(ou).is_some_and(|m| m.contains(*account)))
            };
            parts.push(format!("account {}", campaign.accounts.iter().find(inside)?));
        }
        if !self.regions.is_empty() {
            parts.push(format!(
                "region {}",
                campaign.regions.iter().find(|r| self.regions.contains(*r))?
            ));
        }
        if !self.documents.is_empty() {
            let document = campaign
                .documents
                .iter()
                .find(|d| crate::guardrails::matches_any(&self.documents, d))?;
            parts.push(format!("document {document}"));
        }
        Some(if parts.is_empty() {
            "every campaign".to_owned()
        } else {
            parts.join(", ")
        })
    }
}

pub fn out_of_scope(name: &str, action: Action, grants: &[Grant], outside: &str) -> String {
    let scopes: Vec<String> = grants
        .iter()
        .filter(|g| g.role.allows(action))
        .map(|g| g.scope.describe())
        .collect();
    format!(
        "scope: {name} may {} only within {}; this campaign reaches {outside}, outside it",
        action.as_str(),
        scopes.join(" or ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn footprint(accounts: &[&str], regions: &[&str], documents: &[&str]) -> Footprint {
        Footprint {
            accounts: accounts.iter().map(|s| (*s).to_owned()).collect(),
            regions: regions.iter().map(|s| (*s).to_owned()).collect(),
            documents: documents.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn roles_are_sets_of_actions() {
        assert!(Role::Viewer.allows(Action::Read));
        assert!(!Role::Viewer.allows(Action::ReadOutput));
        assert!(Role::Operator.allows(Action::Cancel) && !Role::Operator.allows(Action::Approve));
        assert!(Role::Approver.allows(Action::Approve) && !Role::Approver.allows(Action::Submit));
        assert!(Role::Admin.allows(Action::Admin));
        assert_eq!(Role::allowing(Action::Submit), [Role::Operator, Role::Admin]);
        assert_eq!(Role::parse("r", "submit").unwrap(), Role::Operator);
        assert_eq!(
            Role::parse("grants[0].role", "boss").unwrap_err().to_string(),
            "grants[0].role: 'boss' is not a role (viewer, operator, approver, admin)"
        );
    }

    #[test]
    fn an_approval_rule_touches_a_campaign_that_reaches_into_it() {
        let ou = "ou-abcd-12345678";
        let rule = ApprovalEntry {
            name: "prod".into(),
            accounts: vec![],
            ous: vec![ou.into()],
            regions: vec![],
            documents: vec!["AWS-RunPatch*".into()],
            min_targets: 10,
            expires: Some("2h".into()),
        }
        .rule("approvals[0]")
        .unwrap();
        assert_eq!((rule.min_targets, rule.expires_s), (10, 7_200));
        let members = HashMap::from([(ou.to_owned(), BTreeSet::from(["222222222222".to_owned()]))]);
        let patch = footprint(
            &["111111111111", "222222222222"],
            &["us-east-1"],
            &["AWS-RunPatchBaseline"],
        );
        assert_eq!(
            rule.scope.touches(&patch, &members).as_deref(),
            Some("account 222222222222, document AWS-RunPatchBaseline")
        );
        let elsewhere = footprint(&["111111111111"], &["us-east-1"], &["AWS-RunPatchBaseline"]);
        assert_eq!(rule.scope.touches(&elsewhere, &members), None);
        let other_document = footprint(&["222222222222"], &["us-east-1"], &["AWS-RunShellScript"]);
        assert_eq!(rule.scope.touches(&other_document, &members), None);
        let bad = ApprovalEntry {
            expires: Some("8d".into()),
            ..ApprovalEntry {
                name: "x".into(),
                accounts: vec![],
                ous: vec![],
                regions: vec![],
                documents: vec![],
                min_targets: 0,
                expires: None,
            }
        };
        assert_eq!(
            bad.rule("approvals[1]").unwrap_err().to_string(),
            "approvals[1].expires: 691200s; 1s to 7 days"
        );
    }

    #[test]
    fn a_scope_holds_a_campaign_only_whole() {
        let ou = "ou-abcd-12345678";
        let grant = GrantEntry {
            principals: vec!["dev".into()],
            role: "operator".into(),
            accounts: vec!["111111111111".into()],
            ous: vec![ou.into()],
            regions: vec!["us-east-1".into()],
            documents: vec!["AWS-Run*".into()],
        }
        .grant("grants[0]")
        .unwrap();
        let members = HashMap::from([(ou.to_owned(), BTreeSet::from(["222222222222".to_owned()]))]);
        let inside = footprint(
            &["111111111111", "222222222222"],
            &["us-east-1"],
            &["AWS-RunShellScript"],
        );
        assert_eq!(grant.scope.excludes(&inside, &members), None);
        let other_account = footprint(&["111111111111", "333333333333"], &["us-east-1"], &[]);
        assert_eq!(
            grant.scope.excludes(&other_account, &members).as_deref(),
            Some("account 333333333333")
        );
        let other_region = footprint(&["111111111111"], &["eu-west-1"], &[]);
        assert_eq!(
            grant.scope.excludes(&other_region, &members).as_deref(),
            Some("region eu-west-1")
        );
        let other_document = footprint(&["111111111111"], &["us-east-1"], &["AWS-ApplyPatchBaseline"]);
        assert_eq!(
            grant.scope.excludes(&other_document, &members).as_deref(),
            Some("document AWS-ApplyPatchBaseline")
        );
        assert_eq!(
            out_of_scope("dev", Action::Submit, &[grant], "account 333333333333"),
            "scope: dev may submit only within accounts 111111111111; OUs ou-abcd-12345678; regions us-east-1; \
             documents AWS-Run*; this campaign reaches account 333333333333, outside it"
        );
        assert_eq!(Scope::default().excludes(&other_account, &HashMap::new()), None);
    }

    #[test]
    fn bad_grants_are_named() {
        let bad = |f: fn(&mut GrantEntry)| {
            let mut entry = GrantEntry {
                principals: vec!["x".into()],
                role: "viewer".into(),
                accounts: vec![],
                ous: vec![],
                regions: vec![],
                documents: vec![],
            };
            f(&mut entry);
            entry.grant("grants[3]").unwrap_err().to_string()
        };
        assert!(bad(|e| e.accounts = vec!["12".into()]).starts_with("grants[3].accounts[0]:"));
        assert!(bad(|e| e.ous = vec!["ou".into()]).starts_with("grants[3].ous[0]:"));
        assert!(bad(|e| e.regions = vec!["mars-1".into()]).starts_with("grants[3].regions[0]:"));
        assert!(bad(|e| e.role = "root".into()).starts_with("grants[3].role:"));
    }
}
