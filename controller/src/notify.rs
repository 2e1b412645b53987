//! Notifications: every campaign state change (started, a stage started or
//! passed, paused, awaiting a promotion or an approval, waiting for its next
//! window, ended with its counts) and every run time of a schedule that
//! started nothing (missed, skipped, refused) goes to the hub's EventBridge
//! bus (source `muster`, detail-type `Campaign State Change` or `Schedule
//! Run Not Started`, muster's fields as the detail), is published to an SNS
//! topic (muster's fields as the message, `state`, `campaign_id` and
//! `schedule` as attributes) and is posted to the configured webhooks,
//! Slack-compatible JSON with muster's own fields beside `text`.
//!
//! The store's event log is the outbox: a leader-only loop reads the state
//! events after each webhook's cursor, posts each (three tries, backing
//! off), records one that still fails as a dead letter
//! (`notification_failures`), and moves the cursor on. It runs beside the
//! reconcile loop, so a slow or failing webhook never holds a campaign up.
//! Delivery is at least once: a leader that dies between a post and its
//! cursor write posts that event again, so receivers de-duplicate by
//! `muster.event_id`.

use muster_common::config::ConfigError;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use muster_proto::v1::CampaignState;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::Controller;
use crate::store::campaigns;
use crate::store::records::now_ms;
use crate::store::schedules::{NOT_STARTED_EVENT as SCHEDULE_RUN_KIND, NOT_STARTED_STATES as SCHEDULE_STATES};
use crate::store::sql::{OptionalExtension as _, Sql, params};
use crate::store::{StoreResult, leadership::Fence};

/// A webhook as the controller's config file writes it
/// (`[[notifications.webhooks]]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// A name for people, logs and the dead letters: 1 to 64 of letters,
    /// digits and _.-.
    pub name: String,
    /// Where to post: https://, or http:// to a loopback address only.
    pub url: String,
    /// Only these states (short names: running, paused, awaiting_promotion,
    /// pending_approval, succeeded, completed_with_errors, failed,
    /// cancelled, ...); empty for every change.
    #[serde(default)]
    pub states: Vec<String>,
}

/// The `[notifications]` table.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Notifications {
    /// The EventBridge bus in the controller's account that gets every
    /// change: "default", a bus name or its ARN; none for no events.
    pub event_bus: Option<String>,
    /// The SNS topic (its ARN) that gets every change, for e-mail, SMS,
    /// chat and queues subscribed to it; none for no messages.
    #[serde(default)]
    pub sns_topic: Option<String>,
    /// Webhooks.
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
}

/// The source of muster's events on the bus.
pub const EVENT_SOURCE: &str = "muster";
/// The detail-type of a campaign's state change.
pub const EVENT_DETAIL_TYPE: &str = "Campaign State Change";
/// The detail-type of a schedule's run time that started nothing.
pub const SCHEDULE_DETAIL_TYPE: &str = "Schedule Run Not Started";

