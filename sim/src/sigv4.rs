//! Reads the SigV4 credential scope of a request: who signed it (the access key)
//! and for which region and service. This is how the sim routes: AWS itself
//! routes by host name, but every sandbox request goes to one endpoint.
//!
//! Signatures are verified where a verdict depends on them: STS
//! GetCallerIdentity signed with a key whose secret the sim knows (the
//! sessions it handed out), which is what signing in to muster with an AWS
//! identity rests on. Everything else is routed unverified, as moto does:
//! the sandbox's security boundary is the loopback interface.

use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};

use http::HeaderMap;

/// The credential scope of a signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The access key id that signed the request.
    pub access_key: String,
    /// The signing region, e.g. "eu-west-1".
    pub region: String,
    /// The signing service, e.g. "ssm".
    pub service: String,
}

/// Finds the scope in the Authorization header, or in a presigned URL's
/// X-Amz-Credential parameter.
pub fn scope(headers: &HeaderMap, query: Option<&str>) -> Option<Scope> {
    if let Some(auth) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let credential = auth
            .split([' ', ','])
            .find_map(|part| part.trim().strip_prefix("Credential="))?;
        return parse_credential(credential);
    }
    let query = query?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "X-Amz-Credential")
        .and_then(|(_, v)| parse_credential(&v))
}

fn parse_credential(credential: &str) -> Option<Scope> {
    // AKID/20261122/us-east-1/ssm/aws4_request
    let mut parts = credential.split('/');
    let access_key = parts.next()?.to_owned();
    let _date = parts.next()?;
    let region = parts.next()?.to_owned();
    let service = parts.next()?.to_owned();
    if access_key.is_empty() || region.is_empty() || service.is_empty() {
        return None;
    }
    Some(Scope {
        access_key,
        region,
        service,
    })
}

/// Why a signature was not accepted, as STS names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A required part is missing or malformed (`IncompleteSignature`).
    Incomplete(String),
    /// A presigned request past its X-Amz-Expires (`AccessDenied`:
    /// "Request has expired").
    Expired,
    /// Dated too far from now (`SignatureDoesNotMatch`: "Signature not yet
    /// current" or "Signature expired").
    Skewed(String),
    /// The signature is not the one the secret makes (`SignatureDoesNotMatch`).
    Mismatch,
}

/// How far a request's date may be from the clock, as AWS allows.
const MAX_SKEW: Duration = Duration::from_secs(5 * 60);
/// The longest a presigned URL may be valid (SigV4's limit).
const MAX_EXPIRES: u64 = 7 * 24 * 3600;

/// A request as received, for checking its signature.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// GET, POST, ...
    pub method: &'a str,
    /// The path as sent (percent-encoded).
    pub path: &'a str,
    /// The query string as sent, without '?'.
    pub query: Option<&'a str>,
    /// Every header.
    pub headers: &'a HeaderMap,
    /// The body.
    pub body: &'a [u8],
}

/// The parts of a signature, from the Authorization header or the query.
struct Signature {
    credential: String,
    amz_date: String,
    signed_headers: String,
    signature: String,
    expires: Option<u64>,
    presigned: bool,
}

