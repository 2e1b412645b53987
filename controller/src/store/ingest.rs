//! Results of an Execute task's targets, as its lease holder reports them:
//! each target's first final result is recorded, once, with the scope's
//! counters and the campaign's errors moved in the same transaction; a
//! repeat is a duplicate that changes nothing. On PostgreSQL a report is
//! one statement per 64 results; on SQLite, in process, one per result,
//! and one more for a result whose output goes to `outputs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use muster_proto::v1::{PatchCounters, TargetResult, TargetStatus, TimeoutKind};

use super::output;
use super::records::{bump_all, millis, now_ms, terminal};
use super::sql::{Datum, Engine, ROWS_PER_STATEMENT, Sql, ToValue, Value, params, pieces, typed_placeholders};
use super::targets::{outside_task, statuses};
use super::tasks::TaskRow;
use super::{StoreError, StoreResult};

/// How an ingest went.
#[derive(Debug, Default)]
pub struct Ingested {
    /// Changed nothing: the target already had a result, or the report
    /// named its instance before.
    pub duplicates: u32,
    /// New errors as SSM counts them.
    pub errors: i64,
    /// The instances whose results were recorded now, in the report's
    /// order: what watchers hear of.
    pub written: Vec<String>,
}

impl Ingested {
    /// How many results were recorded now.
    pub fn accepted(&self) -> u32 {
        self.written.len() as u32
    }
}

/// Records terminal results of an Execute task's targets. A result for a
/// target that already has one is a duplicate and changes nothing, and so
/// is a second result for the same instance in one report.
pub fn results(conn: &dyn Sql, task: &TaskRow, results: &[Reported]) -> StoreResult<Ingested> {
    let mut out = Ingested::default();
    if let Some((i, Reported { result, .. })) = results
        .iter()
        .enumerate()
        .find(|(_, r)| !final_status(&r.result).is_terminal())
    {
        return Err(StoreError::Corrupt(format!(
            "results[{i}].status: {} is not a final status",
            final_status(result).short_name()
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(results.len());
    let firsts: Vec<(usize, &Reported)> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| seen.insert(r.result.instance_id.as_str()))
        .collect();
    // On PostgreSQL the statement that writes the results also moves the
    // counters and the campaign's errors; on SQLite that is done here.
    let (written, counted) = if conn.engine() == Engine::Sqlite {
        // In process, a statement per row is cheaper than SQLite's
        // UPDATE ... FROM, which builds and scans a temporary table.
        (write_results_by_row(conn, task, &firsts)?, false)
    } else {
        (write_results_in_bulk(conn, task, &firsts)?, true)
    };
    out.duplicates = (results.len() - written.len()) as u32;
    out.errors = written.iter().filter(|(r, _)| counts_as_error(r)).count() as i64;
    out.written = written.iter().map(|(r, _)| r.instance_id.clone()).collect();
    count_patch_states(conn, &task.campaign_id, written.iter().map(|&(r, _)| r))?;
    if !counted {
        // Counter changes by status, applied once for the whole report.
        let mut deltas: BTreeMap<i32, i64> = BTreeMap::new();
        for &(result, old) in &written {
            *deltas.entry(old).or_default() -= 1;
            *deltas.entry(result.status).or_default() += 1;
        }
        bump_all(conn, (&task.campaign_id, &task.account_id, &task.region), &deltas)?;
        if out.errors > 0 {
            conn.prepare_cached("UPDATE campaigns SET errors = errors + ?2 WHERE id = ?1")?
                .execute(params![task.campaign_id, out.errors])?;
        }
    }
    Ok(out)
}

/// Adds the patch states of results written now to their campaign's
/// [`PatchCounters`]: once per target, since only a target's first result
/// is written. A report without any writes nothing.
fn count_patch_states<'r>(
    conn: &dyn Sql,
    campaign: &str,
    written: impl Iterator<Item = &'r TargetResult>,
) -> StoreResult<()> {
    let mut sum = PatchCounters::default();
    written.filter_map(|r| r.patch_state.as_ref()).for_each(|p| sum.add(p));
    if sum.reported == 0 {
        return Ok(());
    }
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    conn.prepare_cached(
        "INSERT INTO patch_counters (campaign_id, reported, compliant, missing_targets, missing_patches,
            failed_targets, failed_patches, pending_reboot_targets, pending_reboot_patches,
            critical_targets, critical_patches, security_targets, security_patches)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (campaign_id) DO UPDATE SET
            reported = patch_counters.reported + excluded.reported,
            compliant = patch_counters.compliant + excluded.compliant,
            missing_targets = patch_counters.missing_targets + excluded.missing_targets,
            missing_patches = patch_counters.missing_patches + excluded.missing_patches,
            failed_targets = patch_counters.failed_targets + excluded.failed_targets,
            failed_patches = patch_counters.failed_patches + excluded.failed_patches,
            pending_reboot_targets = patch_counters.pending_reboot_targets + excluded.pending_reboot_targets,
            pending_reboot_patches = patch_counters.pending_reboot_patches + excluded.pending_reboot_patches,
            critical_targets = patch_counters.critical_targets + excluded.critical_targets,
            critical_patches = patch_counters.critical_patches + excluded.critical_patches,
            security_targets = patch_counters.security_targets + excluded.security_targets,
            security_patches = patch_counters.security_patches + excluded.security_patches",
    )?
    .execute(params![
        campaign,
        n(sum.reported),
        n(sum.compliant),
        n(sum.missing_targets),
        n(sum.missing_patches),
        n(sum.failed_targets),
        n(sum.failed_patches),
        n(sum.pending_reboot_targets),
        n(sum.pending_reboot_patches),
        n(sum.critical_targets),
        n(sum.critical_patches),
        n(sum.security_targets),
        n(sum.security_patches)
    ])?;
    Ok(())
}

fn final_status(result: &TargetResult) -> TargetStatus {
    TargetStatus::try_from(result.status).unwrap_or(TargetStatus::Unspecified)
}

/// Whether a result counts against max_errors, as SSM counts them.
fn counts_as_error(result: &TargetResult) -> bool {
    let timeout = TimeoutKind::try_from(result.timeout_kind).unwrap_or(TimeoutKind::Unspecified);
    final_status(result).counts_as_error(timeout)
}

/// Results written, each with its target's status before.
type Written<'r> = Vec<(&'r TargetResult, i32)>;

