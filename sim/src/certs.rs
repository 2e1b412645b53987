//! A development PKI, so the sandbox, the demo and the tests run muster with
//! TLS on: a CA, a controller server certificate for loopback, a worker
//! client certificate and an operator (admin) client certificate.
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

/// The common name the worker certificate carries.
pub const WORKER_CN: &str = "muster-worker";
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
    /// The CA certificate both sides trust.
    pub ca: String,
    /// The controller's server certificate, for localhost, 127.0.0.1 and ::1.
    pub controller: Pair,
    /// A worker's client certificate (CN muster-worker).
    pub worker: Pair,
    /// An operator's client certificate (CN muster-admin).
    pub admin: Pair,
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
    params.distinguished_name = name(common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok(Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

impl DevPki {
    /// A fresh CA and certificates (new keys every call).
    pub fn generate() -> Result<Self, rcgen::Error> {
        Self::generate_named("muster development CA")
    }

    /// Same, with the CA's common name given (tests make a second, foreign
    /// CA to show it is refused).
    pub fn generate_named(ca_name: &str) -> Result<Self, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(ca_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Self {
            ca: ca.pem(),
            controller: leaf(
                "muster-controller",
                &["localhost", "127.0.0.1", "::1", "muster-controller"],
                ExtendedKeyUsagePurpose::ServerAuth,
                &ca,
            )?,
            worker: leaf(WORKER_CN, &[], ExtendedKeyUsagePurpose::ClientAuth, &ca)?,
            admin: leaf(ADMIN_CN, &[], ExtendedKeyUsagePurpose::ClientAuth, &ca)?,
        })
    }

    /// Writes `ca.pem`, `controller.pem`/`.key`, `worker.pem`/`.key` and
    /// `admin.pem`/`.key` into `dir` (keys readable by the owner only), and
    /// returns the paths.
    pub fn write(&self, dir: &Path) -> std::io::Result<DevPkiFiles> {
        std::fs::create_dir_all(dir)?;
        let files = DevPkiFiles::in_dir(dir);
        write_file(&files.ca, &self.ca, false)?;
        for (pair, cert, key) in [
            (&self.controller, &files.controller_cert, &files.controller_key),
            (&self.worker, &files.worker_cert, &files.worker_key),
            (&self.admin, &files.admin_cert, &files.admin_key),
        ] {
            write_file(cert, &pair.cert, false)?;
            write_file(key, &pair.key, true)?;
        }
        Ok(files)
    }
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
    /// Worker certificate.
    pub worker_cert: PathBuf,
    /// Worker key.
    pub worker_key: PathBuf,
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
            worker_cert: dir.join("worker.pem"),
            worker_key: dir.join("worker.key"),
            admin_cert: dir.join("admin.pem"),
            admin_key: dir.join("admin.key"),
        }
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
        assert!(pki.worker.key.starts_with("-----BEGIN PRIVATE KEY-----"));
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
        // A second CA is a different CA.
        assert_ne!(DevPki::generate_named("other").unwrap().ca, pki.ca);
    }
}
