//! The commands other than `watch`, one module per subcommand (or family).

mod audit;
mod campaign;
mod console;
mod list;
mod results;
mod stages;
mod submit;

pub use audit::{audit, whoami};
pub use campaign::{cancel, print_campaign, show};
pub use console::{console, console_url};
pub use list::ls;
pub use results::results;
pub use stages::{approval, decide};
pub use submit::{plan, rerun, submit};

use crate::connect::Client;

/// Why a command failed: a bad argument (before anything was sent) or the
/// controller's answer.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Bad input on this side.
    #[error("{0}")]
    Input(String),
    /// The controller refused or could not be reached.
    #[error("{}", .0.message())]
    Controller(#[from] tonic::Status),
    /// The controller refused a campaign or schedule: each broken rule,
    /// naming the field as its author wrote it (see [`crate::refusal`]).
    #[error("refused: {}", .0.join("; "))]
    Refused(Vec<String>),
}

impl Failure {
    /// The controller's refusal of a spec with its fields said as
    /// `written` wrote them (see [`crate::refusal`]); anything else as it is.
    pub(crate) fn said_as(
        self,
        written: &crate::refusal::Written,
        prefix: &str,
        other: impl Fn(&str) -> Option<String>,
    ) -> Self {
        match &self {
            Failure::Controller(status) => written.refusal(status, prefix, other).map_or(self, Failure::Refused),
            _ => self,
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Input(format!("{e:#}"))
    }
}

/// Counters in one short line ("60 targets: 52 ok, 4 failed, 4 skipped"),
/// by the names `muster results --status` takes.
fn summary(c: &muster_proto::v1::StatusCounters) -> String {
    let parts: Vec<String> = crate::render::tally(c)
        .into_iter()
        .map(|(name, n)| format!("{n} {name}"))
        .collect();
    format!("{} targets: {}", c.total, parts.join(", "))
}

/// The campaign `id` as the controller has it now.
async fn fetch_campaign(client: &mut Client, id: &str) -> Result<muster_proto::v1::Campaign, Failure> {
    let request = muster_proto::v1::GetCampaignRequest {
        campaign_id: id.to_owned(),
        view: muster_proto::v1::CampaignView::Full as i32,
    };
    Ok(client
        .get_campaign(request)
        .await?
        .into_inner()
        .campaign
        .unwrap_or_default())
}

/// `request` with the time one creating call may take.
pub(crate) fn timed<T>(request: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(request);
    request.set_timeout(SUBMIT_TIMEOUT);
    request
}

/// Makes a call that is safe to repeat (a creating call's request carries a
/// client token; the controller recognises a repeated put or delete) until
/// it is answered: asked again, the same, while the controller cannot be
/// reached or its answer is lost, up to [`SUBMIT_TRIES`] times.
pub(crate) async fn ask_until_answered<T, F, Fut>(mut call: F) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match call().await {
            Ok(answer) => return Ok(answer.into_inner()),
            Err(status) if tries < SUBMIT_TRIES && retry_submit(&status) => {
                let wait = std::time::Duration::from_secs(1 << (tries - 1));
                eprintln!(
                    "no answer from the controller ({}: {}); asking again in {}s (a repeat is recognised: nothing is done twice)",
                    status.code(),
                    status.message(),
                    wait.as_secs()
                );
                tokio::time::sleep(wait).await;
            }
            Err(status) => return Err(status.into()),
        }
    }
}

/// Tries of one SubmitCampaign when the controller cannot be reached or
/// does not answer in time.
const SUBMIT_TRIES: u32 = 5;

/// How long one SubmitCampaign may take (it expands OUs and regions).
const SUBMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether a failed SubmitCampaign may be asked again with its token: the
/// controller could not be reached, its answer did not arrive in time, or
/// the connection broke on the way (an error made here, from a transport
/// failure, carries its cause; the controller's own answers do not).
fn retry_submit(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => true,
        tonic::Code::Unknown => std::error::Error::source(status).is_some(),
        _ => false,
    }
}