/// A result as the store's writer takes it: its output already encoded
/// for the store ([`output::encode`]), off the writer's thread.
#[derive(Debug)]
pub struct Reported {
    /// The result, its steps taken out into `output`.
    pub result: TargetResult,
    output: Vec<u8>,
    /// Its patch state, encoded.
    patch_state: Option<Vec<u8>>,
}

impl Reported {
    /// `result`, its output clipped to `keep` bytes a stream (marked
    /// truncated), and whether it was. Output a worker sent compressed
    /// is kept as it came once it has been expanded and read as steps
    /// that need no clipping; it may expand to at most `*budget` bytes,
    /// which it then uses up (a report's output expanded is bounded as a
    /// plain one's is). An error names the field and the rule.
    pub fn new(mut result: TargetResult, keep: usize, budget: &mut usize) -> Result<(Self, bool), String> {
        let patch_state = result.patch_state.as_ref().map(prost::Message::encode_to_vec);
        let frame = std::mem::take(&mut result.compressed_steps);
        if !frame.is_empty() {
            if !result.steps.is_empty() {
                return Err("compressed_steps: sent with steps; send the one or the other".into());
            }
            let (steps, size) = muster_proto::expand_steps(&frame, *budget)
                .map_err(|e| format!("compressed_steps: {e} (a zstd frame of StepOutputs that states its size)"))?;
            *budget -= size;
            result.steps = steps;
        }
        let clipped = muster_proto::clip_output(&mut result, keep);
        if !frame.is_empty() && !clipped {
            result.steps = Vec::new();
            return Ok((
                Self {
                    result,
                    output: frame,
                    patch_state,
                },
                false,
            ));
        }
        // Plain, or past keep_bytes: (clipped and) compressed here.
        let output = output::encode(std::mem::take(&mut result.steps));
        Ok((
            Self {
                result,
                output,
                patch_state,
            },
            clipped,
        ))
    }
}

