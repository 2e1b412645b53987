//! Finding and stopping the muster binaries, and the CLI.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// Where the muster binaries are.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MUSTER_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test's own path");
    exe.parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps")
        .to_path_buf()
}

pub(super) fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --bins), or set MUSTER_BIN_DIR",
        path.display()
    );
    // Binaries chosen with MUSTER_BIN_DIR (an A/B of two builds) are taken
    // as they are.
    if std::env::var_os("MUSTER_BIN_DIR").is_none()
        && let Some(newer) = newer_source(name, &path)
    {
        panic!(
            "{} is older than its source {}: a test would run the old code; build the binaries first (cargo build --bins)",
            path.display(),
            newer.display()
        );
    }
    path
}

/// A source file of binary `name`'s crates changed after `binary` was built.
fn newer_source(name: &str, binary: &Path) -> Option<PathBuf> {
    let crates: &[&str] = match name {
        "muster-controller" => &["controller", "common", "proto"],
        "muster-worker" => &["worker", "common", "proto"],
        "muster" => &["cli", "common", "proto"],
        "muster-sim" => &["sim", "common"],
        _ => &[],
    };
    let built = std::fs::metadata(binary).and_then(|m| m.modified()).ok()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let mut dirs: Vec<PathBuf> = crates.iter().map(|c| root.join(c)).collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                // proto/releases holds released protos, never compiled.
                if !matches!(
                    path.file_name().and_then(|n| n.to_str()),
                    Some("tests" | "benches" | "target" | "releases")
                ) {
                    dirs.push(path);
                }
            } else if matches!(path.extension().and_then(|e| e.to_str()), Some("rs" | "proto"))
                && meta.modified().is_ok_and(|m| m > built)
            {
                return Some(path);
            }
        }
    }
    None
}

/// SIGTERMs a process and waits for it to exit (its graceful shutdown).
pub(super) fn terminate(mut child: Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}

/// The muster CLI with an empty environment, for the caller's arguments.
pub fn muster_command() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(bin_dir().join("muster"));
    command.env_clear();
    command
}

/// Runs `command` to its end: its exit code, stdout and stderr.
pub async fn output_of(mut command: tokio::process::Command) -> (i32, String, String) {
    let out = command.output().await.expect("the command runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
