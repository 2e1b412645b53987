//! Run Command's EventBridge events, as AWS emits them: "EC2 Command
//! Status-change Notification" for a command's aggregate status and "EC2
//! Command Invocation Status-change Notification" for each instance's, in the
//! documented shape. A rule in each target account (the event pattern of
//! `deploy/cloudformation/target-events.yaml`) forwards the ones it matches
//! to the hub's bus, whose rule sends them to an SQS queue: the sim models
//! that path as one pattern and one queue in moto.
//!
//! Delivery is what EventBridge promises and no more: at least once, maybe
//! late, maybe out of order. Tunables can drop, duplicate and delay events.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng as _;
use serde_json::{Value, json};

use crate::config::EventRouting;
use crate::moto::Moto;

/// Whether `event` matches `pattern` as EventBridge matches: every field of
/// the pattern is present, and its value (or one of its values, for an array)
/// is one of those listed.
pub fn matches(pattern: &Value, event: &Value) -> bool {
    let Value::Object(fields) = pattern else {
        return false;
    };
    fields.iter().all(|(key, wanted)| {
        let Some(value) = event.get(key) else {
            return false;
        };
        match wanted {
            Value::Object(_) => matches(wanted, value),
            Value::Array(allowed) => match value {
                Value::Array(values) => values.iter().any(|v| allowed.contains(v)),
                value => allowed.contains(value),
            },
            _ => false,
        }
    })
}

fn timestamp(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn envelope(detail_type: &str, account: &str, region: &str, resources: Vec<String>, detail: Value) -> Value {
    let mut event = json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": detail_type,
        "source": "aws.ssm",
        "account": account,
        "time": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        "region": region,
    });
    event["resources"] = Value::from(resources);
    event["detail"] = detail;
    event
}

fn instance_arn(account: &str, region: &str, instance: &str) -> String {
    format!("arn:aws:ec2:{region}:{account}:instance/{instance}")
}

/// What a command looked like when its status changed.
pub struct CommandFacts<'a> {
    /// Its account.
    pub account: &'a str,
    /// Its region.
    pub region: &'a str,
    /// CommandId.
    pub command_id: &'a str,
    /// DocumentName.
    pub document_name: &'a str,
    /// When it was accepted.
    pub requested_at: DateTime<Utc>,
    /// When it expires (ExpiresAfter).
    pub expires_at: DateTime<Utc>,
}

/// "EC2 Command Status-change Notification".
pub fn command_event(
    facts: &CommandFacts<'_>,
    instances: &[String],
    parameters: &std::collections::BTreeMap<String, Vec<String>>,
    status: &str,
) -> Value {
    envelope(
        "EC2 Command Status-change Notification",
        facts.account,
        facts.region,
        instances
            .iter()
            .map(|i| instance_arn(facts.account, facts.region, i))
            .collect(),
        json!({
            "command-id": facts.command_id,
            "document-name": facts.document_name,
            "expire-after": timestamp(&facts.expires_at),
            "parameters": parameters,
            "requested-date-time": timestamp(&facts.requested_at),
            "status": status,
        }),
    )
}

/// "EC2 Command Invocation Status-change Notification".
pub fn invocation_event(facts: &CommandFacts<'_>, instance: &str, status: &str) -> Value {
    envelope(
        "EC2 Command Invocation Status-change Notification",
        facts.account,
        facts.region,
        vec![instance_arn(facts.account, facts.region, instance)],
        json!({
            "command-id": facts.command_id,
            "document-name": facts.document_name,
            "instance-id": instance,
            "requested-date-time": timestamp(&facts.requested_at),
            "status": status,
        }),
    )
}

/// What happened to emitted events, for tests and benchmarks
/// (`GET /_sim/events`).
#[derive(Debug, Default)]
pub struct EventCounters {
    emitted: AtomicU64,
    matched: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl EventCounters {
    /// The counters as JSON.
    pub fn to_json(&self) -> Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "emitted": get(&self.emitted),
            "matched": get(&self.matched),
            "dropped": get(&self.dropped),
            "duplicated": get(&self.duplicated),
            "delivered": get(&self.delivered),
            "failed": get(&self.failed),
        })
    }

    /// Starts counting from zero.
    pub fn clear(&self) {
        for counter in [
            &self.emitted,
            &self.matched,
            &self.dropped,
            &self.duplicated,
            &self.delivered,
            &self.failed,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }
}

