//! Which followed commands have ended, as the controller learns from Run
//! Command's status-change events: one long poll (AwaitCommands) for every
//! batch of the process, so a batch is read with one listing as soon as it
//! ends instead of being polled for.
//!
//! Events are a shortcut, never the only way. While the controller reads
//! them, batches still poll, late and seldom ([`crate::cadence::Fallback`]);
//! when it does not, or cannot be reached, batches poll at their usual
//! cadence. A scope whose events never come (its account has no
//! target-events.yaml) is known after two batches there were found ended by
//! a fallback poll, and polls at the usual cadence from then on.
//!
//! The same long poll names the campaigns of the batches followed, and the
//! controller answers at once when one of them is being cancelled (with or
//! without events), so that a batch cancels its running commands within
//! moments of the cancel rather than at its lease's next renewal, a third
//! of the TTL later.
//!
//! One call names at most 5,000 commands and 100 campaigns (the
//! controller's limits). A worker that follows more (a large `max_tasks`, or
//! batches of many campaigns) names the next window of them on each call,
//! in turn, and waits only briefly on each, so every one is asked about
//! within seconds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use muster_proto::v1::AwaitCommandsRequest;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::controller::Controller;

/// How long one AwaitCommands waits.
const LONG_POLL: Duration = Duration::from_secs(20);
/// How long new commands wait for company before the long poll is asked
/// again with them (a burst of sends makes one new call, not one each).
const GATHER: Duration = Duration::from_millis(50);
/// How often a controller that reads no events is asked again.
const ASK_AGAIN: Duration = Duration::from_secs(60);
/// After a failed call.
const AFTER_ERROR: Duration = Duration::from_secs(1);
/// Most commands asked about in one call (the controller's limit).
const MAX_COMMANDS: usize = 5_000;
/// Most campaigns asked about in one call (the controller's limit).
const MAX_CAMPAIGNS: usize = 100;
/// How long one AwaitCommands waits when more is followed than one call may
/// name: each call names the next window of them, so every command and
/// campaign is asked about at least once per this many seconds times the
/// number of windows.
const ROTATE: Duration = Duration::from_secs(2);
/// Fallback polls that found a command ended, in a scope never heard from,
/// before the scope is taken to send no events.
const SILENT_AFTER: u32 = 2;

const UNKNOWN: u8 = 0;
const ENABLED: u8 = 1;
const DISABLED: u8 = 2;

/// (account, region).
type Scope = (String, String);

#[derive(Default)]
struct ScopeState {
    heard: bool,
    misses: u32,
}

/// Set once when the controller says the batch's campaign is being
/// cancelled.
type CancelFlag = Arc<watch::Sender<bool>>;

#[derive(Default)]
struct State {
    /// Followed command -> (its scope, who waits for it).
    followed: HashMap<String, (Scope, Arc<Notify>)>,
    scopes: HashMap<Scope, ScopeState>,
    /// Campaign -> the batches of it followed, each told of a cancel once.
    campaigns: HashMap<String, Vec<CancelFlag>>,
    /// Where the next call's window of commands starts, when they do not
    /// all fit in one.
    next_command: usize,
    /// The same for campaigns.
    next_campaign: usize,
}

/// What one AwaitCommands names.
#[derive(Debug, Default)]
struct Asking {
    command_ids: Vec<String>,
    campaign_ids: Vec<String>,
    /// Some were left for the next call: they did not fit in this one.
    partial: bool,
}

impl State {
    /// What to ask the controller about: the commands not yet ended (when
    /// it reads events) and the campaigns with a batch not yet told of a
    /// cancel (when it answers about campaigns). When there are more than
    /// one call may name, each call names the next window of them, in turn.
    fn asking(&mut self, commands: bool, campaigns: bool) -> Asking {
        let command_ids = if commands {
            self.followed.keys().cloned().collect()
        } else {
            Vec::new()
        };
        let campaign_ids = if campaigns {
            self.campaigns
                .iter()
                .filter(|(_, flags)| untold(flags))
                .map(|(id, _)| id.clone())
                .collect()
        } else {
            Vec::new()
        };
        let partial = command_ids.len() > MAX_COMMANDS || campaign_ids.len() > MAX_CAMPAIGNS;
        Asking {
            command_ids: window(command_ids, MAX_COMMANDS, &mut self.next_command),
            campaign_ids: window(campaign_ids, MAX_CAMPAIGNS, &mut self.next_campaign),
            partial,
        }
    }

    /// Whether nothing would be asked about.
    fn nothing_to_ask(&self, commands: bool, campaigns: bool) -> bool {
        (!commands || self.followed.is_empty()) && (!campaigns || !self.campaigns.values().any(|flags| untold(flags)))
    }
}

