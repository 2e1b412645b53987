//! Targets: one row per (campaign, account, region, instance), with its
//! status, result and kept output. Every status change moves the scope's
//! counters in the same transaction, so counters always add up.

use std::collections::{BTreeMap, HashMap};

use crate::store::sql::{Datum, ROWS_PER_STATEMENT, Row, Sql, ToValue, Value, params, pieces, placeholders};
use muster_proto::PatchChoice;
use muster_proto::v1::{DiscoveredInstance, PingStatus, Platform, ScopeState, Target, TargetStatus};

use super::records::{bump, bump_all, now_ms, timestamp};
use super::tasks::TaskRow;
use super::{StoreError, StoreResult};

/// Columns of one instance in [`insert_discovered`]' VALUES rows.
const DISCOVERED_COLUMNS: usize = 8;

/// Records discovered instances; returns how many were new. One INSERT per
/// [`ROWS_PER_STATEMENT`] instances (on PostgreSQL every statement is a
/// round trip).
pub fn insert_discovered(conn: &dyn Sql, task: &TaskRow, instances: &[DiscoveredInstance]) -> StoreResult<u32> {
    let mut inserted = insert_new(conn, task, instances)?;
    let (mut new, mut managed, mut offline, mut unmanaged) = (0u32, 0i64, 0i64, 0i64);
    let mut deltas = BTreeMap::new();
    for instance in instances {
        // Counted once, however many times a report names it.
        if !inserted.remove(&instance.instance_id) {
            continue;
        }
        new += 1;
        *deltas.entry(discovered_status(instance) as i32).or_default() += 1;
        match PingStatus::try_from(instance.ping_status).unwrap_or(PingStatus::Unspecified) {
            PingStatus::Online => managed += 1,
            PingStatus::ConnectionLost | PingStatus::Inactive => offline += 1,
            _ => unmanaged += 1,
        }
    }
    bump_all(conn, (&task.campaign_id, &task.account_id, &task.region), &deltas)?;
    conn.prepare_cached(
        "UPDATE scopes SET managed = managed + ?4, offline = offline + ?5, unmanaged = unmanaged + ?6
         WHERE campaign_id = ?1 AND account_id = ?2 AND region = ?3",
    )?
    .execute(params![
        task.campaign_id,
        task.account_id,
        task.region,
        managed,
        offline,
        unmanaged
    ])?;
    Ok(new)
}

/// A discovered instance's first status: skipped, with its reason, or
/// pending.
fn discovered_status(instance: &DiscoveredInstance) -> TargetStatus {
    if instance.skip_reason.is_empty() {
        TargetStatus::Pending
    } else {
        TargetStatus::Skipped
    }
}

/// Inserts the instances the task's scope does not hold yet, in
/// multi-row statements; returns the ids it inserted.
fn insert_new(
    conn: &dyn Sql,
    task: &TaskRow,
    instances: &[DiscoveredInstance],
) -> StoreResult<std::collections::HashSet<String>> {
    let now = now_ms();
    let tags: Vec<String> = instances
        .iter()
        .map(|i| {
            if i.tags.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&i.tags).unwrap_or_default()
            }
        })
        .collect();
    let mut inserted = std::collections::HashSet::new();
    for piece in pieces(instances.len(), ROWS_PER_STATEMENT) {
        let shape = piece.shape;
        let rows = (0..shape)
            .map(|row| {
                let p = 4 + row * DISCOVERED_COLUMNS;
                format!("(?1, ?2, ?3, {})", placeholders(p, DISCOVERED_COLUMNS))
            })
            .collect::<Vec<_>>()
            .join(", ");
        // A padding repeat conflicts with its first and is left out.
        let sql = format!(
            "INSERT INTO targets (campaign_id, account_id, region, instance_id, name, platform, ping, status, reason, finished_ms, tags)
             VALUES {rows} ON CONFLICT DO NOTHING RETURNING instance_id"
        );
        let mut args: Vec<Value<'_>> = Vec::with_capacity(3 + shape * DISCOVERED_COLUMNS);
        args.extend([
            task.campaign_id.to_value(),
            task.account_id.to_value(),
            task.region.to_value(),
        ]);
        for i in piece.indexes() {
            let instance = &instances[i];
            let status = discovered_status(instance);
            args.extend([
                instance.instance_id.to_value(),
                instance.name.to_value(),
                Value::Int(i64::from(instance.platform)),
                Value::Int(i64::from(instance.ping_status)),
                Value::Int(status as i64),
                instance.skip_reason.to_value(),
                if status == TargetStatus::Skipped {
                    Value::Int(now)
                } else {
                    Value::Null
                },
                tags[i].to_value(),
            ]);
        }
        for row in conn.query_values(&sql, &args)? {
            if let Some(Datum::Text(id)) = row.into_iter().next() {
                inserted.insert(id);
            }
        }
    }
    Ok(inserted)
}