/// `results` as a report brings them, their output whole.
#[cfg(test)]
pub(crate) fn reported(results: &[TargetResult]) -> Vec<Reported> {
    let mut budget = usize::MAX;
    results
        .iter()
        .map(|r| Reported::new(r.clone(), usize::MAX, &mut budget).unwrap().0)
        .collect()
}

/// Writes, one UPDATE per result, those of `results` (index in the report,
/// result) whose targets have none yet. Every one must be a target of the
/// task.
fn write_results_by_row<'r>(
    conn: &dyn Sql,
    task: &TaskRow,
    results: &[(usize, &'r Reported)],
) -> StoreResult<Written<'r>> {
    let ids: Vec<&str> = results.iter().map(|(_, r)| r.result.instance_id.as_str()).collect();
    let current = statuses(conn, task, &ids)?;
    let now = now_ms();
    // Output beyond a line or two goes to a rowid table of its own (see the
    // V16 migration): in `targets`, a WITHOUT ROWID table, a row of 1-4 KiB
    // costs overflow pages of its own.
    let mut keep = conn.prepare_cached("INSERT INTO outputs (steps) VALUES (?1) RETURNING id")?;
    let mut update = conn.prepare_cached(
        "UPDATE targets SET status = ?5, timeout_kind = ?6, exit_code = ?7, reason = ?8,
            command_id = CASE WHEN ?9 = '' THEN command_id ELSE ?9 END,
            ssm_status_details = ?10, steps = ?11, output_id = ?12, started_ms = ?13, finished_ms = ?14,
            patch_state = ?15
         WHERE campaign_id = ?1 AND account_id = ?2 AND region = ?3 AND instance_id = ?4",
    )?;
    let mut written = Vec::with_capacity(results.len());
    for &(
        i,
        Reported {
            result,
            output,
            patch_state,
        },
    ) in results
    {
        let Some(&old) = current.get(&result.instance_id) else {
            return Err(outside_task(
                &format!("results[{i}].instance_id"),
                &result.instance_id,
                task,
            ));
        };
        if terminal(old) {
            continue;
        }
        let (in_row, output_id): (Option<&[u8]>, Option<i64>) = if output.len() > IN_ROW_OUTPUT {
            (None, Some(keep.query_row(params![output], |r| r.get(0))?))
        } else {
            (Some(output), None)
        };
        update.execute(params![
            task.campaign_id,
            task.account_id,
            task.region,
            result.instance_id,
            result.status,
            result.timeout_kind,
            result.exit_code,
            result.reason,
            result.command_id,
            result.ssm_status_details,
            in_row,
            output_id,
            result.started_at.as_ref().map(millis),
            result.finished_at.as_ref().map_or(now, millis),
            patch_state.as_deref()
        ])?;
        written.push((result, old));
    }
    Ok(written)
}

/// The most output (as stored: encoded steps, compressed from 256 bytes)
/// SQLite keeps in a target's row: about a line or two, or a longer log
/// that compressed that far, so that the row stays near a twentieth of a
/// page, where a WITHOUT ROWID table is at its best; more goes to
/// `outputs`. Measured
/// (BENCHMARKS.md, "output per result"): one line is 10% slower through
/// `outputs`, 1 KiB 1.7x faster.
const IN_ROW_OUTPUT: usize = 256;

/// Columns of one result in [`write_results_in_bulk`]' VALUES rows.
const RESULT_COLUMNS: usize = 12;

/// Parameters of [`write_results_in_bulk`]'s statement before its rows.
const BULK_HEAD: usize = 5;

