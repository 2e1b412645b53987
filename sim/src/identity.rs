//! Who is calling: the sim learns which account and principal each temporary
//! access key belongs to from the AssumeRole answers it forwards, the way AWS
//! knows it from its own records. Static keys act in the default account.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

/// A caller, as far as authorization cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The account the caller acts in.
    pub account: String,
    /// The principal: a user ARN, or an assumed-role session ARN
    /// ("arn:aws:sts::222222222222:assumed-role/muster-execution/muster-c1").
    pub principal_arn: String,
    /// For role sessions: the role's ARN, path included.
    pub role_arn: Option<String>,
}

impl Caller {
    /// Whether the caller is itself a role session: assuming another role
    /// from it is role chaining, which AWS caps at one hour.
    pub fn is_role_session(&self) -> bool {
        self.role_arn.is_some()
    }
}

/// What happened to a key that the sim knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// Good to use.
    Valid(Caller),
    /// A session key past its expiration.
    Expired,
}

#[derive(Debug, Clone)]
struct Session {
    caller: Caller,
    secret: String,
    expires_at: SystemTime,
}

/// The registry of session keys.
#[derive(Debug)]
pub struct Identities {
    default_account: String,
    sessions: Mutex<HashMap<String, Session>>,
}

impl Identities {
    /// An empty registry; static keys act in `default_account`.
    pub fn new(default_account: &str) -> Self {
        Self {
            default_account: default_account.to_owned(),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// The account static keys act in.
    pub fn default_account(&self) -> &str {
        &self.default_account
    }

    /// Records a session handed out by AssumeRole, with its secret key (to
    /// verify what it signs).
    pub fn register(&self, access_key: &str, secret: &str, caller: Caller, expires_at: SystemTime) {
        let session = Session {
            caller,
            secret: secret.to_owned(),
            expires_at,
        };
        self.sessions
            .lock()
            .expect("identities lock")
            .insert(access_key.to_owned(), session);
    }

    /// The secret key of a session the sim handed out (expired or not);
    /// none for static keys, whose secrets it does not know.
    pub fn secret(&self, access_key: &str) -> Option<String> {
        let sessions = self.sessions.lock().expect("identities lock");
        sessions.get(access_key).map(|s| s.secret.clone())
    }

    /// Resolves an access key.
    pub fn resolve(&self, access_key: &str) -> KeyState {
        let sessions = self.sessions.lock().expect("identities lock");
        match sessions.get(access_key) {
            Some(session) if session.expires_at <= SystemTime::now() => KeyState::Expired,
            Some(session) => KeyState::Valid(session.caller.clone()),
            None => KeyState::Valid(Caller {
                account: self.default_account.clone(),
                principal_arn: format!("arn:aws:iam::{}:user/moto", self.default_account),
                role_arn: None,
            }),
        }
    }

    /// Forgets every session (on reset).
    pub fn clear(&self) {
        self.sessions.lock().expect("identities lock").clear();
    }

    /// How many sessions are known (for the admin API).
    pub fn len(&self) -> usize {
        self.sessions.lock().expect("identities lock").len()
    }

    /// Whether no session is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sessions_resolve_until_they_expire() {
        let ids = Identities::new("123456789012");
        let caller = Caller {
            account: "222222222222".into(),
            principal_arn: "arn:aws:sts::222222222222:assumed-role/r/s".into(),
            role_arn: Some("arn:aws:iam::222222222222:role/r".into()),
        };
        ids.register(
            "ASIA1",
            "s1",
            caller.clone(),
            SystemTime::now() + Duration::from_secs(60),
        );
        ids.register(
            "ASIA2",
            "s2",
            caller.clone(),
            SystemTime::now() - Duration::from_secs(1),
        );
        assert_eq!(ids.resolve("ASIA1"), KeyState::Valid(caller));
        assert_eq!(ids.resolve("ASIA2"), KeyState::Expired);
        assert_eq!(ids.secret("ASIA1").as_deref(), Some("s1"));
        assert_eq!(ids.secret("AKIASTATIC"), None);
        match ids.resolve("AKIASTATIC") {
            KeyState::Valid(c) => {
                assert_eq!(c.account, "123456789012");
                assert!(!c.is_role_session());
            }
            KeyState::Expired => panic!("static keys never expire"),
        }
    }
}