/// Records a SendCommand (of command `step` of the task's sequence); its
/// instances become RUNNING. Every instance must be one of the task's, or
/// nothing is recorded.
pub fn record_dispatch(
    conn: &dyn Sql,
    task: &TaskRow,
    (command_id, step): (&str, u32),
    instance_ids: &[String],
    sent_ms: Option<i64>,
    adopted: bool,
) -> StoreResult<()> {
    let ids: Vec<&str> = instance_ids.iter().map(String::as_str).collect();
    let members = statuses(conn, task, &ids)?;
    if let Some((i, outsider)) = ids.iter().enumerate().find(|(_, id)| !members.contains_key(**id)) {
        return Err(outside_task(&format!("instance_ids[{i}]"), outsider, task));
    }
    conn.prepare_cached(
        "INSERT INTO dispatches (task_id, command_id, instance_ids, sent_ms, attempt, adopted, step)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
    )?
    .execute(params![
        task.id,
        command_id,
        serde_json::to_string(instance_ids).unwrap_or_default(),
        sent_ms,
        task.attempt,
        adopted,
        i64::from(step)
    ])?;
    let dispatched = sent_ms.unwrap_or_else(now_ms);
    let mut update = conn.prepare_cached(
        "UPDATE targets SET status = ?4, command_id = ?5, dispatched_ms = ?6
         WHERE campaign_id = ?1 AND account_id = ?2 AND region = ?3 AND instance_id = ?7 AND task_id = ?8 AND status = ?9",
    )?;
    let mut running = 0;
    for instance in instance_ids {
        running += update.execute(params![
            task.campaign_id,
            task.account_id,
            task.region,
            TargetStatus::Running as i32,
            command_id,
            dispatched,
            instance,
            task.id,
            TargetStatus::Queued as i32
        ])?;
    }
    bump(
        conn,
        &task.campaign_id,
        &task.account_id,
        &task.region,
        TargetStatus::Queued as i32,
        -(running as i64),
    )?;
    bump(
        conn,
        &task.campaign_id,
        &task.account_id,
        &task.region,
        TargetStatus::Running as i32,
        running as i64,
    )?;
    Ok(())
}

/// A report about an instance that is not the task's (PERMISSION_DENIED).
pub(super) fn outside_task(field: &str, instance: &str, task: &TaskRow) -> StoreError {
    StoreError::Denied {
        rule: "task_scope",
        message: format!(
            "{field}: {} is not a target of task {}; a lease reports only on its own task's instances",
            muster_common::domain::clip(instance),
            task.id
        ),
    }
}

