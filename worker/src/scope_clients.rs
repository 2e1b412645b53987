//! AWS in one scope (account, region) of a task: SDK clients acting with the
//! execution role, and the one function every call goes through, which rate
//! limits per (account, region, API), retries what is worth retrying, and
//! counts what happened.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_config::identity::IdentityCache;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use muster_common::ratelimit::{ApiLimiter, LimitKey};
use muster_common::retry::{self, ErrorClass, HttpStatus};
use tracing::Instrument as _;

use crate::api::Api;
use crate::credentials::{CredentialCache, RoleKey};
use crate::lru_map::LruMap;
use crate::stats::Stats;

/// Most cached [`Target`]s; past this, the least recently used goes.
const MAX_TARGETS: usize = 1_024;

/// How long throttling may delay one call before the task gives up (and the
/// controller retries it later). Throttling never fails a target by itself.
const THROTTLE_BUDGET: Duration = Duration::from_secs(15 * 60);
/// Attempts for transient faults (5xx, timeouts, dropped connections).
const TRANSIENT_ATTEMPTS: u32 = 6;

/// An AWS call that failed for good.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{api} in account {account} region {region}: {message}")]
pub struct CallError {
    /// The API.
    pub api: &'static str,
    /// Account.
    pub account: String,
    /// Region.
    pub region: String,
    /// What kind of failure.
    pub class: ErrorClass,
    /// AWS's error code, when there was one.
    pub code: Option<String>,
    /// AWS's code and message.
    pub message: String,
}

impl CallError {
    /// Whether a later attempt of the task could succeed.
    pub fn is_retryable(&self) -> bool {
        self.class.is_retryable()
    }
}

/// Why a call that must not be repeated blindly (SendCommand) did not
/// return an answer.
#[derive(Debug, Clone)]
pub enum Unsent {
    /// Not made: the guard said no right before it (the lease may have
    /// passed to someone else).
    NotAllowed,
    /// AWS answered no: the call had no effect.
    Refused(CallError),
    /// No answer came (a timeout, a dropped connection, a 5xx, an unreadable
    /// answer): the call may have taken effect. Look before trying again.
    Unanswered(CallError),
}

/// What a call that must not be repeated asks right before each try,
/// after any wait for the rate or a throttling backoff.
#[tonic::async_trait]
pub trait Guard: Sync {
    /// Whether the call may be made now.
    async fn allows(&self) -> bool;
}

/// Whether a call may be made again after it went unanswered.
#[derive(Clone, Copy)]
enum Repeat<'a> {
    /// Safe to repeat (reads, idempotent writes): transient faults retry.
    Freely,
    /// Not idempotent: made only while `guard` allows, right before each
    /// try, and never again once a try went unanswered.
    Never(&'a dyn Guard),
}

/// SDK clients for one (account, region).
#[derive(Clone)]
pub struct ScopeClients {
    /// Account id.
    pub account: String,
    /// Region.
    pub region: String,
    /// EC2.
    pub ec2: aws_sdk_ec2::Client,
    /// SSM.
    pub ssm: aws_sdk_ssm::Client,
    /// S3 (path-style when an endpoint override is set).
    pub s3: aws_sdk_s3::Client,
    /// CloudWatch Logs.
    pub logs: aws_sdk_cloudwatchlogs::Client,
    role: RoleKey,
    credentials: Arc<CredentialCache>,
    limiter: Arc<ApiLimiter>,
    stats: Arc<Stats>,
}

/// One [`Target`] per (role session, region), shared by every task there.
///
/// Four SDK clients are not free (about 170 KiB together): building them per
/// batch made a worker with 5,000 batches in flight hold 864 MiB although
/// those batches were in only 50 (account, region)s.
pub struct ScopeClientCache {
    entries: LruMap<(RoleKey, String), ScopeClients>,
}

impl Default for ScopeClientCache {
    fn default() -> Self {
        Self {
            entries: LruMap::new(MAX_TARGETS),
        }
    }
}

