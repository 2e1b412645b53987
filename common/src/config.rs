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

/// Checks that plaintext (`--insecure`) is used only against a local AWS
/// endpoint (the sandbox), unless `forced`: a process that talks to real
/// AWS over an unauthenticated channel would let anyone on the machine run
/// commands in real accounts. `endpoint` is the AWS endpoint override
/// (`--aws-endpoint-url` or `AWS_ENDPOINT_URL`), if any.
pub fn check_insecure(insecure: bool, endpoint: Option<&str>, forced: bool) -> Result<(), String> {
    if !insecure || forced {
        return Ok(());
    }
    let local = endpoint
        .and_then(|url| url.parse::<http::Uri>().ok())
        .and_then(|uri| uri.host().map(crate::tls::is_loopback_host))
        .unwrap_or(false);
    if local {
        return Ok(());
    }
    Err(format!(
        "insecure: plaintext with {} is for the local sandbox; with real AWS credentials it would let anyone \
         on this machine act in your accounts. Use TLS, or pass --insecure-real-aws if you truly mean it",
        match endpoint {
            Some(url) => format!("the AWS endpoint {url}"),
            None => "real AWS (no local AWS_ENDPOINT_URL)".to_owned(),
        }
    ))
}

/// The AWS endpoint override: the setting, else `AWS_ENDPOINT_URL`.
pub fn aws_endpoint(setting: Option<&str>) -> Option<String> {
    setting
        .map(str::to_owned)
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok().filter(|u| !u.is_empty()))
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

/// A metrics token as given: none when empty; printable ASCII without
/// spaces, at least 16 characters, otherwise.
pub fn metrics_token(token: Option<String>) -> anyhow::Result<Option<String>> {
    let Some(token) = token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        anyhow::bail!("metrics_token: must be at least 16 printable ASCII characters without spaces");
    }
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_tokens_are_long_and_printable() {
        assert_eq!(metrics_token(None).unwrap(), None);
        assert_eq!(metrics_token(Some("  ".into())).unwrap(), None);
        assert_eq!(
            metrics_token(Some("0123456789abcdef".into())).unwrap().as_deref(),
            Some("0123456789abcdef")
        );
        for bad in ["short", "has a space in it here"] {
            let err = metrics_token(Some(bad.into())).unwrap_err().to_string();
            assert!(err.starts_with("metrics_token: must be at least 16"), "{err}");
        }
    }

    #[test]
    fn plaintext_only_against_a_local_aws_unless_forced() {
        assert!(check_insecure(false, None, false).is_ok());
        assert!(check_insecure(true, Some("http://127.0.0.1:4566"), false).is_ok());
        assert!(check_insecure(true, Some("http://localhost:4566"), false).is_ok());
        let err = check_insecure(true, None, false).unwrap_err();
        assert!(err.starts_with("insecure: plaintext with real AWS"), "{err}");
        let err = check_insecure(true, Some("https://sts.us-east-1.amazonaws.com"), false).unwrap_err();
        assert!(err.contains("https://sts.us-east-1.amazonaws.com"), "{err}");
        assert!(check_insecure(true, None, true).is_ok());
    }
}