/// [`write_results_in_bulk`]'s statement for `shape` rows (a power of two
/// up to [`ROWS_PER_STATEMENT`]), made once per shape.
fn bulk_statement(shape: usize) -> &'static str {
    static MADE: OnceLock<Vec<String>> = OnceLock::new();
    let made = MADE.get_or_init(|| {
        let types: [&str; RESULT_COLUMNS] = [
            "TEXT", "BIGINT", "BIGINT", "BIGINT", "TEXT", "TEXT", "TEXT", "BYTEA", "BIGINT", "BIGINT", "BIGINT",
            "BYTEA",
        ];
        let finals = final_statuses();
        (0..=ROWS_PER_STATEMENT.trailing_zeros())
            .map(|power| {
                let rows = (0..1_usize << power)
                    .map(|row| format!("({})", typed_placeholders(BULK_HEAD + 1 + row * RESULT_COLUMNS, &types)))
                    .collect::<Vec<_>>()
                    .join(", ");
                // VALUES columns are column1, column2, ...; column11 is 1
                // when the result counts against max_errors, column12 the
                // patch state. `written`
                // returns each target's status before (`before` is the same
                // row, by its ctid), `moved` the counters' changes. The
                // other controllers hear of the results from the same
                // statement (see `results_feed`), when it wrote any:
                // `told` is volatile, so PostgreSQL runs it once, where it
                // is read.
                format!(
                    "WITH written AS (
                       UPDATE targets SET status = v.column2, timeout_kind = v.column3, exit_code = v.column4,
                          reason = v.column5,
                          command_id = CASE WHEN v.column6 = '' THEN targets.command_id ELSE v.column6 END,
                          ssm_status_details = v.column7, steps = v.column8, started_ms = v.column9,
                          finished_ms = v.column10, patch_state = v.column12
                       FROM (VALUES {rows}) AS v, targets AS before
                       WHERE targets.campaign_id = ?1 AND targets.account_id = ?2 AND targets.region = ?3
                         AND targets.instance_id = v.column1 AND before.ctid = targets.ctid
                         AND before.task_id = ?4 AND before.status NOT IN ({finals})
                       RETURNING v.column1 AS instance_id, before.status AS was, targets.status AS now,
                         v.column11 AS error
                     ), moved AS (
                       SELECT status, SUM(delta) AS delta
                         FROM (SELECT was AS status, -1 AS delta FROM written
                               UNION ALL SELECT now, 1 FROM written) AS change
                        GROUP BY status HAVING SUM(delta) <> 0
                     ), counted AS (
                       INSERT INTO counters (campaign_id, account_id, region, status, count)
                       SELECT ?1, ?2, ?3, status, delta FROM moved
                       ON CONFLICT (campaign_id, account_id, region, status)
                       DO UPDATE SET count = counters.count + excluded.count
                     ), errors AS (
                       UPDATE campaigns SET errors = campaigns.errors + e.n
                         FROM (SELECT COUNT(*) AS n FROM written WHERE error = 1) AS e
                        WHERE campaigns.id = ?1 AND e.n > 0
                     ), told AS (
                       SELECT pg_notify('{channel}', CAST(?5 AS TEXT)) WHERE EXISTS (SELECT 1 FROM written)
                     )
                     SELECT written.instance_id, written.was FROM written LEFT JOIN told ON TRUE",
                    channel = super::results_feed::CHANNEL
                )
            })
            .collect()
    });
    &made[shape.trailing_zeros() as usize]
}

