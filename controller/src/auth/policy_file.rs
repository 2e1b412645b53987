//! The callers and grants a configuration names: the entries of flags and
//! the configuration file, the policy file (local or in S3) and its checks.
//! Each broken rule is a [`ConfigError`] naming the field.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use muster_common::config::ConfigError;
use serde::Deserialize;

use crate::policy::{Grant, GrantEntry, Role, Scope};

/// A token the controller accepts, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who holds it (in logs and as `submitted_by`).
    pub name: String,
    /// Lowercase hex SHA-256 of the token (`muster-controller hash-token`).
    pub sha256: String,
    /// Its role everywhere (flags and the configuration file); in the
    /// policy file, grants give roles instead.
    #[serde(default, alias = "role")]
    pub permission: Option<String>,
    /// When it stops being accepted (RFC 3339), if ever.
    #[serde(default)]
    pub expires: Option<String>,
}

/// A client certificate the controller accepts: its subject common name.
/// The certificate must chain to the client CA.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// The certificate's subject CN (in logs and as `submitted_by`).
    pub name: String,
    /// Its role everywhere (flags and the configuration file).
    #[serde(default, alias = "role")]
    pub permission: Option<String>,
}

impl TokenEntry {
    /// Parses `name:role:sha256` (the `--api-token` form; `read` and
    /// `submit` still name viewer and operator).
    pub fn parse(field: &str, text: &str) -> Result<Self, ConfigError> {
        let mut parts = text.splitn(3, ':');
        let (Some(name), Some(role), Some(sha256)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ConfigError::invalid(
                field,
                format!("'{}' is not NAME:ROLE:SHA256", clip(text)),
            ));
        };
        Role::parse(field, role)?;
        Ok(Self {
            name: name.trim().to_owned(),
            sha256: sha256.trim().to_owned(),
            permission: Some(role.trim().to_owned()),
            expires: None,
        })
    }
}

impl ClientEntry {
    /// Parses `common-name:role` (the `--api-client` form).
    pub fn parse(field: &str, text: &str) -> Result<Self, ConfigError> {
        let Some((name, role)) = text.rsplit_once(':') else {
            return Err(ConfigError::invalid(
                field,
                format!("'{}' is not COMMON_NAME:ROLE", clip(text)),
            ));
        };
        Role::parse(field, role)?;
        Ok(Self {
            name: name.trim().to_owned(),
            permission: Some(role.trim().to_owned()),
        })
    }
}

/// The policy file: callers and their grants.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Bearer tokens.
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
    /// Client certificates.
    #[serde(default)]
    pub clients: Vec<ClientEntry>,
    /// Roles within scopes.
    #[serde(default)]
    pub grants: Vec<GrantEntry>,
    /// Which campaigns wait for an approval.
    #[serde(default)]
    pub approvals: Vec<crate::policy::ApprovalEntry>,
}

pub(super) fn clip(text: &str) -> String {
    muster_common::domain::clip(text)
}

/// A token as held: its name and when it expires (ms since the epoch).
#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) name: String,
    pub(super) expires_ms: Option<i64>,
}

/// Callers and grants from one source.
#[derive(Debug, Clone, Default)]
pub(super) struct Callers {
    pub(super) tokens: HashMap<String, Token>,
    pub(super) clients: HashSet<String>,
    pub(super) grants: HashMap<String, Vec<Grant>>,
    /// Grants of AWS identities, by ARN pattern.
    pub(super) arn_grants: Vec<(String, Grant)>,
    /// Which campaigns wait for an approval, in the file's order.
    pub(super) approvals: Vec<crate::policy::ApprovalRule>,
}

