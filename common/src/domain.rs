//! Validated domain types: account ids, regions, partitions, role ARNs, OU ids,
//! SSM's rate syntax. Each parser says which rule a value breaks, so callers
//! can name the field and the rule in one message.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

/// A value broke a rule. The message is the rule, phrased to follow the value:
/// "'12345' is not a 12-digit account id".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(message: impl Into<String>) -> Invalid {
    Invalid(message.into())
}

/// A 12-digit AWS account id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(String);

impl AccountId {
    /// Parses an account id: exactly 12 ASCII digits.
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        if value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(value.to_owned()))
        } else {
            Err(invalid(format!("'{}' is not a 12-digit account id", clip(value))))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An AWS partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Partition {
    /// The commercial partition, "aws".
    Aws,
    /// China, "aws-cn".
    AwsCn,
    /// GovCloud (US), "aws-us-gov".
    AwsUsGov,
}

impl Partition {
    /// Parses "aws", "aws-cn" or "aws-us-gov".
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        match value {
            "aws" | "" => Ok(Self::Aws),
            "aws-cn" => Ok(Self::AwsCn),
            "aws-us-gov" => Ok(Self::AwsUsGov),
            other => Err(invalid(format!(
                "'{}' is not an AWS partition (aws, aws-cn, aws-us-gov)",
                clip(other)
            ))),
        }
    }

    /// The partition's name as it appears in ARNs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aws => "aws",
            Self::AwsCn => "aws-cn",
            Self::AwsUsGov => "aws-us-gov",
        }
    }
}

/// Every region name AWS has published, by partition. A name not here is
/// refused: "us-middle-7" looks like a region but is not one.
const REGIONS: &[(&str, Partition)] = &[
    ("af-south-1", Partition::Aws),
    ("ap-east-1", Partition::Aws),
    ("ap-east-2", Partition::Aws),
    ("ap-northeast-1", Partition::Aws),
    ("ap-northeast-2", Partition::Aws),
    ("ap-northeast-3", Partition::Aws),
    ("ap-south-1", Partition::Aws),
    ("ap-south-2", Partition::Aws),
    ("ap-southeast-1", Partition::Aws),
    ("ap-southeast-2", Partition::Aws),
    ("ap-southeast-3", Partition::Aws),
    ("ap-southeast-4", Partition::Aws),
    ("ap-southeast-5", Partition::Aws),
    ("ap-southeast-6", Partition::Aws),
    ("ap-southeast-7", Partition::Aws),
    ("ca-central-1", Partition::Aws),
    ("ca-west-1", Partition::Aws),
    ("eu-central-1", Partition::Aws),
    ("eu-central-2", Partition::Aws),
    ("eu-north-1", Partition::Aws),
    ("eu-south-1", Partition::Aws),
    ("eu-south-2", Partition::Aws),
    ("eu-west-1", Partition::Aws),
    ("eu-west-2", Partition::Aws),
    ("eu-west-3", Partition::Aws),
    ("il-central-1", Partition::Aws),
    ("me-central-1", Partition::Aws),
    ("me-south-1", Partition::Aws),
    ("mx-central-1", Partition::Aws),
    ("sa-east-1", Partition::Aws),
    ("us-east-1", Partition::Aws),
    ("us-east-2", Partition::Aws),
    ("us-west-1", Partition::Aws),
    ("us-west-2", Partition::Aws),
    ("cn-north-1", Partition::AwsCn),
    ("cn-northwest-1", Partition::AwsCn),
    ("us-gov-east-1", Partition::AwsUsGov),
    ("us-gov-west-1", Partition::AwsUsGov),
];

/// A real AWS region name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionName(String);

impl RegionName {
    /// Parses a region name; it must be one AWS has published.
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        if REGIONS.iter().any(|(name, _)| *name == value) {
            Ok(Self(value.to_owned()))
        } else {
            Err(invalid(format!(
                "'{}' is not an AWS region (for example us-east-1, eu-west-1)",
                clip(value)
            )))
        }
    }

    /// The region's partition.
    pub fn partition(&self) -> Partition {
        REGIONS
            .iter()
            .find(|(name, _)| *name == self.0)
            .map(|(_, partition)| *partition)
            .unwrap_or(Partition::Aws)
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Every known region of a partition.
    pub fn all_in(partition: Partition) -> impl Iterator<Item = &'static str> {
        REGIONS
            .iter()
            .filter(move |(_, p)| *p == partition)
            .map(|(name, _)| *name)
    }
}

