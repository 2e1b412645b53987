//! What a patch run left on an instance ([`PatchState`]), in the words
//! every surface uses, and which documents report one.

use crate::v1::{PatchCounters, PatchState};

/// AWS's documents that run Patch Manager's patching, whose runs report
/// the instance's patch state.
pub const PATCH_DOCUMENTS: &[&str] = &[
    "AWS-RunPatchBaseline",
    "AWS-RunPatchBaselineWithHooks",
    "AWS-RunPatchBaselineAssociation",
];

/// Whether a run of `document` (a name or an ARN, as a campaign names it)
/// reports a patch state.
pub fn reports_patch_state(document: &str) -> bool {
    let name = document.rsplit('/').next().unwrap_or(document);
    PATCH_DOCUMENTS.contains(&name)
}

/// Which targets their patch state admits: what the `non_compliant` and
/// `critical` fields of ListTargetsRequest and CampaignTargets choose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PatchChoice {
    /// Every target, with a patch state or without.
    #[default]
    Any,
    /// Targets with a patch state that is not compliant.
    NonCompliant,
    /// Targets with critical patches not compliant.
    Critical,
}

impl PatchChoice {
    /// The choice of the two fields; `critical` is the narrower one.
    pub fn of(non_compliant: bool, critical: bool) -> Self {
        match (non_compliant, critical) {
            (_, true) => Self::Critical,
            (true, false) => Self::NonCompliant,
            (false, false) => Self::Any,
        }
    }

    /// Whether a target with `state` is chosen; one without a patch state
    /// (its run failed, or ran no patch document) is chosen only by
    /// [`PatchChoice::Any`].
    pub fn admits(self, state: Option<&PatchState>) -> bool {
        match (self, state) {
            (Self::Any, _) => true,
            (_, None) => false,
            (Self::NonCompliant, Some(state)) => !state.compliant(),
            (Self::Critical, Some(state)) => state.critical(),
        }
    }

    /// The request field that makes this choice ("non_compliant",
    /// "critical"): none for [`PatchChoice::Any`].
    pub fn field(self) -> Option<&'static str> {
        match self {
            Self::Any => None,
            Self::NonCompliant => Some("non_compliant"),
            Self::Critical => Some("critical"),
        }
    }

    /// The targets chosen, for people: none for [`PatchChoice::Any`].
    pub fn in_words(self) -> Option<&'static str> {
        match self {
            Self::Any => None,
            Self::NonCompliant => Some("non-compliant"),
            Self::Critical => Some("non-compliant on critical patches"),
        }
    }
}

impl PatchState {
    /// Whether Patch Manager counts the instance compliant: nothing
    /// missing or failed, nothing waiting for a reboot, nothing rejected
    /// installed.
    pub fn compliant(&self) -> bool {
        self.missing == 0 && self.failed == 0 && self.installed_pending_reboot == 0 && self.installed_rejected == 0
    }

    /// Whether patches of critical severity are among those not compliant.
    pub fn critical(&self) -> bool {
        self.critical_non_compliant > 0
    }

