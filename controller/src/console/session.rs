//! Who a browser is: the API's own credentials, carried in a cookie.
//!
//! Signing in checks a token (an API token or an AWS sign-in token, as
//! `muster` sends them) with WhoAmI and keeps it in an HttpOnly, SameSite
//! cookie; every page then calls CampaignService in process with that token
//! as its bearer, and with the connection's own extensions, so a browser
//! that presents a client certificate is that client. The controller keeps
//! no sessions: any controller behind a load balancer serves any page.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use sha2::{Digest, Sha256};
use tonic::metadata::{MetadataMap, MetadataValue};

/// The cookie that carries the signed-in token.
pub const COOKIE: &str = "muster_console";

/// How long a browser keeps the cookie. A token that expires or is revoked
/// earlier stops working at once: every page checks it.
pub const COOKIE_MAX_AGE_SECS: u64 = 12 * 3600;

/// The caller of one console request.
#[derive(Debug, Clone)]
pub struct Caller {
    token: Option<String>,
    extensions: axum::http::Extensions,
}

impl Caller {
    /// A caller with `token` (or none) over the connection of `parts`.
    pub fn with_token(parts: &Parts, token: Option<String>) -> Self {
        Self {
            token,
            extensions: parts.extensions.clone(),
        }
    }

    /// Whether a token came with the request.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
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
        tonic::Request::from_parts(metadata, self.extensions.clone(), message)
    }

    /// The form field every action must carry: derived from the caller's
    /// token, so another site's form cannot supply it (with the SameSite
    /// cookie and the Origin check, the third guard against cross-site
    /// requests).
    pub fn csrf(&self) -> String {
        csrf_of(self.token.as_deref().unwrap_or(""))
    }
}

fn csrf_of(token: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"muster-console-csrf\0")
        .chain_update(token.as_bytes())
        .finalize();
    hex::encode(&digest[..16])
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let token = cookie(&parts.headers, COOKIE);
        Ok(Self::with_token(parts, token))
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
    // A token is sent back verbatim: only cookie-safe characters pass.
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic() && !b"\";,\\".contains(&b)) {
        return None;
    }
    HeaderValue::try_from(format!(
        "{COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={COOKIE_MAX_AGE_SECS}{}",
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