impl fmt::Display for RegionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

static OU_ID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(ou-[0-9a-z]{4,32}-[a-z0-9]{8,32}|r-[0-9a-z]{4,32})$").expect("valid regex"));
static INSTANCE_ID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(i-([0-9a-f]{8}|[0-9a-f]{17})|mi-[0-9a-f]{17})$").expect("valid regex"));
static ROLE_NAME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[\w+=,.@-]{1,64}$").expect("valid regex"));
static ROLE_ARN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^arn:(aws|aws-cn|aws-us-gov):iam::(\d{12}):role/((?:[\x21-\x7e]*/)?)([\w+=,.@-]{1,64})$")
        .expect("valid regex")
});
static DOCUMENT_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^([a-zA-Z0-9_.-]{3,128}|arn:(aws|aws-cn|aws-us-gov):ssm:[a-z0-9-]+:\d{12}:document/[a-zA-Z0-9_.-]{3,128})$",
    )
    .expect("valid regex")
});
static DOCUMENT_VERSION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(\$LATEST|\$DEFAULT|[1-9][0-9]*)$").expect("valid regex"));

/// Checks an Organizations OU id ("ou-ab12-cd34ef56") or root id ("r-ab12").
pub fn check_ou_id(value: &str) -> Result<(), Invalid> {
    if OU_ID.is_match(value) {
        Ok(())
    } else {
        Err(invalid(format!(
            "'{}' is not an Organizations OU id (ou-xxxx-xxxxxxxx) or root id (r-xxxx)",
            clip(value)
        )))
    }
}

/// Checks an EC2 instance id ("i-0123456789abcdef0").
pub fn check_instance_id(value: &str) -> Result<(), Invalid> {
    if INSTANCE_ID.is_match(value) {
        Ok(())
    } else {
        Err(invalid(format!(
            "'{}' is not an instance id (i- and 8 or 17 hex digits)",
            clip(value)
        )))
    }
}

/// Checks an IAM role name.
pub fn check_role_name(value: &str) -> Result<(), Invalid> {
    if ROLE_NAME.is_match(value) {
        Ok(())
    } else {
        Err(invalid(format!(
            "'{}' is not an IAM role name (1 to 64 of letters, digits and +=,.@_-)",
            clip(value)
        )))
    }
}

/// A principal's name as an AssumeRole SourceIdentity (2 to 64 of
/// letters, digits and `_+=,.@-`): other characters become `-`, a name too
/// long is cut, one too short is padded with `-`.
pub fn source_identity(principal: &str) -> String {
    let mut identity: String = principal
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    while identity.len() < 2 {
        identity.push('-');
    }
    identity
}

/// Checks an ExternalId as STS accepts it.
pub fn check_external_id(value: &str) -> Result<(), Invalid> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_+=,.@:/-".contains(c);
    if (2..=1224).contains(&value.len()) && value.chars().all(allowed) {
        Ok(())
    } else {
        Err(invalid(
            "is not a valid ExternalId (2 to 1,224 of letters, digits and +=,.@:/-)",
        ))
    }
}

/// Checks an SSM document name or ARN.
pub fn check_document_name(value: &str) -> Result<(), Invalid> {
    if DOCUMENT_NAME.is_match(value) {
        Ok(())
    } else {
        Err(invalid(format!(
            "'{}' is not an SSM document name (3 to 128 of letters, digits and _.-) or document ARN",
            clip(value)
        )))
    }
}

/// Checks an SSM document version ("$DEFAULT", "$LATEST" or a number).
pub fn check_document_version(value: &str) -> Result<(), Invalid> {
    if DOCUMENT_VERSION.is_match(value) {
        Ok(())
    } else {
        Err(invalid(format!(
            "'{}' is not a document version ($DEFAULT, $LATEST or a number)",
            clip(value)
        )))
    }
}

