//! Signing in with an AWS identity, the way Vault's AWS auth and
//! aws-iam-authenticator do it.
//!
//! The CLI signs an STS GetCallerIdentity request with the caller's own AWS
//! credentials (a profile, IAM Identity Center, an instance role: the SDK's
//! default chain) and sends the presigned URL as its bearer token,
//! `muster-aws-v1.<base64url of the URL>`. The controller checks that the URL
//! is exactly that request to an STS endpoint and nothing else, sends it to
//! STS with its own server id in the `x-muster-server-id` header, and STS
//! answers with the ARN of whoever signed it. The policy maps ARN patterns to
//! roles (see [`crate::auth`]).
//!
//! Replay: the signature covers `x-muster-server-id`, so a token made for
//! another service (or another muster) fails at STS when this controller sends
//! its own id; it is valid for at most 15 minutes (X-Amz-Expires), and a
//! verified token is remembered until then, so STS sees one call per token.
//! The controller never sends a token anywhere but an STS endpoint: AWS's
//! `sts[-fips][.region].amazonaws.com[.cn]` over HTTPS, or the AWS endpoint it
//! is itself configured with (the local sandbox).

use muster_common::config::ConfigError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use http_body_util::BodyExt as _;
use muster_common::domain::{RegionName, clip};
use sha2::Digest as _;

pub use muster_common::signin::{SERVER_ID_HEADER, TOKEN_PREFIX};
/// The longest a token may be valid (X-Amz-Expires).
pub const MAX_VALIDITY: Duration = Duration::from_secs(900);
/// How far in the future a token may be dated (clock skew).
const MAX_SKEW: Duration = Duration::from_secs(300);
/// Longest token looked at (a session token makes URLs long).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// How long STS has to answer.
const STS_TIMEOUT: Duration = Duration::from_secs(10);
/// Verified tokens remembered at most.
const MAX_REMEMBERED: usize = 10_000;
/// Calls to STS at once: a flood of made-up tokens waits here.
const MAX_IN_FLIGHT: usize = 16;

/// Who STS says signed a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsIdentity {
    /// The caller's ARN ("arn:aws:sts::111111111111:assumed-role/Role/alice").
    pub arn: String,
    /// Its account.
    pub account: String,
    /// STS's UserId ("AROA...:alice").
    pub user_id: String,
}

impl AwsIdentity {
    /// The person or workload, as the audit trail and SourceIdentity name it:
    /// an assumed role's session name (for IAM Identity Center, the user's
    /// name), an IAM or federated user's name, `root@<account>`; the ARN when
    /// it is none of those.
    pub fn name(&self) -> String {
        let resource = self.arn.splitn(6, ':').nth(5).unwrap_or_default();
        match resource.split_once('/') {
            Some(("assumed-role", rest)) => rest.rsplit('/').next().unwrap_or(rest).to_owned(),
            Some(("user" | "federated-user", rest)) => rest.rsplit('/').next().unwrap_or(rest).to_owned(),
            None if resource == "root" => format!("root@{}", self.account),
            _ => self.arn.clone(),
        }
    }
}

/// Why a sign-in failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignInError {
    /// The token is not acceptable, or STS refused it: UNAUTHENTICATED.
    Refused(String),
    /// STS could not be asked: UNAVAILABLE (try again).
    Unavailable(String),
}

impl std::fmt::Display for SignInError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(why) | Self::Unavailable(why) => f.write_str(why),
        }
    }
}

/// A token's presigned request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presigned {
    /// The URL to send to STS.
    pub url: http::Uri,
    /// When STS stops accepting it.
    pub valid_until: SystemTime,
}

/// Checks that `token` (after [`TOKEN_PREFIX`]) is a presigned STS
/// GetCallerIdentity for an STS endpoint (AWS's, or `local_endpoint`),
/// bound to a server id and valid at `now`.
pub fn parse_token(token: &str, local_endpoint: Option<&str>, now: SystemTime) -> Result<Presigned, String> {
    let presigned = || -> Result<Presigned, String> {
        let url = token_url(token)?;
        check_endpoint(&url, local_endpoint)?;
        let params = presigned_params(&url)?;
        let valid_until = validity(&params, now)?;
        Ok(Presigned { url, valid_until })
    };
    presigned().map_err(|why| format!("AWS sign-in token: {why}"))
}

/// The URL a token encodes (base64url, its prefix optional).
fn token_url(token: &str) -> Result<http::Uri, String> {
    let encoded = token.strip_prefix(TOKEN_PREFIX).unwrap_or(token);
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('=')) else {
        return Err("is not base64url".into());
    };
    let Ok(text) = String::from_utf8(bytes) else {
        return Err("is not a URL".into());
    };
    text.parse::<http::Uri>()
        .map_err(|_| format!("'{}' is not a URL", clip(&text)))
}

