//! The simulated fleet: instances come from moto's EC2, and what their agents do
//! comes from their tags. Tags under `muster-sim:` script the agent so that tests
//! are deterministic:
//!
//! | tag | effect |
//! |---|---|
//! | `muster-sim:exit-code` = N | the command exits N (default 0) |
//! | `muster-sim:duration` = S | it runs S simulated seconds (default from the config) |
//! | `muster-sim:stdout-bytes` = N | it writes N bytes of stdout |
//! | `muster-sim:stderr-bytes` = N | it writes N bytes of stderr |
//! | `muster-sim:agent` = `offline` | PingStatus ConnectionLost: commands wait for delivery and time out |
//! | `muster-sim:agent` = `unmanaged` | SSM does not know the instance at all |
//! | `muster-sim:delivery` = `undeliverable` | invocations end Undeliverable |
//! | `muster-sim:hang` = `true` | the command never ends by itself (execution timeout) |
//! | `muster-sim:reboot` = `true` | the command reboots the instance halfway and then finishes |

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::moto::{InstanceFact, Moto, MotoError};

/// What an instance's agent is like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    /// Registered and online.
    Online,
    /// Registered but not checking in (ConnectionLost).
    Offline,
    /// Not registered with SSM.
    Unmanaged,
}

/// The scripted behaviour of one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Behaviour {
    /// Exit code of every command.
    pub exit_code: i32,
    /// Simulated seconds a command runs; `None` means the default.
    pub duration_secs: Option<f64>,
    /// Bytes of stdout, when set.
    pub stdout_bytes: Option<usize>,
    /// Bytes of stderr, when set.
    pub stderr_bytes: Option<usize>,
    /// The agent.
    pub agent: AgentState,
    /// Invocations end Undeliverable.
    pub undeliverable: bool,
    /// Commands never end by themselves.
    pub hang: bool,
    /// Commands reboot the instance halfway.
    pub reboot: bool,
}

impl Behaviour {
    /// Reads the behaviour from an instance's facts.
    pub fn of(instance: &InstanceFact) -> Self {
        let tag = |name: &str| instance.tags.get(&format!("muster-sim:{name}")).map(String::as_str);
        let flag = |name: &str| tag(name).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let agent = if instance.state == "stopped" || instance.state == "stopping" {
            AgentState::Offline
        } else {
            match tag("agent") {
                Some("offline") => AgentState::Offline,
                Some("unmanaged") => AgentState::Unmanaged,
                _ => AgentState::Online,
            }
        };
        Self {
            exit_code: tag("exit-code").and_then(|v| v.parse().ok()).unwrap_or(0),
            duration_secs: tag("duration").and_then(|v| v.parse().ok()).filter(|d: &f64| *d >= 0.0),
            stdout_bytes: tag("stdout-bytes").and_then(|v| v.parse().ok()),
            stderr_bytes: tag("stderr-bytes").and_then(|v| v.parse().ok()),
            agent,
            undeliverable: tag("delivery") == Some("undeliverable"),
            hang: flag("hang"),
            reboot: flag("reboot"),
        }
    }
}

/// A fleet snapshot of one (account, region).
pub type Snapshot = Arc<Vec<InstanceFact>>;

type Slot = Arc<tokio::sync::Mutex<Option<(Instant, Snapshot)>>>;

/// Instance facts per (account, region), read from moto and reused briefly.
pub struct Fleet {
    moto: Moto,
    slots: Mutex<HashMap<(String, String), Slot>>,
}

impl Fleet {
    /// A fleet backed by moto.
    pub fn new(moto: Moto) -> Self {
        Self {
            moto,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The instances of (account, region), at most `max_age` old. Concurrent
    /// callers for the same scope share one moto call.
    pub async fn snapshot(&self, account: &str, region: &str, max_age: Duration) -> Result<Snapshot, MotoError> {
        let slot = {
            let mut slots = self.slots.lock().expect("fleet lock");
            slots
                .entry((account.to_owned(), region.to_owned()))
                .or_default()
                .clone()
        };
        let mut cached = slot.lock().await;
        if let Some((fetched, snapshot)) = cached.as_ref()
            && fetched.elapsed() <= max_age
        {
            return Ok(snapshot.clone());
        }
        let snapshot = Arc::new(self.moto.instances(account, region).await?);
        *cached = Some((Instant::now(), snapshot.clone()));
        Ok(snapshot)
    }

    /// Forgets every snapshot.
    pub fn clear(&self) {
        self.slots.lock().expect("fleet lock").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn instance(tags: &[(&str, &str)], state: &str) -> InstanceFact {
        InstanceFact {
            id: "i-0123456789abcdef0".into(),
            state: state.into(),
            windows: false,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            private_ip: None,
            private_dns: None,
        }
    }

    #[test]
    fn tags_script_the_agent() {
        let b = Behaviour::of(&instance(
            &[
                ("muster-sim:exit-code", "3"),
                ("muster-sim:duration", "2.5"),
                ("muster-sim:stdout-bytes", "100000"),
                ("muster-sim:hang", "TRUE"),
            ],
            "running",
        ));
        assert_eq!(b.exit_code, 3);
        assert_eq!(b.duration_secs, Some(2.5));
        assert_eq!(b.stdout_bytes, Some(100_000));
        assert!(b.hang);
        assert_eq!(b.agent, AgentState::Online);
        assert_eq!(Behaviour::of(&instance(&[], "stopped")).agent, AgentState::Offline);
        assert_eq!(
            Behaviour::of(&instance(&[("muster-sim:agent", "unmanaged")], "running")).agent,
            AgentState::Unmanaged
        );
        // Nonsense values fall back to defaults instead of failing.
        assert_eq!(
            Behaviour::of(&instance(&[("muster-sim:exit-code", "x")], "running")).exit_code,
            0
        );
    }
}
