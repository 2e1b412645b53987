//! A refused campaign, said in the words its author wrote. The controller
//! names each broken rule by its field in the API, in a `google.rpc`
//! BadRequest (`spec.targets.account_ids[3]`, `spec.stages[1].bake_seconds`).
//! The author wrote a campaign file's key (`targets.accounts[3]`,
//! `stages[1].bake`) or a flag (`--account 12345`). [`Written`] saw the
//! file and the flags the spec was built from, so it can say which.

use muster_proto::v1::{CampaignSpec, Command, command};
use tonic_types::StatusExt as _;

use crate::args::SpecArgs;
use crate::spec::{Keys, Source};

/// How a spec was written: by a file (if any), then flags over it.
#[derive(Debug, Clone)]
pub struct Written {
    file: Option<Source>,
    /// The spec as the file alone gave it: a list's entries from the file
    /// come first, the flags' after them.
    from_file: CampaignSpec,
    args: SpecArgs,
}

/// The spec `args` describe, as [`crate::spec::build`] makes it, and how it
/// was written, so that the controller's refusal of it can name what its
/// author wrote.
pub fn written(args: &SpecArgs) -> anyhow::Result<(CampaignSpec, Written)> {
    let (from_file, file) = crate::spec::from_file(args)?;
    let spec = crate::spec::with_flags(from_file.clone(), args)?;
    let written = Written {
        file,
        from_file,
        args: args.clone(),
    };
    Ok((spec, written))
}

/// Where the author wrote a field.
#[derive(Debug, PartialEq, Eq)]
struct Spot {
    /// Its key in a campaign file, with its indices.
    key: String,
    /// The flag that sets it, if one does.
    flag: Option<&'static str>,
    by: By,
}

/// Who gave a field its value.
#[derive(Debug, PartialEq, Eq)]
enum By {
    File,
    /// The flag; for one of a list's entries, the value given with it.
    Flag(Option<String>),
    /// A list with entries from both.
    Both,
}

impl Written {
    /// A refusal's broken rules, a line each, its fields said as the author
    /// wrote them: fields under `prefix` (where the spec is in the request,
    /// "spec.") by this, others by `other` (None: as the API names them).
    /// None for anything but a refusal with a BadRequest.
    pub fn refusal(
        &self,
        status: &tonic::Status,
        prefix: &str,
        other: impl Fn(&str) -> Option<String>,
    ) -> Option<Vec<String>> {
        if status.code() != tonic::Code::InvalidArgument {
            return None;
        }
        let bad = status.get_details_bad_request()?;
        // A rule about several fields comes as one violation per field, with
        // the same description, one after the other; it is said once, naming
        // them all.
        let mut rules: Vec<(Vec<String>, &str)> = Vec::new();
        for v in &bad.field_violations {
            let field = match v.field.strip_prefix(prefix) {
                Some(inner) => self.said(inner),
                None => other(&v.field).unwrap_or_else(|| v.field.clone()),
            };
            match rules.last_mut() {
                Some((named, rule)) if *rule == v.description => named.push(field),
                _ => rules.push((vec![field], &v.description)),
            }
        }
        let lines: Vec<String> = rules
            .into_iter()
            .map(|(fields, rule)| format!("{}: {}", fields.join(", "), self.rule(rule)))
            .collect();
        (!lines.is_empty()).then_some(lines)
    }

    /// A field of the spec (`targets.account_ids[3]`) as the author wrote
    /// it: "targets.accounts[3] in patch.yaml", "--account 12345".
    fn said(&self, api: &str) -> String {
        let Some(spot) = self.locate(api) else {
            return api.to_owned();
        };
        let in_file = |spot: &Spot| match &self.file {
            None => spot.key.clone(),
            Some(file) => format!("{} in {}", file_key(file, &spot.key, api), file.name),
        };
        let flag = spot.flag.unwrap_or_default();
        match &spot.by {
            By::File => in_file(&spot),
            By::Flag(None) => flag.to_owned(),
            By::Flag(Some(value)) => format!("{flag} {}", quoted(value)),
            By::Both => format!("{} and {flag}", in_file(&spot)),
        }
    }