/// Where a change goes.
enum Destination<'a> {
    Bus(&'a str),
    Topic(&'a str),
    Webhook(&'a Webhook),
}

impl Destination<'_> {
    /// Its cursor's (and dead letters') name.
    fn name(&self) -> String {
        match self {
            Self::Bus(bus) => format!("eventbridge:{bus}"),
            Self::Topic(topic) => format!("sns:{topic}"),
            Self::Webhook(hook) => hook.name.clone(),
        }
    }

    fn wants(&self, state: &str) -> bool {
        match self {
            Self::Bus(_) | Self::Topic(_) => true,
            Self::Webhook(hook) => hook.states.is_empty() || hook.states.iter().any(|s| s.eq_ignore_ascii_case(state)),
        }
    }
}

impl Notifications {
    /// Every field valid; the error names it.
    pub fn check(&self) -> Result<(), ConfigError> {
        if let Some(bus) = &self.event_bus {
            let name = bus.rsplit_once(":event-bus/").map_or(bus.as_str(), |(_, n)| n);
            if name.is_empty()
                || name.len() > 256
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
            {
                return Err(ConfigError::invalid(
                    "notifications.event_bus",
                    format!("'{bus}' is not an event bus name or ARN"),
                ));
            }
        }
        if let Some(topic) = &self.sns_topic {
            check_topic_arn(topic)
                .map_err(|rule| ConfigError::invalid("notifications.sns_topic", format!("'{topic}' {rule}")))?;
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, hook) in self.webhooks.iter().enumerate() {
            let field = format!("notifications.webhooks[{i}]");
            if !crate::validate::is_short_name(&hook.name) {
                return Err(ConfigError::invalid(
                    &format!("{field}.name"),
                    crate::validate::SHORT_NAME_RULE,
                ));
            }
            if !names.insert(hook.name.as_str()) {
                return Err(ConfigError::invalid(
                    &format!("{field}.name"),
                    format!("'{}' names two webhooks", hook.name),
                ));
            }
            check_url(&hook.url).map_err(|e| ConfigError::invalid(&format!("{field}.url"), e))?;
            for (j, state) in hook.states.iter().enumerate() {
                if CampaignState::from_short_name(state).is_none()
                    && !SCHEDULE_STATES.iter().any(|s| s.eq_ignore_ascii_case(state))
                {
                    return Err(ConfigError::invalid(
                        &format!("{field}.states[{j}]"),
                        format!(
                            "'{state}' is not a campaign state or one of {}",
                            SCHEDULE_STATES.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// An SNS topic ARN: arn:PARTITION:sns:REGION:ACCOUNT:NAME.
fn check_topic_arn(arn: &str) -> Result<(), &'static str> {
    let parts: Vec<&str> = arn.split(':').collect();
    let rule = "is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)";
    match parts[..] {
        ["arn", partition, "sns", region, account, name]
            if partition.starts_with("aws")
                && !region.is_empty()
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && !name.is_empty()
                && name.len() <= 256
                && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) =>
        {
            Ok(())
        }
        _ => Err(rule),
    }
}

/// https://, or http:// to a loopback host (a local relay, a test).
fn check_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("'{url}' is not a URL"))?;
    let host = uri.host().unwrap_or_default();
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(()),
        Some("http") if ["127.0.0.1", "localhost", "[::1]", "::1"].contains(&host) => Ok(()),
        Some("http") => Err(format!("'{url}': plain http only to a loopback address; use https")),
        _ => Err(format!("'{url}' is not an https:// URL")),
    }
}

/// Tries of one post before it is a dead letter.
const TRIES: u32 = 3;
/// How long one post may take.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// Events read per webhook and pass.
const BATCH: i64 = 100;

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

fn client() -> Result<HttpClient, String> {
    muster_common::tls::install_crypto_provider();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("notifications: cannot load the system's CA certificates: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https))
}

/// A state event of the log, with what a notification says of it.
#[derive(Debug, Clone)]
struct StateEvent {
    id: i64,
    campaign_id: String,
    at_ms: i64,
    state: String,
    reason: String,
    /// For a schedule's run time that started nothing: the schedule.
    schedule: Option<ScheduleRun>,
}

/// A schedule's run time that started nothing.
#[derive(Debug, Clone)]
struct ScheduleRun {
    name: String,
    version: i64,
    scheduled_ms: i64,
}

/// The last event `webhook` has had, or, for a webhook new to the store,
/// the newest event from before `since_ms`, when this controller started
/// (it gets what happens from then on, not the history).
fn cursor(conn: &dyn Sql, webhook: &str, since_ms: i64) -> StoreResult<i64> {
    let known: Option<i64> = conn
        .prepare_cached("SELECT event_id FROM notification_cursors WHERE webhook = ?1")?
        .query_row([webhook], |r| r.get(0))
        .optional()?;
    if let Some(id) = known {
        return Ok(id);
    }
    let newest: Option<i64> = conn
        .prepare_cached("SELECT MAX(id) FROM events WHERE at_ms < ?1")?
        .query_row([since_ms], |r| r.get(0))?;
    let newest = newest.unwrap_or(0);
    set_cursor(conn, webhook, newest)?;
    Ok(newest)
}

fn set_cursor(conn: &dyn Sql, webhook: &str, event_id: i64) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO notification_cursors (webhook, event_id) VALUES (?1, ?2)
         ON CONFLICT (webhook) DO UPDATE SET event_id = excluded.event_id",
    )?
    .execute(params![webhook, event_id])?;
    Ok(())
}

fn state_events(conn: &dyn Sql, after: i64) -> StoreResult<Vec<StateEvent>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT id, campaign_id, at_ms, kind, detail FROM events
         WHERE id > ?1 AND kind IN ('state', '{SCHEDULE_RUN_KIND}') ORDER BY id LIMIT {BATCH}"
    ))?;
    let rows = stmt.query_map([after], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
        ))
    })?;
    let mut events = Vec::new();
    for row in rows {
        let (id, campaign_id, at_ms, kind, detail) = row?;
        let detail: serde_json::Value = serde_json::from_str(&detail).unwrap_or_default();
        let text = |field: &str| detail[field].as_str().unwrap_or_default().to_owned();
        events.push(StateEvent {
            id,
            campaign_id,
            at_ms,
            state: text("state"),
            reason: text("reason"),
            schedule: (kind == SCHEDULE_RUN_KIND).then(|| ScheduleRun {
                name: text("schedule"),
                version: detail["version"].as_i64().unwrap_or_default(),
                scheduled_ms: detail["scheduled_ms"].as_i64().unwrap_or_default(),
            }),
        });
    }
    Ok(events)
}

