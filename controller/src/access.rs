//! The ExternalIds of target accounts, kept by the controller.
//!
//! An execution role's trust policy demands an ExternalId, which is a shared
//! secret between muster and the target account. The controller holds it
//! (one for every account, or one per set of accounts or OUs) and hands it
//! to the worker only inside a lease, over mTLS. Submitters never send it
//! unless the configuration allows it, and it never appears in an API
//! answer, a log, a metric label or an export: the store keeps, per scope,
//! only which configured ExternalId applies (its name).

use muster_common::config::ConfigError;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use muster_common::domain::{AccountId, check_external_id, check_ou_id};
use serde::Deserialize;

/// The ExternalId of the default entry.
pub const DEFAULT_REF: &str = "default";
/// The ExternalId the submitter gave (when the configuration allows it).
pub const SUBMITTED_REF: &str = "submitted";

/// The `[access]` table of the configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessFile {
    /// The ExternalId of every account no entry names (`--external-id`).
    pub external_id: Option<String>,
    /// Whether a submitter may give the ExternalId in its spec (default
    /// false: only the controller's configuration holds them).
    #[serde(default)]
    pub allow_submitted_external_id: bool,
    /// ExternalIds of some accounts and OUs.
    #[serde(default)]
    pub external_ids: Vec<ExternalIdEntry>,
}

/// One ExternalId and where it applies.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalIdEntry {
    /// Its name (what the store records; never the value).
    pub name: String,
    /// Accounts it applies to.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// OUs (and roots) whose accounts, at any depth, it applies to; an entry
    /// naming the account wins over one naming its OU.
    #[serde(default)]
    pub ous: Vec<String>,
    /// The ExternalId.
    pub value: String,
}

impl std::fmt::Debug for ExternalIdEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalIdEntry")
            .field("name", &self.name)
            .field("accounts", &self.accounts)
            .field("ous", &self.ous)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Entry {
    accounts: BTreeSet<String>,
    ous: Vec<String>,
    value: String,
}

/// The configured ExternalIds.
#[derive(Clone, Default)]
pub struct ExternalIds {
    default: Option<String>,
    by_name: BTreeMap<String, Entry>,
    /// Whether a submitter may give one.
    pub allow_submitted: bool,
}

impl std::fmt::Debug for ExternalIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalIds")
            .field("default", &self.default.is_some())
            .field("entries", &self.by_name.keys().collect::<Vec<_>>())
            .field("allow_submitted", &self.allow_submitted)
            .finish()
    }
}

