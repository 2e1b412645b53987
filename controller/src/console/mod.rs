//! The web console: server-rendered pages on the CampaignService listener.
//!
//! Every page is a call of [`CampaignApi`] (or [`ScheduleApi`]) in process,
//! as the browser's caller ([`session::Caller`]): sign-in, roles and their
//! scopes, refusals and the audit trail are the API's own, and nothing here
//! reads the store.
//! The live campaign page follows WatchCampaign through server-sent events
//! ([`live`]); the assets (one stylesheet, one small script) are compiled
//! in, so the console needs no network beyond the controller.

pub mod live;
mod pages;
pub mod session;
pub mod views;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use std::sync::Arc;

use crate::auth::Auth;
use crate::campaign_api::CampaignApi;
use crate::schedule_api::ScheduleApi;

/// What the console's handlers share.
#[derive(Clone)]
pub struct Console {
    api: CampaignApi,
    schedules: Arc<ScheduleApi>,
    /// Verifies AWS sign-in tokens at sign-in.
    auth: Arc<Auth>,
    /// Seals the sessions of AWS sign-ins.
    sessions: session::SessionKey,
    /// Served over TLS: cookies are marked Secure.
    secure: bool,
}

/// The console's routes, to serve next to the gRPC services on the
/// CampaignService listener: `/console/...`, and `/` redirecting there.
/// Anything else answers as an unknown gRPC method (to gRPC clients) or a
/// missing page. `tls_key` is the listener's private key (PEM), none
/// without TLS.
pub fn router(api: CampaignApi, schedules: ScheduleApi, auth: Arc<Auth>, tls_key: Option<&[u8]>) -> Router {
    let console = Console {
        api,
        schedules: Arc::new(schedules),
        auth,
        sessions: session::SessionKey::new(tls_key),
        secure: tls_key.is_some(),
    };
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(pages::campaigns))
        .route("/console/signin", get(pages::sign_in_page).post(pages::sign_in))
        .route("/console/signout", post(pages::sign_out))
        .route("/console/assets/{name}", get(asset))
        .route("/console/campaigns/{id}", get(pages::campaign))
        .route("/console/campaigns/{id}/map", get(pages::map))
        .route("/console/campaigns/{id}/events", get(pages::events))
        .route("/console/campaigns/{id}/rollout", get(pages::rollout_fragment))
        .route("/console/campaigns/{id}/scopes/{account}/{region}", get(pages::scope))
        .route(
            "/console/campaigns/{id}/targets/{account}/{region}/{instance}",
            get(pages::target),
        )
        .route("/console/campaigns/{id}/{action}", post(pages::act))
        .route("/console/schedules", get(pages::schedules))
        .route("/console/audit", get(pages::audit))
        .route("/console/schedules/{name}", get(pages::schedule))
        .route("/console/schedules/{name}/{action}", post(pages::schedule_act))
        .fallback(not_found)
        .layer(axum::middleware::map_response(protect))
        .with_state(console)
}

/// Every answer's security headers: the page runs only the console's own
/// script and forms, may not be framed by another site (no clickjacking of
/// the Cancel button), and leaks no addresses in referrers. Styles allow
/// the map's inline bar widths.
const SECURITY_HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
         connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
    ("x-frame-options", "DENY"),
];

async fn protect(mut response: Response) -> Response {
    // gRPC answers (the fallback's UNIMPLEMENTED) need none of it.
    let grpc = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if !grpc {
        for (name, value) in SECURITY_HEADERS {
            response.headers_mut().insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

/// The stylesheet and the script, compiled in.
const ASSETS: [(&str, &str, &str); 2] = [
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../../assets/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/console.js"),
    ),
];

async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
                // Revalidated on every load: a new controller's assets are
                // used at once.
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            *body,
        )
            .into_response(),
        None => not_found_page(),
    }
}

/// A gRPC call of an unknown method answers UNIMPLEMENTED as tonic's own
/// router would; a browser gets a missing page.
async fn not_found(request: axum::extract::Request) -> Response {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unimplemented("").into_http::<axum::body::Body>();
    }
    not_found_page()
}

fn not_found_page() -> Response {
    PageError::Plain(StatusCode::NOT_FOUND, "No such page.".into()).into_response()
}

/// Why a page could not be shown.
#[derive(Debug)]
pub enum PageError {
    /// The API refused or failed; its message is shown as is.
    Api(tonic::Status),
    /// Anything else, with the HTTP status to answer.
    Plain(StatusCode, String),
    /// Not signed in (or no longer): go to the sign-in page, then back.
    SignIn {
        /// The page to return to.
        next: String,
        /// Why, shown on the sign-in page.
        why: String,
    },
}

impl From<tonic::Status> for PageError {
    fn from(status: tonic::Status) -> Self {
        Self::Api(status)
    }
}

impl From<askama::Error> for PageError {
    fn from(error: askama::Error) -> Self {
        Self::Plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the page could not be drawn: {error}"),
        )
    }
}

impl PageError {
    /// The same refusal, sending an unauthenticated caller to sign in and
    /// back to `next`.
    pub fn at(self, next: &str) -> Self {
        match self {
            Self::Api(status) if status.code() == tonic::Code::Unauthenticated => Self::SignIn {
                next: next.to_owned(),
                why: status.message().to_owned(),
            },
            other => other,
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (code, title, message) = match self {
            Self::SignIn { next, why } => {
                let query: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair("next", &next)
                    .append_pair("why", &why)
                    .finish();
                return Redirect::to(&format!("/console/signin?{query}")).into_response();
            }
            Self::Plain(code, message) => (code, code.canonical_reason().unwrap_or("Error"), message),
            Self::Api(status) => {
                let code = match status.code() {
                    tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition | tonic::Code::OutOfRange => {
                        StatusCode::BAD_REQUEST
                    }
                    tonic::Code::NotFound => StatusCode::NOT_FOUND,
                    tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
                    tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
                    tonic::Code::AlreadyExists | tonic::Code::Aborted => StatusCode::CONFLICT,
                    tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
                    tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                let title = match status.code() {
                    tonic::Code::PermissionDenied => "Refused",
                    tonic::Code::NotFound => "Not found",
                    tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => "Not done",
                    _ => code.canonical_reason().unwrap_or("Error"),
                };
                (code, title, status.message().to_owned())
            }
        };
        let page = pages::ErrorPage {
            title: title.to_owned(),
            message,
        };
        match askama::Template::render(&page) {
            Ok(html) => (code, axum::response::Html(html)).into_response(),
            Err(_) => (code, page.message).into_response(),
        }
    }
}
