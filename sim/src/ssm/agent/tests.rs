//! The simulated agent: what it runs, reports and keeps of each command,
//! and the reboots, timeouts and cancels it lives through.

use std::collections::BTreeMap;

use super::super::documents;
use super::super::model::OutputSettings;
use super::*;
use crate::fleet::Behaviour;

fn key() -> Key {
    Key {
        epoch: 1,
        account: "111111111111".into(),
        region: "us-east-1".into(),
        command: 0,
        invocation: 0,
    }
}

fn online() -> Behaviour {
    Behaviour {
        exit_code: 0,
        duration_secs: None,
        stdout_bytes: None,
        stderr_bytes: None,
        agent: AgentState::Online,
        undeliverable: false,
        hang: false,
        stuck: false,
        reboot: false,
        reboot_exit: None,
        missing_patches: 0,
        critical_patches: 0,
    }
}

/// A shell command on one Linux instance that behaves as `behaviour`,
/// with these parameters besides `commands`.
fn command(behaviour: Behaviour, parameters: &[(&str, &str)]) -> Command {
    let mut given = BTreeMap::from([("commands".to_owned(), vec!["echo hi".to_owned()])]);
    for (name, value) in parameters {
        given.insert((*name).to_owned(), vec![(*value).to_owned()]);
    }
    Command {
        id: "0b0c6c1e-0000-4000-8000-000000000001".into(),
        region: "us-east-1".into(),
        document: documents::find("AWS-RunShellScript").expect("a built-in document"),
        document_version: "1".into(),
        parameters: given,
        comment: String::new(),
        instance_ids: vec!["i-0000000000000001".into()],
        targets: serde_json::Value::Null,
        requested_at: Utc::now(),
        requested: Instant::now(),
        timeout_seconds: 600,
        output: OutputSettings::default(),
        max_concurrency: "50".into(),
        max_errors: "0".into(),
        cancel_requested: false,
        released: 1,
        stopped_by_errors: false,
        invocations: vec![Invocation {
            instance_id: "i-0000000000000001".into(),
            instance_name: String::new(),
            platform: Platform::Linux,
            behaviour,
            state: InvState::Pending,
            kill: None,
            before_reboots: None,
        }],
    }
}

fn how() -> How {
    How {
        time_scale: 1.0,
        exec_mode: ExecMode::Simulated,
        default_duration_ms: 1_000,
        scratch: std::env::temp_dir(),
        patch_state: None,
    }
}

fn event(command: &mut Command, event: Event) -> Step {
    on_event(command, 0, &key(), event, &how())
}

fn scheduled(step: &Step) -> Vec<(Event, Duration)> {
    step.actions
        .iter()
        .filter_map(|a| match a {
            Action::Schedule(_, event, delay) => Some((*event, *delay)),
            _ => None,
        })
        .collect()
}

fn written(step: &Step) -> &Done {
    let [Action::Write(job)] = &step.actions[..] else {
        panic!("one write expected");
    };
    &job.done
}

fn status(command: &Command) -> (&'static str, &'static str) {
    match &command.invocations[0].state {
        InvState::Done(done) => (done.status, done.details),
        InvState::InProgress { .. } => ("InProgress", "InProgress"),
        InvState::Pending => ("Pending", "Pending"),
    }
}

#[test]
fn a_delivered_command_runs_its_time_then_succeeds_with_the_simulated_output() {
    let mut command = command(online(), &[]);
    let step = event(&mut command, Event::Deliver);
    assert_eq!(status(&command), ("InProgress", "InProgress"));
    assert_eq!(
        scheduled(&step),
        [
            (Event::ExecutionTimeout, Duration::from_secs(3_600)),
            (Event::Complete, Duration::from_secs(1))
        ],
        "the document's own timeout, and the default duration"
    );
    let done = written(&event(&mut command, Event::Complete)).clone();
    assert_eq!(
        (done.status, done.details, done.response_code),
        ("Success", "Success", 0)
    );
    assert!(
        done.steps[0]
            .stdout
            .contains("AWS-RunShellScript on i-0000000000000001"),
        "{:?}",
        done.steps
    );
    assert!(done.started.is_some());
}

#[test]
fn a_failing_script_fails_with_its_exit_code_and_says_so_on_stderr() {
    let mut command = command(
        Behaviour {
            exit_code: 3,
            ..online()
        },
        &[],
    );
    event(&mut command, Event::Deliver);
    let done = written(&event(&mut command, Event::Complete)).clone();
    assert_eq!((done.status, done.response_code), ("Failed", 3));
    assert!(done.steps[0].stderr.contains("exit code 3"), "{:?}", done.steps);
}