/// The URL must go to STS over HTTPS (or to the configured local
/// endpoint), at its root: anything else could answer for an identity it
/// does not hold.
fn check_endpoint(url: &http::Uri, local_endpoint: Option<&str>) -> Result<(), String> {
    let (Some(scheme), Some(authority)) = (url.scheme_str(), url.authority()) else {
        return Err("the URL has no scheme or host".into());
    };
    let endpoint = format!("{scheme}://{authority}");
    let local = local_endpoint.is_some_and(|e| e.trim_end_matches('/') == endpoint);
    let aws = scheme == "https" && authority.port_u16().is_none_or(|p| p == 443) && is_sts_host(authority.host());
    if !(local || aws) || authority.as_str().contains('@') {
        return Err(format!(
            "{} is not an STS endpoint (sts.amazonaws.com, sts.<region>.amazonaws.com over HTTPS{})",
            clip(&endpoint),
            local_endpoint.map(|e| format!(", or {e}")).unwrap_or_default()
        ));
    }
    if !matches!(url.path(), "" | "/") {
        return Err("the URL's path is not /".into());
    }
    Ok(())
}

/// The query of a presigned sts:GetCallerIdentity whose signature covers
/// the host and the server id: each parameter once, none other.
fn presigned_params(url: &http::Uri) -> Result<HashMap<String, String>, String> {
    let mut params: HashMap<String, String> = HashMap::new();
    for (key, value) in form_urlencoded::parse(url.query().unwrap_or_default().as_bytes()) {
        if params.insert(key.to_string(), value.to_string()).is_some() {
            return Err(format!("the URL has {key} twice"));
        }
    }
    const ALLOWED: [&str; 9] = [
        "Action",
        "Version",
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
        "X-Amz-Security-Token",
    ];
    if let Some(extra) = params.keys().find(|k| !ALLOWED.contains(&k.as_str())) {
        return Err(format!(
            "the URL has the parameter {}, which GetCallerIdentity does not take",
            clip(extra)
        ));
    }
    let param = |name: &str| params.get(name).map(String::as_str).unwrap_or_default();
    if param("Action") != "GetCallerIdentity" || param("Version") != "2011-06-15" {
        return Err("the URL is not sts:GetCallerIdentity (Action=GetCallerIdentity&Version=2011-06-15)".into());
    }
    if param("X-Amz-Algorithm") != "AWS4-HMAC-SHA256" || param("X-Amz-Signature").is_empty() {
        return Err("the URL is not presigned with SigV4".into());
    }
    let signed: Vec<&str> = param("X-Amz-SignedHeaders").split(';').collect();
    if !signed.contains(&"host") || !signed.contains(&SERVER_ID_HEADER) {
        return Err(format!(
            "the signature does not cover the host and {SERVER_ID_HEADER} headers"
        ));
    }
    Ok(params)
}

/// Until when a token signed at X-Amz-Date for X-Amz-Expires is good, if
/// it is good `now`.
fn validity(params: &HashMap<String, String>, now: SystemTime) -> Result<SystemTime, String> {
    let param = |name: &str| params.get(name).map(String::as_str).unwrap_or_default();
    let Ok(signed_at) = chrono::NaiveDateTime::parse_from_str(param("X-Amz-Date"), "%Y%m%dT%H%M%SZ") else {
        return Err("X-Amz-Date is not yyyyMMddTHHmmssZ".into());
    };
    let signed_at =
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(signed_at.and_utc().timestamp()).unwrap_or(0));
    let expires = param("X-Amz-Expires").parse::<u64>().unwrap_or(0);
    if !(1..=MAX_VALIDITY.as_secs()).contains(&expires) {
        return Err(format!(
            "X-Amz-Expires is '{}'; a token is valid for 1 to {} seconds",
            clip(param("X-Amz-Expires")),
            MAX_VALIDITY.as_secs()
        ));
    }
    if signed_at > now + MAX_SKEW {
        return Err("it is dated in the future; check this machine's clock".into());
    }
    let valid_until = signed_at + Duration::from_secs(expires);
    if valid_until <= now {
        let at = chrono::DateTime::<chrono::Utc>::from(valid_until).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        return Err(format!("it expired at {at}; sign in again"));
    }
    Ok(valid_until)
}

