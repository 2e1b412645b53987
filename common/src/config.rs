//! Layered configuration: defaults < config file < `MUSTER_*` environment <
//! flags. Binaries parse flags (with their environment variables) into
//! `Option`s with clap, read the file into the same shape, and take the first
//! value that is set.

use std::path::Path;

use serde::de::DeserializeOwned;

/// A config file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("config file {path}: {message}")]
pub struct ConfigError {
    /// The file.
    pub path: String,
    /// What is wrong, naming the field when serde knows it.
    pub message: String,
}

/// Reads a TOML config file into `T`; unknown keys are errors when `T`
/// denies them.
pub fn load_file<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T, ConfigError> {
    let Some(path) = path else { return Ok(T::default()) };
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| ConfigError {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// A name for this process when none is configured: host name and PID.
pub fn default_instance_id(prefix: &str) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| prefix.to_owned());
    format!("{host}-{}", std::process::id())
}

/// The metrics endpoint's address: `host:port`, or `off` for none. Errors
/// name `field`.
pub fn metrics_listen(
    field: &str,
    value: Option<String>,
    default: &str,
) -> anyhow::Result<Option<std::net::SocketAddr>> {
    let value = value.unwrap_or_else(|| default.to_owned());
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| anyhow::anyhow!("{field}: {value:?} is not host:port (e.g. 0.0.0.0:9102) or \"off\""))
}
