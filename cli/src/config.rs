//! The CLI's configuration file: named contexts (a controller, how to trust
//! it and how to sign in to it, and output choices), one of them current,
//! as kubectl and the AWS CLI keep theirs.
//!
//! A setting comes from, first to last: a flag, its environment variable,
//! the context (`--context`/`MUSTER_CONTEXT`, else the file's
//! `current-context`), the default. How to sign in (a token, a token file,
//! a client certificate, an AWS sign-in) is one setting: given by a flag or
//! the environment, none of the context's apply.
//!
//! The file is `MUSTER_CONFIG`, else `$XDG_CONFIG_HOME/muster/config.toml`,
//! else `~/.config/muster/config.toml`. It holds paths, never a token.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::ArgMatches;
use clap::ValueEnum as _;
use clap::parser::ValueSource;
use serde::{Deserialize, Serialize};

use crate::args::{Cli, Color, ConfigCommand, Output};

/// The configuration file.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConfigFile {
    /// The context used when none is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    /// Contexts by name.
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// One controller and how to talk to it. Paths are absolute, or relative to
/// the file's directory.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Context {
    /// The controller's CampaignService URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// CA certificate (path or PEM text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<String>,
    /// Client certificate (path or PEM text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<String>,
    /// Its key (path or PEM text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<String>,
    /// Name expected in the controller's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// File holding the bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// Sign in with the AWS identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_signin: Option<bool>,
    /// The controller's server id for the AWS sign-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    /// Output format: table, wide, json, yaml, csv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Colour: auto, always, never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

/// Where the file is: `MUSTER_CONFIG`, else under `XDG_CONFIG_HOME`, else
/// under `~/.config`; `None` when there is no home to find it in.
pub fn path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MUSTER_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|p| !p.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("muster").join("config.toml"))
}

