//! Worker identities. Each worker holds its own client certificate, and the
//! certificate names the worker in a URI subject alternative name of the
//! SPIFFE form `spiffe://<trust-domain>/worker/<name>`. The controller knows
//! a worker by that name only (never by what the worker says about itself),
//! and binds every lease to it.

/// The trust domain of the development PKI, and the controller's default.
pub const DEFAULT_TRUST_DOMAIN: &str = "muster";

/// The SPIFFE ID of worker `name` in `trust_domain`.
pub fn worker_spiffe_id(trust_domain: &str, name: &str) -> String {
    format!("spiffe://{trust_domain}/worker/{name}")
}

/// Checks a worker name: 1 to 64 of `A-Z a-z 0-9 . _ -`, as it appears in a
/// SPIFFE ID's path and in logs and metric labels.
pub fn check_worker_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!(
            "'{}' is not a worker name (1 to 64 of A-Z a-z 0-9 . _ -)",
            crate::domain::clip(name)
        ));
    }
    Ok(())
}

/// Checks a SPIFFE trust domain: 1 to 255 of `a-z 0-9 . _ -`.
pub fn check_trust_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty()
        || domain.len() > 255
        || !domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!(
            "'{}' is not a SPIFFE trust domain (1 to 255 of a-z 0-9 . _ -)",
            crate::domain::clip(domain)
        ));
    }
    Ok(())
}

/// The worker a DER certificate names: the trust domain and the name from
/// its one `spiffe://<domain>/worker/<name>` URI SAN. Names what is wrong.
pub fn worker_identity(der: &[u8]) -> Result<(String, String), String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("the certificate cannot be read: {e}"))?;
    let mut found = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name
                && let Some(rest) = uri.strip_prefix("spiffe://")
            {
                found.push(rest.to_owned());
            }
        }
    }
    let [id] = found.as_slice() else {
        return Err(if found.is_empty() {
            "the certificate carries no worker identity (a URI SAN spiffe://<trust-domain>/worker/<name>)".to_owned()
        } else {
            "the certificate carries more than one SPIFFE ID".to_owned()
        });
    };
    let parsed = id
        .split_once("/worker/")
        .filter(|(domain, name)| check_trust_domain(domain).is_ok() && check_worker_name(name).is_ok());
    let Some((domain, name)) = parsed else {
        return Err(format!(
            "spiffe://{} is not a worker identity (spiffe://<trust-domain>/worker/<name>)",
            crate::domain::clip(id)
        ));
    };
    Ok((domain.to_owned(), name.to_owned()))
}

/// The worker named by the first certificate of a PEM chain.
pub fn worker_identity_pem(pem: &[u8]) -> Result<(String, String), String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("the certificate is not PEM: {e}"))?;
    worker_identity(&block.contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_domains_are_checked() {
        assert!(check_worker_name("worker-1.a_b").is_ok());
        for bad in ["", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_worker_name(bad).is_err(), "{bad}");
        }
        assert!(check_trust_domain("muster.example.com").is_ok());
        assert!(check_trust_domain("Muster").is_err());
        assert_eq!(worker_spiffe_id("muster", "w1"), "spiffe://muster/worker/w1");
    }

    #[test]
    fn a_certificate_that_is_not_one_is_named() {
        assert!(
            worker_identity(b"garbage")
                .unwrap_err()
                .starts_with("the certificate cannot be read")
        );
        assert!(
            worker_identity_pem(b"garbage")
                .unwrap_err()
                .starts_with("the certificate is not PEM")
        );
    }
}
