//! A command of the campaign's sequence: script lines or a document.

use muster_common::domain::{check_document_name, check_document_version, clip};
use muster_proto::v1::{Command, Document, Script, command};

use super::{Errors, MAX_PARAMETER_BYTES, MAX_SCRIPT_BYTES};

/// Checks one command (`field` names it: "command", "then[0]") and fills
/// in its defaults.
pub(super) fn check_command(command: &mut Command, field: &str, errors: &mut Errors) {
    match &mut command.kind {
        None => errors.add(
            field,
            format!("give script lines ({field}.script) or a document ({field}.document)"),
        ),
        Some(command::Kind::Script(script)) => check_script(script, field, errors),
        Some(command::Kind::Document(document)) => check_document(document, field, errors),
    }
    // A document's 0 stays 0: the document's own timeout applies (two hours
    // a step for AWS-RunPatchBaseline), which workers read from SSM.
    let is_script = matches!(command.kind, Some(command::Kind::Script(_)));
    if command.execution_timeout_seconds == 0 && is_script {
        command.execution_timeout_seconds = 3_600;
    } else if command.execution_timeout_seconds > 172_800 {
        errors.add(
            format!("{field}.execution_timeout_seconds"),
            format!("{}; at most 172800 (48 hours)", command.execution_timeout_seconds),
        );
    }
    if command.delivery_timeout_seconds == 0 {
        command.delivery_timeout_seconds = 600;
    } else if !(30..=2_592_000).contains(&command.delivery_timeout_seconds) {
        errors.add(
            format!("{field}.delivery_timeout_seconds"),
            format!("{}; must be 30 to 2592000", command.delivery_timeout_seconds),
        );
    }
}

/// A script's lines (some for one platform at least, each platform's under
/// the size limit) and working directory; blank platforms are dropped.
fn check_script(script: &mut Script, field: &str, errors: &mut Errors) {
    let linux: usize = script.linux_lines.iter().map(|l| l.len() + 1).sum();
    let windows: usize = script.windows_lines.iter().map(|l| l.len() + 1).sum();
    let blank = |lines: &[String]| lines.iter().all(|l| l.trim().is_empty());
    if blank(&script.linux_lines) && blank(&script.windows_lines) {
        errors.add(
            format!("{field}.script"),
            "is empty: give linux_lines and/or windows_lines",
        );
    }
    if linux > MAX_SCRIPT_BYTES {
        errors.add(
            format!("{field}.script.linux_lines"),
            format!("{linux} bytes; at most {MAX_SCRIPT_BYTES}"),
        );
    }
    if windows > MAX_SCRIPT_BYTES {
        errors.add(
            format!("{field}.script.windows_lines"),
            format!("{windows} bytes; at most {MAX_SCRIPT_BYTES}"),
        );
    }
    if script.working_directory.len() > 4096 || script.working_directory.contains('\n') {
        errors.add(
            format!("{field}.script.working_directory"),
            "one line of at most 4,096 characters",
        );
    }
    if blank(&script.linux_lines) {
        script.linux_lines.clear();
    }
    if blank(&script.windows_lines) {
        script.windows_lines.clear();
    }
}

/// A document's name, version and parameters (their names, their size).
fn check_document(document: &Document, field: &str, errors: &mut Errors) {
    if let Err(e) = check_document_name(&document.name) {
        errors.add(format!("{field}.document.name"), e);
    }
    if !document.version.is_empty()
        && let Err(e) = check_document_version(&document.version)
    {
        errors.add(format!("{field}.document.version"), e);
    }
    let size: usize = document
        .parameters
        .iter()
        .map(|(k, v)| k.len() + v.values.iter().map(|x| x.len() + 4).sum::<usize>())
        .sum();
    if size > MAX_PARAMETER_BYTES {
        errors.add(
            format!("{field}.document.parameters"),
            format!("{size} bytes; at most {MAX_PARAMETER_BYTES}"),
        );
    }
    for name in document.parameters.keys() {
        if name.is_empty() || name.len() > 128 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            errors.add(
                format!("{field}.document.parameters['{}']", clip(name)),
                "names are 1 to 128 of letters, digits and _-.",
            );
        }
    }
}
