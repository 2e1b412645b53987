//! `muster watch`: live progress. On a terminal: an overall bar with rate,
//! ETA and counts, a line per (account, region) in progress, and each failed
//! target printed above the bars as it happens. Piped: a status line every few
//! seconds and the failures. Either way it ends with a summary table.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use muster_proto::v1::{
    Campaign, CampaignState, GetCampaignRequest, ScopeSummary, StatusCounters, Target, TargetStatus,
    WatchCampaignRequest, watch_campaign_response::Event,
};

use crate::args::Output;
use crate::connect::Client;
use crate::render::{self, Style, done};

/// Scope lines shown at once; the rest are summed up in one line.
const MAX_SCOPE_LINES: usize = 8;
/// How often a piped watch prints a status line.
const PIPED_EVERY: Duration = Duration::from_secs(5);

/// The exit code of a watch that stopped where the campaign waits on a
/// person (`--until-decision`).
pub const AWAITS_DECISION: i32 = 5;

/// How a watch follows its campaign.
#[derive(Debug, Clone, Copy, Default)]
pub struct Follow {
    /// Do not print each failed target as it happens.
    pub quiet: bool,
    /// Stop where the campaign waits on a person, not only at its end.
    pub until_decision: bool,
}

impl Follow {
    /// Where the watch stops short of the end: the campaign waits on a
    /// person, and the watch was asked to stop there.
    fn holds_at(self, state: CampaignState) -> bool {
        self.until_decision && state.awaits_decision()
    }

    fn stops_at(self, state: CampaignState) -> bool {
        state.is_terminal() || self.holds_at(state)
    }
}

/// The exit code for a campaign's final state.
pub fn exit_code(state: CampaignState) -> i32 {
    match state {
        CampaignState::Succeeded | CampaignState::Planned => 0,
        CampaignState::CompletedWithErrors => 2,
        CampaignState::Failed => 3,
        CampaignState::Cancelled => 4,
        _ => 1,
    }
}

struct View {
    style: Style,
    live: Option<Live>,
    started: Instant,
    done_at_start: Option<u64>,
    counters: StatusCounters,
    scopes: BTreeMap<(String, String), ScopeSummary>,
    state: CampaignState,
    last_line: Instant,
}

struct Live {
    multi: MultiProgress,
    overall: ProgressBar,
    scope_bars: BTreeMap<(String, String), ProgressBar>,
    more: ProgressBar,
}

impl View {
    fn new(style: Style) -> Self {
        let live = style.terminal.then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
            let overall = multi.add(ProgressBar::new(0));
            overall.set_style(
                ProgressStyle::with_template("{prefix:>12} [{bar:40.cyan/blue}] {pos}/{len} {msg}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            overall.set_prefix("campaign");
            let more = multi.add(ProgressBar::new(0));
            more.set_style(ProgressStyle::with_template("{msg}").expect("a valid template"));
            Live {
                multi,
                overall,
                scope_bars: BTreeMap::new(),
                more,
            }
        });
        Self {
            style,
            live,
            started: Instant::now(),
            done_at_start: None,
            counters: StatusCounters::default(),
            scopes: BTreeMap::new(),
            state: CampaignState::Unspecified,
            last_line: Instant::now() - PIPED_EVERY,
        }
    }

    fn rate_and_eta(&mut self) -> (f64, f64) {
        let finished = done(&self.counters);
        let base = *self.done_at_start.get_or_insert(finished);
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = (finished - base) as f64 / elapsed;
        let remaining = (self.counters.total - finished) as f64;
        let eta = if rate > 0.0 { remaining / rate } else { f64::INFINITY };
        (rate, eta)
    }

    fn counts(&self) -> String {
        let mut parts: Vec<String> = render::tally(&self.counters)
            .into_iter()
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        if self.counters.queued + self.counters.running == 0 {
            parts.push("running 0".into());
        }
        parts.join("  ")
    }

