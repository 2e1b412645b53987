//! `muster schedule`: saved campaigns on a schedule.

use comfy_table::Cell;
use muster_proto::v1::{
    AfterWindow, DeleteScheduleRequest, GetScheduleRequest, GetScheduleResponse, ListSchedulesRequest,
    ListSchedulesResponse, PutScheduleRequest, RunOutcome, Schedule, ScheduleRun, ScheduleSpec, WindowEnd,
};

use crate::args::{AfterWindowArg, Output, PutScheduleArgs, ScheduleCommand, WindowEndArg};
use crate::commands::{Failure, ask_until_answered, timed};
use crate::connect::Schedules;
use crate::refusal::Written;
use crate::render::{self, Style};

/// Runs one `muster schedule` subcommand; its exit code.
pub async fn run(
    client: &mut Schedules,
    command: &ScheduleCommand,
    style: Style,
    output: Output,
) -> Result<i32, Failure> {
    match command {
        ScheduleCommand::Create(args) => put(client, args, false, style, output).await,
        ScheduleCommand::Update(args) => put(client, args, true, style, output).await,
        ScheduleCommand::Ls => ls(client, style, output).await,
        ScheduleCommand::Show(args) => {
            let answer = client
                .get_schedule(GetScheduleRequest {
                    name: args.schedule.clone(),
                    version: args.version,
                    runs: args.runs,
                })
                .await?
                .into_inner();
            let schedule = answer.schedule.unwrap_or_default();
            print_schedule(&schedule, &answer.runs, style, output);
            Ok(0)
        }
        ScheduleCommand::Pause(args) => set_paused(client, &args.schedule, true, style, output).await,
        ScheduleCommand::Resume(args) => set_paused(client, &args.schedule, false, style, output).await,
        ScheduleCommand::Rm(args) => {
            // Asked again after a lost answer, the schedule may be gone by
            // our own first try: that is no error then.
            let mut first = true;
            let answer = ask_until_answered(|| {
                let mut client = client.clone();
                let request = DeleteScheduleRequest {
                    name: args.schedule.clone(),
                    allow_missing: !std::mem::take(&mut first),
                };
                async move { client.delete_schedule(timed(request)).await }
            })
            .await?;
            match output {
                Output::Json | Output::Yaml => render::print_message(&answer, output),
                _ if !answer.deleted => println!(
                    "deleted schedule {} (it was gone when asked again: the first try's answer was lost)",
                    args.schedule
                ),
                _ if answer.cancelled_campaign_id.is_empty() => println!("deleted schedule {}", args.schedule),
                _ => println!(
                    "deleted schedule {}; its campaign {} that waited for the next window is cancelled",
                    args.schedule, answer.cancelled_campaign_id
                ),
            }
            Ok(0)
        }
    }
}

/// The schedule the flags describe.
fn spec_of(args: &PutScheduleArgs) -> Result<(ScheduleSpec, Written), Failure> {
    let (campaign, written) = crate::refusal::written(&args.spec)?;
    let at = args
        .at
        .as_deref()
        .map(|text| {
            chrono::DateTime::parse_from_rfc3339(text)
                .map(|t| prost_types::Timestamp {
                    seconds: t.timestamp(),
                    nanos: t.timestamp_subsec_nanos() as i32,
                })
                .map_err(|e| Failure::Input(format!("--at: '{text}' is not an RFC 3339 time ({e})")))
        })
        .transpose()?;
    let window_seconds = match args.window {
        None => 0,
        Some(window) => u32::try_from(window.as_secs())
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| Failure::Input(format!("--window: {window}; between 1s and 7d")))?,
    };
    let spec = ScheduleSpec {
        name: args.schedule.clone(),
        description: args.description.clone(),
        campaign: Some(campaign),
        cron: args.cron.clone().unwrap_or_default(),
        at,
        time_zone: args.time_zone.clone().unwrap_or_default(),
        window_seconds,
        on_window_end: match args.on_window_end {
            None => WindowEnd::Unspecified,
            Some(WindowEndArg::Finish) => WindowEnd::Finish,
            Some(WindowEndArg::Cancel) => WindowEnd::Cancel,
        } as i32,
        after_window: match args.after_window {
            None => AfterWindow::Unspecified,
            Some(AfterWindowArg::End) => AfterWindow::End,
            Some(AfterWindowArg::NextWindow) => AfterWindow::NextWindow,
        } as i32,
        // Kept from the current version by `update`; `pause` and `resume`
        // change it.
        paused: false,
    };
    Ok((spec, written))
}