/// An IAM role ARN, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleArn {
    /// The partition.
    pub partition: Partition,
    /// The account that owns the role.
    pub account: AccountId,
    /// The role's path, "/" when none.
    pub path: String,
    /// The role's name.
    pub name: String,
}

impl RoleArn {
    /// Parses "arn:aws:iam::123456789012:role/path/name".
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        let caps = ROLE_ARN.captures(value).ok_or_else(|| {
            invalid(format!(
                "'{}' is not an IAM role ARN (arn:<partition>:iam::<account>:role/<name>)",
                clip(value)
            ))
        })?;
        let path = format!("/{}", &caps[3]);
        Ok(Self {
            partition: Partition::parse(&caps[1])?,
            account: AccountId::parse(&caps[2])?,
            path,
            name: caps[4].to_owned(),
        })
    }

    /// Builds the role ARN of an account from a template with `{account}` and
    /// `{partition}`, or from a bare role name.
    pub fn from_template(template: &str, account: &AccountId, partition: Partition) -> Result<Self, Invalid> {
        if !template.contains("{account}") {
            return Err(invalid("must contain {account}"));
        }
        let arn = template
            .replace("{account}", account.as_str())
            .replace("{partition}", partition.as_str());
        Self::parse(&arn)
    }

    /// The role in an account with a plain name (no path).
    pub fn named(name: &str, account: &AccountId, partition: Partition) -> Result<Self, Invalid> {
        check_role_name(name)?;
        Ok(Self {
            partition,
            account: account.clone(),
            path: "/".into(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:iam::{}:role{}{}",
            self.partition.as_str(),
            self.account,
            self.path,
            self.name
        )
    }
}

/// SSM's rate syntax for MaxConcurrency and MaxErrors: a count or a
/// percentage of the targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// An absolute number.
    Count(u64),
    /// A percentage, 0 to 100.
    Percent(u8),
}

impl RateLimit {
    /// Parses "50" or "10%". `min` is the smallest count allowed (1 for
    /// concurrency, 0 for errors).
    pub fn parse(value: &str, min: u64) -> Result<Self, Invalid> {
        let rule = || {
            invalid(format!(
                "'{}' is not a count of at least {min} or a percentage from {min}% to 100% (for example \"50\" or \"10%\")",
                clip(value)
            ))
        };
        let value = value.trim();
        if let Some(percent) = value.strip_suffix('%') {
            let percent: u8 = percent.parse().map_err(|_| rule())?;
            if percent > 100 || u64::from(percent) < min {
                return Err(rule());
            }
            Ok(Self::Percent(percent))
        } else {
            let count: u64 = value.parse().map_err(|_| rule())?;
            if count < min {
                return Err(rule());
            }
            Ok(Self::Count(count))
        }
    }

    /// Concurrency against `total` targets: a percentage rounds up and never
    /// goes below 1, so "10%" of 5 targets still runs one at a time.
    pub fn concurrency(self, total: u64) -> u64 {
        match self {
            Self::Count(count) => count.max(1),
            Self::Percent(percent) => (u64::from(percent) * total).div_ceil(100).max(1),
        }
    }

    /// Error threshold against `total` targets: a percentage rounds down, so
    /// "10%" of 50 allows 5 errors and the 6th stops the rollout.
    pub fn errors(self, total: u64) -> u64 {
        match self {
            Self::Count(count) => count,
            Self::Percent(percent) => u64::from(percent) * total / 100,
        }
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count(count) => write!(f, "{count}"),
            Self::Percent(percent) => write!(f, "{percent}%"),
        }
    }
}

