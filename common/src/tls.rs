//! TLS for muster's gRPC connections (rustls, through tonic).
//!
//! Certificates and keys are PEM. Every setting that takes one accepts a file
//! path or the PEM text itself, so a container can take it from a secret in
//! an environment variable (`MUSTER_TLS_KEY="-----BEGIN PRIVATE KEY-----..."`).
//!
//! Plaintext is for loopback only: a client refuses `http://` to any other
//! host, and a server refuses to serve plaintext on any other address.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A TLS setting that is missing, unreadable or unsafe, named by its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct TlsError {
    /// The setting, as the caller names it (`tls_ca`, `--tls-ca`).
    pub field: String,
    /// What is wrong with it.
    pub rule: String,
}

fn error(field: &str, rule: impl std::fmt::Display) -> TlsError {
    TlsError {
        field: field.to_owned(),
        rule: rule.to_string(),
    }
}

/// Makes ring the process's TLS crypto provider. The AWS SDK brings
/// aws-lc-rs too, and with two providers rustls will not pick one itself.
/// Every function here that sets up TLS calls it; calling it again is free.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another provider was installed first, which serves too.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// PEM from `value`: the text itself when it starts with `-----BEGIN`, else
/// the contents of the file it names.
pub fn read_pem(field: &str, value: &str) -> Result<Vec<u8>, TlsError> {
    let trimmed = value.trim_start();
    let text = if trimmed.starts_with("-----BEGIN") {
        trimmed.as_bytes().to_vec()
    } else {
        std::fs::read(value).map_err(|e| error(field, format_args!("cannot read {value}: {e}")))?
    };
    if !text.windows(10).any(|w| w == b"-----BEGIN") {
        let source = if trimmed.starts_with("-----BEGIN") {
            "the value"
        } else {
            value
        };
        return Err(error(field, format_args!("{source} holds no PEM block")));
    }
    Ok(text)
}

/// True when `host` (a name or an address, IPv6 with or without brackets) is
/// this machine only.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Refuses plaintext on anything but loopback.
pub fn check_plaintext_bind(field: &str, addr: SocketAddr) -> Result<(), TlsError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(error(
            field,
            format_args!(
                "{addr} is not a loopback address, and --insecure serves plaintext; serve TLS (--tls-cert, --tls-key) \
                 or listen on 127.0.0.1"
            ),
        ))
    }
}

/// How a client reaches a muster server.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// CA certificate(s) the server's certificate must chain to (PEM, or a
    /// path to it).
    pub ca: Option<String>,
    /// Client certificate for mTLS (PEM, or a path).
    pub cert: Option<String>,
    /// Its private key (PEM, or a path).
    pub key: Option<String>,
    /// Name to expect in the server's certificate, when it differs from the
    /// URL's host.
    pub server_name: Option<String>,
}

impl ClientTls {
    /// True when any TLS setting is given.
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some() || self.server_name.is_some()
    }
}

