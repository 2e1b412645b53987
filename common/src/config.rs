//! Layered configuration: defaults < config file < `MUSTER_*` environment <
//! flags.
//!
//! Each binary declares its settings once, as one struct of `Option`s that
//! is both clap's flags (each with its environment variable, which clap
//! reads) and the config file's TOML table (serde, unknown keys refused).
//! [`layered`] lays what clap parsed over the file, key by key; the binary
//! then applies its defaults and rules to the one result, and every broken
//! rule is a [`ConfigError`] naming the setting.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A setting that is missing or breaks its rule, or a config file that
/// cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read, is not TOML, holds a key that is not
    /// a setting, or a value of the wrong type.
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong, naming the key and line when the parser knows them.
        message: String,
    },
    /// A setting every run needs is given nowhere.
    #[error("{field}: required: {hint}")]
    Missing {
        /// The setting, as the file names it.
        field: String,
        /// What it is and where it can be given.
        hint: String,
    },
    /// A setting's value breaks its rule.
    #[error("{field}: {rule}")]
    Invalid {
        /// The setting, as the file names it (`auth.tokens[0].sha256`).
        field: String,
        /// The value and the rule it breaks.
        rule: String,
    },
}

impl ConfigError {
    /// `field` is required; `hint` says what it is and where to give it.
    pub fn missing(field: &str, hint: impl Display) -> Self {
        Self::Missing {
            field: field.to_owned(),
            hint: hint.to_string(),
        }
    }

    /// `field`'s value breaks `rule`.
    pub fn invalid(field: &str, rule: impl Display) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            rule: rule.to_string(),
        }
    }

    /// An error from a checker that writes its messages as `field: rule`
    /// (the domain checks shared with the API's validation); the field is
    /// split off when the message starts with one.
    pub fn named(message: impl Display) -> Self {
        let message = message.to_string();
        let field_chars = |c: char| c.is_ascii_alphanumeric() || "_.[]-".contains(c);
        match message.split_once(": ") {
            Some((field, rule)) if !field.is_empty() && field.chars().all(field_chars) => Self::invalid(field, rule),
            _ => Self::invalid("config", message),
        }
    }

    /// The setting this error is about, or the file's path.
    pub fn field(&self) -> &str {
        match self {
            Self::File { path, .. } => path,
            Self::Missing { field, .. } | Self::Invalid { field, .. } => field,
        }
    }
}

impl From<crate::tls::TlsError> for ConfigError {
    fn from(e: crate::tls::TlsError) -> Self {
        Self::Invalid {
            field: e.field,
            rule: e.rule,
        }
    }
}

