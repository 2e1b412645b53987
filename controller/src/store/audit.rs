//! The audit trail: who submitted, planned or cancelled what, whose call was
//! refused, and when the policy changed, with the caller's identity and
//! address. Rows go with their campaign (retention), or by age when they
//! have none.

use muster_proto::v1::AuditEvent;

use crate::store::sql::{Row, Sql, params};

use super::StoreResult;
use super::records::{now_ms, timestamp};

/// Who acted, and from where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    /// The principal's name.
    pub principal: String,
    /// token, certificate, anonymous; empty for the policy file.
    pub via: String,
    /// The caller's address.
    pub peer: String,
}

/// Records one event.
pub fn record(conn: &dyn Sql, actor: &Actor, action: &str, campaign_id: &str, detail: &str) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO audit (at_ms, principal, via, peer, action, campaign_id, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        now_ms(),
        actor.principal,
        actor.via,
        actor.peer,
        action,
        campaign_id,
        detail
    ])?;
    Ok(())
}

/// Which events to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this campaign's.
    pub campaign_id: Option<String>,
    /// Only this principal's.
    pub principal: Option<String>,
}

fn from_row(r: &Row<'_>) -> StoreResult<AuditEvent> {
    Ok(AuditEvent {
        id: r.get(0)?,
        at: Some(timestamp(r.get(1)?)),
        principal: r.get(2)?,
        via: r.get(3)?,
        peer: r.get(4)?,
        action: r.get(5)?,
        campaign_id: r.get(6)?,
        detail: r.get(7)?,
    })
}

/// A page of events, newest first, with ids below `before` (none: from the
/// newest); the id to continue from, if there are more.
pub fn list(
    conn: &dyn Sql,
    filter: &AuditFilter,
    page_size: usize,
    before: Option<i64>,
) -> StoreResult<(Vec<AuditEvent>, Option<i64>)> {
    let mut events = conn
        .prepare_cached(
            "SELECT id, at_ms, principal, via, peer, action, campaign_id, detail FROM audit
             WHERE id < ?1 AND (?2 = '' OR campaign_id = ?2) AND (?3 = '' OR principal = ?3)
             ORDER BY id DESC LIMIT ?4",
        )?
        .query_map(
            params![
                before.unwrap_or(i64::MAX),
                filter.campaign_id.as_deref().unwrap_or_default(),
                filter.principal.as_deref().unwrap_or_default(),
                (page_size + 1) as i64
            ],
            from_row,
        )?
        .collect::<StoreResult<Vec<_>>>()?;
    let next = if events.len() > page_size {
        events.truncate(page_size);
        events.last().map(|e| e.id)
    } else {
        None
    };
    Ok((events, next))
}

/// A campaign's events, oldest first (for the results export).
pub fn of_campaign(conn: &dyn Sql, campaign_id: &str) -> StoreResult<Vec<AuditEvent>> {
    conn.prepare_cached(
        "SELECT id, at_ms, principal, via, peer, action, campaign_id, detail FROM audit
         WHERE campaign_id = ?1 ORDER BY id",
    )?
    .query_map([campaign_id], from_row)?
    .collect()
}

/// Deletes events of no campaign recorded before `cutoff_ms`; how many.
pub fn prune_unattached(conn: &dyn Sql, cutoff_ms: i64) -> StoreResult<u64> {
    let deleted = conn
        .prepare_cached("DELETE FROM audit WHERE campaign_id = '' AND at_ms < ?1")?
        .execute([cutoff_ms])?;
    Ok(deleted as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::store_matrix;

    fn actor(name: &str) -> Actor {
        Actor {
            principal: name.into(),
            via: "token".into(),
            peer: "127.0.0.1:5000".into(),
        }
    }

    store_matrix! {
        fn pages_go_newest_first_and_filters_hold(conn) {
            for i in 0..5 {
                record(&*conn, &actor("ci"), "submitted", &format!("c{i}"), "{}").unwrap();
            }
            record(&*conn, &actor("alice"), "cancel_requested", "c1", r#"{"reason":"x"}"#).unwrap();
            record(&*conn, &actor("dev"), "refused", "", r#"{"method":"SubmitCampaign"}"#).unwrap();
            let all = AuditFilter::default();
            let (page, next) = list(&*conn, &all, 4, None).unwrap();
            assert_eq!(
                page.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
                ["refused", "cancel_requested", "submitted", "submitted"]
            );
            let (rest, last) = list(&*conn, &all, 4, next).unwrap();
            assert_eq!((rest.len(), last), (3, None));
            let c1 = AuditFilter {
                campaign_id: Some("c1".into()),
                ..Default::default()
            };
            let (events, _) = list(&*conn, &c1, 10, None).unwrap();
            assert_eq!(
                events.iter().map(|e| e.principal.as_str()).collect::<Vec<_>>(),
                ["alice", "ci"]
            );
            assert_eq!(events[0].peer, "127.0.0.1:5000");
            let alice = AuditFilter {
                principal: Some("alice".into()),
                ..Default::default()
            };
            assert_eq!(list(&*conn, &alice, 10, None).unwrap().0.len(), 1);
            assert_eq!(of_campaign(&*conn, "c1").unwrap().len(), 2);
            // Events of no campaign go by age; a campaign's stay with it.
            assert_eq!(prune_unattached(&*conn, now_ms() + 1).unwrap(), 1);
            assert_eq!(list(&*conn, &all, 10, None).unwrap().0.len(), 6);
        }
    }
}
