//! `promote`, `resume`, `approve` and `reject`: the decisions a staged or
//! gated campaign waits for.

use muster_proto::v1::{
    ApproveCampaignRequest, Campaign, CampaignState, PromoteCampaignRequest, RejectCampaignRequest,
    ResumeCampaignRequest, StagePhase,
};

use super::{Failure, ask_until_answered, timed};
use crate::args::{ApprovalArgs, DecideArgs, Output};
use crate::connect::Client;
use crate::render::{self, Style};

/// The stage an operator decides on: the one given, or the campaign's
/// current stage when it awaits that decision.
async fn current_stage(
    client: &mut Client,
    id: &str,
    given: Option<&str>,
    waiting: CampaignState,
) -> Result<String, Failure> {
    if let Some(stage) = given {
        return Ok(stage.to_owned());
    }
    let campaign = super::fetch_campaign(client, id).await?;
    let state = CampaignState::try_from(campaign.state).unwrap_or(CampaignState::Unspecified);
    if state != waiting {
        return Err(Failure::Input(format!(
            "campaign {id} is {}, not {}: nothing to decide ({})",
            state.short_name(),
            waiting.short_name(),
            campaign.state_reason
        )));
    }
    let phase = if waiting == CampaignState::Paused {
        StagePhase::Paused
    } else {
        StagePhase::AwaitingPromotion
    };
    campaign
        .stages
        .iter()
        .find(|s| s.phase == phase as i32)
        .map(|s| s.name.clone())
        .ok_or_else(|| Failure::Input(format!("campaign {id} has no stage {}", phase.short_name())))
}

/// `muster promote` and `muster resume`: an operator's decision on the
/// current stage. Asking again after a lost answer changes nothing.
pub async fn decide(
    client: &mut Client,
    args: &DecideArgs,
    resume: bool,
    style: Style,
    output: Output,
) -> Result<(), Failure> {
    let waiting = if resume {
        CampaignState::Paused
    } else {
        CampaignState::AwaitingPromotion
    };
    let stage = current_stage(client, &args.campaign_id, args.stage.as_deref(), waiting).await?;
    let (id, reason) = (&args.campaign_id, &args.reason);
    let campaign = ask_until_answered(|| {
        let mut client = client.clone();
        let (campaign_id, stage, reason) = (id.clone(), stage.clone(), reason.clone());
        async move {
            if resume {
                let request = ResumeCampaignRequest {
                    campaign_id,
                    stage,
                    reason,
                };
                Ok(client.resume_campaign(timed(request)).await?.map(|a| a.campaign))
            } else {
                let request = PromoteCampaignRequest {
                    campaign_id,
                    stage,
                    reason,
                };
                Ok(client.promote_campaign(timed(request)).await?.map(|a| a.campaign))
            }
        }
    })
    .await?
    .unwrap_or_default();
    print_decision(&campaign, style, output);
    Ok(())
}

/// A campaign after an operator's decision: its state and why.
fn print_decision(campaign: &Campaign, style: Style, output: Output) {
    match output {
        Output::Json | Output::Yaml => render::print_message(campaign, output),
        _ => println!(
            "{} {}  {}",
            campaign.id,
            style.status(render::campaign_state(campaign.state)),
            style.dim(&campaign.state_reason)
        ),
    }
}

/// `muster approve` and `muster reject`. Asking again after a lost answer
/// changes nothing.
pub async fn approval(
    client: &mut Client,
    args: &ApprovalArgs,
    approve: bool,
    style: Style,
    output: Output,
) -> Result<(), Failure> {
    if !approve && args.reason.trim().is_empty() {
        return Err(Failure::Input(
            "--reason: say why it is rejected; the submitter reads it".into(),
        ));
    }
    let (id, reason) = (&args.campaign_id, &args.reason);
    let campaign = ask_until_answered(|| {
        let mut client = client.clone();
        let (campaign_id, reason) = (id.clone(), reason.clone());
        async move {
            if approve {
                let request = ApproveCampaignRequest { campaign_id, reason };
                Ok(client.approve_campaign(timed(request)).await?.map(|a| a.campaign))
            } else {
                let request = RejectCampaignRequest { campaign_id, reason };
                Ok(client.reject_campaign(timed(request)).await?.map(|a| a.campaign))
            }
        }
    })
    .await?
    .unwrap_or_default();
    print_decision(&campaign, style, output);
    Ok(())
}
