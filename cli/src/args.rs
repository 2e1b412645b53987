//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// muster runs commands on EC2 instances across many AWS accounts and
/// regions through SSM Run Command, from one place.
///
/// Submit a campaign (which instances, what to run, how fast), watch it roll
/// out, and read the results. The controller does the work; this command
/// talks to it.
#[derive(Debug, Parser)]
#[command(name = "muster", version, about, long_about)]
pub struct Cli {
    /// The controller's CampaignService.
    #[arg(
        long,
        global = true,
        env = "MUSTER_CONTROLLER",
        default_value = "http://127.0.0.1:7070"
    )]
    pub controller: String,
    /// Bearer token for CampaignService (`muster-controller new-token` makes
    /// one). Prefer MUSTER_TOKEN or --token-file: flags show in `ps`.
    #[arg(
        long,
        global = true,
        env = "MUSTER_TOKEN",
        hide_env_values = true,
        help_heading = "Security"
    )]
    pub token: Option<String>,
    /// File holding the bearer token.
    #[arg(
        long,
        global = true,
        env = "MUSTER_TOKEN_FILE",
        help_heading = "Security",
        conflicts_with = "token"
    )]
    pub token_file: Option<PathBuf>,
    /// Sign in with your AWS identity (AWS_PROFILE, `aws sso login`,
    /// environment keys, an instance role) instead of a token: a presigned
    /// sts:GetCallerIdentity the controller checks with STS. Any token
    /// given is not sent.
    #[arg(long, global = true, env = "MUSTER_AWS_SIGNIN", help_heading = "Security")]
    pub aws_signin: bool,
    /// The controller's server id for --aws-signin (its --signin-server-id);
    /// by default the host name of --controller.
    #[arg(long, global = true, env = "MUSTER_SERVER_ID", help_heading = "Security")]
    pub server_id: Option<String>,
    /// CA certificate (PEM file or text) the controller's certificate must
    /// chain to; required for an https:// controller.
    #[arg(long, global = true, env = "MUSTER_TLS_CA", help_heading = "Security")]
    pub tls_ca: Option<String>,
    /// Client certificate (PEM) for mTLS instead of a token.
    #[arg(long, global = true, env = "MUSTER_TLS_CERT", help_heading = "Security")]
    pub tls_cert: Option<String>,
    /// Its private key (PEM).
    #[arg(long, global = true, env = "MUSTER_TLS_KEY", help_heading = "Security")]
    pub tls_key: Option<String>,
    /// Name to expect in the controller's certificate when it differs from
    /// the URL's host.
    #[arg(long, global = true, env = "MUSTER_TLS_SERVER_NAME", help_heading = "Security")]
    pub tls_server_name: Option<String>,
    /// The context of the configuration file to use instead of its current
    /// one (`muster config get-contexts` lists them).
    #[arg(long, global = true, env = "MUSTER_CONTEXT")]
    pub context: Option<String>,
    /// How to print results: a table (or a wide one) for people; JSON, YAML
    /// or CSV for scripts.
    #[arg(long, short = 'o', global = true, value_enum, env = "MUSTER_OUTPUT", default_value_t = Output::Table)]
    pub output: Output,
    /// Colour: auto (only on a terminal), always or never.
    #[arg(long, global = true, value_enum, env = "MUSTER_COLOR", default_value_t = Color::Auto)]
    pub color: Color,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// How to reach the controller; reads the token file.
    pub fn target(&self) -> anyhow::Result<crate::connect::Target> {
        let (token, token_field) = match &self.token_file {
            _ if self.aws_signin => (None, "--aws-signin"),
            Some(path) => (
                Some(
                    std::fs::read_to_string(path)
                        .map_err(|e| anyhow::anyhow!("--token-file: cannot read {}: {e}", path.display()))?,
                ),
                "--token-file",
            ),
            None => (self.token.clone(), "--token"),
        };
        Ok(crate::connect::Target {
            url: self.controller.clone(),
            tls: muster_common::tls::ClientTls {
                ca: self.tls_ca.clone(),
                cert: self.tls_cert.clone(),
                key: self.tls_key.clone(),
                server_name: self.tls_server_name.clone(),
            },
            token,
            token_field,
            aws_signin: self.aws_signin.then(|| {
                self.server_id
                    .clone()
                    .unwrap_or_else(|| crate::signin::default_server_id(&self.controller))
            }),
        })
    }
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// Aligned columns, with more of them (times, commands, who).
    Wide,
    /// The controller's answer in proto3's canonical JSON mapping, as
    /// grpcurl and generated clients print it (camelCase names, enums by
    /// name, 64-bit integers as strings), fields at their defaults included.
    Json,
    /// The same document as YAML (`muster show -o yaml` is a campaign file
    /// `muster submit -f` reads back).
    Yaml,
    /// Comma-separated values (RFC 4180) with a header line.
    Csv,
}

