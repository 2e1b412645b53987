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
//! | `muster-sim:stuck` = `true` | the agent is lost once the command starts: it stays InProgress for good; neither its timeouts nor CancelCommand reach it |
//! | `muster-sim:reboot` = `true` | the command reboots the instance halfway and then finishes |
//! | `muster-sim:missing-patches` = N | AWS-RunPatchBaseline finds N patches missing (default 0): a Scan reports them, an Install installs them (or, with `exit-code` set, fails them) |
//! | `muster-sim:critical-patches` = N | N of those missing patches are of critical severity: reported as critical non-compliant until an install takes effect (a reboot after it) |
//! | `muster-sim:reboot-exit` = 194 or 3010 | the step first exits 194 (Linux, macOS) or 3010 (Windows): the agent reboots the instance, then runs the step again, as the SSM agent handles those codes. In real mode a script's own exit 194 (3010 under PowerShell) does the same |

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::ec2::InstanceFact;
use crate::moto::{Moto, MotoError};

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
    /// Commands stay InProgress for good (the agent is lost mid-run).
    pub stuck: bool,
    /// Commands reboot the instance halfway.
    pub reboot: bool,
    /// The step first exits this code (194 or 3010): the agent reboots the
    /// instance, then runs the step again.
    pub reboot_exit: Option<i32>,
    /// Patches the patch baseline finds missing before any install.
    pub missing_patches: u32,
    /// Of those, patches of critical severity.
    pub critical_patches: u32,
}

impl Behaviour {
    /// Whether the tags script an outcome; such instances keep it even when
    /// the sim runs scripts for real, so a demo still shows failures.
    pub fn scripted(&self) -> bool {
        self.exit_code != 0
            || self.hang
            || self.stuck
            || self.undeliverable
            || self.stdout_bytes.is_some()
            || self.stderr_bytes.is_some()
            || self.reboot_exit.is_some()
    }

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
            stuck: flag("stuck"),
            reboot: flag("reboot"),
            reboot_exit: tag("reboot-exit")
                .and_then(|v| v.parse().ok())
                .filter(|code| [194, 3010].contains(code)),
            missing_patches: tag("missing-patches").and_then(|v| v.parse().ok()).unwrap_or(0),
            critical_patches: tag("critical-patches").and_then(|v| v.parse().ok()).unwrap_or(0),
        }
    }
}

/// Most DescribeInstances answers kept per scope (distinct filters and
/// pages); past it the scope's answers start afresh.
const ANSWERS_PER_SCOPE: usize = 64;

/// moto's answer to one DescribeInstances request.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Response headers.
    pub headers: http::HeaderMap,
    /// The XML body.
    pub body: Bytes,
}

#[derive(Default)]
struct ScopeCache {
    /// What is known of each instance, and since when.
    facts: HashMap<String, (Instant, InstanceFact)>,
    /// When the scope was last listed whole.
    listed: Option<Instant>,
    /// DescribeInstances answers by request (path, query and body: the same
    /// filters and page token), and when moto gave them.
    answers: HashMap<Bytes, (Instant, Answer)>,
}

type Slot = Arc<tokio::sync::Mutex<ScopeCache>>;
/// Held while one DescribeInstances request is asked of moto.
type Asking = Arc<tokio::sync::Mutex<()>>;

/// Instance facts per (account, region), read from moto. The sim also learns
/// them from every DescribeInstances answer it forwards and forgets a scope
/// on every EC2 change it forwards, so a worker's own discovery spares moto a
/// second listing (moto spends milliseconds per instance describing them).
pub struct Fleet {
    moto: Moto,
    slots: Mutex<HashMap<(String, String), Slot>>,
    /// One lock per DescribeInstances request being asked of moto.
    asking: Mutex<HashMap<(String, String, Bytes), Asking>>,
}

impl Fleet {
    /// A fleet backed by moto.
    pub fn new(moto: Moto) -> Self {
        Self {
            moto,
            slots: Mutex::new(HashMap::new()),
            asking: Mutex::new(HashMap::new()),
        }
    }

    /// The lock that makes one DescribeInstances `request` of (account,
    /// region) go to moto one at a time; locks no one holds are forgotten.
    pub fn asking(&self, account: &str, region: &str, request: &Bytes) -> Asking {
        let mut asking = self.asking.lock().expect("fleet lock");
        asking.retain(|_, lock| Arc::strong_count(lock) > 1);
        asking
            .entry((account.to_owned(), region.to_owned(), request.clone()))
            .or_default()
            .clone()
    }

    fn slot(&self, account: &str, region: &str) -> Slot {
        let mut slots = self.slots.lock().expect("fleet lock");
        slots
            .entry((account.to_owned(), region.to_owned()))
            .or_default()
            .clone()
    }

