//! AssumeRole as AWS enforces it. moto checks nothing (the role need not exist,
//! trust policies and ExternalId are ignored), so the sim does: the role must
//! exist in the target account, its trust policy must allow the caller with the
//! ExternalId sent, and DurationSeconds must fit the role and role chaining.
//! Then moto issues the credentials and the sim remembers whose they are.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

use crate::identity::Caller;
use crate::policy::{self, Decision};
use crate::protocol::{self, Protocol, Resp};
use crate::sigv4;
use crate::state::{AssumedRole, SimState};
use sha2::Digest as _;

/// AWS's floor for DurationSeconds.
const MIN_DURATION: u64 = 900;
/// AWS's cap for sessions assumed from another role session.
const CHAINED_MAX: u64 = 3_600;

fn sts_error(status: StatusCode, code: &str, message: &str) -> Resp {
    protocol::error(Protocol::AwsQuery, status, code, message)
}

fn validation(message: &str) -> Resp {
    sts_error(StatusCode::BAD_REQUEST, "ValidationError", message)
}

/// Handles an STS AssumeRole request from `caller`: the request checked as
/// STS checks it, the role and its trust policy as IAM enforces them, then
/// moto's credentials, remembered as the session they are.
pub async fn assume_role(
    sim: &SimState,
    caller: &Caller,
    headers: &HeaderMap,
    path_and_query: &str,
    body: Bytes,
) -> Resp {
    let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let request = match AssumeRequest::parse(&params) {
        Ok(request) => request,
        Err(message) => return validation(&message),
    };
    let (arn, role) = match authorize(sim, caller, &request).await {
        Ok(allowed) => allowed,
        Err(refusal) => return refusal,
    };
    let granted = sim
        .tunables()
        .session_ttl_seconds
        .map_or(request.duration, |cap| request.duration.min(cap));
    let forwarded: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().filter(|(k, _)| k != "DurationSeconds"))
        .append_pair("DurationSeconds", &granted.to_string())
        .finish();
    let response = match sim
        .moto
        .forward(Method::POST, path_and_query, headers, Bytes::from(forwarded))
        .await
    {
        Ok(response) => response,
        Err(error) => return sts_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure", &error.to_string()),
    };
    if !response.status().is_success() {
        return response;
    }
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    remember(
        sim,
        caller,
        &request,
        (&arn, &role),
        granted,
        &String::from_utf8_lossy(&bytes),
    );
    http::Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/xml")
        .body(http_body_util::Full::new(bytes))
        .expect("static response parts are valid")
}

/// An AssumeRole request's parameters, checked as STS checks them.
struct AssumeRequest {
    role_arn: String,
    session_name: String,
    source_identity: Option<String>,
    external_id: Option<String>,
    tags: Vec<(String, String)>,
    duration: u64,
}

impl AssumeRequest {
    /// The request, or the ValidationError message STS would answer.
    fn parse(params: &[(String, String)]) -> Result<Self, String> {
        let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let Some(role_arn) = get("RoleArn") else {
            return Err(String::from(
                "1 validation error detected: Value null at 'roleArn' failed to satisfy constraint: Member must not be null",
            ));
        };
        let name_ok = |value: &str| {
            (2..=64).contains(&value.len())
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
        };
        let session_name = get("RoleSessionName").unwrap_or_default();
        if !name_ok(session_name) {
            return Err(format!(
                "1 validation error detected: Value '{session_name}' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*"
            ));
        }
        let source_identity = get("SourceIdentity");
        if let Some(identity) = source_identity
            && !name_ok(identity)
        {
            return Err(format!(
                "1 validation error detected: Value '{identity}' at 'sourceIdentity' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*"
            ));
        }
        let tags: Vec<(String, String)> = (1..=50)
            .map_while(|n| {
                let key = get(&format!("Tags.member.{n}.Key"))?;
                Some((
                    key.to_owned(),
                    get(&format!("Tags.member.{n}.Value")).unwrap_or_default().to_owned(),
                ))
            })
            .collect();
        let duration: u64 = match get("DurationSeconds").map(str::parse) {
            None => 3_600,
            Some(Ok(seconds)) => seconds,
            Some(Err(_)) => return Err(String::from("DurationSeconds must be a number")),
        };
        if duration < MIN_DURATION {
            return Err(format!(
                "1 validation error detected: Value '{duration}' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to {MIN_DURATION}"
            ));
        }
        Ok(Self {
            role_arn: role_arn.to_owned(),
            session_name: session_name.to_owned(),
            source_identity: source_identity.map(str::to_owned),
            external_id: get("ExternalId").map(str::to_owned),
            tags,
            duration,
        })
    }
}