/// Writes those of `results` (index in the report, result) whose targets
/// have none yet, as [`write_results_by_row`] does, and moves the counters
/// and the campaign's errors, in one statement per [`ROWS_PER_STATEMENT`]
/// results: over the network, round trips cost more than the joins. A
/// report that only adds results is one round trip; only one with
/// duplicates or strangers reads their statuses after, to tell which.
fn write_results_in_bulk<'r>(
    conn: &dyn Sql,
    task: &TaskRow,
    results: &[(usize, &'r Reported)],
) -> StoreResult<Written<'r>> {
    let now = now_ms();
    let mut before: HashMap<String, i32> = HashMap::with_capacity(results.len());
    for piece in pieces(results.len(), ROWS_PER_STATEMENT) {
        let ids = piece.rows.clone().map(|i| results[i].1.result.instance_id.as_str());
        let payload = super::results_feed::payload(task, ids);
        let mut args: Vec<Value<'_>> = Vec::with_capacity(BULK_HEAD + piece.shape * RESULT_COLUMNS);
        args.extend([
            task.campaign_id.to_value(),
            task.account_id.to_value(),
            task.region.to_value(),
            task.id.to_value(),
            Value::Text(&payload),
        ]);
        for &(
            _,
            Reported {
                result,
                output,
                patch_state,
            },
        ) in &results[piece.rows.clone()]
        {
            let opt = |v: Option<i64>| v.map_or(Value::Null, Value::Int);
            args.extend([
                result.instance_id.to_value(),
                Value::Int(i64::from(result.status)),
                Value::Int(i64::from(result.timeout_kind)),
                opt(result.exit_code.map(i64::from)),
                result.reason.to_value(),
                result.command_id.to_value(),
                result.ssm_status_details.to_value(),
                Value::Blob(output),
                opt(result.started_at.as_ref().map(millis)),
                Value::Int(result.finished_at.as_ref().map_or(now, millis)),
                Value::Int(i64::from(counts_as_error(result))),
                patch_state.as_deref().map_or(Value::Null, Value::Blob),
            ]);
        }
        // Rows past the piece's match no target.
        args.resize(BULK_HEAD + piece.shape * RESULT_COLUMNS, Value::Null);
        for row in conn.query_values(bulk_statement(piece.shape), &args)? {
            match (row.first(), row.get(1)) {
                (Some(Datum::Text(id)), Some(&Datum::Int(status))) => {
                    before.insert(id.clone(), status as i32);
                }
                other => return Err(StoreError::Corrupt(format!("a written result reads as {other:?}"))),
            }
        }
    }
    if before.len() < results.len() {
        let missed: Vec<(usize, &TargetResult)> = results
            .iter()
            .filter(|(_, r)| !before.contains_key(&r.result.instance_id))
            .map(|&(i, r)| (i, &r.result))
            .collect();
        refuse_strangers(conn, task, &missed)?;
    }
    Ok(results
        .iter()
        .filter_map(|&(_, Reported { result, .. })| before.get(&result.instance_id).map(|&old| (result, old)))
        .collect())
}

