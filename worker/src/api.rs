//! Every AWS API the worker calls, in one place. Code can only call AWS
//! through [`crate::scope_clients::ScopeClients::call`], which takes an [`Api`], so this
//! list cannot drift from what the worker does; a test checks that the
//! execution role in `deploy/cloudformation/target-account.yaml` allows
//! exactly these actions.

/// An AWS API the worker calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Api {
    /// STS AssumeRole, made with the worker's own (hub) credentials.
    AssumeRole,
    /// EC2 DescribeRegions: is the task's region enabled in the account.
    DescribeRegions,
    /// EC2 DescribeInstances: discovery.
    DescribeInstances,
    /// SSM DescribeInstanceInformation: which instances SSM manages, online.
    DescribeInstanceInformation,
    /// SSM SendCommand: one per batch.
    SendCommand,
    /// SSM ListCommands: what earlier attempts of a task sent.
    ListCommands,
    /// SSM ListCommandInvocations: polling.
    ListCommandInvocations,
    /// SSM GetCommandInvocation: up to 24,000 characters of output.
    GetCommandInvocation,
    /// SSM CancelCommand: a campaign was cancelled.
    CancelCommand,
    /// SSM GetDocument: how long a document's commands may run.
    GetDocument,
    /// SSM DescribeInstancePatchStates: what a patch document's run left.
    DescribeInstancePatchStates,
    /// S3 GetObject: full output.
    GetObject,
    /// CloudWatch Logs GetLogEvents: full output.
    GetLogEvents,
}

impl Api {
    /// Every API, in order.
    pub const ALL: [Api; 13] = [
        Api::AssumeRole,
        Api::DescribeRegions,
        Api::DescribeInstances,
        Api::DescribeInstanceInformation,
        Api::SendCommand,
        Api::ListCommands,
        Api::ListCommandInvocations,
        Api::GetCommandInvocation,
        Api::CancelCommand,
        Api::GetDocument,
        Api::DescribeInstancePatchStates,
        Api::GetObject,
        Api::GetLogEvents,
    ];

    /// The API's name, as AWS and the sim count it.
    pub fn name(self) -> &'static str {
        match self {
            Api::AssumeRole => "AssumeRole",
            Api::DescribeRegions => "DescribeRegions",
            Api::DescribeInstances => "DescribeInstances",
            Api::DescribeInstanceInformation => "DescribeInstanceInformation",
            Api::SendCommand => "SendCommand",
            Api::ListCommands => "ListCommands",
            Api::ListCommandInvocations => "ListCommandInvocations",
            Api::GetCommandInvocation => "GetCommandInvocation",
            Api::CancelCommand => "CancelCommand",
            Api::GetDocument => "GetDocument",
            Api::DescribeInstancePatchStates => "DescribeInstancePatchStates",
            Api::GetObject => "GetObject",
            Api::GetLogEvents => "GetLogEvents",
        }
    }

    /// Whether the call changes something. AWS gives such calls smaller
    /// token buckets than reads (EC2 documents it; SSM's SendCommand is
    /// among its scarcest), so their buckets start without a burst.
    pub fn mutates(self) -> bool {
        matches!(self, Api::SendCommand | Api::CancelCommand)
    }

    /// The service as AWS's SDKs name it (their service id), which
    /// OpenTelemetry's AWS conventions use for `rpc.service`.
    pub fn sdk_service(self) -> &'static str {
        match self {
            Api::AssumeRole => "STS",
            Api::DescribeRegions | Api::DescribeInstances => "EC2",
            Api::DescribeInstanceInformation
            | Api::SendCommand
            | Api::ListCommands
            | Api::ListCommandInvocations
            | Api::GetCommandInvocation
            | Api::CancelCommand
            | Api::GetDocument
            | Api::DescribeInstancePatchStates => "SSM",
            Api::GetObject => "S3",
            Api::GetLogEvents => "CloudWatch Logs",
        }
    }

    /// The service, as in the SigV4 scope.
    pub fn service(self) -> &'static str {
        match self {
            Api::AssumeRole => "sts",
            Api::DescribeRegions | Api::DescribeInstances => "ec2",
            Api::GetObject => "s3",
            Api::GetLogEvents => "logs",
            _ => "ssm",
        }
    }

    /// The IAM action that allows the call.
    pub fn iam_action(self) -> String {
        format!("{}:{}", self.service(), self.name())
    }

    /// Whether the call is made with a target account's execution role (all
    /// but AssumeRole, which the worker's own role makes).
    pub fn in_target_account(self) -> bool {
        self != Api::AssumeRole
    }
}

/// What the worker calls with its own (hub) role outside [`Api`]: the task
/// queue. With [`Api::AssumeRole`] these are what the hub template's worker
/// role grants (a test checks).
pub const HUB_QUEUE_ACTIONS: [&str; 3] = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"];

/// What AssumeRole also needs of the worker's role: it names who asked for
/// the campaign (SourceIdentity) and tags the session with the campaign.
pub const ASSUME_ROLE_ALSO: [&str; 2] = ["sts:SetSourceIdentity", "sts:TagSession"];

/// The IAM actions the worker's own (hub) role must allow, lowercased and
/// sorted.
pub fn worker_role_actions() -> Vec<String> {
    let mut actions: Vec<String> = Api::ALL
        .iter()
        .filter(|api| !api.in_target_account())
        .map(|api| api.iam_action())
        .chain(HUB_QUEUE_ACTIONS.iter().map(|a| a.to_string()))
        .chain(ASSUME_ROLE_ALSO.iter().map(|a| a.to_string()))
        .map(|a| a.to_ascii_lowercase())
        .collect();
    actions.sort();
    actions
}

/// The IAM actions the execution role must allow, lowercased and sorted.
pub fn execution_role_actions() -> Vec<String> {
    let mut actions: Vec<String> = Api::ALL
        .iter()
        .filter(|api| api.in_target_account())
        .map(|api| api.iam_action().to_ascii_lowercase())
        .collect();
    actions.sort();
    actions.dedup();
    actions
}
