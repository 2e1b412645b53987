//! `audit` and `whoami`: who did what, and who the caller is.

use comfy_table::Cell;

use super::Failure;
use crate::args::{AuditArgs, Output};
use crate::connect::Client;
use crate::render::{self, Style};

/// `muster audit`.
pub async fn audit(client: &mut Client, args: &AuditArgs, style: Style, output: Output) -> Result<(), Failure> {
    let mut events = Vec::new();
    let mut token = String::new();
    while events.len() < args.limit as usize {
        let page = client
            .list_audit_events(muster_proto::v1::ListAuditEventsRequest {
                campaign_id: args.campaign.clone().unwrap_or_default(),
                principal: args.principal.clone().unwrap_or_default(),
                page_size: (args.limit as usize - events.len()).min(1_000) as u32,
                page_token: token.clone(),
            })
            .await?
            .into_inner();
        events.extend(page.events);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    let more = !token.is_empty();
    match output {
        Output::Json | Output::Yaml => render::print_message(
            &muster_proto::v1::ListAuditEventsResponse {
                events,
                next_page_token: String::new(),
            },
            output,
        ),
        Output::Csv => render::print_csv(
            &[
                "id",
                "at",
                "principal",
                "via",
                "peer",
                "action",
                "campaign_id",
                "detail",
            ],
            events.iter().map(|e| {
                vec![
                    e.id.to_string(),
                    render::time(&e.at),
                    e.principal.clone(),
                    e.via.clone(),
                    e.peer.clone(),
                    e.action.clone(),
                    e.campaign_id.clone(),
                    e.detail.clone(),
                ]
            }),
        ),
        Output::Table | Output::Wide => {
            let mut table = style.table(&["when", "who", "via", "from", "what", "campaign", "detail"]);
            for e in &events {
                table.add_row(vec![
                    Cell::new(render::time(&e.at)),
                    Cell::new(&e.principal),
                    Cell::new(&e.via),
                    Cell::new(&e.peer),
                    Cell::new(&e.action),
                    Cell::new(&e.campaign_id),
                    Cell::new(&e.detail),
                ]);
            }
            println!("{table}");
            if more {
                eprintln!("{}", render::limit_line(events.len()));
            }
        }
    }
    Ok(())
}

/// `muster whoami`.
pub async fn whoami(client: &mut Client, style: Style, output: Output) -> Result<(), Failure> {
    let me = client.who_am_i(muster_proto::v1::WhoAmIRequest {}).await?.into_inner();
    let scope = |g: &muster_proto::v1::RoleGrant| {
        let mut parts = Vec::new();
        for (label, list) in [
            ("accounts", &g.accounts),
            ("OUs", &g.ous),
            ("regions", &g.regions),
            ("documents", &g.documents),
        ] {
            if !list.is_empty() {
                parts.push(format!("{label} {}", list.join(", ")));
            }
        }
        if parts.is_empty() {
            "everywhere".to_owned()
        } else {
            parts.join("; ")
        }
    };
    match output {
        Output::Json | Output::Yaml => render::print_message(&me, output),
        Output::Csv => render::print_csv(
            &["name", "via", "aws_arn", "role", "scope"],
            me.grants.iter().map(|g| {
                vec![
                    me.name.clone(),
                    me.via.clone(),
                    me.aws_arn.clone(),
                    g.role.clone(),
                    scope(g),
                ]
            }),
        ),
        Output::Table | Output::Wide => {
            let how = if me.aws_arn.is_empty() {
                me.via.clone()
            } else {
                format!("{} ({})", me.via, me.aws_arn)
            };
            println!("{} via {how}, from {}", me.name, me.peer);
            if me.grants.is_empty() {
                println!("no roles: the policy grants this principal nothing");
            } else {
                let mut table = style.table(&["role", "where"]);
                for g in &me.grants {
                    table.add_row(vec![Cell::new(&g.role), Cell::new(scope(g))]);
                }
                println!("{table}");
            }
        }
    }
    Ok(())
}
