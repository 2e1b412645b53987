//! Small facts about the API's enums that every binary needs the same way.

use crate::v1::{
    CampaignState, CampaignTargets, ScopeState, ScopeSummary, Stage, StageGate, StagePhase, StageStatus, TargetStatus,
    TimeoutKind,
};

impl TargetStatus {
    /// A terminal status never changes again.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            TargetStatus::Unspecified | TargetStatus::Pending | TargetStatus::Queued | TargetStatus::Running
        )
    }

    /// Whether a target with this status counts against max_errors, as SSM
    /// counts them: failures and execution timeouts do; delivery timeouts and
    /// undeliverable invocations do not.
    pub fn counts_as_error(self, timeout: TimeoutKind) -> bool {
        match self {
            TargetStatus::Failed => true,
            TargetStatus::TimedOut => timeout == TimeoutKind::Execution,
            _ => false,
        }
    }

    /// Whether the campaign should report this target as a problem.
    pub fn is_problem(self) -> bool {
        matches!(
            self,
            TargetStatus::Failed | TargetStatus::TimedOut | TargetStatus::Undeliverable | TargetStatus::Error
        )
    }

    /// The short lowercase name people see: "success", "timed_out".
    pub fn short_name(self) -> &'static str {
        match self {
            TargetStatus::Unspecified => "unspecified",
            TargetStatus::Pending => "pending",
            TargetStatus::Queued => "queued",
            TargetStatus::Running => "running",
            TargetStatus::Success => "success",
            TargetStatus::Failed => "failed",
            TargetStatus::TimedOut => "timed_out",
            TargetStatus::Cancelled => "cancelled",
            TargetStatus::Undeliverable => "undeliverable",
            TargetStatus::Terminated => "terminated",
            TargetStatus::Skipped => "skipped",
            TargetStatus::Error => "error",
        }
    }

    /// Parses a short name as [`TargetStatus::short_name`] prints it.
    pub fn from_short_name(name: &str) -> Option<Self> {
        ALL_TARGET_STATUSES
            .into_iter()
            .find(|status| status.short_name().eq_ignore_ascii_case(name.trim()))
    }
}

/// Every meaningful target status, in the order people read them.
pub const ALL_TARGET_STATUSES: [TargetStatus; 11] = [
    TargetStatus::Pending,
    TargetStatus::Queued,
    TargetStatus::Running,
    TargetStatus::Success,
    TargetStatus::Failed,
    TargetStatus::TimedOut,
    TargetStatus::Cancelled,
    TargetStatus::Undeliverable,
    TargetStatus::Terminated,
    TargetStatus::Skipped,
    TargetStatus::Error,
];

/// Every meaningful campaign state, in the order a campaign meets them.
pub const ALL_CAMPAIGN_STATES: [CampaignState; 13] = [
    CampaignState::Pending,
    CampaignState::Discovering,
    CampaignState::Running,
    CampaignState::Cancelling,
    CampaignState::Paused,
    CampaignState::AwaitingPromotion,
    CampaignState::PendingApproval,
    CampaignState::WaitingForWindow,
    CampaignState::Succeeded,
    CampaignState::CompletedWithErrors,
    CampaignState::Failed,
    CampaignState::Cancelled,
    CampaignState::Planned,
];

impl CampaignState {
    /// A terminal state never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            CampaignState::Succeeded
                | CampaignState::CompletedWithErrors
                | CampaignState::Failed
                | CampaignState::Cancelled
                | CampaignState::Planned
        )
    }

    /// Held until a person decides: approve or reject, promote, resume or
    /// cancel. A campaign waiting for its window is not: the clock moves it.
    pub fn awaits_decision(self) -> bool {
        matches!(
            self,
            CampaignState::PendingApproval | CampaignState::AwaitingPromotion | CampaignState::Paused
        )
    }

    /// The short lowercase name people see: "running", "completed_with_errors".
    pub fn short_name(self) -> &'static str {
        match self {
            CampaignState::Unspecified => "unspecified",
            CampaignState::Pending => "pending",
            CampaignState::Discovering => "discovering",
            CampaignState::Running => "running",
            CampaignState::Cancelling => "cancelling",
            CampaignState::Paused => "paused",
            CampaignState::AwaitingPromotion => "awaiting_promotion",
            CampaignState::PendingApproval => "pending_approval",
            CampaignState::WaitingForWindow => "waiting_for_window",
            CampaignState::Succeeded => "succeeded",
            CampaignState::CompletedWithErrors => "completed_with_errors",
            CampaignState::Failed => "failed",
            CampaignState::Cancelled => "cancelled",
            CampaignState::Planned => "planned",
        }
    }

    /// Parses a short name as [`CampaignState::short_name`] prints it.
    pub fn from_short_name(name: &str) -> Option<Self> {
        ALL_CAMPAIGN_STATES
            .into_iter()
            .find(|state| state.short_name().eq_ignore_ascii_case(name.trim()))
    }
}

