//! The database host vanishes: how long the controller's store writer waits
//! on a PostgreSQL server whose packets stop coming back (a host lost with
//! its AZ, a route black-holed during a failover), and how soon it writes
//! again once the server answers.
//!
//! The server runs in a network namespace of its own, behind a veth pair;
//! the hole drops everything it sends (data and ACKs) on its side of the
//! pair, so this side's kernel sees what it would on a real network: sent
//! data never acknowledged, probes never answered. It runs twice in one go:
//! with the kernel's defaults (given in the connection string) and with the
//! store's own. Needs root (network namespaces, `tc`) and PostgreSQL's
//! server (`deploy/local/postgres.sh install`).
//!
//!     cargo bench -p muster-tests --bench database_blackhole
//!
//! `MUSTER_BLACKHOLE_SECONDS` (60) is how long the host is gone.

use std::process::Command;
use std::time::{Duration, Instant};

use muster_controller::store::{PostgresTarget, Store};

/// How often the bench writes.
const EVERY: Duration = Duration::from_millis(200);

/// Linux's own defaults, as connection-string settings: 2 hours idle, then
/// 9 probes 75 s apart; sent data retransmitted for about 15 minutes
/// (`tcp_retries2` = 15, which a user timeout of 900 s stands for).
const KERNEL_DEFAULTS: &str = "&keepalives_idle=7200&keepalives_interval=75&keepalives_retries=9&tcp_user_timeout=900";

fn run(what: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{what}: cannot run {}: {e}", args[0]))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Runs a command inside network namespace `ns`.
fn run_in(ns: &str, what: &str, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    run(what, &all)
}

/// The namespace, its veth pair and the server in it; all gone when dropped.
struct Island {
    ns: String,
    host_side: String,
    server_side: String,
    data: tempfile::TempDir,
    url: String,
}

impl Island {
    fn start() -> Result<Self, String> {
        let id = std::process::id();
        let subnet = format!("10.213.{}", id % 250);
        let mut island = Self {
            ns: format!("muster-bh-{id}"),
            host_side: format!("mbh{}h", id % 100_000),
            server_side: format!("mbh{}s", id % 100_000),
            data: tempfile::tempdir().map_err(|e| e.to_string())?,
            url: String::new(),
        };
        let (ns, h, s) = (&island.ns, &island.host_side, &island.server_side);
        let (host_address, server_address) = (format!("{subnet}.1/24"), format!("{subnet}.2/24"));
        run("a network namespace (needs root)", &["ip", "netns", "add", ns])?;
        run(
            "a veth pair",
            &["ip", "link", "add", h, "type", "veth", "peer", "name", s],
        )?;
        run("into the namespace", &["ip", "link", "set", s, "netns", ns])?;
        run("host address", &["ip", "addr", "add", &host_address, "dev", h])?;
        run("host side up", &["ip", "link", "set", h, "up"])?;
        run_in(ns, "server address", &["ip", "addr", "add", &server_address, "dev", s])?;
        run_in(ns, "server side up", &["ip", "link", "set", s, "up"])?;
        run_in(ns, "loopback up", &["ip", "link", "set", "lo", "up"])?;
        let (script, pg_dir) = island.postgres();
        let listen = format!("MUSTER_PG_LISTEN={subnet}.2");
        island.url = run_in(
            ns,
            "PostgreSQL in the namespace",
            &["env", &listen, &script, "start", &pg_dir],
        )?;
        Ok(island)
    }

    /// The server's script and data directory.
    fn postgres(&self) -> (String, String) {
        let script = muster_sim::testkit::workspace_root().join("deploy/local/postgres.sh");
        let pg_dir = self.data.path().join("pg");
        (script.display().to_string(), pg_dir.display().to_string())
    }

    /// Everything the server sends is dropped (`on`), or goes out again.
    fn hole(&self, on: bool) {
        let (ns, dev) = (&self.ns, &self.server_side);
        let outcome = if on {
            run_in(
                ns,
                "the hole",
                &["tc", "qdisc", "replace", "dev", dev, "root", "pfifo", "limit", "0"],
            )
        } else {
            run_in(ns, "the hole", &["tc", "qdisc", "del", "dev", dev, "root"])
        };
        outcome.expect("tc in the namespace");
    }
}

impl Drop for Island {
    fn drop(&mut self) {
        let (script, pg_dir) = self.postgres();
        let _ = run_in(&self.ns, "stop", &[&script, "stop", &pg_dir]);
        let _ = run("veth", &["ip", "link", "del", &self.host_side]);
        let _ = run("namespace", &["ip", "netns", "del", &self.ns]);
    }
}

/// What one configuration did across the hole.
struct Outcome {
    /// From the hole to the first failed write: the writer gave up on the
    /// connection. None: not while the hole lasted.
    noticed: Option<Duration>,
    /// From the end of the hole to the first write that succeeded.
    back: Duration,
    failed_writes: usize,
}

async fn across_the_hole(island: &Island, url: &str, hole: Duration) -> Outcome {
    let target = PostgresTarget::parse(url, None, None).expect("the URL");
    let store = tokio::task::spawn_blocking(move || Store::connect(&target))
        .await
        .unwrap()
        .expect("the store connects");
    let write = || store.write(|txn| txn.execute_batch("SELECT 1"));
    for _ in 0..10 {
        write().await.expect("writes before the hole");
        tokio::time::sleep(EVERY).await;
    }
    let opened = Instant::now();
    island.hole(true);
    let healed = opened + hole;
    let mut healing = Box::pin(tokio::time::sleep_until(healed.into()));
    let mut noticed = None;
    let mut failed_writes = 0;
    let mut open = true;
    loop {
        // The hole closes on time even while a write waits.
        let outcome = tokio::select! {
            outcome = write() => outcome,
            () = &mut healing, if open => {
                island.hole(false);
                open = false;
                continue;
            }
        };
        match outcome {
            Ok(()) if !open => break,
            Ok(()) => {}
            Err(_) => {
                failed_writes += 1;
                if open {
                    noticed.get_or_insert(opened.elapsed());
                }
            }
        }
        tokio::time::sleep(EVERY).await;
    }
    Outcome {
        noticed,
        back: healed.elapsed(),
        failed_writes,
    }
}

#[tokio::main]
async fn main() {
    let hole = Duration::from_secs(
        std::env::var("MUSTER_BLACKHOLE_SECONDS")
            .map(|s| s.parse().expect("MUSTER_BLACKHOLE_SECONDS is a number of seconds"))
            .unwrap_or(60),
    );
    let island = match Island::start() {
        Ok(island) => island,
        Err(error) => {
            eprintln!("database_blackhole: {error}");
            std::process::exit(2);
        }
    };
    let mut rows = Vec::new();
    for (name, url) in [
        ("the kernel's defaults", format!("{}{KERNEL_DEFAULTS}", island.url)),
        ("the store's defaults", island.url.clone()),
    ] {
        println!("{name}: {} s without the database ...", hole.as_secs());
        let outcome = across_the_hole(&island, &url, hole).await;
        rows.push((name, outcome));
    }
    println!();
    println!(
        "| connection settings | writer gives up on the connection | writing again after the host is back | failed writes |"
    );
    println!("|---|---|---|---|");
    for (name, o) in rows {
        let noticed = o.noticed.map_or(format!("not within the {} s", hole.as_secs()), |d| {
            format!("after {:.1} s", d.as_secs_f64())
        });
        println!(
            "| {name} | {noticed} | {:.1} s | {} |",
            o.back.as_secs_f64(),
            o.failed_writes
        );
    }
}