impl Callers {
    /// From entries; `prefix` names the source in errors ("auth" or
    /// "policy"). Entries with a role get that role everywhere.
    pub(super) fn new(
        prefix: &str,
        tokens: &[TokenEntry],
        clients: &[ClientEntry],
        grants: &[GrantEntry],
    ) -> Result<Self, ConfigError> {
        let mut callers = Self::default();
        for (i, entry) in tokens.iter().enumerate() {
            let field = format!("{prefix}.tokens[{i}]");
            check_name(&field, &entry.name)?;
            let sha = entry.sha256.to_ascii_lowercase();
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::invalid(
                    &format!("{field}.sha256"),
                    "must be the 64 hex digits of the token's SHA-256 (muster-controller hash-token)",
                ));
            }
            let expires_ms = entry
                .expires
                .as_deref()
                .map(|text| {
                    chrono::DateTime::parse_from_rfc3339(text)
                        .map(|t| t.timestamp_millis())
                        .map_err(|_| {
                            ConfigError::invalid(
                                &format!("{field}.expires"),
                                format!("'{}' is not an RFC 3339 time", clip(text)),
                            )
                        })
                })
                .transpose()?;
            let token = Token {
                name: entry.name.clone(),
                expires_ms,
            };
            if callers.tokens.insert(sha, token).is_some() {
                return Err(ConfigError::invalid(
                    &format!("{field}.sha256"),
                    "the same token is configured twice",
                ));
            }
            callers.grant_role(&format!("{field}.permission"), &entry.name, entry.permission.as_deref())?;
        }
        for (i, entry) in clients.iter().enumerate() {
            let field = format!("{prefix}.clients[{i}]");
            check_name(&field, &entry.name)?;
            if !callers.clients.insert(entry.name.clone()) {
                return Err(ConfigError::invalid(
                    &format!("{field}.name"),
                    format!("'{}' is configured twice", entry.name),
                ));
            }
            callers.grant_role(&format!("{field}.permission"), &entry.name, entry.permission.as_deref())?;
        }
        for (i, entry) in grants.iter().enumerate() {
            let field = format!("{prefix}.grants[{i}]");
            let grant = entry.grant(&field)?;
            if entry.principals.is_empty() {
                return Err(ConfigError::invalid(&format!("{field}.principals"), "names nobody"));
            }
            for (j, name) in entry.principals.iter().enumerate() {
                let field = format!("{field}.principals[{j}]");
                if name.starts_with("arn:") {
                    crate::signin::check_arn_pattern(&field, name)?;
                    callers.arn_grants.push((name.clone(), grant.clone()));
                } else {
                    check_name(&field, name)?;
                    callers.grants.entry(name.clone()).or_default().push(grant.clone());
                }
            }
        }
        Ok(callers)
    }

    fn grant_role(&mut self, field: &str, name: &str, role: Option<&str>) -> Result<(), ConfigError> {
        if let Some(role) = role {
            let grant = Grant {
                role: Role::parse(field, role)?,
                scope: Scope::default(),
            };
            self.grants.entry(name.to_owned()).or_default().push(grant);
        }
        Ok(())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.clients.is_empty()
    }

    /// The grants of ARN patterns that match `arn`.
    pub(super) fn grants_of_arn(&self, arn: &str) -> impl Iterator<Item = &Grant> {
        self.arn_grants
            .iter()
            .filter(move |(pattern, _)| crate::signin::arn_matches(pattern, arn))
            .map(|(_, grant)| grant)
    }
}

/// Where the policy file is: a local path, or an S3 object
/// (`s3://bucket/key`), as a controller on Fargate keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// A file.
    File(PathBuf),
    /// An S3 object, read with the controller's own credentials.
    S3 {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
}

impl PolicySource {
    /// `s3://bucket/key`, or a path.
    pub fn parse(path: &Path) -> Result<Self, ConfigError> {
        let text = path.to_string_lossy();
        let Some(rest) = text.strip_prefix("s3://") else {
            return Ok(Self::File(path.to_path_buf()));
        };
        match rest.split_once('/') {
            Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() && !key.ends_with('/') => Ok(Self::S3 {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            }),
            _ => Err(ConfigError::invalid(
                "policy",
                format!("'{}' is not s3://BUCKET/KEY", clip(&text)),
            )),
        }
    }
}

impl std::fmt::Display for PolicySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

/// Checks a policy file's text.
pub(super) fn parse_policy(source: &PolicySource, text: &str) -> Result<Callers, ConfigError> {
    let file: PolicyFile =
        toml::from_str(text).map_err(|e| ConfigError::invalid("policy", format!("{source}: {e}")))?;
    let mut callers = Callers::new("policy", &file.tokens, &file.clients, &file.grants)?;
    let mut names = HashSet::new();
    for (i, entry) in file.approvals.iter().enumerate() {
        let field = format!("policy.approvals[{i}]");
        let rule = entry.rule(&field)?;
        if !names.insert(rule.name.clone()) {
            return Err(ConfigError::invalid(
                &format!("{field}.name"),
                format!("'{}' names two rules", rule.name),
            ));
        }
        callers.approvals.push(rule);
    }
    Ok(callers)
}

fn check_name(field: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(ConfigError::invalid(
            &format!("{field}.name"),
            "must be 1 to 128 printable characters",
        ));
    }
    Ok(())
}