/// Checks `request`'s SigV4 signature (in the Authorization header or a
/// presigned query) against `secret`, at `now`.
pub fn verify(request: &Request<'_>, secret: &str, now: SystemTime) -> Result<(), Refusal> {
    let params: Vec<(String, String)> = request
        .query
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let signature = signature_of(request.headers, &params)?;
    let signed_at = parse_amz_date(&signature.amz_date)
        .ok_or_else(|| Refusal::Incomplete(format!("X-Amz-Date '{}' is not yyyyMMddTHHmmssZ", signature.amz_date)))?;
    if signed_at > now + MAX_SKEW {
        return Err(Refusal::Skewed("Signature not yet current".into()));
    }
    match signature.expires {
        Some(expires) if signed_at + Duration::from_secs(expires) < now => return Err(Refusal::Expired),
        None if signed_at + MAX_SKEW < now => return Err(Refusal::Skewed("Signature expired".into())),
        _ => {}
    }
    let mut scope = signature.credential.splitn(2, '/');
    let (Some(_access_key), Some(scope)) = (scope.next(), scope.next()) else {
        return Err(Refusal::Incomplete("Credential has no scope".into()));
    };
    let parts: Vec<&str> = scope.split('/').collect();
    let [date, region, service, "aws4_request"] = parts.as_slice() else {
        return Err(Refusal::Incomplete(format!(
            "Credential scope '{scope}' is not date/region/service/aws4_request"
        )));
    };
    if !signature.amz_date.starts_with(date) {
        return Err(Refusal::Incomplete("the Credential's date is not X-Amz-Date's".into()));
    }
    let canonical = canonical_request(request, &params, &signature)?;
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        signature.amz_date,
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    for part in [*region, *service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let expected = hex::encode(hmac(&key, string_to_sign.as_bytes()));
    if constant_time_eq(expected.as_bytes(), signature.signature.as_bytes()) {
        Ok(())
    } else {
        Err(Refusal::Mismatch)
    }
}

fn signature_of(headers: &HeaderMap, params: &[(String, String)]) -> Result<Signature, Refusal> {
    let missing = |name: &str| Refusal::Incomplete(format!("the request has no {name}"));
    if let Some(auth) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let rest = auth
            .strip_prefix("AWS4-HMAC-SHA256 ")
            .ok_or_else(|| Refusal::Incomplete("the Authorization header is not AWS4-HMAC-SHA256".into()))?;
        let field = |name: &str| {
            rest.split(',')
                .find_map(|part| part.trim().strip_prefix(name)?.strip_prefix('='))
                .map(str::to_owned)
                .ok_or_else(|| missing(name))
        };
        let amz_date = headers
            .get("x-amz-date")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| missing("X-Amz-Date header"))?;
        return Ok(Signature {
            credential: field("Credential")?,
            amz_date: amz_date.to_owned(),
            signed_headers: field("SignedHeaders")?,
            signature: field("Signature")?,
            expires: None,
            presigned: false,
        });
    }
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| missing(name))
    };
    if param("X-Amz-Algorithm")? != "AWS4-HMAC-SHA256" {
        return Err(Refusal::Incomplete("X-Amz-Algorithm is not AWS4-HMAC-SHA256".into()));
    }
    let expires = param("X-Amz-Expires")?;
    let expires = expires
        .parse::<u64>()
        .ok()
        .filter(|e| *e <= MAX_EXPIRES)
        .ok_or_else(|| Refusal::Incomplete(format!("X-Amz-Expires '{expires}' is not 0 to {MAX_EXPIRES} seconds")))?;
    Ok(Signature {
        credential: param("X-Amz-Credential")?,
        amz_date: param("X-Amz-Date")?,
        signed_headers: param("X-Amz-SignedHeaders")?,
        signature: param("X-Amz-Signature")?,
        expires: Some(expires),
        presigned: true,
    })
}

/// The canonical request of SigV4 (path segments encoded again, as every
/// service but S3 expects).
fn canonical_request(
    request: &Request<'_>,
    params: &[(String, String)],
    signature: &Signature,
) -> Result<String, Refusal> {
    let path = if request.path.is_empty() { "/" } else { request.path };
    let canonical_path: Vec<String> = path.split('/').map(uri_encode).collect();
    let mut query: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| !(signature.presigned && k == "X-Amz-Signature"))
        .map(|(k, v)| (uri_encode(k), uri_encode(v)))
        .collect();
    query.sort();
    let query: Vec<String> = query.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut headers = String::new();
    for name in signature.signed_headers.split(';') {
        let values: Vec<String> = request
            .headers
            .get_all(name)
            .iter()
            .map(|v| collapse_spaces(&String::from_utf8_lossy(v.as_bytes())))
            .collect();
        if values.is_empty() {
            return Err(Refusal::Incomplete(format!(
                "signed header '{name}' is not in the request"
            )));
        }
        headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let payload = match request
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
    {
        Some(hash) => hash.to_owned(),
        None => hex::encode(Sha256::digest(request.body)),
    };
    Ok(format!(
        "{}\n{}\n{}\n{headers}\n{}\n{payload}",
        request.method,
        canonical_path.join("/"),
        query.join("&"),
        signature.signed_headers
    ))
}

