//! Who calls the campaign API, and whether they may.
//!
//! A caller is known by a bearer token (`authorization: Bearer <token>`),
//! whose SHA-256 the configuration holds; by a client certificate signed by
//! the configured client CA, whose subject common name the configuration
//! lists; or by its AWS identity, signed in with a presigned STS
//! GetCallerIdentity (see [`crate::signin`]). Its name then has grants: roles
//! within scopes (see [`crate::policy`]); an AWS identity's grants are those
//! whose principals include an ARN pattern that matches it. Callers and grants come from flags and the
//! configuration file (fixed), and from a policy file that is read again
//! whenever it changes (or on SIGHUP), so a token is added, expires or is
//! removed without a restart. An unknown, expired or missing identity is
//! UNAUTHENTICATED; a known one whose roles do not allow the call, or whose
//! scope does not hold the campaign, PERMISSION_DENIED. Both are logged with
//! the method and the peer, never with the token.

use muster_common::config::ConfigError;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};

use sha2::Digest as _;
use tonic::{Request, Status};

mod policy_file;

use policy_file::{Callers, clip, parse_policy};
pub use policy_file::{ClientEntry, PolicyFile, PolicySource, TokenEntry};

use crate::policy::{Action, Footprint, Grant, Role, Scope, out_of_scope};
use crate::signin::{AwsIdentity, Outcome, SignIn, SignInError};

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

/// An authenticated caller and its grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Its configured name; for an AWS identity, the person (see
    /// [`AwsIdentity::name`]).
    pub name: String,
    /// How it proved it: "token", "certificate", "aws" or "anonymous".
    pub via: &'static str,
    /// The ARN STS named, for an AWS identity.
    pub arn: Option<String>,
    /// Its roles and where they hold.
    pub grants: Vec<Grant>,
    /// The address it called from.
    pub peer: String,
}

impl Principal {
    /// The OUs the scopes of its grants allowing `action` name: their
    /// members are needed to check a campaign.
    pub fn ous(&self, action: Action) -> BTreeSet<String> {
        self.grants
            .iter()
            .filter(|g| g.role.allows(action))
            .flat_map(|g| g.scope.ous.iter().cloned())
            .collect()
    }

    /// Whether one grant both allows `action` and holds all of `campaign`;
    /// PERMISSION_DENIED's message naming the scope when not.
    pub fn permit(
        &self,
        action: Action,
        campaign: &Footprint,
        members: &HashMap<String, BTreeSet<String>>,
    ) -> Result<(), String> {
        let mut outside = None;
        for grant in self.grants.iter().filter(|g| g.role.allows(action)) {
            match grant.scope.excludes(campaign, members) {
                None => return Ok(()),
                Some(part) => {
                    outside.get_or_insert(part);
                }
            }
        }
        Err(out_of_scope(
            &self.name,
            action,
            &self.grants,
            outside.as_deref().unwrap_or("everywhere"),
        ))
    }
}

/// The controller's callers.
#[derive(Debug)]
pub struct Auth {
    fixed: Callers,
    policy: Option<PolicySource>,
    loaded: RwLock<Arc<Callers>>,
    /// The SHA-256 of the policy file as last read (parsed or not).
    seen: std::sync::Mutex<Option<Vec<u8>>>,
    /// The SHA-256 of a changed policy file read once and not yet applied:
    /// a file is applied when two reads a poll apart agree.
    settling: std::sync::Mutex<Option<Vec<u8>>>,
    anonymous: bool,
    signin: Option<SignIn>,
}

/// Longest bearer token looked at.
const MAX_TOKEN_BYTES: usize = 1024;

impl Auth {
    /// Callers from flags and the configuration file, and the policy file
    /// (a file is read now; an S3 object by [`Auth::refresh`] before the
    /// controller serves); names what is wrong.
    pub fn new(
        tokens: &[TokenEntry],
        clients: &[ClientEntry],
        policy_file: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let auth = Self {
            fixed: Callers::new("auth", tokens, clients, &[])?,
            policy: policy_file.map(PolicySource::parse).transpose()?,
            loaded: RwLock::default(),
            seen: std::sync::Mutex::default(),
            settling: std::sync::Mutex::default(),
            anonymous: false,
            signin: None,
        };
        auth.reload()?;
        Ok(auth)
    }