/// The statuses of those of `ids` that are targets of `task`, by instance,
/// in a few queries (see `pieces`).
pub(super) fn statuses(conn: &dyn Sql, task: &TaskRow, ids: &[&str]) -> StoreResult<HashMap<String, i32>> {
    let mut found = std::collections::HashMap::new();
    // A few statement shapes whatever the count (see `pieces`).
    for piece in pieces(ids.len(), ROWS_PER_STATEMENT) {
        let list = placeholders(5, piece.shape);
        let sql = format!(
            "SELECT instance_id, status FROM targets
             WHERE campaign_id = ?1 AND account_id = ?2 AND region = ?3 AND task_id = ?4 AND instance_id IN ({list})"
        );
        let mut args: Vec<Value<'_>> = vec![
            ToValue::to_value(&task.campaign_id),
            ToValue::to_value(&task.account_id),
            ToValue::to_value(&task.region),
            ToValue::to_value(&task.id),
        ];
        args.extend(piece.indexes().map(|i| ToValue::to_value(ids[i])));
        for row in conn
            .prepare_cached(&sql)?
            .query_map(args, |r| Ok((r.get::<_, String>(0)?, r.get::<_, i32>(1)?)))?
        {
            let (instance, status) = row?;
            found.insert(instance, status);
        }
    }
    Ok(found)
}

/// Pending targets of one (account, region) and platform.
pub type PendingGroup = ((String, String), i32, u64);

/// Where a page of targets ends: (account, region, instance).
pub type TargetCursor = (String, String, String);

/// Which pending scopes one read covers, in (account, region) order: those
/// after a scope or up to and including one, at most `scopes` of them. A
/// release round-robin reads the window it may fill, not every pending
/// target of the campaign.
#[derive(Debug, Clone, Copy)]
pub struct Window<'a> {
    /// Only scopes after this one.
    pub after: Option<(&'a str, &'a str)>,
    /// Only scopes up to and including this one.
    pub up_to: Option<(&'a str, &'a str)>,
    /// Most scopes read.
    pub scopes: usize,
}

impl<'a> Window<'a> {
    /// Every pending scope.
    pub const ALL: Window<'static> = Window {
        after: None,
        up_to: None,
        scopes: usize::MAX,
    };

    /// The window's conditions on `t.account_id` and `t.region`, with their
    /// values pushed onto `args`.
    fn bounds(&self, args: &mut Vec<Value<'a>>) -> String {
        let mut conditions = String::new();
        for (bound, op) in [(self.after, ">"), (self.up_to, "<=")] {
            if let Some((account, region)) = bound {
                conditions.push_str(&scope_bound(args, op, (account, region)));
            }
        }
        conditions
    }
}

/// ` AND (t.account_id, t.region) <op> (?, ?)`, its values pushed onto `args`.
fn scope_bound<'v>(args: &mut Vec<Value<'v>>, op: &str, (account, region): (&'v str, &'v str)) -> String {
    args.push(Value::Text(account));
    args.push(Value::Text(region));
    let n = args.len();
    format!(" AND (t.account_id, t.region) {op} (?{}, ?{n})", n - 1)
}

/// Pending targets per (account, region, platform) in `window`, of stage
/// `stage` only when given.
pub fn pending_by_scope(
    conn: &dyn Sql,
    campaign_id: &str,
    stage: Option<i64>,
    window: Window<'_>,
) -> StoreResult<Vec<PendingGroup>> {
    let mut args = vec![Value::Text(campaign_id)];
    let mut filter = String::new();
    if let Some(stage) = stage {
        args.push(Value::Int(stage));
        filter.push_str(" AND t.stage = ?2");
    }
    let from = format!("targets t WHERE t.campaign_id = ?1 AND t.pending{filter}");
    pending_groups(conn, &from, args, window)
}

