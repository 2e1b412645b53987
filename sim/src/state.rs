//! Everything the sim holds while it runs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::audit::AuditLog;
use crate::config::{LiveTunables, SimConfig, Tunables};
use crate::events::Emitter;
use crate::fleet::Fleet;
use crate::identity::Identities;
use crate::limits::{Faults, RateLimits};
use crate::moto::Moto;
use crate::ssm::{Parts, Ssm};

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
    tunables: Arc<LiveTunables>,
    /// Which access key is whose.
    pub identities: Identities,
    /// Token buckets.
    pub limits: RateLimits,
    /// Fault counters.
    pub faults: Faults,
    /// moto.
    pub moto: Moto,
    /// Instance facts, cached from moto.
    pub fleet: Arc<Fleet>,
    /// Run Command.
    pub ssm: Arc<Ssm>,
    /// Every accepted SendCommand.
    pub audit: Arc<AuditLog>,
    /// Every granted AssumeRole.
    pub assumed: Mutex<Vec<AssumedRole>>,
    /// Calls by (service, api, outcome).
    pub counters: Mutex<BTreeMap<(String, String, String), u64>>,
    /// Every secret access key and session token AssumeRole handed out, so
    /// tests can prove none of them reaches a log.
    pub issued_secrets: Mutex<Vec<String>>,
    /// Run Command's events, and what happened to them.
    pub events: Emitter,
}

impl SimState {
    /// Builds the state; starts the simulated agent.
    pub fn new(config: SimConfig) -> Arc<Self> {
        let moto = Moto::new(&config.moto_urls);
        let identities = Identities::new(&config.default_account);
        let tunables = Arc::new(LiveTunables::new(config.tunables.clone()));
        let faults = Faults::default();
        faults.clear(config.tunables.fault_seed);
        let fleet = Arc::new(Fleet::new(moto.clone()));
        let audit = Arc::new(AuditLog::default());
        let events = Emitter::new(moto.clone());
        let ssm = Ssm::new(Parts {
            tunables: tunables.clone(),
            scratch_dir: config.scratch_dir.clone(),
            fleet: fleet.clone(),
            moto: moto.clone(),
            audit: audit.clone(),
            events: events.clone(),
        });
        Arc::new(Self {
            fleet,
            ssm,
            config,
            tunables,
            identities,
            limits: RateLimits::default(),
            faults,
            moto,
            audit,
            assumed: Mutex::new(Vec::new()),
            counters: Mutex::new(BTreeMap::new()),
            issued_secrets: Mutex::new(Vec::new()),
            events,
        })
    }

    /// The current tunables.
    pub fn tunables(&self) -> Arc<Tunables> {
        self.tunables.get()
    }

    /// Replaces the tunables; buckets and fault counters start afresh.
    pub fn set_tunables(&self, tunables: Tunables) {
        let seed = tunables.fault_seed;
        self.tunables.set(tunables);
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

    /// Forgets everything the sim holds (moto is reset separately).
    pub fn reset(&self) {
        self.identities.clear();
        self.limits.clear();
        self.faults.clear(self.tunables().fault_seed);
        self.fleet.clear();
        self.ssm.clear();
        self.audit.clear();
        self.assumed.lock().expect("assumed lock").clear();
        self.counters.lock().expect("counters lock").clear();
        self.issued_secrets.lock().expect("issued lock").clear();
        self.events.counters.clear();
    }
}
