//! SendCommand's MaxConcurrency and MaxErrors, as the SSM documentation
//! describes them: at most that many invocations run at once, the rest wait
//! for a place; once more invocations failed than MaxErrors allows, the
//! command is sent to no more instances and ends Failed.

use aws_sdk_ssm::types::CommandStatus;

use super::*;

const RATES: &str = r#"
name = "rates"
external_id = "ext-42"
output_bucket = "out"
results_bucket = "results"

[[accounts]]
name = "alpha"
regions = ["us-east-1"]
  [[accounts.instances]]
  count = 6
  name = "ok-{i}"
  tags = { Role = "ok", "muster-sim:duration" = "0.6" }
  [[accounts.instances]]
  count = 10
  name = "fail-{i}"
  tags = { Role = "fail", "muster-sim:exit-code" = "1", "muster-sim:duration" = "0.1" }
"#;

async fn world() -> World {
    let sb = Sandbox::start_with(test_tunables()).await;
    let fleet = sb.seed(RATES).await;
    World { sb, fleet }
}

async fn send_with(ssm: &aws_sdk_ssm::Client, ids: &[String], concurrency: &str, errors: &str) -> String {
    ssm.send_command()
        .document_name("AWS-RunShellScript")
        .set_instance_ids(Some(ids.to_vec()))
        .set_parameters(Some(shell(&["echo hi"])))
        .max_concurrency(concurrency)
        .max_errors(errors)
        .send()
        .await
        .expect("SendCommand accepted")
        .command
        .and_then(|c| c.command_id)
        .expect("a command id")
}

/// The most invocations that ran at the same time, from SSM's own start and
/// finish times.
fn most_at_once(invocations: &[CommandInvocation]) -> usize {
    let spans: Vec<(f64, f64)> = invocations
        .iter()
        .filter_map(|i| {
            let plugin = i.command_plugins().first()?;
            Some((
                plugin.response_start_date_time()?.as_secs_f64(),
                plugin.response_finish_date_time()?.as_secs_f64(),
            ))
        })
        .collect();
    spans
        .iter()
        .map(|(start, _)| spans.iter().filter(|(s, f)| s <= start && start < f).count())
        .max()
        .unwrap_or(0)
}

async fn command_status(ssm: &aws_sdk_ssm::Client, id: &str) -> Option<CommandStatus> {
    ssm.list_commands()
        .command_id(id)
        .send()
        .await
        .expect("ListCommands")
        .commands()
        .first()
        .and_then(|c| c.status().cloned())
}

#[tokio::test]
async fn max_concurrency_holds_the_rest_until_a_place_frees_as_a_number_or_a_share() {
    let world = world().await;
    let ssm = aws_sdk_ssm::Client::new(&world.exec("alpha").await);
    let ok = world.ids("alpha", "ok");
    for (concurrency, at_once) in [("2", 2), ("50%", 3)] {
        let id = send_with(&ssm, &ok, concurrency, "0").await;
        let done = wait_terminal(&ssm, &id, ok.len()).await;
        assert!(
            done.iter()
                .all(|i| i.status() == Some(&CommandInvocationStatus::Success)),
            "{done:#?}"
        );
        assert_eq!(most_at_once(&done), at_once, "MaxConcurrency {concurrency} of 6");
        assert_eq!(command_status(&ssm, &id).await, Some(CommandStatus::Success));
    }
}

#[tokio::test]
async fn past_max_errors_the_command_goes_to_no_more_instances_and_fails() {
    let world = world().await;
    let ssm = aws_sdk_ssm::Client::new(&world.exec("alpha").await);
    let failing = world.ids("alpha", "fail");
    // "If you specify 0, the system stops after the first error"; "10% of
    // 10" allows one error and stops at the second. One at a time, so no
    // more run than that.
    for (errors, failed) in [("0", 1), ("10%", 2), ("3", 4)] {
        let id = send_with(&ssm, &failing, "1", errors).await;
        let done = wait_terminal(&ssm, &id, failing.len()).await;
        let count = |status: CommandInvocationStatus| done.iter().filter(|i| i.status() == Some(&status)).count();
        assert_eq!(
            count(CommandInvocationStatus::Failed),
            failed,
            "MaxErrors {errors}: {done:#?}"
        );
        assert_eq!(
            count(CommandInvocationStatus::Cancelled),
            failing.len() - failed,
            "the rest never ran"
        );
        assert_eq!(command_status(&ssm, &id).await, Some(CommandStatus::Failed));
    }
    // Within MaxErrors the command runs everywhere.
    let id = send_with(&ssm, &failing, "100%", "100%").await;
    let done = wait_terminal(&ssm, &id, failing.len()).await;
    assert!(
        done.iter()
            .all(|i| i.status() == Some(&CommandInvocationStatus::Failed))
    );
}
