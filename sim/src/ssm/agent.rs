//! The simulated SSM agent. Each invocation moves Pending -> InProgress -> a
//! terminal status through timed events; what happens comes from the
//! instance's tags, or from really running the script. Output is written to
//! S3 and CloudWatch Logs (in moto) before the terminal status shows, as the
//! real agent uploads output before it reports completion.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;

use super::documents::{Platform, Schema};
use super::model::{Command, Done, InvState, Invocation, StepResult};
use super::{Ssm, output, real};
use crate::config::ExecMode;
use crate::fleet::AgentState;
use crate::state::SimState;

/// Identifies one invocation across resets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// Store epoch when it was created.
    pub epoch: u64,
    /// Account.
    pub account: String,
    /// Region.
    pub region: String,
    /// Index of the command in its scope.
    pub command: usize,
    /// Index of the invocation in its command.
    pub invocation: usize,
}

/// Something that happens to an invocation at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The agent picks the command up.
    Deliver,
    /// A simulated command finishes.
    Complete,
    /// Nobody picked it up in time.
    DeliveryTimeout,
    /// It ran too long.
    ExecutionTimeout,
    /// The instance is back from a reboot its real script asked for.
    Rebooted,
}

/// How long an instance is down for a reboot a real script asks for, in
/// simulated seconds.
const REBOOT_SECONDS: f64 = 2.0;

/// The exit code with which a script asks the agent to reboot the instance
/// and run it again.
fn reboot_exit_code(platform: Platform) -> i32 {
    match platform {
        Platform::Windows => 3010,
        Platform::Linux | Platform::MacOs => 194,
    }
}

/// Runs the command's script of `key`'s invocation for real.
fn run_job(command: &mut Command, key: &Key, program: &'static str, scratch: &std::path::Path) -> RunJob {
    let kill = CancellationToken::new();
    command.invocations[key.invocation].kill = Some(kill.clone());
    RunJob {
        key: key.clone(),
        program,
        script: command
            .parameters
            .get("commands")
            .map(|lines| lines.join("\n"))
            .unwrap_or_default(),
        working_dir: command
            .parameters
            .get("workingDirectory")
            .and_then(|v| v.first())
            .filter(|d| !d.is_empty())
            .cloned()
            .or_else(|| Some(scratch.display().to_string())),
        kill,
    }
}

/// A script that ran for real.
#[derive(Debug)]
pub struct RunOutcome {
    /// Exit code.
    pub exit_code: i32,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

/// Messages to the engine.
#[derive(Debug)]
pub enum EngineMsg {
    /// Run `event` after `delay`.
    Schedule(Key, Event, Duration),
    /// A real run ended.
    Finished(Key, RunOutcome),
}

/// Work to do outside the store lock.
enum Action {
    Schedule(Key, Event, Duration),
    Write(Box<WriteJob>),
    Run(RunJob),
}

struct WriteJob {
    key: Key,
    done: Done,
    bucket: Option<String>,
    prefix: String,
    log_group: Option<String>,
    command_id: String,
    instance_id: String,
    step_dirs: Vec<(String, String)>,
}

struct RunJob {
    key: Key,
    program: &'static str,
    script: String,
    working_dir: Option<String>,
    kill: CancellationToken,
}

/// Invocations a command's rate controls let go of, with what starting
/// them needs.
pub struct Released {
    invocations: Vec<(usize, AgentState)>,
    timeout_seconds: u64,
}

/// What `command`'s rate controls release now.
pub(super) fn releases(command: &mut Command) -> Released {
    let invocations = command
        .release()
        .into_iter()
        .map(|i| (i, command.invocations[i].behaviour.agent))
        .collect();
    Released {
        invocations,
        timeout_seconds: command.timeout_seconds,
    }
}

/// The engine loop: a timer queue of invocation events.
pub async fn run(
    sim: Weak<SimState>,
    mut inbox: mpsc::UnboundedReceiver<EngineMsg>,
    outbox: mpsc::UnboundedSender<EngineMsg>,
) {
    let mut queue: DelayQueue<(Key, Event)> = DelayQueue::new();
    loop {
        let actions = tokio::select! {
            msg = inbox.recv() => {
                let Some(msg) = msg else { return };
                match msg {
                    EngineMsg::Schedule(key, event, delay) => {
                        queue.insert((key, event), delay);
                        continue;
                    }
                    EngineMsg::Finished(key, outcome) => {
                        let Some(sim) = sim.upgrade() else { return };
                        sim.ssm.on_finished(&key, outcome)
                    }
                }
            }
            Some(expired) = queue.next(), if !queue.is_empty() => {
                let Some(sim) = sim.upgrade() else { return };
                let (key, event) = expired.into_inner();
                sim.ssm.on_event(&key, event)
            }
        };
        let Some(sim) = sim.upgrade() else { return };
        for action in actions {
            match action {
                Action::Schedule(key, event, delay) => {
                    queue.insert((key, event), delay);
                }
                Action::Write(job) => {
                    tokio::spawn(write_output(sim.clone(), *job));
                }
                Action::Run(job) => {
                    tokio::spawn(run_script(sim.clone(), job, outbox.clone()));
                }
            }
        }
    }
}

impl Ssm {
    /// Changes one invocation under the lock; emits Run Command's events
    /// for what the change did to it and to its command.
    fn with_invocation<R>(&self, key: &Key, f: impl FnOnce(&mut Command, usize) -> R) -> Option<R> {
        let sim = self.sim.upgrade()?;
        let watched = sim.tunables().events.is_some();
        let (result, events) = {
            let mut store = self.store.lock().expect("ssm lock");
            if store.epoch != key.epoch {
                return None;
            }
            let command = store
                .scopes
                .get_mut(&(key.account.clone(), key.region.clone()))?
                .get_mut(key.command)?;
            if key.invocation >= command.invocations.len() {
                return None;
            }
            let before = watched.then(|| command.statuses());
            let result = f(command, key.invocation);
            let released = releases(command);
            let events = before.map(|b| command.changes(&key.account, &b)).unwrap_or_default();
            (result, (released, events))
        };
        let (released, events) = events;
        self.start_released(&sim, key, released);
        crate::events::emit(&sim, events);
        Some(result)
    }

