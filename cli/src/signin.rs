//! Signing in to the controller with the caller's AWS identity.
//!
//! The CLI takes AWS credentials the way every AWS tool does (AWS_PROFILE,
//! IAM Identity Center after `aws sso login`, environment keys, an instance
//! or task role: the SDK's default chain), presigns an STS GetCallerIdentity
//! request bound to the controller's server id, and sends it as its bearer
//! token. The controller asks STS who signed it. Nothing secret leaves this
//! machine: a presigned URL proves the signer but cannot be turned into
//! credentials. A token is valid for five minutes; a fresh one is signed
//! before it runs out, so a long `muster watch` keeps working.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials as _;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign};
use base64::Engine as _;

pub use muster_common::signin::{SERVER_ID_HEADER, TOKEN_PREFIX};
/// How long a token is valid.
const VALIDITY: Duration = Duration::from_secs(300);
/// A token is signed again when it is this old.
const RESIGN_AFTER: Duration = Duration::from_secs(240);

/// Signs sign-in tokens with one set of AWS credentials.
#[derive(Debug)]
pub struct AwsSigner {
    credentials: Credentials,
    region: String,
    endpoint: String,
    server_id: String,
    current: Mutex<Option<(Instant, String)>>,
}

impl AwsSigner {
    /// Credentials from the SDK's default chain, for the controller known as
    /// `server_id`.
    pub async fn load(server_id: &str) -> anyhow::Result<Self> {
        // STS needs a region to sign in; without one configured, AWS's
        // own tools fall back to us-east-1.
        let region = aws_config::meta::region::RegionProviderChain::default_provider().or_else("us-east-1");
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .load()
            .await;
        let provider = sdk.credentials_provider().ok_or_else(|| {
            anyhow::anyhow!("--aws-signin: no AWS credentials provider (set AWS_PROFILE, or run `aws sso login`)")
        })?;
        let credentials = provider.provide_credentials().await.map_err(|e| {
            anyhow::anyhow!(
                "--aws-signin: no AWS credentials ({}); set AWS_PROFILE, run `aws sso login`, or give AWS_ACCESS_KEY_ID",
                error_chain(&e)
            )
        })?;
        let region = sdk.region().map_or_else(|| "us-east-1".to_owned(), ToString::to_string);
        let endpoint = std::env::var("AWS_ENDPOINT_URL_STS")
            .ok()
            .filter(|e| !e.is_empty())
            .or_else(|| sdk.endpoint_url().map(str::to_owned))
            .unwrap_or_else(|| sts_endpoint(&region));
        Self::new(credentials, &region, &endpoint, server_id)
    }

    /// A signer with these credentials, for STS at `endpoint`.
    pub fn new(credentials: Credentials, region: &str, endpoint: &str, server_id: &str) -> anyhow::Result<Self> {
        if server_id.is_empty() {
            anyhow::bail!("--server-id: empty; give the controller's server id (its --signin-server-id)");
        }
        Ok(Self {
            credentials,
            region: region.to_owned(),
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            server_id: server_id.to_owned(),
            current: Mutex::new(None),
        })
    }

    /// A token, signed now.
    pub fn sign(&self, at: SystemTime) -> anyhow::Result<String> {
        let url = format!("{}/?Action=GetCallerIdentity&Version=2011-06-15", self.endpoint);
        let host = url
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.authority().map(|a| a.as_str().to_owned()))
            .ok_or_else(|| anyhow::anyhow!("--aws-signin: the STS endpoint '{}' is not a URL", self.endpoint))?;
        let identity = self.credentials.clone().into();
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(VALIDITY);
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("sts")
            .time(at)
            .settings(settings)
            .build()
            .map_err(|e| anyhow::anyhow!("--aws-signin: {e}"))?
            .into();
        let headers = [("host", host.as_str()), (SERVER_ID_HEADER, self.server_id.as_str())];
        let signable = SignableRequest::new("GET", url.as_str(), headers.into_iter(), SignableBody::Bytes(&[]))
            .map_err(|e| anyhow::anyhow!("--aws-signin: {e}"))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| anyhow::anyhow!("--aws-signin: cannot sign: {e}"))?
            .into_parts();
        let mut request = http::Request::builder()
            .uri(url.as_str())
            .body(())
            .map_err(|e| anyhow::anyhow!("--aws-signin: {e}"))?;
        instructions.apply_to_request_http1x(&mut request);
        let presigned = request.uri().to_string();
        Ok(format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(presigned)
        ))
    }

    /// The token to send now: the last one, or a fresh one when it is old.
    pub fn token(&self) -> anyhow::Result<String> {
        let mut current = self.current.lock().expect("signer lock");
        if let Some((at, token)) = current.as_ref()
            && at.elapsed() < RESIGN_AFTER
        {
            return Ok(token.clone());
        }
        let token = self.sign(SystemTime::now())?;
        *current = Some((Instant::now(), token.clone()));
        Ok(token)
    }
}

/// AWS's regional STS endpoint.
fn sts_endpoint(region: &str) -> String {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://sts.{region}.{suffix}")
}

/// The default server id: the controller URL's host.
pub fn default_server_id(controller: &str) -> String {
    controller
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_owned))
        .unwrap_or_default()
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(endpoint: &str) -> AwsSigner {
        let credentials = Credentials::new("ASIAEXAMPLE", "secret", Some("session".into()), None, "test");
        AwsSigner::new(credentials, "eu-west-1", endpoint, "muster.example.com").unwrap()
    }

    #[test]
    fn tokens_are_presigned_get_caller_identity_bound_to_the_server() {
        let token = signer("https://sts.eu-west-1.amazonaws.com/")
            .sign(SystemTime::now())
            .unwrap();
        let encoded = token.strip_prefix(TOKEN_PREFIX).unwrap();
        let url = String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(encoded)
                .unwrap(),
        )
        .unwrap();
        assert!(
            url.starts_with("https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&"),
            "{url}"
        );
        assert!(url.contains("X-Amz-Expires=300"), "{url}");
        assert!(url.contains("X-Amz-SignedHeaders=host%3Bx-muster-server-id"), "{url}");
        assert!(url.contains("X-Amz-Security-Token=session"), "{url}");
        assert!(url.contains("%2Feu-west-1%2Fsts%2Faws4_request"), "{url}");
        assert!(!url.contains("secret"), "the secret key never leaves: {url}");
    }

    #[test]
    fn the_same_token_is_sent_until_it_is_old() {
        let signer = signer("http://127.0.0.1:4566");
        assert_eq!(signer.token().unwrap(), signer.token().unwrap());
        assert_eq!(sts_endpoint("cn-north-1"), "https://sts.cn-north-1.amazonaws.com.cn");
        assert_eq!(
            default_server_id("https://muster.example.com:7070"),
            "muster.example.com"
        );
        assert!(AwsSigner::new(Credentials::new("A", "s", None, None, "t"), "us-east-1", "http://x", "").is_err());
    }
}
