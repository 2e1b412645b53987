//! The controller's configuration: flags, the file, the environment and
//! their refusals, each naming its setting.

use super::*;

const PEM: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";

fn args() -> Options {
    Options {
        queue_url: Some("http://sqs/q".into()),
        ..Default::default()
    }
}

fn tls(mut options: Options) -> Options {
    options.tls_cert = Some(PEM.into());
    options.tls_key = Some(PEM.into());
    options.worker_ca = Some(PEM.into());
    options
}

fn local(options: Options) -> Options {
    Options {
        insecure: true,
        aws_endpoint_url: Some("http://127.0.0.1:4566".into()),
        ..options
    }
}

fn resolve(options: Options) -> Result<Config, ConfigError> {
    Config::resolve(Args {
        options,
        ..Default::default()
    })
}

fn with_flags(options: Options, over_tables: TableFlags) -> Result<Config, ConfigError> {
    Config::resolve(Args {
        options,
        over_tables,
        ..Default::default()
    })
}

fn error(options: Options) -> String {
    resolve(options).unwrap_err().to_string()
}

#[test]
fn plaintext_needs_insecure_and_loopback() {
    let err = resolve(args()).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Missing { field, .. } if field == "tls_cert"),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("tls_cert: required: the controller serves TLS and needs --tls-cert"),
        "{err}"
    );
    let config = resolve(local(args())).unwrap();
    assert!(config.security.tls.is_none());
    let anonymous = tonic::Request::new(());
    let principal = config
        .security
        .auth
        .authorize(&anonymous, None, "SubmitCampaign", crate::policy::Action::Submit)
        .expect("an open loopback controller lets local callers in");
    assert_eq!(principal.name, "anonymous");
    let err = error(Options {
        listen: Some("0.0.0.0:7070".parse().unwrap()),
        ..local(args())
    });
    assert!(
        err.starts_with("listen: 0.0.0.0:7070 is not a loopback address"),
        "{err}"
    );
    let err = error(Options {
        worker_listen: Some("10.0.0.1:7071".parse().unwrap()),
        ..local(args())
    });
    assert!(
        err.starts_with("worker_listen: 10.0.0.1:7071 is not a loopback address"),
        "{err}"
    );
    let err = error(local(tls(args())));
    assert!(err.starts_with("insecure: TLS settings are given too"), "{err}");
    // Plaintext toward real AWS: refused unless forced.
    let err = error(Options {
        insecure: true,
        aws_endpoint_url: Some("https://sts.us-east-1.amazonaws.com".into()),
        ..args()
    });
    assert!(err.starts_with("insecure: plaintext with the AWS endpoint"), "{err}");
    assert!(
        Config::resolve(Args {
            options: Options {
                insecure: true,
                aws_endpoint_url: Some("https://sts.us-east-1.amazonaws.com".into()),
                ..args()
            },
            insecure_real_aws: true,
            ..Default::default()
        })
        .is_ok()
    );
}

#[test]
fn retention_is_90_days_unless_set_and_0_keeps_everything() {
    let resolve = |days| {
        resolve(Options {
            retention_days: days,
            ..local(args())
        })
    };
    let days = |d: u64| Some(Duration::from_secs(d * 86_400));
    assert_eq!(resolve(None).unwrap().settings.retention, days(90));
    assert_eq!(resolve(Some(7)).unwrap().settings.retention, days(7));
    assert_eq!(resolve(Some(0)).unwrap().settings.retention, None);
    let err = resolve(Some(40_000)).unwrap_err().to_string();
    assert_eq!(err, "retention_days: 40000 days; must be 0 to 36500");
}

#[test]
fn the_scaling_signal_is_published_only_with_a_namespace() {
    let resolve = |namespace: Option<&str>, interval| {
        resolve(Options {
            scaling_namespace: namespace.map(str::to_owned),
            scaling_interval: interval,
            ..local(args())
        })
    };
    assert_eq!(resolve(None, None).unwrap().settings.scaling, None);
    assert_eq!(
        resolve(Some("Muster"), None).unwrap().settings.scaling,
        Some(crate::scaling::ScalingSignal {
            namespace: "Muster".into(),
            interval: Duration::from_secs(60),
        })
    );
    let err = resolve(Some("AWS/ECS"), None).unwrap_err().to_string();
    assert!(
        err.starts_with("scaling_namespace: 'AWS/ECS' may not start with AWS/"),
        "{err}"
    );
    let err = resolve(Some("Muster"), Some(0)).unwrap_err().to_string();
    assert!(
        err.starts_with("scaling_interval: 0 seconds; must be 1 to 300"),
        "{err}"
    );
}

