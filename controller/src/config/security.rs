//! The security settings checked together: TLS or `--insecure`, the
//! workers' and clients' CAs, callers, the policy file and sign-in.

use std::net::SocketAddr;
use std::path::PathBuf;

use muster_common::config::ConfigError;
use muster_common::tls::{check_plaintext_bind, read_pem};

use crate::auth::{Auth, ClientEntry, TokenEntry};
use crate::{Security, ServerTls};

/// The settings [`security`] checks, as the configuration resolved them.
pub(super) struct SecurityInputs {
    pub(super) insecure: bool,
    pub(super) tls_cert: Option<String>,
    pub(super) tls_key: Option<String>,
    pub(super) worker_ca: Option<String>,
    pub(super) worker_trust_domain: Option<String>,
    pub(super) client_ca: Option<String>,
    pub(super) tokens: Vec<TokenEntry>,
    pub(super) clients: Vec<ClientEntry>,
    pub(super) policy: Option<PathBuf>,
    pub(super) signin_server_id: Option<String>,
    pub(super) aws_endpoint: Option<String>,
}

/// `--insecure`: plaintext, on loopback only, and no TLS setting besides.
fn plaintext(
    inputs: &SecurityInputs,
    auth: Auth,
    listen: SocketAddr,
    worker_listen: SocketAddr,
) -> Result<Security, ConfigError> {
    if inputs.tls_cert.is_some()
        || inputs.tls_key.is_some()
        || inputs.worker_ca.is_some()
        || inputs.worker_trust_domain.is_some()
        || inputs.client_ca.is_some()
    {
        return Err(ConfigError::invalid(
            "insecure",
            "TLS settings are given too; choose TLS or --insecure",
        ));
    }
    check_plaintext_bind("listen", listen)?;
    check_plaintext_bind("worker_listen", worker_listen)?;
    if auth.has_clients() {
        return Err(ConfigError::invalid(
            "api_client",
            "client certificates need TLS, and --insecure serves plaintext",
        ));
    }
    // Tokens still count over loopback plaintext; without any, every local
    // caller may do anything.
    Ok(Security::new(None, if auth.is_empty() { Auth::open() } else { auth }))
}

/// The listeners' TLS and the callers, or which setting is wrong.
pub(super) fn security(
    inputs: SecurityInputs,
    listen: SocketAddr,
    worker_listen: SocketAddr,
) -> Result<Security, ConfigError> {
    let mut auth = Auth::new(&inputs.tokens, &inputs.clients, inputs.policy.as_deref())?;
    if let Some(id) = &inputs.signin_server_id {
        let signin = crate::signin::SignIn::new(id, inputs.aws_endpoint.as_deref())?;
        auth = auth.with_signin(signin);
    }
    if inputs.insecure {
        return plaintext(&inputs, auth, listen, worker_listen);
    }
    let (Some(cert), Some(key)) = (inputs.tls_cert, inputs.tls_key) else {
        return Err(ConfigError::missing(
            "tls_cert",
            "the controller serves TLS and needs --tls-cert and --tls-key (or --insecure for plaintext on loopback)",
        ));
    };
    let worker_ca = inputs.worker_ca.ok_or_else(|| {
        ConfigError::missing(
            "worker_ca",
            "the CA that signs the workers' client certificates (WorkerService demands mTLS)",
        )
    })?;
    let worker_ca = read_pem("worker_ca", &worker_ca)?;
    let client_ca = inputs.client_ca.map(|ca| read_pem("client_ca", &ca)).transpose()?;
    if let Some(client_ca) = &client_ca
        && shares_a_certificate(&worker_ca, client_ca)
    {
        return Err(ConfigError::invalid(
            "worker_ca",
            "holds a CA that client_ca holds too; workers need a trust anchor of their own, so that no API \
             client's certificate can act as a worker",
        ));
    }
    let worker_trust_domain = inputs
        .worker_trust_domain
        .unwrap_or_else(|| muster_common::identity::DEFAULT_TRUST_DOMAIN.to_owned());
    muster_common::identity::check_trust_domain(&worker_trust_domain)
        .map_err(|e| ConfigError::invalid("worker_trust_domain", e))?;
    if auth.has_clients() && client_ca.is_none() {
        return Err(ConfigError::missing(
            "client_ca",
            "client certificates are configured (--api-client or [auth] clients) and need the CA that signs them",
        ));
    }
    let policy_in_s3 = matches!(auth.policy_source(), Some(crate::auth::PolicySource::S3 { .. }));
    if auth.is_empty() && !policy_in_s3 {
        return Err(ConfigError::invalid(
            "auth",
            "no API token or client certificate is configured, so nobody could call the campaign API; add \
             --api-token (see muster-controller new-token), --api-client or a --policy file",
        ));
    }
    Ok(Security::new(
        Some(ServerTls {
            cert: read_pem("tls_cert", &cert)?,
            key: read_pem("tls_key", &key)?,
            worker_ca,
            worker_trust_domain,
            client_ca,
        }),
        auth,
    ))
}

/// Whether two PEM bundles hold a certificate in common.
fn shares_a_certificate(a: &[u8], b: &[u8]) -> bool {
    let ders = |pem: &[u8]| -> Vec<Vec<u8>> {
        x509_parser::pem::Pem::iter_from_buffer(pem)
            .filter_map(Result::ok)
            .map(|block| block.contents)
            .collect()
    };
    let b = ders(b);
    ders(a).iter().any(|der| b.contains(der))
}
