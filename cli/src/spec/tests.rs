use super::*;

fn file(name: &str, text: &str) -> (tempfile::TempDir, SpecArgs) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (
        dir,
        SpecArgs {
            file: Some(path),
            ..Default::default()
        },
    )
}

#[test]
fn yaml_files_read_naturally_and_flags_win() {
    let (_dir, mut args) = file(
        "patch.yaml",
        "name: patch\ntargets:\n  accounts: [111111111111]\n  regions: [us-east-1]\n  tags:\n    Env: prod\n    Role: [web, api]\ncommand:\n  linux: |\n    dnf -y update\n    reboot-if-needed\n  execution_timeout: 30m\nrate:\n  max_concurrency: 10%\n  max_errors: 5\n",
    );
    args.regions = vec!["eu-west-1".into()];
    let spec = build(&args).unwrap();
    let targets = spec.targets.unwrap();
    assert_eq!(targets.account_ids, ["111111111111"]);
    assert_eq!(targets.regions, ["us-east-1", "eu-west-1"]);
    assert_eq!(targets.tags[0].values, ["prod"]);
    assert_eq!(targets.tags[1].values, ["web", "api"]);
    let command = spec.command.unwrap();
    assert_eq!(command.execution_timeout_seconds, 1800);
    match command.kind {
        Some(command::Kind::Script(s)) => assert_eq!(s.linux_lines, ["dnf -y update", "reboot-if-needed"]),
        other => panic!("{other:?}"),
    }
    let rate = spec.rate.unwrap();
    assert_eq!((rate.max_concurrency.as_str(), rate.max_errors.as_str()), ("10%", "5"));
}

#[test]
fn exact_scopes_read_from_a_file() {
    let (_dir, args) = file(
        "rerun.yaml",
        "targets:\n  scopes:\n    - account: 111111111111\n      region: eu-west-1\n      instance_ids: [i-0abc]\n    - {account: \"222222222222\", region: us-east-1}\ncommand:\n  linux: uptime\n",
    );
    let scopes = build(&args).unwrap().targets.unwrap().scopes;
    assert_eq!(scopes.len(), 2);
    assert_eq!(
        (
            scopes[0].account_id.as_str(),
            scopes[0].region.as_str(),
            scopes[0].instance_ids.as_slice()
        ),
        ("111111111111", "eu-west-1", ["i-0abc".to_owned()].as_slice())
    );
    assert!(scopes[1].instance_ids.is_empty());
}