#[test]
fn the_store_is_sqlite_unless_a_database_is_named_and_a_remote_one_needs_tls() {
    let resolve = |url: Option<&str>, ca: Option<PathBuf>, insecure: bool| {
        store_config(Some("data".into()), url.map(str::to_owned), ca.as_deref(), insecure)
    };
    assert!(
        matches!(resolve(None, None, false).unwrap(), StoreConfig::Sqlite(dir) if dir == std::path::Path::new("data"))
    );
    let local = resolve(Some("postgres://muster@127.0.0.1:5432/muster"), None, false).unwrap();
    assert!(
        matches!(&local, StoreConfig::Postgres(target) if target.shown() == "postgres://muster@127.0.0.1:5432/muster"),
        "{local:?}"
    );
    let err = resolve(Some("postgres://muster:secret@db.example.com/muster"), None, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("database_url: postgres://muster@db.example.com:5432/muster is not on loopback"),
        "{err}"
    );
    assert!(!err.contains("secret"), "the password is never shown: {err}");
    let remote = resolve(
        Some("postgres://muster@db.example.com/muster?sslmode=require"),
        None,
        false,
    );
    assert!(matches!(remote, Ok(StoreConfig::Postgres(_))), "{remote:?}");
    let err = resolve(Some("mysql://x"), None, false).unwrap_err().to_string();
    assert!(
        err.starts_with("database_url: not a PostgreSQL connection string"),
        "{err}"
    );
    let err = resolve(None, Some("ca.pem".into()), false).unwrap_err().to_string();
    assert!(err.starts_with("database_ca: given without database_url"), "{err}");
    let err = resolve(
        Some("postgres://muster@127.0.0.1/m"),
        Some("/nonexistent/ca.pem".into()),
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("database_ca: cannot read /nonexistent/ca.pem"), "{err}");
}