    /// One short phrase: "compliant", or what is wrong ("3 missing, 1
    /// failed, 2 pending reboot"), with how many of those are critical
    /// ("3 missing (2 critical)").
    pub fn in_words(&self) -> String {
        if self.compliant() {
            return "compliant".into();
        }
        let words = [
            (self.missing, "missing"),
            (self.failed, "failed"),
            (self.installed_pending_reboot, "pending reboot"),
            (self.installed_rejected, "rejected installed"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect::<Vec<_>>()
        .join(", ");
        match self.critical_non_compliant {
            0 => words,
            n => format!("{words} ({n} critical)"),
        }
    }

    /// [`Self::in_words`] with the operation and every count: "3 missing
    /// after Scan (NoReboot): 42 installed, 3 missing, 0 failed, 0 pending
    /// reboot; not compliant: 1 critical, 3 security".
    pub fn in_full(&self) -> String {
        format!(
            "{} after {} ({}): {} installed, {} missing, {} failed, {} pending reboot; \
             not compliant: {} critical, {} security",
            self.in_words(),
            self.operation,
            self.reboot_option,
            self.installed,
            self.missing,
            self.failed,
            self.installed_pending_reboot,
            self.critical_non_compliant,
            self.security_non_compliant
        )
    }
}

impl PatchCounters {
    /// Counts one target's state.
    pub fn add(&mut self, state: &PatchState) {
        self.reported += 1;
        self.compliant += u64::from(state.compliant());
        for (targets, patches, n) in [
            (&mut self.missing_targets, &mut self.missing_patches, state.missing),
            (&mut self.failed_targets, &mut self.failed_patches, state.failed),
            (
                &mut self.pending_reboot_targets,
                &mut self.pending_reboot_patches,
                state.installed_pending_reboot,
            ),
            (
                &mut self.critical_targets,
                &mut self.critical_patches,
                state.critical_non_compliant,
            ),
            (
                &mut self.security_targets,
                &mut self.security_patches,
                state.security_non_compliant,
            ),
        ] {
            if n > 0 {
                *targets += 1;
                *patches += u64::from(n);
            }
        }
    }

    /// "32 of 40 instances compliant; 3 with 4 critical patches not
    /// compliant; 6 with 14 missing patches; 2 waiting for a reboot (5
    /// patches)", or `None` when none reported one. Security patches are
    /// left to the counters: most patches are, so they would say little.
    pub fn in_words(&self) -> Option<String> {
        if self.reported == 0 {
            return None;
        }
        let instances = |n: u64| if n == 1 { "instance" } else { "instances" };
        let patches = |n: u64| if n == 1 { "patch" } else { "patches" };
        let mut words = vec![format!(
            "{} of {} {} compliant",
            self.compliant,
            self.reported,
            instances(self.reported)
        )];
        if self.critical_targets > 0 {
            let p = self.critical_patches;
            words.push(format!(
                "{} with {p} critical {} not compliant",
                self.critical_targets,
                patches(p)
            ));
        }
        if self.missing_targets > 0 {
            let p = self.missing_patches;
            words.push(format!("{} with {p} missing {}", self.missing_targets, patches(p)));
        }
        if self.failed_targets > 0 {
            let p = self.failed_patches;
            words.push(format!("{} with {p} failed {}", self.failed_targets, patches(p)));
        }
        if self.pending_reboot_targets > 0 {
            let p = self.pending_reboot_patches;
            words.push(format!(
                "{} waiting for a reboot ({p} {})",
                self.pending_reboot_targets,
                patches(p)
            ));
        }
        Some(words.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_documents_are_known_by_name_or_arn_and_others_are_not() {
        assert!(reports_patch_state("AWS-RunPatchBaseline"));
        assert!(reports_patch_state(
            "arn:aws:ssm:us-east-1::document/AWS-RunPatchBaselineWithHooks"
        ));
        assert!(!reports_patch_state("AWS-RunShellScript"));
        assert!(!reports_patch_state("Acme-RunPatchBaseline"));
    }

    #[test]
    fn a_choice_admits_by_compliance_and_critical_is_the_narrower() {
        let compliant = PatchState {
            installed: 4,
            ..Default::default()
        };
        let behind = PatchState {
            missing: 2,
            ..Default::default()
        };
        let critical = PatchState {
            installed_pending_reboot: 1,
            critical_non_compliant: 1,
            ..Default::default()
        };
        let admitted = |choice: PatchChoice| {
            [None, Some(&compliant), Some(&behind), Some(&critical)].map(|state| choice.admits(state))
        };
        assert_eq!(admitted(PatchChoice::Any), [true; 4]);
        assert_eq!(admitted(PatchChoice::NonCompliant), [false, false, true, true]);
        assert_eq!(admitted(PatchChoice::Critical), [false, false, false, true]);
        assert_eq!(PatchChoice::of(false, false), PatchChoice::Any);
        assert_eq!(PatchChoice::of(true, false), PatchChoice::NonCompliant);
        assert_eq!(PatchChoice::of(true, true), PatchChoice::Critical);
        assert_eq!(PatchChoice::of(false, true), PatchChoice::Critical);
        assert_eq!(
            [PatchChoice::Any, PatchChoice::NonCompliant, PatchChoice::Critical].map(PatchChoice::field),
            [None, Some("non_compliant"), Some("critical")]
        );
    }

    #[test]
    fn a_state_says_what_keeps_it_from_compliance_and_a_summary_counts_instances_and_patches() {
        let clean = PatchState {
            installed: 42,
            ..Default::default()
        };
        let behind = PatchState {
            missing: 3,
            installed_pending_reboot: 2,
            critical_non_compliant: 2,
            security_non_compliant: 5,
            ..Default::default()
        };
        let broken = PatchState {
            failed: 1,
            security_non_compliant: 1,
            ..Default::default()
        };
        assert_eq!(clean.in_words(), "compliant");
        assert_eq!(behind.in_words(), "3 missing, 2 pending reboot (2 critical)");
        let scanned = PatchState {
            operation: "Scan".into(),
            reboot_option: "NoReboot".into(),
            ..behind.clone()
        };
        assert_eq!(
            scanned.in_full(),
            "3 missing, 2 pending reboot (2 critical) after Scan (NoReboot): 0 installed, 3 missing, 0 failed, \
             2 pending reboot; not compliant: 2 critical, 5 security"
        );
        assert!(!broken.compliant());
        let mut summary = PatchCounters::default();
        assert_eq!(summary.in_words(), None);
        for state in [&clean, &behind, &broken, &behind] {
            summary.add(state);
        }
        assert_eq!(
            summary,
            PatchCounters {
                reported: 4,
                compliant: 1,
                missing_targets: 2,
                missing_patches: 6,
                failed_targets: 1,
                failed_patches: 1,
                pending_reboot_targets: 2,
                pending_reboot_patches: 4,
                critical_targets: 2,
                critical_patches: 4,
                security_targets: 3,
                security_patches: 11,
            }
        );
        assert_eq!(
            summary.in_words().unwrap(),
            "1 of 4 instances compliant; 2 with 4 critical patches not compliant; 2 with 6 missing patches; \
             1 with 1 failed patch; 2 waiting for a reboot (4 patches)"
        );
    }
}