    /// Hands the invocations MaxConcurrency now lets go of (indices in the
    /// command of `key`) to their agents.
    pub(super) fn start_released(&self, sim: &SimState, key: &Key, released: Released) {
        let tunables = sim.tunables();
        for (invocation, agent) in released.invocations {
            self.start_invocation(
                Key {
                    invocation,
                    ..key.clone()
                },
                agent,
                released.timeout_seconds,
                tunables.time_scale,
                tunables.delivery_delay_ms,
            );
        }
    }

    fn on_event(&self, key: &Key, event: Event) -> Vec<Action> {
        let Some(sim) = self.sim.upgrade() else {
            return Vec::new();
        };
        let tunables = sim.tunables();
        let scratch = sim.config.scratch_dir.clone();
        let mut reboot_window = None;
        let actions = self
            .with_invocation(key, |command, index| {
                let mut actions = Vec::new();
                let exec_timeout = execution_timeout(command, command.invocations[index].platform);
                let invocation = &mut command.invocations[index];
                match (event, &invocation.state) {
                    (Event::Deliver, InvState::Pending) => {
                        if invocation.behaviour.undeliverable {
                            invocation.state = InvState::Done(never_ran("Failed", "Undeliverable"));
                            return actions;
                        }
                        let started = Utc::now();
                        invocation.state = InvState::InProgress { started };
                        if invocation.behaviour.stuck {
                            // The agent is gone: nothing it does reaches SSM.
                            return actions;
                        }
                        actions.push(Action::Schedule(
                            key.clone(),
                            Event::ExecutionTimeout,
                            real(exec_timeout, tunables.time_scale),
                        ));
                        let program = runnable(&command.document.name, invocation.platform);
                        if tunables.exec_mode == ExecMode::Real
                            && !invocation.behaviour.scripted()
                            && let Some(program) = program
                        {
                            actions.push(Action::Run(run_job(command, key, program, &scratch)));
                        } else if !invocation.behaviour.hang {
                            let secs = invocation
                                .behaviour
                                .duration_secs
                                .unwrap_or(tunables.default_duration_ms as f64 / 1000.0);
                            let duration = real(secs, tunables.time_scale);
                            let now = Instant::now();
                            let id = invocation.instance_id.clone();
                            let ends = match invocation.behaviour.reboot_exit {
                                // The step exits the code after its run; the
                                // instance is down half as long; the agent
                                // runs the step again once it is back.
                                Some(_) => {
                                    reboot_window = Some((id, now + duration, now + duration * 3 / 2));
                                    duration * 5 / 2
                                }
                                None if invocation.behaviour.reboot => {
                                    reboot_window = Some((id, now + duration / 2, now + duration * 3 / 4));
                                    duration
                                }
                                None => duration,
                            };
                            actions.push(Action::Schedule(key.clone(), Event::Complete, ends));
                        }
                    }
                    (Event::Rebooted, InvState::InProgress { .. }) => {
                        if let Some(program) = runnable(&command.document.name, invocation.platform) {
                            actions.push(Action::Run(run_job(command, key, program, &scratch)));
                        }
                    }
                    (Event::Complete, InvState::InProgress { started }) => {
                        let started = *started;
                        let outcome = simulated_outcome(command, index);
                        actions.push(Action::Write(Box::new(finish(command, key, started, outcome))));
                    }
                    (Event::DeliveryTimeout, InvState::Pending) => {
                        invocation.state = InvState::Done(never_ran("TimedOut", "DeliveryTimedOut"));
                    }
                    (Event::ExecutionTimeout, InvState::InProgress { started }) => {
                        if let Some(kill) = invocation.kill.take() {
                            kill.cancel();
                        }
                        let started = *started;
                        invocation.state = InvState::Done(Done {
                            status: "TimedOut",
                            details: "ExecutionTimedOut",
                            response_code: -1,
                            started: Some(started),
                            finished: Utc::now(),
                            steps: Vec::new(),
                        });
                    }
                    // The invocation moved on (cancelled, timed out) before the event.
                    _ => {}
                }
                actions
            })
            .unwrap_or_default();
        if let Some((instance, from, to)) = reboot_window {
            let mut store = self.store.lock().expect("ssm lock");
            store.reboots.insert((key.account.clone(), instance), (from, to));
        }
        actions
    }

