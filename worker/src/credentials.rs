//! Credentials for target accounts: one shared STS client, one cached entry
//! per (role ARN, external id, session name), refreshed well before expiry.
//!
//! Sessions assumed from the worker's own role are role-chained, which AWS
//! caps at one hour. Refreshing at least ten minutes before expiry means a
//! ten-hour campaign never sees ExpiredToken. Nothing here ever logs a secret:
//! `Credentials`' Debug output is redacted, and errors carry only AWS's
//! error code and message.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, error::CredentialsError, future};
use muster_common::ratelimit::{ApiLimiter, LimitKey, ShareGuard};
use muster_common::retry::{self, ErrorClass};

use crate::lru_map::LruMap;

/// Refresh this long before expiry (or two thirds into shorter sessions).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(10 * 60);
/// The session tag naming the campaign.
pub const CAMPAIGN_TAG: &str = "muster:campaign";
/// Most cached roles; the least recently used go first.
const MAX_ENTRIES: usize = 10_000;

/// Which role session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleKey {
    /// The role to assume.
    pub role_arn: String,
    /// ExternalId, when the trust policy demands one.
    pub external_id: Option<String>,
    /// "muster-<campaign id>", so CloudTrail ties every call to its campaign.
    pub session_name: String,
    /// Who asked for the campaign, as the session's SourceIdentity (CloudTrail
    /// records it on every call); none when the task names nobody.
    pub source_identity: Option<String>,
    /// The campaign, as the session tag `muster:campaign`.
    pub campaign_id: String,
    /// Requested session length.
    pub duration_seconds: u32,
}

impl RoleKey {
    /// The account the role is in.
    pub fn account(&self) -> &str {
        self.role_arn.split(':').nth(4).unwrap_or_default()
    }
}

/// AssumeRole failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("assume role {role_arn} in account {account}: {message}")]
pub struct AssumeError {
    /// The role.
    pub role_arn: String,
    /// Its account.
    pub account: String,
    /// What kind of failure.
    pub class: ErrorClass,
    /// AWS's code and message.
    pub message: String,
}

struct Held {
    credentials: Credentials,
    /// When to get new ones.
    refresh_at: SystemTime,
}

struct Entry {
    held: tokio::sync::Mutex<Option<Held>>,
}

/// AssumeRole calls per second the whole fleet makes, unless told otherwise
/// (the hub account's quota, shared by every worker).
pub const DEFAULT_ASSUME_ROLE_RATE: f64 = 50.0;
/// How long throttling may delay one AssumeRole before it fails.
const ASSUME_THROTTLE_BUDGET: Duration = Duration::from_secs(5 * 60);
/// Attempts for transient faults of AssumeRole.
const ASSUME_ATTEMPTS: u32 = 6;

/// AssumeRole's quota is the hub account's, shared by every target account:
/// one bucket for all of them. Paced as a call that changes something: at
/// the share held now (which shrinks as workers join), from one token.
fn hub_key() -> LimitKey {
    LimitKey {
        account: "hub".into(),
        region: String::new(),
        api: "AssumeRole",
        mutates: true,
    }
}

/// The cache.
pub struct CredentialCache {
    sts: aws_sdk_sts::Client,
    entries: LruMap<RoleKey, Arc<Entry>>,
    refreshes: AtomicU64,
    /// Paces AssumeRole for the whole process, learning STS's quota.
    pace: Arc<ApiLimiter>,
    /// The fleet's AssumeRole rate.
    rate: f64,
    /// This worker's share of it: the fleet's size it was computed for, and
    /// the share held.
    share: Mutex<(u32, ShareGuard)>,
    /// The fleet's size as the controller last said (0: not said).
    workers: Arc<AtomicU32>,
}

