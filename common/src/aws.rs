//! One place that builds AWS SDK configuration.
//!
//! The endpoint override is plain configuration (`AWS_ENDPOINT_URL` or a
//! flag), so the local sandbox is a setting, not a code path: the same clients
//! talk to AWS or to muster-sim.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use std::time::Duration;

/// How to reach AWS. Unset fields fall back to the SDK's own environment
/// (`AWS_REGION`, `AWS_PROFILE`, `AWS_ENDPOINT_URL`, ...).
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    /// Send every request here instead of AWS (the sandbox: muster-sim).
    pub endpoint_url: Option<String>,
    /// Region for calls that are not about a target region (SQS, S3, STS).
    pub region: Option<String>,
    /// How many attempts the SDK itself makes. Calls where muster owns the
    /// retries (everything in target accounts) use [`no_sdk_retries`].
    pub max_attempts: Option<u32>,
}

/// Loads the SDK configuration once for the whole process.
pub async fn load(settings: &AwsSettings) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(shared_http_client())
        .retry_config(RetryConfig::standard().with_max_attempts(settings.max_attempts.unwrap_or(3)))
        .timeout_config(default_timeouts());
    if let Some(endpoint) = &settings.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    loader.load().await
}

/// One HTTPS client (rustls, connection pool) for every SDK client made from
/// this configuration. Without it each service client builds its own, with
/// its own TLS root store and pool: a worker with 5,000 batches in flight held
/// 1.5 GB, about 300 KiB per batch, and opened new connections per batch.
pub fn shared_http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
        .build_https()
}

/// Timeouts for every AWS call: a dead endpoint must not hang a worker.
pub fn default_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(30))
        .operation_timeout(Duration::from_secs(120))
        .build()
}

/// Retry configuration for calls whose retries muster makes itself (with its
/// own backoff and per-key rate limiting), so the SDK must not multiply them.
pub fn no_sdk_retries() -> RetryConfig {
    RetryConfig::disabled()
}

/// The same configuration, for another region and credentials: how a worker
/// builds clients that act in one target (account, region).
pub fn for_target(base: &SdkConfig, region: &str, credentials: SharedCredentialsProvider) -> SdkConfig {
    base.to_builder()
        .region(Region::new(region.to_owned()))
        .credentials_provider(credentials)
        .retry_config(no_sdk_retries())
        .build()
}

/// An S3 client configuration: path-style addressing when an endpoint
/// override is set, because a loopback endpoint has no bucket subdomains.
pub fn s3_config(sdk: &SdkConfig) -> aws_sdk_s3::Config {
    let path_style = sdk.endpoint_url().is_some();
    aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(path_style)
        .build()
}

/// A complete configuration for fixed credentials and endpoint (the sandbox,
/// tests, tools): with the time source and sleep that credential providers
/// such as `AssumeRoleProvider` need.
pub fn fixed(
    endpoint: &str,
    region: &str,
    credentials: aws_credential_types::Credentials,
    retry: RetryConfig,
) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(region.to_owned()))
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .retry_config(retry)
        .timeout_config(default_timeouts())
        .time_source(aws_smithy_async::time::SystemTimeSource::new())
        .sleep_impl(aws_smithy_async::rt::sleep::TokioSleep::new())
        .build()
}
