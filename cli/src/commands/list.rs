//! `ls`: the campaigns, newest first.

use comfy_table::Cell;
use muster_proto::v1::{Campaign, CampaignState, ListCampaignsRequest};

use super::Failure;
use crate::args::{LsArgs, Output};
use crate::connect::Client;
use crate::render::{self, Style};

/// `muster ls`.
pub async fn ls(client: &mut Client, args: &LsArgs, style: Style, output: Output) -> Result<(), Failure> {
    let states = campaign_states(&args.states)?;
    let (campaigns, more) = campaigns_up_to(client, args, states).await?;
    match output {
        // The pages read, as one answer.
        Output::Json | Output::Yaml => render::print_message(
            &muster_proto::v1::ListCampaignsResponse {
                campaigns,
                next_page_token: String::new(),
            },
            output,
        ),
        Output::Csv => print_campaigns_csv(&campaigns),
        Output::Table | Output::Wide => {
            print_campaigns(&campaigns, style, output == Output::Wide);
            if more {
                eprintln!("{}", render::limit_line(campaigns.len()));
            }
        }
    }
    Ok(())
}

/// `--state` names as the API's numbers.
fn campaign_states(names: &[String]) -> Result<Vec<i32>, Failure> {
    let mut states = Vec::new();
    for name in names {
        let state = CampaignState::from_short_name(name).ok_or_else(|| {
            Failure::Input(format!(
                "--state: '{name}' is not a campaign state (pending, discovering, running, cancelling, paused, awaiting_promotion, pending_approval, waiting_for_window, succeeded, completed_with_errors, failed, cancelled, planned)"
            ))
        })?;
        states.push(state as i32);
    }
    Ok(states)
}

/// The newest campaigns, `args.limit` at most, over as many pages as that
/// takes, and whether there are more.
async fn campaigns_up_to(
    client: &mut Client,
    args: &LsArgs,
    states: Vec<i32>,
) -> Result<(Vec<Campaign>, bool), Failure> {
    let mut campaigns = Vec::new();
    let mut token = String::new();
    while campaigns.len() < args.limit as usize {
        let page = client
            .list_campaigns(ListCampaignsRequest {
                page_size: (args.limit as usize - campaigns.len()).min(500) as u32,
                page_token: token.clone(),
                states: states.clone(),
                include_plans: args.plans,
            })
            .await?
            .into_inner();
        campaigns.extend(page.campaigns);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    Ok((campaigns, !token.is_empty()))
}

/// One CSV row per campaign.
fn print_campaigns_csv(campaigns: &[Campaign]) {
    render::print_csv(
        &[
            "id",
            "name",
            "state",
            "created_at",
            "total",
            "success",
            "failed",
            "timed_out",
            "skipped",
            "started_at",
            "finished_at",
            "submitted_by",
        ],
        campaigns.iter().map(|c| {
            let n = c.counters.unwrap_or_default();
            let mut row = vec![
                c.id.clone(),
                c.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
                render::campaign_state(c.state).to_owned(),
                render::time(&c.created_at),
            ];
            row.extend([n.total, n.success, n.failed, n.timed_out, n.skipped].map(|n| n.to_string()));
            row.extend([
                render::time(&c.started_at),
                render::time(&c.finished_at),
                c.submitted_by.clone(),
            ]);
            row
        }),
    );
}

/// One table row per campaign; `wide` adds running, finished, who and
/// labels.
fn print_campaigns(campaigns: &[Campaign], style: Style, wide: bool) {
    let mut headers = vec!["id", "name", "state", "created", "targets", "ok", "failed", "skipped"];
    if wide {
        headers.extend(["running", "finished", "by", "labels"]);
    }
    let mut table = style.table(&headers);
    for c in campaigns {
        let n = c.counters.unwrap_or_default();
        let mut row = vec![
            Cell::new(&c.id),
            Cell::new(c.spec.as_ref().map(|s| s.name.as_str()).unwrap_or_default()),
            style.status_cell(render::campaign_state(c.state)),
            Cell::new(render::time(&c.created_at)),
            Cell::new(n.total),
            Cell::new(n.success),
            Cell::new(render::failed(&n) + n.timed_out),
            Cell::new(n.skipped),
        ];
        if wide {
            let labels = c.spec.as_ref().map(|s| {
                s.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            });
            row.extend([
                Cell::new(n.queued + n.running),
                Cell::new(render::time(&c.finished_at)),
                Cell::new(&c.submitted_by),
                Cell::new(labels.unwrap_or_default()),
            ]);
        }
        table.add_row(row);
    }
    println!("{table}");
}