    fn update(&mut self) {
        let (rate, eta) = self.rate_and_eta();
        let state = self.state.short_name();
        let line = format!(
            "{}  {:.1}/s  ETA {}  [{}]",
            self.counts(),
            rate,
            if self.counters.total == done(&self.counters) {
                "-".into()
            } else {
                render::duration(eta)
            },
            state
        );
        match &mut self.live {
            Some(live) => {
                live.overall.set_length(self.counters.total);
                live.overall.set_position(done(&self.counters));
                live.overall.set_message(line);
                let active: Vec<&ScopeSummary> = self
                    .scopes
                    .values()
                    .filter(|s| {
                        s.counters
                            .is_some_and(|c| c.queued + c.running > 0 || (c.pending > 0 && done(&c) > 0))
                    })
                    .collect();
                let shown: Vec<(String, String)> = active
                    .iter()
                    .take(MAX_SCOPE_LINES)
                    .map(|s| (s.account_id.clone(), s.region.clone()))
                    .collect();
                live.scope_bars.retain(|key, bar| {
                    let keep = shown.contains(key);
                    if !keep {
                        bar.finish_and_clear();
                    }
                    keep
                });
                for scope in active.iter().take(MAX_SCOPE_LINES) {
                    let key = (scope.account_id.clone(), scope.region.clone());
                    let c = scope.counters.unwrap_or_default();
                    let bar = live.scope_bars.entry(key).or_insert_with(|| {
                        let bar = live.multi.insert_before(&live.more, ProgressBar::new(c.total));
                        bar.set_style(
                            ProgressStyle::with_template("{prefix:>28} [{bar:20}] {pos}/{len} {msg}")
                                .expect("a valid template")
                                .progress_chars("=> "),
                        );
                        bar.set_prefix(format!("{} {}", scope.account_id, scope.region));
                        bar
                    });
                    bar.set_length(c.total);
                    bar.set_position(done(&c));
                    bar.set_message(format!(
                        "ok {} failed {} running {}",
                        c.success,
                        render::failed(&c) + c.timed_out,
                        c.queued + c.running
                    ));
                }
                let hidden = active.len().saturating_sub(MAX_SCOPE_LINES);
                live.more.set_message(if hidden > 0 {
                    format!("{:>28} ... and {hidden} more accounts/regions in progress", "")
                } else {
                    String::new()
                });
            }
            None => {
                if self.last_line.elapsed() >= PIPED_EVERY {
                    self.last_line = Instant::now();
                    eprintln!("{}/{} done  {line}", done(&self.counters), self.counters.total);
                }
            }
        }
    }

