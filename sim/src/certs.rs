//! A development PKI, so the sandbox, the demo and the tests run muster with
//! TLS on, as production does: a CA for the controller and API clients
//! (`ca.pem`: the controller's server certificate for loopback, an operator
//! (admin) client certificate), and a separate worker CA (`worker-ca.pem`)
//! that issues each worker its own certificate, naming it in a URI SAN
//! `spiffe://muster/worker/<name>`. The controller trusts only the worker CA
//! on its worker port, so an API client's certificate cannot act as a worker.
//!
//! Never use these outside a laptop or CI: the keys are written unencrypted
//! next to each other. Production certificates come from your own PKI
//! (ACM Private CA, Vault, cert-manager) and reach the containers through
//! Secrets Manager (see `deploy/cloudformation/hub.yaml`).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The common name the operator certificate carries (grant it with
/// `--api-client muster-admin:submit`).
pub const ADMIN_CN: &str = "muster-admin";

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct Pair {
    /// The certificate.
    pub cert: String,
    /// Its private key (PKCS#8).
    pub key: String,
}

impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pair").finish_non_exhaustive()
    }
}

/// Everything a local muster needs for TLS.
#[derive(Debug, Clone)]
pub struct DevPki {
    /// The CA of the controller's certificate and of API clients'.
    pub ca: String,
    /// The controller's server certificate, for localhost, 127.0.0.1 and ::1.
    pub controller: Pair,
    /// An operator's client certificate (CN muster-admin).
    pub admin: Pair,
    /// The CA of workers' certificates, and its key (to issue more).
    pub worker_ca: Pair,
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "muster development");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn leaf(
    common_name: &str,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
    issuer: &rcgen::Issuer<'_, KeyPair>,
) -> Result<Pair, rcgen::Error> {
    let mut params = CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())?;
    leaf_params(&mut params, common_name, usage);
    sign(&params, issuer)
}

fn leaf_params(params: &mut CertificateParams, common_name: &str, usage: ExtendedKeyUsagePurpose) {
    params.distinguished_name = name(common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![usage];
}

fn sign(params: &CertificateParams, issuer: &rcgen::Issuer<'_, KeyPair>) -> Result<Pair, rcgen::Error> {
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok(Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn new_ca(ca_name: &str) -> Result<(CertifiedIssuer<'static, KeyPair>, Pair), rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(ca_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
    let pair = Pair {
        cert: ca.pem(),
        key: ca.key().serialize_pem(),
    };
    Ok((ca, pair))
}

impl DevPki {
    /// Fresh CAs and certificates (new keys every call).
    pub fn generate() -> Result<Self, rcgen::Error> {
        Self::generate_named("muster development CA")
    }

    /// Same, with the CAs' common name given (tests make a second, foreign
    /// PKI to show it is refused).
    pub fn generate_named(ca_name: &str) -> Result<Self, rcgen::Error> {
        let (ca, ca_pair) = new_ca(ca_name)?;
        let (_, worker_ca) = new_ca(&format!("{ca_name} for workers"))?;
        Ok(Self {
            ca: ca_pair.cert,
            controller: leaf(
                "muster-controller",
                &["localhost", "127.0.0.1", "::1", "muster-controller"],
                ExtendedKeyUsagePurpose::ServerAuth,
                &ca,
            )?,
            admin: leaf(ADMIN_CN, &[], ExtendedKeyUsagePurpose::ClientAuth, &ca)?,
            worker_ca,
        })
    }

    /// A certificate for worker `name`, from the worker CA: CN `name`, and
    /// the URI SAN `spiffe://muster/worker/<name>` the controller knows it by.
    pub fn worker(&self, name: &str) -> Result<Pair, String> {
        issue_worker(&self.worker_ca, name)
    }

    /// Writes `ca.pem`, `controller.pem`/`.key`, `admin.pem`/`.key` and
    /// `worker-ca.pem`/`.key` into `dir` (keys readable by the owner only),
    /// and returns the paths.
    pub fn write(&self, dir: &Path) -> std::io::Result<DevPkiFiles> {
        std::fs::create_dir_all(dir)?;
        let files = DevPkiFiles::in_dir(dir);
        write_file(&files.ca, &self.ca, false)?;
        for (pair, cert, key) in [
            (&self.controller, &files.controller_cert, &files.controller_key),
            (&self.admin, &files.admin_cert, &files.admin_key),
            (&self.worker_ca, &files.worker_ca, &files.worker_ca_key),
        ] {
            write_file(cert, &pair.cert, false)?;
            write_file(key, &pair.key, true)?;
        }
        Ok(files)
    }
}

/// Issues worker `name` a certificate from the worker CA `ca` (certificate
/// and key, PEM).
pub fn issue_worker(ca: &Pair, name: &str) -> Result<Pair, String> {
    muster_common::identity::check_worker_name(name).map_err(|e| format!("worker name: {e}"))?;
    let key = KeyPair::from_pem(&ca.key).map_err(|e| format!("worker CA key: {e}"))?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca.cert, key).map_err(|e| format!("worker CA: {e}"))?;
    let id = muster_common::identity::worker_spiffe_id(muster_common::identity::DEFAULT_TRUST_DOMAIN, name);
    let uri = rcgen::string::Ia5String::try_from(id.as_str()).map_err(|e| format!("worker name: {e}"))?;
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
    leaf_params(&mut params, name, ExtendedKeyUsagePurpose::ClientAuth);
    sign(&params, &issuer).map_err(|e| format!("worker certificate: {e}"))
}

/// Issues worker `name` a certificate from the worker CA in `dir` (written by
/// [`DevPki::write`]) unless it has one, into `dir/workers/<name>.pem` and
/// `.key`; returns the two paths.
pub fn ensure_worker_files(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), String> {
    let files = DevPkiFiles::in_dir(dir);
    let (cert, key) = files.worker(name);
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let read = |path: &Path| std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()));
    let ca = Pair {
        cert: read(&files.worker_ca)?,
        key: read(&files.worker_ca_key)?,
    };
    let pair = issue_worker(&ca, name)?;
    let write = |path: &Path, text: &str, secret: bool| {
        std::fs::create_dir_all(dir.join("workers"))
            .and_then(|()| write_file(path, text, secret))
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    write(&cert, &pair.cert, false)?;
    write(&key, &pair.key, true)?;
    Ok((cert, key))
}

/// Where [`DevPki::write`] puts each file.
#[derive(Debug, Clone)]
pub struct DevPkiFiles {
    /// CA certificate.
    pub ca: PathBuf,
    /// Controller certificate.
    pub controller_cert: PathBuf,
    /// Controller key.
    pub controller_key: PathBuf,
    /// Worker CA certificate.
    pub worker_ca: PathBuf,
    /// Worker CA key.
    pub worker_ca_key: PathBuf,
    /// Operator certificate.
    pub admin_cert: PathBuf,
    /// Operator key.
    pub admin_key: PathBuf,
}

impl DevPkiFiles {
    /// The file names in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            controller_cert: dir.join("controller.pem"),
            controller_key: dir.join("controller.key"),
            worker_ca: dir.join("worker-ca.pem"),
            worker_ca_key: dir.join("worker-ca.key"),
            admin_cert: dir.join("admin.pem"),
            admin_key: dir.join("admin.key"),
        }
    }

    /// Worker `name`'s certificate and key, as [`ensure_worker_files`]
    /// writes them.
    pub fn worker(&self, name: &str) -> (PathBuf, PathBuf) {
        let dir = self.ca.parent().unwrap_or(Path::new(".")).join("workers");
        (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")))
    }
}