    /// A field a rule mentions, as the author would set it:
    /// "targets.accounts or --account".
    fn mention(&self, api: &str) -> String {
        let Some(spot) = self.locate(api) else {
            return api.to_owned();
        };
        let key = match &self.file {
            Some(file) => file_key(file, &spot.key, api),
            None if spot.flag.is_some() => String::new(),
            None => spot.key.clone(),
        };
        match spot.flag {
            Some(flag) if key.is_empty() => flag.to_owned(),
            Some(flag) => format!("{key} or {flag}"),
            None => key,
        }
    }

    /// A rule's text with the fields it mentions said as the author would
    /// set them.
    fn rule(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find(|c: char| c.is_ascii_lowercase()) {
            out.push_str(&rest[..start]);
            let word = &rest[start..];
            let end = word
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "_.[]".contains(c)))
                .unwrap_or(word.len());
            // A sentence's full stop is not part of a field.
            let token = word[..end].trim_end_matches('.');
            let at_word_start = out.chars().last().is_none_or(|c| !c.is_alphanumeric() && c != '_');
            if at_word_start && token.contains('.') && self.locate(token).is_some() {
                out.push_str(&self.mention(token));
            } else {
                out.push_str(token);
            }
            rest = &word[token.len()..];
        }
        out.push_str(rest);
        out
    }

    /// Where the author wrote the spec's field `api`; None for a field this
    /// does not know (it is then said as the API names it).
    fn locate(&self, api: &str) -> Option<Spot> {
        let path = parse(api)?;
        match path.as_slice() {
            [head, rest @ ..] if head.is("targets") => self.target(rest),
            [head, rest @ ..] if head.is("command") => {
                self.command("command", self.from_file.command.as_ref(), rest, true)
            }
            [head, rest @ ..] if head.name == "then" => match head.sub {
                Some(Sub::Index(i)) => self.command(&format!("then[{i}]"), self.from_file.then.get(i), rest, false),
                _ if rest.is_empty() => Some(file_only("then".into())),
                _ => None,
            },
            [head, rest @ ..] if head.name == "stages" => match head.sub {
                Some(Sub::Index(i)) => self.stage(i, rest),
                _ if rest.is_empty() => Some(file_only("stages".into())),
                _ => None,
            },
            [group, field] if group.sub.is_none() && field.sub.is_none() => self.setting(&group.name, &field.name),
            [head] if head.name == "labels" => Some(self.label(head.sub.as_ref())),
            [head] if head.sub.is_none() => self.top(&head.name),
            _ => None,
        }
    }

    fn top(&self, name: &str) -> Option<Spot> {
        let a = &self.args;
        Some(match name {
            "name" => scalar("name".into(), "--name", a.name.is_some()),
            "client_token" => scalar("client_token".into(), "--client-token", a.client_token.is_some()),
            "confirm_large" => scalar("confirm_large".into(), "--confirm-large", a.confirm_large),
            "description" => file_only("description".into()),
            _ => return None,
        })
    }

    /// `labels` or `labels['KEY']`: a `--label KEY=...` wins over the file.
    fn label(&self, sub: Option<&Sub>) -> Spot {
        let flags = &self.args.labels;
        match sub {
            Some(Sub::Key(key)) => {
                let flag = flags
                    .iter()
                    .rev()
                    .find(|l| l.split_once('=').is_some_and(|(k, _)| k == key));
                Spot {
                    key: entry("labels", key),
                    flag: Some("--label"),
                    by: flag.map_or(By::File, |l| By::Flag(Some(l.clone()))),
                }
            }
            _ => list("labels".into(), "--label", self.from_file.labels.len(), flags.len()),
        }
    }

    fn target(&self, rest: &[Segment]) -> Option<Spot> {
        let file = self.from_file.targets.clone().unwrap_or_default();
        let a = &self.args;
        let [field, tail @ ..] = rest else {
            return Some(file_only("targets".into()));
        };
        let (key, flag, flags, in_file): (&str, &'static str, &[String], usize) = match field.name.as_str() {
            "account_ids" => ("accounts", "--account", &a.accounts, file.account_ids.len()),
            "organizational_unit_ids" => ("ous", "--ou", &a.ous, file.organizational_unit_ids.len()),
            "exclude_account_ids" => (
                "exclude_accounts",
                "--exclude-account",
                &a.exclude_accounts,
                file.exclude_account_ids.len(),
            ),
            "regions" => ("regions", "--region", &a.regions, file.regions.len()),
            "instance_ids" => ("instance_ids", "--instance", &a.instances, file.instance_ids.len()),
            "platforms" => ("platforms", "--platform", &a.platforms, file.platforms.len()),
            "tags" => {
                let keys: Vec<&str> = file.tags.iter().map(|t| t.key.as_str()).collect();
                return tag("targets.tags", Some(("--tag", &a.tags)), &keys, field.sub.as_ref());
            }
            "scopes" => {
                let mut key = format!("targets.{field}");
                for segment in tail {
                    let name = if segment.is("account_id") {
                        "account"
                    } else {
                        &segment.name
                    };
                    key.push_str(&format!(".{}", Segment::new(name, segment.sub.clone())));
                }
                return Some(file_only(key));
            }
            "from_campaign" => {
                let from = file.from_campaign.unwrap_or_default();
                let at = "targets.from_campaign";
                return Some(match tail {
                    [] => file_only(at.into()),
                    [field] if field.is("campaign_id") => {
                        scalar(format!("{at}.id"), "--from-campaign", a.from_campaign.is_some())
                    }
                    [field] if field.name == "statuses" => listed(
                        format!("{at}.statuses"),
                        ("--from-status", &a.from_statuses),
                        from.statuses.len(),
                        field.sub.as_ref(),
                    ),
                    [field] if field.is("non_compliant") => {
                        scalar(format!("{at}.non_compliant"), "--non-compliant", a.non_compliant)
                    }
                    [field] if field.is("critical") => scalar(format!("{at}.critical"), "--critical", a.critical),
                    [field] if field.is("follow_reruns") => {
                        scalar(format!("{at}.follow_reruns"), "--follow-reruns", a.follow_reruns)
                    }
                    [field, ..] => file_only(format!("{at}.{field}")),
                });
            }
            _ => return None,
        };
        if !tail.is_empty() {
            return None;
        }
        Some(listed(
            format!("targets.{key}"),
            (flag, flags),
            in_file,
            field.sub.as_ref(),
        ))
    }

    /// A field of a command: the first (`command`, which flags may set) or
    /// a later one (`then[i]`, only in a file); `in_file` is it as the file
    /// gave it.
    fn command(&self, at: &str, in_file: Option<&Command>, rest: &[Segment], flags: bool) -> Option<Spot> {
        let a = &self.args;
        let names: Vec<&str> = rest.iter().map(|s| s.name.as_str()).collect();
        let given = |flag: bool| flags && flag;
        let linux = given(!a.linux.is_empty() || a.linux_file.is_some());
        let windows = given(!a.windows.is_empty() || a.windows_file.is_some());
        Some(match names.as_slice() {
            [] => file_only(at.to_owned()),
            ["script"] if linux || windows => Spot {
                key: format!("{at}.linux"),
                flag: Some("--linux"),
                by: By::Flag(None),
            },
            ["script"] => file_only(format!("{at}.linux")),
            ["script", "linux_lines"] => lines(format!("{at}.linux"), "--linux", a.linux_file.is_some(), linux),
            ["script", "windows_lines"] => {
                lines(format!("{at}.windows"), "--windows", a.windows_file.is_some(), windows)
            }
            ["script", "working_directory"] => scalar(
                format!("{at}.working_directory"),
                "--working-directory",
                given(a.working_directory.is_some()),
            ),
            ["document"] | ["document", "name"] => {
                scalar(format!("{at}.document"), "--document", given(a.document.is_some()))
            }
            ["document", "version"] => scalar(
                format!("{at}.document_version"),
                "--document-version",
                given(a.document_version.is_some()),
            ),
            ["document", "parameters"] => match rest[1].sub.as_ref() {
                Some(Sub::Key(name)) => {
                    let flag = a
                        .params
                        .iter()
                        .find(|p| flags && p.split_once('=').is_some_and(|(n, _)| n == name));
                    Spot {
                        key: entry(&format!("{at}.parameters"), name),
                        flag: Some("--param"),
                        by: flag.map_or(By::File, |p| By::Flag(Some(p.clone()))),
                    }
                }
                _ => {
                    let in_file = match in_file.and_then(|c| c.kind.as_ref()) {
                        Some(command::Kind::Document(d)) => d.parameters.len(),
                        _ => 0,
                    };
                    list(
                        format!("{at}.parameters"),
                        "--param",
                        in_file,
                        if flags { a.params.len() } else { 0 },
                    )
                }
            },
            ["execution_timeout_seconds"] => scalar(
                format!("{at}.execution_timeout"),
                "--execution-timeout",
                given(a.execution_timeout.is_some()),
            ),
            ["delivery_timeout_seconds"] => scalar(
                format!("{at}.delivery_timeout"),
                "--delivery-timeout",
                given(a.delivery_timeout.is_some()),
            ),
            _ => return None,
        })
        .map(|spot| if flags { spot } else { without_flag(spot) })
    }

    /// A field of stage `i`, which only a file writes.
    fn stage(&self, i: usize, rest: &[Segment]) -> Option<Spot> {
        let at = format!("stages[{i}]");
        let [field, tail @ ..] = rest else {
            return Some(file_only(at));
        };
        if field.name == "tags" {
            let stage = self.from_file.stages.get(i);
            let keys: Vec<&str> = stage
                .map(|s| s.tags.iter().map(|t| t.key.as_str()).collect())
                .unwrap_or_default();
            return tag(&format!("{at}.tags"), None, &keys, field.sub.as_ref());
        }
        if !tail.is_empty() {
            return None;
        }
        let name = match field.name.as_str() {
            "account_ids" => "accounts",
            "bake_seconds" => "bake",
            name @ ("name" | "ous" | "regions" | "share" | "max_concurrency" | "max_errors" | "gate") => name,
            _ => return None,
        };
        Some(file_only(format!("{at}.{}", Segment::new(name, field.sub.clone()))))
    }

    /// `rate`, `output` and `access`: a flag wins over the file.
    fn setting(&self, group: &str, field: &str) -> Option<Spot> {
        let a = &self.args;
        let (key, flag, given) = match (group, field) {
            ("rate", "max_concurrency") => ("max_concurrency", "--max-concurrency", a.max_concurrency.is_some()),
            ("rate", "max_errors") => ("max_errors", "--max-errors", a.max_errors.is_some()),
            ("rate", "batch_size") => ("batch_size", "--batch-size", a.batch_size.is_some()),
            ("rate", "api_calls_per_second") => ("api_calls_per_second", "--api-rate", a.api_rate.is_some()),
            ("output", "s3_bucket") => ("s3_bucket", "--s3-bucket", a.s3_bucket.is_some()),
            ("output", "s3_key_prefix") => ("s3_key_prefix", "--s3-prefix", a.s3_prefix.is_some()),
            ("output", "cloudwatch_log_group") => ("cloudwatch_log_group", "--log-group", a.log_group.is_some()),
            ("output", "keep_bytes") => ("keep_bytes", "--keep-bytes", a.keep_bytes.is_some()),
            ("access", "role_name") => ("role_name", "--role-name", a.role_name.is_some()),
            ("access", "role_arn_template") => (
                "role_arn_template",
                "--role-arn-template",
                a.role_arn_template.is_some(),
            ),
            ("access", "external_id") => ("external_id", "--external-id", a.external_id.is_some()),
            ("access", "session_duration_seconds") => {
                ("session_duration", "--session-duration", a.session_duration.is_some())
            }
            ("access", "partition") => ("partition", "--partition", a.partition.is_some()),
            _ => return None,
        };
        Some(scalar(format!("{group}.{key}"), flag, given))
    }
}