/// SigV4's URI encoding: everything but A-Z a-z 0-9 - _ . ~ as %XX.
fn uri_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn collapse_spaces(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses `20261203T101500Z`.
fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let at = chrono::NaiveDateTime::parse_from_str(text, "%Y%m%dT%H%M%SZ").ok()?;
    let secs = u64::try_from(at.and_utc().timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_authorization_header() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            "AWS4-HMAC-SHA256 Credential=ASIAXYZ/20261122/eu-west-1/ssm/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            scope(&headers, None),
            Some(Scope {
                access_key: "ASIAXYZ".into(),
                region: "eu-west-1".into(),
                service: "ssm".into()
            })
        );
    }

    #[test]
    fn reads_presigned_urls_and_rejects_garbage() {
        let q = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20261122%2Fus-east-1%2Fs3%2Faws4_request";
        assert_eq!(scope(&HeaderMap::new(), Some(q)).unwrap().service, "s3");
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert_eq!(scope(&headers, None), None);
    }

    fn presigned(secret: &str, at: SystemTime, expires: u64, server_id: &str) -> (String, HeaderMap) {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign};
        let identity = aws_credential_types::Credentials::new("ASIATEST", secret, Some("tok".into()), None, "t").into();
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(Duration::from_secs(expires));
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("sts")
            .time(at)
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let url = "http://127.0.0.1:4566/?Action=GetCallerIdentity&Version=2011-06-15";
        let headers = [("host", "127.0.0.1:4566"), ("x-muster-server-id", server_id)];
        let signable = SignableRequest::new("GET", url, headers.into_iter(), SignableBody::Bytes(&[])).unwrap();
        let mut request = http::Request::builder().uri(url).body(()).unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        instructions.apply_to_request_http1x(&mut request);
        let query = request.uri().query().unwrap().to_owned();
        let mut sent = HeaderMap::new();
        sent.insert("host", "127.0.0.1:4566".parse().unwrap());
        sent.insert("x-muster-server-id", "muster-test".parse().unwrap());
        (query, sent)
    }

    fn check(query: &str, headers: &HeaderMap, secret: &str, now: SystemTime) -> Result<(), Refusal> {
        let request = Request {
            method: "GET",
            path: "/",
            query: Some(query),
            headers,
            body: b"",
        };
        verify(&request, secret, now)
    }

    #[test]
    fn verifies_what_the_aws_signer_presigns() {
        let now = SystemTime::now();
        let (query, headers) = presigned("s3cret", now, 60, "muster-test");
        assert_eq!(check(&query, &headers, "s3cret", now), Ok(()));
        assert_eq!(check(&query, &headers, "other", now), Err(Refusal::Mismatch));
        let altered = query.replace("GetCallerIdentity", "GetSessionToken");
        assert_eq!(check(&altered, &headers, "s3cret", now), Err(Refusal::Mismatch));
        assert_eq!(
            check(&query, &headers, "s3cret", now + Duration::from_secs(61)),
            Err(Refusal::Expired)
        );
        assert!(matches!(
            check(&query, &headers, "s3cret", now - Duration::from_secs(600)),
            Err(Refusal::Skewed(_))
        ));
    }

    #[test]
    fn the_signed_server_id_must_be_the_one_sent() {
        let now = SystemTime::now();
        let (query, headers) = presigned("s3cret", now, 60, "another-controller");
        assert_eq!(check(&query, &headers, "s3cret", now), Err(Refusal::Mismatch));
        let (query, _) = presigned("s3cret", now, 60, "muster-test");
        let mut without = HeaderMap::new();
        without.insert("host", "127.0.0.1:4566".parse().unwrap());
        assert!(
            matches!(check(&query, &without, "s3cret", now), Err(Refusal::Incomplete(m)) if m.contains("x-muster-server-id"))
        );
    }
}