/// Pending targets per (account, region, platform) in `window`, only in
/// scopes whose discovery has finished (a scope still being listed may
/// report more), and only in scope `only` when given.
pub fn pending_by_discovered_scope(
    conn: &dyn Sql,
    campaign_id: &str,
    only: Option<(&str, &str)>,
    window: Window<'_>,
) -> StoreResult<Vec<PendingGroup>> {
    let mut args = vec![Value::Text(campaign_id), Value::Int(ScopeState::Discovered as i64)];
    let mut filter = String::new();
    if let Some((account, region)) = only {
        args.push(Value::Text(account));
        args.push(Value::Text(region));
        filter.push_str(" AND t.account_id = ?3 AND t.region = ?4");
    }
    let from = format!(
        "targets t JOIN scopes s ON s.campaign_id = t.campaign_id AND s.account_id = t.account_id AND s.region = t.region
         WHERE t.campaign_id = ?1 AND t.pending AND s.state = ?2{filter}"
    );
    pending_groups(conn, &from, args, window)
}

/// The groups of `from` (a FROM and WHERE over targets `t`, bound by `args`)
/// in `window`. A window of some scopes is read in two steps: its scopes
/// first, by (account, region) alone, the order of every index that leads
/// with the campaign, so that the read stops at the window's end whatever
/// the planner makes of the table's statistics; then the groups of those
/// scopes, which are all it sorts.
fn pending_groups<'a>(
    conn: &dyn Sql,
    from: &str,
    mut args: Vec<Value<'a>>,
    window: Window<'a>,
) -> StoreResult<Vec<PendingGroup>> {
    let bounds = window.bounds(&mut args);
    let grouped = |args: Vec<Value<'_>>, last: &str| -> StoreResult<Vec<PendingGroup>> {
        let sql = format!(
            "SELECT t.account_id, t.region, t.platform, COUNT(*) FROM {from}{bounds}{last}
             GROUP BY t.account_id, t.region, t.platform ORDER BY t.account_id, t.region, t.platform"
        );
        conn.prepare_cached(&sql)?.query_map(args, group)?.collect()
    };
    if window.scopes == usize::MAX {
        return grouped(args, "");
    }
    let mut first = args.clone();
    first.push(Value::Int(i64::try_from(window.scopes).unwrap_or(i64::MAX)));
    let sql = format!(
        "SELECT t.account_id, t.region FROM {from}{bounds}
         GROUP BY t.account_id, t.region ORDER BY t.account_id, t.region LIMIT ?{}",
        first.len()
    );
    let Some((account, region)) = conn
        .prepare_cached(&sql)?
        .query_map(first, |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        // The last scope, but not past an error in any row before it.
        .try_fold(None, |_, row| row.map(Some))?
    else {
        return Ok(Vec::new());
    };
    let mut args: Vec<Value<'_>> = args;
    let last = scope_bound(&mut args, "<=", (&account, &region));
    grouped(args, &last)
}

fn group(r: &Row<'_>) -> StoreResult<PendingGroup> {
    Ok(((r.get(0)?, r.get(1)?), r.get(2)?, r.get::<_, i64>(3)? as u64))
}

/// The first `limit` pending instances of one scope and platform (of
/// stage `stage` only, when given).
pub fn pending_instances(
    conn: &dyn Sql,
    campaign_id: &str,
    (account, region): (&str, &str),
    platform: i32,
    stage: Option<i64>,
    limit: u64,
) -> StoreResult<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT instance_id FROM targets WHERE campaign_id = ?1 AND pending AND account_id = ?2 AND region = ?3 AND platform = ?4
           AND (CAST(?6 AS BIGINT) IS NULL OR stage = ?6)
         ORDER BY instance_id LIMIT ?5",
    )?;
    let rows = stmt.query_map(
        params![campaign_id, account, region, platform, limit as i64, stage],
        |r| r.get(0),
    )?;
    rows.collect::<StoreResult<Vec<_>>>()
}

/// Ends every PENDING target of a campaign with `status` and `reason`.
pub fn end_pending(conn: &dyn Sql, campaign_id: &str, status: TargetStatus, reason: &str) -> StoreResult<u64> {
    end_pending_of(conn, campaign_id, None, status, reason)
}

