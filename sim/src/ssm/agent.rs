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
use super::patches::{self, PatchState, Patches};
use super::{Ssm, output, real};
use crate::config::ExecMode;
use crate::fleet::AgentState;

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
    ssm: Weak<Ssm>,
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
                        let Some(ssm) = ssm.upgrade() else { return };
                        ssm.on_finished(&key, outcome)
                    }
                }
            }
            Some(expired) = queue.next(), if !queue.is_empty() => {
                let Some(ssm) = ssm.upgrade() else { return };
                let (key, event) = expired.into_inner();
                ssm.on_event(&key, event)
            }
        };
        let Some(ssm) = ssm.upgrade() else { return };
        for action in actions {
            match action {
                Action::Schedule(key, event, delay) => {
                    queue.insert((key, event), delay);
                }
                Action::Write(job) => {
                    tokio::spawn(write_output(ssm.clone(), *job));
                }
                Action::Run(job) => {
                    tokio::spawn(run_script(ssm.parts.scratch_dir.clone(), job, outbox.clone()));
                }
            }
        }
    }
}

impl Ssm {
    /// Changes one invocation under the lock; emits Run Command's events
    /// for what the change did to it and to its command.
    fn with_invocation<R>(&self, key: &Key, f: impl FnOnce(&mut Command, usize) -> R) -> Option<R> {
        self.with_invocation_and_patches(key, |command, index, _| f(command, index))
    }

    /// [`Self::with_invocation`], with Patch Manager's states at hand.
    fn with_invocation_and_patches<R>(
        &self,
        key: &Key,
        f: impl FnOnce(&mut Command, usize, &mut Patches) -> R,
    ) -> Option<R> {
        let tunables = self.tunables();
        let watched = tunables.events.is_some();
        let (result, events) = {
            let mut store = self.store.lock().expect("ssm lock");
            if store.epoch != key.epoch {
                return None;
            }
            let super::Store { scopes, patches, .. } = &mut *store;
            let command = scopes
                .get_mut(&(key.account.clone(), key.region.clone()))?
                .get_mut(key.command)?;
            if key.invocation >= command.invocations.len() {
                return None;
            }
            let before = watched.then(|| command.statuses());
            let result = f(command, key.invocation, patches);
            let released = releases(command);
            let events = before.map(|b| command.changes(&key.account, &b)).unwrap_or_default();
            (result, (released, events))
        };
        let (released, events) = events;
        self.start_released(key, released);
        self.emit(&tunables, events);
        Some(result)
    }

    /// Hands the invocations MaxConcurrency now lets go of (indices in the
    /// command of `key`) to their agents.
    pub(super) fn start_released(&self, key: &Key, released: Released) {
        let tunables = self.tunables();
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
        let tunables = self.tunables();
        let mut how = How {
            time_scale: tunables.time_scale,
            exec_mode: tunables.exec_mode,
            default_duration_ms: tunables.default_duration_ms,
            scratch: self.parts.scratch_dir.clone(),
            patch_state: None,
        };
        let step = self.with_invocation_and_patches(key, |command, index, patches| {
            if event == Event::Complete && command.document.name == "AWS-RunPatchBaseline" {
                // The run's patch state is recorded as it ends, before its
                // status shows; callers see it after the tunables' lag.
                let instance = (
                    key.account.clone(),
                    key.region.clone(),
                    command.invocations[index].instance_id.clone(),
                );
                let lag = Duration::from_millis(tunables.patch_state_lag_ms);
                how.patch_state = patches::after_run(command, index, patches.get(&instance), lag);
                if let Some(state) = &how.patch_state {
                    patches.insert(instance, state.clone());
                }
            }
            on_event(command, index, key, event, &how)
        });
        self.apply(key, step)
    }

    fn on_finished(&self, key: &Key, outcome: RunOutcome) -> Vec<Action> {
        let down_for = real(REBOOT_SECONDS, self.tunables().time_scale);
        let step = self.with_invocation(key, |command, index| {
            on_finished(command, index, key, outcome, down_for)
        });
        self.apply(key, step)
    }