/// A field's key in `file`: a campaign file's own, or the API's.
fn file_key(file: &Source, key: &str, api: &str) -> String {
    match file.keys {
        Keys::Campaign => key.to_owned(),
        Keys::Api => format!("spec.{}", camel_path(api)),
    }
}

/// A field only a file writes.
fn file_only(key: String) -> Spot {
    Spot {
        key,
        flag: None,
        by: By::File,
    }
}

/// A field a flag replaces when `given`.
fn scalar(key: String, flag: &'static str, given: bool) -> Spot {
    Spot {
        key,
        flag: Some(flag),
        by: if given { By::Flag(None) } else { By::File },
    }
}

/// A list's entry (or the whole list) where the file's entries come first
/// and the flags' values after them.
fn listed(key: String, (flag, flags): (&'static str, &[String]), in_file: usize, sub: Option<&Sub>) -> Spot {
    match sub {
        Some(Sub::Index(i)) => Spot {
            key: format!("{key}[{i}]"),
            flag: Some(flag),
            by: match i.checked_sub(in_file) {
                None => By::File,
                Some(j) => By::Flag(flags.get(j).cloned()),
            },
        },
        _ => list(key, flag, in_file, flags.len()),
    }
}

/// A whole list: the file's entries and the flags' after them.
fn list(key: String, flag: &'static str, in_file: usize, flags: usize) -> Spot {
    let by = match (in_file, flags) {
        (_, 0) => By::File,
        (0, _) => By::Flag(None),
        _ => By::Both,
    };
    Spot {
        key,
        flag: Some(flag),
        by,
    }
}

/// Script lines: given by flags, they replace the file's; `--linux-file`
/// may give them too.
fn lines(key: String, flag: &'static str, from_script_file: bool, given: bool) -> Spot {
    let flag = match (flag, from_script_file) {
        ("--linux", true) => "--linux-file",
        ("--windows", true) => "--windows-file",
        _ => flag,
    };
    scalar(key, flag, given)
}

/// A tag filter (`tags[i]`, its key or values): the file's tags are a map,
/// so a filter is named by its key; `--tag` filters follow them.
fn tag(at: &str, flags: Option<(&'static str, &[String])>, keys: &[&str], sub: Option<&Sub>) -> Option<Spot> {
    let (flag, given) = flags.map_or((None, &[][..]), |(flag, given)| (Some(flag), given));
    Some(match sub {
        Some(Sub::Index(i)) => match keys.get(*i) {
            Some(key) => Spot {
                key: entry(at, key),
                flag,
                by: By::File,
            },
            None => Spot {
                key: format!("{at}[{i}]"),
                flag,
                by: By::Flag(Some(given.get(i - keys.len())?.clone())),
            },
        },
        _ => match flag {
            Some(flag) => list(at.to_owned(), flag, keys.len(), given.len()),
            None => file_only(at.to_owned()),
        },
    })
}

/// The entry `key` of the map at `at` as a file writes it: `labels.team`,
/// or `labels['team owner']` for a key that is more than a word.
fn entry(at: &str, key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c)) {
        format!("{at}.{key}")
    } else {
        format!("{at}['{key}']")
    }
}