/// Ends the PENDING targets of a campaign (of stage `stage` only, when
/// given) with `status` and `reason`.
pub fn end_pending_of(
    conn: &dyn Sql,
    campaign_id: &str,
    stage: Option<i64>,
    status: TargetStatus,
    reason: &str,
) -> StoreResult<u64> {
    let per_scope = pending_by_scope(conn, campaign_id, stage, Window::ALL)?;
    let changed = conn
        .prepare_cached(
            "UPDATE targets SET status = ?2, reason = ?3, finished_ms = ?4 WHERE campaign_id = ?1 AND pending
               AND (CAST(?5 AS BIGINT) IS NULL OR stage = ?5)",
        )?
        .execute(params![campaign_id, status as i32, reason, now_ms(), stage])?;
    for ((account, region), _, count) in per_scope {
        bump(
            conn,
            campaign_id,
            &account,
            &region,
            TargetStatus::Pending as i32,
            -(count as i64),
        )?;
        bump(conn, campaign_id, &account, &region, status as i32, count as i64)?;
    }
    Ok(changed as u64)
}

/// Filters for listing targets.
#[derive(Debug, Clone, Default)]
pub struct TargetFilter {
    /// Statuses (all when empty).
    pub statuses: Vec<i32>,
    /// Accounts (all when empty).
    pub accounts: Vec<String>,
    /// Regions (all when empty).
    pub regions: Vec<String>,
    /// Instances (all when empty).
    pub instances: Vec<String>,
    /// By patch state (decoded, so read past the page until it is full).
    pub patch: PatchChoice,
}

/// The columns [`from_row`] reads, with the output (from `outputs`, or
/// `targets.steps` where rows written before V16, and PostgreSQL's, keep
/// it) only when it is wanted: a listing without it reads no output.
fn columns(with_output: bool) -> String {
    let steps = if with_output {
        "COALESCE(targets.steps, (SELECT outputs.steps FROM outputs WHERE outputs.id = targets.output_id))"
    } else {
        "NULL"
    };
    format!(
        "campaign_id, account_id, region, instance_id, name, platform, ping, status, timeout_kind, exit_code, \
         reason, command_id, document_name, ssm_status_details, dispatched_ms, started_ms, finished_ms, {steps}, stage, \
         patch_state"
    )
}

/// The names of the stages of some campaigns, by campaign id: a target
/// row keeps its stage's index.
type StageNames = HashMap<String, Vec<String>>;

fn stage_names<'a>(conn: &dyn Sql, campaigns: impl IntoIterator<Item = &'a str>) -> StoreResult<StageNames> {
    let mut names = StageNames::new();
    for id in campaigns {
        if let Some(row) = super::campaigns::get(conn, id)? {
            names.insert(id.to_owned(), row.spec.stages.into_iter().map(|s| s.name).collect());
        }
    }
    Ok(names)
}

/// A target read with [`columns`]; its steps are empty where they were not
/// selected.
fn from_row(r: &Row<'_>, names: &StageNames) -> StoreResult<Target> {
    let steps: Option<Vec<u8>> = r.get(17)?;
    let campaign_id: String = r.get(0)?;
    let stage = usize::try_from(r.get::<_, i64>(18)?)
        .ok()
        .and_then(|index| names.get(&campaign_id)?.get(index).cloned())
        .unwrap_or_default();
    Ok(Target {
        stage,
        campaign_id,
        account_id: r.get(1)?,
        region: r.get(2)?,
        instance_id: r.get(3)?,
        name: r.get(4)?,
        platform: r.get(5)?,
        ping_status: r.get(6)?,
        status: r.get(7)?,
        timeout_kind: r.get(8)?,
        exit_code: r.get(9)?,
        reason: r.get(10)?,
        command_id: r.get(11)?,
        document_name: r.get(12)?,
        ssm_status_details: r.get(13)?,
        dispatched_at: r.get::<_, Option<i64>>(14)?.map(timestamp),
        started_at: r.get::<_, Option<i64>>(15)?.map(timestamp),
        finished_at: r.get::<_, Option<i64>>(16)?.map(timestamp),
        steps: steps.as_deref().map(super::output::decode).unwrap_or_default(),
        patch_state: r
            .get::<_, Option<Vec<u8>>>(19)?
            .map(|bytes| {
                prost::Message::decode(bytes.as_slice())
                    .map_err(|e| StoreError::Corrupt(format!("a target's patch_state: {e}")))
            })
            .transpose()?,
    })
}