impl ConfigFile {
    /// Reads the file at `path`; no file is an empty configuration.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read the configuration {}", path.display())),
        };
        let file: Self = toml::from_str(&text).map_err(|e| anyhow::anyhow!("configuration {}: {e}", path.display()))?;
        for (name, context) in &file.contexts {
            context
                .check(name)
                .map_err(|e| anyhow::anyhow!("configuration {}: {e}", path.display()))?;
        }
        Ok(file)
    }

    /// Writes the file whole: to a temporary file beside it, then renamed
    /// over it, so a reader never sees half of it. Only its owner may read
    /// it (it names key files).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let text = toml::to_string_pretty(self).context("the configuration serializes")?;
        let temporary = dir.join(format!(".config.toml.{}", std::process::id()));
        write_private(&temporary, &text).with_context(|| format!("cannot write {}", temporary.display()))?;
        std::fs::rename(&temporary, path).with_context(|| format!("cannot replace {}", path.display()))
    }

    /// The context to use: the one named, else the current one, else none.
    /// A name that is not there is an error that lists those that are.
    pub fn pick(&self, named: Option<&str>) -> anyhow::Result<Option<(&str, &Context)>> {
        let (field, name) = match (named, self.current_context.as_deref()) {
            (Some(name), _) => ("--context", name),
            (None, Some(name)) => ("current-context", name),
            (None, None) => return Ok(None),
        };
        self.named(field, name).map(Some)
    }

    /// The context `name`, which `field` (where it was written) names; one
    /// that is not there is an error that lists those that are.
    fn named(&self, field: &str, name: &str) -> anyhow::Result<(&str, &Context)> {
        match self.contexts.get_key_value(name) {
            Some((name, context)) => Ok((name.as_str(), context)),
            None => bail!("{field}: no context '{name}' (there are: {})", self.names()),
        }
    }

    fn names(&self) -> String {
        if self.contexts.is_empty() {
            "none; muster config set-context NAME --controller URL ... makes one".to_owned()
        } else {
            self.contexts.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

impl Context {
    /// Values the flags would refuse are refused here, naming the field.
    fn check(&self, name: &str) -> anyhow::Result<()> {
        if let Some(output) = &self.output {
            Output::from_str(output, true).map_err(|_| {
                anyhow::anyhow!("contexts.{name}.output: '{output}' is not one of table, wide, json, yaml, csv")
            })?;
        }
        if let Some(color) = &self.color {
            Color::from_str(color, true)
                .map_err(|_| anyhow::anyhow!("contexts.{name}.color: '{color}' is not one of auto, always, never"))?;
        }
        if let Some(controller) = &self.controller
            && !(controller.starts_with("http://") || controller.starts_with("https://"))
        {
            bail!("contexts.{name}.controller: '{controller}' is not an http:// or https:// URL");
        }
        Ok(())
    }

    /// The context with its relative paths made relative to `base` (the
    /// file's directory), as a path in a file is meant.
    fn resolved(&self, base: &Path) -> Self {
        let path = |value: &Option<String>| value.as_deref().map(|v| anchored(v, base));
        Self {
            tls_ca: path(&self.tls_ca),
            tls_cert: path(&self.tls_cert),
            tls_key: path(&self.tls_key),
            token_file: path(&self.token_file),
            ..self.clone()
        }
    }
}

/// Whether the user gave `id` (a flag or its environment variable).
fn given(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// One way to sign in when several are given: the command line's beats
/// the environment's, so `--tls-cert` typed while `MUSTER_TOKEN_FILE` is
/// exported signs in with the certificate (the controller takes a token
/// first, and would quietly ignore it). A certificate and a token both on
/// the command line are refused.
pub fn one_sign_in(cli: &mut Cli, matches: &ArgMatches) -> anyhow::Result<()> {
    let on_line = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    let token_on_line = on_line("token") || on_line("token_file");
    if on_line("tls_cert") && token_on_line {
        anyhow::bail!(
            "--tls-cert: give a client certificate or a token (--token, --token-file), not both: the controller \
             would take the token"
        );
    }
    if on_line("tls_cert") && !token_on_line {
        cli.token = None;
        cli.token_file = None;
    }
    Ok(())
}

/// Fills what the user did not give from the context in use (see the
/// module's documentation for the order). Returns the context's name.
pub fn layer(cli: &mut Cli, matches: &ArgMatches) -> anyhow::Result<Option<String>> {
    let Some(path) = path() else {
        return Ok(None);
    };
    let file = ConfigFile::load(&path)?;
    let Some((name, context)) = file.pick(cli.context.as_deref())? else {
        return Ok(None);
    };
    let base = path.parent().unwrap_or(Path::new("."));
    apply(cli, matches, &context.resolved(base))?;
    Ok(Some(name.to_owned()))
}

fn apply(cli: &mut Cli, matches: &ArgMatches, context: &Context) -> anyhow::Result<()> {
    if !given(matches, "controller")
        && let Some(controller) = &context.controller
    {
        cli.controller = controller.clone();
    }
    let fill = |slot: &mut Option<String>, id: &str, value: &Option<String>| {
        if !given(matches, id) && value.is_some() {
            slot.clone_from(value);
        }
    };
    fill(&mut cli.tls_ca, "tls_ca", &context.tls_ca);
    fill(&mut cli.tls_server_name, "tls_server_name", &context.tls_server_name);
    fill(&mut cli.server_id, "server_id", &context.server_id);
    // How to sign in is one choice: the user's, else the context's.
    let signs_in = ["token", "token_file", "aws_signin", "tls_cert", "tls_key"]
        .iter()
        .any(|id| given(matches, id));
    if !signs_in {
        cli.tls_cert.clone_from(&context.tls_cert);
        cli.tls_key.clone_from(&context.tls_key);
        cli.token_file = context.token_file.as_ref().map(PathBuf::from);
        cli.aws_signin = context.aws_signin.unwrap_or(false);
    }
    if !given(matches, "output")
        && let Some(output) = &context.output
    {
        cli.output = Output::from_str(output, true).map_err(|e| anyhow::anyhow!("output: {e}"))?;
    }
    if !given(matches, "color")
        && let Some(color) = &context.color
    {
        cli.color = Color::from_str(color, true).map_err(|e| anyhow::anyhow!("color: {e}"))?;
    }
    Ok(())
}

/// Runs `muster config ...`; prints what it did.
pub fn run(cli: &Cli, matches: &ArgMatches, command: &ConfigCommand) -> anyhow::Result<()> {
    let path = path().context("no configuration file: set MUSTER_CONFIG, XDG_CONFIG_HOME or HOME")?;
    let mut file = ConfigFile::load(&path)?;
    match command {
        ConfigCommand::GetContexts => {
            for (name, context) in &file.contexts {
                let mark = if file.current_context.as_deref() == Some(name) {
                    "*"
                } else {
                    " "
                };
                println!(
                    "{mark} {name}\t{}",
                    context.controller.as_deref().unwrap_or("(default controller)")
                );
            }
            if file.contexts.is_empty() {
                eprintln!("no contexts in {}", path.display());
            }
        }
        ConfigCommand::CurrentContext => match &file.current_context {
            Some(name) => println!("{name}"),
            None => bail!("no current context in {}", path.display()),
        },
        ConfigCommand::UseContext(args) => {
            file.named("use-context", &args.name)?;
            file.current_context = Some(args.name.clone());
            file.save(&path)?;
            eprintln!("using context {} ({})", args.name, path.display());
        }
        ConfigCommand::SetContext(args) => {
            let context = file.contexts.entry(args.name.clone()).or_default();
            set_from_flags(context, cli, matches)?;
            context.check(&args.name)?;
            if file.current_context.is_none() {
                file.current_context = Some(args.name.clone());
            }
            file.save(&path)?;
            eprintln!("context {} saved in {}", args.name, path.display());
        }
        ConfigCommand::DeleteContext(args) => {
            file.named("delete-context", &args.name)?;
            file.contexts.remove(&args.name);
            if file.current_context.as_deref() == Some(args.name.as_str()) {
                file.current_context = None;
            }
            file.save(&path)?;
            eprintln!("context {} deleted", args.name);
        }
        ConfigCommand::View => print!(
            "{}",
            toml::to_string_pretty(&file).context("the configuration serializes")?
        ),
    }
    Ok(())
}

/// A PEM-or-path setting with a relative path made relative to `base`; PEM
/// text and absolute paths stay as they are.
fn anchored(value: &str, base: &Path) -> String {
    if value.trim_start().starts_with("-----BEGIN") || Path::new(value).is_absolute() {
        value.to_owned()
    } else {
        base.join(value).display().to_string()
    }
}

/// `set-context`: the flags given on this command line (never the
/// environment's) over the context; paths made absolute, so the context
/// works from any directory.
fn set_from_flags(context: &mut Context, cli: &Cli, matches: &ArgMatches) -> anyhow::Result<()> {
    let on_line = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    let cwd = std::env::current_dir().context("the current directory")?;
    if on_line("token") {
        bail!("--token: a context keeps no token; put it in a file and give --token-file");
    }
    if on_line("controller") {
        context.controller = Some(cli.controller.clone());
    }
    for (id, value, slot) in [
        ("tls_ca", &cli.tls_ca, &mut context.tls_ca),
        ("tls_cert", &cli.tls_cert, &mut context.tls_cert),
        ("tls_key", &cli.tls_key, &mut context.tls_key),
    ] {
        if on_line(id)
            && let Some(value) = value
        {
            *slot = Some(anchored(value, &cwd));
        }
    }
    if on_line("token_file")
        && let Some(path) = &cli.token_file
    {
        context.token_file = Some(anchored(&path.display().to_string(), &cwd));
    }
    if on_line("tls_server_name") {
        context.tls_server_name.clone_from(&cli.tls_server_name);
    }
    if on_line("server_id") {
        context.server_id.clone_from(&cli.server_id);
    }
    if on_line("aws_signin") {
        context.aws_signin = Some(cli.aws_signin);
    }
    if on_line("output") {
        context.output = cli.output.to_possible_value().map(|v| v.get_name().to_owned());
    }
    if on_line("color") {
        context.color = cli.color.to_possible_value().map(|v| v.get_name().to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory as _, FromArgMatches as _};

    fn parse(args: &[&str]) -> (Cli, ArgMatches) {
        let matches = Cli::command()
            .try_get_matches_from(std::iter::once("muster").chain(args.iter().copied()))
            .expect("a valid command line");
        (Cli::from_arg_matches(&matches).expect("parsed"), matches)
    }

    fn prod() -> Context {
        Context {
            controller: Some("https://muster.prod:7070".into()),
            tls_ca: Some("ca.pem".into()),
            token_file: Some("/secure/token".into()),
            output: Some("wide".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_certificate_and_a_token_both_typed_are_refused() {
        let (mut cli, matches) = parse(&["--tls-cert", "admin.pem", "--tls-key", "admin.key", "ls"]);
        one_sign_in(&mut cli, &matches).unwrap();
        assert_eq!(cli.tls_cert.as_deref(), Some("admin.pem"));
        let (mut cli, matches) = parse(&["--tls-cert", "admin.pem", "--token-file", "t", "ls"]);
        let error = one_sign_in(&mut cli, &matches).unwrap_err().to_string();
        assert!(
            error.starts_with("--tls-cert: give a client certificate or a token"),
            "{error}"
        );
    }

    #[test]
    fn the_context_fills_what_no_flag_gave_and_flags_win() {
        let (mut cli, matches) = parse(&["ls"]);
        apply(
            &mut cli,
            &matches,
            &prod().resolved(Path::new("/home/a/.config/muster")),
        )
        .unwrap();
        assert_eq!(cli.controller, "https://muster.prod:7070");
        assert_eq!(
            cli.tls_ca.as_deref(),
            Some("/home/a/.config/muster/ca.pem"),
            "relative to the file"
        );
        assert_eq!(cli.token_file, Some(PathBuf::from("/secure/token")));
        assert_eq!(cli.output, Output::Wide);

        let (mut cli, matches) = parse(&["--controller", "http://127.0.0.1:7070", "-o", "json", "ls"]);
        apply(&mut cli, &matches, &prod()).unwrap();
        assert_eq!(cli.controller, "http://127.0.0.1:7070", "the flag wins");
        assert_eq!(cli.output, Output::Json);
        assert_eq!(
            cli.tls_ca.as_deref(),
            Some("ca.pem"),
            "what the flags left is the context's"
        );
    }

    #[test]
    fn signing_in_is_one_choice_the_users_over_the_contexts() {
        let (mut cli, matches) = parse(&["--aws-signin", "ls"]);
        apply(&mut cli, &matches, &prod()).unwrap();
        assert!(cli.aws_signin);
        assert_eq!(cli.token_file, None, "the context's token file is not mixed in");
    }

    #[test]
    fn a_missing_context_and_bad_values_are_named() {
        let file = ConfigFile {
            current_context: Some("gone".into()),
            contexts: BTreeMap::from([("prod".to_owned(), prod())]),
        };
        let error = file.pick(None).unwrap_err().to_string();
        assert_eq!(error, "current-context: no context 'gone' (there are: prod)");
        let error = file.pick(Some("stage")).unwrap_err().to_string();
        assert_eq!(error, "--context: no context 'stage' (there are: prod)");
        let error = file.named("use-context", "stage").unwrap_err().to_string();
        assert_eq!(error, "use-context: no context 'stage' (there are: prod)");
        let bad = Context {
            output: Some("jsn".into()),
            ..Default::default()
        };
        let error = bad.check("prod").unwrap_err().to_string();
        assert_eq!(
            error,
            "contexts.prod.output: 'jsn' is not one of table, wide, json, yaml, csv"
        );
        let bad = Context {
            controller: Some("muster.prod:7070".into()),
            ..Default::default()
        };
        assert!(
            bad.check("prod")
                .unwrap_err()
                .to_string()
                .starts_with("contexts.prod.controller:")
        );
    }

    #[test]
    fn the_file_round_trips_and_refuses_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("muster/config.toml");
        let file = ConfigFile {
            current_context: Some("prod".into()),
            contexts: BTreeMap::from([("prod".to_owned(), prod())]),
        };
        file.save(&path).unwrap();
        assert_eq!(ConfigFile::load(&path).unwrap(), file);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "only its owner reads it");
        }
        std::fs::write(&path, "[contexts.prod]\ntoken = \"secret\"\n").unwrap();
        let error = ConfigFile::load(&path).unwrap_err().to_string();
        assert!(error.contains("unknown field `token`"), "{error}");
        assert_eq!(
            ConfigFile::load(&dir.path().join("none.toml")).unwrap(),
            ConfigFile::default()
        );
    }
}
