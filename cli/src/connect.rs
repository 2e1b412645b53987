//! Reaching the controller, and saying clearly when it cannot be reached.

use muster_proto::v1::campaign_service_client::CampaignServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// A client of the controller at `url`. Connection problems show up on the
/// first call, where [`explain`] turns them into one line.
pub fn client(url: &str) -> anyhow::Result<CampaignServiceClient<Channel>> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|_| anyhow::anyhow!("--controller: '{url}' is not a URL (for example http://127.0.0.1:7070)"))?
        .connect_timeout(std::time::Duration::from_secs(5));
    Ok(CampaignServiceClient::new(endpoint.connect_lazy()).max_decoding_message_size(256 * 1024 * 1024))
}

/// One line a person can act on, for a failed call.
pub fn explain(url: &str, status: &Status) -> String {
    match status.code() {
        Code::Unavailable | Code::Unknown if is_transport(status) => format!(
            "cannot reach the controller at {url} ({}); is it running? Set --controller or MUSTER_CONTROLLER to its address",
            transport_cause(status)
        ),
        Code::Unavailable => format!("the controller at {url} is unavailable: {}", status.message()),
        Code::InvalidArgument => format!("refused: {}", status.message()),
        Code::NotFound => format!("not found: {}", status.message()),
        Code::AlreadyExists => format!("already exists: {}", status.message()),
        Code::FailedPrecondition => format!("cannot do that now: {}", status.message()),
        Code::Unauthenticated => format!("not authenticated: {}", status.message()),
        Code::PermissionDenied => format!("not allowed: {}", status.message()),
        Code::DeadlineExceeded => format!("the controller at {url} did not answer in time"),
        _ => format!("the controller answered {:?}: {}", status.code(), status.message()),
    }
}

fn is_transport(status: &Status) -> bool {
    let text = format!("{} {:?}", status.message(), std::error::Error::source(status));
    [
        "transport error",
        "tcp connect",
        "Connection refused",
        "dns error",
        "connection error",
        "error trying to connect",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

fn transport_cause(status: &Status) -> String {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    let mut last = status.message().to_owned();
    while let Some(error) = cause {
        last = error.to_string();
        cause = error.source();
    }
    last
}