/// Instances of one scope of a campaign in a few queries, in instance
/// order, without their output (as watchers get them). Ids that are not
/// targets there are left out.
pub fn of_instances(
    conn: &dyn Sql,
    campaign: &str,
    (account, region): (&str, &str),
    ids: &[&str],
) -> StoreResult<Vec<Target>> {
    /// Instance ids per query, well within both engines' bound on
    /// parameters.
    const PER_QUERY: usize = 500;
    let mut found = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(PER_QUERY) {
        let filter = TargetFilter {
            accounts: vec![account.to_owned()],
            regions: vec![region.to_owned()],
            instances: chunk.iter().map(|&id| id.to_owned()).collect(),
            ..TargetFilter::default()
        };
        found.extend(list(conn, campaign, &filter, chunk.len(), None, false)?.0);
    }
    Ok(found)
}

/// Targets of a campaign with this instance id (in any scope).
pub fn find_instance(conn: &dyn Sql, campaign: &str, instance: &str) -> StoreResult<Vec<Target>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {} FROM targets WHERE campaign_id = ?1 AND instance_id = ?2",
        columns(true)
    ))?;
    let names = stage_names(conn, [campaign])?;
    let rows = stmt.query_map(params![campaign, instance], |r| from_row(r, &names))?;
    rows.collect::<StoreResult<Vec<_>>>()
}

/// Appends `AND column IN (...)` for each list of `filter` that is not
/// empty (statuses only `with_statuses`), numbering after `args`.
fn filter_sql<'a>(filter: &'a TargetFilter, with_statuses: bool, sql: &mut String, args: &mut Vec<Value<'a>>) {
    let statuses = if with_statuses { filter.statuses.as_slice() } else { &[] };
    let lists: [(&str, Vec<Value<'a>>); 4] = [
        ("status", statuses.iter().map(ToValue::to_value).collect()),
        ("account_id", filter.accounts.iter().map(ToValue::to_value).collect()),
        ("region", filter.regions.iter().map(ToValue::to_value).collect()),
        ("instance_id", filter.instances.iter().map(ToValue::to_value).collect()),
    ];
    for (column, values) in lists.into_iter().filter(|(_, values)| !values.is_empty()) {
        sql.push_str(&format!(
            " AND {column} IN ({})",
            placeholders(args.len() + 1, values.len())
        ));
        args.extend(values);
    }
}

fn key_of(target: &Target) -> TargetCursor {
    (
        target.account_id.clone(),
        target.region.clone(),
        target.instance_id.clone(),
    )
}

/// Up to `chunk` rows of `campaigns` after the key `after`, in key order,
/// with the lists of the filter in SQL (its statuses only when the flag
/// beside it says so), read with or without their output.
fn rows_after(
    conn: &dyn Sql,
    campaigns: &[&str],
    after: &TargetCursor,
    (filter, with_statuses): (&TargetFilter, bool),
    chunk: usize,
    (with_output, names): (bool, &StageNames),
) -> StoreResult<Vec<Target>> {
    let n = campaigns.len();
    let mut sql = format!(
        "SELECT {} FROM targets WHERE campaign_id IN ({}) AND (account_id, region, instance_id) > (?{}, ?{}, ?{})",
        columns(with_output),
        placeholders(1, n),
        n + 1,
        n + 2,
        n + 3
    );
    let mut args: Vec<Value<'_>> = campaigns.iter().map(ToValue::to_value).collect();
    args.extend([after.0.to_value(), after.1.to_value(), after.2.to_value()]);
    filter_sql(filter, with_statuses, &mut sql, &mut args);
    sql.push_str(&format!(" ORDER BY account_id, region, instance_id LIMIT {chunk}"));
    conn.prepare(&sql)?.query_map(args, |r| from_row(r, names))?.collect()
}