impl ScopeClientCache {
    /// The target for `role` in `region`, built on first use.
    pub fn get(
        &self,
        base: &SdkConfig,
        region: &str,
        role: &RoleKey,
        credentials: &Arc<CredentialCache>,
        limiter: &Arc<ApiLimiter>,
        stats: &Arc<Stats>,
    ) -> ScopeClients {
        self.entries.get_or_insert_with(&(role.clone(), region.to_owned()), || {
            ScopeClients::new(
                base,
                region,
                role.clone(),
                credentials.clone(),
                limiter.clone(),
                stats.clone(),
            )
        })
    }

    /// How many are cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl ScopeClients {
    /// Clients acting as `role` in `region`. The SDK's own identity cache is
    /// off: every request asks the credential cache, which refreshes early.
    pub fn new(
        base: &SdkConfig,
        region: &str,
        role: RoleKey,
        credentials: Arc<CredentialCache>,
        limiter: Arc<ApiLimiter>,
        stats: Arc<Stats>,
    ) -> Self {
        let provider = credentials.provider(role.clone());
        let config = muster_common::aws::for_target(base, region, SharedCredentialsProvider::new(provider))
            .into_builder()
            .identity_cache(IdentityCache::no_cache())
            .build();
        Self {
            account: role.account().to_owned(),
            region: region.to_owned(),
            ec2: aws_sdk_ec2::Client::new(&config),
            ssm: aws_sdk_ssm::Client::new(&config),
            s3: aws_sdk_s3::Client::from_conf(muster_common::aws::s3_config(&config)),
            logs: aws_sdk_cloudwatchlogs::Client::new(&config),
            role,
            credentials,
            limiter,
            stats,
        }
    }

    /// The role this target acts as.
    pub fn role(&self) -> &RoleKey {
        &self.role
    }

    fn key(&self, api: Api) -> LimitKey {
        LimitKey {
            account: self.account.clone(),
            region: self.region.clone(),
            api: api.name(),
            mutates: api.mutates(),
        }
    }

