//! `submit`, `plan` and `rerun`: what starts a campaign.

use muster_proto::v1::{PlanCampaignRequest, RerunCampaignRequest, SubmitCampaignRequest};

use super::campaign::print_plan;
use super::{Failure, ask_until_answered, timed};
use crate::args::{Output, RerunArgs, SpecArgs};
use crate::connect::Client;
use crate::render::{self, Style};

/// `muster submit`: prints the new campaign's id.
///
/// Every submission carries a client token (`--client-token`, or one made
/// for this invocation): an answer lost on the way back is asked for again
/// with the same token, and the controller answers with the campaign it
/// already made, never a second one.
pub async fn submit(client: &mut Client, args: &SpecArgs, style: Style, output: Output) -> Result<String, Failure> {
    let (mut spec, written) = crate::refusal::written(args)?;
    if spec.client_token.is_empty() {
        spec.client_token = uuid::Uuid::new_v4().to_string();
    }
    if output.is_table() {
        eprintln!(
            "client token {} (if this submit is cut short, run it again with --client-token {0}: the controller makes the campaign at most once)",
            spec.client_token
        );
    }
    let request = SubmitCampaignRequest { spec: Some(spec) };
    let answer = ask_until_answered(|| {
        let mut client = client.clone();
        let request = request.clone();
        async move { client.submit_campaign(timed(request)).await }
    })
    .await
    .map_err(|failure| failure.said_as(&written, "spec.", |_| None))?;
    match output {
        Output::Json | Output::Yaml => render::print_message(&answer, output),
        Output::Csv => println!("{}", answer.campaign_id),
        Output::Table | Output::Wide => {
            if answer.created {
                eprintln!(
                    "{} submitted; follow it with: muster watch {}",
                    style.bold("campaign"),
                    answer.campaign_id
                );
            } else {
                eprintln!("{} already submitted with this client token", style.bold("campaign"));
            }
            println!("{}", answer.campaign_id);
        }
    }
    Ok(answer.campaign_id)
}

/// `muster plan`.
pub async fn plan(client: &mut Client, args: &SpecArgs, style: Style, output: Output) -> Result<i32, Failure> {
    let (spec, written) = crate::refusal::written(args)?;
    if output.is_table() {
        eprintln!("discovering targets (nothing runs)...");
    }
    let answer = client
        .plan_campaign(PlanCampaignRequest {
            spec: Some(spec),
            wait_seconds: 300,
        })
        .await
        .map_err(|status| Failure::from(status).said_as(&written, "spec.", |_| None))?
        .into_inner();
    if matches!(output, Output::Json | Output::Yaml) {
        render::print_message(&answer, output);
    }
    let campaign = answer.campaign.unwrap_or_default();
    let cannot = campaign.scopes.iter().filter(|s| !s.error.is_empty()).count();
    match output {
        Output::Json | Output::Yaml => {}
        Output::Csv => print_plan_csv(&campaign),
        Output::Table | Output::Wide => {
            print_plan(&campaign, style, output == Output::Wide);
            if answer.complete {
                eprintln!(
                    "plan {}: nothing ran (`muster show {}` prints it again, `muster console {}` opens it)",
                    campaign.id, campaign.id, campaign.id
                );
            } else {
                eprintln!("discovery is still going; see `muster show {}` later", campaign.id);
            }
        }
    }
    if cannot > 0 {
        eprintln!(
            "{cannot} of {} accounts/regions cannot run: the note says why",
            campaign.scopes.len()
        );
    }
    Ok(plan_exit_code(answer.complete, cannot))
}

/// `muster plan`'s exit code, in the codes a campaign's outcome uses: 1
/// when discovery did not end in time, 2 (completed with errors) when some
/// accounts/regions cannot run, so that `muster plan && muster submit`
/// stops there, else 0.
fn plan_exit_code(complete: bool, scopes_that_cannot_run: usize) -> i32 {
    match (complete, scopes_that_cannot_run) {
        (false, _) => 1,
        (true, 0) => 0,
        (true, _) => 2,
    }
}

/// A plan's scopes, one row each.
fn print_plan_csv(campaign: &muster_proto::v1::Campaign) {
    render::print_csv(
        &[
            "account_id",
            "region",
            "would_run",
            "managed",
            "offline",
            "unmanaged",
            "skipped",
            "error",
        ],
        campaign.scopes.iter().map(|s| {
            let c = s.counters.unwrap_or_default();
            let mut row = vec![s.account_id.clone(), s.region.clone()];
            row.extend([c.pending, s.managed, s.offline, s.unmanaged, c.skipped].map(|n| n.to_string()));
            row.push(s.error.clone());
            row
        }),
    );
}

/// `muster rerun`: prints the new campaign's id.
///
/// As `muster submit`, every request carries a client token, so an answer
/// lost on the way back is asked for again and never makes a second rerun.
pub async fn rerun(client: &mut Client, args: &RerunArgs, style: Style, output: Output) -> Result<String, Failure> {
    let statuses = args
        .statuses
        .iter()
        .map(|name| crate::spec::end_status("--status", name))
        .collect::<anyhow::Result<Vec<i32>>>()
        .map_err(|e| Failure::Input(e.to_string()))?;
    let client_token = args
        .client_token
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let request = RerunCampaignRequest {
        campaign_id: args.campaign_id.clone(),
        statuses,
        client_token,
        name: args.name.clone().unwrap_or_default(),
        confirm_large: args.confirm_large,
    };
    let answer = ask_until_answered(|| {
        let mut client = client.clone();
        let request = request.clone();
        async move { client.rerun_campaign(timed(request)).await }
    })
    .await?;
    match output {
        Output::Json | Output::Yaml => render::print_message(&answer, output),
        Output::Csv => println!("{}", answer.campaign_id),
        Output::Table | Output::Wide => {
            eprintln!(
                "{} of {} over its {} targets; follow it with: muster watch {}",
                style.bold("rerun"),
                args.campaign_id,
                answer.rerun_targets,
                answer.campaign_id
            );
            println!("{}", answer.campaign_id);
        }
    }
    Ok(answer.campaign_id)
}
