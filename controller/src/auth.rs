//! Who may call the campaign API, and what they may do.
//!
//! A caller is known by a bearer token (`authorization: Bearer <token>`),
//! whose SHA-256 the configuration holds, or by a client certificate signed by
//! the configured client CA, whose subject common name the configuration
//! lists. `read` lets a caller get, list, watch and read results; `submit` also
//! lets it submit, plan and cancel. An unknown or missing identity is
//! UNAUTHENTICATED, a known one without the permission PERMISSION_DENIED; both
//! are logged with the method and the peer, never with the token.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use sha2::Digest as _;
use tonic::{Request, Status};

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Get, List, ListTargets, GetTarget, Watch.
    Read,
    /// Read, plus Submit, Plan and Cancel.
    Submit,
}

impl Permission {
    fn parse(field: &str, text: &str) -> Result<Self, String> {
        match text.trim() {
            "read" => Ok(Self::Read),
            "submit" => Ok(Self::Submit),
            other => Err(format!("{field}: '{other}' is not a permission (read, submit)")),
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Read => "read",
            Self::Submit => "submit",
        })
    }
}

/// A token the controller accepts, as configured: its name, the SHA-256 of
/// the token (hex), and its permission.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who holds it (in logs and as `submitted_by`).
    pub name: String,
    /// Lowercase hex SHA-256 of the token (`muster-controller hash-token`).
    pub sha256: String,
    /// What it may do.
    pub permission: Permission,
}

/// A client certificate the controller accepts: its subject common name, and
/// its permission. The certificate must chain to the client CA.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// The certificate's subject CN (in logs and as `submitted_by`).
    pub name: String,
    /// What it may do.
    pub permission: Permission,
}

impl TokenEntry {
    /// Parses `name:permission:sha256` (the `--api-token` form).
    pub fn parse(field: &str, text: &str) -> Result<Self, String> {
        let mut parts = text.splitn(3, ':');
        let (Some(name), Some(permission), Some(sha256)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("{field}: '{}' is not NAME:PERMISSION:SHA256", clip(text)));
        };
        Ok(Self {
            name: name.trim().to_owned(),
            sha256: sha256.trim().to_owned(),
            permission: Permission::parse(field, permission)?,
        })
    }
}

impl ClientEntry {
    /// Parses `common-name:permission` (the `--api-client` form).
    pub fn parse(field: &str, text: &str) -> Result<Self, String> {
        let Some((name, permission)) = text.rsplit_once(':') else {
            return Err(format!("{field}: '{}' is not COMMON_NAME:PERMISSION", clip(text)));
        };
        Ok(Self {
            name: name.trim().to_owned(),
            permission: Permission::parse(field, permission)?,
        })
    }
}

fn clip(text: &str) -> String {
    muster_common::domain::clip(text)
}

/// The lowercase hex SHA-256 of a token, as the configuration stores it.
pub fn hash_token(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.trim().as_bytes()))
}

/// A new random token: 32 bytes from the OS, URL-safe base64, with a prefix
/// that secret scanners can find.
pub fn new_token() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    format!("mst_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Its configured name.
    pub name: String,
    /// How it proved it: "token", "certificate" or "anonymous".
    pub via: &'static str,
    /// What it may do.
    pub permission: Permission,
}

/// The controller's callers.
#[derive(Debug, Clone)]
pub struct Auth {
    tokens: HashMap<String, Principal>,
    clients: HashMap<String, Principal>,
    anonymous: Option<Principal>,
}

/// Longest bearer token looked at.
const MAX_TOKEN_BYTES: usize = 1024;