impl Output {
    /// A table, narrow or wide: for people.
    pub fn is_table(self) -> bool {
        matches!(self, Self::Table | Self::Wide)
    }
}

/// Colour choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    /// Only when stdout is a terminal and NO_COLOR is unset.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit a campaign; prints its id. With --watch, follows it to the end.
    Submit(SubmitArgs),
    /// Show which instances a campaign would run on, per account and region,
    /// without running anything.
    Plan(SpecArgs),
    /// Follow a campaign live: progress, rate, ETA and errors as they happen,
    /// then a summary. Exits non-zero unless it succeeded.
    Watch(WatchArgs),
    /// List campaigns, newest first.
    Ls(LsArgs),
    /// Show one campaign: state, counters, and each account and region.
    Show(IdArgs),
    /// Results of a campaign's targets, or one target's full output.
    Results(ResultsArgs),
    /// Cancel a campaign: nothing more is released and commands in flight
    /// are cancelled.
    Cancel(CancelArgs),
    /// Run an ended campaign again over exactly its targets that failed
    /// (or ended in the statuses given), as a new campaign linked to it.
    Rerun(RerunArgs),
    /// Let the next stage of a staged campaign start after a stage with a
    /// manual gate ended (approver or admin).
    Promote(DecideArgs),
    /// Go on with a stage that paused on its errors, accepting them
    /// (approver or admin); `muster cancel` aborts instead.
    Resume(DecideArgs),
    /// Approve a campaign that waits for an approval (an approver other
    /// than its submitter): it starts.
    Approve(ApprovalArgs),
    /// Reject a campaign that waits for an approval: it runs nothing.
    Reject(ApprovalArgs),
    /// The audit trail, newest first: who submitted, planned or cancelled
    /// what, whose call was refused, when the policy changed (admins only).
    Audit(AuditArgs),
    /// Saved campaigns that run at a time or on a cron schedule, inside
    /// maintenance windows: create, update, ls, show, pause, resume, rm.
    Schedule(ScheduleArgs),
    /// Who you are to the controller, and your roles with their scopes
    /// (checks a token, a certificate or an AWS sign-in).
    Whoami,
    /// The web console's address (of one campaign, if given), checking
    /// that you can sign in; with --aws-signin also a sign-in token to paste
    /// into its sign-in page (valid five minutes; the session it opens
    /// lasts eight hours).
    Console(ConsoleArgs),
    /// Print a shell completion script: `muster completions bash >
    /// /etc/bash_completion.d/muster`, or `source <(muster completions
    /// zsh)`.
    Completions(CompletionsArgs),
    /// Print the man page (roff): `muster man > muster.1 && man ./muster.1`.
    Man,
    /// Named contexts (a controller, its CA, how to sign in, output) in
    /// ~/.config/muster/config.toml (or MUSTER_CONFIG): flags and their
    /// environment variables override the context in use.
    Config(ConfigArgs),
}

/// `muster config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ConfigCommand,
}

/// `muster config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// List the contexts; the current one is marked `*`.
    GetContexts,
    /// Print the current context's name.
    CurrentContext,
    /// Make a context the current one.
    UseContext(ContextName),
    /// Create or change a context from the flags on this command line
    /// (--controller, --tls-ca, --tls-cert, --tls-key, --token-file,
    /// --aws-signin, --server-id, --tls-server-name, -o, --color); the
    /// first context made becomes the current one. Paths are stored
    /// absolute; a token never is (give --token-file).
    SetContext(ContextName),
    /// Delete a context.
    DeleteContext(ContextName),
    /// Print the configuration file.
    View,
}

/// A context's name.
#[derive(Debug, Args)]
pub struct ContextName {
    /// The context.
    pub name: String,
}

/// `muster completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `muster console`.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// A campaign to open.
    pub campaign_id: Option<String>,
}

/// `muster schedule`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ScheduleCommand,
}