/// A page of targets ordered by (account, region, instance), after `cursor`.
pub fn list(
    conn: &dyn Sql,
    campaign: &str,
    filter: &TargetFilter,
    page_size: usize,
    cursor: Option<TargetCursor>,
    with_output: bool,
) -> StoreResult<super::Page<Target, TargetCursor>> {
    let names = stage_names(conn, [campaign])?;
    // A patch filter is applied to decoded rows, so rows are read in chunks
    // until the page is full; without one the first chunk is the page. The
    // chunks' query is then the plain walk of the primary key, statuses
    // too left to the rows: with another condition PostgreSQL plans from
    // statistics that may be older than the patch states (all NULL after
    // discovery) and scans and sorts the whole campaign for each chunk.
    let (chunk, in_sql) = match filter.patch {
        PatchChoice::Any => (page_size + 1, true),
        _ => ((page_size + 1).max(1_000), false),
    };
    let mut after = cursor.unwrap_or_default();
    let mut page = Vec::new();
    loop {
        let rows = rows_after(
            conn,
            &[campaign],
            &after,
            (filter, in_sql),
            chunk,
            (with_output, &names),
        )?;
        let complete = rows.len() < chunk;
        if let Some(last) = rows.last() {
            after = key_of(last);
        }
        page.extend(rows.into_iter().filter(|t| {
            (in_sql || filter.statuses.is_empty() || filter.statuses.contains(&t.status))
                && filter.patch.admits(t.patch_state.as_ref())
        }));
        if complete || page.len() > page_size {
            break;
        }
    }
    let next = if page.len() > page_size {
        page.truncate(page_size);
        page.last().map(key_of)
    } else {
        None
    };
    Ok((page, next))
}

/// A page of the targets of `chain` (a campaign and its reruns, in the order
/// they were made; see [`super::campaigns::rerun_chain`]), each as the last
/// campaign of the chain that has it left it, ordered as [`list`]. A row of
/// a scope that could not be discovered gives way to a later campaign that
/// covered the scope, whose own rows then stand for it. The status filter
/// applies to the result.
pub fn list_latest(
    conn: &dyn Sql,
    chain: &[String],
    filter: &TargetFilter,
    page_size: usize,
    cursor: Option<TargetCursor>,
    with_output: bool,
) -> StoreResult<super::Page<Target, TargetCursor>> {
    let rank: HashMap<&str, usize> = chain.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    let mut scope_covered_by: HashMap<(String, String), usize> = HashMap::new();
    for (i, id) in chain.iter().enumerate() {
        let mut stmt = conn.prepare_cached("SELECT account_id, region FROM scopes WHERE campaign_id = ?1")?;
        for scope in stmt.query_map([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))? {
            scope_covered_by.insert(scope?, i);
        }
    }
    let rank_of = |t: &Target| rank.get(t.campaign_id.as_str()).copied().unwrap_or(0);
    let names = stage_names(conn, chain.iter().map(String::as_str))?;
    // One key has at most one row per campaign: a chunk longer than the
    // chain always holds a whole key besides the one it may cut.
    let chunk = page_size + 1 + chain.len();
    let mut after = cursor.unwrap_or_default();
    let mut page: Vec<Target> = Vec::new();
    'chunks: loop {
        let campaigns: Vec<&str> = chain.iter().map(String::as_str).collect();
        let rows = rows_after(conn, &campaigns, &after, (filter, false), chunk, (with_output, &names))?;
        let complete = rows.len() < chunk;
        let mut groups: Vec<Vec<Target>> = Vec::new();
        for row in rows {
            match groups.last_mut() {
                Some(group) if key_of(&group[0]) == key_of(&row) => group.push(row),
                _ => groups.push(vec![row]),
            }
        }
        if !complete {
            groups.pop();
        }
        for group in groups {
            after = key_of(&group[0]);
            let Some(latest) = group.into_iter().max_by_key(|t| rank_of(t)) else {
                continue;
            };
            let superseded_scope = latest.instance_id.is_empty()
                && scope_covered_by
                    .get(&(latest.account_id.clone(), latest.region.clone()))
                    .is_some_and(|&later| later > rank_of(&latest));
            let filtered_out = (!filter.statuses.is_empty() && !filter.statuses.contains(&latest.status))
                || !filter.patch.admits(latest.patch_state.as_ref());
            if superseded_scope || filtered_out {
                continue;
            }
            page.push(latest);
            if page.len() > page_size {
                break 'chunks;
            }
        }
        if complete {
            break;
        }
    }
    let next = if page.len() > page_size {
        page.truncate(page_size);
        page.last().map(key_of)
    } else {
        None
    };
    Ok((page, next))
}