/// How often a connection to the controller is pinged, busy or idle.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// How long a ping may go unanswered before the connection counts as dead.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// An endpoint for `url` (field `url_field`): TLS for `https://`, plaintext
/// for `http://` to loopback only. `prefix` names the TLS settings in errors
/// (e.g. "tls" gives "tls_ca").
pub fn endpoint(url_field: &str, url: &str, prefix: &str, tls: &ClientTls) -> Result<Endpoint, TlsError> {
    let uri: http::Uri = url.parse().map_err(|_| {
        error(
            url_field,
            format_args!("'{url}' is not a URL (for example https://muster.internal:7070)"),
        )
    })?;
    let host = uri
        .host()
        .ok_or_else(|| error(url_field, format_args!("'{url}' has no host")))?
        .to_owned();
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| error(url_field, format_args!("'{url}' is not a URL: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        // HTTP/2 pings find a dead connection (the controller's host gone,
        // a black-holed route) in seconds; without them every call on it
        // times out until the kernel gives up on it, some 15 minutes. They
        // also keep a long watch alive through load balancers that close
        // idle connections.
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    match uri.scheme_str() {
        Some("https") => {
            install_crypto_provider();
            let ca_field = format!("{prefix}_ca");
            let ca = tls.ca.as_deref().ok_or_else(|| {
                error(
                    &ca_field,
                    format_args!("required for {url}: the CA that signed the server's certificate"),
                )
            })?;
            let mut config = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read_pem(&ca_field, ca)?))
                .domain_name(tls.server_name.clone().unwrap_or(host));
            match (&tls.cert, &tls.key) {
                (Some(cert), Some(key)) => {
                    config = config.identity(Identity::from_pem(
                        read_pem(&format!("{prefix}_cert"), cert)?,
                        read_pem(&format!("{prefix}_key"), key)?,
                    ));
                }
                (None, None) => {}
                (Some(_), None) => return Err(error(&format!("{prefix}_key"), "required with a client certificate")),
                (None, Some(_)) => return Err(error(&format!("{prefix}_cert"), "required with a client key")),
            }
            endpoint
                .tls_config(config)
                .map_err(|e| error(url_field, format_args!("TLS setup failed: {e}")))
        }
        Some("http") => {
            if !is_loopback_host(&host) {
                return Err(error(
                    url_field,
                    format_args!("{url} would send calls in the clear; use https:// (plaintext is for loopback only)"),
                ));
            }
            if tls.is_set() {
                return Err(error(
                    url_field,
                    format_args!("{url} is plaintext, but TLS settings are given; use https://"),
                ));
            }
            Ok(endpoint)
        }
        _ => Err(error(
            url_field,
            format_args!("'{url}' must start with https:// (or http:// to loopback)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_only_to_and_on_loopback() {
        assert!(endpoint("controller", "http://127.0.0.1:7071", "tls", &ClientTls::default()).is_ok());
        assert!(endpoint("controller", "http://localhost:7071", "tls", &ClientTls::default()).is_ok());
        assert!(endpoint("controller", "http://[::1]:7071", "tls", &ClientTls::default()).is_ok());
        let err = endpoint("controller", "http://10.0.0.5:7071", "tls", &ClientTls::default()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("controller: http://10.0.0.5:7071 would send calls in the clear"),
            "{err}"
        );
        let err = endpoint("controller", "https://muster:7071", "tls", &ClientTls::default()).unwrap_err();
        assert!(
            err.to_string().starts_with("tls_ca: required for https://muster:7071"),
            "{err}"
        );
        let err = endpoint("controller", "ftp://x", "tls", &ClientTls::default()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("controller: 'ftp://x' must start with https://"),
            "{err}"
        );

        assert!(check_plaintext_bind("listen", "127.0.0.1:7070".parse().unwrap()).is_ok());
        assert!(check_plaintext_bind("listen", "[::1]:7070".parse().unwrap()).is_ok());
        let err = check_plaintext_bind("listen", "0.0.0.0:7070".parse().unwrap()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("listen: 0.0.0.0:7070 is not a loopback address"),
            "{err}"
        );
    }

    #[test]
    fn pem_is_inline_or_a_file() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(read_pem("tls_ca", pem).unwrap(), pem.as_bytes());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, pem).unwrap();
        assert_eq!(read_pem("tls_ca", path.to_str().unwrap()).unwrap(), pem.as_bytes());
        let err = read_pem("tls_ca", "/nonexistent/ca.pem").unwrap_err();
        assert!(
            err.to_string().starts_with("tls_ca: cannot read /nonexistent/ca.pem"),
            "{err}"
        );
        std::fs::write(&path, "not pem").unwrap();
        let err = read_pem("tls_ca", path.to_str().unwrap()).unwrap_err();
        assert!(err.to_string().ends_with("holds no PEM block"), "{err}");
    }
}