/// `muster schedule ...`.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Save a campaign that runs at a time (--at) or on a cron schedule
    /// (--cron, --tz), optionally inside a maintenance window (--window).
    /// Checked now as `muster submit` checks a campaign.
    Create(PutScheduleArgs),
    /// Store a new version of a schedule (the whole definition again); the
    /// next runs use it, campaigns already started keep theirs.
    Update(PutScheduleArgs),
    /// List schedules with their next run and what came of the last one.
    Ls,
    /// One schedule: its definition, next run, and its latest runs (started,
    /// resumed, missed, skipped, refused).
    Show(ShowScheduleArgs),
    /// Delete a schedule: it starts nothing more; a campaign of it waiting
    /// for its next window is cancelled.
    Rm(ScheduleNameArgs),
    /// Pause a schedule (a change freeze): its run times pass as PAUSED,
    /// starting nothing, until it is resumed. A campaign it already started
    /// runs on. Stored as its next version, with you as its owner.
    Pause(ScheduleNameArgs),
    /// Resume a paused schedule from its next run time. Stored as its next
    /// version, with you as its owner: its runs start as you.
    Resume(ScheduleNameArgs),
}

/// `muster schedule create|update`.
#[derive(Debug, Args)]
pub struct PutScheduleArgs {
    /// The schedule's name: 1 to 64 of letters, digits and _.-.
    pub schedule: String,
    /// The campaign each run starts.
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Cron expression for the run times: five fields (minute hour
    /// day-of-month month day-of-week) or six (seconds first), e.g.
    /// "0 2 * * TUE".
    #[arg(long, conflicts_with = "at")]
    pub cron: Option<String>,
    /// IANA time zone of --cron, e.g. Europe/Berlin (default UTC).
    #[arg(long = "tz", requires = "cron")]
    pub time_zone: Option<String>,
    /// One run instead, at this time (RFC 3339, e.g. 2026-12-08T02:00:00+01:00).
    #[arg(long)]
    pub at: Option<String>,
    /// Maintenance window after each run time, e.g. 4h or 90m: batches are
    /// released only inside it.
    #[arg(long)]
    pub window: Option<humantime::Duration>,
    /// At the window's end, batches in flight finish (default) or are
    /// cancelled.
    #[arg(long, value_enum, requires = "window")]
    pub on_window_end: Option<WindowEndArg>,
    /// At the window's end, targets not yet sent end (default) or wait for
    /// the next window (needs --cron).
    #[arg(long, value_enum, requires = "window")]
    pub after_window: Option<AfterWindowArg>,
    /// Free text for people.
    #[arg(long, default_value = "")]
    pub description: String,
}

/// What batches in flight do at the end of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WindowEndArg {
    /// Run to their end.
    Finish,
    /// Their commands are cancelled.
    Cancel,
}

/// What targets not yet sent do at the end of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AfterWindowArg {
    /// End TERMINATED; the campaign ends.
    End,
    /// Wait for the schedule's next run time.
    NextWindow,
}

/// `muster schedule show`.
#[derive(Debug, Args)]
pub struct ShowScheduleArgs {
    /// The schedule's name.
    pub schedule: String,
    /// A version (default: the current one).
    #[arg(long, default_value_t = 0)]
    pub version: u32,
    /// How many of the latest runs to show.
    #[arg(long, default_value_t = 20)]
    pub runs: u32,
}

/// `muster schedule rm`.
#[derive(Debug, Args)]
pub struct ScheduleNameArgs {
    /// The schedule's name.
    pub schedule: String,
}

/// `muster audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this campaign's events.
    #[arg(long)]
    pub campaign: Option<String>,
    /// Only this principal's events.
    #[arg(long)]
    pub principal: Option<String>,
    /// Most events to list.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
}

/// A campaign id.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The campaign's id.
    pub campaign_id: String,
}

/// `muster watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The campaign's id.
    pub campaign_id: String,
    /// Do not print each failed target as it happens.
    #[arg(long)]
    pub quiet: bool,
    /// Stop when the campaign waits on a person (approve or reject,
    /// promote, resume or cancel) and exit 5, instead of waiting with it.
    #[arg(long)]
    pub until_decision: bool,
}