/// Whether `caller` may assume the role `request` names, as IAM decides:
/// the role exists (AccessDenied otherwise, so that nobody can probe which
/// do), its trust policy allows each action the request takes, and the
/// duration fits role chaining and the role's maximum.
async fn authorize(
    sim: &SimState,
    caller: &Caller,
    request: &AssumeRequest,
) -> Result<(muster_common::domain::RoleArn, crate::moto::RoleInfo), Resp> {
    let role_arn = request.role_arn.as_str();
    let denied_for = |action: &str| {
        sts_error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            &format!(
                "User: {} is not authorized to perform: {action} on resource: {role_arn}",
                caller.principal_arn
            ),
        )
    };
    let Ok(arn) = muster_common::domain::RoleArn::parse(role_arn) else {
        return Err(validation(&format!("{role_arn} is invalid")));
    };
    let role = match sim.moto.get_role(arn.account.as_str(), &arn.name).await {
        Ok(Some(role)) => role,
        Ok(None) => {
            tracing::info!(role = role_arn, caller = %caller.principal_arn, "assume role denied: role does not exist");
            return Err(denied_for("sts:AssumeRole"));
        }
        Err(error) => {
            tracing::warn!(%error, "role lookup in moto failed");
            return Err(sts_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalFailure",
                &error.to_string(),
            ));
        }
    };
    // A role with a path is named by its full ARN; the request may omit the
    // path only if the role has none.
    if !role.arn.ends_with(&format!(":role{}{}", arn.path, arn.name)) {
        return Err(denied_for("sts:AssumeRole"));
    }
    // As IAM does: setting a SourceIdentity and tagging the session are
    // actions of their own, each of which the trust policy must allow.
    let mut actions = vec!["sts:AssumeRole"];
    if request.source_identity.is_some() {
        actions.push("sts:SetSourceIdentity");
    }
    if !request.tags.is_empty() {
        actions.push("sts:TagSession");
    }
    for action in actions {
        let trust_request = policy::Request {
            caller,
            action,
            external_id: request.external_id.as_deref(),
            session_name: &request.session_name,
            source_identity: request.source_identity.as_deref(),
        };
        let decision = policy::evaluate_trust(&role.trust_policy, &trust_request);
        if decision != Decision::Allow {
            tracing::info!(role = role_arn, caller = %caller.principal_arn, action, ?decision, "assume role denied by trust policy");
            return Err(denied_for(action));
        }
    }
    if caller.is_role_session() && request.duration > CHAINED_MAX {
        return Err(validation(
            "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.",
        ));
    }
    if request.duration > role.max_session_seconds {
        return Err(validation(
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
        ));
    }
    Ok((arn, role))
}

/// Remembers the session moto issued (its XML answer): whose keys they
/// are until when, the AssumeRole for the audit, and the secrets, which
/// must never show up in muster's logs.
fn remember(
    sim: &SimState,
    caller: &Caller,
    request: &AssumeRequest,
    (arn, role): (&muster_common::domain::RoleArn, &crate::moto::RoleInfo),
    granted: u64,
    answer: &str,
) {
    let (Some(access_key), Some(session_arn)) = (xml_text(answer, "AccessKeyId"), xml_text(answer, "Arn")) else {
        tracing::warn!("AssumeRole answer from moto had no credentials");
        return;
    };
    let secret = xml_text(answer, "SecretAccessKey").unwrap_or_default();
    sim.identities.register(
        &access_key,
        &secret,
        Caller {
            account: arn.account.as_str().to_owned(),
            principal_arn: session_arn,
            role_arn: Some(role.arn.clone()),
        },
        SystemTime::now() + Duration::from_secs(granted),
    );
    sim.assumed.lock().expect("assumed lock").push(AssumedRole {
        at: chrono::Utc::now().to_rfc3339(),
        role_arn: role.arn.clone(),
        session_name: request.session_name.clone(),
        source_identity: request.source_identity.clone(),
        tags: request.tags.clone(),
        caller: caller.principal_arn.clone(),
    });
    sim.issued_secrets.lock().expect("issued lock").extend(
        [xml_text(answer, "SecretAccessKey"), xml_text(answer, "SessionToken")]
            .into_iter()
            .flatten(),
    );
    tracing::debug!(role = %role.arn, session = %request.session_name, granted, "role assumed");
}