/// The spot of a field no flag sets (a later command's).
fn without_flag(spot: Spot) -> Spot {
    Spot {
        flag: None,
        by: By::File,
        ..spot
    }
}

/// A flag's value as a shell would need it.
fn quoted(value: &str) -> String {
    if !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.,=:/%@+".contains(c))
    {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// One step of a field's path: a name, and an index or a map's key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    name: String,
    sub: Option<Sub>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Sub {
    Index(usize),
    Key(String),
}

impl Segment {
    fn new(name: &str, sub: Option<Sub>) -> Self {
        Segment {
            name: name.to_owned(),
            sub,
        }
    }

    fn is(&self, name: &str) -> bool {
        self.name == name && self.sub.is_none()
    }
}

impl std::fmt::Display for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        match &self.sub {
            None => Ok(()),
            Some(Sub::Index(i)) => write!(f, "[{i}]"),
            Some(Sub::Key(key)) => write!(f, "['{key}']"),
        }
    }
}

/// A path as the controller writes one: `targets.account_ids[3]`,
/// `command.document.parameters['Operation']`. None for anything else.
fn parse(path: &str) -> Option<Vec<Segment>> {
    let mut segments = Vec::new();
    let mut rest = path;
    loop {
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        let name = &rest[..end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return None;
        }
        rest = &rest[end..];
        let sub = if let Some(inner) = rest.strip_prefix("['") {
            let close = inner.find("']")?;
            rest = &inner[close + 2..];
            Some(Sub::Key(inner[..close].to_owned()))
        } else if let Some(inner) = rest.strip_prefix('[') {
            let close = inner.find(']')?;
            rest = &inner[close + 1..];
            Some(Sub::Index(inner[..close].parse().ok()?))
        } else {
            None
        };
        segments.push(Segment::new(name, sub));
        match rest.strip_prefix('.') {
            Some(next) => rest = next,
            None if rest.is_empty() => return Some(segments),
            None => return None,
        }
    }
}

