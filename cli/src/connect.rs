//! Reaching the controller, and saying clearly when it cannot be reached.

use std::sync::Arc;

use muster_common::tls::ClientTls;
use muster_proto::v1::campaign_service_client::CampaignServiceClient;
use muster_proto::v1::schedule_service_client::ScheduleServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::signin::AwsSigner;

/// A CampaignService client that presents the caller's bearer token, if any.
pub type Client = CampaignServiceClient<InterceptedService<Channel, Bearer>>;

/// A ScheduleService client over the same connection and credentials.
pub type Schedules = ScheduleServiceClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <token>` to every call: a muster token, or
/// an AWS sign-in token signed afresh when the last one gets old.
#[derive(Clone, Default)]
pub enum Bearer {
    /// No token (a client certificate, or an open development controller).
    #[default]
    None,
    /// A muster token.
    Token(MetadataValue<Ascii>),
    /// The caller's AWS identity.
    Aws(Arc<AwsSigner>),
}

impl Bearer {
    /// A token as given (flag, environment or file); `field` names it in errors.
    pub fn new(field: &str, token: Option<&str>) -> anyhow::Result<Self> {
        let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(Self::None);
        };
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| anyhow::anyhow!("{field}: a token is printable ASCII without spaces"))?;
        Ok(Self::Token(value))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let value = match self {
            Self::None => return Ok(request),
            Self::Token(value) => value.clone(),
            Self::Aws(signer) => {
                let token = signer.token().map_err(|e| Status::unauthenticated(e.to_string()))?;
                format!("Bearer {token}")
                    .parse()
                    .map_err(|_| Status::unauthenticated("--aws-signin: the signed token is not ASCII"))?
            }
        };
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

/// How to reach the controller: its URL, TLS and the caller's credentials.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// CampaignService URL.
    pub url: String,
    /// CA and optional client certificate.
    pub tls: ClientTls,
    /// Bearer token.
    pub token: Option<String>,
    /// Where the token came from, for errors.
    pub token_field: &'static str,
    /// Sign in with the caller's AWS identity for this server id instead.
    pub aws_signin: Option<String>,
}

/// A client of the controller. Connection problems show up on the first
/// call, where [`explain`] turns them into one line. With AWS sign-in, the
/// AWS credentials are loaded here.
pub async fn client(target: &Target) -> anyhow::Result<(Client, Schedules)> {
    let endpoint = muster_common::tls::endpoint("--controller", &target.url, "--tls", &target.tls)
        .map_err(|e| anyhow::anyhow!("{}: {}", e.field.replacen("--tls_", "--tls-", 1), e.rule))?;
    let bearer = match &target.aws_signin {
        Some(server_id) => Bearer::Aws(Arc::new(AwsSigner::load(server_id).await?)),
        None => Bearer::new(target.token_field, target.token.as_deref())?,
    };
    // The endpoint pings (see `tls::endpoint`): a long watch outlives load
    // balancers that close idle connections.
    let channel = endpoint.connect_lazy();
    let schedules = ScheduleServiceClient::with_interceptor(channel.clone(), bearer.clone());
    let campaigns =
        CampaignServiceClient::with_interceptor(channel, bearer).max_decoding_message_size(256 * 1024 * 1024);
    Ok((campaigns, schedules))
}

/// One line a person can act on, for a failed call.
pub fn explain(url: &str, status: &Status) -> String {
    match status.code() {
        Code::Unavailable | Code::Unknown if is_tls(status) => format!(
            "TLS with the controller at {url} failed ({}); check --tls-ca (the CA that signed its certificate) \
             and that the URL's host is in the certificate",
            transport_cause(status)
        ),
        Code::Unavailable | Code::Unknown if is_transport(status) => format!(
            "cannot reach the controller at {url} ({}); is it running? Set --controller or MUSTER_CONTROLLER to its address",
            transport_cause(status)
        ),
        Code::Unavailable => format!("the controller at {url} is unavailable: {}", status.message()),
        Code::InvalidArgument => format!("refused: {}", status.message()),
        Code::NotFound => format!("not found: {}", status.message()),
        Code::AlreadyExists => format!("already exists: {}", status.message()),
        Code::FailedPrecondition => format!("cannot do that now: {}", status.message()),
        Code::Unauthenticated => format!(
            "not authenticated: {}; give a token (--token, MUSTER_TOKEN or --token-file), a client certificate \
             (--tls-cert, --tls-key), or sign in with your AWS identity (--aws-signin)",
            status.message()
        ),
        Code::PermissionDenied => format!("not allowed: {}", status.message()),
        Code::DeadlineExceeded => format!("the controller at {url} did not answer in time"),
        _ => format!("the controller answered {:?}: {}", status.code(), status.message()),
    }
}

/// The errors under a failed call, outermost first (a call that never
/// reached the controller carries the transport's error as its source).
fn causes(status: &Status) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(status), |e| e.source())
}

/// The TLS handshake failed: a rustls error, alone or inside the I/O error
/// the TLS stream reports it as.
fn is_tls(status: &Status) -> bool {
    causes(status).any(|e| {
        e.is::<rustls::Error>()
            || e.downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .is_some_and(|inner| inner.is::<rustls::Error>())
    })
}

/// The call never got an answer from a controller: the connection could not
/// be made or broke (a transport, HTTP/2 or socket error under it).
fn is_transport(status: &Status) -> bool {
    causes(status).any(|e| e.is::<tonic::transport::Error>() || e.is::<hyper::Error>() || e.is::<std::io::Error>())
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