    /// Also takes AWS sign-in tokens, verified by `signin`.
    pub fn with_signin(mut self, signin: SignIn) -> Self {
        self.signin = Some(signin);
        self
    }

    /// Every caller is an unscoped admin, as "anonymous": only for a
    /// controller that serves plaintext on loopback with no callers
    /// configured (development).
    pub fn open() -> Self {
        Self {
            fixed: Callers::default(),
            policy: None,
            loaded: RwLock::default(),
            seen: std::sync::Mutex::default(),
            settling: std::sync::Mutex::default(),
            anonymous: true,
            signin: None,
        }
    }

    /// True when no caller is configured (AWS sign-in counts once some
    /// ARN pattern has a grant).
    pub fn is_empty(&self) -> bool {
        let loaded = self.current();
        let signs_in = self.signin.is_some() && !loaded.arn_grants.is_empty();
        self.fixed.is_empty() && loaded.is_empty() && !signs_in
    }

    /// True when client certificates are configured.
    pub fn has_clients(&self) -> bool {
        !self.fixed.clients.is_empty() || !self.current().clients.is_empty()
    }

    /// Where the policy file is, if there is one.
    pub fn policy_source(&self) -> Option<&PolicySource> {
        self.policy.as_ref()
    }

    /// The SHA-256 (hex) of the policy file as last read.
    pub fn policy_digest(&self) -> Option<String> {
        self.seen.lock().expect("policy lock").as_deref().map(hex::encode)
    }

    fn current(&self) -> Arc<Callers> {
        self.loaded.read().expect("policy lock").clone()
    }

    /// The policy's approval rules, in order: the first that a campaign
    /// reaches into asks for an approval.
    pub fn approval_rules(&self) -> Vec<crate::policy::ApprovalRule> {
        self.current().approvals.clone()
    }

    /// Reads a policy file again. On an error the policy in force stays,
    /// and the error names the field.
    pub fn reload(&self) -> Result<(), ConfigError> {
        self.reload_if_changed(true).unwrap_or(Ok(()))
    }