/// A schedule's own field in a refusal (`spec.cron`), as the flag that sets
/// it; its campaign's fields are said by [`Written`].
fn schedule_flag(field: &str) -> Option<String> {
    let flag = match field.strip_prefix("spec.")? {
        "name" => "the schedule's name",
        "description" => "--description",
        "cron" => "--cron",
        "time_zone" => "--tz",
        "at" => "--at",
        "window_seconds" => "--window",
        "on_window_end" => "--on-window-end",
        "after_window" => "--after-window",
        _ => return None,
    };
    Some(flag.to_owned())
}

/// `create` (a new schedule) or `update` (its next version, over the one
/// read just before).
async fn put(
    client: &mut Schedules,
    args: &PutScheduleArgs,
    update: bool,
    style: Style,
    output: Output,
) -> Result<i32, Failure> {
    let (mut spec, written) = spec_of(args)?;
    let expected_version = if update {
        let current = current(client, &spec.name).await?;
        // A paused schedule stays paused through an update: only `resume`
        // ends a change freeze.
        spec.paused = current.spec.is_some_and(|s| s.paused);
        current.version
    } else {
        0
    };
    // The controller recognises the same put asked again after a lost
    // answer, and answers with the version it stored.
    let request = PutScheduleRequest {
        spec: Some(spec),
        expected_version,
    };
    let schedule = ask_until_answered(|| {
        let mut client = client.clone();
        let request = request.clone();
        async move { client.put_schedule(timed(request)).await }
    })
    .await
    .map_err(|failure| failure.said_as(&written, "spec.campaign.", schedule_flag))?
    .schedule
    .unwrap_or_default();
    match output {
        Output::Json | Output::Yaml => render::print_message(&schedule, output),
        _ => println!(
            "{} schedule {} version {}; next run {}{}",
            style.bold(if update { "updated" } else { "created" }),
            args.schedule,
            schedule.version,
            next_run(&schedule),
            if schedule.spec.as_ref().is_some_and(|s| s.paused) {
                format!(" (still paused: `muster schedule resume {}` ends it)", args.schedule)
            } else {
                String::new()
            }
        ),
    }
    Ok(0)
}

/// The current version of schedule `name`.
async fn current(client: &mut Schedules, name: &str) -> Result<Schedule, Failure> {
    Ok(client
        .get_schedule(GetScheduleRequest {
            name: name.to_owned(),
            version: 0,
            runs: 1,
        })
        .await?
        .into_inner()
        .schedule
        .unwrap_or_default())
}

/// `pause` or `resume`: the current version again, paused or not, stored
/// as the next one.
async fn set_paused(
    client: &mut Schedules,
    name: &str,
    paused: bool,
    style: Style,
    output: Output,
) -> Result<i32, Failure> {
    let current = current(client, name).await?;
    let mut spec = current.spec.clone().unwrap_or_default();
    let schedule = if spec.paused == paused {
        current
    } else {
        spec.paused = paused;
        // The same put asked again after a lost answer is recognised and
        // answered with the version it stored.
        let request = PutScheduleRequest {
            spec: Some(spec),
            expected_version: current.version,
        };
        ask_until_answered(|| {
            let mut client = client.clone();
            let request = request.clone();
            async move { client.put_schedule(timed(request)).await }
        })
        .await?
        .schedule
        .unwrap_or_default()
    };
    match output {
        Output::Json | Output::Yaml => render::print_message(&schedule, output),
        _ if paused => println!(
            "{} schedule {name} (version {}): its run times start nothing until `muster schedule resume {name}`; \
             next run time {}",
            style.bold("paused"),
            schedule.version,
            next_run(&schedule)
        ),
        _ => println!(
            "{} schedule {name} (version {}); next run {}",
            style.bold("resumed"),
            schedule.version,
            next_run(&schedule)
        ),
    }
    Ok(0)
}