/// Whether a batch of the campaign has not been told of a cancel yet.
fn untold(flags: &[CancelFlag]) -> bool {
    flags.iter().any(|f| !*f.borrow())
}

/// All of `ids` when at most `max`; otherwise `max` of them in sorted
/// order, from `cursor` on and wrapping around, with the cursor moved past
/// them.
fn window(mut ids: Vec<String>, max: usize, cursor: &mut usize) -> Vec<String> {
    if ids.len() <= max {
        return ids;
    }
    ids.sort_unstable();
    let start = *cursor % ids.len();
    *cursor = start + max;
    ids.rotate_left(start);
    ids.truncate(max);
    ids
}

struct Inner {
    state: Mutex<State>,
    /// A command was added: ask again with it.
    added: Notify,
    /// Whether the controller reads Run Command events.
    events: AtomicU8,
    /// Whether the controller answers about campaigns being cancelled.
    campaigns: AtomicU8,
}

/// The process's view of command endings.
#[derive(Clone)]
pub struct Endings {
    inner: Arc<Inner>,
}

impl Endings {
    /// Starts asking `controller` until `stop`.
    pub fn spawn(controller: Controller, stop: CancellationToken) -> Self {
        let endings = Self::unstarted();
        tokio::spawn(run(endings.inner.clone(), controller, stop));
        endings
    }

    /// Endings that nobody asks for: events are never known to be read, so
    /// every batch polls at its usual cadence.
    pub fn unstarted() -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::default(),
                added: Notify::new(),
                events: AtomicU8::new(UNKNOWN),
                campaigns: AtomicU8::new(UNKNOWN),
            }),
        }
    }

    /// Follows `command_ids`, a batch of `campaign_id` in one scope, until
    /// the returned handle drops: its `ended` resolves when one of them
    /// ends, its `cancelling` when the controller says the campaign is
    /// being cancelled.
    pub fn follow(&self, account: &str, region: &str, campaign_id: &str, command_ids: &[String]) -> Following {
        let signal = Arc::new(Notify::new());
        let scope: Scope = (account.to_owned(), region.to_owned());
        let cancel = Arc::new(watch::Sender::new(false));
        {
            let mut state = self.inner.state.lock().expect("endings lock");
            for id in command_ids {
                state.followed.insert(id.clone(), (scope.clone(), signal.clone()));
            }
            state
                .campaigns
                .entry(campaign_id.to_owned())
                .or_default()
                .push(cancel.clone());
        }
        self.inner.added.notify_one();
        Following {
            inner: self.inner.clone(),
            ids: command_ids.to_vec(),
            signal,
            campaign_id: campaign_id.to_owned(),
            cancel,
        }
    }

    /// Whether a batch in (account, region) can wait for its event: the
    /// controller reads events, and the scope is not known to send none.
    pub fn trusted(&self, account: &str, region: &str) -> bool {
        if self.inner.events.load(Ordering::Relaxed) != ENABLED {
            return false;
        }
        let state = self.inner.state.lock().expect("endings lock");
        state
            .scopes
            .get(&(account.to_owned(), region.to_owned()))
            .is_none_or(|s| s.heard || s.misses < SILENT_AFTER)
    }

    /// A fallback poll found a command of (account, region) ended before
    /// its event came.
    pub fn missed(&self, account: &str, region: &str) {
        let mut state = self.inner.state.lock().expect("endings lock");
        let scope = state.scopes.entry((account.to_owned(), region.to_owned())).or_default();
        scope.misses += 1;
        if !scope.heard && scope.misses == SILENT_AFTER {
            tracing::warn!(
                account,
                region,
                "no Run Command events from this account and region (is target-events.yaml deployed there?); its batches poll SSM as usual"
            );
        }
    }

    /// Records the commands the controller says ended: wakes the batches
    /// that follow them and marks their scopes as heard from.
    fn ended(inner: &Inner, command_ids: impl IntoIterator<Item = String>) {
        let mut state = inner.state.lock().expect("endings lock");
        for id in command_ids {
            if let Some((scope, signal)) = state.followed.remove(&id) {
                state.scopes.entry(scope).or_default().heard = true;
                signal.notify_one();
            }
        }
    }

    /// Tells the batches followed now of the campaigns the controller says
    /// are being cancelled (a batch followed later asks again for itself:
    /// a window that closed may have opened again by then).
    fn cancelling(inner: &Inner, campaign_ids: impl IntoIterator<Item = String>) {
        let state = inner.state.lock().expect("endings lock");
        for id in campaign_ids {
            let Some(flags) = state.campaigns.get(&id) else {
                continue;
            };
            tracing::info!(campaign_id = %id, batches = flags.len(), "the controller says the campaign is being cancelled");
            for flag in flags {
                flag.send_replace(true);
            }
        }
    }
}

