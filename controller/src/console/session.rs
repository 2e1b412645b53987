//! Who a browser is: the API's own credentials, carried in a cookie.
//!
//! Signing in with a token checks it with WhoAmI and keeps it in an
//! HttpOnly, SameSite cookie; every page then calls CampaignService in
//! process with that token as its bearer, and with the connection's own
//! extensions, so a browser that presents a client certificate is that
//! client. An AWS sign-in token lives five minutes, too short for a page
//! left open: the console verifies it once (STS, as the API does) and keeps
//! the identity STS named in a session cookie sealed with the controller's
//! [`SessionKey`], for [`SESSION_SECS`]; the policy's grants are read at
//! every request. The controller keeps no sessions: any controller behind a
//! load balancer (sharing the TLS key) serves any page.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tonic::metadata::{MetadataMap, MetadataValue};

use crate::auth::ConsoleSession;
use crate::signin::AwsIdentity;

/// The cookie that carries the signed-in token.
pub const COOKIE: &str = "muster_console";

/// How long a browser keeps a token's cookie. A token that expires or is
/// revoked earlier stops working at once: every page checks it.
pub const COOKIE_MAX_AGE_SECS: i64 = 12 * 3600;

/// How long a console session of an AWS sign-in lasts.
pub const SESSION_SECS: i64 = 8 * 3600;

/// The prefix of a sealed session in the cookie (a token never has it).
const SESSION_PREFIX: &str = "s1.";

/// The key that seals AWS sign-in sessions: derived from the controller's
/// TLS private key, so every controller serving the same certificate opens
/// the others' sessions and a new key ends them all; random (sessions end
/// with the process) without TLS.
#[derive(Clone)]
pub struct SessionKey([u8; 32]);

impl SessionKey {
    /// The key of a controller with this TLS private key (PEM), or a random
    /// one.
    pub fn new(tls_key: Option<&[u8]>) -> Self {
        match tls_key {
            Some(pem) => Self(
                Sha256::new()
                    .chain_update(b"muster-console-session\0")
                    .chain_update(pem)
                    .finalize()
                    .into(),
            ),
            None => Self(rand::random()),
        }
    }

    fn mac(&self, body: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(body.as_bytes());
        mac
    }

    /// The cookie value of `aws`'s session, ending `SESSION_SECS` after
    /// `now` (epoch seconds).
    pub fn seal(&self, aws: &AwsIdentity, now: i64) -> String {
        let body = URL_SAFE_NO_PAD.encode(
            serde_json::json!({
                "arn": aws.arn,
                "account": aws.account,
                "user_id": aws.user_id,
                "exp": now + SESSION_SECS,
            })
            .to_string(),
        );
        let tag = URL_SAFE_NO_PAD.encode(self.mac(&body).finalize().into_bytes());
        format!("{SESSION_PREFIX}{body}.{tag}")
    }

    /// The identity of a session this key sealed that has not ended at
    /// `now`; none for anything else.
    pub fn open(&self, value: &str, now: i64) -> Option<AwsIdentity> {
        let (body, tag) = value.strip_prefix(SESSION_PREFIX)?.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(body).verify_slice(&tag).ok()?;
        let fields: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        if fields["exp"].as_i64()? <= now {
            return None;
        }
        let text = |k: &str| fields[k].as_str().map(str::to_owned);
        Some(AwsIdentity {
            arn: text("arn")?,
            account: text("account")?,
            user_id: text("user_id")?,
        })
    }
}

/// The caller of one console request.
#[derive(Debug, Clone)]
pub struct Caller {
    token: Option<String>,
    aws: Option<AwsIdentity>,
    extensions: axum::http::Extensions,
}

impl Caller {
    /// A caller with `token` (or none) over the connection of `parts`.
    pub fn with_token(parts: &Parts, token: Option<String>) -> Self {
        Self {
            token,
            aws: None,
            extensions: parts.extensions.clone(),
        }
    }