#[test]
fn an_earlier_campaigns_targets_from_a_file_or_flags() {
    let id = "0190d3c4-0000-7000-8000-000000000001";
    let (_dir, mut args) = file(
        "install.yaml",
        &format!(
            "targets:\n  from_campaign:\n    id: {id}\n    statuses: [success]\n    follow_reruns: true\n  platforms: [linux]\ncommand:\n  document: AWS-RunPatchBaseline\n"
        ),
    );
    args.non_compliant = true;
    args.from_statuses = vec!["failed".into()];
    let targets = build(&args).unwrap().targets.unwrap();
    let from = targets.from_campaign.unwrap();
    assert_eq!(from.campaign_id, id);
    assert_eq!(
        from.statuses,
        [TargetStatus::Success as i32, TargetStatus::Failed as i32],
        "the file's, then the flags'"
    );
    assert!(from.non_compliant && from.follow_reruns && !from.critical);
    assert_eq!(targets.platforms, [Platform::Linux as i32]);
    args.critical = true;
    let from = build(&args).unwrap().targets.unwrap().from_campaign.unwrap();
    assert!(from.critical, "--critical");

    let (_dir, args) = file(
        "bad.yaml",
        &format!("targets:\n  from_campaign:\n    id: {id}\n    statuses: [running]\ncommand:\n  linux: uptime\n"),
    );
    let error = build(&args).unwrap_err().to_string();
    assert!(
        error.starts_with("targets.from_campaign.statuses[0]: 'running' is not a status a target ends in"),
        "{error}"
    );

    let (_dir, args) = file(
        "no-id.yaml",
        "targets:\n  from_campaign: {non_compliant: true}\ncommand:\n  linux: uptime\n",
    );
    let error = build(&args).unwrap_err().to_string();
    assert!(error.starts_with("targets.from_campaign.id: is required"), "{error}");

    let flags = SpecArgs {
        linux: vec!["uptime".into()],
        non_compliant: true,
        ..Default::default()
    };
    let error = build(&flags).unwrap_err().to_string();
    assert!(
        error.starts_with("--non-compliant: chooses among the targets of an earlier campaign"),
        "{error}"
    );
    let flags = SpecArgs {
        from_campaign: Some(id.into()),
        ..flags
    };
    let from = build(&flags).unwrap().targets.unwrap().from_campaign.unwrap();
    assert!(from.non_compliant && from.statuses.is_empty() && !from.follow_reruns);

    let (_dir, args) = file(
        "critical.yaml",
        "targets:\n  from_campaign: {critical: true}\ncommand:\n  document: AWS-RunPatchBaseline\n",
    );
    let args = SpecArgs {
        from_campaign: Some("0190d3c4-0000-7000-8000-000000000001".into()),
        ..args
    };
    let from = build(&args).unwrap().targets.unwrap().from_campaign.unwrap();
    assert!(from.critical && !from.non_compliant, "the file's critical");
    let error = build(&SpecArgs {
        linux: vec!["uptime".into()],
        critical: true,
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        error.starts_with("--critical: chooses among the targets of an earlier campaign"),
        "{error}"
    );
}

#[test]
fn toml_files_and_documents() {
    let (_dir, args) = file(
        "patch.toml",
        "[targets]\nous = [\"ou-ab12-cd34ef56\"]\n[command]\ndocument = \"AWS-RunPatchBaseline\"\nparameters = { Operation = \"Install\" }\n",
    );
    let spec = build(&args).unwrap();
    match spec.command.unwrap().kind {
        Some(command::Kind::Document(d)) => {
            assert_eq!(d.name, "AWS-RunPatchBaseline");
            assert_eq!(d.parameters["Operation"].values, ["Install"]);
        }
        other => panic!("{other:?}"),
    }
    // A shared document by ARN, pinned: the flag wins over the file.
    let (_dir, mut args) = file(
        "inventory.yaml",
        "targets:\n  ous: [ou-ab12-cd34ef56]\ncommand:\n  document: arn:aws:ssm:us-east-1:111122223333:document/Acme-Inventory\n  document_version: \"2\"\n",
    );
    let pinned = |args: &SpecArgs| match build(args).unwrap().command.unwrap().kind {
        Some(command::Kind::Document(d)) => (d.name, d.version),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        pinned(&args),
        (
            "arn:aws:ssm:us-east-1:111122223333:document/Acme-Inventory".to_owned(),
            "2".to_owned()
        )
    );
    args.document_version = Some("$LATEST".into());
    assert_eq!(pinned(&args).1, "$LATEST");
}

#[test]
fn typos_and_bad_values_are_named() {
    let (_dir, args) = file("x.yaml", "targets:\n  regons: [us-east-1]\n");
    let err = build(&args).unwrap_err().to_string();
    assert!(err.contains("unknown field `regons`"), "{err}");
    let args = SpecArgs {
        platforms: vec!["beos".into()],
        ..Default::default()
    };
    assert_eq!(
        build(&args).unwrap_err().to_string(),
        "--platform: 'beos' is not a platform (linux, windows, macos)"
    );
    let args = SpecArgs {
        execution_timeout: Some("soon".into()),
        ..Default::default()
    };
    assert!(
        build(&args)
            .unwrap_err()
            .to_string()
            .starts_with("--execution-timeout: 'soon' is not a duration")
    );
    let args = SpecArgs {
        document: Some("AWS-RunPatchBaseline".into()),
        linux: vec!["x".into()],
        ..Default::default()
    };
    assert!(build(&args).unwrap_err().to_string().contains("not both"));
}

/// The shipped examples parse and pass the controller's own validation.
#[test]
fn the_examples_are_valid_campaigns() {
    let defaults = muster_controller::validate::Defaults {
        role_name: "muster-execution".into(),
        api_calls_per_second: 10.0,
    };
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for name in [
        "campaign.yaml",
        "patch-baseline.toml",
        "patch-tuesday.yaml",
        "install-non-compliant.yaml",
    ] {
        let args = SpecArgs {
            file: Some(examples.join(name)),
            // The one example that takes an ended campaign's targets
            // is given it as its header says.
            from_campaign: (name == "install-non-compliant.yaml")
                .then(|| "0190d3c4-0000-7000-8000-000000000001".into()),
            ..Default::default()
        };
        let spec = build(&args).unwrap_or_else(|e| panic!("{name}: {e}"));
        let spec = muster_controller::validate::validate(spec, &defaults).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!spec.name.is_empty(), "{name}");
    }
    let yaml = build(&SpecArgs {
        file: Some(examples.join("campaign.yaml")),
        ..Default::default()
    })
    .unwrap();
    let targets = yaml.targets.unwrap();
    assert_eq!(targets.exclude_account_ids, ["222222222222"]);
    assert_eq!(yaml.rate.unwrap().max_concurrency, "10%");
    assert_eq!(yaml.command.unwrap().execution_timeout_seconds, 1800);
    let waves = build(&SpecArgs {
        file: Some(examples.join("patch-tuesday.yaml")),
        ..Default::default()
    })
    .unwrap();
    let stages: Vec<(&str, u32, i32)> = waves
        .stages
        .iter()
        .map(|s| (s.name.as_str(), s.bake_seconds, s.gate))
        .collect();
    assert_eq!(
        stages,
        [
            ("canary-account", 1800, StageGate::Automatic as i32),
            ("canary-fleet", 3600, StageGate::Manual as i32),
            ("rest", 0, StageGate::Automatic as i32)
        ]
    );
    // Scan, then Install where the scan succeeded.
    let operation = |command: &Command| match &command.kind {
        Some(command::Kind::Document(d)) => d.parameters["Operation"].values.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(operation(waves.command.as_ref().unwrap()), ["Scan"]);
    assert_eq!(waves.then.len(), 1);
    assert_eq!(operation(&waves.then[0]), ["Install"]);
}

#[test]
fn commands_after_the_first_come_from_the_file_and_are_named_in_errors() {
    let (_dir, args) = file(
        "c.yaml",
        "command:\n  linux: dnf check-update\nthen:\n  - linux: dnf -y update\n    execution_timeout: 2h\n  - document: Acme-Report\n    document_version: \"3\"\n",
    );
    let spec = build(&args).unwrap();
    assert_eq!(spec.then.len(), 2);
    assert_eq!(spec.then[0].execution_timeout_seconds, 7200);
    match &spec.then[1].kind {
        Some(command::Kind::Document(d)) => assert_eq!((d.name.as_str(), d.version.as_str()), ("Acme-Report", "3")),
        other => panic!("{other:?}"),
    }
    let (_dir, args) = file("c.yaml", "then:\n  - linux: x\n    delivery_timeout: soon\n");
    let err = build(&args).unwrap_err().to_string();
    assert!(err.starts_with("then[0].delivery_timeout"), "{err}");
    let (_dir, args) = file("c.yaml", "then:\n  - linux: x\n    document: AWS-RunShellScript\n");
    let err = build(&args).unwrap_err().to_string();
    assert_eq!(err, "then[0]: give script lines or a document, not both");
}

#[test]
fn a_campaign_as_show_prints_it_reads_back_as_its_spec_and_flags_still_win() {
    let spec = CampaignSpec {
        name: "patch".into(),
        targets: Some(TargetSelector {
            account_ids: vec!["111111111111".into()],
            regions: vec!["us-east-1".into()],
            ..Default::default()
        }),
        command: Some(Command {
            kind: Some(command::Kind::Document(Document {
                name: "AWS-RunPatchBaseline".into(),
                version: String::new(),
                parameters: BTreeMap::from([(
                    "Operation".to_owned(),
                    ParameterValues {
                        values: vec!["Scan".into()],
                    },
                )]),
            })),
            execution_timeout_seconds: 1800,
            delivery_timeout_seconds: 0,
        }),
        client_token: "patch-2026-12".into(),
        ..Default::default()
    };
    let shown = Campaign {
        id: "3f2a".into(),
        spec: Some(spec.clone()),
        state: muster_proto::v1::CampaignState::Succeeded as i32,
        ..Default::default()
    };
    let yaml = serde_yaml_ng::to_string(&muster_proto::json::to_json(&shown)).unwrap();
    let (_dir, mut args) = file("shown.yaml", &yaml);
    let read = build(&args).unwrap();
    assert_eq!(read.name, spec.name);
    assert_eq!(read.targets, spec.targets);
    assert_eq!(read.command, spec.command);
    assert_eq!(read.client_token, "patch-2026-12");

    args.client_token = Some("patch-again".into());
    args.params = vec!["Operation=Install".into()];
    args.regions = vec!["eu-west-1".into()];
    let read = build(&args).unwrap();
    assert_eq!(read.client_token, "patch-again");
    assert_eq!(read.targets.unwrap().regions, ["us-east-1", "eu-west-1"]);
    match read.command.unwrap().kind {
        Some(command::Kind::Document(d)) => assert_eq!(d.parameters["Operation"].values, ["Scan", "Install"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_campaign_document_with_a_typo_is_refused_naming_it() {
    let (_dir, args) = file(
        "shown.yaml",
        "id: x\nspec:\n  name: patch\n  rate:\n    maxConcurency: 10%\n",
    );
    let err = build(&args).unwrap_err().to_string();
    assert!(err.contains("muster.v1.Campaign"), "{err}");
    assert!(err.contains("maxConcurency"), "{err}");
}

#[test]
fn flags_that_do_not_fit_the_command_are_refused_not_ignored() {
    let args = SpecArgs {
        linux: vec!["uptime".into()],
        params: vec!["Operation=Scan".into()],
        ..Default::default()
    };
    let err = build(&args).unwrap_err().to_string();
    assert!(
        err.starts_with("--param: 'Operation=Scan' is a document's parameter"),
        "{err}"
    );
    let args = SpecArgs {
        document: Some("AWS-RunPatchBaseline".into()),
        working_directory: Some("/tmp".into()),
        ..Default::default()
    };
    let err = build(&args).unwrap_err().to_string();
    assert!(err.starts_with("--working-directory:"), "{err}");
}

/// The API reads 0 as "not given", so a 0 someone writes would quietly
/// become the default: it is refused, in a flag or in a file, naming
/// where it was written, the rule and what leaving it out gives.
#[test]
fn a_written_zero_is_refused_not_taken_for_the_default() {
    let flags = [
        (
            SpecArgs {
                batch_size: Some(0),
                ..Default::default()
            },
            "--batch-size: must be 1 to 50 instances a SendCommand, not 0 (leave it out for 50)",
        ),
        (
            SpecArgs {
                api_rate: Some(0.0),
                ..Default::default()
            },
            "--api-rate: must be 0.1 to 1000 calls per second, not 0 (leave it out for the controller's default)",
        ),
        (
            SpecArgs {
                keep_bytes: Some(0),
                ..Default::default()
            },
            "--keep-bytes: must be 1 to 1048576 bytes, not 0 (leave it out for 8192)",
        ),
        (
            SpecArgs {
                execution_timeout: Some("0s".into()),
                ..Default::default()
            },
            "--execution-timeout: must be 1 second to 48 hours, not 0 (leave it out for an hour for a script, \
             the document's own timeouts for a document)",
        ),
        (
            SpecArgs {
                delivery_timeout: Some("0".into()),
                ..Default::default()
            },
            "--delivery-timeout: must be 30 seconds to 30 days, not 0 (leave it out for 10 minutes)",
        ),
        (
            SpecArgs {
                session_duration: Some("0m".into()),
                ..Default::default()
            },
            "--session-duration: must be 15 minutes to an hour, not 0 (leave it out for an hour)",
        ),
        (
            SpecArgs {
                execution_timeout: Some("500ms".into()),
                ..Default::default()
            },
            "--execution-timeout: '500ms' is less than a second; these durations are whole seconds",
        ),
    ];
    for (args, expected) in flags {
        assert_eq!(build(&args).unwrap_err().to_string(), expected);
    }
    for (text, field) in [
        ("rate:\n  batch_size: 0\n", "rate.batch_size: must be 1 to 50"),
        (
            "rate:\n  api_calls_per_second: 0.0\n",
            "rate.api_calls_per_second: must be 0.1",
        ),
        ("output:\n  keep_bytes: 0\n", "output.keep_bytes: must be 1 to"),
        (
            "command:\n  linux: x\n  execution_timeout: 0\n",
            "command.execution_timeout: must be",
        ),
        (
            "command:\n  linux: x\n  delivery_timeout: 0s\n",
            "command.delivery_timeout: must be",
        ),
        ("access:\n  session_duration: 0\n", "access.session_duration: must be"),
        (
            "command:\n  linux: x\nthen:\n  - linux: y\n    execution_timeout: 0\n",
            "then[0].execution_timeout: must be",
        ),
    ] {
        let (_dir, args) = file("zero.yaml", text);
        let err = build(&args).unwrap_err().to_string();
        assert!(err.starts_with(field), "{text}: {err}");
    }
    // Given, and not 0, they are taken as written.
    let (_dir, mut args) = file("set.yaml", "rate:\n  batch_size: 7\noutput:\n  keep_bytes: 100\n");
    args.api_rate = Some(2.5);
    args.execution_timeout = Some("90s".into());
    let spec = build(&args).unwrap();
    let rate = spec.rate.unwrap();
    assert_eq!((rate.batch_size, rate.api_calls_per_second), (7, 2.5));
    assert_eq!(spec.output.unwrap().keep_bytes, 100);
    assert_eq!(spec.command.unwrap().execution_timeout_seconds, 90);
}