fn write_file(path: &Path, text: &str, secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    options.open(path)?.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_file_with_private_keys() {
        let pki = DevPki::generate().unwrap();
        assert!(pki.ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(pki.admin.key.starts_with("-----BEGIN PRIVATE KEY-----"));
        let dir = tempfile::tempdir().unwrap();
        let files = pki.write(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&files.ca).unwrap(), pki.ca);
        assert_eq!(std::fs::read_to_string(&files.admin_key).unwrap(), pki.admin.key);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.controller_key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "a key is readable by others: {mode:o}");
        }
        // A second CA is a different CA, and workers have their own.
        assert_ne!(DevPki::generate_named("other").unwrap().ca, pki.ca);
        assert_ne!(pki.worker_ca.cert, pki.ca);
    }

    #[test]
    fn each_worker_gets_its_own_certificate_naming_it() {
        let pki = DevPki::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        pki.write(dir.path()).unwrap();
        let (cert, key) = ensure_worker_files(dir.path(), "w-1").unwrap();
        let pem = std::fs::read(&cert).unwrap();
        assert_eq!(
            muster_common::identity::worker_identity_pem(&pem).unwrap(),
            ("muster".to_owned(), "w-1".to_owned())
        );
        // Issued once: a second call keeps the files.
        assert_eq!(ensure_worker_files(dir.path(), "w-1").unwrap(), (cert.clone(), key));
        assert_eq!(std::fs::read(&cert).unwrap(), pem);
        let other = pki.worker("w-2").unwrap();
        assert_ne!(other.cert, pki.worker("w-2").unwrap().cert);
        // The admin certificate names no worker.
        let admin = muster_common::identity::worker_identity_pem(pki.admin.cert.as_bytes()).unwrap_err();
        assert!(admin.contains("no worker identity"), "{admin}");
        assert!(
            ensure_worker_files(dir.path(), "a/b")
                .unwrap_err()
                .starts_with("worker name:")
        );
    }
}