    /// Records the reboot window a step opened; its actions.
    fn apply(&self, key: &Key, step: Option<Step>) -> Vec<Action> {
        let Some(step) = step else {
            return Vec::new();
        };
        if let Some((instance, from, to)) = step.reboot {
            let mut store = self.store.lock().expect("ssm lock");
            store.reboots.insert((key.account.clone(), instance), (from, to));
        }
        step.actions
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

/// What the sim's tunables say of how invocations run.
struct How {
    time_scale: f64,
    exec_mode: ExecMode,
    default_duration_ms: u64,
    scratch: std::path::PathBuf,
    /// The patch state the run that completes now leaves.
    patch_state: Option<PatchState>,
}

/// What an event did: the work to do outside the lock, and the window
/// (instance, from, to) in which the instance is down for a reboot.
#[derive(Default)]
struct Step {
    actions: Vec<Action>,
    reboot: Option<(String, Instant, Instant)>,
}

/// Invocation `index` of `command` (`key`) meets `event`: its next state,
/// and what follows. An event that finds the invocation moved on (cancelled,
/// timed out) does nothing.
fn on_event(command: &mut Command, index: usize, key: &Key, event: Event, how: &How) -> Step {
    let mut step = Step::default();
    let invocation = &mut command.invocations[index];
    match (event, &invocation.state) {
        (Event::Deliver, InvState::Pending) => return deliver(command, index, key, how),
        (Event::Rebooted, InvState::InProgress { .. }) => {
            if let Some(program) = runnable(&command.document.name, invocation.platform) {
                step.actions
                    .push(Action::Run(run_job(command, key, program, &how.scratch)));
            }
        }
        (Event::Complete, InvState::InProgress { started }) => {
            let started = *started;
            let outcome = simulated_outcome(command, index, how.patch_state.as_ref());
            step.actions
                .push(Action::Write(Box::new(finish(command, key, started, outcome))));
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
        _ => {}
    }
    step
}

/// Invocation `index` reaches its instance: it fails undeliverable, or
/// starts (a stuck agent is never heard of again) and runs for real or for
/// its simulated duration, under the document's execution timeout.
fn deliver(command: &mut Command, index: usize, key: &Key, how: &How) -> Step {
    let mut step = Step::default();
    let exec_timeout = execution_timeout(command, command.invocations[index].platform);
    let invocation = &mut command.invocations[index];
    if invocation.behaviour.undeliverable {
        invocation.state = InvState::Done(never_ran("Failed", "Undeliverable"));
        return step;
    }
    invocation.state = InvState::InProgress { started: Utc::now() };
    if invocation.behaviour.stuck {
        // The agent is gone: nothing it does reaches SSM.
        return step;
    }
    step.actions.push(Action::Schedule(
        key.clone(),
        Event::ExecutionTimeout,
        real(exec_timeout, how.time_scale),
    ));
    let program = runnable(&command.document.name, invocation.platform);
    if how.exec_mode == ExecMode::Real
        && !invocation.behaviour.scripted()
        && let Some(program) = program
    {
        step.actions
            .push(Action::Run(run_job(command, key, program, &how.scratch)));
    } else if !invocation.behaviour.hang {
        let secs = invocation
            .behaviour
            .duration_secs
            .unwrap_or(how.default_duration_ms as f64 / 1000.0);
        let duration = real(secs, how.time_scale);
        let now = Instant::now();
        let id = invocation.instance_id.clone();
        let ends = match invocation.behaviour.reboot_exit {
            // The step exits the code after its run; the instance is down
            // half as long; the agent runs the step again once it is back.
            Some(_) => {
                step.reboot = Some((id, now + duration, now + duration * 3 / 2));
                duration * 5 / 2
            }
            None if invocation.behaviour.reboot => {
                step.reboot = Some((id, now + duration / 2, now + duration * 3 / 4));
                duration
            }
            None => duration,
        };
        step.actions.push(Action::Schedule(key.clone(), Event::Complete, ends));
    }
    step
}

/// A real run of invocation `index` ended. An exit that asks for a reboot
/// (194 on Linux and macOS, 3010 on Windows) reboots the instance for
/// `down_for` and runs the script again once it is back, as the SSM agent
/// does; the output of every run is kept.
fn on_finished(command: &mut Command, index: usize, key: &Key, mut outcome: RunOutcome, down_for: Duration) -> Step {
    let invocation = &mut command.invocations[index];
    let InvState::InProgress { started } = invocation.state else {
        return Step::default();
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
        return Step {
            actions: vec![Action::Schedule(key.clone(), Event::Rebooted, down_for)],
            reboot: Some((invocation.instance_id.clone(), now, now + down_for)),
        };
    }
    let all = invocation.before_reboots.take().unwrap_or_default();
    outcome.stdout = all.stdout;
    outcome.stderr = all.stderr;
    Step {
        actions: vec![Action::Write(Box::new(finish(command, key, started, outcome)))],
        reboot: None,
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

fn simulated_outcome(command: &Command, index: usize, patch_state: Option<&PatchState>) -> RunOutcome {
    let invocation = &command.invocations[index];
    let behaviour = &invocation.behaviour;
    let id = &invocation.instance_id;
    let stdout = match behaviour.stdout_bytes {
        Some(bytes) => output::filler(id, "stdout", bytes),
        None => {
            let lines = command.parameters.get("commands").map_or(0, Vec::len);
            let mut text = match (command.document.name.as_str(), patch_state) {
                (_, Some(state)) => patches::summary_line(id, state),
                ("AWS-RunPatchBaseline", None) => format!(
                    "[muster-sim] patch baseline {} on {id}: failed before it reported a patch state\n",
                    command
                        .parameters
                        .get("Operation")
                        .and_then(|v| v.first())
                        .map_or("Scan", String::as_str)
                ),
                (name, None) => format!(
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
/// A step that ran: its status and output.
fn ran(run: Option<RunOutcome>) -> (&'static str, &'static str, i32, String, String) {
    let run = run.unwrap_or(RunOutcome {
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
}

/// A step whose platform is not the instance's: schema 2.2 skips it as a
/// precondition not met; schema 1.2 fails the invocation, as SSM does.
fn not_run(
    command: &Command,
    invocation: &Invocation,
    step: &super::documents::Step,
    main_code: &mut i32,
) -> (&'static str, &'static str, i32, String, String) {
    if command.document.schema == Schema::V2_2 {
        let text = format!(
            "Step execution skipped due to unsatisfied preconditions: '[StringEquals [platformType {}]]'. Step name: {}",
            step.platforms.first().map_or("", |p| p.as_str()),
            step.name
        );
        ("Success", "Success", 0, text, String::new())
    } else {
        *main_code = 1;
        let text = format!(
            "{} does not support platform {}\n",
            command.document.name,
            invocation.platform.as_str()
        );
        ("Failed", "Failed", 1, String::new(), text)
    }
}

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
            // The run is the first step's that runs here; later ones exit 0.
            ran(outcome.take())
        } else {
            not_run(command, invocation, step, &mut main_code)
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

async fn write_output(ssm: Arc<Ssm>, job: WriteJob) {
    let key = &job.key;
    for (step, (s3_dir, stream_segment)) in job.done.steps.iter().zip(&job.step_dirs) {
        for (stream, text) in [("stdout", &step.stdout), ("stderr", &step.stderr)] {
            if text.is_empty() {
                continue;
            }
            if let Some(bucket) = &job.bucket {
                let object = output::s3_key(&job.prefix, &job.command_id, &job.instance_id, s3_dir, stream);
                if let Err(error) = ssm
                    .parts
                    .moto
                    .put_object(&key.account, bucket, &object, text.as_bytes().to_vec())
                    .await
                {
                    tracing::warn!(%error, bucket, key = object, "agent could not upload output to s3");
                }
            }
            if let Some(group) = &job.log_group {
                let log_stream = output::log_stream(&job.command_id, &job.instance_id, stream_segment, stream);
                if let Err(error) = ssm
                    .parts
                    .moto
                    .put_log_text(&key.account, &key.region, group, &log_stream, text)
                    .await
                {
                    tracing::warn!(%error, group, stream = log_stream, "agent could not send output to cloudwatch logs");
                }
            }
        }
    }
    ssm.complete(key, job.done);
}

async fn run_script(scratch_dir: std::path::PathBuf, job: RunJob, outbox: mpsc::UnboundedSender<EngineMsg>) {
    const MAX_CAPTURE: usize = 8 * 1024 * 1024;
    let scratch = match tempfile::Builder::new()
        .prefix("muster-sim-run-")
        .tempdir_in(&scratch_dir)
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
        .filter(|d| std::path::Path::new(d).is_dir() && *d != scratch_dir.display().to_string())
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

#[cfg(test)]
mod tests;