    /// The process's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Makes one AWS call: waits for the key's rate, retries throttling (with
    /// the key slowed down), transient faults and expired credentials, and
    /// returns the rest as a [`CallError`].
    pub async fn call<T, E, R, F, Fut>(&self, api: Api, send: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, R>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: HttpStatus + std::fmt::Debug,
    {
        match self
            .call_with_retries(api, Repeat::Freely, send)
            .instrument(crate::trace::rpc("aws-api", api.sdk_service(), api.name()))
            .await
        {
            Ok(value) => Ok(value),
            Err(Unsent::Refused(error) | Unsent::Unanswered(error)) => Err(error),
            Err(Unsent::NotAllowed) => unreachable!("a freely repeated call has no guard"),
        }
    }

    /// Makes one call that must not run twice (SendCommand has no
    /// idempotency token): `guard` is asked right before every try, after
    /// any wait for the rate or a throttling backoff; throttling, expired
    /// credentials and refusals retry or fail as in [`ScopeClients::call`], but a
    /// try that got no answer is never repeated here: the caller looks first.
    pub async fn call_once<T, E, R, F, Fut>(&self, api: Api, guard: &dyn Guard, send: F) -> Result<T, Unsent>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, R>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: HttpStatus + std::fmt::Debug,
    {
        self.call_with_retries(api, Repeat::Never(guard), send)
            .instrument(crate::trace::rpc("aws-api", api.sdk_service(), api.name()))
            .await
    }

    async fn call_with_retries<T, E, R, F, Fut>(&self, api: Api, repeat: Repeat<'_>, mut send: F) -> Result<T, Unsent>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, R>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: HttpStatus + std::fmt::Debug,
    {
        let key = self.key(api);
        let started = Instant::now();
        let mut attempts = Attempts::default();
        loop {
            self.limiter.acquire(&key).await;
            if let Repeat::Never(guard) = repeat
                && !guard.allows().await
            {
                return Err(Unsent::NotAllowed);
            }
            let error = match send().await {
                Ok(value) => {
                    self.limiter.succeeded(&key);
                    self.stats.call(api, "ok");
                    return Ok(value);
                }
                Err(error) => error,
            };
            let class = retry::classify(&error);
            self.stats.call(api, outcome_of(class));
            if class == ErrorClass::Throttled {
                self.limiter.throttled(&key);
            }
            let fail = || CallError {
                api: api.name(),
                account: self.account.clone(),
                region: self.region.clone(),
                class,
                code: error.code().map(str::to_owned),
                message: retry::describe(&error),
            };
            let repeatable = !matches!(repeat, Repeat::Never(_));
            match attempts.after(class, repeatable, started.elapsed()) {
                Next::Wait(pause) => tokio::time::sleep(pause).await,
                Next::Refresh => {
                    tracing::warn!(account = %self.account, region = %self.region, api = api.name(), "credentials expired; refreshing");
                    self.credentials.invalidate(&self.role).await;
                }
                // Expected answers (InvocationDoesNotExist right after a
                // send) are refusals here too; the caller decides.
                Next::Refused => return Err(Unsent::Refused(fail())),
                Next::Unanswered => return Err(Unsent::Unanswered(fail())),
            }
        }
    }
}

/// The `outcome` label of a call's counter for an error of `class`.
fn outcome_of(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::Throttled => "throttled",
        ErrorClass::Transient => "transient",
        ErrorClass::ExpiredCredentials => "expired",
        ErrorClass::AccessDenied | ErrorClass::Final => "error",
    }
}

/// What a call does after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Try again after this pause.
    Wait(Duration),
    /// Refresh the credentials, then try again.
    Refresh,
    /// AWS answered no: give up.
    Refused,
    /// No answer came (or one that may hide an effect): give up.
    Unanswered,
}

/// The errors one call has met so far, by kind.
#[derive(Debug, Default)]
struct Attempts {
    throttles: u32,
    transient: u32,
    expired: u32,
}