/// Handles STS GetCallerIdentity for a session the sim handed out, as AWS
/// does: the signature (header or presigned query) must be the session
/// secret's, and the answer names the session. Signing in to muster rests on
/// this. (Static keys, whose secrets the sim does not know, are left to moto.)
pub fn get_caller_identity(access_key: &str, caller: &Caller, secret: &str, request: &sigv4::Request<'_>) -> Resp {
    if let Err(refusal) = sigv4::verify(request, secret, SystemTime::now()) {
        let (status, code, message) = match refusal {
            sigv4::Refusal::Incomplete(why) => (StatusCode::BAD_REQUEST, "IncompleteSignature", why),
            sigv4::Refusal::Expired => (StatusCode::FORBIDDEN, "AccessDenied", "Request has expired".to_owned()),
            sigv4::Refusal::Skewed(why) => (StatusCode::FORBIDDEN, "SignatureDoesNotMatch", why),
            sigv4::Refusal::Mismatch => (
                StatusCode::FORBIDDEN,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. \
                 Check your AWS Secret Access Key and signing method."
                    .to_owned(),
            ),
        };
        tracing::info!(access_key, code, message, "GetCallerIdentity refused");
        return sts_error(status, code, &message);
    }
    let session = caller.principal_arn.rsplit('/').next().unwrap_or_default();
    let role = caller.role_arn.as_deref().unwrap_or_default();
    let user_id = format!(
        "AROA{}:{session}",
        hex::encode_upper(&sha2::Sha256::digest(role.as_bytes())[..8])
    );
    let body = format!(
        "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetCallerIdentityResult>\
         <Arn>{}</Arn><UserId>{}</UserId><Account>{}</Account></GetCallerIdentityResult>\
         <ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></GetCallerIdentityResponse>",
        protocol::xml_escape(&caller.principal_arn),
        protocol::xml_escape(&user_id),
        caller.account,
        uuid::Uuid::new_v4()
    );
    http::Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/xml")
        .body(http_body_util::Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

/// A presigned GetCallerIdentity of a static key: the sim cannot verify its
/// signature (it does not know static keys' secrets), and moto would take
/// the GET for S3's ListBuckets, so it is refused as AWS refuses an unknown
/// key.
pub fn unverifiable_presigned(access_key: &str) -> Resp {
    tracing::info!(access_key, "presigned GetCallerIdentity of a static key refused");
    sts_error(
        StatusCode::FORBIDDEN,
        "InvalidClientTokenId",
        "The security token included in the request is invalid. (muster-sim verifies presigned requests of the \
         role sessions it issued only: sign in with a role profile)",
    )
}

/// The text of the first `<tag>...</tag>` in an XML document.
pub fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(xml[start..end].to_owned())
}

/// Only AssumeRole needs enforcement; everything else STS does is forwarded.
pub fn is_assume_role(method: &Method, api: &str) -> bool {
    method == Method::POST && api == "AssumeRole"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_xml_text() {
        let xml = "<A><Credentials><AccessKeyId>ASIA1</AccessKeyId></Credentials><AssumedRoleUser><Arn>arn:x</Arn></AssumedRoleUser></A>";
        assert_eq!(xml_text(xml, "AccessKeyId").as_deref(), Some("ASIA1"));
        assert_eq!(xml_text(xml, "Arn").as_deref(), Some("arn:x"));
        assert_eq!(xml_text(xml, "Nope"), None);
    }
}
