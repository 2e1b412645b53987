//! The chaos harness: one whole campaign (real controller and workers, the
//! sim, moto) under a schedule of faults drawn from a seed, then the checks
//! an operator cares about, from the sim's audit log and the controller:
//! no instance got a command twice, every target ended with a true status
//! and a reason, the counters add up, the campaign ended, nothing is left
//! leased or queued. The seed also draws the campaign's [`Shape`]: one
//! command, a sequence, waves behind a gate, a cancel, or an error
//! threshold, each with the checks of what it promises.
//!
//! On PostgreSQL half the seeds run two controllers behind a load balancer
//! that spreads connections over both, as a deployment for availability
//! does: each fault of "the controller" then strikes the one leading or the
//! one following, and the other goes on serving.
//!
//! The same seed draws the same plan (faults in the sim, process faults and
//! their times), so a failing scenario replays from its seed; what the
//! processes do between the faults still depends on timing.
//!
//! In three parts: `plan.rs` draws a seed's scenario, `run.rs` plays it
//! against the processes, and `checks.rs` says what was wrong.

mod checks;
mod plan;
mod run;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use muster_proto::v1::{
    CampaignSpec, CampaignState, CancelCampaignRequest, GetCampaignRequest, PromoteCampaignRequest, RateControl, Stage,
    StageGate, StagePhase, TargetStatus,
};
use muster_sim::testkit::test_tunables;
use muster_sim::{FaultKind, FaultRule, FaultWhen, Quota, Tunables};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use crate::client::{script_spec, submit, targets};
use crate::procs::{System, SystemOptions};

use checks::*;
use plan::*;
pub use plan::{Action, Mode, Plan, Shape, plan};
pub use run::{run, run_plan};

const EAST: &str = "us-east-1";
const WEST: &str = "eu-west-1";
/// How long a campaign may take to end once the faults have stopped.
const SETTLE: Duration = Duration::from_secs(240);
/// The controller's lease TTL, seconds.
const LEASE_TTL: u64 = 5;
/// With two controllers, their `--leader-ttl`, seconds: short, so that a
/// leader killed or paused is replaced within the scenario, and one paused
/// past its term wakes fenced.
const LEADER_TTL: u64 = 3;

/// Two accounts in two regions, five instances each, one of them failing;
/// account b's that succeed print [`B_OUTPUT`] bytes, which the store
/// keeps compressed.
const FLEET: &str = r#"
name = "chaos"
external_id = "ext-chaos"

[[accounts]]
name = "a"
regions = ["us-east-1", "eu-west-1"]
  [[accounts.instances]]
  count = 4
  tags = { Role = "web", "muster-sim:duration" = "2" }
  [[accounts.instances]]
  count = 1
  tags = { Role = "fail", "muster-sim:exit-code" = "3", "muster-sim:duration" = "2" }

[[accounts]]
name = "b"
regions = ["us-east-1", "eu-west-1"]
  [[accounts.instances]]
  count = 4
  tags = { Role = "web", "muster-sim:duration" = "2", "muster-sim:stdout-bytes" = "2000" }
  [[accounts.instances]]
  count = 1
  tags = { Role = "fail", "muster-sim:exit-code" = "3", "muster-sim:duration" = "2" }
"#;

/// The output of account b's instances that succeed: past what the
/// store keeps as it is, short of what ListCommandInvocations truncates.
const B_OUTPUT: usize = 2_000;

/// What one scenario did and found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The campaign it ran.
    pub shape: Shape,
    /// The controllers it ran: 1, or 2 sharing the store.
    pub controllers: usize,
    /// Submit to the campaign's end.
    pub makespan: Duration,
    /// Faults by kind: process faults and the sim's injected ones.
    pub faults: BTreeMap<String, u64>,
    /// Instances that got the command more than once.
    pub duplicates: usize,
    /// Targets not in a terminal status, or without a reason, or whose
    /// status contradicts the audit log.
    pub lost: usize,
    /// Whether the campaign failed to end in time.
    pub stuck: bool,
    /// Leases that ran out unused or unfinished, each an attempt of its task
    /// spent and a TTL waited: what the faults cost, not a violation.
    pub expired: usize,
    /// Tasks stopped workers handed back (no attempt spent).
    pub handed_back: usize,
    /// In a cancelled campaign, how long after the cancel was answered the
    /// last SendCommand started, if any started after it.
    pub sent_after_cancel: Option<Duration>,
    /// Everything that was wrong, for people.
    pub violations: Vec<String>,
}

impl Report {
    /// True when every check held.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}