/// AWS's STS host names: `sts.amazonaws.com`, `sts[-fips].<region>.amazonaws.com[.cn]`.
fn is_sts_host(host: &str) -> bool {
    let Some(rest) = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))
    else {
        return false;
    };
    match rest.split_once('.') {
        None => rest == "sts",
        Some((service, region)) => matches!(service, "sts" | "sts-fips") && RegionName::parse(region).is_ok(),
    }
}

/// Whether `arn` matches `pattern`, where `*` stands for any run of
/// characters within one ARN field or path segment (never `:` or `/`).
pub fn arn_matches(pattern: &str, arn: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => {
                let mut i = 0;
                loop {
                    if go(rest, &s[i..]) {
                        return true;
                    }
                    if i == s.len() || matches!(s[i], b':' | b'/') {
                        return false;
                    }
                    i += 1;
                }
            }
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(pattern.as_bytes(), arn.as_bytes())
}

/// Checks an ARN pattern in the policy; `field` names it in errors.
pub fn check_arn_pattern(field: &str, pattern: &str) -> Result<(), ConfigError> {
    let fields = pattern.split(':').count();
    if !pattern.starts_with("arn:") || fields < 6 || pattern.len() > 2048 || pattern.chars().any(char::is_whitespace) {
        return Err(ConfigError::invalid(
            field,
            format!(
                "'{}' is not an ARN pattern (arn:aws:sts::111111111111:assumed-role/ROLE/*; * within one field)",
                clip(pattern)
            ),
        ));
    }
    if pattern.contains("**") {
        return Err(ConfigError::invalid(
            field,
            format!("'{}' has '**'; one * already matches a whole field", clip(pattern)),
        ));
    }
    Ok(())
}

/// The text of the first `<tag>...</tag>` in an XML document.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(
        xml[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Empty<bytes::Bytes>,
>;

/// How a sign-in went, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// STS verified the token.
    Verified,
    /// A token verified before, still valid.
    Remembered,
    /// The token was not acceptable or STS refused it.
    Refused,
    /// STS could not be asked.
    Unavailable,
}

impl Outcome {
    /// As the metric labels it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::Remembered => "remembered",
            Self::Refused => "refused",
            Self::Unavailable => "unavailable",
        }
    }
}

/// Verifies AWS sign-in tokens with STS.
pub struct SignIn {
    server_id: String,
    local_endpoint: Option<String>,
    client: HttpClient,
    remembered: Mutex<HashMap<[u8; 32], (AwsIdentity, SystemTime)>>,
    in_flight: tokio::sync::Semaphore,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn")
            .field("server_id", &self.server_id)
            .field("local_endpoint", &self.local_endpoint)
            .finish_non_exhaustive()
    }
}