    /// Reads a policy file and applies it if its content differs from what
    /// was last read (or `always`); none when it was the same, or when the
    /// policy is in S3 (see [`Auth::refresh`]).
    pub fn reload_if_changed(&self, always: bool) -> Option<Result<(), ConfigError>> {
        let Some(PolicySource::File(path)) = &self.policy else {
            return None;
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                return Some(Err(ConfigError::invalid(
                    "policy",
                    format!("cannot read {}: {e}", path.display()),
                )));
            }
        };
        // A file written in place (`cat > policy.toml`) can be read half
        // written, and a truncated file is a valid, empty policy that would
        // refuse everyone: a change is applied only once the next poll reads
        // the same content. A restart and SIGHUP (`always`) apply at once.
        if !always {
            let digest = sha2::Sha256::digest(text.as_bytes()).to_vec();
            let changed = self.seen.lock().expect("policy lock").as_ref() != Some(&digest);
            let mut settling = self.settling.lock().expect("policy lock");
            if !changed {
                *settling = None;
                return None;
            }
            if settling.as_ref() != Some(&digest) {
                *settling = Some(digest);
                return None;
            }
            *settling = None;
        }
        self.apply(&text, always)
    }

    /// Reads the policy again wherever it is (an S3 object with `s3`) and
    /// applies it if it changed (or `always`); none when it was the same.
    pub async fn refresh(&self, s3: &aws_sdk_s3::Client, always: bool) -> Option<Result<(), ConfigError>> {
        let Some(PolicySource::S3 { bucket, key }) = &self.policy else {
            return self.reload_if_changed(always);
        };
        let text = match read_object(s3, bucket, key).await {
            Ok(text) => text,
            Err(e) => {
                return Some(Err(ConfigError::invalid(
                    "policy",
                    format!("cannot read s3://{bucket}/{key}: {e}"),
                )));
            }
        };
        self.apply(&text, always)
    }

    fn apply(&self, text: &str, always: bool) -> Option<Result<(), ConfigError>> {
        let source = self.policy.as_ref()?;
        let digest = sha2::Sha256::digest(text.as_bytes()).to_vec();
        let mut seen = self.seen.lock().expect("policy lock");
        if !always && seen.as_ref() == Some(&digest) {
            return None;
        }
        *seen = Some(digest);
        Some(parse_policy(source, text).map(|callers| {
            *self.loaded.write().expect("policy lock") = Arc::new(callers);
        }))
    }

    /// The caller of `request`, if one of its roles allows `action` (its
    /// scope is checked against a campaign with [`Principal::permit`]).
    pub fn authorize<T>(
        &self,
        request: &Request<T>,
        aws: Option<&AwsIdentity>,
        method: &str,
        action: Action,
    ) -> Result<Principal, Status> {
        let peer = peer_of(request);
        let principal = self.identify(request, aws).map_err(|reason| {
            tracing::warn!(method, peer, reason, "call refused: unauthenticated");
            Status::unauthenticated(reason)
        })?;
        if !principal.grants.iter().any(|g| g.role.allows(action)) {
            let has: Vec<String> = principal.grants.iter().map(|g| g.role.to_string()).collect();
            let needs: Vec<String> = Role::allowing(action).iter().map(ToString::to_string).collect();
            let message = format!(
                "role: {} has {}; {method} needs {}",
                principal.name,
                if has.is_empty() {
                    "no role".to_owned()
                } else {
                    format!("role {}", has.join(", "))
                },
                needs.join(" or ")
            );
            tracing::warn!(
                method,
                peer,
                caller = principal.name,
                via = principal.via,
                message,
                "call refused: permission denied"
            );
            return Err(Status::permission_denied(message));
        }
        Ok(principal)
    }

    /// PERMISSION_DENIED for a campaign outside the caller's scope, logged.
    pub fn out_of_scope(&self, method: &str, principal: &Principal, message: String) -> Status {
        tracing::warn!(
            method,
            caller = principal.name,
            via = principal.via,
            message,
            "call refused: out of scope"
        );
        Status::permission_denied(message)
    }

    /// The AWS identity that signed the request's sign-in token, asking STS
    /// unless it was verified before; none without such a token.
    pub async fn aws_identity<T>(&self, request: &Request<T>) -> Option<(Result<AwsIdentity, SignInError>, Outcome)> {
        let token = bearer(request).ok()??;
        if !token.starts_with(crate::signin::TOKEN_PREFIX) {
            return None;
        }
        Some(match &self.signin {
            Some(signin) => signin.verify(token).await,
            None => (
                Err(SignInError::Refused(
                    "this controller does not take AWS sign-in (it has no --signin-server-id); use a token or a \
                     client certificate"
                        .into(),
                )),
                Outcome::Refused,
            ),
        })
    }

    /// The name of the caller a known, unexpired bearer token stands for.
    fn token_holder(&self, loaded: &Callers, token: &str) -> Result<String, String> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err("the bearer token is too long".into());
        }
        let sha = hash_token(token);
        let found = self
            .fixed
            .tokens
            .get(&sha)
            .or_else(|| loaded.tokens.get(&sha))
            .ok_or_else(|| "unknown bearer token".to_owned())?;
        if let Some(expires) = found.expires_ms
            && chrono::Utc::now().timestamp_millis() >= expires
        {
            let at = chrono::DateTime::from_timestamp_millis(expires)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default();
            return Err(format!("the bearer token of {} expired at {at}", found.name));
        }
        Ok(found.name.clone())
    }

    /// The name of a known client whose certificate (`leaf`, DER) the TLS
    /// handshake verified: its subject's common name.
    fn certificate_holder(&self, loaded: &Callers, leaf: &[u8]) -> Result<String, String> {
        let name = common_name(leaf).ok_or_else(|| "the client certificate has no subject common name".to_owned())?;
        if !self.fixed.clients.contains(&name) && !loaded.clients.contains(&name) {
            return Err(format!("client certificate CN={} is not a known client", clip(&name)));
        }
        Ok(name)
    }

    /// Who calls, whatever it may do; `aws` is who signed the request's AWS
    /// sign-in token (see [`Auth::aws_identity`]).
    pub fn identify<T>(&self, request: &Request<T>, aws: Option<&AwsIdentity>) -> Result<Principal, String> {
        let peer = peer_of(request);
        let loaded = self.current();
        let grants = |name: &str| -> Vec<Grant> {
            let mut grants = self.fixed.grants.get(name).cloned().unwrap_or_default();
            grants.extend(loaded.grants.get(name).cloned().unwrap_or_default());
            grants
        };
        let aws_principal = |aws: &AwsIdentity, peer: String| Principal {
            name: aws.name(),
            via: "aws",
            arn: Some(aws.arn.clone()),
            grants: loaded.grants_of_arn(&aws.arn).cloned().collect(),
            peer,
        };
        // The console's session of an AWS sign-in it verified (an extension
        // only the server sets), with the grants the policy gives it now.
        if let Some(ConsoleSession(aws)) = request.extensions().get::<ConsoleSession>() {
            return Ok(aws_principal(aws, peer));
        }
        if let Some(token) = bearer(request)? {
            if token.starts_with(crate::signin::TOKEN_PREFIX) {
                let aws = aws.ok_or_else(|| "the AWS sign-in token was not verified".to_owned())?;
                return Ok(aws_principal(aws, peer));
            }
            let name = self.token_holder(&loaded, token)?;
            return Ok(Principal {
                grants: grants(&name),
                name,
                via: "token",
                arn: None,
                peer,
            });
        }
        if let Some(certs) = request.peer_certs()
            && let Some(leaf) = certs.first()
        {
            let name = self.certificate_holder(&loaded, leaf.as_ref())?;
            return Ok(Principal {
                grants: grants(&name),
                name,
                via: "certificate",
                arn: None,
                peer,
            });
        }
        if self.anonymous {
            return Ok(Principal {
                name: "anonymous".into(),
                via: "anonymous",
                arn: None,
                grants: vec![Grant {
                    role: Role::Admin,
                    scope: Scope::default(),
                }],
                peer,
            });
        }
        Err("no bearer token and no client certificate".into())
    }
}

