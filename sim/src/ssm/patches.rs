//! Patch Manager's view of each instance: what AWS-RunPatchBaseline leaves
//! behind (its patch state, as DescribeInstancePatchStates reports it). An
//! instance starts with [`INSTALLED`] patches and its
//! `muster-sim:missing-patches` missing; a Scan reports them, an Install
//! installs them (or fails them, when the command fails), and each run's
//! state replaces the one before.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::model::{Command, InvState};

/// Patches of the baseline every simulated instance has installed.
pub const INSTALLED: u32 = 42;

/// Patches that do not apply to a simulated instance.
const NOT_APPLICABLE: u32 = 7;

/// The patch baseline every instance answers to (AWS's default for
/// Amazon Linux, in the documentation's shape).
const BASELINE: &str = "pb-0c10e65780EXAMPLE";

/// One instance's patch state.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchState {
    /// "Scan" or "Install".
    pub operation: &'static str,
    /// "RebootIfNeeded" or "NoReboot".
    pub reboot_option: String,
    /// Patches of the baseline installed.
    pub installed: u32,
    /// Installed since the last reboot.
    pub pending_reboot: u32,
    /// Applicable and not installed.
    pub missing: u32,
    /// Attempted by the last install and failed.
    pub failed: u32,
    /// Of the patches the instance was missing, those of critical
    /// severity: non-compliant while any patch is (missing, failed or
    /// waiting for a reboot).
    pub critical: u32,
    /// When the operation started and ended.
    pub started: DateTime<Utc>,
    /// When it ended.
    pub ended: DateTime<Utc>,
    /// From when DescribeInstancePatchStates shows it (the tunables' lag
    /// after the run).
    pub shown_from: std::time::Instant,
    /// The state it replaced, shown until then.
    pub before: Option<Box<PatchState>>,
}

impl PatchState {
    /// The state DescribeInstancePatchStates shows now: this one once its
    /// lag has passed, else the one it replaced.
    pub fn shown(&self) -> Option<&PatchState> {
        if self.shown_from <= std::time::Instant::now() {
            Some(self)
        } else {
            self.before.as_deref()
        }
    }
}

/// Patch states by (account, region, instance).
pub type Patches = HashMap<(String, String, String), PatchState>;

/// What the run of invocation `index` of `command` (AWS-RunPatchBaseline),
/// ending now with its instance's scripted exit code, leaves as the
/// instance's patch state, after `prior` (none before its first run),
/// shown `lag` from now. A failed scan reports nothing.
pub fn after_run(
    command: &Command,
    index: usize,
    prior: Option<&PatchState>,
    lag: std::time::Duration,
) -> Option<PatchState> {
    let invocation = &command.invocations[index];
    let exit_code = invocation.behaviour.exit_code;
    let InvState::InProgress { started } = invocation.state else {
        return None;
    };
    let parameter = |name: &str, default: &str| {
        command
            .parameters
            .get(name)
            .and_then(|v| v.first())
            .map_or_else(|| default.to_owned(), Clone::clone)
    };
    let install = parameter("Operation", "Scan") == "Install";
    let reboot_option = parameter("RebootOption", "RebootIfNeeded");
    let before = prior.cloned().unwrap_or(PatchState {
        operation: "Scan",
        reboot_option: reboot_option.clone(),
        installed: INSTALLED,
        pending_reboot: 0,
        missing: invocation.behaviour.missing_patches,
        failed: 0,
        critical: invocation
            .behaviour
            .critical_patches
            .min(invocation.behaviour.missing_patches),
        started,
        ended: started,
        shown_from: std::time::Instant::now(),
        before: None,
    });
    // What is still to install: missing, and what the last install failed.
    let due = before.missing + before.failed;
    let (installed, pending_reboot, missing, failed) = match (install, exit_code == 0) {
        (false, false) => return None,
        (false, true) => (before.installed, before.pending_reboot, due, 0),
        (true, true) if reboot_option == "NoReboot" => (before.installed + due, before.pending_reboot + due, 0, 0),
        // RebootIfNeeded: the instance rebooted, and nothing is pending.
        (true, true) => (before.installed + due, 0, 0, 0),
        (true, false) => (before.installed, before.pending_reboot, 0, due.max(1)),
    };
    Some(PatchState {
        operation: if install { "Install" } else { "Scan" },
        reboot_option,
        installed,
        pending_reboot,
        missing,
        failed,
        critical: before.critical,
        started,
        ended: Utc::now(),
        shown_from: std::time::Instant::now() + lag,
        before: prior.map(|p| {
            Box::new(PatchState {
                before: None,
                ..p.clone()
            })
        }),
    })
}

/// The line AWS-RunPatchBaseline's simulated run prints.
pub fn summary_line(instance: &str, state: &PatchState) -> String {
    format!(
        "[muster-sim] patch baseline {} on {instance}: {} missing, {} failed, {} installed, {} pending reboot\n",
        state.operation, state.missing, state.failed, state.installed, state.pending_reboot
    )
}

fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// One element of DescribeInstancePatchStates' `InstancePatchStates`.
pub fn describe(instance: &str, state: &PatchState) -> Value {
    // Not compliant, as Patch Manager counts severity: missing, failed, or
    // installed and waiting for the reboot that puts them in effect. Every
    // simulated patch is a security patch.
    let outstanding = state.missing + state.failed + state.pending_reboot;
    json!({
        "InstanceId": instance,
        "PatchGroup": "",
        "BaselineId": BASELINE,
        "InstalledCount": state.installed,
        "InstalledOtherCount": 0,
        "InstalledPendingRebootCount": state.pending_reboot,
        "InstalledRejectedCount": 0,
        "MissingCount": state.missing,
        "FailedCount": state.failed,
        "UnreportedNotApplicableCount": 0,
        "NotApplicableCount": NOT_APPLICABLE,
        "OperationStartTime": seconds(state.started),
        "OperationEndTime": seconds(state.ended),
        "Operation": state.operation,
        "RebootOption": state.reboot_option,
        "CriticalNonCompliantCount": state.critical.min(outstanding),
        "SecurityNonCompliantCount": outstanding,
        "OtherNonCompliantCount": 0,
    })
}