impl SignIn {
    /// Sign-in for the controller known as `server_id`; tokens may also be
    /// for `local_endpoint` (the AWS endpoint the controller itself uses).
    pub fn new(server_id: &str, local_endpoint: Option<&str>) -> Result<Self, ConfigError> {
        check_server_id(server_id)?;
        muster_common::tls::install_crypto_provider();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| {
                ConfigError::invalid(
                    "signin_server_id",
                    format!("cannot load the system's CA certificates for STS: {e}"),
                )
            })?
            .https_or_http()
            .enable_http1()
            .build();
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
        Ok(Self {
            server_id: server_id.to_owned(),
            local_endpoint: local_endpoint.map(|e| e.trim_end_matches('/').to_owned()),
            client,
            remembered: Mutex::default(),
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
        })
    }

    /// The id tokens must be signed for.
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// Who signed `token`, asking STS unless a still valid token was
    /// verified before.
    pub async fn verify(&self, token: &str) -> (Result<AwsIdentity, SignInError>, Outcome) {
        if token.len() > MAX_TOKEN_BYTES {
            let why = format!("AWS sign-in token: longer than {MAX_TOKEN_BYTES} bytes");
            return (Err(SignInError::Refused(why)), Outcome::Refused);
        }
        let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let now = SystemTime::now();
        if let Some((identity, until)) = self.remembered.lock().expect("sign-in lock").get(&key)
            && *until > now
        {
            return (Ok(identity.clone()), Outcome::Remembered);
        }
        let presigned = match parse_token(token, self.local_endpoint.as_deref(), now) {
            Ok(presigned) => presigned,
            Err(why) => return (Err(SignInError::Refused(why)), Outcome::Refused),
        };
        match self.ask_sts(&presigned).await {
            Ok(identity) => {
                self.remember(key, &identity, presigned.valid_until, now);
                (Ok(identity), Outcome::Verified)
            }
            Err(error @ SignInError::Refused(_)) => (Err(error), Outcome::Refused),
            Err(error @ SignInError::Unavailable(_)) => (Err(error), Outcome::Unavailable),
        }
    }

    fn remember(&self, key: [u8; 32], identity: &AwsIdentity, until: SystemTime, now: SystemTime) {
        let mut remembered = self.remembered.lock().expect("sign-in lock");
        if remembered.len() >= MAX_REMEMBERED {
            remembered.retain(|_, (_, until)| *until > now);
        }
        if remembered.len() < MAX_REMEMBERED {
            remembered.insert(key, (identity.clone(), until));
        }
    }

    async fn ask_sts(&self, presigned: &Presigned) -> Result<AwsIdentity, SignInError> {
        let host = presigned
            .url
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let request = http::Request::get(presigned.url.clone())
            .header(http::header::HOST, &host)
            .header(SERVER_ID_HEADER, &self.server_id)
            .body(http_body_util::Empty::new())
            .map_err(|e| SignInError::Refused(format!("AWS sign-in token: {e}")))?;
        let unavailable = |e: &dyn std::fmt::Display| {
            SignInError::Unavailable(format!("cannot ask STS at {host} who signed in: {e}"))
        };
        let _permit = self.in_flight.acquire().await.map_err(|e| unavailable(&e))?;
        let answer = async {
            let response = self.client.request(request).await.map_err(|e| unavailable(&e))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| unavailable(&e))?
                .to_bytes();
            Ok::<_, SignInError>((status, String::from_utf8_lossy(&body).into_owned()))
        };
        let (status, body) = tokio::time::timeout(STS_TIMEOUT, answer)
            .await
            .map_err(|_| unavailable(&format!("no answer in {} s", STS_TIMEOUT.as_secs())))??;
        if status.is_success() {
            let (Some(arn), Some(account)) = (xml_text(&body, "Arn"), xml_text(&body, "Account")) else {
                return Err(unavailable(&"its answer names no Arn and Account"));
            };
            return Ok(AwsIdentity {
                arn,
                account,
                user_id: xml_text(&body, "UserId").unwrap_or_default(),
            });
        }
        let code = xml_text(&body, "Code").unwrap_or_else(|| status.as_u16().to_string());
        let message = xml_text(&body, "Message").unwrap_or_default();
        if status.is_server_error() || code.contains("Throttl") {
            return Err(unavailable(&format!("{code}: {message}")));
        }
        let hint = if code == "SignatureDoesNotMatch" {
            format!(
                " (the token was signed for another server id, or altered: this controller's server id is '{}'; \
                 set MUSTER_SERVER_ID to it)",
                self.server_id
            )
        } else {
            String::new()
        };
        let message: String = message.chars().take(300).collect();
        Err(SignInError::Refused(format!(
            "STS refused the AWS sign-in: {code}: {message}{hint}"
        )))
    }
}