impl StagePhase {
    /// The short lowercase name people see: "running", "awaiting_promotion".
    pub fn short_name(self) -> &'static str {
        match self {
            StagePhase::Unspecified => "unspecified",
            StagePhase::Waiting => "waiting",
            StagePhase::Running => "running",
            StagePhase::Baking => "baking",
            StagePhase::AwaitingPromotion => "awaiting_promotion",
            StagePhase::Paused => "paused",
            StagePhase::Passed => "passed",
            StagePhase::NotRun => "not_run",
        }
    }
}

impl ScopeSummary {
    /// Discovered, with no instance found and nothing to say: tables and
    /// the console's map leave such an account/region out (a campaign
    /// without a region list covers every enabled region, most of them
    /// empty, and hundreds of zero rows would bury the ones that matter).
    pub fn matched_nothing(&self) -> bool {
        self.state == ScopeState::Discovered as i32
            && self.error.is_empty()
            && self.counters.unwrap_or_default().total == 0
            && self.managed + self.offline + self.unmanaged == 0
    }
}

impl Stage {
    /// What follows this stage once it ends within its max_errors, for
    /// people: its bake, then what lets the next stage start; after the
    /// last stage, the campaign ends.
    pub fn what_follows(&self, last: bool) -> String {
        if last {
            return "the campaign ends".into();
        }
        let gate = if self.gate == StageGate::Manual as i32 {
            "waits to be promoted"
        } else {
            "the next stage starts"
        };
        match self.bake_seconds {
            0 => gate.to_owned(),
            bake => format!("bakes {}, then {gate}", span(bake)),
        }
    }
}

impl StageStatus {
    /// Its limits, for people: "7 at once, at most 1 error", or "no max
    /// errors" when it has none.
    pub fn limits(&self) -> String {
        let errors = self.error_threshold.map_or_else(
            || "no max errors".to_owned(),
            |t| format!("at most {t} error{}", if t == 1 { "" } else { "s" }),
        );
        format!("{} at once, {errors}", self.concurrency_limit)
    }
}

/// A whole number of seconds as "45s", "30m", "1h30m" or "2d".
fn span(seconds: u32) -> String {
    let units = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let mut left = seconds;
    let mut text = String::new();
    for (size, unit) in units {
        if left >= size {
            text.push_str(&format!("{}{unit}", left / size));
            left %= size;
        }
    }
    if text.is_empty() { "0s".into() } else { text }
}