    /// Every instance of (account, region), listed at most `max_age` ago.
    pub async fn all(&self, account: &str, region: &str, max_age: Duration) -> Result<Vec<InstanceFact>, MotoError> {
        let slot = self.slot(account, region);
        let mut cache = slot.lock().await;
        let fresh = cache.listed.is_some_and(|at| at.elapsed() <= max_age);
        if !fresh {
            let facts = self.moto.instances(account, region, None).await?;
            let now = Instant::now();
            cache.facts = facts.into_iter().map(|f| (f.id.clone(), (now, f))).collect();
            cache.listed = Some(now);
        }
        let mut all: Vec<InstanceFact> = cache.facts.values().map(|(_, f)| f.clone()).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    /// The instances among `ids` that exist in (account, region), from facts
    /// at most `max_age` old; only unknown or stale ones are asked of moto.
    pub async fn by_ids(
        &self,
        account: &str,
        region: &str,
        ids: &[String],
        max_age: Duration,
    ) -> Result<Vec<InstanceFact>, MotoError> {
        let slot = self.slot(account, region);
        let mut cache = slot.lock().await;
        let listed_fresh = cache.listed.is_some_and(|at| at.elapsed() <= max_age);
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| match cache.facts.get(*id) {
                Some((at, _)) => at.elapsed() > max_age,
                // After a fresh full listing, an unknown id does not exist.
                None => !listed_fresh,
            })
            .cloned()
            .collect();
        if !missing.is_empty() {
            let now = Instant::now();
            for fact in self.moto.instances(account, region, Some(&missing)).await? {
                cache.facts.insert(fact.id.clone(), (now, fact));
            }
        }
        Ok(ids
            .iter()
            .filter_map(|id| cache.facts.get(id).map(|(_, f)| f.clone()))
            .collect())
    }

    /// Records facts seen in a forwarded DescribeInstances answer.
    pub async fn learn(&self, account: &str, region: &str, facts: Vec<InstanceFact>) {
        let slot = self.slot(account, region);
        let mut cache = slot.lock().await;
        let now = Instant::now();
        for fact in facts {
            cache.facts.insert(fact.id.clone(), (now, fact));
        }
    }

    /// moto's answer to this same DescribeInstances `request`, if it was given
    /// at most `max_age` ago and no EC2 change reached the scope since. The
    /// answer is what moto would say again, without the milliseconds per
    /// instance that moto spends describing them (AWS answers in one call's
    /// latency, which the sim models separately).
    pub async fn answer(&self, account: &str, region: &str, request: &Bytes, max_age: Duration) -> Option<Answer> {
        let slot = self.slot(account, region);
        let cache = slot.lock().await;
        cache
            .answers
            .get(request)
            .filter(|(at, _)| at.elapsed() <= max_age)
            .map(|(_, answer)| answer.clone())
    }

    /// Keeps moto's answer to a DescribeInstances `request`.
    pub async fn keep_answer(&self, account: &str, region: &str, request: Bytes, answer: Answer) {
        let slot = self.slot(account, region);
        let mut cache = slot.lock().await;
        if cache.answers.len() >= ANSWERS_PER_SCOPE {
            cache.answers.clear();
        }
        cache.answers.insert(request, (Instant::now(), answer));
    }

    /// Forgets a scope after an EC2 change (new, stopped, retagged instances).
    pub async fn invalidate(&self, account: &str, region: &str) {
        let slot = self.slot(account, region);
        *slot.lock().await = ScopeCache::default();
    }

    /// Forgets every scope.
    pub fn clear(&self) {
        self.slots.lock().expect("fleet lock").clear();
    }
}

/// EC2 calls that change nothing: everything else may change what
/// DescribeInstances answers (addresses, volumes, metadata options...).
pub fn reads_only(api: &str) -> bool {
    api.starts_with("Describe") || api.starts_with("Get")
}

/// A copy of `answer` with a fresh request id, as AWS gives every answer.
pub fn replayed(answer: Answer) -> Answer {
    const OPEN: &[u8] = b"<requestId>";
    const CLOSE: &[u8] = b"</requestId>";
    let body = &answer.body;
    let find = |needle: &[u8], from: usize| {
        body.get(from..)
            .and_then(|rest| rest.windows(needle.len()).position(|w| w == needle))
            .map(|at| at + from)
    };
    let Some(start) = find(OPEN, 0).map(|at| at + OPEN.len()) else {
        return answer;
    };
    let Some(end) = find(CLOSE, start) else {
        return answer;
    };
    let id = uuid::Uuid::new_v4().to_string();
    let mut fresh = Vec::with_capacity(body.len());
    fresh.extend_from_slice(&body[..start]);
    fresh.extend_from_slice(id.as_bytes());
    fresh.extend_from_slice(&body[end..]);
    let mut headers = answer.headers;
    headers.remove(http::header::CONTENT_LENGTH);
    for name in ["x-amzn-requestid", "x-amz-request-id"] {
        if headers.contains_key(name) {
            headers.insert(
                name,
                http::HeaderValue::from_str(&id).expect("a uuid is a valid header value"),
            );
        }
    }
    Answer {
        headers,
        body: Bytes::from(fresh),
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