    /// A real run ended. An exit that asks for a reboot (194 on Linux and
    /// macOS, 3010 on Windows) reboots the instance and runs the script
    /// again once it is back, as the SSM agent does; the output of every run
    /// is kept.
    fn on_finished(&self, key: &Key, mut outcome: RunOutcome) -> Vec<Action> {
        let Some(sim) = self.sim.upgrade() else {
            return Vec::new();
        };
        let down_for = real(REBOOT_SECONDS, sim.tunables().time_scale);
        let mut reboot_window = None;
        let actions = self
            .with_invocation(key, |command, index| {
                let invocation = &mut command.invocations[index];
                let InvState::InProgress { started } = invocation.state else {
                    return Vec::new();
                };
                invocation.kill = None;
                let earlier = invocation.before_reboots.get_or_insert_default();
                earlier.stdout.push_str(&outcome.stdout);
                earlier.stderr.push_str(&outcome.stderr);
                if outcome.exit_code == reboot_exit_code(invocation.platform) {
                    earlier.stdout.push_str(&format!(
                        "[muster-sim] exit {}: the agent rebooted the instance and ran the script again\n",
                        outcome.exit_code
                    ));
                    let now = Instant::now();
                    reboot_window = Some((invocation.instance_id.clone(), now, now + down_for));
                    return vec![Action::Schedule(key.clone(), Event::Rebooted, down_for)];
                }
                let all = invocation.before_reboots.take().unwrap_or_default();
                outcome.stdout = all.stdout;
                outcome.stderr = all.stderr;
                vec![Action::Write(Box::new(finish(command, key, started, outcome)))]
            })
            .unwrap_or_default();
        if let Some((instance, from, to)) = reboot_window {
            let mut store = self.store.lock().expect("ssm lock");
            store.reboots.insert((key.account.clone(), instance), (from, to));
        }
        actions
    }

    /// Whether the agent of `instance` is inside a reboot right now.
    pub fn rebooting(&self, account: &str, instance: &str) -> bool {
        let store = self.store.lock().expect("ssm lock");
        store
            .reboots
            .get(&(account.to_owned(), instance.to_owned()))
            .is_some_and(|(from, to)| (*from..*to).contains(&Instant::now()))
    }

    fn complete(&self, key: &Key, done: Done) {
        self.with_invocation(key, |command, index| {
            let invocation = &mut command.invocations[index];
            if matches!(invocation.state, InvState::InProgress { .. }) {
                invocation.state = InvState::Done(done);
            }
        });
    }

