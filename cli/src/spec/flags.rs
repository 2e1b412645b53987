//! The flags over a spec: a flag's value replaces the file's, a flag's list
//! adds to the file's.

use super::*;

/// `slot` takes the flag's value when the flag was given.
fn set<T: Clone>(slot: &mut T, flag: &Option<T>) {
    if let Some(value) = flag {
        *slot = value.clone();
    }
}

/// The flags over a spec read from a file: a flag's value replaces the
/// file's, a flag's list adds to the file's (script lines replace them).
pub(crate) fn with_flags(mut spec: CampaignSpec, args: &SpecArgs) -> anyhow::Result<CampaignSpec> {
    set(&mut spec.name, &args.name);
    set(&mut spec.client_token, &args.client_token);
    spec.confirm_large |= args.confirm_large;
    for label in &args.labels {
        let (key, value) = key_value("--label", label)?;
        spec.labels.insert(key.to_owned(), value.to_owned());
    }

    let targets = spec.targets.get_or_insert_default();
    targets.account_ids.extend(args.accounts.iter().cloned());
    targets.organizational_unit_ids.extend(args.ous.iter().cloned());
    targets
        .exclude_account_ids
        .extend(args.exclude_accounts.iter().cloned());
    targets.regions.extend(args.regions.iter().cloned());
    targets.instance_ids.extend(args.instances.iter().cloned());
    for p in &args.platforms {
        targets.platforms.push(platform("--platform", p)?);
    }
    if let Some(id) = &args.from_campaign {
        targets.from_campaign.get_or_insert_default().campaign_id = id.clone();
    }
    let choosing = [
        ("--from-status", !args.from_statuses.is_empty()),
        ("--non-compliant", args.non_compliant),
        ("--critical", args.critical),
        ("--follow-reruns", args.follow_reruns),
    ];
    for (flag, given) in choosing {
        if given && targets.from_campaign.is_none() {
            bail!(
                "{flag}: chooses among the targets of an earlier campaign; name it with --from-campaign \
                 (or targets.from_campaign in the file)"
            );
        }
    }
    if let Some(from) = targets.from_campaign.as_mut() {
        for name in &args.from_statuses {
            from.statuses.push(end_status("--from-status", name)?);
        }
        from.non_compliant |= args.non_compliant;
        from.critical |= args.critical;
        from.follow_reruns |= args.follow_reruns;
        if from.campaign_id.is_empty() {
            bail!("targets.from_campaign.id: is required; give the campaign in the file or with --from-campaign");
        }
    }
    for tag in &args.tags {
        let (key, values) = tag.split_once('=').unwrap_or((tag.as_str(), ""));
        targets.tags.push(TagFilter {
            key: key.to_owned(),
            values: values.split(',').filter(|v| !v.is_empty()).map(str::to_owned).collect(),
        });
    }

    let command = spec.command.get_or_insert_default();
    command.kind = command_with_flags(command.kind.take(), args)?;
    if let Some(value) = &args.execution_timeout {
        command.execution_timeout_seconds = duration_of("--execution-timeout", value, &EXECUTION_TIMEOUT)?;
    }
    if let Some(value) = &args.delivery_timeout {
        command.delivery_timeout_seconds = duration_of("--delivery-timeout", value, &DELIVERY_TIMEOUT)?;
    }

    let rate = spec.rate.get_or_insert_default();
    set(&mut rate.max_concurrency, &args.max_concurrency);
    set(&mut rate.max_errors, &args.max_errors);
    if let Some(n) = args.batch_size {
        rate.batch_size = not_zero("--batch-size", n, &BATCH_SIZE)?;
    }
    if let Some(n) = args.api_rate {
        rate.api_calls_per_second = not_zero("--api-rate", n, &API_RATE)?;
    }

    let output = spec.output.get_or_insert_default();
    set(&mut output.s3_bucket, &args.s3_bucket);
    set(&mut output.s3_key_prefix, &args.s3_prefix);
    set(&mut output.cloudwatch_log_group, &args.log_group);
    if let Some(n) = args.keep_bytes {
        output.keep_bytes = not_zero("--keep-bytes", n, &KEEP_BYTES)?;
    }

    let access = spec.access.get_or_insert_default();
    set(&mut access.role_name, &args.role_name);
    set(&mut access.role_arn_template, &args.role_arn_template);
    set(&mut access.external_id, &args.external_id);
    set(&mut access.partition, &args.partition);
    if let Some(value) = &args.session_duration {
        access.session_duration_seconds = duration_of("--session-duration", value, &SESSION_DURATION)?;
    }
    Ok(spec)
}

/// The first command's kind with the flags over it: script lines given
/// replace the file's for their platform; a document, its version and its
/// parameters add to or replace the file's.
fn command_with_flags(kind: Option<command::Kind>, args: &SpecArgs) -> anyhow::Result<Option<command::Kind>> {
    let (mut script, mut document) = match kind {
        Some(command::Kind::Script(script)) => (script, None),
        Some(command::Kind::Document(document)) => (Script::default(), Some(document)),
        None => (Script::default(), None),
    };
    if !args.linux.is_empty() || args.linux_file.is_some() {
        script.linux_lines = args.linux.clone();
        if let Some(path) = &args.linux_file {
            script.linux_lines.extend(lines_of(path)?);
        }
    }
    if !args.windows.is_empty() || args.windows_file.is_some() {
        script.windows_lines = args.windows.clone();
        if let Some(path) = &args.windows_file {
            script.windows_lines.extend(lines_of(path)?);
        }
    }
    set(&mut script.working_directory, &args.working_directory);
    if let Some(name) = &args.document {
        document.get_or_insert_default().name = name.clone();
    }
    let has_lines = !script.linux_lines.is_empty() || !script.windows_lines.is_empty();
    let Some(mut document) = document else {
        if let Some(param) = args.params.first() {
            bail!("--param: '{param}' is a document's parameter; name the document (--document or command.document)");
        }
        return Ok(has_lines.then_some(command::Kind::Script(script)));
    };
    if has_lines {
        bail!("command: give script lines or a document, not both");
    }
    if !script.working_directory.is_empty() {
        bail!("--working-directory: a script's, not a document's (a document takes it as a parameter, if at all)");
    }
    set(&mut document.version, &args.document_version);
    for param in &args.params {
        let (name, value) = key_value("--param", param)?;
        document
            .parameters
            .entry(name.to_owned())
            .or_default()
            .values
            .push(value.to_owned());
    }
    Ok(Some(command::Kind::Document(document)))
}