/// `muster cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The campaign's id.
    pub campaign_id: String,
    /// Why, for the audit log.
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// `muster promote` and `muster resume`.
#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The campaign's id.
    pub campaign_id: String,
    /// The stage (default: the one that awaits the decision).
    #[arg(long)]
    pub stage: Option<String>,
    /// Why, for the audit trail.
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// `muster approve` and `muster reject`.
#[derive(Debug, Args)]
pub struct ApprovalArgs {
    /// The campaign's id.
    pub campaign_id: String,
    /// Why, for the audit trail (required to reject).
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// `muster rerun`.
#[derive(Debug, Args)]
pub struct RerunArgs {
    /// The ended campaign's id.
    pub campaign_id: String,
    /// Rerun its targets that ended in these statuses (failed, timed_out,
    /// undeliverable, error, cancelled, terminated, skipped, success).
    #[arg(
        long = "status",
        value_delimiter = ',',
        default_value = "failed,timed_out,undeliverable,error"
    )]
    pub statuses: Vec<String>,
    /// A name for the new campaign (default: the first one's with " (rerun)",
    /// or "rerun of ID" when it has none).
    #[arg(long)]
    pub name: Option<String>,
    /// Idempotency key: asking again with it returns the same rerun.
    #[arg(long)]
    pub client_token: Option<String>,
    /// Acknowledge a rerun larger than the controller's guardrail.
    #[arg(long)]
    pub confirm_large: bool,
    /// Follow the rerun to its end (as `muster watch`).
    #[arg(long)]
    pub watch: bool,
    /// Stop when the campaign waits on a person (approve or reject,
    /// promote, resume or cancel) and exit 5, instead of waiting with it.
    #[arg(long, requires = "watch")]
    pub until_decision: bool,
}

/// `muster ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only campaigns in these states (running, succeeded, failed, ...).
    #[arg(long = "state", value_delimiter = ',')]
    pub states: Vec<String>,
    /// Include plans (dry runs).
    #[arg(long)]
    pub plans: bool,
    /// Most campaigns to list.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
}

/// `muster results`.
#[derive(Debug, Args)]
pub struct ResultsArgs {
    /// The campaign's id.
    pub campaign_id: String,
    /// Only these statuses (success, failed, timed_out, skipped, error, ...).
    #[arg(long = "status", value_delimiter = ',')]
    pub statuses: Vec<String>,
    /// Only these accounts.
    #[arg(long = "account", value_delimiter = ',')]
    pub accounts: Vec<String>,
    /// Only these regions.
    #[arg(long = "region", value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Show one target's full kept output (every step), and where the rest is.
    #[arg(long)]
    pub instance: Option<String>,
    /// Each target as the latest rerun of the campaign that covered it left
    /// it (with that campaign's id), instead of the campaign's own results.
    #[arg(long)]
    pub follow_reruns: bool,
    /// Only targets whose patch run left them non-compliant (patches
    /// missing, failed or waiting for a reboot).
    #[arg(long, conflicts_with = "instance")]
    pub non_compliant: bool,
    /// Only targets whose patch run left critical patches non-compliant.
    #[arg(long, conflicts_with = "instance")]
    pub critical: bool,
}

/// `muster submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The campaign.
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Follow the campaign to its end (as `muster watch`).
    #[arg(long)]
    pub watch: bool,
    /// Stop when the campaign waits on a person (approve or reject,
    /// promote, resume or cancel) and exit 5, instead of waiting with it.
    #[arg(long, requires = "watch")]
    pub until_decision: bool,
}