/// When an event happened, as notifications write times.
fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// The body posted for `event`: Slack's `text`, and muster's fields.
fn payload(conn: &dyn Sql, event: &StateEvent) -> StoreResult<serde_json::Value> {
    if let Some(run) = &event.schedule {
        return Ok(schedule_payload(event, run));
    }
    let row = campaigns::get(conn, &event.campaign_id)?;
    let (name, counters, submitted_by) = match &row {
        Some(row) => (
            row.spec.name.clone(),
            Some(campaigns::totals(conn, &row.id)?),
            row.submitted_by.clone(),
        ),
        None => (String::new(), None, String::new()),
    };
    let c = counters.unwrap_or_default();
    // A patch run's: where its instances stand so far.
    let patches = campaigns::patch_counters(conn, &event.campaign_id)?;
    let at = rfc3339(event.at_ms);
    let title = if name.is_empty() {
        event.campaign_id.clone()
    } else {
        format!("{name} ({})", event.campaign_id)
    };
    let mut text = format!("muster campaign {title}: {} - {}", event.state, event.reason);
    if let Some(words) = patches.as_ref().and_then(|p| p.in_words()) {
        text.push_str(&format!("; patches: {words}"));
    }
    let mut body = serde_json::json!({
        "text": text,
        "muster": {
            "schema": "muster.notification.v1",
            "kind": "campaign_state",
            "event_id": event.id,
            "campaign_id": event.campaign_id,
            "campaign_name": name,
            "submitted_by": submitted_by,
            "state": event.state,
            "reason": event.reason,
            "at": at,
            "counters": {
                "total": c.total, "pending": c.pending, "queued": c.queued, "running": c.running,
                "success": c.success, "failed": c.failed, "timed_out": c.timed_out,
                "cancelled": c.cancelled, "undeliverable": c.undeliverable,
                "terminated": c.terminated, "skipped": c.skipped, "error": c.error,
            },
        },
    });
    if let Some(p) = patches {
        body["muster"]["patches"] = serde_json::json!({
            "reported": p.reported, "compliant": p.compliant,
            "missing_targets": p.missing_targets, "missing_patches": p.missing_patches,
            "failed_targets": p.failed_targets, "failed_patches": p.failed_patches,
            "pending_reboot_targets": p.pending_reboot_targets,
            "pending_reboot_patches": p.pending_reboot_patches,
            "critical_targets": p.critical_targets, "critical_patches": p.critical_patches,
            "security_targets": p.security_targets, "security_patches": p.security_patches,
        });
    }
    Ok(body)
}