impl Auth {
    /// The principal a schedule's runs start as: its owner, with the grants
    /// the policy gives them now; an error when the owner is no longer a
    /// known caller (a revoked or expired token, a removed client).
    pub fn owner(&self, owner: &crate::store::schedules::Owner) -> Result<Principal, String> {
        let loaded = self.current();
        let now = chrono::Utc::now().timestamp_millis();
        let (via, grants): (&'static str, Vec<Grant>) = match owner.via.as_str() {
            "aws" => ("aws", loaded.grants_of_arn(&owner.arn).cloned().collect()),
            "anonymous" if self.anonymous => (
                "anonymous",
                vec![Grant {
                    role: Role::Admin,
                    scope: Scope::default(),
                }],
            ),
            "token" | "certificate" => {
                let known = if owner.via == "token" {
                    self.fixed
                        .tokens
                        .values()
                        .chain(loaded.tokens.values())
                        .any(|t| t.name == owner.name && t.expires_ms.is_none_or(|e| now < e))
                } else {
                    self.fixed.clients.contains(&owner.name) || loaded.clients.contains(&owner.name)
                };
                if !known {
                    return Err(format!(
                        "the schedule's owner {} ({}) is no longer a known caller; store a new version of the \
                         schedule as someone who is",
                        owner.name, owner.via
                    ));
                }
                let mut grants = self.fixed.grants.get(&owner.name).cloned().unwrap_or_default();
                grants.extend(loaded.grants.get(&owner.name).cloned().unwrap_or_default());
                (if owner.via == "token" { "token" } else { "certificate" }, grants)
            }
            other => {
                return Err(format!(
                    "the schedule's owner {} proved who they were as '{other}', which this controller no longer accepts",
                    owner.name
                ));
            }
        };
        Ok(Principal {
            name: owner.name.clone(),
            via,
            arn: (!owner.arn.is_empty()).then(|| owner.arn.clone()),
            grants,
            peer: "scheduler".to_owned(),
        })
    }
}

