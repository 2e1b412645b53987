//! Everything the sim holds while it runs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;

use crate::config::{SimConfig, Tunables};
use crate::fleet::Fleet;
use crate::identity::Identities;
use crate::limits::{Faults, RateLimits};
use crate::moto::Moto;
use crate::ssm::Ssm;

/// One accepted SendCommand, for proving invariant 1 (no instance gets a
/// command twice).
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// When it was accepted (RFC 3339).
    pub at: String,
    /// Account it ran in.
    pub account: String,
    /// Region it ran in.
    pub region: String,
    /// The command id SSM returned.
    pub command_id: String,
    /// The document.
    pub document_name: String,
    /// Every instance the command went to.
    pub instance_ids: Vec<String>,
    /// The Comment sent.
    pub comment: String,
    /// The access key's principal.
    pub principal: String,
}

/// A granted AssumeRole, as CloudTrail in the role's account would show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AssumedRole {
    /// When (RFC 3339).
    pub at: String,
    /// The role.
    pub role_arn: String,
    /// The RoleSessionName.
    pub session_name: String,
    /// The SourceIdentity set, if any.
    pub source_identity: Option<String>,
    /// Session tags (key, value).
    pub tags: Vec<(String, String)>,
    /// Who assumed it.
    pub caller: String,
}

/// The sim's whole state, shared by every connection.
pub struct SimState {
    /// Fixed settings.
    pub config: SimConfig,
    tunables: RwLock<Arc<Tunables>>,
    /// Which access key is whose.
    pub identities: Identities,
    /// Token buckets.
    pub limits: RateLimits,
    /// Fault counters.
    pub faults: Faults,
    /// moto.
    pub moto: Moto,
    /// Instance facts, cached from moto.
    pub fleet: Fleet,
    /// Run Command.
    pub ssm: Ssm,
    /// Every accepted SendCommand.
    pub audit: Mutex<Vec<AuditEntry>>,
    /// Every granted AssumeRole.
    pub assumed: Mutex<Vec<AssumedRole>>,
    /// Calls by (service, api, outcome).
    pub counters: Mutex<BTreeMap<(String, String, String), u64>>,
    /// Every secret access key and session token AssumeRole handed out, so
    /// tests can prove none of them reaches a log.
    pub issued_secrets: Mutex<Vec<String>>,
    /// What happened to Run Command's events.
    pub event_counters: crate::events::EventCounters,
}

impl SimState {
    /// Builds the state; starts the simulated agent.
    pub fn new(config: SimConfig) -> Arc<Self> {
        let moto = Moto::new(&config.moto_urls);
        let identities = Identities::new(&config.default_account);
        let tunables = RwLock::new(Arc::new(config.tunables.clone()));
        let faults = Faults::default();
        faults.clear(config.tunables.fault_seed);
        Arc::new_cyclic(|weak| Self {
            fleet: Fleet::new(moto.clone()),
            ssm: Ssm::new(weak.clone()),
            config,
            tunables,
            identities,
            limits: RateLimits::default(),
            faults,
            moto,
            audit: Mutex::new(Vec::new()),
            assumed: Mutex::new(Vec::new()),
            counters: Mutex::new(BTreeMap::new()),
            issued_secrets: Mutex::new(Vec::new()),
            event_counters: Default::default(),
        })
    }

    /// The current tunables.
    pub fn tunables(&self) -> Arc<Tunables> {
        self.tunables.read().expect("tunables lock").clone()
    }

    /// Replaces the tunables; buckets and fault counters start afresh.
    pub fn set_tunables(&self, tunables: Tunables) {
        let seed = tunables.fault_seed;
        *self.tunables.write().expect("tunables lock") = Arc::new(tunables);
        self.limits.clear();
        self.faults.clear(seed);
        self.fleet.clear();
    }

    /// Counts one call.
    pub fn count(&self, service: &str, api: &str, outcome: &str) {
        *self
            .counters
            .lock()
            .expect("counters lock")
            .entry((service.to_owned(), api.to_owned(), outcome.to_owned()))
            .or_insert(0) += 1;
    }

    /// Records an accepted SendCommand.
    pub fn audit(&self, entry: AuditEntry) {
        self.audit.lock().expect("audit lock").push(entry);
    }

    /// Forgets everything the sim holds (moto is reset separately).
    pub fn reset(&self) {
        self.identities.clear();
        self.limits.clear();
        self.faults.clear(self.tunables().fault_seed);
        self.fleet.clear();
        self.ssm.clear();
        self.audit.lock().expect("audit lock").clear();
        self.assumed.lock().expect("assumed lock").clear();
        self.counters.lock().expect("counters lock").clear();
        self.issued_secrets.lock().expect("issued lock").clear();
        self.event_counters.clear();
    }
}