impl CampaignTargets {
    /// Which of the campaign's targets it takes, for people ("any",
    /// "failed or error", "non-compliant", "failed and non-compliant on
    /// critical patches"), to follow "targets that are".
    pub fn in_words(&self) -> String {
        let statuses = self
            .statuses
            .iter()
            .map(|s| TargetStatus::try_from(*s).map_or("?", TargetStatus::short_name))
            .collect::<Vec<_>>()
            .join(" or ");
        let patch = crate::PatchChoice::of(self.non_compliant, self.critical).in_words();
        let which = match (statuses.is_empty(), patch) {
            (true, None) => "any".into(),
            (true, Some(patch)) => patch.into(),
            (false, None) => statuses,
            (false, Some(patch)) => format!("{statuses} and {patch}"),
        };
        if self.follow_reruns {
            format!("{which}, as its reruns left them")
        } else {
            which
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_counting_follows_ssm() {
        assert!(TargetStatus::Failed.counts_as_error(TimeoutKind::Unspecified));
        assert!(TargetStatus::TimedOut.counts_as_error(TimeoutKind::Execution));
        assert!(!TargetStatus::TimedOut.counts_as_error(TimeoutKind::Delivery));
        assert!(!TargetStatus::Undeliverable.counts_as_error(TimeoutKind::Unspecified));
        assert!(!TargetStatus::Error.counts_as_error(TimeoutKind::Unspecified));
    }

    #[test]
    fn names_round_trip() {
        for status in ALL_TARGET_STATUSES {
            assert_eq!(TargetStatus::from_short_name(status.short_name()), Some(status));
        }
        assert_eq!(
            CampaignState::from_short_name("Completed_With_Errors"),
            Some(CampaignState::CompletedWithErrors)
        );
    }

    #[test]
    fn a_stage_says_what_follows_it() {
        let stage = |bake_seconds, gate: StageGate| Stage {
            name: "canary".into(),
            bake_seconds,
            gate: gate as i32,
            ..Default::default()
        };
        for (bake, gate, last, said) in [
            (1_800, StageGate::Manual, false, "bakes 30m, then waits to be promoted"),
            (0, StageGate::Manual, false, "waits to be promoted"),
            (
                5_400,
                StageGate::Unspecified,
                false,
                "bakes 1h30m, then the next stage starts",
            ),
            (
                90_061,
                StageGate::Automatic,
                false,
                "bakes 1d1h1m1s, then the next stage starts",
            ),
            (0, StageGate::Automatic, false, "the next stage starts"),
            (0, StageGate::Automatic, true, "the campaign ends"),
        ] {
            assert_eq!(stage(bake, gate).what_follows(last), said);
        }
    }

    #[test]
    fn a_stage_says_its_limits() {
        let stage = |threshold| StageStatus {
            concurrency_limit: 7,
            error_threshold: threshold,
            ..Default::default()
        };
        assert_eq!(stage(Some(1)).limits(), "7 at once, at most 1 error");
        assert_eq!(stage(Some(0)).limits(), "7 at once, at most 0 errors");
        assert_eq!(stage(None).limits(), "7 at once, no max errors");
    }

    #[test]
    fn only_discovered_scopes_with_nothing_found_or_said_matched_nothing() {
        use crate::v1::StatusCounters;
        let scope = |state: ScopeState, total, unmanaged, error: &str| ScopeSummary {
            state: state as i32,
            counters: Some(StatusCounters {
                total,
                ..Default::default()
            }),
            unmanaged,
            error: error.into(),
            ..Default::default()
        };
        assert!(scope(ScopeState::Discovered, 0, 0, "").matched_nothing());
        assert!(
            !scope(ScopeState::Pending, 0, 0, "").matched_nothing(),
            "still discovering"
        );
        assert!(!scope(ScopeState::Discovered, 3, 0, "").matched_nothing());
        assert!(
            !scope(ScopeState::Discovered, 0, 2, "").matched_nothing(),
            "instances SSM does not manage"
        );
        assert!(!scope(ScopeState::Failed, 0, 0, "AccessDenied").matched_nothing());
    }

    #[test]
    fn the_targets_taken_from_a_campaign_are_said_in_words() {
        let from = |statuses: &[TargetStatus], non_compliant, follow_reruns| CampaignTargets {
            campaign_id: "c".into(),
            statuses: statuses.iter().map(|s| *s as i32).collect(),
            non_compliant,
            follow_reruns,
            critical: false,
        };
        assert_eq!(from(&[], false, false).in_words(), "any");
        assert_eq!(from(&[], true, false).in_words(), "non-compliant");
        assert_eq!(
            from(&[TargetStatus::Failed, TargetStatus::Error], false, false).in_words(),
            "failed or error"
        );
        assert_eq!(
            from(&[TargetStatus::Success], true, true).in_words(),
            "success and non-compliant, as its reruns left them"
        );
        let critical = CampaignTargets {
            critical: true,
            ..from(&[TargetStatus::Success], true, false)
        };
        assert_eq!(critical.in_words(), "success and non-compliant on critical patches");
    }
}
