//! Signing in to the console with a token (an API token or an AWS sign-in
//! token, checked with WhoAmI) and out again.

use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use muster_proto::v1::WhoAmIRequest;
use muster_proto::v1::campaign_service_server::CampaignService;
use serde::Deserialize;

use super::{Who, html};
use crate::console::session::{self, Caller};
use crate::console::{Console, PageError};

/// The sign-in page's query.
#[derive(Debug, Default, Deserialize)]
pub struct SignInQuery {
    #[serde(default)]
    next: String,
    #[serde(default)]
    why: String,
}

#[derive(Template)]
#[template(path = "console/signin.html")]
struct SignInPage {
    who: Option<Who>,
    csrf: String,
    next: String,
    why: String,
}

/// The sign-in form.
pub async fn sign_in_page(Query(query): Query<SignInQuery>) -> Result<Response, PageError> {
    html(&SignInPage {
        who: None,
        csrf: String::new(),
        next: query.next,
        why: query.why,
    })
}

/// The sign-in form's fields.
#[derive(Debug, Default, Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

/// Checks the token with WhoAmI and keeps it in the cookie.
pub async fn sign_in(
    State(console): State<Console>,
    parts: Parts,
    Form(form): Form<SignInForm>,
) -> Result<Response, PageError> {
    session::same_origin(&parts.headers, &parts.uri).map_err(|e| PageError::Plain(StatusCode::FORBIDDEN, e))?;
    let token = form.token.trim().to_owned();
    let retry = |why: String| -> Result<Response, PageError> {
        let page = SignInPage {
            who: None,
            csrf: String::new(),
            next: form.next.clone(),
            why,
        };
        Ok((StatusCode::UNAUTHORIZED, Html(page.render()?)).into_response())
    };
    if token.is_empty() {
        return retry("token: paste an API token or an AWS sign-in token".into());
    }
    let Some(cookie) = session::sign_in_cookie(&token, console.secure) else {
        return retry("token: it holds characters no token has".into());
    };
    let caller = Caller::with_token(&parts, Some(token.clone()));
    if let Err(status) = console.api.who_am_i(caller.request(WhoAmIRequest {})).await {
        return retry(format!("token: {}", status.message()));
    }
    // An AWS sign-in token lives minutes: keep the identity STS named
    // instead, sealed, for the session.
    let cookie = if token.starts_with(crate::signin::TOKEN_PREFIX) {
        let Some((Ok(aws), _)) = console.auth.aws_identity(&caller.request(())).await else {
            return retry("token: the AWS sign-in could not be verified again; sign in again".into());
        };
        let sealed = console.sessions.seal(&aws, chrono::Utc::now().timestamp());
        session::session_cookie(&sealed, console.secure).unwrap_or(cookie)
    } else {
        cookie
    };
    let to = if session::safe_next(&form.next) {
        form.next.as_str()
    } else {
        "/console/"
    };
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(to)).into_response())
}

/// Forgets the cookie.
pub async fn sign_out(State(console): State<Console>, headers: HeaderMap, uri: Uri) -> Result<Response, PageError> {
    session::same_origin(&headers, &uri).map_err(|e| PageError::Plain(StatusCode::FORBIDDEN, e))?;
    Ok((
        [(header::SET_COOKIE, session::sign_out_cookie(console.secure))],
        Redirect::to("/console/signin"),
    )
        .into_response())
}