/// A campaign: a file, flags, or both (flags win).
#[derive(Debug, Args, Default, Clone)]
pub struct SpecArgs {
    /// Campaign file, YAML or TOML (see examples/campaign.yaml), or a
    /// campaign as `muster show -o yaml` prints it; `-` reads stdin.
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// A name for people.
    #[arg(long)]
    pub name: Option<String>,
    /// Target account ids (12 digits); repeat or separate with commas.
    #[arg(long = "account", value_delimiter = ',')]
    pub accounts: Vec<String>,
    /// Target Organizations OUs or roots, recursively.
    #[arg(long = "ou", value_delimiter = ',')]
    pub ous: Vec<String>,
    /// Accounts to leave out.
    #[arg(long = "exclude-account", value_delimiter = ',')]
    pub exclude_accounts: Vec<String>,
    /// Regions; none means every region enabled in the hub account.
    #[arg(long = "region", value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Tag filter KEY=V1,V2 (any of the values) or KEY (tag present); all
    /// filters must match.
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Only these instances.
    #[arg(long = "instance", value_delimiter = ',')]
    pub instances: Vec<String>,
    /// Only these platforms: linux, windows, macos.
    #[arg(long = "platform", value_delimiter = ',')]
    pub platforms: Vec<String>,
    /// The targets of this ended campaign instead of accounts and regions
    /// (tags and platforms still apply), chosen as the campaign is made: all
    /// of them, or those --from-status, --non-compliant and --critical
    /// choose.
    #[arg(long, value_name = "CAMPAIGN_ID")]
    pub from_campaign: Option<String>,
    /// Of --from-campaign's targets, only those that ended in this status
    /// (failed, timed_out, success, ...); repeat or separate with commas.
    #[arg(long = "from-status", value_delimiter = ',', value_name = "STATUS")]
    pub from_statuses: Vec<String>,
    /// Of --from-campaign's targets, only those its patch run left
    /// non-compliant (patches missing, failed or waiting for a reboot).
    #[arg(long)]
    pub non_compliant: bool,
    /// Of --from-campaign's targets, only those its patch run left with
    /// critical patches non-compliant.
    #[arg(long)]
    pub critical: bool,
    /// Of --from-campaign's targets, each as the latest rerun of it that
    /// covered it left it (as `muster results --follow-reruns`).
    #[arg(long)]
    pub follow_reruns: bool,
    /// A shell line for Linux and macOS; repeat for several.
    #[arg(long = "linux")]
    pub linux: Vec<String>,
    /// A PowerShell line for Windows; repeat for several.
    #[arg(long = "windows")]
    pub windows: Vec<String>,
    /// Shell script file for Linux and macOS (its lines).
    #[arg(long)]
    pub linux_file: Option<PathBuf>,
    /// PowerShell script file for Windows (its lines).
    #[arg(long)]
    pub windows_file: Option<PathBuf>,
    /// Directory the script runs in.
    #[arg(long)]
    pub working_directory: Option<String>,
    /// Run this SSM document instead of script lines: a name
    /// (AWS-RunPatchBaseline, or one the target accounts own) or the ARN of a
    /// shared document.
    #[arg(long)]
    pub document: Option<String>,
    /// The document version to run: $DEFAULT (default), $LATEST or a number.
    #[arg(long, requires = "document")]
    pub document_version: Option<String>,
    /// Document parameter NAME=VALUE; repeat for several values or names.
    #[arg(long = "param")]
    pub params: Vec<String>,
    /// Execution timeout per instance, e.g. 30m, 2h, 3600 (seconds).
    #[arg(long)]
    pub execution_timeout: Option<String>,
    /// How long SSM may wait for an agent to pick the command up, e.g. 10m.
    #[arg(long)]
    pub delivery_timeout: Option<String>,
    /// Most instances at once: a count or a percentage (50, 10%).
    #[arg(long)]
    pub max_concurrency: Option<String>,
    /// Errors allowed before the rollout stops: a count or a percentage.
    #[arg(long)]
    pub max_errors: Option<String>,
    /// Instances per SendCommand, 1 to 50.
    #[arg(long)]
    pub batch_size: Option<u32>,
    /// AWS API calls per second per account and region.
    #[arg(long, allow_negative_numbers = true)]
    pub api_rate: Option<f64>,
    /// S3 bucket for full output.
    #[arg(long)]
    pub s3_bucket: Option<String>,
    /// Key prefix in that bucket.
    #[arg(long)]
    pub s3_prefix: Option<String>,
    /// CloudWatch Logs group for full output.
    #[arg(long)]
    pub log_group: Option<String>,
    /// Bytes of output to keep per target and step.
    #[arg(long)]
    pub keep_bytes: Option<u32>,
    /// Execution role name in every account.
    #[arg(long)]
    pub role_name: Option<String>,
    /// Execution role ARN template with {account} and {partition}.
    #[arg(long)]
    pub role_arn_template: Option<String>,
    /// ExternalId the execution role's trust policy demands. The controller
    /// normally holds it; it refuses one from a submitter unless its
    /// configuration allows that (access.allow_submitted_external_id).
    #[arg(long)]
    pub external_id: Option<String>,
    /// Role session length, 15m to 1h (AWS caps chained sessions at an
    /// hour; workers renew them, so long campaigns need no more).
    #[arg(long)]
    pub session_duration: Option<String>,
    /// Partition: aws, aws-cn, aws-us-gov.
    #[arg(long)]
    pub partition: Option<String>,
    /// Idempotency key: submitting again with it returns the same campaign.
    #[arg(long)]
    pub client_token: Option<String>,
    /// Label KEY=VALUE, copied into results.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Acknowledge a campaign larger than the controller's guardrail.
    #[arg(long)]
    pub confirm_large: bool,
}