#[test]
fn the_execution_timeout_parameter_and_the_tagged_duration_are_honoured() {
    let mut command = command(
        Behaviour {
            duration_secs: Some(2.5),
            ..online()
        },
        &[("executionTimeout", "5")],
    );
    let step = event(&mut command, Event::Deliver);
    assert_eq!(
        scheduled(&step),
        [
            (Event::ExecutionTimeout, Duration::from_secs(5)),
            (Event::Complete, Duration::from_millis(2_500))
        ]
    );
}

#[test]
fn an_undeliverable_command_fails_at_delivery_and_schedules_nothing() {
    let mut command = command(
        Behaviour {
            undeliverable: true,
            ..online()
        },
        &[],
    );
    let step = event(&mut command, Event::Deliver);
    assert!(step.actions.is_empty());
    assert_eq!(status(&command), ("Failed", "Undeliverable"));
}

#[test]
fn a_command_nobody_picks_up_times_out_undelivered_and_a_late_timeout_is_ignored() {
    let mut pending = command(online(), &[]);
    event(&mut pending, Event::DeliveryTimeout);
    assert_eq!(status(&pending), ("TimedOut", "DeliveryTimedOut"));

    let mut running = command(online(), &[]);
    event(&mut running, Event::Deliver);
    let step = event(&mut running, Event::DeliveryTimeout);
    assert!(step.actions.is_empty());
    assert_eq!(status(&running), ("InProgress", "InProgress"), "delivered in time");
}

#[test]
fn a_hanging_command_times_out_and_its_late_completion_changes_nothing() {
    let mut command = command(Behaviour { hang: true, ..online() }, &[]);
    let step = event(&mut command, Event::Deliver);
    assert_eq!(
        scheduled(&step),
        [(Event::ExecutionTimeout, Duration::from_secs(3_600))],
        "no completion of its own"
    );
    event(&mut command, Event::ExecutionTimeout);
    assert_eq!(status(&command), ("TimedOut", "ExecutionTimedOut"));
    let InvState::Done(done) = &command.invocations[0].state else {
        unreachable!()
    };
    assert!(done.started.is_some(), "it had started");
    assert!(event(&mut command, Event::Complete).actions.is_empty());
    assert_eq!(status(&command), ("TimedOut", "ExecutionTimedOut"));
}

#[test]
fn a_stuck_agent_says_in_progress_for_good() {
    let mut command = command(
        Behaviour {
            stuck: true,
            ..online()
        },
        &[],
    );
    let step = event(&mut command, Event::Deliver);
    assert!(step.actions.is_empty(), "not even its timeout reaches SSM");
    assert_eq!(status(&command), ("InProgress", "InProgress"));
}

#[test]
fn reboots_open_a_window_in_which_the_instance_is_down() {
    let mut rebooting = command(
        Behaviour {
            reboot: true,
            ..online()
        },
        &[],
    );
    let step = event(&mut rebooting, Event::Deliver);
    let (instance, from, to) = step.reboot.clone().expect("a reboot window");
    assert_eq!(instance, "i-0000000000000001");
    assert_eq!(to - from, Duration::from_millis(250), "a quarter of the run");
    assert_eq!(scheduled(&step)[1], (Event::Complete, Duration::from_secs(1)));

    let mut exiting = command(
        Behaviour {
            reboot_exit: Some(194),
            ..online()
        },
        &[],
    );
    let step = event(&mut exiting, Event::Deliver);
    assert!(step.reboot.is_some());
    assert_eq!(
        scheduled(&step)[1],
        (Event::Complete, Duration::from_millis(2_500)),
        "run, down, run again"
    );
}

#[test]
fn a_real_run_exiting_194_reboots_and_runs_again_keeping_both_outputs() {
    let mut command = command(online(), &[]);
    command.invocations[0].state = InvState::InProgress { started: Utc::now() };
    let down_for = Duration::from_secs(2);
    let first = RunOutcome {
        exit_code: 194,
        stdout: "first run\n".into(),
        stderr: String::new(),
    };
    let step = on_finished(&mut command, 0, &key(), first, down_for);
    assert_eq!(scheduled(&step), [(Event::Rebooted, down_for)]);
    assert!(step.reboot.is_some());
    assert_eq!(status(&command), ("InProgress", "InProgress"));

    let second = RunOutcome {
        exit_code: 0,
        stdout: "second run\n".into(),
        stderr: String::new(),
    };
    let step = on_finished(&mut command, 0, &key(), second, down_for);
    let done = written(&step);
    assert_eq!(done.status, "Success");
    let stdout = &done.steps[0].stdout;
    assert!(
        stdout.starts_with("first run\n[muster-sim] exit 194") && stdout.ends_with("second run\n"),
        "{stdout}"
    );
    // A run that ends after the invocation moved on changes nothing.
    command.invocations[0].state = InvState::Done(never_ran("Cancelled", "Cancelled"));
    let late = RunOutcome {
        exit_code: 0,
        stdout: String::new(),
        stderr: String::new(),
    };
    assert!(on_finished(&mut command, 0, &key(), late, down_for).actions.is_empty());
}
