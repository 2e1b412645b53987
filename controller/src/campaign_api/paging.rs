//! The pages of CampaignService's listings: a request's page size,
//! filters and token checked, naming the field; a page of targets cut to
//! what a client can take.

use muster_common::domain::{AccountId, Invalid, RegionName, check_instance_id};
use muster_proto::v1::{CampaignState, ListCampaignsRequest, ListTargetsRequest, TargetStatus};
use prost::Message as _;
use tonic::Status;

use crate::store::targets;

/// A ListCampaigns request, checked.
#[derive(Debug)]
pub(super) struct CampaignQuery {
    pub(super) page_size: usize,
    /// After which campaign (created at, id) the page starts.
    pub(super) cursor: Option<(i64, String)>,
    pub(super) states: Vec<CampaignState>,
}

/// A listing's page size: `default` when the request leaves it 0, refused
/// past `max`.
pub(super) fn page_size(requested: u32, default: usize, max: u32) -> Result<usize, Status> {
    match requested {
        0 => Ok(default),
        n if n > max => Err(crate::validate::refused(format!("page_size: {n}; at most {max}"))),
        n => Ok(n as usize),
    }
}

/// A ListCampaigns request's page size, token and states, checked.
pub(super) fn campaign_query(request: &ListCampaignsRequest) -> Result<CampaignQuery, Status> {
    let page_size = page_size(request.page_size, 50, 500)?;
    let cursor = if request.page_token.is_empty() {
        None
    } else {
        let parsed = request
            .page_token
            .split_once(':')
            .and_then(|(ms, id)| Some((ms.parse::<i64>().ok()?, id.to_owned())));
        Some(parsed.ok_or_else(|| crate::validate::refused("page_token: not a token from a previous ListCampaigns"))?)
    };
    let mut states = Vec::new();
    for (i, state) in request.states.iter().enumerate() {
        match CampaignState::try_from(*state) {
            Ok(state) if state != CampaignState::Unspecified => states.push(state),
            _ => {
                return Err(crate::validate::refused(format!(
                    "states[{i}]: {state} is not a campaign state"
                )));
            }
        }
    }
    Ok(CampaignQuery {
        page_size,
        cursor,
        states,
    })
}

/// A ListTargets request's page size and where the page starts (after
/// which account, region and instance), once its fields are checked.
pub(super) fn target_page(request: &ListTargetsRequest) -> Result<(usize, Option<targets::TargetCursor>), Status> {
    let page_size = page_size(request.page_size, 500, 5_000)?;
    let cursor = if request.page_token.is_empty() {
        None
    } else {
        let mut parts = request.page_token.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(r), Some(i)) => Some((a.to_owned(), r.to_owned(), i.to_owned())),
            _ => {
                return Err(crate::validate::refused(
                    "page_token: not a token from a previous ListTargets",
                ));
            }
        }
    };
    for (i, status) in request.statuses.iter().enumerate() {
        if TargetStatus::try_from(*status).is_err() || *status == 0 {
            return Err(crate::validate::refused(format!(
                "statuses[{i}]: {status} is not a target status"
            )));
        }
    }
    for (list, field) in [
        (&request.account_ids, "account_ids"),
        (&request.regions, "regions"),
        (&request.instance_ids, "instance_ids"),
    ] {
        if list.len() > 1000 {
            return Err(crate::validate::refused(format!("{field}: at most 1000 values")));
        }
    }
    // A value that can name no target is a typo, not a filter that
    // matches nothing: "0 targets" would read as "none failed".
    type Check = fn(&str) -> Result<(), Invalid>;
    let checks: [(&Vec<String>, &str, Check); 3] = [
        (&request.account_ids, "account_ids", |v| AccountId::parse(v).map(|_| ())),
        (&request.regions, "regions", |v| RegionName::parse(v).map(|_| ())),
        (&request.instance_ids, "instance_ids", check_instance_id),
    ];
    for (list, field, check) in checks {
        for (i, value) in list.iter().enumerate() {
            if let Err(e) = check(value) {
                return Err(crate::validate::refused(format!("{field}[{i}]: {e}")));
            }
        }
    }
    Ok((page_size, cursor))
}

/// Most bytes of targets in one ListTargets answer: with output, 500 targets
/// of 2 MiB each would pass any client's message limit.
const MAX_PAGE_BYTES: usize = 16 * 1024 * 1024;