/// A path with its names in proto3 JSON's lowerCamelCase, as a campaign
/// document writes them.
fn camel_path(api: &str) -> String {
    match parse(api) {
        Some(path) => path
            .into_iter()
            .map(|s| Segment::new(&camel(&s.name), s.sub).to_string())
            .collect::<Vec<_>>()
            .join("."),
        None => api.to_owned(),
    }
}

fn camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(file_text: Option<&str>, args: SpecArgs) -> (Written, Option<tempfile::TempDir>) {
        let mut args = args;
        let dir = file_text.map(|text| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("patch.yaml");
            std::fs::write(&path, text).unwrap();
            args.file = Some(path);
            dir
        });
        let (_, mut written) = super::written(&args).unwrap();
        if let Some(file) = &mut written.file {
            file.name = "patch.yaml".into();
        }
        (written, dir)
    }

    #[test]
    fn paths_parse_and_read_back() {
        for path in [
            "targets.account_ids[3]",
            "command.document.parameters['Operation']",
            "stages[1].tags[0].values[2]",
            "labels['team.owner']",
        ] {
            let parsed = parse(path).unwrap();
            let back: Vec<String> = parsed.iter().map(ToString::to_string).collect();
            assert_eq!(back.join("."), path);
        }
        assert_eq!(parse("targets..regions"), None);
        assert_eq!(parse("targets[x]"), None);
        assert_eq!(parse("Not a path"), None);
        assert_eq!(
            camel_path("targets.account_ids[3]"),
            "targets.accountIds[3]",
            "a campaign document's names"
        );
    }

    #[test]
    fn a_list_entry_is_said_where_it_was_written_in_the_file_or_by_a_flag() {
        let (w, _dir) = written(
            Some("targets:\n  accounts: [111111111111, 12345]\n  tags:\n    Env: prod\ncommand:\n  linux: uptime\n"),
            SpecArgs {
                accounts: vec!["222222222222".into(), "9".into()],
                regions: vec!["us-nowhere-1".into()],
                tags: vec!["Role=web".into()],
                ..Default::default()
            },
        );
        assert_eq!(w.said("targets.account_ids[1]"), "targets.accounts[1] in patch.yaml");
        assert_eq!(w.said("targets.account_ids[3]"), "--account 9");
        assert_eq!(
            w.said("targets.account_ids"),
            "targets.accounts in patch.yaml and --account"
        );
        assert_eq!(w.said("targets.regions[0]"), "--region us-nowhere-1");
        assert_eq!(w.said("targets.tags[0].key"), "targets.tags.Env in patch.yaml");
        assert_eq!(w.said("targets.tags[1].values[0]"), "--tag Role=web");
        assert_eq!(w.said("command.script.linux_lines"), "command.linux in patch.yaml");
        // A field this does not know is said as the API names it.
        assert_eq!(w.said("targets.something_new[0]"), "targets.something_new[0]");
    }

    #[test]
    fn an_earlier_campaigns_targets_are_said_by_the_files_keys_or_the_flags() {
        let (w, _dir) = written(
            Some("targets:\n  from_campaign:\n    id: not-a-uuid\n    statuses: [failed]\ncommand:\n  linux: uptime\n"),
            SpecArgs {
                from_statuses: vec!["error".into()],
                ..Default::default()
            },
        );
        assert_eq!(
            w.said("targets.from_campaign.campaign_id"),
            "targets.from_campaign.id in patch.yaml"
        );
        assert_eq!(
            w.said("targets.from_campaign.statuses[0]"),
            "targets.from_campaign.statuses[0] in patch.yaml"
        );
        assert_eq!(w.said("targets.from_campaign.statuses[1]"), "--from-status error");
        let (w, _dir) = written(
            None,
            SpecArgs {
                from_campaign: Some("x".into()),
                linux: vec!["uptime".into()],
                ..Default::default()
            },
        );
        assert_eq!(w.said("targets.from_campaign.campaign_id"), "--from-campaign");
        let (w, _dir) = written(
            Some("targets:\n  from_campaign:\n    non_compliant: true\ncommand:\n  linux: uptime\n"),
            SpecArgs {
                from_campaign: Some("x".into()),
                critical: true,
                ..Default::default()
            },
        );
        assert_eq!(
            w.said("targets.from_campaign.non_compliant"),
            "targets.from_campaign.non_compliant in patch.yaml"
        );
        assert_eq!(w.said("targets.from_campaign.critical"), "--critical");
    }

    #[test]
    fn a_setting_is_the_flags_when_given_and_the_files_otherwise() {
        let (w, _dir) = written(
            Some(
                "targets:\n  accounts: [111111111111]\ncommand:\n  document: AWS-RunPatchBaseline\n  parameters:\n    Operation: Instal\n  execution_timeout: 2h\nrate:\n  batch_size: 80\nstages:\n  - name: canary\n    accounts: [1]\n    bake: 10m\n  - name: rest\n    tags:\n      Ring: [two]\nthen:\n  - linux: reboot\n    execution_timeout: 5m\n",
            ),
            SpecArgs {
                max_errors: Some("x".into()),
                params: vec!["RebootOption=Sometimes".into()],
                ..Default::default()
            },
        );
        assert_eq!(w.said("rate.batch_size"), "rate.batch_size in patch.yaml");
        assert_eq!(w.said("rate.max_errors"), "--max-errors");
        assert_eq!(
            w.said("command.document.parameters['Operation']"),
            "command.parameters.Operation in patch.yaml"
        );
        assert_eq!(
            w.said("command.document.parameters['RebootOption']"),
            "--param RebootOption=Sometimes"
        );
        assert_eq!(
            w.said("command.execution_timeout_seconds"),
            "command.execution_timeout in patch.yaml"
        );
        assert_eq!(
            w.said("stages[0].account_ids[0]"),
            "stages[0].accounts[0] in patch.yaml"
        );
        assert_eq!(w.said("stages[0].bake_seconds"), "stages[0].bake in patch.yaml");
        assert_eq!(
            w.said("stages[1].tags[0].values[0]"),
            "stages[1].tags.Ring in patch.yaml"
        );
        assert_eq!(
            w.said("command.document.parameters['bad name!']"),
            "command.parameters['bad name!'] in patch.yaml",
            "a key that is more than a word is quoted"
        );
        assert_eq!(
            w.said("then[0].execution_timeout_seconds"),
            "then[0].execution_timeout in patch.yaml",
            "flags set the first command only"
        );
    }

    #[test]
    fn without_a_file_fields_are_flags_and_rules_mention_flags() {
        let (w, _dir) = written(
            None,
            SpecArgs {
                regions: vec!["us-east-1".into()],
                linux: vec!["uptime".into()],
                batch_size: Some(80),
                ..Default::default()
            },
        );
        assert_eq!(w.said("rate.batch_size"), "--batch-size");
        assert_eq!(w.said("command.script.linux_lines"), "--linux");
        assert_eq!(w.said("targets"), "targets");
        assert_eq!(
            w.rule(
                "name at least one account id (targets.account_ids), OU (targets.organizational_unit_ids) or scope (targets.scopes)."
            ),
            "name at least one account id (--account), OU (--ou) or scope (targets.scopes)."
        );
    }

    #[test]
    fn rules_mention_a_files_keys_and_leave_other_words_alone() {
        let (w, _dir) = written(
            Some("targets:\n  regions: [cn-north-1]\ncommand:\n  linux: uptime\n"),
            SpecArgs::default(),
        );
        assert_eq!(
            w.rule("'cn-north-1' is in partition aws-cn, not the campaign's aws (access.partition)"),
            "'cn-north-1' is in partition aws-cn, not the campaign's aws (access.partition or --partition)"
        );
        assert_eq!(
            w.rule("give script lines (then[0].script) or a document (then[0].document)"),
            "give script lines (then[0].linux) or a document (then[0].document)"
        );
        assert_eq!(w.rule("1.5 e.g. is a.b"), "1.5 e.g. is a.b");
    }

    #[test]
    fn a_campaign_document_is_named_by_the_apis_keys_under_spec() {
        let (w, _dir) = written(
            Some("spec:\n  targets:\n    accountIds: ['12']\n  command:\n    script:\n      linuxLines: [uptime]\n"),
            SpecArgs {
                accounts: vec!["3".into()],
                ..Default::default()
            },
        );
        assert_eq!(
            w.said("targets.account_ids[0]"),
            "spec.targets.accountIds[0] in patch.yaml"
        );
        assert_eq!(w.said("targets.account_ids[1]"), "--account 3");
        assert_eq!(
            w.said("command.script.linux_lines"),
            "spec.command.script.linuxLines in patch.yaml"
        );
    }

    #[test]
    fn a_refusal_is_said_line_by_line_and_other_failures_pass_through() {
        use tonic_types::{ErrorDetails, FieldViolation};
        let (w, _dir) = written(
            Some("targets:\n  accounts: [12345]\ncommand:\n  linux: uptime\n"),
            SpecArgs {
                regions: vec!["mars-1".into()],
                ..Default::default()
            },
        );
        let status = tonic::Status::with_error_details(
            tonic::Code::InvalidArgument,
            "targets.account_ids[0]: ...; targets.regions[0]: ...",
            ErrorDetails::with_bad_request(vec![
                FieldViolation::new("spec.targets.account_ids[0]", "'12345' is not 12 digits"),
                FieldViolation::new("spec.targets.regions[0]", "'mars-1' is not a region"),
                FieldViolation::new("expected_version", "is 3, not 2"),
                FieldViolation::new("spec.cron", "give one of them, not both"),
                FieldViolation::new("spec.at", "give one of them, not both"),
            ]),
        );
        let lines = w
            .refusal(&status, "spec.", |_| None)
            .expect("a refusal with a BadRequest");
        assert_eq!(
            lines,
            [
                "targets.accounts[0] in patch.yaml: '12345' is not 12 digits",
                "--region mars-1: 'mars-1' is not a region",
                "expected_version: is 3, not 2",
                "cron, at: give one of them, not both",
            ]
        );
        // No BadRequest (an older controller), or not a refusal: as it came.
        let plain = tonic::Status::invalid_argument("spec: is required");
        assert_eq!(w.refusal(&plain, "spec.", |_| None), None);
        let other = tonic::Status::with_error_details(
            tonic::Code::FailedPrecondition,
            "not now",
            ErrorDetails::with_bad_request(vec![FieldViolation::new("spec.name", "x")]),
        );
        assert_eq!(w.refusal(&other, "spec.", |_| None), None);
    }
}
