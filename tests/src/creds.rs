//! TLS and callers for a test controller: a fresh dev PKI, a `submit`, a
//! `read` and an `admin` token, the operator certificate (CN muster-admin,
//! admin), and a certificate of its own for each worker, from the worker CA.

use muster_controller::auth::{Auth, ClientEntry, TokenEntry, hash_token, new_token};
use muster_controller::{Security, ServerTls};
use muster_sim::certs::{ADMIN_CN, DevPki, DevPkiFiles};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// The server id AWS sign-in tokens are bound to.
pub const SERVER_ID: &str = "muster-test";

/// What a test needs to reach the controller as different callers.
#[derive(Debug)]
pub struct Creds {
    /// CA, controller and admin certificates, and the worker CA.
    pub pki: DevPki,
    /// The same, as files.
    pub files: DevPkiFiles,
    /// A token with the `submit` permission (name "ci").
    pub submit_token: String,
    /// A token with the `read` permission (name "dashboard").
    pub read_token: String,
    /// A token with the `admin` role (name "auditor"), for what only admins
    /// see in a browser, which presents no client certificate.
    pub admin_token: String,
    _dir: tempfile::TempDir,
}

impl Creds {
    /// A fresh PKI and tokens.
    pub fn new() -> Self {
        let pki = DevPki::generate().expect("dev certificates");
        let dir = tempfile::tempdir().expect("a temp dir");
        let files = pki.write(dir.path()).expect("the certificates are written");
        std::fs::write(dir.path().join("policy.toml"), "").expect("an empty policy");
        Self {
            pki,
            files,
            submit_token: new_token(),
            read_token: new_token(),
            admin_token: new_token(),
            _dir: dir,
        }
    }

    /// The token settings, as `--api-token` takes them.
    pub fn token_entries(&self) -> Vec<String> {
        vec![
            format!("ci:submit:{}", hash_token(&self.submit_token)),
            format!("dashboard:read:{}", hash_token(&self.read_token)),
            format!("auditor:admin:{}", hash_token(&self.admin_token)),
        ]
    }

    /// The controller's security: TLS on both APIs, workers by certificate,
    /// callers by token, the admin certificate, or the policy file, and AWS
    /// sign-in (server id [`SERVER_ID`]) verified by the sandbox's STS at
    /// `sts_endpoint`.
    pub fn security(&self, sts_endpoint: &str) -> Security {
        let tokens: Vec<TokenEntry> = self
            .token_entries()
            .iter()
            .map(|t| TokenEntry::parse("api_token", t).expect("a token entry"))
            .collect();
        let clients = [ClientEntry {
            name: ADMIN_CN.into(),
            permission: Some("admin".into()),
        }];
        let signin = muster_controller::signin::SignIn::new(SERVER_ID, Some(sts_endpoint)).expect("sign-in");
        let auth = Auth::new(&tokens, &clients, Some(&self.policy_path()))
            .expect("valid callers")
            .with_signin(signin);
        let mut security = Security::new(
            Some(ServerTls {
                cert: self.pki.controller.cert.clone().into_bytes(),
                key: self.pki.controller.key.clone().into_bytes(),
                worker_ca: self.pki.worker_ca.cert.clone().into_bytes(),
                worker_trust_domain: muster_common::identity::DEFAULT_TRUST_DOMAIN.into(),
                client_ca: Some(self.pki.ca.clone().into_bytes()),
            }),
            auth,
        );
        // Tests change the policy and wait for it: look often.
        security.policy_poll = std::time::Duration::from_millis(100);
        security
    }

    /// The controller's policy file (empty until a test writes it).
    pub fn policy_path(&self) -> std::path::PathBuf {
        self.files.ca.parent().expect("the PKI directory").join("policy.toml")
    }

    /// An endpoint at `https://localhost:<port>` trusting the dev CA, with the
    /// given client certificate (or none).
    pub fn endpoint(&self, port: u16, identity: Option<&muster_sim::certs::Pair>) -> Endpoint {
        muster_common::tls::install_crypto_provider();
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.pki.ca))
            .domain_name("localhost");
        if let Some(pair) = identity {
            tls = tls.identity(Identity::from_pem(&pair.cert, &pair.key));
        }
        Endpoint::from_shared(format!("https://localhost:{port}"))
            .expect("a URL")
            .tls_config(tls)
            .expect("TLS settings")
    }
}

impl Creds {
    /// A certificate for worker `name` from the worker CA, naming it
    /// `spiffe://muster/worker/<name>`.
    pub fn worker(&self, name: &str) -> muster_sim::certs::Pair {
        self.pki.worker(name).expect("a worker certificate")
    }

    /// An endpoint of WorkerService on `port` as worker `name` (its own
    /// certificate).
    pub fn worker_endpoint(&self, port: u16, name: &str) -> Endpoint {
        self.endpoint(port, Some(&self.worker(name)))
    }

    /// Worker `name`'s certificate and key as files (issued once).
    pub fn worker_files(&self, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = self.files.ca.parent().expect("the PKI directory");
        muster_sim::certs::ensure_worker_files(dir, name).expect("a worker certificate")
    }
}

/// A CampaignService client that presents a bearer token.
pub type TokenClient = muster_cli::connect::Client;

impl Creds {
    /// A client of the campaign API on `port` that presents `token` (TLS,
    /// no client certificate), as the muster CLI does.
    pub fn token_client(&self, port: u16, token: Option<&str>) -> TokenClient {
        let bearer = muster_cli::connect::Bearer::new("token", token).expect("a printable token");
        muster_proto::v1::campaign_service_client::CampaignServiceClient::with_interceptor(
            self.endpoint(port, None).connect_lazy(),
            bearer,
        )
    }
}

impl Default for Creds {
    fn default() -> Self {
        Self::new()
    }
}