/// The body for a schedule's run time that started nothing.
fn schedule_payload(event: &StateEvent, run: &ScheduleRun) -> serde_json::Value {
    let scheduled_at = rfc3339(run.scheduled_ms);
    let what = event.state.strip_prefix("schedule_").unwrap_or(&event.state);
    serde_json::json!({
        "text": format!("muster schedule {}: the run time {scheduled_at} was {what} - {}", run.name, event.reason),
        "muster": {
            "schema": "muster.notification.v1",
            "kind": SCHEDULE_RUN_KIND,
            "event_id": event.id,
            "schedule": run.name,
            "schedule_version": run.version,
            "scheduled_at": scheduled_at,
            "campaign_id": event.campaign_id,
            "state": event.state,
            "reason": event.reason,
            "at": rfc3339(event.at_ms),
        },
    })
}

async fn post(client: &HttpClient, url: &str, body: &serde_json::Value) -> Result<(), String> {
    let request = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, concat!("muster/", env!("CARGO_PKG_VERSION")))
        .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(POST_TIMEOUT, client.request(request))
        .await
        .map_err(|_| format!("no answer within {}s", POST_TIMEOUT.as_secs()))?
        .map_err(|e| format!("cannot post: {e}"))?;
    let status = response.status();
    // Read the body, so the connection can be used again.
    let _ = response.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

/// Puts one event with muster's fields as its detail on `bus`.
async fn put_event(events: &aws_sdk_eventbridge::Client, bus: &str, body: &serde_json::Value) -> Result<(), String> {
    let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
        .event_bus_name(bus)
        .source(EVENT_SOURCE)
        .detail_type(if body["muster"]["kind"] == SCHEDULE_RUN_KIND {
            SCHEDULE_DETAIL_TYPE
        } else {
            EVENT_DETAIL_TYPE
        })
        .detail(body["muster"].to_string())
        .build();
    let answer = events
        .put_events()
        .entries(entry)
        .send()
        .await
        .map_err(|e| muster_common::retry::describe(&e))?;
    match answer.entries().first() {
        Some(entry) if entry.error_code().is_some() => Err(format!(
            "{}: {}",
            entry.error_code().unwrap_or_default(),
            entry.error_message().unwrap_or_default()
        )),
        _ if answer.failed_entry_count() > 0 => Err("the event was not put".into()),
        _ => Ok(()),
    }
}

/// Publishes muster's fields of one change to `topic`, with the state and
/// campaign as message attributes (for subscription filter policies).
async fn publish(sns: &aws_sdk_sns::Client, topic: &str, body: &serde_json::Value) -> Result<(), String> {
    let muster = &body["muster"];
    let attribute = |value: &serde_json::Value| {
        aws_sdk_sns::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value.as_str().unwrap_or_default())
            .build()
            .map_err(|e| e.to_string())
    };
    let subject: String = body["text"].as_str().unwrap_or("muster").chars().take(100).collect();
    // SNS subjects are one line of printable ASCII.
    let subject: String = subject
        .chars()
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
        .collect();
    let mut request = sns
        .publish()
        .topic_arn(topic)
        .subject(subject)
        .message(muster.to_string());
    // SNS refuses an attribute without a value: a missed run has no
    // campaign, a campaign's change no schedule.
    for name in ["state", "campaign_id", "schedule"] {
        if muster[name].as_str().is_some_and(|v| !v.is_empty()) {
            request = request.message_attributes(name, attribute(&muster[name])?);
        }
    }
    request.send().await.map_err(|e| muster_common::retry::describe(&e))?;
    Ok(())
}