/// The bearer token of a request, if it has an authorization header.
fn bearer<T>(request: &Request<T>) -> Result<Option<&str>, String> {
    let Some(value) = request.metadata().get("authorization") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| "the authorization header is not text".to_owned())?;
    text.strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .map(Some)
        .ok_or_else(|| "the authorization header is not 'Bearer <token>'".to_owned())
}

/// An AWS identity the web console verified when its holder signed in,
/// carried by the console's signed session cookie and set by the console on
/// the requests it makes for that browser (clients cannot set extensions).
#[derive(Debug, Clone)]
pub struct ConsoleSession(pub AwsIdentity);

/// The address a request came from.
pub(crate) fn peer_of<T>(request: &Request<T>) -> String {
    request
        .remote_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".into())
}

impl Principal {
    /// It, as the audit trail records an actor.
    pub fn actor(&self) -> crate::store::audit::Actor {
        crate::store::audit::Actor {
            principal: self.name.clone(),
            via: match &self.arn {
                Some(arn) => format!("{} {arn}", self.via),
                None => self.via.to_owned(),
            },
            peer: self.peer.clone(),
        }
    }
}

/// An S3 object's text.
async fn read_object(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<String, String> {
    let object = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| muster_common::retry::describe(&e))?;
    let bytes = object.body.collect().await.map_err(|e| e.to_string())?.into_bytes();
    String::from_utf8(bytes.to_vec()).map_err(|_| "it is not UTF-8 text".to_owned())
}