#[test]
fn tls_needs_a_worker_ca_and_some_caller() {
    let err = error(Options {
        worker_ca: None,
        ..tls(args())
    });
    assert!(err.starts_with("worker_ca: required"), "{err}");
    let err = error(tls(args()));
    assert!(
        err.starts_with("auth: no API token or client certificate is configured"),
        "{err}"
    );
    let hash = crate::auth::hash_token("secret");
    let config = with_flags(
        tls(args()),
        TableFlags {
            api_tokens: vec![format!("ci:submit:{hash}")],
            ..Default::default()
        },
    )
    .unwrap();
    assert!(config.security.tls.is_some());
    let err = with_flags(
        tls(args()),
        TableFlags {
            api_clients: vec!["ops:submit".into()],
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("client_ca: required: client certificates are configured"),
        "{err}"
    );
    let err = with_flags(
        tls(args()),
        TableFlags {
            api_tokens: vec!["ci:boss:00".into()],
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("'boss' is not a role (viewer, operator, approver, admin)"),
        "{err}"
    );
    let err = with_flags(
        tls(args()),
        TableFlags {
            api_tokens: vec!["ci:submit:xyz".into()],
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("auth.tokens[0].sha256: must be the 64 hex digits"),
        "{err}"
    );
    let err = with_flags(
        Options {
            tls_key: Some("/nonexistent/controller.key".into()),
            ..tls(args())
        },
        TableFlags {
            api_tokens: vec![format!("ci:submit:{hash}")],
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("tls_key: cannot read /nonexistent/controller.key"),
        "{err}"
    );
}

#[test]
fn workers_have_a_trust_anchor_of_their_own() {
    let hash = crate::auth::hash_token("secret");
    let with = |client_ca: &str, domain: Option<&str>| {
        with_flags(
            Options {
                client_ca: Some(client_ca.into()),
                worker_trust_domain: domain.map(str::to_owned),
                ..tls(args())
            },
            TableFlags {
                api_tokens: vec![format!("ci:submit:{hash}")],
                ..Default::default()
            },
        )
    };
    let err = with(PEM, None).unwrap_err().to_string();
    assert!(
        err.starts_with("worker_ca: holds a CA that client_ca holds too"),
        "{err}"
    );
    let other = "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n";
    let config = with(other, None).unwrap();
    assert_eq!(config.security.tls.unwrap().worker_trust_domain, "muster");
    let config = with(other, Some("prod.example.com")).unwrap();
    assert_eq!(config.security.tls.unwrap().worker_trust_domain, "prod.example.com");
    let err = with(other, Some("Prod/x")).unwrap_err().to_string();
    assert!(
        err.starts_with("worker_trust_domain: 'Prod/x' is not a SPIFFE trust domain"),
        "{err}"
    );
}

#[test]
fn the_file_carries_auth_and_guardrails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("controller.toml");
    let hash = crate::auth::hash_token("secret");
    std::fs::write(
        &path,
        format!(
            "queue_url = \"q\"\ninsecure = true\naws_endpoint_url = \"http://127.0.0.1:4566\"\n[[auth.tokens]]\nname = \"ci\"\npermission = \"read\"\nsha256 = \"{hash}\"\n\
             [guardrails]\nallowed_accounts = [\"111111111111\"]\nconfirm_above_targets = 500\n"
        ),
    )
    .unwrap();
    let config = Config::resolve(Args {
        config: Some(path.clone()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(config.settings.guardrails.allowed_accounts, ["111111111111"]);
    assert_eq!(config.settings.guardrails.confirm_above_targets, Some(500));
    // Flags replace the file's lists.
    let config = Config::resolve(Args {
        config: Some(path.clone()),
        over_tables: TableFlags {
            allow_accounts: vec!["222222222222".into()],
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    assert_eq!(config.settings.guardrails.allowed_accounts, ["222222222222"]);
    let err = Config::resolve(Args {
        config: Some(path.clone()),
        over_tables: TableFlags {
            allow_accounts: vec!["12345".into()],
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("12345"), "{err}");
    // A flag beats the file, the file beats the default.
    let path_text = path.display().to_string();
    let parsed = Args::try_parse_from(["muster-controller", "--config", &path_text, "--lease-ttl", "60"]).unwrap();
    let config = Config::resolve(parsed).unwrap();
    assert_eq!(config.settings.queue_url, "q");
    assert_eq!(config.settings.lease_ttl, Duration::from_secs(60));
    assert_eq!(config.settings.max_attempts, 3);
    // A misspelt key is refused with its name and line.
    std::fs::write(&path, "queue_url = \"q\"\nleas_ttl = 60\n").unwrap();
    let err = Config::resolve(Args {
        config: Some(path),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(err, ConfigError::File { .. }), "{err}");
    assert!(err.to_string().contains("leas_ttl"), "{err}");
}

#[test]
fn copy_store_copies_the_data_dir_into_the_database_url_and_needs_one() {
    let parsed = Args::try_parse_from(["muster-controller", "--data-dir", "/srv/muster", "copy-store"]).unwrap();
    assert!(matches!(parsed.tool, Some(Tool::CopyStore)));
    let err = parsed.copy_store_ends().unwrap_err();
    assert!(
        err.to_string().starts_with("database_url: required by copy-store"),
        "{err}"
    );

    let to = |url: &str| {
        Args::try_parse_from([
            "muster-controller",
            "--data-dir",
            "/srv/muster",
            "--database-url",
            url,
            "copy-store",
        ])
        .unwrap()
        .copy_store_ends()
    };
    let (dir, target) = to("postgres://muster@127.0.0.1:5432/muster").unwrap();
    assert_eq!(dir, PathBuf::from("/srv/muster"));
    assert!(target.on_loopback());
    // The same rule as the controller's: no plaintext to a database
    // elsewhere.
    let err = to("postgres://muster@db.example.com:5432/muster").unwrap_err();
    assert!(
        err.to_string().starts_with("database_url:") && err.to_string().contains("sslmode=require"),
        "{err}"
    );
}
