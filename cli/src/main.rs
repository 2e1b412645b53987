//! `muster`: see `muster --help`.
//!
//! Exit codes: 0 the command worked (a watched campaign succeeded); 1 bad
//! input or the controller could not be reached or refused; 2 the campaign
//! completed with errors; 3 it failed (error threshold); 4 it was cancelled;
//! 64 the command line itself is wrong (EX_USAGE: an unknown flag, a
//! missing argument), never confused with a campaign's outcome.

use clap::{CommandFactory, FromArgMatches};
use muster_cli::args::{Cli, Command};
use muster_cli::commands::{self, Failure};
use muster_cli::config;
use muster_cli::connect;
use muster_cli::render::Style;
use muster_cli::schedule;
use muster_cli::watch;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    exit_quietly_on_broken_pipe();
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches).map(|cli| (cli, matches)));
    let (mut cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => {
            // --help and --version are answers, not errors.
            let code = if error.use_stderr() { USAGE } else { 0 };
            let _ = error.print();
            std::process::exit(code);
        }
    };
    match &cli.command {
        Command::Config(args) => {
            if let Err(error) = config::run(&cli, &matches, &args.command) {
                eprintln!("muster: {error:#}");
                std::process::exit(1);
            }
            return;
        }
        Command::Completions(args) => {
            clap_complete::generate(args.shell, &mut Cli::command(), "muster", &mut std::io::stdout());
            return;
        }
        Command::Man => {
            if let Err(error) = clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                eprintln!("muster: cannot write the man page: {error}");
                std::process::exit(1);
            }
            return;
        }
        _ => {}
    }
    if let Err(error) =
        config::one_sign_in(&mut cli, &matches).and_then(|()| config::layer(&mut cli, &matches).map(|_| ()))
    {
        eprintln!("muster: {error:#}");
        std::process::exit(1);
    }
    let style = Style::detect(cli.color);
    let code = match run(&cli, style).await {
        Ok(code) => code,
        Err(Failure::Input(message)) => {
            eprintln!("muster: {message}");
            1
        }
        Err(Failure::Controller(status)) => {
            eprintln!("muster: {}", connect::explain(&cli.controller, &status));
            1
        }
        Err(Failure::Refused(lines)) => {
            match lines.as_slice() {
                [line] => eprintln!("muster: refused: {line}"),
                _ => eprintln!("muster: refused, {} problems:\n  {}", lines.len(), lines.join("\n  ")),
            }
            1
        }
    };
    std::process::exit(code);
}

/// The exit code of a wrong command line (sysexits.h EX_USAGE).
const USAGE: i32 = 64;

/// `muster results ... | head` closes the pipe early; that is not an error
/// worth a panic message. Exit as a process killed by SIGPIPE would.
fn exit_quietly_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

async fn run(cli: &Cli, style: Style) -> Result<i32, Failure> {
    let target = cli.target().map_err(|e| Failure::Input(e.to_string()))?;
    let (mut client, mut schedules) = connect::client(&target)
        .await
        .map_err(|e| Failure::Input(e.to_string()))?;
    match &cli.command {
        Command::Submit(args) => {
            let id = commands::submit(&mut client, &args.spec, style, cli.output).await?;
            if args.watch {
                let how = watch::Follow {
                    quiet: false,
                    until_decision: args.until_decision,
                };
                return Ok(watch::watch(&mut client, &id, style, cli.output, how).await?);
            }
            Ok(0)
        }
        Command::Plan(args) => commands::plan(&mut client, args, style, cli.output).await,
        Command::Watch(args) => {
            let how = watch::Follow {
                quiet: args.quiet,
                until_decision: args.until_decision,
            };
            Ok(watch::watch(&mut client, &args.campaign_id, style, cli.output, how).await?)
        }
        Command::Ls(args) => commands::ls(&mut client, args, style, cli.output).await.map(|()| 0),
        Command::Show(args) => commands::show(&mut client, &args.campaign_id, style, cli.output)
            .await
            .map(|()| 0),
        Command::Results(args) => commands::results(&mut client, args, style, cli.output)
            .await
            .map(|()| 0),
        Command::Cancel(args) => commands::cancel(&mut client, &args.campaign_id, &args.reason, style, cli.output)
            .await
            .map(|()| 0),
        Command::Rerun(args) => {
            let id = commands::rerun(&mut client, args, style, cli.output).await?;
            if args.watch {
                let how = watch::Follow {
                    quiet: false,
                    until_decision: args.until_decision,
                };
                return Ok(watch::watch(&mut client, &id, style, cli.output, how).await?);
            }
            Ok(0)
        }
        Command::Promote(args) => commands::decide(&mut client, args, false, style, cli.output)
            .await
            .map(|()| 0),
        Command::Resume(args) => commands::decide(&mut client, args, true, style, cli.output)
            .await
            .map(|()| 0),
        Command::Approve(args) => commands::approval(&mut client, args, true, style, cli.output)
            .await
            .map(|()| 0),
        Command::Reject(args) => commands::approval(&mut client, args, false, style, cli.output)
            .await
            .map(|()| 0),
        Command::Audit(args) => commands::audit(&mut client, args, style, cli.output).await.map(|()| 0),
        Command::Schedule(args) => schedule::run(&mut schedules, &args.command, style, cli.output).await,
        Command::Whoami => commands::whoami(&mut client, style, cli.output).await.map(|()| 0),
        Command::Console(args) => commands::console(&mut client, &target, args, cli.output)
            .await
            .map(|()| 0),
        // Answered before connecting.
        Command::Completions(_) | Command::Man | Command::Config(_) => Ok(0),
    }
}
