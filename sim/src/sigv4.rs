//! Reads the SigV4 credential scope of a request: who signed it (the access key)
//! and for which region and service. This is how the sim routes: AWS itself
//! routes by host name, but every sandbox request goes to one endpoint.
//!
//! Signatures are not verified: moto does not verify them either, and the
//! sandbox's security boundary is the loopback interface.

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
}