/// Delivers `body` to `destination`, up to [`TRIES`] times, backing off 1s
/// then 4s.
async fn deliver(
    ctl: &Controller,
    client: &HttpClient,
    destination: &Destination<'_>,
    body: &serde_json::Value,
) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..TRIES {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1 << (2 * (attempt - 1)))).await;
        }
        let outcome = match destination {
            Destination::Bus(bus) => put_event(&ctl.eventbridge, bus, body).await,
            Destination::Topic(topic) => publish(&ctl.sns, topic, body).await,
            Destination::Webhook(hook) => post(client, &hook.url, body).await,
        };
        match outcome {
            Ok(()) => return Ok(()),
            Err(error) => last = error,
        }
    }
    Err(last)
}

/// Runs passes until `shutdown`, once a second, on the leader only.
pub async fn run(ctl: Arc<Controller>, shutdown: CancellationToken) {
    let notifications = &ctl.settings.notifications;
    if notifications.webhooks.is_empty() && notifications.event_bus.is_none() && notifications.sns_topic.is_none() {
        return;
    }
    let since_ms = now_ms();
    let client = match client() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "notifications off");
            return;
        }
    };
    loop {
        if let Some(fence) = ctl.leader.fence()
            && let Err(error) = pass(&ctl, &fence, &client, since_ms).await
        {
            tracing::warn!(%error, "notification pass failed; retrying");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// One pass: every destination gets the state events after its cursor.
async fn pass(ctl: &Controller, fence: &Fence, client: &HttpClient, since_ms: i64) -> StoreResult<()> {
    let notifications = &ctl.settings.notifications;
    let destinations = notifications
        .event_bus
        .iter()
        .map(|bus| Destination::Bus(bus))
        .chain(notifications.sns_topic.iter().map(|topic| Destination::Topic(topic)))
        .chain(notifications.webhooks.iter().map(Destination::Webhook));
    for destination in destinations {
        let name = destination.name();
        let key = name.clone();
        let events = ctl
            .store
            .write_fenced(fence, move |txn| {
                let after = cursor(txn, &key, since_ms)?;
                state_events(txn, after)?
                    .into_iter()
                    .map(|event| payload(txn, &event).map(|body| (event, body)))
                    .collect::<StoreResult<Vec<_>>>()
            })
            .await?;
        for (event, body) in events {
            let wanted = destination.wants(&event.state);
            let outcome = if wanted {
                deliver(ctl, client, &destination, &body).await
            } else {
                Ok(())
            };
            if wanted {
                ctl.metrics.notified(&name, outcome.is_ok());
            }
            let (key, id, campaign) = (name.clone(), event.id, event.campaign_id.clone());
            let failure = outcome.err();
            if let Some(error) = &failure {
                tracing::warn!(destination = %name, campaign_id = %campaign, event_id = id, %error, "notification not delivered; kept as a dead letter");
            }
            ctl.store
                .write_fenced(fence, move |txn| {
                    if let Some(error) = failure {
                        txn.prepare_cached(
                            "INSERT INTO notification_failures (webhook, event_id, campaign_id, at_ms, error)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                        )?
                        .execute(params![key, id, campaign, now_ms(), error])?;
                    }
                    set_cursor(txn, &key, id)
                })
                .await?;
        }
    }
    Ok(())
}

/// Notifications that were never delivered: (webhook, event id, campaign,
/// error), oldest first.
pub fn failures(conn: &dyn Sql) -> StoreResult<Vec<(String, i64, String, String)>> {
    let mut stmt =
        conn.prepare_cached("SELECT webhook, event_id, campaign_id, error FROM notification_failures ORDER BY id")?;
    let rows = stmt.query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::store::testing::store_matrix! {
        fn a_patch_runs_notification_says_where_its_instances_stand(conn) {
            crate::store::testing::pending_campaign(&conn, ("111111111111", "us-east-1"), 2);
            let event = StateEvent {
                id: 7,
                campaign_id: "c1".into(),
                at_ms: 1_700_000_000_000,
                state: "completed_with_errors".into(),
                reason: "1 failed".into(),
                schedule: None,
            };
            let plain = payload(&conn, &event).unwrap();
            assert!(plain["muster"].get("patches").is_none(), "{plain}");
            assert!(!plain["text"].as_str().unwrap().contains("patches"), "{plain}");
            conn.execute(
                "INSERT INTO patch_counters (campaign_id, reported, compliant, pending_reboot_targets, pending_reboot_patches,
                    critical_targets, critical_patches)
                 VALUES ('c1', 2, 1, 1, 3, 1, 2)",
                (),
            )
            .unwrap();
            let patched = payload(&conn, &event).unwrap();
            assert!(
                patched["text"].as_str().unwrap().ends_with(
                    ": completed_with_errors - 1 failed; patches: 1 of 2 instances compliant; 1 with 2 critical patches not compliant; 1 waiting for a reboot (3 patches)"
                ),
                "{patched}"
            );
            assert_eq!(patched["muster"]["patches"]["compliant"], 1);
            assert_eq!(patched["muster"]["patches"]["pending_reboot_patches"], 3);
            assert_eq!(patched["muster"]["patches"]["critical_patches"], 2);
        }
    }

    #[test]
    fn webhooks_are_https_or_loopback_and_named_once() {
        let hook = |name: &str, url: &str| Webhook {
            name: name.into(),
            url: url.into(),
            states: vec![],
        };
        let ok = Notifications {
            event_bus: None,
            sns_topic: None,
            webhooks: vec![
                hook("slack", "https://hooks.slack.com/services/T/B/X"),
                hook("relay", "http://127.0.0.1:9000/x"),
            ],
        };
        assert_eq!(ok.check(), Ok(()));
        let plain = Notifications {
            event_bus: None,
            sns_topic: None,
            webhooks: vec![hook("x", "http://hooks.example.com/x")],
        };
        assert_eq!(
            plain.check().unwrap_err().to_string(),
            "notifications.webhooks[0].url: 'http://hooks.example.com/x': plain http only to a loopback address; use https"
        );
        let twice = Notifications {
            event_bus: None,
            sns_topic: None,
            webhooks: vec![hook("a", "https://a.example/x"), hook("a", "https://b.example/x")],
        };
        assert_eq!(
            twice.check().unwrap_err().to_string(),
            "notifications.webhooks[1].name: 'a' names two webhooks"
        );
        let state = Notifications {
            event_bus: None,
            sns_topic: None,
            webhooks: vec![Webhook {
                states: vec!["exploded".into()],
                ..hook("a", "https://a.example/x")
            }],
        };
        assert_eq!(
            state.check().unwrap_err().to_string(),
            "notifications.webhooks[0].states[0]: 'exploded' is not a campaign state or one of schedule_missed, schedule_skipped, schedule_refused, schedule_paused"
        );
        let bus = |name: &str| Notifications {
            event_bus: Some(name.into()),
            ..Default::default()
        };
        assert_eq!(bus("default").check(), Ok(()));
        assert_eq!(
            bus("arn:aws:events:us-east-1:111122223333:event-bus/ops").check(),
            Ok(())
        );
        assert_eq!(
            bus("no bus!").check().unwrap_err().to_string(),
            "notifications.event_bus: 'no bus!' is not an event bus name or ARN"
        );
        let topic = |arn: &str| Notifications {
            sns_topic: Some(arn.into()),
            ..Default::default()
        };
        assert_eq!(
            topic("arn:aws:sns:us-east-1:111122223333:muster-campaigns").check(),
            Ok(())
        );
        assert_eq!(
            topic("muster-campaigns").check().unwrap_err().to_string(),
            "notifications.sns_topic: 'muster-campaigns' is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)"
        );
        assert!(topic("arn:aws:sqs:us-east-1:111122223333:q").check().is_err());
    }
}