    fn note(&self, line: &str) {
        match &self.live {
            Some(live) => live.multi.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    fn snapshot(&mut self, campaign: &Campaign) {
        self.counters = campaign.counters.unwrap_or_default();
        self.state = CampaignState::try_from(campaign.state).unwrap_or(CampaignState::Unspecified);
        for scope in &campaign.scopes {
            self.scopes
                .insert((scope.account_id.clone(), scope.region.clone()), scope.clone());
        }
        self.update();
    }

    fn failure(&self, target: &Target) {
        let status = TargetStatus::try_from(target.status).unwrap_or(TargetStatus::Unspecified);
        if !status.is_problem() {
            return;
        }
        let instance = if target.instance_id.is_empty() {
            "(whole scope)"
        } else {
            target.instance_id.as_str()
        };
        self.note(&format!(
            "{} {} {} {}: {}",
            self.style.red("x"),
            target.account_id,
            target.region,
            instance,
            target.reason
        ));
    }

    fn finish(&mut self) {
        if let Some(live) = self.live.take() {
            for bar in live.scope_bars.values() {
                bar.finish_and_clear();
            }
            live.more.finish_and_clear();
            live.overall.finish_and_clear();
            let _ = live.multi.clear();
        }
    }
}

/// How long a watch keeps trying to reach the controller again after its
/// stream dropped (a restart, a failover, a load balancer's idle timeout).
const RECONNECT_FOR: Duration = Duration::from_secs(600);

/// Whether a watch that ended with `status` should subscribe again: the
/// connection or the controller went away, not the request.
fn resumable(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled | Code::Aborted | Code::DeadlineExceeded
    )
}

/// Follows a campaign to its end, or with `until_decision` to where it
/// waits on a person; returns the exit code. When the stream drops before
/// then, it subscribes again (for up to [`RECONNECT_FOR`] without an
/// answer): the new stream's snapshot brings the view back to where the
/// campaign is, so nothing counted is lost.
pub async fn watch(
    client: &mut Client,
    id: &str,
    style: Style,
    output: Output,
    how: Follow,
) -> Result<i32, tonic::Status> {
    let mut view = View::new(Style {
        terminal: style.terminal && output.is_table(),
        ..style
    });
    let mut last: Option<Campaign> = None;
    let mut lost_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(250);
    loop {
        let ended = follow(client, id, how, &mut view, &mut last, &mut lost_since).await;
        if how.stops_at(view.state) {
            break;
        }
        let why = match ended {
            Ok(()) => "the controller ended the stream".to_owned(),
            Err(status) if resumable(&status) => status.message().to_owned(),
            Err(status) => return Err(status),
        };
        let since = *lost_since.get_or_insert_with(Instant::now);
        if since.elapsed() > RECONNECT_FOR {
            return Err(tonic::Status::unavailable(format!(
                "the watch lost the controller {}s ago and could not subscribe again: {why}",
                RECONNECT_FOR.as_secs()
            )));
        }
        view.note(&style.dim(&format!("(stream lost: {why}; subscribing again)")));
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
    view.finish();
    if !view.state.is_terminal() {
        // Held for a decision: the campaign as it waits (its reason says
        // who may decide and how), from the snapshot that showed it so, or
        // read now when a state change brought it.
        let campaign = match last {
            Some(campaign) => campaign,
            None => client
                .get_campaign(GetCampaignRequest {
                    campaign_id: id.to_owned(),
                    view: muster_proto::v1::CampaignView::Full as i32,
                })
                .await?
                .into_inner()
                .campaign
                .unwrap_or_default(),
        };
        crate::commands::print_campaign(&campaign, style, output);
        if output.is_table() {
            eprintln!(
                "{} waits on a decision ({}); `muster watch {id}` follows it on",
                style.bold("campaign"),
                view.state.short_name()
            );
        }
        return Ok(AWAITS_DECISION);
    }
    let campaign = last.ok_or_else(|| tonic::Status::internal("the watch ended without a snapshot"))?;
    crate::commands::print_campaign(&campaign, style, output);
    Ok(exit_code(
        CampaignState::try_from(campaign.state).unwrap_or(CampaignState::Unspecified),
    ))
}

/// One subscription: applies its messages to `view` until it ends. A
/// snapshot (the first message) means the controller is reachable again.
async fn follow(
    client: &mut Client,
    id: &str,
    how: Follow,
    view: &mut View,
    last: &mut Option<Campaign>,
    lost_since: &mut Option<Instant>,
) -> Result<(), tonic::Status> {
    let mut stream = client
        .watch_campaign(WatchCampaignRequest {
            campaign_id: id.to_owned(),
            include_targets: !how.quiet,
        })
        .await?
        .into_inner();
    let style = view.style;
    while let Some(message) = stream.message().await? {
        match message.event {
            Some(Event::Snapshot(campaign)) => {
                *lost_since = None;
                // A plan that has ended has no progress to show: only the
                // plan itself, printed at the end.
                let state = CampaignState::try_from(campaign.state).unwrap_or(CampaignState::Unspecified);
                if campaign.dry_run && state.is_terminal() {
                    view.state = state;
                } else {
                    view.snapshot(&campaign);
                }
                *last = Some(campaign);
                if how.holds_at(view.state) {
                    return Ok(());
                }
            }
            Some(Event::Progress(progress)) => {
                view.counters = progress.counters.unwrap_or_default();
                for scope in progress.scopes {
                    view.scopes
                        .insert((scope.account_id.clone(), scope.region.clone()), scope);
                }
                view.update();
            }
            Some(Event::State(change)) => {
                view.state = CampaignState::try_from(change.state).unwrap_or(CampaignState::Unspecified);
                view.note(&format!(
                    "{} {}",
                    style.status(view.state.short_name()),
                    style.dim(&change.reason)
                ));
                view.update();
                if how.holds_at(view.state) {
                    // The last snapshot shows the campaign before it.
                    *last = None;
                    return Ok(());
                }
            }
            Some(Event::Target(target)) => view.failure(&target),
            None => {}
        }
    }
    Ok(())
}
