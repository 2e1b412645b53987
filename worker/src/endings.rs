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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use muster_proto::v1::AwaitCommandsRequest;
use tokio::sync::Notify;
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

#[derive(Default)]
struct State {
    /// Followed command -> (its scope, who waits for it).
    followed: HashMap<String, (Scope, Arc<Notify>)>,
    scopes: HashMap<Scope, ScopeState>,
}

struct Inner {
    state: Mutex<State>,
    /// A command was added: ask again with it.
    added: Notify,
    events: AtomicU8,
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
            }),
        }
    }

    /// Follows `command_ids` of one scope until the returned handle drops;
    /// its `ended` resolves when one of them ends.
    pub fn follow(&self, account: &str, region: &str, command_ids: &[String]) -> Following {
        let signal = Arc::new(Notify::new());
        let scope: Scope = (account.to_owned(), region.to_owned());
        {
            let mut state = self.inner.state.lock().expect("endings lock");
            for id in command_ids {
                state.followed.insert(id.clone(), (scope.clone(), signal.clone()));
            }
        }
        self.inner.added.notify_one();
        Following {
            inner: self.inner.clone(),
            ids: command_ids.to_vec(),
            signal,
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
}

/// Commands one batch follows.
pub struct Following {
    inner: Arc<Inner>,
    ids: Vec<String>,
    signal: Arc<Notify>,
}

impl Following {
    /// Resolves when a followed command's event arrived (at once if one
    /// arrived since the last call).
    pub async fn ended(&self) {
        self.signal.notified().await;
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
    }
}

async fn run(inner: Arc<Inner>, controller: Controller, stop: CancellationToken) {
    loop {
        let ids: Vec<String> = {
            let state = inner.state.lock().expect("endings lock");
            state.followed.keys().cloned().collect()
        };
        let known = inner.events.load(Ordering::Relaxed);
        // Nothing to wait for, or the controller's answer is not known yet:
        // ask at once with what there is (possibly nothing).
        let wait = if ids.is_empty() || known != ENABLED {
            Duration::ZERO
        } else {
            LONG_POLL
        };
        let request = AwaitCommandsRequest {
            command_ids: if known == ENABLED { ids } else { Vec::new() },
            wait: Some(wait.try_into().expect("a short duration")),
        };
        let asked = tokio::select! {
            () = stop.cancelled() => return,
            answer = controller.await_commands(request) => Some(answer),
            () = inner.added.notified(), if wait > Duration::ZERO => None,
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
                if !answer.ended.is_empty() {
                    tracing::debug!(ended = answer.ended.len(), "the controller says commands ended");
                }
                Endings::ended(&inner, answer.ended.into_iter().map(|e| e.command_id));
                if answer.events_enabled {
                    if wait == Duration::ZERO {
                        // Until something is followed, nothing to ask.
                        let nothing = inner.state.lock().expect("endings lock").followed.is_empty();
                        if nothing {
                            tokio::select! {
                                () = stop.cancelled() => return,
                                () = inner.added.notified() => tokio::time::sleep(GATHER).await,
                            }
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
    use super::*;

    fn enabled() -> Endings {
        let endings = Endings::unstarted();
        endings.inner.events.store(ENABLED, Ordering::Relaxed);
        endings
    }

    #[tokio::test]
    async fn an_ending_wakes_the_batch_that_follows_it_even_if_it_came_first() {
        let endings = enabled();
        let following = endings.follow("111111111111", "eu-west-1", &["c1".to_owned(), "c2".to_owned()]);
        let other = endings.follow("111111111111", "eu-west-1", &["c3".to_owned()]);
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
        let _following = endings.follow("b", "r", &["c9".to_owned()]);
        Endings::ended(&endings.inner, ["c9".to_owned()]);
        for _ in 0..5 {
            endings.missed("b", "r");
        }
        assert!(endings.trusted("b", "r"));
    }

    #[test]
    fn without_a_controller_that_reads_events_nothing_is_trusted() {
        let endings = Endings::unstarted();
        assert!(!endings.trusted("a", "r"));
        endings.inner.events.store(DISABLED, Ordering::Relaxed);
        assert!(!endings.trusted("a", "r"));
    }
}