/// `settings` (what clap parsed from flags and the environment) laid over
/// the config file at `path`: each key the flags or environment
/// set wins, the file's value stands for the others. A switch that is off
/// and an empty list count as not given: a flag cannot say less than the
/// file. `S` should refuse unknown keys (`#[serde(deny_unknown_fields)]`)
/// so that a misspelt key in the file is an error, not a silent default.
pub fn layered<S: Serialize + DeserializeOwned>(settings: &S, path: &Path) -> Result<S, ConfigError> {
    let shown = path.display().to_string();
    let file_error = |message: String| ConfigError::File {
        path: shown.clone(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    // Parsed as `S` first for errors with the key and the line.
    toml::from_str::<S>(&text).map_err(|e| file_error(e.to_string()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| file_error(e.to_string()))?;
    reparse(settings, table, &shown)
}

/// `top` serialized and laid over `base`, read back as `S`.
fn reparse<S: Serialize + DeserializeOwned>(top: &S, mut base: toml::Table, source: &str) -> Result<S, ConfigError> {
    let given = toml::Table::try_from(top).map_err(|e| ConfigError::invalid("flags", e))?;
    overlay(&mut base, given);
    base.try_into().map_err(|e: toml::de::Error| ConfigError::File {
        path: source.to_owned(),
        message: e.to_string(),
    })
}

/// Lays `top` over `base`, key by key, tables recursively.
fn overlay(base: &mut toml::Table, top: toml::Table) {
    for (key, value) in top {
        match value {
            toml::Value::Boolean(false) => {}
            toml::Value::Array(items) if items.is_empty() => {}
            toml::Value::Table(table) => match base.get_mut(&key) {
                Some(toml::Value::Table(under)) => overlay(under, table),
                _ => {
                    base.insert(key, toml::Value::Table(table));
                }
            },
            value => {
                base.insert(key, value);
            }
        }
    }
}

/// `value` of `field`, or `default` when unset, checked to lie in `range`;
/// `unit` follows the value in the error ("seconds", or "" for none).
pub fn in_range<T>(
    field: &str,
    value: Option<T>,
    default: T,
    range: RangeInclusive<T>,
    unit: &str,
) -> Result<T, ConfigError>
where
    T: PartialOrd + Display + Copy,
{
    let value = value.unwrap_or(default);
    if range.contains(&value) {
        return Ok(value);
    }
    let unit = if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    };
    Err(ConfigError::invalid(
        field,
        format_args!("{value}{unit}; must be {} to {}", range.start(), range.end()),
    ))
}

/// Checks that plaintext (`--insecure`) is used only against a local AWS
/// endpoint (the sandbox), unless `forced`: a process that talks to real
/// AWS over an unauthenticated channel would let anyone on the machine run
/// commands in real accounts. `endpoint` is the AWS endpoint override
/// (`--aws-endpoint-url` or `AWS_ENDPOINT_URL`), if any.
pub fn check_insecure(insecure: bool, endpoint: Option<&str>, forced: bool) -> Result<(), ConfigError> {
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
    Err(ConfigError::invalid(
        "insecure",
        format_args!(
            "plaintext with {} is for the local sandbox; with real AWS credentials it would let anyone on this \
             machine act in your accounts. Use TLS, or pass --insecure-real-aws if you truly mean it",
            match endpoint {
                Some(url) => format!("the AWS endpoint {url}"),
                None => "real AWS (no local AWS_ENDPOINT_URL)".to_owned(),
            }
        ),
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
) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    let value = value.unwrap_or_else(|| default.to_owned());
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|_| {
        ConfigError::invalid(
            field,
            format_args!("{value:?} is not host:port (e.g. 0.0.0.0:9102) or \"off\""),
        )
    })
}

/// A metrics token as given: none when empty; printable ASCII without
/// spaces, at least 16 characters, otherwise.
pub fn metrics_token(token: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(token) = token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::invalid(
            "metrics_token",
            "must be at least 16 printable ASCII characters without spaces",
        ));
    }
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Settings {
        queue_url: Option<String>,
        pollers: Option<u32>,
        insecure: bool,
        accounts: Vec<String>,
        #[serde(skip_serializing)]
        guardrails: Guardrails,
    }

    #[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Guardrails {
        confirm_above: Option<u64>,
    }

    fn file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("muster.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn flags_and_environment_win_over_the_file_key_by_key() {
        let (_dir, path) = file(
            "queue_url = \"file\"\npollers = 4\ninsecure = true\naccounts = [\"1\"]\n[guardrails]\nconfirm_above = 9\n",
        );
        let flags = Settings {
            pollers: Some(8),
            guardrails: Guardrails { confirm_above: Some(1) },
            ..Default::default()
        };
        let merged = layered(&flags, &path).unwrap();
        assert_eq!(
            merged,
            Settings {
                queue_url: Some("file".into()),
                pollers: Some(8),
                // An unset switch and an empty list do not clear the file's.
                insecure: true,
                accounts: vec!["1".into()],
                // Tables only the file may give come from the file.
                guardrails: Guardrails { confirm_above: Some(9) },
            }
        );
        let flags = Settings {
            queue_url: Some("flag".into()),
            accounts: vec!["2".into()],
            ..Default::default()
        };
        let merged = layered(&flags, &path).unwrap();
        assert_eq!(
            (merged.queue_url.as_deref(), merged.accounts),
            (Some("flag"), vec!["2".to_owned()])
        );
    }

    #[test]
    fn a_bad_file_names_the_key_and_its_line() {
        for (text, key) in [
            ("queue_url = \"q\"\npolers = 4\n", "polers"),
            ("queue_url = \"q\"\npollers = \"four\"\n", "pollers"),
            ("[guardrails]\nconfirm_abov = 1\n", "confirm_abov"),
        ] {
            let (_dir, path) = file(text);
            let err = layered(&Settings::default(), &path).unwrap_err();
            assert!(matches!(&err, ConfigError::File { path: p, .. } if p == &path.display().to_string()));
            let message = err.to_string();
            assert!(message.contains(key), "{message}");
            assert!(message.contains("line "), "{message}");
        }
        let err = layered(&Settings::default(), Path::new("/nonexistent/muster.toml")).unwrap_err();
        assert!(
            err.to_string().starts_with("config file /nonexistent/muster.toml: "),
            "{err}"
        );
    }

    #[test]
    fn rules_name_the_setting() {
        assert_eq!(in_range("lease_ttl", None, 30, 5..=3600, "seconds"), Ok(30));
        let err = in_range("lease_ttl", Some(2), 30, 5..=3600, "seconds").unwrap_err();
        assert_eq!(err.field(), "lease_ttl");
        assert_eq!(err.to_string(), "lease_ttl: 2 seconds; must be 5 to 3600");
        let err = ConfigError::named("auth.tokens[0].sha256: must be the 64 hex digits");
        assert_eq!(err.field(), "auth.tokens[0].sha256");
        assert_eq!(ConfigError::named("no field here").field(), "config");
        let err = ConfigError::missing("queue_url", "the SQS task queue");
        assert_eq!(err.to_string(), "queue_url: required: the SQS task queue");
    }

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
        let err = check_insecure(true, None, false).unwrap_err().to_string();
        assert!(err.starts_with("insecure: plaintext with real AWS"), "{err}");
        let err = check_insecure(true, Some("https://sts.us-east-1.amazonaws.com"), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("https://sts.us-east-1.amazonaws.com"), "{err}");
        assert!(check_insecure(true, None, true).is_ok());
    }
}