/// Ends a page early (at least one target) where it would pass
/// [`MAX_PAGE_BYTES`]; the rest comes with the next page token.
pub(super) fn within_page_bytes(
    mut targets: Vec<muster_proto::v1::Target>,
    next: Option<(String, String, String)>,
) -> (Vec<muster_proto::v1::Target>, Option<(String, String, String)>) {
    let mut size = 0;
    let keep = targets
        .iter()
        .position(|t| {
            size += t.encoded_len();
            size > MAX_PAGE_BYTES
        })
        .map_or(targets.len(), |i| i.max(1));
    if keep == targets.len() {
        return (targets, next);
    }
    targets.truncate(keep);
    let last = targets
        .last()
        .map(|t| (t.account_id.clone(), t.region.clone(), t.instance_id.clone()));
    (targets, last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_proto::v1::Target;

    fn refusal<T: std::fmt::Debug>(outcome: Result<T, Status>) -> String {
        let status = outcome.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        status.message().to_owned()
    }

    #[test]
    fn a_listing_request_names_the_field_it_refuses() {
        let campaigns = |page_size, page_token: &str, states: Vec<i32>| ListCampaignsRequest {
            page_size,
            page_token: page_token.into(),
            states,
            ..Default::default()
        };
        assert_eq!(
            refusal(campaign_query(&campaigns(501, "", vec![]))),
            "page_size: 501; at most 500"
        );
        assert_eq!(
            refusal(campaign_query(&campaigns(0, "yesterday", vec![]))),
            "page_token: not a token from a previous ListCampaigns"
        );
        assert_eq!(
            refusal(campaign_query(&campaigns(
                0,
                "",
                vec![CampaignState::Running as i32, 0]
            ))),
            "states[1]: 0 is not a campaign state"
        );
        let query = campaign_query(&campaigns(0, "17:abc", vec![])).unwrap();
        assert_eq!((query.page_size, query.cursor), (50, Some((17, "abc".to_owned()))));

        let targets = |page_size, page_token: &str| ListTargetsRequest {
            page_size,
            page_token: page_token.into(),
            ..Default::default()
        };
        assert_eq!(
            refusal(target_page(&targets(5_001, ""))),
            "page_size: 5001; at most 5000"
        );
        assert_eq!(
            refusal(target_page(&targets(0, "111:us-east-1"))),
            "page_token: not a token from a previous ListTargets"
        );
        let mut unknown = targets(0, "");
        unknown.statuses = vec![TargetStatus::Failed as i32, 99];
        assert_eq!(refusal(target_page(&unknown)), "statuses[1]: 99 is not a target status");
        let mut many = targets(0, "");
        many.regions = vec!["us-east-1".into(); 1_001];
        assert_eq!(refusal(target_page(&many)), "regions: at most 1000 values");
        let mut typo = targets(0, "");
        typo.account_ids = vec!["111111111111".into(), "12".into()];
        assert_eq!(
            refusal(target_page(&typo)),
            "account_ids[1]: '12' is not a 12-digit account id"
        );
        let mut typo = targets(0, "");
        typo.regions = vec!["mars".into()];
        assert!(refusal(target_page(&typo)).starts_with("regions[0]: 'mars' is not an AWS region"));
        let mut typo = targets(0, "");
        typo.instance_ids = vec!["web-1".into()];
        assert!(refusal(target_page(&typo)).starts_with("instance_ids[0]: "));
        let mut fine = targets(0, "");
        fine.account_ids = vec!["111111111111".into()];
        fine.regions = vec!["eu-west-1".into()];
        fine.instance_ids = vec!["i-0123456789abcdef0".into()];
        assert!(target_page(&fine).is_ok());
        let (size, cursor) = target_page(&targets(0, "111:us-east-1:i-1")).unwrap();
        assert_eq!(
            (size, cursor),
            (500, Some(("111".into(), "us-east-1".into(), "i-1".into())))
        );
    }

    #[test]
    fn a_page_of_targets_ends_where_it_would_pass_the_byte_limit() {
        let target = |n: usize, bytes: usize| Target {
            account_id: "111".into(),
            region: "us-east-1".into(),
            instance_id: format!("i-{n}"),
            reason: "x".repeat(bytes),
            ..Default::default()
        };
        let big = MAX_PAGE_BYTES / 3;
        let page: Vec<Target> = (1..=4).map(|n| target(n, big)).collect();
        let (kept, next) = within_page_bytes(page, None);
        assert_eq!(kept.len(), 2, "a third page's worth each: two fit");
        assert_eq!(
            next,
            Some(("111".into(), "us-east-1".into(), "i-2".into())),
            "the rest from after the last kept"
        );

        let (kept, _) = within_page_bytes(vec![target(1, MAX_PAGE_BYTES + 1)], None);
        assert_eq!(kept.len(), 1, "one target always goes, however big");

        let small: Vec<Target> = (1..=3).map(|n| target(n, 10)).collect();
        let next = Some(("111".into(), "us-east-1".into(), "i-9".into()));
        assert_eq!(
            within_page_bytes(small, next.clone()),
            ((1..=3).map(|n| target(n, 10)).collect(), next)
        );
    }
}