    /// Schedules the first events of a new invocation.
    pub(super) fn start_invocation(
        &self,
        key: Key,
        agent: AgentState,
        timeout_seconds: u64,
        time_scale: f64,
        delivery_ms: u64,
    ) {
        self.schedule(EngineMsg::Schedule(
            key.clone(),
            Event::DeliveryTimeout,
            real(timeout_seconds as f64, time_scale),
        ));
        if agent == AgentState::Online {
            self.schedule(EngineMsg::Schedule(
                key,
                Event::Deliver,
                real(delivery_ms as f64 / 1000.0, time_scale),
            ));
        }
    }
}

/// How long the command may run on an instance of `platform`: its
/// executionTimeout parameter, or the document's own step timeouts (two
/// hours for AWS-RunPatchBaseline).
fn execution_timeout(command: &Command, platform: super::documents::Platform) -> f64 {
    let given = command
        .parameters
        .get("executionTimeout")
        .and_then(|v| v.first())
        .and_then(|v| v.parse::<f64>().ok());
    command.document.own_timeout_seconds(platform, given)
}

fn never_ran(status: &'static str, details: &'static str) -> Done {
    Done {
        status,
        details,
        response_code: -1,
        started: None,
        finished: Utc::now(),
        steps: Vec::new(),
    }
}

/// The program that really runs a document's script on a platform, if any.
fn runnable(document: &str, platform: Platform) -> Option<&'static str> {
    match (document, platform) {
        ("AWS-RunShellScript", Platform::Linux | Platform::MacOs) => Some("sh"),
        ("AWS-RunPowerShellScript", _) if which("pwsh") => Some("pwsh"),
        _ => None,
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

fn simulated_outcome(command: &Command, index: usize) -> RunOutcome {
    let invocation = &command.invocations[index];
    let behaviour = &invocation.behaviour;
    let id = &invocation.instance_id;
    let stdout = match behaviour.stdout_bytes {
        Some(bytes) => output::filler(id, "stdout", bytes),
        None => {
            let lines = command.parameters.get("commands").map_or(0, Vec::len);
            let mut text = match command.document.name.as_str() {
                "AWS-RunPatchBaseline" => format!(
                    "[muster-sim] patch baseline {} on {id}: 0 missing, 0 failed, 42 installed\n",
                    command
                        .parameters
                        .get("Operation")
                        .and_then(|v| v.first())
                        .map_or("Scan", String::as_str)
                ),
                name => format!(
                    "[muster-sim] {name} on {id} ({}): {lines} line(s), simulated\n",
                    invocation.platform.as_str()
                ),
            };
            if behaviour.reboot {
                text.push_str("[muster-sim] reboot requested; instance rebooting\n[muster-sim] resumed after reboot\n");
            }
            if let Some(code) = behaviour.reboot_exit {
                text = format!(
                    "[muster-sim] exit {code} on {id}: reboot requested; the agent rebooted the instance and ran the step again\n{text}"
                );
            }
            text
        }
    };
    let stderr = match behaviour.stderr_bytes {
        Some(bytes) => output::filler(id, "stderr", bytes),
        None if behaviour.exit_code != 0 => {
            format!("[muster-sim] command failed with exit code {}\n", behaviour.exit_code)
        }
        None => String::new(),
    };
    RunOutcome {
        exit_code: behaviour.exit_code,
        stdout,
        stderr,
    }
}

/// Turns an outcome into step results and a terminal status, and describes
/// the output to write before that status shows.
fn finish(command: &Command, key: &Key, started: chrono::DateTime<Utc>, outcome: RunOutcome) -> WriteJob {
    let index = key.invocation;
    let invocation: &Invocation = &command.invocations[index];
    let schema = command.document.schema;
    let mut steps = Vec::new();
    let mut step_dirs = Vec::new();
    let mut main_code = outcome.exit_code;
    let mut outcome = Some(outcome);
    for step in &command.document.steps {
        let url = |stream: &str| {
            command.output.s3_bucket.as_ref().map_or_else(String::new, |bucket| {
                let key = output::s3_key(
                    &command.output.s3_prefix,
                    &command.id,
                    &invocation.instance_id,
                    &step.s3_dir(schema),
                    stream,
                );
                output::s3_url(&command.region, bucket, &key)
            })
        };
        let (status, details, code, stdout, stderr) = if step.runs_on(invocation.platform) {
            let run = outcome.take().unwrap_or(RunOutcome {
                exit_code: 0,
                stdout: String::new(),
                stderr: String::new(),
            });
            let (status, details) = if run.exit_code == 0 {
                ("Success", "Success")
            } else {
                ("Failed", "Failed")
            };
            (status, details, run.exit_code, run.stdout, run.stderr)
        } else if schema == Schema::V2_2 {
            let text = format!(
                "Step execution skipped due to unsatisfied preconditions: '[StringEquals [platformType {}]]'. Step name: {}",
                step.platforms.first().map_or("", |p| p.as_str()),
                step.name
            );
            ("Success", "Success", 0, text, String::new())
        } else {
            main_code = 1;
            let text = format!(
                "{} does not support platform {}\n",
                command.document.name,
                invocation.platform.as_str()
            );
            ("Failed", "Failed", 1, String::new(), text)
        };
        step_dirs.push((step.s3_dir(schema), step.log_stream_segment(schema)));
        steps.push(StepResult {
            name: step.name.to_owned(),
            status,
            details,
            response_code: code,
            stdout,
            stderr,
            stdout_url: url("stdout"),
            stderr_url: url("stderr"),
        });
    }
    let (status, details) = if main_code == 0 {
        ("Success", "Success")
    } else {
        ("Failed", "Failed")
    };
    WriteJob {
        key: key.clone(),
        done: Done {
            status,
            details,
            response_code: main_code,
            started: Some(started),
            finished: Utc::now(),
            steps,
        },
        bucket: command.output.s3_bucket.clone(),
        prefix: command.output.s3_prefix.clone(),
        log_group: command.output.log_group.clone(),
        command_id: command.id.clone(),
        instance_id: invocation.instance_id.clone(),
        step_dirs,
    }
}

async fn write_output(sim: Arc<SimState>, job: WriteJob) {
    let key = &job.key;
    for (step, (s3_dir, stream_segment)) in job.done.steps.iter().zip(&job.step_dirs) {
        for (stream, text) in [("stdout", &step.stdout), ("stderr", &step.stderr)] {
            if text.is_empty() {
                continue;
            }
            if let Some(bucket) = &job.bucket {
                let object = output::s3_key(&job.prefix, &job.command_id, &job.instance_id, s3_dir, stream);
                if let Err(error) = sim
                    .moto
                    .put_object(&key.account, bucket, &object, text.as_bytes().to_vec())
                    .await
                {
                    tracing::warn!(%error, bucket, key = object, "agent could not upload output to s3");
                }
            }
            if let Some(group) = &job.log_group {
                let log_stream = output::log_stream(&job.command_id, &job.instance_id, stream_segment, stream);
                if let Err(error) = sim
                    .moto
                    .put_log_text(&key.account, &key.region, group, &log_stream, text)
                    .await
                {
                    tracing::warn!(%error, group, stream = log_stream, "agent could not send output to cloudwatch logs");
                }
            }
        }
    }
    sim.ssm.complete(key, job.done);
}

async fn run_script(sim: Arc<SimState>, job: RunJob, outbox: mpsc::UnboundedSender<EngineMsg>) {
    const MAX_CAPTURE: usize = 8 * 1024 * 1024;
    let scratch = match tempfile::Builder::new()
        .prefix("muster-sim-run-")
        .tempdir_in(&sim.config.scratch_dir)
    {
        Ok(dir) => dir,
        Err(error) => {
            let _ = outbox.send(EngineMsg::Finished(
                job.key,
                RunOutcome {
                    exit_code: 1,
                    stdout: String::new(),
                    stderr: format!("muster-sim: cannot create a scratch directory: {error}\n"),
                },
            ));
            return;
        }
    };
    let workdir = job
        .working_dir
        .filter(|d| std::path::Path::new(d).is_dir() && *d != sim.config.scratch_dir.display().to_string())
        .map_or_else(|| scratch.path().to_path_buf(), std::path::PathBuf::from);
    let mut cmd = tokio::process::Command::new(job.program);
    if job.program == "pwsh" {
        cmd.args(["-NoProfile", "-NonInteractive", "-Command", &job.script]);
    } else {
        cmd.args(["-c", &job.script]);
    }
    cmd.current_dir(&workdir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let outcome = match cmd.spawn() {
        Err(error) => RunOutcome {
            exit_code: 127,
            stdout: String::new(),
            stderr: format!("muster-sim: cannot start {}: {error}\n", job.program),
        },
        Ok(child) => {
            tokio::select! {
                result = child.wait_with_output() => match result {
                    Ok(out) => RunOutcome {
                        exit_code: out.status.code().unwrap_or(-1),
                        stdout: String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(MAX_CAPTURE)]).into_owned(),
                        stderr: String::from_utf8_lossy(&out.stderr[..out.stderr.len().min(MAX_CAPTURE)]).into_owned(),
                    },
                    Err(error) => RunOutcome { exit_code: -1, stdout: String::new(), stderr: error.to_string() },
                },
                // Killed by cancel or execution timeout; the child is dropped and killed.
                () = job.kill.cancelled() => return,
            }
        }
    };
    let _ = outbox.send(EngineMsg::Finished(job.key, outcome));
}