impl Attempts {
    /// The retry decision after an error of `class`, `elapsed` into the
    /// call. Throttling is waited out (with backoff) for up to
    /// [`THROTTLE_BUDGET`]; a passing fault is retried up to
    /// [`TRANSIENT_ATTEMPTS`] times, and never for a call that must not be
    /// repeated (its effect may have happened); expired credentials are
    /// refreshed twice.
    fn after(&mut self, class: ErrorClass, repeatable: bool, elapsed: Duration) -> Next {
        match class {
            ErrorClass::Throttled => {
                self.throttles += 1;
                if elapsed > THROTTLE_BUDGET {
                    return Next::Refused;
                }
                Next::Wait(retry::backoff(
                    self.throttles,
                    Duration::from_millis(250),
                    Duration::from_secs(20),
                ))
            }
            ErrorClass::Transient => {
                if !repeatable {
                    return Next::Unanswered;
                }
                self.transient += 1;
                if self.transient >= TRANSIENT_ATTEMPTS {
                    return Next::Unanswered;
                }
                Next::Wait(retry::backoff(
                    self.transient,
                    Duration::from_millis(100),
                    Duration::from_secs(10),
                ))
            }
            ErrorClass::ExpiredCredentials => {
                self.expired += 1;
                if self.expired > 2 { Next::Refused } else { Next::Refresh }
            }
            ErrorClass::AccessDenied | ErrorClass::Final => Next::Refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_waited_out_until_its_budget_is_spent() {
        let mut attempts = Attempts::default();
        let mut longest = Duration::ZERO;
        for _ in 0..20 {
            match attempts.after(ErrorClass::Throttled, false, Duration::from_secs(60)) {
                Next::Wait(pause) => longest = longest.max(pause),
                other => panic!("a throttle within budget waits, got {other:?}"),
            }
        }
        assert!(
            longest <= Duration::from_secs(20),
            "backoff is capped at 20 s: {longest:?}"
        );
        assert!(longest >= Duration::from_secs(10), "backoff grows: {longest:?}");
        assert_eq!(
            attempts.after(ErrorClass::Throttled, true, THROTTLE_BUDGET + Duration::from_secs(1)),
            Next::Refused
        );
    }

    #[test]
    fn a_passing_fault_is_retried_five_times_and_never_for_an_unrepeatable_call() {
        let mut attempts = Attempts::default();
        for n in 1..TRANSIENT_ATTEMPTS {
            assert!(
                matches!(
                    attempts.after(ErrorClass::Transient, true, Duration::ZERO),
                    Next::Wait(_)
                ),
                "attempt {n} is retried"
            );
        }
        assert_eq!(
            attempts.after(ErrorClass::Transient, true, Duration::ZERO),
            Next::Unanswered
        );
        assert_eq!(
            Attempts::default().after(ErrorClass::Transient, false, Duration::ZERO),
            Next::Unanswered,
            "a SendCommand whose answer was lost is not sent again"
        );
    }

    #[test]
    fn expired_credentials_are_refreshed_twice_and_refusals_are_final() {
        let mut attempts = Attempts::default();
        assert_eq!(
            attempts.after(ErrorClass::ExpiredCredentials, true, Duration::ZERO),
            Next::Refresh
        );
        assert_eq!(
            attempts.after(ErrorClass::ExpiredCredentials, true, Duration::ZERO),
            Next::Refresh
        );
        assert_eq!(
            attempts.after(ErrorClass::ExpiredCredentials, true, Duration::ZERO),
            Next::Refused
        );
        for class in [ErrorClass::AccessDenied, ErrorClass::Final] {
            assert_eq!(Attempts::default().after(class, true, Duration::ZERO), Next::Refused);
        }
    }

    fn role(account: &str, session: &str) -> RoleKey {
        RoleKey {
            role_arn: format!("arn:aws:iam::{account}:role/muster-exec"),
            external_id: None,
            session_name: session.to_owned(),
            source_identity: None,
            campaign_id: String::new(),
            duration_seconds: 3600,
        }
    }

    #[test]
    fn batches_in_one_account_and_region_share_their_clients() {
        let base = muster_common::aws::fixed(
            "http://127.0.0.1:9",
            "us-east-1",
            aws_credential_types::Credentials::new("AKIDTEST", "secret", None, None, "test"),
            muster_common::aws::no_sdk_retries(),
        );
        let credentials = Arc::new(CredentialCache::new(
            aws_sdk_sts::Client::new(&base),
            crate::credentials::DEFAULT_ASSUME_ROLE_RATE,
        ));
        let limiter = Arc::new(ApiLimiter::default());
        let stats = Arc::new(Stats::default());
        let targets = ScopeClientCache::default();
        let get = |region: &str, role: &RoleKey| targets.get(&base, region, role, &credentials, &limiter, &stats);

        let first = get("eu-west-1", &role("111111111111", "muster-a"));
        for _ in 0..100 {
            get("eu-west-1", &role("111111111111", "muster-a"));
        }
        assert_eq!(
            targets.len(),
            1,
            "100 batches in one (account, region) reuse one set of clients"
        );
        assert_eq!(
            (first.account.as_str(), first.region.as_str()),
            ("111111111111", "eu-west-1")
        );

        let other_region = get("us-east-1", &role("111111111111", "muster-a"));
        let other_account = get("eu-west-1", &role("222222222222", "muster-a"));
        let other_campaign = get("eu-west-1", &role("111111111111", "muster-b"));
        assert_eq!(
            targets.len(),
            4,
            "region, account and role session each get their own clients"
        );
        assert_eq!(other_region.region, "us-east-1");
        assert_eq!(other_account.account, "222222222222");
        assert_eq!(other_campaign.role().session_name, "muster-b");
    }
}