/// Commands one batch follows.
pub struct Following {
    inner: Arc<Inner>,
    ids: Vec<String>,
    signal: Arc<Notify>,
    campaign_id: String,
    cancel: CancelFlag,
}

impl Following {
    /// Resolves when a followed command's event arrived (at once if one
    /// arrived since the last call).
    pub async fn ended(&self) {
        self.signal.notified().await;
    }

    /// Resolves when the controller has said that the batch's campaign is
    /// being cancelled (at once, and every time, once it has).
    pub async fn cancelling(&self) {
        let mut told = self.cancel.subscribe();
        // The sender lives as long as `self`.
        let _ = told.wait_for(|cancelled| *cancelled).await;
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        let mut state = self.inner.state.lock().expect("endings lock");
        for id in &self.ids {
            if state
                .followed
                .get(id)
                .is_some_and(|(_, signal)| Arc::ptr_eq(signal, &self.signal))
            {
                state.followed.remove(id);
            }
        }
        if let Some(flags) = state.campaigns.get_mut(&self.campaign_id) {
            flags.retain(|flag| !Arc::ptr_eq(flag, &self.cancel));
            if flags.is_empty() {
                state.campaigns.remove(&self.campaign_id);
            }
        }
    }
}

async fn run(inner: Arc<Inner>, controller: Controller, stop: CancellationToken) {
    loop {
        let events = inner.events.load(Ordering::Relaxed);
        let campaigns = inner.campaigns.load(Ordering::Relaxed);
        // Campaigns are named unless the controller is known not to answer
        // (an older one ignores them).
        let Asking {
            command_ids,
            campaign_ids,
            partial,
        } = inner
            .state
            .lock()
            .expect("endings lock")
            .asking(events == ENABLED, campaigns != DISABLED);
        // A long wait only for what the controller is known to answer;
        // otherwise ask at once, to learn what it answers. A short one when
        // the rest waits for the next call.
        let waits =
            (events == ENABLED && !command_ids.is_empty()) || (campaigns == ENABLED && !campaign_ids.is_empty());
        let wait = match (waits, partial) {
            (false, _) => Duration::ZERO,
            (true, false) => LONG_POLL,
            (true, true) => ROTATE,
        };
        let request = AwaitCommandsRequest {
            command_ids,
            wait: Some(wait.try_into().expect("a short duration")),
            campaign_ids,
        };
        let asked = tokio::select! {
            () = stop.cancelled() => return,
            answer = controller.await_commands(request) => Some(answer),
            () = inner.added.notified(), if waits => None,
        };
        match asked {
            // New commands to follow: ask again with them, once a burst
            // of sends is over.
            None => {
                tokio::time::sleep(GATHER).await;
                continue;
            }
            Some(Ok(answer)) => {
                let was = inner.events.swap(
                    if answer.events_enabled { ENABLED } else { DISABLED },
                    Ordering::Relaxed,
                );
                if was != ENABLED && answer.events_enabled {
                    tracing::info!("the controller reads Run Command events: batches wait for them and poll seldom");
                }
                inner.campaigns.store(
                    if answer.answers_campaigns { ENABLED } else { DISABLED },
                    Ordering::Relaxed,
                );
                if !answer.ended.is_empty() {
                    tracing::debug!(ended = answer.ended.len(), "the controller says commands ended");
                }
                Endings::ended(&inner, answer.ended.into_iter().map(|e| e.command_id));
                Endings::cancelling(&inner, answer.cancelling_campaigns);
                if waits {
                    continue;
                }
                if answer.events_enabled || answer.answers_campaigns {
                    // Until there is something it answers about, nothing to
                    // ask.
                    let idle = inner
                        .state
                        .lock()
                        .expect("endings lock")
                        .nothing_to_ask(answer.events_enabled, answer.answers_campaigns);
                    if idle {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = inner.added.notified() => tokio::time::sleep(GATHER).await,
                        }
                    }
                    continue;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(ASK_AGAIN) => {}
                }
            }
            Some(Err(error)) => {
                // Batches poll as usual until the controller answers again.
                inner.events.store(UNKNOWN, Ordering::Relaxed);
                inner.campaigns.store(UNKNOWN, Ordering::Relaxed);
                tracing::debug!(%error, "AwaitCommands failed; asking again");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(AFTER_ERROR) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use muster_proto::v1::AwaitCommandsResponse;

    use super::*;

    fn enabled() -> Endings {
        let endings = Endings::unstarted();
        endings.inner.events.store(ENABLED, Ordering::Relaxed);
        endings
    }

    #[tokio::test]
    async fn an_ending_wakes_the_batch_that_follows_it_even_if_it_came_first() {
        let endings = enabled();
        let following = endings.follow("111111111111", "eu-west-1", "camp", &["c1".to_owned(), "c2".to_owned()]);
        let other = endings.follow("111111111111", "eu-west-1", "camp", &["c3".to_owned()]);
        Endings::ended(&endings.inner, ["c2".to_owned(), "unknown".to_owned()]);
        tokio::time::timeout(Duration::from_secs(1), following.ended())
            .await
            .expect("the event arrived before the wait: not lost");
        let quiet = tokio::time::timeout(Duration::from_millis(50), other.ended()).await;
        assert!(quiet.is_err(), "another batch's command did not end");
        // Ended commands are no longer asked about; dropping forgets the rest.
        assert_eq!(endings.inner.state.lock().unwrap().followed.len(), 2);
        drop(following);
        assert_eq!(endings.inner.state.lock().unwrap().followed.len(), 1);
    }

    #[test]
    fn a_scope_that_never_sends_events_is_polled_after_two_misses() {
        let endings = enabled();
        assert!(endings.trusted("a", "r"));
        endings.missed("a", "r");
        assert!(endings.trusted("a", "r"), "one lost event is not a missing rule");
        endings.missed("a", "r");
        assert!(!endings.trusted("a", "r"));
        assert!(endings.trusted("a", "other"), "per scope");
        // A scope heard from once keeps its trust: its misses were lost events.
        let _following = endings.follow("b", "r", "camp", &["c9".to_owned()]);
        Endings::ended(&endings.inner, ["c9".to_owned()]);
        for _ in 0..5 {
            endings.missed("b", "r");
        }
        assert!(endings.trusted("b", "r"));
    }

    #[tokio::test]
    async fn a_cancel_is_told_to_the_batches_followed_then_and_not_to_later_ones() {
        let endings = Endings::unstarted();
        let first = endings.follow("a", "r", "camp", &["c1".to_owned()]);
        let second = endings.follow("a", "r", "camp", &["c2".to_owned()]);
        let other = endings.follow("a", "r", "other", &["c3".to_owned()]);
        let asking = |e: &Endings| e.inner.state.lock().unwrap().asking(false, true).campaign_ids;
        let mut asked = asking(&endings);
        asked.sort();
        assert_eq!(asked, ["camp", "other"]);
        Endings::cancelling(&endings.inner, ["camp".to_owned(), "unknown".to_owned()]);
        for told in [&first, &second] {
            tokio::time::timeout(Duration::from_secs(1), told.cancelling())
                .await
                .expect("told of the cancel");
        }
        let quiet = tokio::time::timeout(Duration::from_millis(50), other.cancelling()).await;
        assert!(quiet.is_err(), "another campaign's batch goes on");
        assert_eq!(
            asking(&endings),
            ["other"],
            "a campaign told of is not asked about again"
        );
        // A batch followed later asks for itself (the window that closed
        // may have opened again).
        let later = endings.follow("a", "r", "camp", &["c4".to_owned()]);
        let quiet = tokio::time::timeout(Duration::from_millis(50), later.cancelling()).await;
        assert!(quiet.is_err(), "told only of a cancel heard after it was followed");
        assert_eq!(asking(&endings).len(), 2);
        drop((first, second, later));
        assert_eq!(asking(&endings), ["other"], "dropped batches are forgotten");
    }

    #[tokio::test]
    async fn the_long_poll_names_the_campaigns_and_a_cancel_ends_its_wait() {
        use crate::controller::scripted::Scripted;
        let controller = Arc::new(Scripted::default());
        for answer in [
            AwaitCommandsResponse {
                answers_campaigns: true,
                ..Default::default()
            },
            AwaitCommandsResponse {
                answers_campaigns: true,
                cancelling_campaigns: vec!["camp".to_owned()],
                ..Default::default()
            },
        ] {
            controller.awaits.lock().unwrap().push_back(Ok(answer));
        }
        let endings = Endings::unstarted();
        let following = endings.follow("a", "r", "camp", &["c1".to_owned()]);
        let stop = CancellationToken::new();
        tokio::spawn(run(endings.inner.clone(), Arc::new(controller.clone()), stop.clone()));
        tokio::time::timeout(Duration::from_secs(2), following.cancelling())
            .await
            .expect("the controller's answer tells the batch");
        // Then a controller of muster 0.2 (the default answer): asked again
        // only now and then, not in a loop.
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.cancel();
        let asked = controller.awaited.lock().unwrap().clone();
        assert_eq!(asked.len(), 3, "{asked:?}");
        let wait = |r: &AwaitCommandsRequest| r.wait.and_then(|w| Duration::try_from(w).ok());
        assert_eq!(
            asked[0].campaign_ids,
            ["camp"],
            "named while it is not known whether they are answered"
        );
        assert_eq!(wait(&asked[0]), Some(Duration::ZERO));
        assert_eq!(asked[1].campaign_ids, ["camp"]);
        assert_eq!(
            wait(&asked[1]),
            Some(LONG_POLL),
            "a long wait once the controller answers campaigns"
        );
        assert!(asked[1].command_ids.is_empty(), "no events: commands are polled for");
        assert!(
            asked[2].campaign_ids.is_empty(),
            "a campaign told of is not asked about again"
        );
    }

    #[test]
    fn more_than_one_call_may_name_is_asked_about_in_turn() {
        let endings = enabled();
        let commands: Vec<String> = (0..MAX_COMMANDS + 7).map(|i| format!("cmd-{i:05}")).collect();
        let mut batches = vec![endings.follow("a", "r", "camp-000", &commands)];
        for i in 1..MAX_CAMPAIGNS + 50 {
            batches.push(endings.follow("a", "r", &format!("camp-{i:03}"), &[format!("x-{i}")]));
        }
        let all_commands = MAX_COMMANDS + 7 + MAX_CAMPAIGNS + 49;
        let (mut seen_commands, mut seen_campaigns) = (BTreeSet::new(), BTreeSet::new());
        for call in 0..2 {
            let asked = endings.inner.state.lock().unwrap().asking(true, true);
            assert!(asked.partial, "call {call}: not all fit");
            assert_eq!(asked.command_ids.len(), MAX_COMMANDS, "the controller's limit");
            assert_eq!(asked.campaign_ids.len(), MAX_CAMPAIGNS, "the controller's limit");
            seen_commands.extend(asked.command_ids);
            seen_campaigns.extend(asked.campaign_ids);
        }
        assert_eq!(seen_commands.len(), all_commands, "every command within two calls");
        assert_eq!(
            seen_campaigns.len(),
            MAX_CAMPAIGNS + 50,
            "every campaign within two calls"
        );
        // Once they fit, one call names them all.
        batches.truncate(MAX_CAMPAIGNS);
        batches.remove(0);
        let asked = endings.inner.state.lock().unwrap().asking(true, true);
        assert!(!asked.partial);
        assert_eq!(asked.command_ids.len(), MAX_CAMPAIGNS - 1);
        assert_eq!(asked.campaign_ids.len(), MAX_CAMPAIGNS - 1);
    }

    #[tokio::test]
    async fn a_long_poll_that_cannot_name_everything_waits_briefly_and_names_the_rest_next() {
        use crate::controller::scripted::Scripted;
        let controller = Arc::new(Scripted::default());
        for _ in 0..3 {
            controller.awaits.lock().unwrap().push_back(Ok(AwaitCommandsResponse {
                answers_campaigns: true,
                ..Default::default()
            }));
        }
        let endings = Endings::unstarted();
        let _batches: Vec<Following> = (0..MAX_CAMPAIGNS + 50)
            .map(|i| endings.follow("a", "r", &format!("camp-{i:03}"), &[format!("c-{i}")]))
            .collect();
        let stop = CancellationToken::new();
        tokio::spawn(run(endings.inner.clone(), Arc::new(controller.clone()), stop.clone()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.cancel();
        let asked = controller.awaited.lock().unwrap().clone();
        assert!(asked.len() >= 3, "{}", asked.len());
        let wait = |r: &AwaitCommandsRequest| r.wait.and_then(|w| Duration::try_from(w).ok());
        assert_eq!(
            wait(&asked[1]),
            Some(ROTATE),
            "the rest are not left a long poll's time"
        );
        let named: BTreeSet<&String> = asked[1..3].iter().flat_map(|r| &r.campaign_ids).collect();
        assert_eq!(named.len(), MAX_CAMPAIGNS + 50, "every campaign named within two calls");
        assert!(asked.iter().all(|r| r.campaign_ids.len() <= MAX_CAMPAIGNS));
    }

    #[test]
    fn without_a_controller_that_reads_events_nothing_is_trusted() {
        let endings = Endings::unstarted();
        assert!(!endings.trusted("a", "r"));
        endings.inner.events.store(DISABLED, Ordering::Relaxed);
        assert!(!endings.trusted("a", "r"));
    }
}