/// Of results (index in the report, result) a bulk write passed over, an
/// error for the first that is not a target of the task; the others are
/// duplicates.
fn refuse_strangers(conn: &dyn Sql, task: &TaskRow, missed: &[(usize, &TargetResult)]) -> StoreResult<()> {
    let ids: Vec<&str> = missed.iter().map(|(_, r)| r.instance_id.as_str()).collect();
    let found = statuses(conn, task, &ids)?;
    for &(i, result) in missed {
        match found.get(&result.instance_id) {
            None => {
                return Err(outside_task(
                    &format!("results[{i}].instance_id"),
                    &result.instance_id,
                    task,
                ));
            }
            Some(&status) if !terminal(status) => {
                return Err(StoreError::Corrupt(format!(
                    "task {}: {} has no result yet its result matched no row",
                    task.id, result.instance_id
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The final target statuses, as SQL's list.
fn final_statuses() -> String {
    (0..=i32::from(u8::MAX))
        .filter(|&n| terminal(n))
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::campaigns;
    use crate::store::targets::{TargetFilter, list, record_dispatch};
    use crate::store::testing::store_matrix;

    /// Campaign c1 with `instances` targets in one scope, i-1 to i-4 of
    /// them in an Execute task whose command went out.
    fn dispatched(conn: &dyn Sql, instances: usize) -> TaskRow {
        use muster_proto::v1::Platform;
        let scope = ("111111111111", "us-east-1");
        crate::store::testing::pending_campaign(conn, scope, instances);
        let campaign = campaigns::get(conn, "c1").unwrap().unwrap();
        let batch: Vec<String> = ["i-1", "i-2", "i-3", "i-4"].map(String::from).into();
        let task_id =
            crate::store::tasks::create_execute(conn, &campaign, scope.0, scope.1, Platform::Linux, &batch, 3).unwrap();
        let task = crate::store::tasks::get(conn, &task_id).unwrap().unwrap();
        record_dispatch(conn, &task, ("cmd-1", 0), &batch, Some(1), false).unwrap();
        task
    }

    #[test]
    fn compressed_output_is_kept_as_sent_unless_it_passes_keep_bytes_and_then_it_is_clipped_and_said_so() {
        use muster_proto::v1::{StepOutput, TargetResult};
        let sent = |stdout: String| {
            let mut result = TargetResult {
                instance_id: "i-1".into(),
                steps: vec![StepOutput {
                    stdout,
                    ..Default::default()
                }],
                ..Default::default()
            };
            muster_proto::compress_result(&mut result);
            assert!(!result.compressed_steps.is_empty());
            result
        };
        let log: String = (0..40).map(|i| format!("Installed: bash-5.2.{i}\n")).collect();
        let mut budget = muster_proto::MAX_REPORT_BYTES;
        let within = sent(log.clone());
        let (kept, clipped) = Reported::new(within.clone(), 8192, &mut budget).unwrap();
        assert!(!clipped);
        assert_eq!(kept.output, within.compressed_steps, "the frame as it came");
        assert!(budget < muster_proto::MAX_REPORT_BYTES, "its expanded size is used up");

        let (cut, clipped) = Reported::new(sent(log.clone()), 100, &mut budget).unwrap();
        assert!(clipped, "the store clipped it, and the caller warns");
        let steps = output::decode(&cut.output);
        assert_eq!(
            (steps[0].stdout.as_str(), steps[0].stdout_truncated),
            (&log[..100], true)
        );

        // A budget smaller than the log: what is left of the report's.
        let mut left = log.len() - 1;
        let error = Reported::new(sent(log), 8192, &mut left).unwrap_err();
        assert!(error.starts_with("compressed_steps: the frame holds"), "{error}");
    }

    store_matrix! {
        fn a_report_writes_each_instance_once_and_a_stranger_undoes_it(conn) {
            use muster_proto::v1::TargetResult;
            let task = dispatched(&conn, 5);
            let task_id = task.id.clone();
            let result = |id: &str, status: TargetStatus, timeout: TimeoutKind| TargetResult {
                instance_id: id.into(),
                status: status as i32,
                timeout_kind: timeout as i32,
                reason: format!("{} {}", id, status.short_name()),
                command_id: "cmd-1".into(),
                ..Default::default()
            };
            let none = TimeoutKind::Unspecified;
            // As the writer runs a report: in a savepoint of its
            // transaction, undone on error.
            conn.execute_batch("BEGIN").unwrap();
            let report = |conn: &dyn Sql, results: &[TargetResult]| {
                conn.execute_batch("SAVEPOINT report").unwrap();
                let outcome = super::results(conn, &task, &reported(results));
                conn.execute_batch(if outcome.is_ok() {
                    "RELEASE SAVEPOINT report"
                } else {
                    "ROLLBACK TO SAVEPOINT report; RELEASE SAVEPOINT report"
                })
                .unwrap();
                outcome
            };

            let first = report(
                &conn,
                &[
                    result("i-1", TargetStatus::Success, none),
                    result("i-2", TargetStatus::Failed, none),
                    result("i-1", TargetStatus::Failed, none),
                ],
            )
            .unwrap();
            assert_eq!((first.accepted(), first.duplicates, first.errors), (2, 1, 1));
            assert_eq!(first.written, ["i-1", "i-2"], "the first result of i-1 is the one written");

            let stranger = report(
                &conn,
                &[result("i-3", TargetStatus::Success, none), result("i-5", TargetStatus::Success, none)],
            )
            .unwrap_err();
            assert!(
                matches!(&stranger, StoreError::Denied { rule: "task_scope", message }
                    if message.starts_with(&format!("results[1].instance_id: i-5 is not a target of task {task_id}"))),
                "{stranger:?}"
            );

            let unfinished = report(
                &conn,
                &[result("i-3", TargetStatus::Success, none), result("i-4", TargetStatus::Running, none)],
            )
            .unwrap_err();
            assert!(
                matches!(&unfinished, StoreError::Corrupt(message)
                    if message == "results[1].status: running is not a final status"),
                "{unfinished:?}"
            );

            let third = report(
                &conn,
                &[
                    result("i-4", TargetStatus::TimedOut, TimeoutKind::Execution),
                    result("i-2", TargetStatus::Success, none),
                    result("i-3", TargetStatus::Success, none),
                ],
            )
            .unwrap();
            assert_eq!((third.accepted(), third.duplicates, third.errors), (2, 1, 1));
            assert_eq!(third.written, ["i-4", "i-3"], "what watchers hear: the written ones");
            conn.execute_batch("COMMIT").unwrap();

            let mut all = list(&conn, "c1", &TargetFilter::default(), 10, None, false).unwrap().0;
            all.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
            let shown: Vec<(&str, i32, &str)> =
                all.iter().map(|t| (t.instance_id.as_str(), t.status, t.reason.as_str())).collect();
            assert_eq!(
                shown,
                [
                    ("i-1", TargetStatus::Success as i32, "i-1 success"),
                    ("i-2", TargetStatus::Failed as i32, "i-2 failed"),
                    ("i-3", TargetStatus::Success as i32, "i-3 success"),
                    ("i-4", TargetStatus::TimedOut as i32, "i-4 timed_out"),
                    ("i-5", TargetStatus::Pending as i32, ""),
                ],
                "the first result of each stands; the refused report changed nothing"
            );
            let totals = campaigns::totals(&conn, "c1").unwrap();
            assert_eq!(
                (totals.pending, totals.running, totals.success, totals.failed, totals.timed_out),
                (1, 0, 2, 1, 1),
                "the counters add up to the rows"
            );
            assert_eq!(campaigns::get(&conn, "c1").unwrap().unwrap().errors, 2);
        }

        fn a_result_keeps_its_patch_state_and_a_duplicate_changes_it_not(conn) {
            use muster_proto::v1::PatchState;
            assert_eq!(crate::store::campaigns::patch_counters(&conn, "c1").unwrap(), None);
            let task = dispatched(&conn, 4);
            let state = |missing: u32| PatchState {
                operation: "Install".into(),
                installed: 45,
                installed_pending_reboot: 3,
                missing,
                critical_non_compliant: 1,
                security_non_compliant: 3 + missing,
                reboot_option: "NoReboot".into(),
                baseline_id: "pb-0c10e65780EXAMPLE".into(),
                ..Default::default()
            };
            let result = |id: &str, patch_state: Option<PatchState>| TargetResult {
                instance_id: id.into(),
                status: TargetStatus::Success as i32,
                exit_code: Some(0),
                patch_state,
                ..Default::default()
            };
            // Results of both engines' statement shapes: one, and many.
            let written = super::results(&conn, &task, &reported(&[result("i-1", Some(state(0))), result("i-2", None)])).unwrap();
            assert_eq!(written.written, ["i-1", "i-2"]);
            let again = super::results(&conn, &task, &reported(&[result("i-1", Some(state(9))), result("i-3", Some(state(1)))])).unwrap();
            assert_eq!((again.written.len(), again.duplicates), (1, 1));
            let listed: Vec<(String, Option<PatchState>)> = list(&conn, "c1", &TargetFilter::default(), 10, None, false)
                .unwrap()
                .0
                .into_iter()
                .map(|t| (t.instance_id, t.patch_state))
                .collect();
            assert_eq!(
                listed,
                [
                    ("i-1".to_owned(), Some(state(0))),
                    ("i-2".to_owned(), None),
                    ("i-3".to_owned(), Some(state(1))),
                    ("i-4".to_owned(), None),
                ],
                "each target keeps its first result's patch state, read without its output"
            );
            assert_eq!(
                crate::store::campaigns::patch_counters(&conn, "c1").unwrap(),
                Some(PatchCounters {
                    reported: 2,
                    compliant: 0,
                    missing_targets: 1,
                    missing_patches: 1,
                    pending_reboot_targets: 2,
                    pending_reboot_patches: 6,
                    critical_targets: 2,
                    critical_patches: 2,
                    security_targets: 2,
                    security_patches: 7,
                    ..Default::default()
                }),
                "the duplicate counted once, and the result without a state not at all"
            );
        }

        fn a_result_keeps_its_output_wherever_it_lives_and_a_listing_without_it_reads_none(conn) {
            use muster_proto::v1::StepOutput;
            use crate::store::targets::find_instance;
            let task = dispatched(&conn, 4);
            let step = |stdout: &str| StepOutput {
                name: "aws:runShellScript".into(),
                status: "Success".into(),
                exit_code: Some(0),
                stdout: stdout.into(),
                ..Default::default()
            };
            // A patch run's log: lines that differ, as package versions
            // do, so that it is still long compressed.
            let log: String = (1..=80_u64)
                .map(|i| format!("Updated: pkg-{i}-{:016x}.amzn2023\n", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
                .collect();
            let patched = step(&log);
            let written = super::results(
                &conn,
                &task,
                &reported(&[
                    TargetResult {
                        instance_id: "i-1".into(),
                        status: TargetStatus::Success as i32,
                        steps: vec![patched.clone()],
                        ..Default::default()
                    },
                    TargetResult {
                        instance_id: "i-2".into(),
                        status: TargetStatus::Success as i32,
                        steps: vec![step("up to date\n")],
                        ..Default::default()
                    },
                ]),
            )
            .unwrap();
            assert_eq!(written.written, ["i-1", "i-2"]);
            // Where other builds left output: a row written before V16 keeps
            // it in place; one copied from a SQLite store points into
            // `outputs`.
            let encoded = |stdout: &str| super::output::encode(vec![step(stdout)]);
            conn.execute(
                "UPDATE targets SET status = 2, steps = ?1 WHERE campaign_id = 'c1' AND instance_id = 'i-3'",
                params![encoded("in place")],
            )
            .unwrap();
            let copied: i64 = conn
                .query_row("INSERT INTO outputs (steps) VALUES (?1) RETURNING id", params![encoded("copied")], |r| r.get(0))
                .unwrap();
            conn.execute(
                "UPDATE targets SET status = 2, output_id = ?1 WHERE campaign_id = 'c1' AND instance_id = 'i-4'",
                params![copied],
            )
            .unwrap();

            let stdouts = |with_output: bool| -> Vec<(String, Vec<String>)> {
                list(&conn, "c1", &TargetFilter::default(), 10, None, with_output)
                    .unwrap()
                    .0
                    .into_iter()
                    .map(|t| (t.instance_id, t.steps.into_iter().map(|s| s.stdout).collect()))
                    .collect()
            };
            assert_eq!(
                stdouts(true),
                [
                    ("i-1".to_owned(), vec![patched.stdout.clone()]),
                    ("i-2".to_owned(), vec!["up to date\n".to_owned()]),
                    ("i-3".to_owned(), vec!["in place".to_owned()]),
                    ("i-4".to_owned(), vec!["copied".to_owned()]),
                ]
            );
            assert!(stdouts(false).iter().all(|(_, steps)| steps.is_empty()), "{:?}", stdouts(false));
            assert_eq!(find_instance(&conn, "c1", "i-1").unwrap()[0].steps, [patched]);

            // SQLite writes long output out of the row (a WITHOUT ROWID
            // table's large rows cost overflow pages) and a line in it;
            // PostgreSQL all in it (TOAST).
            let out_of_row: Vec<String> = conn
                .query_values(
                    "SELECT instance_id FROM targets WHERE campaign_id = 'c1' AND instance_id IN ('i-1', 'i-2') \
                     AND steps IS NULL AND output_id IS NOT NULL",
                    &[],
                )
                .unwrap()
                .into_iter()
                .map(|row| format!("{:?}", row[0]))
                .collect();
            let outputs: i64 = conn.query_row("SELECT COUNT(*) FROM outputs", (), |r| r.get(0)).unwrap();
            // Kept compressed, wherever it is.
            let kept: i64 = conn
                .query_row(
                    "SELECT LENGTH(COALESCE(steps, (SELECT outputs.steps FROM outputs WHERE outputs.id = output_id))) \
                     FROM targets WHERE campaign_id = 'c1' AND instance_id = 'i-1'",
                    (),
                    |r| r.get(0),
                )
                .unwrap();
            assert!(kept > 256 && (kept as usize) < log.len() / 2, "{} bytes kept as {kept}", log.len());
            match conn.engine() {
                Engine::Sqlite => assert_eq!((out_of_row, outputs), (vec![r#"Text("i-1")"#.to_owned()], 2)),
                Engine::Postgres => assert_eq!((out_of_row, outputs), (vec![], 1), "i-4's only"),
            }
        }
    }
}