async fn ls(client: &mut Schedules, style: Style, output: Output) -> Result<i32, Failure> {
    let schedules = client
        .list_schedules(ListSchedulesRequest {})
        .await?
        .into_inner()
        .schedules;
    match output {
        Output::Json | Output::Yaml => render::print_message(&ListSchedulesResponse { schedules }, output),
        Output::Csv => render::print_csv(
            &[
                "name",
                "version",
                "when",
                "window_seconds",
                "next_run",
                "paused",
                "last_run",
                "last_outcome",
                "last_campaign_id",
                "owner",
            ],
            schedules.iter().map(|s| {
                let spec = s.spec.clone().unwrap_or_default();
                let last = s.last_run.clone().unwrap_or_default();
                vec![
                    spec.name.clone(),
                    s.version.to_string(),
                    when(&spec),
                    spec.window_seconds.to_string(),
                    render::time(&s.next_run_at),
                    spec.paused.to_string(),
                    render::time(&last.scheduled_at),
                    outcome_name(last.outcome),
                    last.campaign_id,
                    s.created_by.clone(),
                ]
            }),
        ),
        Output::Table | Output::Wide => {
            if schedules.is_empty() {
                println!("no schedules");
                return Ok(0);
            }
            let mut table = style.table(&["name", "version", "when", "window", "next run", "last run", "owner"]);
            for s in &schedules {
                let spec = s.spec.clone().unwrap_or_default();
                table.add_row(vec![
                    Cell::new(&spec.name),
                    Cell::new(s.version),
                    Cell::new(when(&spec)),
                    Cell::new(spec.window_in_words()),
                    Cell::new(if spec.paused {
                        format!("{} (paused)", next_run(s))
                    } else {
                        next_run(s)
                    }),
                    Cell::new(s.last_run.as_ref().map(run_line).unwrap_or_default()),
                    Cell::new(&s.created_by),
                ]);
            }
            println!("{table}");
        }
    }
    Ok(0)
}

fn print_schedule(schedule: &Schedule, runs: &[ScheduleRun], style: Style, output: Output) {
    let spec = schedule.spec.clone().unwrap_or_default();
    match output {
        Output::Json | Output::Yaml => {
            return render::print_message(
                &GetScheduleResponse {
                    schedule: Some(schedule.clone()),
                    runs: runs.to_vec(),
                },
                output,
            );
        }
        Output::Csv => {
            return render::print_csv(
                &["scheduled_at", "outcome", "campaign_id", "version", "reason"],
                runs.iter().map(|run| {
                    vec![
                        render::time(&run.scheduled_at),
                        outcome_name(run.outcome),
                        run.campaign_id.clone(),
                        run.version.to_string(),
                        run.reason.clone(),
                    ]
                }),
            );
        }
        Output::Table | Output::Wide => {}
    }
    let campaign = spec.campaign.clone().unwrap_or_default();
    println!("{} {}", style.bold("schedule"), spec.name);
    if schedule.version == schedule.current_version {
        println!(
            "  version   {} by {} at {}",
            schedule.version,
            schedule.created_by,
            render::time(&schedule.created_at)
        );
    } else {
        println!(
            "  version   {} (not the current one, {}) by {} at {}",
            schedule.version,
            schedule.current_version,
            schedule.created_by,
            render::time(&schedule.created_at)
        );
    }
    println!("  runs      {}", when(&spec));
    if spec.paused {
        println!(
            "  paused    yes: run times start nothing until `muster schedule resume {}`",
            spec.name
        );
    }
    println!("  window    {}", spec.window_in_words());
    println!("  next run  {}", next_run(schedule));
    println!(
        "  campaign  {}",
        if campaign.name.is_empty() {
            "(unnamed)"
        } else {
            &campaign.name
        }
    );
    if let Some(command) = &campaign.command {
        println!("  command   {}", crate::render::command_line(command));
    }
    for then in &campaign.then {
        println!("  then      {}", crate::render::command_line(then));
    }
    if !campaign.stages.is_empty() {
        let names: Vec<&str> = campaign.stages.iter().map(|s| s.name.as_str()).collect();
        println!("  stages    {}", names.join(", "));
    }
    if !spec.description.is_empty() {
        println!("  about     {}", spec.description);
    }
    if runs.is_empty() {
        println!("\nno runs yet");
        return;
    }
    let mut table = style.table(&["run time", "outcome", "campaign", "version", "why"]);
    for run in runs {
        table.add_row(vec![
            Cell::new(render::time(&run.scheduled_at)),
            Cell::new(outcome_name(run.outcome)),
            Cell::new(&run.campaign_id),
            Cell::new(run.version),
            Cell::new(&run.reason),
        ]);
    }
    println!("\n{table}");
}

/// When the runs start, for people.
fn when(spec: &ScheduleSpec) -> String {
    spec.runs_in_words(|at| render::time(&at.cloned()))
}

fn next_run(schedule: &Schedule) -> String {
    if schedule.next_run_at.is_none() {
        "none".into()
    } else {
        render::time(&schedule.next_run_at)
    }
}

fn run_line(run: &ScheduleRun) -> String {
    format!("{} {}", render::time(&run.scheduled_at), outcome_name(run.outcome))
}

fn outcome_name(outcome: i32) -> String {
    RunOutcome::try_from(outcome)
        .unwrap_or_default()
        .short_name()
        .to_owned()
}