impl CredentialCache {
    /// A cache over one STS client (the worker's own credentials), making
    /// at most `assume_role_rate` AssumeRole calls per second (fewer when STS
    /// throttles them, or when the fleet shares them: see
    /// [`sharing_with`](Self::sharing_with)).
    pub fn new(sts: aws_sdk_sts::Client, assume_role_rate: f64) -> Self {
        let pace = Arc::new(ApiLimiter::default());
        let key = hub_key();
        let share = pace.share(&key.account, &key.region, assume_role_rate);
        Self {
            sts,
            entries: LruMap::new(MAX_ENTRIES),
            refreshes: AtomicU64::new(0),
            pace,
            rate: assume_role_rate,
            share: Mutex::new((1, share)),
            workers: Arc::default(),
        }
    }

    /// Takes this worker's share of the rate, which the fleet shares: the
    /// rate divided by `workers` (the controller's count of the workers
    /// calling it; 0, not said yet, counts as one).
    pub fn sharing_with(mut self, workers: Arc<AtomicU32>) -> Self {
        self.workers = workers;
        self
    }

    /// AssumeRole calls per second this worker makes now, at most.
    pub fn pace(&self) -> f64 {
        self.share_now();
        self.pace.rate(&hub_key()).unwrap_or(self.rate)
    }

    /// Holds the share of the fleet's rate for the fleet's size now.
    fn share_now(&self) {
        let workers = self.workers.load(Ordering::Relaxed).max(1);
        let mut share = self.share.lock().expect("share lock");
        if share.0 != workers {
            let key = hub_key();
            // The new share is taken before the old one goes, so the bucket
            // never loses its budget in between.
            let new = self
                .pace
                .share(&key.account, &key.region, self.rate / f64::from(workers));
            *share = (workers, new);
        }
    }

    fn entry(&self, key: &RoleKey) -> Arc<Entry> {
        self.entries.get_or_insert_with(key, || {
            Arc::new(Entry {
                held: tokio::sync::Mutex::new(None),
            })
        })
    }

    /// Credentials for `key`, assuming the role when there are none or they
    /// are due for refresh. Concurrent callers share one AssumeRole.
    pub async fn get(&self, key: &RoleKey) -> Result<Credentials, AssumeError> {
        let entry = self.entry(key);
        let mut held = entry.held.lock().await;
        if let Some(current) = held.as_ref()
            && SystemTime::now() < current.refresh_at
        {
            return Ok(current.credentials.clone());
        }
        let fresh = self.assume(key).await?;
        let credentials = fresh.credentials.clone();
        *held = Some(fresh);
        Ok(credentials)
    }

    /// Drops cached credentials (after AWS called them expired).
    pub async fn invalidate(&self, key: &RoleKey) {
        let entry = self.entry(key);
        *entry.held.lock().await = None;
    }

    /// How many times a role was assumed.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    async fn assume(&self, key: &RoleKey) -> Result<Held, AssumeError> {
        let error = |class, message: String| AssumeError {
            role_arn: key.role_arn.clone(),
            account: key.account().to_owned(),
            class,
            message,
        };
        let key_of_pace = hub_key();
        let started = Instant::now();
        let (mut transient, mut throttles) = (0, 0);
        let output = loop {
            self.share_now();
            self.pace.acquire(&key_of_pace).await;
            let result = self
                .sts
                .assume_role()
                .role_arn(&key.role_arn)
                .role_session_name(&key.session_name)
                .set_external_id(key.external_id.clone())
                .set_source_identity(key.source_identity.clone())
                .set_tags((!key.campaign_id.is_empty()).then(|| {
                    vec![
                        aws_sdk_sts::types::Tag::builder()
                            .key(CAMPAIGN_TAG)
                            .value(&key.campaign_id)
                            .build()
                            .expect("a tag with a key and a value"),
                    ]
                }))
                .duration_seconds(key.duration_seconds as i32)
                .send()
                .await;
            let e = match result {
                Ok(output) => {
                    self.pace.succeeded(&key_of_pace);
                    break output;
                }
                Err(e) => e,
            };
            let class = retry::classify(&e);
            // Throttling is the hub's quota, not this role's fault: it slows
            // every AssumeRole of the process and waits, within a budget.
            let wait = match class {
                ErrorClass::Throttled if started.elapsed() < ASSUME_THROTTLE_BUDGET => {
                    self.pace.throttled(&key_of_pace);
                    throttles += 1;
                    retry::backoff(throttles, Duration::from_millis(200), Duration::from_secs(10))
                }
                _ if class.is_retryable() && class != ErrorClass::Throttled && transient + 1 < ASSUME_ATTEMPTS => {
                    transient += 1;
                    retry::backoff(transient, Duration::from_millis(200), Duration::from_secs(10))
                }
                _ => return Err(error(class, retry::describe(&e))),
            };
            tokio::time::sleep(wait).await;
        };
        let aws = output
            .credentials
            .ok_or_else(|| error(ErrorClass::Final, "AssumeRole answered without credentials".into()))?;
        let expires =
            SystemTime::try_from(aws.expiration).unwrap_or_else(|_| SystemTime::now() + Duration::from_secs(900));
        let now = SystemTime::now();
        let lifetime = expires.duration_since(now).unwrap_or_default();
        let refresh_at = expires - refresh_margin(lifetime);
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(role = %key.role_arn, session = %key.session_name, lifetime_s = lifetime.as_secs(), "role assumed");
        Ok(Held {
            credentials: Credentials::new(
                aws.access_key_id,
                aws.secret_access_key,
                Some(aws.session_token),
                Some(expires),
                "muster-assume-role",
            ),
            refresh_at,
        })
    }

    /// A provider for SDK clients acting as `key`.
    pub fn provider(self: &Arc<Self>, key: RoleKey) -> RoleProvider {
        RoleProvider {
            cache: self.clone(),
            key,
        }
    }
}