/// Delivers Run Command's events as EventBridge would through the sim's
/// routing: to the hub's queue (in moto), counting what happened.
#[derive(Clone)]
pub struct Emitter {
    moto: Moto,
    /// What happened to the events emitted.
    pub counters: Arc<EventCounters>,
}

impl Emitter {
    /// Delivers through `moto`.
    pub fn new(moto: Moto) -> Self {
        Self {
            moto,
            counters: Arc::default(),
        }
    }

    /// Sends each of `events` that `routing`'s pattern matches to its
    /// queue, at least once (a share dropped or doubled, each copy late, as
    /// the routing says); none without a routing.
    pub fn emit(&self, routing: Option<&EventRouting>, events: Vec<Value>) {
        if events.is_empty() {
            return;
        }
        let counters = &self.counters;
        counters.emitted.fetch_add(events.len() as u64, Ordering::Relaxed);
        let Some(routing) = routing else {
            return;
        };
        for event in events {
            if !matches(&routing.pattern, &event) {
                continue;
            }
            counters.matched.fetch_add(1, Ordering::Relaxed);
            let (dropped, copies) = {
                let mut rng = rand::rng();
                let dropped = rng.random_bool(routing.drop_percent / 100.0);
                let twice = rng.random_bool(routing.duplicate_percent / 100.0);
                (dropped, if twice { 2 } else { 1 })
            };
            if dropped {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if copies == 2 {
                counters.duplicated.fetch_add(1, Ordering::Relaxed);
            }
            let body = event.to_string();
            for _ in 0..copies {
                let (moto, counters) = (self.moto.clone(), self.counters.clone());
                let routing = routing.clone();
                let body = body.clone();
                tokio::spawn(async move {
                    if let Some(delay) = crate::limits::latency(routing.delay_ms) {
                        tokio::time::sleep(delay).await;
                    }
                    match moto.send_message(&routing.queue_url, &routing.region, body).await {
                        Ok(()) => counters.delivered.fetch_add(1, Ordering::Relaxed),
                        Err(error) => {
                            tracing::warn!(%error, queue = routing.queue_url, "cannot deliver a Run Command event");
                            counters.failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terminal_commands() -> Value {
        json!({
            "source": ["aws.ssm"],
            "detail-type": ["EC2 Command Status-change Notification"],
            "detail": {"status": ["Success", "Failed", "TimedOut", "Cancelled"]}
        })
    }

    fn facts() -> CommandFacts<'static> {
        CommandFacts {
            account: "111111111111",
            region: "eu-west-1",
            command_id: "c0ffee00-0000-4000-8000-000000000001",
            document_name: "AWS-RunShellScript",
            requested_at: Utc::now(),
            expires_at: Utc::now(),
        }
    }

    #[test]
    fn a_command_event_has_the_documented_shape() {
        let instances = vec!["i-0123456789abcdef0".to_owned()];
        let event = command_event(&facts(), &instances, &Default::default(), "Success");
        assert_eq!(event["detail-type"], "EC2 Command Status-change Notification");
        assert_eq!(event["source"], "aws.ssm");
        assert_eq!(event["account"], "111111111111");
        assert_eq!(event["region"], "eu-west-1");
        assert_eq!(
            event["resources"][0],
            "arn:aws:ec2:eu-west-1:111111111111:instance/i-0123456789abcdef0"
        );
        assert_eq!(event["detail"]["command-id"], "c0ffee00-0000-4000-8000-000000000001");
        assert_eq!(event["detail"]["status"], "Success");
        assert!(event["detail"]["requested-date-time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn the_pattern_matches_terminal_command_events_only() {
        let pattern = terminal_commands();
        let instances = vec!["i-1".to_owned()];
        for status in ["Success", "Failed", "TimedOut", "Cancelled"] {
            assert!(matches(
                &pattern,
                &command_event(&facts(), &instances, &Default::default(), status)
            ));
        }
        assert!(!matches(
            &pattern,
            &command_event(&facts(), &instances, &Default::default(), "InProgress")
        ));
        assert!(!matches(&pattern, &invocation_event(&facts(), "i-1", "Success")));
    }

    #[test]
    fn array_values_match_when_any_is_listed() {
        let pattern = json!({"resources": ["arn:x"]});
        assert!(matches(&pattern, &json!({"resources": ["arn:y", "arn:x"]})));
        assert!(!matches(&pattern, &json!({"resources": ["arn:y"]})));
        assert!(!matches(&pattern, &json!({})));
    }
}