    /// `message` as a CampaignService request from this caller.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut metadata = MetadataMap::new();
        if let Some(value) = self
            .token
            .as_ref()
            .and_then(|t| MetadataValue::try_from(format!("Bearer {t}")).ok())
        {
            metadata.insert("authorization", value);
        }
        let mut extensions = self.extensions.clone();
        if let Some(aws) = &self.aws {
            extensions.insert(ConsoleSession(aws.clone()));
        }
        tonic::Request::from_parts(metadata, extensions, message)
    }

    /// The form field every action must carry: derived from the caller's
    /// credential, so another site's form cannot supply it (with the
    /// SameSite cookie and the Origin check, the third guard against
    /// cross-site requests).
    pub fn csrf(&self) -> String {
        match (&self.token, &self.aws) {
            (Some(token), _) => csrf_of(token),
            (None, Some(aws)) => csrf_of(&format!("aws:{}", aws.arn)),
            (None, None) => csrf_of(""),
        }
    }
}

fn csrf_of(token: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"muster-console-csrf\0")
        .chain_update(token.as_bytes())
        .finalize();
    hex::encode(&digest[..16])
}

impl FromRequestParts<super::Console> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, console: &super::Console) -> Result<Self, Self::Rejection> {
        let mut caller = Self::with_token(parts, None);
        if let Some(value) = cookie(&parts.headers, COOKIE) {
            if value.starts_with(SESSION_PREFIX) {
                // An ended or forged session is no credential: the page
                // then asks for a sign-in.
                caller.aws = console.sessions.open(&value, chrono::Utc::now().timestamp());
            } else {
                caller.token = Some(value);
            }
        }
        Ok(caller)
    }
}

/// The value of cookie `name`, if the request carries it.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
        .filter(|value| !value.is_empty())
}

/// The Set-Cookie header that signs `token` in. `secure` when the console
/// is served over TLS (browsers then send it only there).
pub fn sign_in_cookie(token: &str, secure: bool) -> Option<HeaderValue> {
    cookie_of(token, COOKIE_MAX_AGE_SECS, secure)
}

/// The Set-Cookie header of a sealed AWS sign-in session.
pub fn session_cookie(sealed: &str, secure: bool) -> Option<HeaderValue> {
    cookie_of(sealed, SESSION_SECS, secure)
}