impl ExternalIds {
    /// From the configuration; names what is wrong (never the value).
    pub fn new(file: &AccessFile) -> Result<Self, ConfigError> {
        if let Some(value) = &file.external_id
            && let Err(e) = check_external_id(value)
        {
            return Err(ConfigError::invalid("access.external_id", e));
        }
        let mut by_name = BTreeMap::new();
        for (i, entry) in file.external_ids.iter().enumerate() {
            let field = format!("access.external_ids[{i}]");
            if entry.name.is_empty()
                || entry.name.len() > 64
                || !entry
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                || entry.name == DEFAULT_REF
                || entry.name == SUBMITTED_REF
            {
                return Err(ConfigError::invalid(
                    &format!("{field}.name"),
                    format!("1 to 64 of A-Z a-z 0-9 . _ -, and not '{DEFAULT_REF}' or '{SUBMITTED_REF}'"),
                ));
            }
            if let Err(e) = check_external_id(&entry.value) {
                return Err(ConfigError::invalid(&format!("{field}.value"), e));
            }
            if entry.accounts.is_empty() && entry.ous.is_empty() {
                return Err(ConfigError::invalid(&field, "names no account and no OU"));
            }
            for (j, account) in entry.accounts.iter().enumerate() {
                AccountId::parse(account).map_err(|e| ConfigError::invalid(&format!("{field}.accounts[{j}]"), e))?;
            }
            for (j, ou) in entry.ous.iter().enumerate() {
                check_ou_id(ou).map_err(|e| ConfigError::invalid(&format!("{field}.ous[{j}]"), e))?;
            }
            let new = Entry {
                accounts: entry.accounts.iter().cloned().collect(),
                ous: entry.ous.clone(),
                value: entry.value.clone(),
            };
            if by_name.insert(entry.name.clone(), new).is_some() {
                return Err(ConfigError::invalid(
                    &format!("{field}.name"),
                    format!("'{}' is configured twice", entry.name),
                ));
            }
        }
        let mut claimed: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, entry) in &by_name {
            for account in &entry.accounts {
                if let Some(other) = claimed.insert(account, name) {
                    return Err(ConfigError::invalid(
                        "access.external_ids",
                        format!("account {account} is in both '{other}' and '{name}'"),
                    ));
                }
            }
        }
        Ok(Self {
            default: file.external_id.clone(),
            by_name,
            allow_submitted: file.allow_submitted_external_id,
        })
    }

    /// Every OU an entry names, for [`Self::refs`]' membership.
    pub fn ous(&self) -> BTreeSet<String> {
        self.by_name.values().flat_map(|e| e.ous.iter().cloned()).collect()
    }

    /// Which ExternalId applies to each account: an entry naming the
    /// account, else one naming an OU that holds it (`members` gives each
    /// OU's accounts; the first entry by name wins), else the default, else
    /// none (""; the role then needs no ExternalId).
    pub fn refs(&self, accounts: &[String], members: &HashMap<String, BTreeSet<String>>) -> BTreeMap<String, String> {
        accounts
            .iter()
            .map(|account| {
                let named = self
                    .by_name
                    .iter()
                    .find(|(_, e)| e.accounts.contains(account))
                    .or_else(|| {
                        self.by_name.iter().find(|(_, e)| {
                            e.ous
                                .iter()
                                .any(|ou| members.get(ou).is_some_and(|m| m.contains(account)))
                        })
                    })
                    .map(|(name, _)| name.clone());
                let reference = named.unwrap_or_else(|| {
                    if self.default.is_some() {
                        DEFAULT_REF.to_owned()
                    } else {
                        String::new()
                    }
                });
                (account.clone(), reference)
            })
            .collect()
    }

    /// The ExternalId a reference names; `submitted` is the campaign's own.
    /// None when the reference is no longer configured.
    pub fn value<'a>(&'a self, reference: &str, submitted: &'a str) -> Option<&'a str> {
        match reference {
            "" => Some(""),
            DEFAULT_REF => self.default.as_deref(),
            SUBMITTED_REF => Some(submitted),
            name => self.by_name.get(name).map(|e| e.value.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, accounts: &[&str], ous: &[&str], value: &str) -> ExternalIdEntry {
        ExternalIdEntry {
            name: name.into(),
            accounts: accounts.iter().map(|s| (*s).to_owned()).collect(),
            ous: ous.iter().map(|s| (*s).to_owned()).collect(),
            value: value.into(),
        }
    }

    const A: &str = "111111111111";
    const B: &str = "222222222222";
    const C: &str = "333333333333";
    const OU: &str = "ou-abcd-12345678";

    #[test]
    fn an_account_entry_wins_over_its_ou_and_the_ou_over_the_default() {
        let ids = ExternalIds::new(&AccessFile {
            external_id: Some("everyone".into()),
            allow_submitted_external_id: false,
            external_ids: vec![
                entry("prod", &[A], &[], "prod-secret"),
                entry("ou", &[], &[OU], "ou-secret"),
            ],
        })
        .unwrap();
        assert_eq!(ids.ous(), BTreeSet::from([OU.to_owned()]));
        let members = HashMap::from([(OU.to_owned(), BTreeSet::from([A.to_owned(), B.to_owned()]))]);
        let refs = ids.refs(&[A.into(), B.into(), C.into()], &members);
        assert_eq!(
            refs.values().map(String::as_str).collect::<Vec<_>>(),
            ["prod", "ou", DEFAULT_REF]
        );
        assert_eq!(ids.value("prod", ""), Some("prod-secret"));
        assert_eq!(ids.value(DEFAULT_REF, ""), Some("everyone"));
        assert_eq!(ids.value(SUBMITTED_REF, "theirs"), Some("theirs"));
        assert_eq!(ids.value("gone", ""), None);
        // Without a default, an account no entry names needs none.
        let none = ExternalIds::new(&AccessFile::default()).unwrap();
        assert_eq!(none.refs(&[C.into()], &HashMap::new())[C], "");
        assert!(!format!("{ids:?}").contains("secret"), "{ids:?}");
    }

    #[test]
    fn bad_entries_are_named_without_their_value() {
        let err = |file: AccessFile| ExternalIds::new(&file).unwrap_err().to_string();
        let with = |entries: Vec<ExternalIdEntry>| AccessFile {
            external_ids: entries,
            ..Default::default()
        };
        assert_eq!(
            err(with(vec![entry("x", &[], &[], "abcdef")])),
            "access.external_ids[0]: names no account and no OU"
        );
        assert!(err(with(vec![entry("default", &[A], &[], "abcdef")])).starts_with("access.external_ids[0].name:"));
        assert!(err(with(vec![entry("x", &["12"], &[], "abcdef")])).starts_with("access.external_ids[0].accounts[0]:"));
        assert!(err(with(vec![entry("x", &[], &["ou-?"], "abcdef")])).starts_with("access.external_ids[0].ous[0]:"));
        let bad_value = err(with(vec![entry("x", &[A], &[], "bad value!")]));
        assert!(bad_value.starts_with("access.external_ids[0].value:"), "{bad_value}");
        assert!(
            !bad_value.contains("bad value!"),
            "the value is never shown: {bad_value}"
        );
        assert_eq!(
            err(with(vec![
                entry("x", &[A], &[], "abcdef"),
                entry("y", &[A], &[], "abcdef")
            ])),
            "access.external_ids: account 111111111111 is in both 'x' and 'y'"
        );
    }
}
