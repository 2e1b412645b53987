//! The sim's admin API under `/_sim/`, for tests, benchmarks and operators:
//!
//! | call | what it does |
//! |---|---|
//! | `GET /_sim/health` | 200 when the sim and moto answer |
//! | `POST /_sim/reset` | forgets everything here and in moto |
//! | `GET /_sim/audit` | every accepted SendCommand: account, region, command id, instance ids, comment |
//! | `GET /_sim/counters` | calls by (service, API, outcome) |
//! | `GET /_sim/events` | Run Command events emitted, matched, dropped, duplicated, delivered |
//! | `GET /_sim/config` | the current tunables |
//! | `PUT /_sim/config` | replaces the tunables |
//! | `PATCH /_sim/config` | changes only the fields given |

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::config::Tunables;
use crate::protocol::{Resp, admin_json};
use crate::state::SimState;

/// Serves one admin call.
pub async fn handle(state: &SimState, method: &Method, path: &str, body: Bytes) -> Resp {
    match (method.as_str(), path.trim_end_matches('/')) {
        ("GET", "/_sim/health") => health(state).await,
        ("POST", "/_sim/reset") => {
            state.reset();
            match state.moto.reset().await {
                Ok(()) => admin_json(StatusCode::OK, &json!({"status": "reset"})),
                Err(error) => admin_json(StatusCode::BAD_GATEWAY, &json!({"error": error.to_string()})),
            }
        }
        ("GET", "/_sim/audit") => {
            let entries = state.audit.entries();
            admin_json(StatusCode::OK, &json!({ "entries": entries }))
        }
        ("GET", "/_sim/counters") => {
            let counters: Vec<Value> = state
                .counters
                .lock()
                .expect("counters lock")
                .iter()
                .map(|((service, api, outcome), count)| {
                    json!({"service": service, "api": api, "outcome": outcome, "count": count})
                })
                .collect();
            admin_json(StatusCode::OK, &json!({ "counters": counters }))
        }
        ("GET", "/_sim/events") => admin_json(StatusCode::OK, &state.events.counters.to_json()),
        ("GET", "/_sim/config") => admin_json(StatusCode::OK, &json!(*state.tunables())),
        ("PUT", "/_sim/config") => match serde_json::from_slice::<Tunables>(&body) {
            Ok(tunables) => apply(state, tunables),
            Err(error) => bad_request(&format!("config is not valid: {error}")),
        },
        ("PATCH", "/_sim/config") => {
            let Ok(Value::Object(changes)) = serde_json::from_slice::<Value>(&body) else {
                return bad_request("PATCH /_sim/config takes a JSON object of the fields to change");
            };
            let mut current = json!(*state.tunables());
            for (key, value) in changes {
                current[key] = value;
            }
            match serde_json::from_value::<Tunables>(current) {
                Ok(tunables) => apply(state, tunables),
                Err(error) => bad_request(&format!("config is not valid: {error}")),
            }
        }
        ("GET", "/_sim/sessions") => admin_json(StatusCode::OK, &json!({"sessions": state.identities.len()})),
        _ => admin_json(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no admin call {method} {path}; see GET /_sim/health, POST /_sim/reset, GET /_sim/audit, GET /_sim/counters, GET /_sim/events, GET|PUT|PATCH /_sim/config")}),
        ),
    }
}

fn apply(state: &SimState, tunables: Tunables) -> Resp {
    if let Err(message) = tunables.validate() {
        return bad_request(&message);
    }
    state.set_tunables(tunables);
    admin_json(StatusCode::OK, &json!(*state.tunables()))
}

fn bad_request(message: &str) -> Resp {
    admin_json(StatusCode::BAD_REQUEST, &json!({ "error": message }))
}

async fn health(state: &SimState) -> Resp {
    let moto = state
        .moto
        .forward(Method::GET, "/moto-api/", &http::HeaderMap::new(), Bytes::new())
        .await;
    match moto {
        Ok(response) if response.status().is_success() => {
            admin_json(StatusCode::OK, &json!({"status": "ok", "moto": "ok"}))
        }
        Ok(response) => admin_json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "degraded", "moto": response.status().as_u16()}),
        ),
        Err(error) => admin_json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "degraded", "moto": error.to_string()}),
        ),
    }
}

/// A client of the admin API, for the seeding step and tools.
pub struct Client {
    base: String,
    http: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<Bytes>,
    >,
}

impl Client {
    /// A client of the sim at `endpoint` ("http://127.0.0.1:4566").
    pub fn new(endpoint: &str) -> Self {
        Self {
            base: endpoint.trim_end_matches('/').to_owned(),
            http: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(hyper_util::client::legacy::connect::HttpConnector::new()),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        use http_body_util::BodyExt as _;
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let request = http::Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(body))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| anyhow::anyhow!("{method} {path}: {e}"))?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("{method} {path}: the answer is not JSON: {e}"))?;
        if !status.is_success() {
            anyhow::bail!("{method} {path}: {status}: {}", value["error"]);
        }
        Ok(value)
    }

    /// The current tunables.
    pub async fn config(&self) -> anyhow::Result<Value> {
        self.call(Method::GET, "/_sim/config", None).await
    }

    /// Changes the tunables given.
    pub async fn patch_config(&self, changes: &Value) -> anyhow::Result<()> {
        self.call(Method::PATCH, "/_sim/config", Some(changes)).await.map(drop)
    }
}