/// Which targets of an ended campaign another one takes: a rerun, or a
/// campaign whose targets are an earlier one's.
#[derive(Debug, Clone, Copy, Default)]
pub struct Choice<'a> {
    /// Only those that ended in one of these (any when empty).
    pub statuses: &'a [i32],
    /// By patch state.
    pub patch: PatchChoice,
    /// Each target as the latest rerun of the campaign that covered it left
    /// it.
    pub follow_reruns: bool,
}

/// The targets of `campaign` that `choice` takes, by scope: the instance
/// ids of each, or none for a scope that could not be discovered (taken
/// whole). At most `limit` + 1 targets, so that the caller can tell a
/// selection too large for one campaign.
pub fn selection(
    conn: &dyn Sql,
    campaign: &str,
    choice: Choice<'_>,
    limit: usize,
) -> StoreResult<BTreeMap<(String, String), Vec<String>>> {
    const PAGE: usize = 1_000;
    let chain = if choice.follow_reruns {
        super::campaigns::rerun_chain(conn, campaign)?
    } else {
        vec![campaign.to_owned()]
    };
    let filter = TargetFilter {
        statuses: choice.statuses.to_vec(),
        patch: choice.patch,
        ..Default::default()
    };
    let mut selection: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut taken = 0;
    let mut cursor = None;
    loop {
        let (page, next) = if choice.follow_reruns {
            list_latest(conn, &chain, &filter, PAGE, cursor, false)?
        } else {
            list(conn, campaign, &filter, PAGE, cursor, false)?
        };
        for target in page {
            taken += 1;
            let scope = selection.entry((target.account_id, target.region)).or_default();
            if !target.instance_id.is_empty() {
                scope.push(target.instance_id);
            }
            if taken > limit {
                return Ok(selection);
            }
        }
        match next {
            Some(next) => cursor = Some(next),
            None => return Ok(selection),
        }
    }
}

/// Every target of a campaign, for the results export (in pages, so memory
/// stays bounded by the caller).
pub fn all(
    conn: &dyn Sql,
    campaign: &str,
    after: Option<TargetCursor>,
    limit: usize,
) -> StoreResult<super::Page<Target, TargetCursor>> {
    list(conn, campaign, &TargetFilter::default(), limit, after, true)
}

/// The platform of a stored value, for people.
pub fn platform_name(platform: i32) -> &'static str {
    match Platform::try_from(platform).unwrap_or(Platform::Unspecified) {
        Platform::Linux => "linux",
        Platform::Windows => "windows",
        Platform::Macos => "macos",
        Platform::Unspecified => "",
    }
}

#[cfg(test)]
mod tests;