fn cookie_of(value: &str, max_age: i64, secure: bool) -> Option<HeaderValue> {
    // The value is sent back verbatim: only cookie-safe characters pass.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic() && !b"\";,\\".contains(&b)) {
        return None;
    }
    HeaderValue::try_from(format!(
        "{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    ))
    .ok()
}

/// The Set-Cookie header that signs out.
pub fn sign_out_cookie(secure: bool) -> HeaderValue {
    HeaderValue::try_from(format!(
        "{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    ))
    .expect("a constant header")
}

/// Refuses an action posted from another site: its Origin (sent by every
/// browser on a POST) must be this console's own host: the Host header
/// (HTTP/1.1) or the request's authority (HTTP/2).
pub fn same_origin(headers: &HeaderMap, uri: &Uri) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
    if host.is_empty() || origin_host != host {
        return Err(format!(
            "origin: a console action must come from the console's own pages ({origin} is not {host})"
        ));
    }
    Ok(())
}

/// Whether `next` is a console page to return to after signing in (never
/// another site).
pub fn safe_next(next: &str) -> bool {
    next.starts_with("/console/") && !next.starts_with("/console//") && !next.contains('\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn the_token_is_read_from_its_own_cookie_only() {
        let h = headers(&[("cookie", "other=x; muster_console=mst_abc; z=1")]);
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("mst_abc"));
        let h = headers(&[("cookie", "muster_console_old=mst_abc")]);
        assert_eq!(cookie(&h, COOKIE), None);
        let h = headers(&[("cookie", "muster_console=")]);
        assert_eq!(cookie(&h, COOKIE), None, "a signed-out cookie is no token");
    }

    #[test]
    fn the_cookie_is_http_only_same_site_and_secure_over_tls() {
        let c = sign_in_cookie("mst_abc", true).unwrap();
        let c = c.to_str().unwrap();
        for part in [
            "muster_console=mst_abc",
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Path=/console",
        ] {
            assert!(c.contains(part), "{c} lacks {part}");
        }
        assert!(
            !sign_in_cookie("mst_abc", false)
                .unwrap()
                .to_str()
                .unwrap()
                .contains("Secure")
        );
        assert!(
            sign_in_cookie("a;b", true).is_none(),
            "a token that would split the cookie is refused"
        );
        assert!(sign_in_cookie("", true).is_none());
    }

    #[test]
    fn the_csrf_field_depends_on_the_token() {
        let parts = axum::http::Request::new(()).into_parts().0;
        let a = Caller::with_token(&parts, Some("mst_a".into()));
        let b = Caller::with_token(&parts, Some("mst_b".into()));
        assert_ne!(a.csrf(), b.csrf());
        let again = Caller::with_token(&parts, Some("mst_a".into()));
        assert_eq!(a.csrf(), again.csrf(), "stable for one token: no server-side state");
        assert_eq!(a.csrf().len(), 32);
    }

    fn alice() -> AwsIdentity {
        AwsIdentity {
            arn: "arn:aws:sts::111111111111:assumed-role/AWSReservedSSO_PatchOperators_x/alice".into(),
            account: "111111111111".into(),
            user_id: "AROAEXAMPLE:alice".into(),
        }
    }

    #[test]
    fn a_session_opens_with_its_key_until_it_ends() {
        let key = SessionKey::new(Some(b"-----BEGIN PRIVATE KEY-----a"));
        let sealed = key.seal(&alice(), 1_000);
        assert!(sealed.starts_with("s1."));
        assert!(
            sign_in_cookie(&sealed, true).is_some(),
            "a sealed session is cookie-safe"
        );
        assert_eq!(key.open(&sealed, 1_000 + SESSION_SECS - 1), Some(alice()));
        assert_eq!(key.open(&sealed, 1_000 + SESSION_SECS), None, "it ends");
        let same_cert = SessionKey::new(Some(b"-----BEGIN PRIVATE KEY-----a"));
        assert_eq!(
            same_cert.open(&sealed, 1_000),
            Some(alice()),
            "another controller with the same key opens it"
        );
        let other = SessionKey::new(Some(b"-----BEGIN PRIVATE KEY-----b"));
        assert_eq!(other.open(&sealed, 1_000), None);
        // A session whose body was changed (another ARN) does not open.
        let (prefix_body, tag) = sealed.rsplit_once('.').unwrap();
        let body = URL_SAFE_NO_PAD.decode(prefix_body.trim_start_matches("s1.")).unwrap();
        let forged = String::from_utf8(body).unwrap().replace("alice", "mallory");
        let forged = format!("s1.{}.{tag}", URL_SAFE_NO_PAD.encode(forged));
        assert_eq!(key.open(&forged, 1_000), None);
        assert_eq!(key.open("mst_token", 1_000), None);
    }

    #[test]
    fn a_cross_site_post_is_refused_by_its_origin() {
        let path = Uri::from_static("/console/signin");
        let own = headers(&[("host", "127.0.0.1:8443"), ("origin", "https://127.0.0.1:8443")]);
        assert!(same_origin(&own, &path).is_ok());
        let refused = same_origin(
            &headers(&[("host", "127.0.0.1:8443"), ("origin", "https://evil.example")]),
            &path,
        );
        assert!(refused.unwrap_err().starts_with("origin: "));
        assert!(
            same_origin(&headers(&[("host", "h")]), &path).is_ok(),
            "no Origin: not a browser's cross-site form"
        );
        // HTTP/2 names the host in the request's authority, not a header.
        let h2 = Uri::from_static("https://localhost:8443/console/signin");
        assert!(same_origin(&headers(&[("origin", "https://localhost:8443")]), &h2).is_ok());
        assert!(same_origin(&headers(&[("origin", "https://evil.example")]), &h2).is_err());
    }

    #[test]
    fn sign_in_returns_only_to_console_pages() {
        assert!(safe_next("/console/campaigns/abc"));
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/console//evil.example",
            "/metrics",
            "/console\\x",
        ] {
            assert!(!safe_next(bad), "{bad}");
        }
    }
}