impl Auth {
    /// Callers from configuration; names what is wrong.
    pub fn new(tokens: &[TokenEntry], clients: &[ClientEntry]) -> Result<Self, String> {
        let mut by_hash = HashMap::new();
        for (i, entry) in tokens.iter().enumerate() {
            let field = format!("auth.tokens[{i}]");
            check_name(&field, &entry.name)?;
            let sha = entry.sha256.to_ascii_lowercase();
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "{field}.sha256: must be the 64 hex digits of the token's SHA-256 (muster-controller hash-token)"
                ));
            }
            let principal = Principal {
                name: entry.name.clone(),
                via: "token",
                permission: entry.permission,
            };
            if by_hash.insert(sha, principal).is_some() {
                return Err(format!("{field}.sha256: the same token is configured twice"));
            }
        }
        let mut by_name = HashMap::new();
        for (i, entry) in clients.iter().enumerate() {
            let field = format!("auth.clients[{i}]");
            check_name(&field, &entry.name)?;
            let principal = Principal {
                name: entry.name.clone(),
                via: "certificate",
                permission: entry.permission,
            };
            if by_name.insert(entry.name.clone(), principal).is_some() {
                return Err(format!("{field}.name: '{}' is configured twice", entry.name));
            }
        }
        Ok(Self {
            tokens: by_hash,
            clients: by_name,
            anonymous: None,
        })
    }

    /// Every caller may submit, as "anonymous": only for a controller that
    /// serves plaintext on loopback with no callers configured (development).
    pub fn open() -> Self {
        Self {
            tokens: HashMap::new(),
            clients: HashMap::new(),
            anonymous: Some(Principal {
                name: "anonymous".into(),
                via: "anonymous",
                permission: Permission::Submit,
            }),
        }
    }

    /// True when no caller is configured.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.clients.is_empty()
    }

    /// True when client certificates are configured.
    pub fn has_clients(&self) -> bool {
        !self.clients.is_empty()
    }

    /// The caller of `request`, if it may do what `method` needs.
    pub fn authorize<T>(&self, request: &Request<T>, method: &str, needed: Permission) -> Result<Principal, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown".into());
        let principal = self.identify(request).map_err(|reason| {
            tracing::warn!(method, peer, reason, "call refused: unauthenticated");
            Status::unauthenticated(reason)
        })?;
        if principal.permission < needed {
            tracing::warn!(
                method,
                peer,
                caller = principal.name,
                via = principal.via,
                has = %principal.permission,
                needs = %needed,
                "call refused: permission denied"
            );
            return Err(Status::permission_denied(format!(
                "{} has {} permission; {method} needs {needed}",
                principal.name, principal.permission
            )));
        }
        Ok(principal)
    }

    fn identify<T>(&self, request: &Request<T>) -> Result<Principal, String> {
        if let Some(value) = request.metadata().get("authorization") {
            let text = value
                .to_str()
                .map_err(|_| "the authorization header is not text".to_owned())?;
            let token = text
                .strip_prefix("Bearer ")
                .or_else(|| text.strip_prefix("bearer "))
                .ok_or_else(|| "the authorization header is not 'Bearer <token>'".to_owned())?;
            if token.len() > MAX_TOKEN_BYTES {
                return Err("the bearer token is too long".into());
            }
            return self
                .tokens
                .get(&hash_token(token))
                .cloned()
                .ok_or_else(|| "unknown bearer token".into());
        }
        if let Some(certs) = request.peer_certs()
            && let Some(leaf) = certs.first()
        {
            let name = common_name(leaf.as_ref())
                .ok_or_else(|| "the client certificate has no subject common name".to_owned())?;
            return self
                .clients
                .get(&name)
                .cloned()
                .ok_or_else(|| format!("client certificate CN={} is not a known client", clip(&name)));
        }
        self.anonymous
            .clone()
            .ok_or_else(|| "no bearer token and no client certificate".into())
    }
}

fn check_name(field: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(format!("{field}.name: must be 1 to 128 printable characters"));
    }
    Ok(())
}

/// The subject common name of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_with_token(token: &str) -> Request<()> {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }

    fn auth() -> Auth {
        Auth::new(
            &[
                TokenEntry::parse("t", &format!("ci:submit:{}", hash_token("good-submit"))).unwrap(),
                TokenEntry::parse("t", &format!("dash:read:{}", hash_token("good-read"))).unwrap(),
            ],
            &[ClientEntry::parse("c", "alice:read").unwrap()],
        )
        .unwrap()
    }

    #[test]
    fn tokens_identify_and_permissions_are_checked() {
        let auth = auth();
        let ci = auth
            .authorize(&request_with_token("good-submit"), "SubmitCampaign", Permission::Submit)
            .unwrap();
        assert_eq!((ci.name.as_str(), ci.via), ("ci", "token"));
        let read = auth
            .authorize(&request_with_token("good-read"), "GetCampaign", Permission::Read)
            .unwrap();
        assert_eq!(read.name, "dash");
        let denied = auth
            .authorize(&request_with_token("good-read"), "SubmitCampaign", Permission::Submit)
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            denied.message(),
            "dash has read permission; SubmitCampaign needs submit"
        );
        let wrong = auth
            .authorize(&request_with_token("guess"), "GetCampaign", Permission::Read)
            .unwrap_err();
        assert_eq!(
            (wrong.code(), wrong.message()),
            (tonic::Code::Unauthenticated, "unknown bearer token")
        );
        let none = auth
            .authorize(&Request::new(()), "GetCampaign", Permission::Read)
            .unwrap_err();
        assert_eq!(none.code(), tonic::Code::Unauthenticated);
        let open = Auth::open()
            .authorize(&Request::new(()), "SubmitCampaign", Permission::Submit)
            .unwrap();
        assert_eq!(open.name, "anonymous");
    }

    #[test]
    fn bad_configuration_is_named() {
        assert_eq!(
            TokenEntry::parse("--api-token", "ci:admin:abc").unwrap_err(),
            "--api-token: 'admin' is not a permission (read, submit)"
        );
        assert_eq!(
            TokenEntry::parse("--api-token", "ci").unwrap_err(),
            "--api-token: 'ci' is not NAME:PERMISSION:SHA256"
        );
        let short = TokenEntry {
            name: "ci".into(),
            sha256: "abc".into(),
            permission: Permission::Read,
        };
        assert!(
            Auth::new(&[short], &[])
                .unwrap_err()
                .starts_with("auth.tokens[0].sha256: must be the 64 hex digits")
        );
        let twice = [
            ClientEntry::parse("c", "alice:read").unwrap(),
            ClientEntry::parse("c", "alice:submit").unwrap(),
        ];
        assert_eq!(
            Auth::new(&[], &twice).unwrap_err(),
            "auth.clients[1].name: 'alice' is configured twice"
        );
    }

    #[test]
    fn new_tokens_are_random_and_hash_to_64_hex_digits() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with("mst_") && a.len() > 40);
        assert_eq!(hash_token(&a).len(), 64);
        assert_eq!(hash_token(" x \n"), hash_token("x"));
    }
}