/// Checks a server id: 1 to 128 of letters, digits and `.-_:`.
pub fn check_server_id(id: &str) -> Result<(), ConfigError> {
    let ok = (1..=128).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            "signin_server_id",
            format!(
                "'{}' must be 1 to 128 of letters, digits and .-_: (e.g. the controller's DNS name)",
                clip(id)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(url: &str) -> String {
        format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url)
        )
    }

    fn url(host: &str, extra: &str, date: &str, expires: u64) -> String {
        format!(
            "{host}/?Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=ASIA1%2F20261203%2Fus-east-1%2Fsts%2Faws4_request&X-Amz-Date={date}\
             &X-Amz-Expires={expires}&X-Amz-SignedHeaders=host%3Bx-muster-server-id&X-Amz-Signature=abc{extra}"
        )
    }

    fn at(text: &str) -> SystemTime {
        let t = chrono::NaiveDateTime::parse_from_str(text, "%Y%m%dT%H%M%SZ")
            .unwrap()
            .and_utc();
        SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp() as u64)
    }

    #[test]
    fn accepts_sts_endpoints_only() {
        let now = at("20261203T100030Z");
        let ok = |host: &str| {
            parse_token(
                &token(&url(host, "", "20261203T100000Z", 60)),
                Some("http://127.0.0.1:4566"),
                now,
            )
        };
        assert!(ok("https://sts.amazonaws.com").is_ok());
        assert!(ok("https://sts.eu-west-1.amazonaws.com").is_ok());
        assert!(ok("https://sts-fips.us-east-1.amazonaws.com").is_ok());
        assert!(ok("https://sts.cn-north-1.amazonaws.com.cn").is_ok());
        assert!(ok("http://127.0.0.1:4566").is_ok());
        for bad in [
            "http://sts.amazonaws.com",
            "https://sts.amazonaws.com:8443",
            "https://evil.example.com",
            "https://sts.amazonaws.com.evil.example.com",
            "https://s3.us-east-1.amazonaws.com",
            "https://sts.not-a-region.amazonaws.com",
            "http://127.0.0.1:4567",
            "https://user@sts.amazonaws.com",
        ] {
            let err = ok(bad).unwrap_err();
            assert!(err.contains("is not an STS endpoint"), "{bad}: {err}");
        }
    }

    #[test]
    fn refuses_anything_but_a_bound_fresh_get_caller_identity() {
        let now = at("20261203T100030Z");
        let check = |u: String| parse_token(&token(&u), None, now).unwrap_err();
        let host = "https://sts.amazonaws.com";
        assert!(check(url(host, "&Action=AssumeRole", "20261203T100000Z", 60)).contains("Action twice"));
        assert!(check(url(host, "&RoleArn=x", "20261203T100000Z", 60)).contains("parameter RoleArn"));
        let assume = url(host, "", "20261203T100000Z", 60).replace("GetCallerIdentity", "AssumeRole");
        assert!(check(assume).contains("is not sts:GetCallerIdentity"));
        let unbound = url(host, "", "20261203T100000Z", 60).replace("%3Bx-muster-server-id", "");
        assert!(check(unbound).contains("does not cover the host and x-muster-server-id"));
        assert!(check(url(host, "", "20261203T100000Z", 3600)).contains("valid for 1 to 900 seconds"));
        assert!(check(url(host, "", "20261203T095800Z", 60)).contains("expired at 2026-12-03T09:59:00Z"));
        assert!(check(url(host, "", "20261203T102000Z", 60)).contains("dated in the future"));
        assert!(
            parse_token("muster-aws-v1.%%%", None, now)
                .unwrap_err()
                .contains("not base64url")
        );
        let presigned = parse_token(&token(&url(host, "", "20261203T100000Z", 60)), None, now).unwrap();
        assert_eq!(presigned.valid_until, at("20261203T100100Z"));
    }

    #[test]
    fn arn_patterns_match_within_a_field() {
        let sso = "arn:aws:sts::111111111111:assumed-role/AWSReservedSSO_PatchOperators_0a1b2c/alice@example.com";
        assert!(arn_matches(
            "arn:aws:sts::111111111111:assumed-role/AWSReservedSSO_PatchOperators_*/*",
            sso
        ));
        assert!(arn_matches(
            "arn:aws:sts::*:assumed-role/AWSReservedSSO_PatchOperators_*/*",
            sso
        ));
        assert!(arn_matches(sso, sso));
        assert!(!arn_matches(
            "arn:aws:sts::111111111111:assumed-role/AWSReservedSSO_Admins_*/*",
            sso
        ));
        assert!(
            !arn_matches("arn:aws:sts::111111111111:assumed-role/*", sso),
            "* stops at /"
        );
        assert!(!arn_matches("arn:aws:sts::2*:assumed-role/*/*", sso));
        assert!(check_arn_pattern("p", "arn:aws:sts::*:assumed-role/X/*").is_ok());
        assert!(
            check_arn_pattern("p", "alice")
                .unwrap_err()
                .to_string()
                .starts_with("p: 'alice' is not an ARN pattern")
        );
        assert!(
            check_arn_pattern("p", "arn:aws:iam::1:**")
                .unwrap_err()
                .to_string()
                .contains("'**'")
        );
    }

    #[test]
    fn names_the_person() {
        let id = |arn: &str| AwsIdentity {
            arn: arn.into(),
            account: "111111111111".into(),
            user_id: String::new(),
        };
        assert_eq!(
            id("arn:aws:sts::111111111111:assumed-role/AWSReservedSSO_Ops_1/alice@example.com").name(),
            "alice@example.com"
        );
        assert_eq!(id("arn:aws:iam::111111111111:user/team/bob").name(), "bob");
        assert_eq!(id("arn:aws:iam::111111111111:root").name(), "root@111111111111");
        assert_eq!(id("arn:aws:sts::111111111111:federated-user/carol").name(), "carol");
        assert_eq!(
            xml_text("<R><Arn>arn:a&amp;b</Arn></R>", "Arn").as_deref(),
            Some("arn:a&b")
        );
        assert!(check_server_id("muster.example.com").is_ok());
        assert!(
            check_server_id("bad id")
                .unwrap_err()
                .to_string()
                .starts_with("signin_server_id: 'bad id'")
        );
    }
}