/// The role session name for a campaign. CloudTrail in the target account
/// shows it, so a reviewer can tie every call back to the campaign.
pub fn session_name(campaign_id: &str) -> String {
    let mut name = format!("muster-{campaign_id}");
    // RoleSessionName allows 64 characters of [\w+=,.@-].
    name.retain(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    name.truncate(64);
    name
}

/// Shortens a value quoted back in an error message, so that a 1 MB input does
/// not become a 1 MB error.
pub fn clip(value: &str) -> String {
    const MAX: usize = 64;
    if value.chars().count() <= MAX {
        value.to_owned()
    } else {
        let head: String = value.chars().take(MAX).collect();
        format!("{head}... ({} characters)", value.chars().count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_twelve_digits() {
        assert!(AccountId::parse("123456789012").is_ok());
        let err = AccountId::parse("12345").unwrap_err();
        assert_eq!(err.to_string(), "'12345' is not a 12-digit account id");
        assert!(AccountId::parse("12345678901a").is_err());
        assert!(AccountId::parse("1234567890123").is_err());
    }

    #[test]
    fn regions_must_exist() {
        assert!(RegionName::parse("eu-west-1").is_ok());
        assert_eq!(RegionName::parse("cn-north-1").unwrap().partition(), Partition::AwsCn);
        let err = RegionName::parse("us-middle-7").unwrap_err();
        assert!(err.to_string().contains("'us-middle-7' is not an AWS region"));
    }

    #[test]
    fn role_arns_round_trip_with_paths_and_partitions() {
        let arn = RoleArn::parse("arn:aws-us-gov:iam::123456789012:role/ops/team/muster-execution").unwrap();
        assert_eq!(arn.partition, Partition::AwsUsGov);
        assert_eq!(arn.path, "/ops/team/");
        assert_eq!(arn.name, "muster-execution");
        assert_eq!(
            arn.to_string(),
            "arn:aws-us-gov:iam::123456789012:role/ops/team/muster-execution"
        );
        let account = AccountId::parse("222222222222").unwrap();
        let built = RoleArn::from_template(
            "arn:{partition}:iam::{account}:role/muster-execution",
            &account,
            Partition::AwsCn,
        )
        .unwrap();
        assert_eq!(built.to_string(), "arn:aws-cn:iam::222222222222:role/muster-execution");
        assert!(RoleArn::from_template("arn:aws:iam::111111111111:role/x", &account, Partition::Aws).is_err());
        assert!(RoleArn::parse("arn:aws:iam::12345:role/x").is_err());
    }

    #[test]
    fn rate_syntax_follows_ssm() {
        assert_eq!(RateLimit::parse("50", 1), Ok(RateLimit::Count(50)));
        assert_eq!(RateLimit::parse("10%", 1), Ok(RateLimit::Percent(10)));
        assert!(RateLimit::parse("110%", 1).is_err());
        assert!(RateLimit::parse("0", 1).is_err());
        assert_eq!(RateLimit::parse("0", 0), Ok(RateLimit::Count(0)));
        assert!(RateLimit::parse("-3", 0).is_err());
        assert!(RateLimit::parse("ten", 0).is_err());
        // "10%" of 50 allows 5 errors; the 6th stops the rollout.
        assert_eq!(RateLimit::Percent(10).errors(50), 5);
        assert_eq!(RateLimit::Percent(10).concurrency(5), 1);
        assert_eq!(RateLimit::Percent(25).concurrency(10), 3);
    }

    #[test]
    fn principals_become_source_identities_sts_accepts() {
        assert_eq!(source_identity("ci-pipeline"), "ci-pipeline");
        assert_eq!(source_identity("alice@example.com"), "alice@example.com");
        assert_eq!(source_identity("Jane Doe/ops"), "Jane-Doe-ops");
        assert_eq!(source_identity("x"), "x-");
        assert_eq!(source_identity(&"a".repeat(80)).len(), 64);
    }

    #[test]
    fn session_names_fit_sts() {
        let name = session_name("0193a4b2-7c1d-7e2f-8a9b-0c1d2e3f4a5b");
        assert_eq!(name, "muster-0193a4b2-7c1d-7e2f-8a9b-0c1d2e3f4a5b");
        assert!(session_name(&"x".repeat(100)).len() <= 64);
    }

    #[test]
    fn huge_values_are_clipped_in_messages() {
        let err = AccountId::parse(&"9".repeat(1_000_000)).unwrap_err();
        assert!(err.to_string().len() < 200);
    }
}