/// Reads the policy file again whenever its content changes (looked at
/// every `every`) or the process gets SIGHUP, until `shutdown`. A file that
/// does not parse leaves the policy in force, and is logged and counted.
pub async fn watch_policy(
    auth: Arc<Auth>,
    ctl: Arc<crate::Controller>,
    every: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let Some(path) = auth.policy_source().cloned() else {
        return;
    };
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hangup.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<()>();
        let forced = tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => false,
            () = signalled => true,
        };
        let outcome = match auth.refresh(&ctl.s3, forced).await {
            None => continue,
            Some(Ok(())) => {
                ctl.metrics.policy_reloaded(true);
                tracing::info!(%path, "policy reloaded");
                serde_json::json!({"path": path.to_string(), "sha256": auth.policy_digest(), "applied": true})
            }
            Some(Err(error)) => {
                ctl.metrics.policy_reloaded(false);
                tracing::error!(%error, "policy not reloaded; the one in force stays");
                serde_json::json!({
                    "path": path.to_string(),
                    "sha256": auth.policy_digest(),
                    "applied": false,
                    "error": error.to_string(),
                })
            }
        };
        let actor = crate::store::audit::Actor {
            principal: "policy file".into(),
            ..Default::default()
        };
        let recorded = ctl
            .store
            .write(move |txn| crate::store::audit::record(txn, &actor, "policy_reloaded", "", &outcome.to_string()))
            .await;
        if let Err(error) = recorded {
            tracing::warn!(%error, "cannot record the policy change in the audit trail");
        }
    }
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
                TokenEntry::parse("t", &format!("dash:viewer:{}", hash_token("good-read"))).unwrap(),
            ],
            &[ClientEntry::parse("c", "alice:read").unwrap()],
            None,
        )
        .unwrap()
    }

    #[test]
    fn tokens_identify_and_roles_are_checked() {
        let auth = auth();
        let ci = auth
            .authorize(
                &request_with_token("good-submit"),
                None,
                "SubmitCampaign",
                Action::Submit,
            )
            .unwrap();
        assert_eq!((ci.name.as_str(), ci.via), ("ci", "token"));
        assert_eq!(ci.grants[0].role, Role::Operator);
        let read = auth
            .authorize(&request_with_token("good-read"), None, "GetCampaign", Action::Read)
            .unwrap();
        assert_eq!(read.name, "dash");
        let denied = auth
            .authorize(&request_with_token("good-read"), None, "SubmitCampaign", Action::Submit)
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            denied.message(),
            "role: dash has role viewer; SubmitCampaign needs operator or admin"
        );
        let wrong = auth
            .authorize(&request_with_token("guess"), None, "GetCampaign", Action::Read)
            .unwrap_err();
        assert_eq!(
            (wrong.code(), wrong.message()),
            (tonic::Code::Unauthenticated, "unknown bearer token")
        );
        let none = auth
            .authorize(&Request::new(()), None, "GetCampaign", Action::Read)
            .unwrap_err();
        assert_eq!(none.code(), tonic::Code::Unauthenticated);
        let open = Auth::open()
            .authorize(&Request::new(()), None, "SubmitCampaign", Action::Submit)
            .unwrap();
        assert_eq!(open.name, "anonymous");
    }

    #[test]
    fn the_policy_file_is_read_again_and_expired_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        let write = |body: &str| std::fs::write(&path, body).unwrap();
        write(&format!(
            r#"
[[tokens]]
name = "ops"
sha256 = "{}"
[[tokens]]
name = "old"
sha256 = "{}"
expires = "2020-01-01T00:00:00Z"
[[grants]]
principals = ["ops", "old"]
role = "operator"
ous = ["ou-abcd-12345678"]
"#,
            hash_token("ops-token"),
            hash_token("old-token")
        ));
        let auth = Auth::new(&[], &[], Some(&path)).unwrap();
        let ops = auth
            .authorize(&request_with_token("ops-token"), None, "SubmitCampaign", Action::Submit)
            .unwrap();
        assert_eq!(ops.ous(Action::Submit), BTreeSet::from(["ou-abcd-12345678".to_owned()]));
        let expired = auth
            .authorize(&request_with_token("old-token"), None, "GetCampaign", Action::Read)
            .unwrap_err();
        assert_eq!(expired.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            expired.message(),
            "the bearer token of old expired at 2020-01-01T00:00:00Z"
        );
        // A broken file leaves the policy in force.
        write("[[tokens]]\nname = \"x\"\n");
        assert!(auth.reload().unwrap_err().to_string().starts_with("policy: "));
        assert!(
            auth.authorize(&request_with_token("ops-token"), None, "GetCampaign", Action::Read)
                .is_ok()
        );
        // A token taken out is refused after the reload.
        write("");
        auth.reload().unwrap();
        let removed = auth
            .authorize(&request_with_token("ops-token"), None, "GetCampaign", Action::Read)
            .unwrap_err();
        assert_eq!(removed.message(), "unknown bearer token");
    }

    #[test]
    fn a_changed_file_applies_once_two_polls_read_it_alike() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        let write = |body: &str| std::fs::write(&path, body).unwrap();
        let policy = |name: &str| {
            format!(
                "[[tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\n[[grants]]\nprincipals = [\"{name}\"]\nrole = \"viewer\"\n",
                hash_token(name)
            )
        };
        write(&policy("a"));
        let auth = Auth::new(&[], &[], Some(&path)).unwrap();
        let lets_in = |token: &str| auth.identify(&request_with_token(token), None).is_ok();
        assert!(lets_in("a"));
        // A writer in place: the poll reads the truncated file, then the
        // whole one. The empty policy is never applied.
        write("");
        assert!(
            auth.reload_if_changed(false).is_none(),
            "a first read only notes the change"
        );
        write(&policy("b"));
        assert!(auth.reload_if_changed(false).is_none(), "the content moved again");
        assert!(lets_in("a"), "the policy in force stays meanwhile");
        assert!(matches!(auth.reload_if_changed(false), Some(Ok(()))), "two polls agree");
        assert!(lets_in("b") && !lets_in("a"));
        assert!(auth.reload_if_changed(false).is_none(), "nothing changed since");
        // SIGHUP (always) applies at once.
        write(&policy("c"));
        assert!(matches!(auth.reload_if_changed(true), Some(Ok(()))));
        assert!(lets_in("c"));
    }

    #[test]
    fn bad_configuration_is_named() {
        assert_eq!(
            TokenEntry::parse("--api-token", "ci:boss:abc").unwrap_err().to_string(),
            "--api-token: 'boss' is not a role (viewer, operator, approver, admin)"
        );
        assert_eq!(
            TokenEntry::parse("--api-token", "ci").unwrap_err().to_string(),
            "--api-token: 'ci' is not NAME:ROLE:SHA256"
        );
        let short = TokenEntry {
            name: "ci".into(),
            sha256: "abc".into(),
            permission: Some("viewer".into()),
            expires: None,
        };
        assert!(
            Auth::new(&[short], &[], None)
                .unwrap_err()
                .to_string()
                .starts_with("auth.tokens[0].sha256: must be the 64 hex digits")
        );
        let twice = [
            ClientEntry::parse("c", "alice:read").unwrap(),
            ClientEntry::parse("c", "alice:submit").unwrap(),
        ];
        assert_eq!(
            Auth::new(&[], &twice, None).unwrap_err().to_string(),
            "auth.clients[1].name: 'alice' is configured twice"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(
            &path,
            "[[grants]]\nprincipals = [\"a\"]\nrole = \"viewer\"\nregions = [\"mars-1\"]\n",
        )
        .unwrap();
        assert!(
            Auth::new(&[], &[], Some(&path))
                .unwrap_err()
                .to_string()
                .starts_with("policy.grants[0].regions[0]:")
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

    #[test]
    fn aws_identities_get_the_grants_of_the_arn_patterns_they_match() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(
            &path,
            r#"
[[grants]]
principals = ["alice"]
role = "admin"
[[grants]]
principals = ["arn:aws:sts::111111111111:assumed-role/AWSReservedSSO_Ops_*/*"]
role = "operator"
regions = ["eu-west-1"]
"#,
        )
        .unwrap();
        let auth = Auth::new(&[], &[], Some(&path)).unwrap();
        let token = format!("{}abc", crate::signin::TOKEN_PREFIX);
        let aws = |arn: &str| AwsIdentity {
            arn: arn.into(),
            account: "111111111111".into(),
            user_id: String::new(),
        };
        let ops = aws("arn:aws:sts::111111111111:assumed-role/AWSReservedSSO_Ops_ab12/alice");
        let alice = auth.identify(&request_with_token(&token), Some(&ops)).unwrap();
        assert_eq!((alice.name.as_str(), alice.via), ("alice", "aws"));
        assert_eq!(alice.arn.as_deref(), Some(ops.arn.as_str()));
        assert_eq!(
            alice.grants.len(),
            1,
            "the name 'alice' gives an AWS identity nothing: {alice:?}"
        );
        assert_eq!(alice.grants[0].role, Role::Operator);
        assert!(
            alice
                .actor()
                .via
                .starts_with("aws arn:aws:sts::111111111111:assumed-role/")
        );
        let other = aws("arn:aws:sts::111111111111:assumed-role/Other/alice");
        assert!(
            auth.identify(&request_with_token(&token), Some(&other))
                .unwrap()
                .grants
                .is_empty()
        );
        assert_eq!(
            auth.identify(&request_with_token(&token), None).unwrap_err(),
            "the AWS sign-in token was not verified"
        );
        std::fs::write(&path, "[[grants]]\nprincipals = [\"arn:aws\"]\nrole = \"viewer\"\n").unwrap();
        assert!(
            auth.reload()
                .unwrap_err()
                .to_string()
                .contains("policy.grants[0].principals[0]: 'arn:aws' is not an ARN pattern"),
            "a bad pattern is named"
        );
    }
}