/// How long before expiry to refresh: ten minutes, or a third of the
/// lifetime in when sessions are shorter (only the sandbox hands those out).
pub fn refresh_margin(lifetime: Duration) -> Duration {
    REFRESH_MARGIN.min(lifetime * 2 / 3)
}

/// An SDK credentials provider backed by the cache. SDK clients using it must
/// not cache identities themselves (see `target.rs`), so every request asks
/// here and gets the refreshed session in time.
#[derive(Clone)]
pub struct RoleProvider {
    cache: Arc<CredentialCache>,
    key: RoleKey,
}

impl std::fmt::Debug for RoleProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleProvider")
            .field("role_arn", &self.key.role_arn)
            .finish()
    }
}

impl ProvideCredentials for RoleProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            self.cache
                .get(&self.key)
                .await
                .map_err(CredentialsError::provider_error)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_comes_ten_minutes_early_or_a_third_into_short_sessions() {
        assert_eq!(refresh_margin(Duration::from_secs(3600)), Duration::from_secs(600));
        assert_eq!(refresh_margin(Duration::from_secs(900)), Duration::from_secs(600));
        assert_eq!(refresh_margin(Duration::from_secs(30)), Duration::from_secs(20));
    }

    #[test]
    fn a_worker_paces_assume_role_at_its_share_of_the_fleet_s_rate() {
        let config = muster_common::aws::fixed(
            "http://127.0.0.1:9",
            "us-east-1",
            Credentials::new("AKIDTEST", "secret", None, None, "test"),
            muster_common::aws::no_sdk_retries(),
        );
        let workers = Arc::new(AtomicU32::new(0));
        let cache = CredentialCache::new(aws_sdk_sts::Client::new(&config), 50.0).sharing_with(workers.clone());
        assert_eq!(cache.pace(), 50.0, "alone until the controller says otherwise");
        workers.store(4, Ordering::Relaxed);
        assert_eq!(cache.pace(), 12.5, "a quarter among four");
        workers.store(1, Ordering::Relaxed);
        assert_eq!(cache.pace(), 50.0, "the whole rate once the others left");
    }

    #[test]
    fn the_account_comes_from_the_role_arn() {
        let key = RoleKey {
            role_arn: "arn:aws:iam::222222222222:role/muster-execution".into(),
            external_id: None,
            session_name: "muster-c".into(),
            source_identity: None,
            campaign_id: "c".into(),
            duration_seconds: 3600,
        };
        assert_eq!(key.account(), "222222222222");
    }
}
