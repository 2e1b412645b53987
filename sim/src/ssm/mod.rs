//! SSM Run Command, served by the sim itself (moto's SSM is not usable): the
//! API surface muster calls, AWS's validation and error shapes, and a
//! simulated agent on every EC2 instance. SendCommand's rate controls hold
//! as SSM's do: at most MaxConcurrency invocations run at once, and once
//! more than MaxErrors failed the rest are never sent (Cancelled) and the
//! command ends Failed.

mod agent;
mod api;
pub mod documents;
mod model;
pub mod output;
mod patches;
mod registry;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::sync::mpsc;

use crate::audit::AuditLog;
use crate::config::{LiveTunables, Tunables};
use crate::events::Emitter;
use crate::fleet::Fleet;
use crate::moto::Moto;
use crate::protocol::{self, Protocol, Resp};
use agent::EngineMsg;
use model::Command;

/// Who is calling SSM, and where.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The caller's account.
    pub account: String,
    /// The signing region.
    pub region: String,
    /// The caller's principal ARN, for the audit log.
    pub principal: String,
}

#[derive(Default)]
struct Store {
    /// Bumped on reset, so that agent events of forgotten commands are dropped.
    epoch: u64,
    /// Commands per (account, region), in the order they were sent.
    scopes: HashMap<(String, String), Vec<Command>>,
    /// Reboot windows per (account, instance): the agent is offline inside them.
    reboots: HashMap<(String, String), (Instant, Instant)>,
    /// Customers' documents.
    documents: registry::Registry,
    /// Patch Manager's state of each instance AWS-RunPatchBaseline ran on.
    patches: patches::Patches,
}

/// What SSM shares with the rest of the sim, handed over when the sim is
/// built: SSM holds no pointer back to the sim.
#[derive(Clone)]
pub struct Parts {
    /// The tunables in force.
    pub tunables: Arc<LiveTunables>,
    /// Where real runs of scripts work.
    pub scratch_dir: PathBuf,
    /// Instance facts (targets, agents).
    pub fleet: Arc<Fleet>,
    /// moto, where output goes (S3, CloudWatch Logs).
    pub moto: Moto,
    /// Every accepted SendCommand.
    pub audit: Arc<AuditLog>,
    /// Run Command's events.
    pub events: Emitter,
}

/// The SSM service.
pub struct Ssm {
    parts: Parts,
    store: Mutex<Store>,
    engine: mpsc::UnboundedSender<EngineMsg>,
}

impl Ssm {
    /// Creates the service and starts its agent engine, which stops when
    /// the service is dropped.
    pub fn new(parts: Parts) -> Arc<Self> {
        let (engine, inbox) = mpsc::unbounded_channel();
        Arc::new_cyclic(|ssm: &Weak<Ssm>| {
            tokio::spawn(agent::run(ssm.clone(), inbox, engine.clone()));
            Self {
                parts,
                store: Mutex::new(Store::default()),
                engine,
            }
        })
    }

    /// The tunables in force.
    fn tunables(&self) -> Arc<Tunables> {
        self.parts.tunables.get()
    }

    /// Sends Run Command's events for what a change did, as `tunables`
    /// (read once for the change, so the routing that decided to watch it
    /// is the one that sends its events) route them.
    fn emit(&self, tunables: &Tunables, events: Vec<serde_json::Value>) {
        self.parts.events.emit(tunables.events.as_ref(), events);
    }

    /// Serves one SSM API call.
    pub async fn handle(&self, api: &str, ctx: &Ctx, body: &[u8]) -> Resp {
        let request: serde_json::Value = if body.is_empty() {
            serde_json::json!({})
        } else {
            match serde_json::from_slice(body) {
                Ok(value) => value,
                Err(e) => return error("SerializationException", &format!("request body is not JSON: {e}")),
            }
        };
        let answer = match api {
            "SendCommand" => api::send_command(self, ctx, &request).await,
            "ListCommands" => api::list_commands(self, ctx, &request),
            "ListCommandInvocations" => api::list_command_invocations(self, ctx, &request),
            "GetCommandInvocation" => api::get_command_invocation(self, ctx, &request),
            "CancelCommand" => api::cancel_command(self, ctx, &request),
            "GetDocument" => api::get_document(self, ctx, &request),
            "CreateDocument" => registry::create(&mut self.store.lock().expect("ssm lock").documents, ctx, &request),
            "UpdateDocument" => registry::update(&mut self.store.lock().expect("ssm lock").documents, ctx, &request),
            "UpdateDocumentDefaultVersion" => {
                registry::set_default(&mut self.store.lock().expect("ssm lock").documents, ctx, &request)
            }
            "ModifyDocumentPermission" => {
                registry::share(&mut self.store.lock().expect("ssm lock").documents, ctx, &request)
            }
            "DescribeInstanceInformation" => api::describe_instance_information(self, ctx, &request).await,
            "DescribeInstancePatchStates" => api::describe_instance_patch_states(self, ctx, &request),
            other => Err(ApiError::new(
                "UnknownOperationException",
                &format!("muster-sim does not implement SSM {other}"),
            )),
        };
        match answer {
            Ok(body) => protocol::json_ok(&body),
            Err(e) => error(e.code, &e.message),
        }
    }

    /// The document `name` (name or ARN) at `version` as the caller may run
    /// it.
    pub(crate) fn document(
        &self,
        ctx: &Ctx,
        name: &str,
        version: &str,
    ) -> Result<std::sync::Arc<documents::Document>, ApiError> {
        registry::resolve(&self.store.lock().expect("ssm lock").documents, ctx, name, version)
    }

    /// Forgets every command.
    pub fn clear(&self) {
        let mut store = self.store.lock().expect("ssm lock");
        for command in store.scopes.values().flatten() {
            for invocation in &command.invocations {
                if let Some(kill) = &invocation.kill {
                    kill.cancel();
                }
            }
        }
        store.epoch += 1;
        store.scopes.clear();
        store.reboots.clear();
    }

    fn schedule(&self, msg: EngineMsg) {
        // The engine lives as long as the sim; a send error means shutdown.
        let _ = self.engine.send(msg);
    }
}

/// An SSM error: its code (`__type`) and message.
#[derive(Debug)]
pub struct ApiError {
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(code: &'static str, message: &str) -> Self {
        Self {
            code,
            message: message.to_owned(),
        }
    }
}

/// An SSM error answer (HTTP 400).
pub fn error(code: &str, message: &str) -> Resp {
    protocol::error(Protocol::AwsJson, StatusCode::BAD_REQUEST, code, message)
}

/// Converts simulated seconds into real time under `time_scale`.
pub fn real(sim_seconds: f64, time_scale: f64) -> Duration {
    Duration::from_secs_f64((sim_seconds / time_scale).max(0.0))
}
